"""``flatkit figures RUN_DIR... --out DIR``: the paper's figures and tables from result files (no compute)."""

from __future__ import annotations

from pathlib import Path

import click

from flatkit.commands._common import overwrite_option, parse_labels, resolve_out_dir, results_reader_options
from flatkit.errors import UsageError


@click.command("figures")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True)
@click.option("--out", metavar="DIR", default=None, help="Output folder (default: a new folder under runs/).")
@overwrite_option
@results_reader_options
def command(run_dirs: tuple[str, ...], out: str | None, label: tuple[str, ...], landscape_radius: float | None,
            perturb_radius: float | None, overwrite: bool) -> None:
    """Rebuild the paper's figures and tables from the result files in RUN_DIR... (never recomputes).

    Each RUN_DIR holds results of one checkpoint + weights choice (hessian, sharpness, perturb, landscape,
    exposure, prior, quantize, sample, fid). Writes a PNG and PDF per figure, tables.md and figures.json into
    --out; a figure whose results no folder holds is skipped with a note.
    """
    from flatkit.outputs import lock_out
    from flatkit.report.figures import figures

    labels = parse_labels(label, run_dirs)
    outdir = resolve_out_dir(out, "figures")
    _check_out(outdir, run_dirs, overwrite)
    lock_out(outdir)
    figures(list(run_dirs), outdir, labels=labels, landscape_radius=landscape_radius,
            perturb_radius=perturb_radius, echo=click.echo)


def _check_out(outdir: Path, run_dirs: tuple[str, ...], overwrite: bool) -> None:
    """The output policy for figures (nothing to reuse: they are cheap and the results may have changed): figures
    of the same RUN_DIRs are redrawn, figures of other folders are refused unless --overwrite."""
    import json

    fj = outdir / "figures.json"
    if overwrite or not fj.is_file():
        return
    try:
        before = {str(Path(r["path"]).resolve()) for r in json.loads(fj.read_text())["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--out {outdir}: holds a corrupt figures.json; pass --overwrite or another --out") from None
    if before != {str(Path(d).resolve()) for d in run_dirs}:
        raise UsageError(f"--out {outdir}: holds figures of other result folders ({fj}); pass --overwrite or "
                         "another --out")
