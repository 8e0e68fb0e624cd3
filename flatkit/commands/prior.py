"""``flatkit prior CKPT...``: robustness to a perturbed noise prior N(μ1, s²I) (and x_T + η z), paired by
seed."""

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
    parse_float_list,
    precision_options,
    resolve_device,
    resolve_out_dir,
    sampling_precision_for,
    seed_option,
)
from flatkit.commands.sample import sampler_options
from flatkit.errors import UsageError


def multi_weights_option(f):
    return click.option(
        "--weights",
        metavar="raw|ema|swa[,...]",
        default="raw",
        show_default=True,
        help="Weights of each checkpoint; a comma-separated list gives one curve per choice.",
    )(f)


def load_runs(ckpts: tuple[str, ...], weights: str, adm_flags, trust: bool, dev) -> list:
    from flatkit.analyses.robustness.common import parse_weights_list

    if not ckpts:
        raise UsageError("CKPT: at least one checkpoint is needed")
    return [load_run(c, w, adm_flags, trust, dev) for c in ckpts for w in parse_weights_list(weights)]


@click.command("prior")
@click.argument("ckpts", metavar="CKPT...", nargs=-1, required=True)
@click.option(
    "--shift",
    metavar="MU[,...]",
    default="0,0.5,1",
    show_default=True,
    help="Prior means μ (x_T = μ·1 + s·z).",
)
@click.option("--scale", metavar="S[,...]", default="1,1.2", show_default=True, help="Prior scales s > 0.")
@click.option(
    "--noise-eta",
    metavar="ETA[,...]",
    default="",
    show_default=True,
    help="Additive perturbations x_T = z + η·z' (prior N(0, (1+η²)I)); empty for none.",
)
@sampler_options(default_steps=50, default_n=64, default_sampler="ddim")
@seed_option
@multi_weights_option
@data_option
@click.option(
    "--n-ref",
    metavar="N",
    type=click.IntRange(min=2),
    default=512,
    show_default=True,
    help="Data items for the distance to the data.",
)
@n_eval_option(256)
@click.option(
    "--projections",
    metavar="L",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Random directions of the sliced Wasserstein distance.",
)
@batch_size_option(64)
@device_option
@out_option
@checkpoint_options
@precision_options()
def command(
    ckpts,
    shift,
    scale,
    noise_eta,
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
    n_ref,
    n_eval,
    projections,
    batch_size,
    device,
    out,
    adm_flags,
    trust_checkpoint,
    precision="fp32",
    channels_last=False,
) -> None:
    """Sample from perturbed priors paired by seed; report KL, drift, loss change and distance to the data."""
    from flatkit.plots.robustness import plot_prior, plot_prior_samples
    from flatkit.analyses.robustness.prior import prior

    shifts = parse_float_list(shift, "--shift")
    scales = parse_float_list(scale, "--scale")
    for s in scales:
        if s <= 0:
            raise UsageError(f"--scale {s:g}: must be > 0")
    etas = parse_float_list(noise_eta, "--noise-eta") if noise_eta.strip() else []
    if no_clip:
        raise UsageError("--no-clip: not supported by prior (samples are compared clipped)")
    dev = resolve_device(device)
    runs = load_runs(ckpts, weights, adm_flags, trust_checkpoint, dev)
    out_dir = resolve_out_dir(out, "prior")
    ctx, prec = sampling_precision_for(runs, precision, channels_last, dev)
    with ctx:
        res = prior(
            runs,
            shifts=shifts,
            scales=scales,
            noise_etas=etas,
            n=n,
            steps=steps,
            sampler=sampler,
            eta=eta,
            seed=seed,
            data=data,
            n_ref=n_ref,
            n_eval=n_eval,
            batch_size=batch_size,
            projections=projections,
            respacing=respacing,
            device=dev,
            progress=not no_progress,
        )
    res.meta["precision"] = prec
    jpath, npath = res.save(out_dir)
    paths = [jpath, npath, *plot_prior(res.to_json(), out_dir / "prior")]
    if res.previews is not None:
        paths += plot_prior_samples(res.to_json(), res.previews, out_dir / "prior_samples")
    echo_written(paths)
