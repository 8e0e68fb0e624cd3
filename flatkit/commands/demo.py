"""``flatkit demo [--out DIR] [--budget fast|full]``: the paper in a box (see :mod:`flatkit.demo`)."""

from __future__ import annotations

import click

from flatkit.commands._common import device_option


@click.command(name="demo")
@click.option("--out", metavar="DIR", default="runs/demo", show_default=True,
              help="Output folder; a rerun with the same folder resumes.")
@click.option("--budget", type=click.Choice(["fast", "full", "smoke"]), default="fast", show_default=True,
              help="fast: about 10 minutes on a 2-core CPU; full: longer training and larger banks; smoke: the "
                   "pipeline in about a minute, numbers meaningless.")
@click.option("--workers", metavar="N", type=click.IntRange(min=1), default=None,
              help="Processes working in parallel.  [default: the CPU count, at most 3]")
@click.option("--quiet", is_flag=True, help="No progress output.")
@device_option
def command(out: str, budget: str, workers: int | None, quiet: bool, device: str) -> None:
    """Train the tiny preset as plain, +SAM and +IP (EMA and SWA tracked), measure flatness and what it buys for
    each of the paper's nine arms, and write report.md and report.html."""
    from flatkit import progress
    from flatkit.demo import demo
    from flatkit.outputs import lock_out

    progress.configure(not quiet)
    lock_out(out)  # one demo per folder at a time (a rerun resumes)
    res = demo(out=out, budget=budget, workers=workers, progress=not quiet, device=device)
    verb = "wrote" if res.report_written else "up to date:"
    click.echo(f"{verb} {res.report_md}")
    click.echo(f"{verb} {res.report_html}")
