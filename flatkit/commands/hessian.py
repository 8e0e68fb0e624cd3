"""``flatkit hessian CKPT... [--top-k K] [--trace] [--density] [--per-timestep BINS] [--compare CKPT2 ...]``.

Writes ``hessian.json`` (numbers + ``meta``), ``hessian.npz`` (density grids, Ritz nodes and weights,
per-timestep tables) and figures of the density and of the per-timestep profile into ``--out``. Every model is
measured on the SAME frozen bank.
"""

from __future__ import annotations

import click

from flatkit.commands._common import analysis_command, analysis_setup, echo_written
from flatkit.settings import HessianSettings


@analysis_command("hessian", HessianSettings, hessian=True)
def command(**params) -> None:
    """Hessian top eigenvalues, trace and spectral density of the diffusion loss at each model's weights."""
    from flatkit import distributed as dist
    from flatkit.analyses.hessian import HessianResult, hessian
    from flatkit.plots.curvature import plot_hessian

    dist.setup_command("hessian", click.get_current_context().params)  # torchrun: join, same options
    run = analysis_setup(params, "hessian", HessianSettings)
    if run.out_state.reused:  # --out holds this result (same settings and checkpoints): nothing to compute
        return
    objs = run.objectives
    res = hessian(objs[0], compare=objs[1:], labels=run.models.labels, settings=run.settings)
    res.meta = run.meta(res.meta)
    if not dist.is_main():  # several ranks (micro-batches sharded, same numbers everywhere): rank 0 writes
        return
    for m in range(len(res.labels)):
        click.echo(summary_line(res, m))
    from flatkit.repeats import summary_lines

    for line in summary_lines(res):  # --repeats
        click.echo(line)
    written = list(res.save(run.out_dir))
    echo_written(written + plot_hessian(HessianResult.load(run.out_dir), run.out_dir))


def summary_line(res, m: int) -> str:
    line = [f"{res.labels[m]}: L = {res.loss[m]:.6g}"]
    if res.eigenvalues:
        line.append(_eigen_part(res, m))
    if res.trace:
        se = res.trace_stderr[m] if res.trace_stderr[m] is not None else float("nan")
        line.append(f"trace {res.trace[m]:.6g} ± {se:.2g} ({res.trace_hvps[m]} HVPs)")
    return "; ".join(line)


def _eigen_part(res, m: int) -> str:
    """``top eigenvalues [θ_1 ± b_1, ...] (H HVPs, certified to 1e-3)``: each value with its certified error bound
    (results written before the bounds existed show the values alone)."""
    vals, bounds = res.eigenvalues[m], (res.eigen_bounds[m] if m < len(res.eigen_bounds) else None)
    if bounds:
        text = ", ".join(f"{v:.6g} ± {b:.1g}" for v, b in zip(vals, bounds, strict=True))
        tol = ((res.meta or {}).get("config") or {}).get("tol")
        rel = max((b / abs(v) if v else float("inf")) for v, b in zip(vals, bounds, strict=True))
        if res.eigen_certified[m]:
            state = f"certified to {tol:.0e}" if tol is not None else "certified"
        else:
            state = f"NOT certified: worst bound {rel:.1e} relative"
        return f"top eigenvalues [{text}] ({res.eigen_hvps[m]} HVPs, {state})"
    text = ", ".join(f"{v:.6g}" for v in vals)
    return f"top eigenvalues [{text}] ({res.eigen_hvps[m]} HVPs{'' if res.eigen_converged[m] else ', NOT converged'})"
