"""``flatkit sample CKPT``: DDPM / DDIM samples with per-sample seeds → samples.npz (arr_0), samples.png."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    batch_size_option,
    checkpoint_options,
    device_option,
    echo_written,
    load_run,
    out_option,
    precision_options,
    resolve_device,
    resolve_out_dir,
    sampling_precision_for,
    seed_option,
    weights_option,
)


def sampler_options(default_steps: int = 100, default_n: int = 64, default_sampler: str = "ddpm"):
    """``--n``, ``--steps``, ``--sampler``, ``--eta``, ``--respacing``, ``--no-clip``, ``--no-progress``."""

    def deco(f):
        f = click.option("--no-progress", is_flag=True, help="No progress bar.")(f)
        f = click.option("--no-clip", is_flag=True, help="Do not clip the x_0 prediction to [-1, 1].")(f)
        f = click.option(
            "--respacing",
            metavar="SPEC",
            default=None,
            help="ADM timestep_respacing (e.g. ddim20, 20, 10,5,5); default ddim<T'> for DDIM, "
            "<T'> for DDPM.",
        )(f)
        f = click.option(
            "--eta",
            metavar="FLOAT",
            type=click.FloatRange(min=0),
            default=0.0,
            show_default=True,
            help="DDIM eta (0: deterministic).",
        )(f)
        f = click.option(
            "--sampler",
            type=click.Choice(["ddpm", "ddim"]),
            default=default_sampler,
            show_default=True,
            help="Ancestral DDPM or DDIM.",
        )(f)
        f = click.option(
            "--steps",
            metavar="T'",
            type=click.IntRange(min=1),
            default=default_steps,
            show_default=True,
            help="Number of sampling steps T' (respaced).",
        )(f)
        f = click.option(
            "--n",
            "--num-samples",  # the same option under a name torchrun's own parser does not take for its --nnodes
            "n",
            metavar="N",
            type=click.IntRange(min=1),
            default=default_n,
            show_default=True,
            help="Number of samples.",
        )(f)
        return f

    return deco


@click.command("sample")
@click.argument("ckpt", metavar="CKPT")
@sampler_options()
@seed_option
@weights_option
@batch_size_option(64)
@device_option
@out_option
@checkpoint_options
@precision_options()
def command(
    ckpt: str,
    n: int,
    steps: int,
    sampler: str,
    eta: float,
    respacing: str | None,
    no_clip: bool,
    no_progress: bool,
    seed: int,
    weights: str,
    batch_size: int,
    device: str,
    out: str | None,
    adm_flags: str | None,
    trust_checkpoint: bool,
    precision: str = "fp32",
    channels_last: bool = False,
) -> None:
    """Draw samples (DDPM / DDIM, respaced steps); sample i depends only on (--seed, i), not on the batch."""
    from flatkit import distributed as dist
    from flatkit.sampling import sample

    dist.setup_command("sample", click.get_current_context().params)  # torchrun: join, same options
    dev = resolve_device(device)
    run = load_run(ckpt, weights, adm_flags, trust_checkpoint, dev)
    out_dir = resolve_out_dir(out, "sample")
    sampling_precision_for([run], precision, channels_last, dev)  # checks; channels-last models on CUDA
    res = sample(
        run,
        n=n,
        steps=steps,
        sampler=sampler,
        eta=eta,
        seed=seed,
        respacing=respacing,
        clip_denoised=not no_clip,
        batch_size=batch_size,
        device=dev,
        progress=not no_progress,
        precision=precision,
        channels_last=channels_last,
    )
    if not dist.is_main():  # several ranks: the samples were gathered on rank 0, which writes
        return
    jpath, npath = res.save(out_dir)
    echo_written([jpath, npath, out_dir / "samples.png"])
