"""``flatkit figures RUN_DIR... --out DIR``: the paper's figures and tables from result files (no compute)."""

from __future__ import annotations

import click

from flatkit.commands._common import resolve_out_dir
from flatkit.errors import UsageError


def parse_labels(values: tuple[str, ...], dirs: tuple[str, ...]) -> dict[str, str]:
    """``--label DIR=NAME`` (repeatable); DIR must be one of the RUN_DIRs (as given, or the same folder)."""
    from pathlib import Path

    known = {str(Path(d).resolve()): d for d in dirs}
    out: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise UsageError(f"--label {v}: expected DIR=NAME")
        d, name = v.rsplit("=", 1)
        if not name.strip():
            raise UsageError(f"--label {v}: empty NAME")
        if d not in dirs and str(Path(d).resolve()) not in known:
            raise UsageError(f"--label {v}: {d} is not one of the RUN_DIRs")
        out[known.get(str(Path(d).resolve()), d)] = name.strip()
    return out


@click.command("figures")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True)
@click.option("--out", metavar="DIR", default=None, help="Output folder (default: a new folder under runs/).")
@click.option("--label", "label", metavar="DIR=NAME", multiple=True,
              help="Arm label of a RUN_DIR (repeatable), instead of the one derived from its checkpoint's "
                   "training configuration and weights (e.g. --label runs/a=+SAM+EMA).")
@click.option("--landscape-radius", metavar="R", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Radius r of the landscape flatness number (mean ΔL over the slice's points with "
                   "‖(α, β)‖ ≤ r)  [default: the largest disc inside the grid]")
@click.option("--perturb-radius", metavar="R", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Radius at which the tables report ΔL under perturbation  [default: the largest radius every "
                   "perturb.json evaluated]")
def command(run_dirs: tuple[str, ...], out: str | None, label: tuple[str, ...], landscape_radius: float | None,
            perturb_radius: float | None) -> None:
    """Rebuild the paper's figures and tables from the result files in RUN_DIR... (never recomputes).

    Each RUN_DIR holds results of one checkpoint + weights choice (hessian, sharpness, perturb, landscape,
    exposure, prior, quantize, sample, fid). Writes a PNG and PDF per figure, tables.md and figures.json into
    --out; a figure whose results no folder holds is skipped with a note.
    """
    from flatkit.report.figures import figures

    labels = parse_labels(label, run_dirs)
    outdir = resolve_out_dir(out, "figures")
    figures(list(run_dirs), outdir, labels=labels, landscape_radius=landscape_radius,
            perturb_radius=perturb_radius, echo=click.echo)
