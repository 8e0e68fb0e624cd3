"""``flatkit exposure CKPT...``: exposure bias, ‖ε_θ‖ along the sampling chain vs on forward-noised data."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    batch_size_option,
    checkpoint_options,
    data_option,
    device_option,
    echo_written,
    out_option,
    precision_options,
    resolve_device,
    resolve_out_dir,
    sampling_precision_for,
    seed_option,
)
from flatkit.commands.prior import load_runs, multi_weights_option
from flatkit.commands.sample import sampler_options
from flatkit.errors import UsageError


@click.command("exposure")
@click.argument("ckpts", metavar="CKPT...", nargs=-1, required=True)
@sampler_options(default_steps=20, default_n=64, default_sampler="ddpm")
@click.option(
    "--norm",
    type=click.Choice(["l2", "squared"]),
    default="l2",
    show_default=True,
    help="Per-image ‖ε_θ‖₂ or ‖ε_θ‖₂².",
)
@click.option("--no-delta", is_flag=True, help="Skip δ_t (saves one sampling chain per checkpoint).")
@seed_option
@multi_weights_option
@data_option
@batch_size_option(64)
@device_option
@out_option
@checkpoint_options
@precision_options()
def command(
    ckpts,
    n,
    steps,
    sampler,
    eta,
    respacing,
    no_clip,
    no_progress,
    norm,
    no_delta,
    seed,
    weights,
    data,
    batch_size,
    device,
    out,
    adm_flags,
    trust_checkpoint,
    precision="fp32",
    channels_last=False,
) -> None:
    """ADM-ES protocol: sampling vs training ‖ε_θ‖ at the same respaced steps, their gap, and δ_t."""
    from flatkit.plots.robustness import plot_exposure
    from flatkit.analyses.robustness.exposure import exposure

    if no_clip:
        raise UsageError("--no-clip: not supported by exposure (the chain is sampled as ADM, clipped)")
    dev = resolve_device(device)
    runs = load_runs(ckpts, weights, adm_flags, trust_checkpoint, dev)
    out_dir = resolve_out_dir(out, "exposure")
    ctx, prec = sampling_precision_for(runs, precision, channels_last, dev)
    with ctx:
        res = exposure(
            runs,
            n=n,
            steps=steps,
            sampler=sampler,
            eta=eta,
            seed=seed,
            data=data,
            norm=norm,
            batch_size=batch_size,
            respacing=respacing,
            device=dev,
            progress=not no_progress,
            delta=not no_delta,
        )
    res.meta["precision"] = prec
    jpath, npath = res.save(out_dir)
    echo_written([jpath, npath, *plot_exposure(res.to_json(), out_dir / "exposure")])
    click.echo(f"gap last step {res.gap_last:.4g}, mean {res.gap_mean:.4g} ({res.checkpoints[0]['label']})")
