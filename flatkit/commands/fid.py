"""``flatkit fid SAMPLES REF --detector PATH``: FID and KID with a user-supplied TorchScript detector."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    batch_size_option,
    device_option,
    echo_written,
    out_option,
    resolve_device,
    resolve_out_dir,
    seed_option,
)


@click.command("fid")
@click.argument("samples", metavar="SAMPLES")
@click.argument("ref", metavar="REF")
@click.option(
    "--detector",
    metavar="PATH",
    default=None,
    help="TorchScript feature detector called as detector(images_NCHW_0_255, return_features=True) "
    "(e.g. inception-2015-12-05.pt). Without it only weight-free distances are reported.",
)
@click.option(
    "--ref-cache",
    metavar="FILE",
    default=None,
    help="npz of reference mu/sigma/features: read when it exists, else written.",
)
@click.option(
    "--n-ref", metavar="N", type=click.IntRange(min=2), default=None, help="Use the first N references."
)
@click.option("--kid-subsets", metavar="K", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--kid-subset-size", metavar="M", type=click.IntRange(min=2), default=1000, show_default=True)
@seed_option
@batch_size_option(64)
@device_option
@out_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(
    samples,
    ref,
    detector,
    ref_cache,
    n_ref,
    kid_subsets,
    kid_subset_size,
    seed,
    batch_size,
    device,
    out,
    no_progress,
) -> None:
    """FID / KID of SAMPLES (npz arr_0 uint8 NHWC) against REF (npz images, data spec, or mu/sigma npz)."""
    from flatkit.metrics.fid import fid

    dev = resolve_device(device)
    res = fid(
        samples,
        ref,
        detector=detector,
        batch_size=batch_size,
        device=dev,
        n_ref=n_ref,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
        ref_cache=ref_cache,
        progress=not no_progress,
    )
    out_dir = resolve_out_dir(out, "fid")
    jpath, _ = res.save(out_dir)
    echo_written([jpath])
    if res.fid is not None:
        kid = f"{res.kid:.5g}" if res.kid is not None else "n/a"
        click.echo(f"FID {res.fid:.4f}  KID {kid}")
    else:
        click.echo(
            "no --detector: FID/KID not computed; weight-free distances: "
            + ", ".join(f"{k} {v:.4g}" for k, v in res.weight_free.items())
        )
