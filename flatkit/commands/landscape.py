"""``flatkit landscape CKPT...``: 1-D / 2-D loss-landscape slices with figures (PNG, PDF, offline HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from flatkit.commands._common import (
    analysis_command,
    analysis_setup,
    echo_written,
    load_run,
    settings_from,
)
from flatkit.errors import UsageError
from flatkit.settings import LandscapeSettings


def write_figures(out: Path, title: str | None = None) -> list[Path]:
    """Read landscape.json/.npz in ``out`` and draw landscape.png/.pdf/.html (plots read only result files)."""
    from flatkit.analyses.landscape import LandscapeResult
    from flatkit.plots.landscape import plot_landscape, plot_landscape_html

    res = LandscapeResult.load(out)
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


@analysis_command(
    "landscape", LandscapeSettings,
    click.option("--trajectory", metavar="DIR", default=None, help="Folder of checkpoints for --directions pca."),
    click.option("--resume", is_flag=True, help="Continue the interrupted run in --out (same configuration only)."),
    click.option("--replot", metavar="DIR", default=None,
                 help="Redraw the figures from DIR's result files; no compute."),
)
def command(**params) -> None:
    """1-D / 2-D loss-landscape slices L(θ + α d1 + β d2), with figures.

    With no option: a 2-D slice through CKPT along two filter-normalised random Gaussian directions, on a
    frozen bank of --n-eval (x0, t, ε) drawn from the checkpoint's data with seed 0; writes landscape.json,
    landscape.npz, landscape.png, landscape.pdf and landscape.html into --out. With --compare: one grid per
    model through the same directions and bank (with --directions interp: the line to CKPT2, or the plane
    through CKPT2 and CKPT3).
    """
    if params["replot"] is not None:
        settings_from(LandscapeSettings, params)  # the options are still checked
        echo_written(replot(params["replot"], params["out"]))
        return
    _check_options(params)
    from flatkit import distributed as dist
    from flatkit.analyses.landscape import landscape

    dist.setup_command("landscape", click.get_current_context().params)  # torchrun: join, same options
    run = analysis_setup(params, "landscape", LandscapeSettings, finished=_finished)
    if run.out_state.reused:  # --out holds this finished grid (same settings and checkpoints)
        return
    resume = params["resume"] or run.out_state.state == "resume"  # an unfinished grid of the same settings
    objs, outdir = run.objectives, run.out_dir
    given, ratio = None, None
    if run.settings.directions == "pca":
        given, ratio, run.settings = pca_plane(params, run.settings, objs[0])
    from flatkit import progress

    bar = progress.callback("landscape grid", unit="pt", enabled=not params["no_progress"])
    try:
        res = landscape(objs[0], directions=given, compare=objs[1:], labels=run.models.labels, out=outdir,
                        resume=resume, progress=bar, settings=run.settings)
    finally:
        bar.close()
    if ratio is not None:
        res.directions, res.explained_variance = "pca", [float(x) for x in ratio]
    res.meta = run.meta(res.meta)
    if not dist.is_main():  # several ranks: rank 0 writes
        return
    written = list(res.save(outdir))
    written += write_figures(outdir)
    echo_written(written)
    click.echo(f"landscape: {res.mode}, {res.n_evaluations} grid points in {res.wall_time_s:.1f} s; "
               f"L(θ) = {', '.join(f'{v:.6g}' for v in res.loss_centre)}")
    from flatkit.repeats import summary_lines

    for line in summary_lines(res):  # --repeats: L(θ) and the flatness number at the largest disc in the grid
        click.echo(line)


def _check_options(params: dict) -> None:
    if not params["ckpts"] and params.get("model") is None:
        raise UsageError("CKPT: a checkpoint is required (or --replot DIR)")
    if params["resume"] and params["out"] is None:
        raise UsageError("--resume: needs --out DIR, the folder of the interrupted run")
    if params["trajectory"] is not None and params["directions"] != "pca":
        raise UsageError("--trajectory: only with --directions pca")
    if params["directions"] == "pca" and params["trajectory"] is None:
        raise UsageError("--directions pca: needs --trajectory DIR")


def replot(folder: str, out: str | None) -> list[Path]:
    """``--replot DIR``: the figures again from DIR's result files (copied into --out when given)."""
    d = Path(folder)
    if not d.is_dir():
        raise UsageError(f"--replot {folder}: not a directory")
    outdir = Path(out) if out is not None else d
    if outdir != d:
        import shutil

        outdir.mkdir(parents=True, exist_ok=True)
        for f in ("landscape.json", "landscape.npz"):
            if (d / f).is_file():
                shutil.copyfile(d / f, outdir / f)
    return write_figures(outdir)


def pca_plane(params: dict, s: LandscapeSettings, obj: Any) -> tuple[Any, Any, LandscapeSettings]:
    """The PCA plane of ``--trajectory`` centred at the model, its explained variance, and the settings with the
    span the trajectory needs (unless ``--span``)."""
    from flatkit import distributed as dist
    from flatkit.analyses.directions import Plane, pca_directions

    traj = load_trajectory(params["trajectory"], params["weights"], params["adm_flags"],
                           params["trust_checkpoint"], obj.device)
    steps = [f"step {st}" if st is not None else f"#{i}" for i, (_, st) in enumerate(traj)]
    traj = [{k: t[k] for k in obj.params} for t, _ in traj]
    pdirs, ratio, coords = pca_directions(traj, k=s.dims, centre=obj.params)
    if s.span is None:
        s = s.replace(span=repr(float(abs(coords).max() * 1.25) or 1.0))
    if dist.is_main():
        click.echo(f"PCA: explained variance {', '.join(f'{x:.3f}' for x in ratio)}", err=True)
    return Plane(pdirs, coords, names=steps), ratio, s


def _finished(folder: Path) -> bool:
    """Whether the landscape in ``folder`` has every grid point (else a rerun of the same settings resumes it)."""
    from flatkit.analyses.landscape import LandscapeResult

    try:
        return bool(LandscapeResult.load(folder).done.all())
    except UsageError:
        return True  # unreadable arrays: the policy's own checks decide
