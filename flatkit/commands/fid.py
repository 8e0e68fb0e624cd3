"""``flatkit fid SAMPLES REF --detector PATH``: FID and KID with a user-supplied TorchScript detector."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    device_option,
    echo_written,
    option_errors,
    out_option,
    resolve_device,
    resolve_out_dir,
    settings_from,
    settings_options,
)
from flatkit.settings import FidSettings


@click.command("fid")
@click.argument("samples", metavar="SAMPLES")
@click.argument("ref", metavar="REF")
@settings_options(FidSettings)
@device_option
@out_option
@click.option("--no-progress", is_flag=True, help="No progress output.")
def command(samples: str, ref: str, **params) -> None:
    """FID / KID of SAMPLES (npz arr_0 uint8 NHWC) against REF (npz images, data spec, or mu/sigma npz)."""
    from flatkit.metrics.fid import fid

    s = settings_from(FidSettings, params)
    dev = resolve_device(params["device"])
    with option_errors():
        res = fid(samples, ref, settings=s, device=dev, progress=not params["no_progress"])
    out_dir = resolve_out_dir(params["out"], "fid")
    jpath, _ = res.save(out_dir)
    echo_written([jpath])
    if res.fid is not None:
        kid = f"{res.kid:.5g}" if res.kid is not None else "n/a"
        click.echo(f"FID {res.fid:.4f}  KID {kid}")
    else:
        click.echo("no --detector: FID/KID not computed; weight-free distances: "
                   + ", ".join(f"{k} {v:.4g}" for k, v in res.weight_free.items()))
