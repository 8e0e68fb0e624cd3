"""``flatkit sharpness CKPT... [--compare CKPT2] --kind keskar|l2|average|adaptive --eps E``."""

from __future__ import annotations

import time

import click

from flatkit.commands._common import (
    echo_written,
    load_models,
    models_options,
    objectives_for,
    option_message,
    resolve_out_dir,
    run_options,
    settings_from,
    settings_options,
)
from flatkit.errors import UsageError
from flatkit.settings import SharpnessSettings


@click.command("sharpness")
@models_options
@settings_options(SharpnessSettings)
@run_options
def command(**params) -> None:
    """Sharpness of the diffusion loss at each model's weights, on one bank and the same seeds.

    Writes sharpness.json and sharpness.png (the models side by side) into --out.
    """
    from flatkit.analyses.sharpness import SharpnessResult, sharpness
    from flatkit.plots.sharpness import plot_sharpness
    from flatkit.results import make_meta

    s = settings_from(SharpnessSettings, params)
    t0 = time.perf_counter()
    models = load_models(params["ckpts"], params["compare"], params["labels"], params["weights"], params["device"],
                         params["adm_flags"], params["trust_checkpoint"])
    objs = objectives_for(models, s)
    outdir = resolve_out_dir(params["out"], "sharpness")
    try:
        res = sharpness(objs[0], compare=objs[1:], labels=models.labels, settings=s)
    except UsageError as e:
        raise UsageError(option_message(str(e))) from None
    res.meta = {**res.meta, **make_meta(config=s, runs=models.runs, labels=models.labels, device=objs[0].device,
                                        wall_time_s=time.perf_counter() - t0)}
    written = list(res.save(outdir))
    written += plot_sharpness(SharpnessResult.load(outdir), outdir / "sharpness")
    echo_written(written)
    unit = " %" if res.kind == "keskar" else ""
    for m, label in enumerate(res.labels):
        extra = (f"  ({res.confidence:.0%} CI {res.ci_low[m]:.4g} .. {res.ci_high[m]:.4g})"
                 if res.kind == "average" else "")
        click.echo(f"{label}: {res.kind} sharpness (eps {res.eps:g}): {res.value[m]:.6g}{unit}{extra}; "
                   f"L(θ) = {res.loss0[m]:.6g}")
