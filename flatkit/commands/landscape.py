"""``flatkit landscape CKPT``: 1-D / 2-D loss-landscape slices with figures (PNG, PDF, offline HTML)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from flatkit.commands._common import (
    analysis_options,
    apply_precision,
    echo_written,
    load_run,
    make_objective,
    precision_options,
    resolve_device,
    resolve_out_dir,
)
from flatkit.errors import UsageError


def split_paths(values: tuple[str, ...]) -> list[str]:
    """``--compare a.pt --compare b.pt`` or ``--compare a.pt,b.pt``."""
    return [p for v in values for p in str(v).split(",") if p.strip()]


def is_weights_name(s: str) -> bool:
    """A ``--compare`` entry naming other weights of CKPT (raw, ema, ema_<rate>, swa) rather than a file."""
    return (s in ("raw", "ema", "swa") or s.startswith("ema_")) and not Path(s).exists()


def build_objectives(ckpt: str, compare: list[str], weights: str, data: str | None, n_eval: int, seed: int,
                     batch_size: int, device: str, adm_flags: str | None, trust: bool) -> tuple[list, list]:
    """The runs and their objectives on ONE frozen bank (the first run's data unless ``--data``).

    A ``compare`` entry that names weights (raw / ema / ema_<rate> / swa, and no such file exists) is that weights
    choice of CKPT, as in ``flatkit hessian --compare``; any other entry is a checkpoint loaded with ``weights``.
    """
    dev = resolve_device(device)
    runs = [load_run(ckpt, weights, adm_flags, trust, dev)]
    for c in compare:
        if is_weights_name(c):
            runs.append(load_run(ckpt, c, adm_flags, trust, dev))
        else:
            runs.append(load_run(c, weights, adm_flags, trust, dev))
    obj = make_objective(runs[0], data=data, n=n_eval, seed=seed, batch_size=batch_size)
    objs = [obj] + [obj.for_run(r) for r in runs[1:]]
    return runs, objs


def compared_objectives(ckpt: str, compare: tuple[str, ...], labels: str | None, weights: str, data: str | None,
                        n_eval: int, seed: int, batch_size: int, device: str, adm_flags: str | None, trust: bool,
                        precision: str, channels_last: bool) -> tuple[list[str], list[str], list, list, Any]:
    """``CKPT --compare ... --labels ...`` of landscape / perturb: (paths, labels, runs, objectives on one bank,
    the precision applied to them)."""
    paths = [ckpt, *split_paths(compare)]
    lab = [s.strip() for s in labels.split(",")] if labels else default_labels(paths, weights)
    if len(lab) != len(paths):
        raise UsageError(f"--labels: {len(lab)} label(s) for {len(paths)} checkpoint(s)")
    runs, objs = build_objectives(ckpt, paths[1:], weights, data, n_eval, seed, batch_size, device, adm_flags, trust)
    return paths, lab, runs, objs, apply_precision(objs, precision, channels_last)


def default_labels(paths: list[str], weights: str | None = None) -> list[str]:
    """Labels from the file names (the parent folder when the file is ckpt.pt); unique. When a later entry names
    other weights of the first checkpoint (``--compare ema``), the labels are ``NAME:WEIGHTS``."""
    if weights is not None and any(is_weights_name(p) for p in paths[1:]):
        base = default_labels(paths[:1])[0]
        return [f"{base}:{weights}"] + [f"{base}:{p}" if is_weights_name(p) else default_labels([p])[0]
                                        for p in paths[1:]]
    out = []
    for p in paths:
        q = Path(p)
        name = q.parent.name if q.stem in ("ckpt", "model") and q.parent.name else q.stem
        out.append(name if name not in out else f"{name}#{len(out)}")
    return out


def run_meta(runs: list, device: Any, t0: float, config: dict, analysis_meta: dict) -> dict:
    from flatkit.results import make_meta

    meta = make_meta(config=config, run=runs[0], device=device, wall_time_s=time.perf_counter() - t0,
                     compare=[{"checkpoint": r.path, "checkpoint_sha256": r.sha256, "weights": r.weights}
                              for r in runs[1:]])
    meta["analysis"] = analysis_meta
    return meta


def write_figures(out: Path, title: str | None = None) -> list[Path]:
    """Read landscape.json/.npz in ``out`` and draw landscape.png/.pdf/.html (plots read only result files)."""
    from flatkit.analyses.landscape import load_landscape
    from flatkit.plots.landscape import plot_landscape, plot_landscape_html

    res = load_landscape(out)
    if not res.done.any():
        raise UsageError(f"{out}: the landscape has no computed point yet")
    paths = plot_landscape(res, out / "landscape", title=title)
    try:
        import plotly  # noqa: F401
    except ImportError:
        click.echo("note: plotly is not installed: landscape.html skipped (pip install plotly; then --replot)",
                   err=True)
        return paths
    paths.append(plot_landscape_html(res, out / "landscape.html", title=title))
    return paths


def load_trajectory(folder: str, weights: str, adm_flags: str | None, trust: bool, device: Any) -> list[dict]:
    """The parameters of every checkpoint (``*.pt``) in a folder, ordered by training step then name."""
    d = Path(folder)
    if not d.is_dir():
        raise UsageError(f"--trajectory {folder}: not a directory")
    files = sorted(d.glob("*.pt"))
    if not files:
        raise UsageError(f"--trajectory {folder}: no .pt checkpoints in this folder")
    runs = [load_run(str(f), weights, adm_flags, trust, device) for f in files]
    runs.sort(key=lambda r: (r.step if r.step is not None else -1, r.path))
    return [({k: v.detach() for k, v in r.model.named_parameters()}, r.step) for r in runs]


@click.command("landscape")
@click.argument("ckpt", metavar="CKPT", required=False)
@click.option("--compare", metavar="CKPT2", multiple=True,
              help="More checkpoints through the same directions and bank (repeat, or comma-separated); "
                   "raw/ema/ema_<rate>/swa names the other weights of CKPT; with --directions interp: the line "
                   "to CKPT2 (the plane through CKPT2 and CKPT3).")
@click.option("--labels", metavar="A,B,..", default=None, help="Legend labels (default: the file names).")
@click.option("--dims", type=click.IntRange(1, 2), default=2, show_default=True, help="1-D or 2-D slice.")
@click.option("--points", metavar="N", type=int, default=21, show_default=True,
              help="Grid points per axis (odd for a symmetric span, so the centre is on the grid).")
@click.option("--span", metavar="R|MIN,MAX", default=None,
              help="Coordinates in [-R, R] or [MIN, MAX]  [default: 1; -0.5,1.5 for interp; PCA: from the "
                   "trajectory]")
@click.option("--directions", type=click.Choice(["random", "eigen", "interp", "pca"]), default="random",
              show_default=True, help="Random Gaussian, Hessian top eigenvectors, checkpoint interpolation, "
                                      "or PCA of --trajectory.")
@click.option("--norm", type=click.Choice(["filter", "layer", "none"]), default="filter", show_default=True,
              help="Normalisation of random directions (Li et al. 2018).")
@click.option("--bias", type=click.Choice(["zero", "normalise"]), default="zero", show_default=True,
              help="1-D tensors (biases, norm scales) under filter normalisation: zeroed or normalised.")
@click.option("--trajectory", metavar="DIR", default=None, help="Folder of checkpoints for --directions pca.")
@click.option("--mode", type=click.Choice(["auto", "vmap", "sequential"]), default="auto", show_default=True,
              help="Several grid points per forward (vmap), one at a time, or whichever one block times faster.")
@click.option("--batch-points", metavar="N", type=click.IntRange(min=1), default=None,
              help="Grid points per vmapped forward (and per saved block)  [default: 8 on CPU, 32 on GPU]")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out (same configuration only).")
@click.option("--replot", metavar="DIR", default=None, help="Redraw the figures from DIR's result files; no compute.")
@precision_options()
@analysis_options(n_eval=64)
def command(ckpt: str | None, compare: tuple[str, ...], labels: str | None, dims: int, points: int,
            span: str | None, directions: str, norm: str, bias: str, trajectory: str | None, mode: str,
            batch_points: int | None, resume: bool, replot: str | None, data: str | None, n_eval: int, seed: int,
            weights: str, device: str, batch_size: int, out: str | None, adm_flags: str | None,
            trust_checkpoint: bool, precision: str = "fp32", channels_last: bool = False) -> None:
    """1-D / 2-D loss-landscape slices L(θ + α d1 + β d2), with figures.

    With no option: a 2-D slice through CKPT along two filter-normalised random Gaussian directions, on a
    frozen bank of --n-eval (x0, t, ε) drawn from the checkpoint's data with seed 0; writes landscape.json,
    landscape.npz, landscape.png, landscape.pdf and landscape.html into --out.
    """
    if replot is not None:
        d = Path(replot)
        if not d.is_dir():
            raise UsageError(f"--replot {replot}: not a directory")
        outdir = Path(out) if out is not None else d
        if outdir != d:
            import shutil

            outdir.mkdir(parents=True, exist_ok=True)
            for f in ("landscape.json", "landscape.npz"):
                if (d / f).is_file():
                    shutil.copyfile(d / f, outdir / f)
        echo_written(write_figures(outdir))
        return
    if ckpt is None:
        raise UsageError("CKPT: a checkpoint is required (or --replot DIR)")
    if points < 2:
        raise UsageError(f"--points {points}: need at least 2 grid points per axis")
    if resume and out is None:
        raise UsageError("--resume: needs --out DIR, the folder of the interrupted run")
    if trajectory is not None and directions != "pca":
        raise UsageError("--trajectory: only with --directions pca")
    if directions == "pca" and trajectory is None:
        raise UsageError("--directions pca: needs --trajectory DIR")
    from flatkit import distributed as dist
    from flatkit.analyses.directions import Plane, pca_directions
    from flatkit.analyses.landscape import landscape

    dist.setup_command("landscape", click.get_current_context().params)  # torchrun: join, same options
    t0 = time.perf_counter()
    paths, lab, runs, objs, prec = compared_objectives(ckpt, compare, labels, weights, data, n_eval, seed,
                                                       batch_size, device, adm_flags, trust_checkpoint, precision,
                                                       channels_last)
    outdir = resolve_out_dir(out, "landscape")
    dirs_arg: Any = directions
    span_arg: Any = span
    if directions == "pca":
        traj = load_trajectory(trajectory, weights, adm_flags, trust_checkpoint, objs[0].device)
        steps = [f"step {s}" if s is not None else f"#{i}" for i, (_, s) in enumerate(traj)]
        traj = [{k: t[k] for k in objs[0].params} for t, _ in traj]
        pdirs, ratio, coords = pca_directions(traj, k=dims, centre=objs[0].params)
        dirs_arg = Plane(pdirs, coords, names=steps)
        if span is None:
            span_arg = float(abs(coords).max() * 1.25) or 1.0
        if dist.is_main():
            click.echo(f"PCA: explained variance {', '.join(f'{x:.3f}' for x in ratio)}", err=True)
    bar = _progress() if dist.is_main() else None
    res = landscape(objs[0], dims=dims, points=points, span=span_arg, directions=dirs_arg, norm=norm, bias=bias,
                    seed=seed, compare=objs[1:], labels=lab, mode=mode, batch_points=batch_points, out=outdir,
                    resume=resume, progress=bar)
    if directions == "pca":
        res.directions, res.explained_variance = "pca", [float(x) for x in ratio]
    config = {"ckpt": ckpt, "compare": paths[1:], "labels": lab, "dims": dims, "points": points, "span": span,
              "directions": directions, "norm": norm, "bias": bias, "trajectory": trajectory, "mode": mode,
              "batch_points": batch_points, "data": data, "n_eval": n_eval, "seed": seed, "weights": weights,
              "batch_size": batch_size}
    config.update(precision=precision, channels_last=channels_last)
    res.meta = run_meta(runs, objs[0].device, t0, config, res.meta)
    res.meta["precision"] = prec
    if not dist.is_main():  # several ranks: rank 0 writes
        return
    written = list(res.save(outdir))
    written += write_figures(outdir)
    echo_written(written)
    click.echo(f"landscape: {res.mode}, {res.n_evaluations} grid points in {res.wall_time_s:.1f} s; "
               f"L(θ) = {', '.join(f'{v:.6g}' for v in res.loss_centre)}")


def _progress():
    """A tqdm bar on stderr (quiet when stderr is not a terminal)."""
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    state: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc="grid points", unit="pt", leave=False)
            state["last"] = 0
        state["bar"].update(done - state["last"])
        state["last"] = done

    return update
