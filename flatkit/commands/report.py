"""``flatkit report DIR... --out DIR``: the report of result folders (no compute).

Each DIR is a result folder of any analysis command (one checkpoint, or several with ``--compare``: one row per
model) or a ``flatkit demo`` folder (its ``results/*``). Writes ``report.md``, a self-contained ``report.html``,
``report.json``, ``summary.csv``, ``summary.tex`` (LaTeX booktabs) and ``figures/`` into ``--out``.
"""

from __future__ import annotations

from pathlib import Path

import click

from flatkit.commands._common import parse_labels, results_reader_options
from flatkit.errors import UsageError

REPORT_FILES = ("report.md", "report.html", "report.json", "summary.csv", "summary.tex")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or that holds a report already (unless --overwrite)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    held = [f for f in REPORT_FILES if (out / f).exists()]
    if held and not overwrite:
        raise UsageError(f"--out {out}: holds a report already ({held[0]}); pass --overwrite or another --out")


@click.command("report")
@click.argument("dirs", metavar="DIR...", nargs=-1, required=True)
@click.option("--out", metavar="DIR", required=True, help="Output folder of the report.")
@click.option("--overwrite", is_flag=True, help="Replace a report already in --out.")
@click.option("--title", metavar="TEXT", default="flatkit report", show_default=True, help="Report title.")
@results_reader_options
def command(dirs: tuple[str, ...], out: str, overwrite: bool, title: str, label: tuple[str, ...],
            landscape_radius: float | None, perturb_radius: float | None) -> None:
    """Write report.md, report.html, report.json, summary.csv and summary.tex from the result files in DIR...

    A DIR is an analysis's --out folder (hessian, sharpness, perturb, landscape, exposure, prior, quantize,
    sample, fid results, in any mix) or a flatkit demo folder. Nothing is recomputed. L(θ) on the evaluation bank
    is shown beside the flatness numbers.
    """
    from flatkit.outputs import lock_out
    from flatkit.report.collect import expand_dirs
    from flatkit.report.writer import write_report

    labels = parse_labels(label, dirs)
    outdir = Path(out)
    check_out(outdir, overwrite)
    lock_out(outdir)  # created (an unwritable --out is exit 2 naming it) and locked against a second writer
    for d in dirs:  # every DIR must hold a result (one line naming the first that does not)
        expand_dirs(d)
    rep = write_report([(labels.get(d), d) for d in dirs], outdir, title=title,
                       landscape_radius=landscape_radius, perturb_radius=perturb_radius)
    for p in (rep.markdown, rep.html, rep.json, rep.csv, rep.tex):
        click.echo(f"wrote {p}")
    for n in rep.notes:
        click.echo(f"note: {n}", err=True)
