"""``flatkit quantize CKPT... --bits 8,6,4``: symmetric round-to-nearest weight quantization and what it costs."""

from __future__ import annotations

import click

from flatkit.commands._common import analysis_command, echo_written, sampling_setup
from flatkit.settings import QuantizeSettings


@analysis_command("quantize", QuantizeSettings, click.option("--save", "save_ckpt", is_flag=True,
                  help="Write quantized_<b>bit_<granularity>.pt (a flatkit checkpoint) into --out for each bit width "
                       "(<m>_quantized_... for model m with --compare)."))
def command(**params) -> None:
    """Fake-quantize conv / linear weights; report weight error, loss change, paired drift and distance."""
    from flatkit.analyses.robustness.quantize import QuantizeResult, quantize
    from flatkit.plots.robustness import plot_quantize, plot_quantize_samples

    run = sampling_setup(params, "quantize", QuantizeSettings)
    s = run.settings
    runs = run.models.runs
    with run.context:
        res = quantize(runs[0], compare=runs[1:], labels=run.models.labels, settings=s, device=run.device,
                       save_dir=run.out_dir if params["save_ckpt"] else None, progress=not params["no_progress"])
    res.meta["precision"] = run.precision
    jpath, npath = res.save(run.out_dir)
    saved = QuantizeResult.load(run.out_dir)
    echo_written([jpath, npath, *plot_quantize(saved, run.out_dir / "quantize"), *[p for ps in res.saved for p in ps],
                  *plot_quantize_samples(saved, run.out_dir / "quantize_samples")])
