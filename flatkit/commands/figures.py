"""``flatkit figures RUN_DIR... --out DIR``: the paper's figures and tables from result files (no compute)."""

from __future__ import annotations

import click

from flatkit.commands._common import parse_labels, resolve_out_dir, results_reader_options


@click.command("figures")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True)
@click.option("--out", metavar="DIR", default=None, help="Output folder (default: a new folder under runs/).")
@results_reader_options
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
