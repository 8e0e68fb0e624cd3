"""``flatkit sharpness CKPT... [--compare CKPT2] --kind keskar|l2|average|adaptive --eps E``."""

from __future__ import annotations

import click

from flatkit.commands._common import analysis_command, analysis_setup, echo_written
from flatkit.settings import SharpnessSettings


@analysis_command("sharpness", SharpnessSettings, precision=False)
def command(**params) -> None:
    """Sharpness of the diffusion loss at each model's weights, on one bank and the same seeds.

    Writes sharpness.json and sharpness.png (the models side by side) into --out.
    """
    from flatkit.analyses.sharpness import SharpnessResult, sharpness
    from flatkit.plots.sharpness import plot_sharpness

    run = analysis_setup(params, "sharpness", SharpnessSettings)
    if run.out_state.reused:  # --out holds this result (same settings and checkpoints): nothing to compute
        return
    objs = run.objectives
    res = sharpness(objs[0], compare=objs[1:], labels=run.models.labels, settings=run.settings)
    res.meta = run.meta(res.meta)
    written = list(res.save(run.out_dir))
    written += plot_sharpness(SharpnessResult.load(run.out_dir), run.out_dir / "sharpness")
    echo_written(written)
    unit = " %" if res.kind == "keskar" else ""
    for m, label in enumerate(res.labels):
        extra = (f"  ({res.confidence:.0%} CI {res.ci_low[m]:.4g} .. {res.ci_high[m]:.4g})"
                 if res.kind == "average" else "")
        click.echo(f"{label}: {res.kind} sharpness (eps {res.eps:g}): {res.value[m]:.6g}{unit}{extra}; "
                   f"L(θ) = {res.loss0[m]:.6g}")
    from flatkit.repeats import summary_lines

    for line in summary_lines(res):  # --repeats
        click.echo(line)
