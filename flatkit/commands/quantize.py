"""``flatkit quantize CKPT --bits 8,6,4``: symmetric round-to-nearest weight quantization and what it
costs."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    batch_size_option,
    checkpoint_options,
    data_option,
    device_option,
    echo_written,
    load_run,
    n_eval_option,
    out_option,
    parse_int_list,
    precision_options,
    resolve_device,
    resolve_out_dir,
    sampling_precision_for,
    seed_option,
    weights_option,
)
from flatkit.commands.sample import sampler_options
from flatkit.errors import UsageError


@click.command("quantize")
@click.argument("ckpt", metavar="CKPT")
@click.option(
    "--bits", metavar="B[,...]", default="8,6,4", show_default=True, help="Bit widths, each in 2..16."
)
@click.option(
    "--granularity",
    type=click.Choice(["per-tensor", "per-channel"]),
    default="per-tensor",
    show_default=True,
    help="One step per tensor or per output channel.",
)
@click.option(
    "--skip", metavar="PATTERN[,...]", default="", help="Module names (glob or regex) kept in full precision."
)
@click.option(
    "--skip-first-last", is_flag=True, help="Keep the first and last conv/linear layers in full precision."
)
@click.option(
    "--save",
    "save_ckpt",
    is_flag=True,
    help="Write quantized_<b>bit_<granularity>.pt (a flatkit checkpoint) into --out for each bit width.",
)
@sampler_options(default_steps=50, default_n=64, default_sampler="ddim")
@seed_option
@weights_option
@data_option
@n_eval_option(256)
@click.option(
    "--n-ref",
    metavar="N",
    type=click.IntRange(min=2),
    default=512,
    show_default=True,
    help="Data items for the distance to the data.",
)
@batch_size_option(64)
@device_option
@out_option
@checkpoint_options
@precision_options()
def command(
    ckpt,
    bits,
    granularity,
    skip,
    skip_first_last,
    save_ckpt,
    n,
    steps,
    sampler,
    eta,
    respacing,
    no_clip,
    no_progress,
    seed,
    weights,
    data,
    n_eval,
    n_ref,
    batch_size,
    device,
    out,
    adm_flags,
    trust_checkpoint,
    precision="fp32",
    channels_last=False,
) -> None:
    """Fake-quantize conv / linear weights; report weight error, loss change, paired drift and distance."""
    from flatkit.plots.robustness import plot_quantize, plot_quantize_samples
    from flatkit.analyses.robustness.quantize import check_bits, quantize

    bit_list = [check_bits(b) for b in parse_int_list(bits, "--bits")]
    skips = [s.strip() for s in skip.split(",") if s.strip()]
    if no_clip:
        raise UsageError("--no-clip: not supported by quantize")
    dev = resolve_device(device)
    run = load_run(ckpt, weights, adm_flags, trust_checkpoint, dev)
    out_dir = resolve_out_dir(out, "quantize")
    ctx, prec = sampling_precision_for([run], precision, channels_last, dev)
    with ctx:
        res = quantize(
            run,
            bits=bit_list,
            granularity=granularity,
            skip=skips,
            skip_first_last=skip_first_last,
            n=n,
            steps=steps,
            sampler=sampler,
            eta=eta,
            seed=seed,
            data=data,
            n_eval=n_eval,
            n_ref=n_ref,
            batch_size=batch_size,
            respacing=respacing,
            device=dev,
            save_dir=out_dir if save_ckpt else None,
            progress=not no_progress,
        )
    res.meta["precision"] = prec
    jpath, npath = res.save(out_dir)
    paths = [jpath, npath, *plot_quantize(res.to_json(), out_dir / "quantize"), *res.saved]
    if res.previews is not None:
        paths += plot_quantize_samples(res.to_json(), res.previews, out_dir / "quantize_samples")
    echo_written(paths)
