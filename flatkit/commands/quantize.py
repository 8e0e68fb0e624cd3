"""``flatkit quantize CKPT... --bits 8,6,4``: symmetric round-to-nearest weight quantization and what it costs."""

from __future__ import annotations

import click

from flatkit.commands._common import analysis_command, echo_written, sampling_result
from flatkit.settings import QuantizeSettings


@analysis_command("quantize", QuantizeSettings, click.option("--save", "save_ckpt", is_flag=True,
                  help="Write quantized_<b>bit_<granularity>.pt (a flatkit checkpoint) into --out for each bit width "
                       "(<m>_quantized_... for model m with --compare)."))
def command(**params) -> None:
    """Fake-quantize conv / linear weights; report weight error, loss change, paired drift and distance."""
    from flatkit.analyses.robustness.quantize import QuantizeResult, quantize
    from flatkit.plots.robustness import plot_quantize, plot_quantize_samples

    res, run, written = sampling_result(params, "quantize", QuantizeSettings, quantize, extra=lambda run: {
        "save_dir": run.out_dir if params["save_ckpt"] else None})
    if res is None:  # reused: --out holds this result already
        return
    saved = QuantizeResult.load(run.out_dir)
    echo_written([*written, *plot_quantize(saved, run.out_dir / "quantize"), *[p for ps in res.saved for p in ps],
                  *plot_quantize_samples(saved, run.out_dir / "quantize_samples")])
    from flatkit.repeats import summary_lines

    last = len(res.bits) - 1  # --repeats: the last bit width
    for line in summary_lines(res, [(k, (last,), f"{k} at {res.bits[-1]} bits")
                                    for k in ("loss_change", "drift_mse", "distance")]):
        click.echo(line)
