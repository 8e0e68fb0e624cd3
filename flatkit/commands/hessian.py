"""``flatkit hessian CKPT... [--top-k K] [--trace] [--density] [--per-timestep BINS] [--compare CKPT2 ...]``.

Writes ``hessian.json`` (numbers + ``meta``), ``hessian.npz`` (density grids, Ritz nodes and weights,
per-timestep tables) and figures of the density and of the per-timestep profile into ``--out``. Every model is
measured on the SAME frozen bank.
"""

from __future__ import annotations

import time

import click

from flatkit.commands._common import (
    apply_precision,
    echo_written,
    load_models,
    models_options,
    objectives_for,
    precision_options,
    resolve_out_dir,
    run_options,
    settings_from,
    settings_options,
)
from flatkit.settings import HessianSettings


@click.command("hessian")
@models_options
@settings_options(HessianSettings)
@precision_options(hessian=True)
@run_options
def command(**params) -> None:
    """Hessian top eigenvalues, trace and spectral density of the diffusion loss at each model's weights."""
    from flatkit import distributed as dist
    from flatkit.analyses.hessian import HessianResult, hessian
    from flatkit.plots.curvature import plot_hessian
    from flatkit.results import make_meta

    dist.setup_command("hessian", click.get_current_context().params)  # torchrun: join, same options
    s = settings_from(HessianSettings, params)
    t0 = time.perf_counter()
    models = load_models(params["ckpts"], params["compare"], params["labels"], params["weights"],
                         params["device"], params["adm_flags"], params["trust_checkpoint"])
    objs = objectives_for(models, s)
    prec = apply_precision(objs, params["precision"], params["channels_last"])  # fp32 unless asked
    outdir = resolve_out_dir(params["out"], "hessian")
    res = hessian(objs[0], compare=objs[1:], labels=models.labels, settings=s)
    analysis = res.meta
    res.meta = make_meta(config=s, runs=models.runs, labels=models.labels, device=objs[0].device,
                         wall_time_s=time.perf_counter() - t0, precision=prec,
                         data_fingerprint=objs[0].config.data_fingerprint)
    res.meta["objective"] = analysis.get("objective")
    if not dist.is_main():  # several ranks (micro-batches sharded, same numbers everywhere): rank 0 writes
        return
    for m in range(len(res.labels)):
        click.echo(summary_line(res, m))
    written = list(res.save(outdir))
    echo_written(written + plot_hessian(HessianResult.load(outdir), outdir))


def summary_line(res, m: int) -> str:
    line = [f"{res.labels[m]}: L = {res.loss[m]:.6g}"]
    if res.eigenvalues:
        vals = ", ".join(f"{v:.6g}" for v in res.eigenvalues[m])
        line.append(f"top eigenvalues [{vals}] ({res.eigen_hvps[m]} HVPs"
                    f"{'' if res.eigen_converged[m] else ', NOT converged'})")
    if res.trace:
        se = res.trace_stderr[m] if res.trace_stderr[m] is not None else float("nan")
        line.append(f"trace {res.trace[m]:.6g} ± {se:.2g} ({res.trace_hvps[m]} HVPs)")
    return "; ".join(line)
