"""``flatkit hessian CKPT [--top-k K] [--trace] [--density] [--per-timestep BINS] [--compare CKPT2 ...]``.

Writes ``hessian.json`` (numbers + ``meta``), ``hessian.npz`` (arrays: density grids, Ritz nodes and weights,
per-timestep tables, trace probes) and figures of the density and of the per-timestep profile into ``--out``.
Every checkpoint of ``--compare`` is measured on the SAME frozen bank as CKPT.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from flatkit.commands._common import (
    analysis_options,
    apply_precision,
    echo_written,
    load_run,
    make_objective,
    precision_options,
    resolve_device,
    resolve_out_dir,
    write_json,
)
from flatkit.errors import UsageError

WEIGHT_CHOICES = ("raw", "ema", "swa")


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


def _is_weights_name(s: str) -> bool:
    return s in WEIGHT_CHOICES or s.startswith("ema_")


def load_runs(ckpt: str, compare: list[str], weights: str, device: Any, adm_flags: str | None,
              trust: bool) -> tuple[list, list[str]]:
    """CKPT and every ``--compare`` entry: another checkpoint, or a weights name (raw/ema/swa) of CKPT."""
    runs = [load_run(ckpt, weights, adm_flags, trust, device)]
    labels = [f"{Path(ckpt).name}:{weights}"]
    for c in compare:
        if _is_weights_name(c) and not Path(c).exists():
            runs.append(load_run(ckpt, c, adm_flags, trust, device))
            labels.append(f"{Path(ckpt).name}:{c}")
        else:
            runs.append(load_run(c, weights, adm_flags, trust, device))
            labels.append(f"{Path(c).name}:{weights}")
    return runs, labels


def analyse(obj: Any, top_k: int, tol: float, max_iter: int | None, trace: bool, trace_method: str,
            trace_rtol: float, trace_max_hvps: int, density: bool, density_runs: int, density_steps: int,
            per_timestep: int | None, seed: int, hvp_mode: str, basis_device: str) -> tuple[dict, dict]:
    """The requested analyses of one objective: (JSON-able numbers, arrays for the npz)."""
    from flatkit.curvature import hessian_trace, per_timestep_curvature, spectral_density, top_eigenvalues
    from flatkit.curvature.hvp import hvp_progress

    loss = obj.check_determinism()
    out: dict[str, Any] = {"loss": float(loss), "num_params": obj.num_params}
    arrays: dict[str, np.ndarray] = {}
    if top_k > 0:
        budget = min(obj.num_params, max(100, 20 * top_k)) if max_iter is None else max_iter
        with hvp_progress(f"top-{top_k} eigenvalues (Lanczos)", total=budget):
            r = top_eigenvalues(obj, k=top_k, tol=tol, max_iter=max_iter, seed=seed,
                                mode=hvp_mode, basis_device=basis_device, check=False, eigenvectors=False)
        out["top_eigenvalues"] = {k: v for k, v in r.to_json().items() if k not in ("ritz_values", "meta")}
        out["top_eigenvalues"]["meta"] = {k: v for k, v in r.meta.items() if k != "objective"}
        arrays["top_eigenvalues"] = r.eigenvalues
        arrays["ritz_values"] = r.ritz_values
    if trace:
        with hvp_progress(f"trace ({trace_method})", total=trace_max_hvps):
            r = hessian_trace(obj, method=trace_method, rtol=trace_rtol, max_hvps=trace_max_hvps, seed=seed,
                              mode=hvp_mode, check=False)
        out["trace"] = {k: v for k, v in r.to_json().items() if k != "samples"}
        arrays["trace_samples"] = r.samples
    if density:
        with hvp_progress("spectral density (SLQ)", total=density_runs * density_steps):
            r = spectral_density(obj, runs=density_runs, steps=density_steps, seed=seed, mode=hvp_mode,
                                 basis_device=basis_device, check=False)
        out["density"] = {k: v for k, v in r.to_json().items() if k not in ("grid", "density", "nodes", "weights")}
        arrays.update(density_grid=r.grid, density=r.density, density_nodes=r.nodes, density_weights=r.weights)
    if per_timestep:
        with hvp_progress(f"per-timestep curvature ({per_timestep} bins)"):
            r = per_timestep_curvature(obj, bins=per_timestep, k=max(1, min(top_k, 3)), trace=trace, tol=tol,
                                       max_iter=max_iter, trace_method=trace_method, trace_rtol=trace_rtol,
                                       trace_max_hvps=trace_max_hvps, seed=seed, mode=hvp_mode, check=False)
        out["per_timestep"] = r.to_json()
        for k, v in r.arrays().items():
            arrays[f"per_timestep_{k}"] = v
    return out, arrays


def write_figures(outdir: Path) -> list[Path]:
    """Draw the density and the per-timestep profile from hessian.json / hessian.npz (reads only result files)."""
    import json

    from flatkit.plots.style import colour, save, style

    report = json.loads((outdir / "hessian.json").read_text())
    arrs = np.load(outdir / "hessian.npz")
    entries = [report] + list(report.get("compare", []))
    paths: list[Path] = []
    import matplotlib.pyplot as plt

    with style():
        if "density" in arrs:
            fig, ax = plt.subplots(figsize=(4.5, 3.0))
            for i, e in enumerate(entries):
                p = "" if i == 0 else f"compare{i - 1}_"
                g, d = arrs[f"{p}density_grid"], arrs[f"{p}density"]
                ax.semilogy(g, np.maximum(d, 1e-12), color=colour(e["label"], i), label=e["label"], lw=1)
            ax.set_xlabel("eigenvalue λ")
            ax.set_ylabel("density (Gaussian-broadened SLQ)")
            ax.legend(frameon=False)
            paths += save(fig, outdir / "hessian_density")
        if "per_timestep_edges" in arrs:
            fig, ax = plt.subplots(figsize=(4.5, 3.0))
            lams = []
            for i, e in enumerate(entries):
                p = "" if i == 0 else f"compare{i - 1}_"
                edges = arrs[f"{p}per_timestep_edges"]
                mid = 0.5 * (edges[:-1] + edges[1:])
                lam = arrs[f"{p}per_timestep_top_eigenvalues"][:, 0]
                lams.append(lam[np.isfinite(lam)])
                ax.plot(mid, lam, "o-", color=colour(e["label"], i), label=e["label"], ms=3, lw=1)
            ax.set_xlabel("timestep t (bin centre)")
            ax.set_ylabel("λ_max of the per-bin loss")
            lam = np.concatenate(lams)
            # symlog only when the values span decades (or cross zero): within one decade it draws no tick labels
            if lam.size and (lam.min() <= 0 or lam.max() > 10 * lam.min()):
                ax.set_yscale("symlog", linthresh=1e-3)
            ax.legend(frameon=False)
            paths += save(fig, outdir / "hessian_per_timestep")
    return paths


@click.command("hessian")
@click.argument("ckpt", metavar="CKPT", required=False)
@click.option("--top-k", metavar="K", type=click.IntRange(min=0), default=1, show_default=True,
              help="Number of top (largest algebraic) Hessian eigenvalues by Lanczos; 0 skips them.")
@click.option("--tol", metavar="TOL", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, help="Relative Ritz residual at which Lanczos stops.")
@click.option("--max-iter", metavar="N", type=click.IntRange(min=1), default=None,
              help="Most Lanczos steps (HVPs)  [default: min(N, max(100, 20 K))]")
@click.option("--trace", is_flag=True, help="Estimate the Hessian trace (Hutch++ unless --trace-method).")
@click.option("--trace-method", type=click.Choice(["hutch++", "hutchinson"]), default="hutch++",
              show_default=True, help="Trace estimator.")
@click.option("--trace-rtol", metavar="R", type=click.FloatRange(min=0, min_open=True), default=1e-2,
              show_default=True, help="Stop the trace when its standard error is below R × |estimate|.")
@click.option("--trace-max-hvps", metavar="N", type=click.IntRange(min=2), default=100, show_default=True,
              help="HVP budget of the trace.")
@click.option("--density", is_flag=True, help="Spectral density by stochastic Lanczos quadrature.")
@click.option("--density-runs", metavar="N", type=click.IntRange(min=1), default=2, show_default=True,
              help="Random starting vectors of SLQ.")
@click.option("--density-steps", metavar="M", type=click.IntRange(min=2), default=40, show_default=True,
              help="Lanczos steps per SLQ run.")
@click.option("--per-timestep", metavar="BINS", type=click.IntRange(min=1), default=None,
              help="Also measure the top eigenvalue (and the trace with --trace) of the loss restricted to "
                   "BINS equal t-bins; the bank is then stratified over the same bins.")
@click.option("--compare", metavar="CKPT2", multiple=True,
              help="More checkpoints on the same bank (repeat, or comma-separated); raw/ema/swa names the "
                   "other weights of CKPT.")
@click.option("--include", metavar="PATTERN", multiple=True,
              help="Analyse only parameters whose name matches (glob on the name, or regex); repeatable.")
@click.option("--exclude", metavar="PATTERN", multiple=True,
              help="Leave out parameters whose name matches (glob or regex); repeatable.")
@click.option("--loss", "loss_kind", type=click.Choice(["auto", "mse", "hybrid"]), default="auto",
              show_default=True, help="ε-MSE, ADM hybrid, or what the diffusion trains with.")
@click.option("--hvp-mode", type=click.Choice(["auto", "double_backward_cached", "double_backward", "fwd_rev"]),
              default="auto", show_default=True,
              help="HVP: auto = double backward through each micro-batch's kept gradient graph (fastest); "
                   "double_backward rebuilds the graph per product (less memory); fwd_rev = forward-over-reverse.")
@click.option("--basis-device", type=click.Choice(["same", "cpu"]), default="same", show_default=True,
              help="Where Lanczos keeps its basis (cpu saves GPU memory on large models).")
@precision_options(hessian=True)
@analysis_options(n_eval=128)
def command(ckpt: str, top_k: int, tol: float, max_iter: int | None, trace: bool, trace_method: str,
            trace_rtol: float, trace_max_hvps: int, density: bool, density_runs: int, density_steps: int,
            per_timestep: int | None, compare: tuple[str, ...], include: tuple[str, ...],
            exclude: tuple[str, ...], loss_kind: str, hvp_mode: str, basis_device: str, data: str | None,
            n_eval: int, seed: int, weights: str, device: str, batch_size: int, out: str | None,
            adm_flags: str | None, trust_checkpoint: bool, precision: str = "fp32",
            channels_last: bool = False) -> None:
    """Hessian top eigenvalues, trace and spectral density of the diffusion loss at CKPT's weights."""
    from flatkit import distributed as dist
    from flatkit.results import atomic_savez, make_meta

    dist.setup_command("hessian", click.get_current_context().params)  # torchrun: join, same options
    if top_k == 0 and not (trace or density or per_timestep):
        raise UsageError("--top-k 0: nothing to compute (add --trace, --density or --per-timestep)")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    runs, labels = load_runs(ckpt, _split(compare), weights, dev, adm_flags, trust_checkpoint)
    obj = make_objective(runs[0], data=data, n=n_eval, seed=seed, loss=loss_kind, include=list(include) or None,
                    exclude=list(exclude) or None, batch_size=batch_size, t_bins=per_timestep)
    objs = [obj] + [obj.for_run(r) for r in runs[1:]]
    prec = apply_precision(objs, precision, channels_last)  # fp32 unless --precision is given explicitly
    outdir = resolve_out_dir(out, "hessian")

    entries, arrays = [], {}
    for i, (o, run, label) in enumerate(zip(objs, runs, labels, strict=True)):
        numbers, arrs = analyse(o, top_k, tol, max_iter, trace, trace_method, trace_rtol, trace_max_hvps,
                                density, density_runs, density_steps, per_timestep, seed, hvp_mode,
                                basis_device)
        numbers = {"label": label, "checkpoint": run.path, "checkpoint_sha256": run.sha256,
                   "weights": run.weights, **numbers}
        entries.append(numbers)
        prefix = "" if i == 0 else f"compare{i - 1}_"
        arrays.update({prefix + k: np.asarray(v) for k, v in arrs.items()})
        if dist.is_main():
            _echo_summary(numbers)

    config = {"ckpt": ckpt, "compare": _split(compare), "top_k": top_k, "tol": tol, "max_iter": max_iter,
              "trace": trace, "trace_method": trace_method, "trace_rtol": trace_rtol,
              "trace_max_hvps": trace_max_hvps, "density": density, "density_runs": density_runs,
              "density_steps": density_steps, "per_timestep": per_timestep, "include": list(include),
              "exclude": list(exclude), "loss": loss_kind, "hvp_mode": hvp_mode, "basis_device": basis_device,
              "data": data, "n_eval": n_eval, "seed": seed, "weights": weights, "batch_size": batch_size,
              "objective": obj.config.to_dict()}
    report = dict(entries[0])
    if len(entries) > 1:
        report["compare"] = entries[1:]
    report["meta"] = make_meta(config=config, run=runs[0], device=dev, wall_time_s=time.perf_counter() - t0)
    report["meta"]["precision"] = prec
    if not dist.is_main():  # several ranks (micro-batches sharded, same numbers everywhere): rank 0 writes
        return
    outdir.mkdir(parents=True, exist_ok=True)
    jpath, npath = outdir / "hessian.json", outdir / "hessian.npz"
    write_json(jpath, report)
    atomic_savez(npath, **arrays)
    paths = [jpath, npath]
    if density or per_timestep:
        paths += write_figures(outdir)
    echo_written(paths)


def _echo_summary(e: dict) -> None:
    line = [f"{e['label']}: L = {e['loss']:.6g}"]
    if "top_eigenvalues" in e:
        te = e["top_eigenvalues"]
        vals = ", ".join(f"{v:.6g}" for v in te["eigenvalues"])
        line.append(f"top eigenvalues [{vals}] ({te['hvp_count']} HVPs"
                    f"{'' if te['converged'] else ', NOT converged'})")
    if "trace" in e:
        tr = e["trace"]
        se = tr["stderr"] if tr["stderr"] is not None else float("nan")
        line.append(f"trace {tr['estimate']:.6g} ± {se:.2g} ({tr['hvp_count']} HVPs)")
    click.echo("; ".join(line))
