"""``flatkit quantize CKPT... --bits 8,6,4``: symmetric round-to-nearest weight quantization and what it costs."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    echo_written,
    models_options,
    option_errors,
    precision_options,
    run_options,
    sampling_setup,
    settings_from,
    settings_options,
)
from flatkit.settings import QuantizeSettings


@click.command("quantize")
@models_options
@settings_options(QuantizeSettings)
@click.option("--save", "save_ckpt", is_flag=True,
              help="Write quantized_<b>bit_<granularity>.pt (a flatkit checkpoint) into --out for each bit width "
                   "(<m>_quantized_... for model m with --compare).")
@run_options
@precision_options()
def command(**params) -> None:
    """Fake-quantize conv / linear weights; report weight error, loss change, paired drift and distance."""
    from flatkit.analyses.robustness.quantize import QuantizeResult, quantize
    from flatkit.plots.robustness import plot_quantize, plot_quantize_samples

    s = settings_from(QuantizeSettings, params)
    run = sampling_setup(params, "quantize")
    runs = run.models.runs
    with run.context, option_errors():
        res = quantize(runs[0], compare=runs[1:], labels=run.models.labels, settings=s, device=run.device,
                       save_dir=run.out_dir if params["save_ckpt"] else None, progress=not params["no_progress"])
    res.meta["precision"] = run.precision
    jpath, npath = res.save(run.out_dir)
    saved = QuantizeResult.load(run.out_dir)
    echo_written([jpath, npath, *plot_quantize(saved, run.out_dir / "quantize"), *[p for ps in res.saved for p in ps],
                  *plot_quantize_samples(saved, run.out_dir / "quantize_samples")])
