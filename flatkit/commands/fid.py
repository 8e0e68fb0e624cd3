"""``flatkit fid SAMPLES REF --detector pytorch-fid|clean-fid|torch-fidelity|PATH|MODULE:FACTORY``: FID and KID."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    claim_out,
    device_option,
    echo_written,
    option_errors,
    out_option,
    overwrite_option,
    resolve_device,
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
@overwrite_option
@click.option("--download", is_flag=True,
              help="Let a named --detector library fetch its Inception weights when they are not in its cache "
                   "(without it nothing is downloaded).")
@click.option("--no-progress", is_flag=True, help="No progress output.")
def command(samples: str, ref: str, **params) -> None:
    """FID / KID of SAMPLES (npz arr_0 uint8 NHWC, or a folder of PNG/JPEG images) against REF (the same, a data
    spec, or a statistics file: pytorch-fid / clean-fid npz, torch-fidelity .pt)."""
    from flatkit.metrics.fid import fid

    s = settings_from(FidSettings, params)
    dev = resolve_device(params["device"])
    state = claim_out(params, "fid", s, identity=[[_sha256(samples), str(ref)]], one_checkpoint=False)
    if state.reused:  # --out holds this FID (same settings, samples and reference)
        return
    with option_errors():
        res = fid(samples, ref, settings=s, device=dev, progress=not params["no_progress"],
                  download=params["download"])
    jpath, _ = res.save(state.path)
    echo_written([jpath])
    if res.fid is not None:
        kid = f"{res.kid:.5g}" if res.kid is not None else "n/a"
        click.echo(f"FID {res.fid:.4f}  KID {kid}")
    else:
        click.echo("no --detector: FID/KID not computed; weight-free distances: "
                   + ", ".join(f"{k} {v:.4g}" for k, v in res.weight_free.items()))


def _sha256(path: str) -> str | None:
    """The samples file's sha256 (what fid.json records), None when it cannot be read (fid itself says why)."""
    from flatkit.metrics.fid import samples_sha256

    try:
        return samples_sha256(path)
    except OSError:
        return None
