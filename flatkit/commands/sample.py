"""``flatkit sample CKPT``: DDPM / DDIM samples with per-sample seeds → samples.npz (arr_0), samples.png."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    claim_out,
    echo_written,
    load_models,
    option_errors,
    precision_options,
    resolve_device,
    run_options,
    sampling_precision_for,
    settings_from,
    settings_options,
)
from flatkit.errors import UsageError
from flatkit.settings import SampleSettings

N_SPEC = SampleSettings.__dataclass_fields__["n"]


@click.command("sample")
@click.argument("ckpt", metavar="CKPT", required=False)
@click.option("--n", "--num-samples", "n", metavar="N", type=click.IntRange(min=1), default=N_SPEC.default,
              show_default=True, help="Number of samples (--num-samples: the same, a name torchrun's own parser "
                                      "does not take for its --nnodes).")
@settings_options(SampleSettings, skip=("n",))
@run_options
@precision_options()
def command(**params) -> None:
    """Draw samples (DDPM / DDIM, respaced steps); sample i depends only on (--seed, i), not on the batch."""
    from flatkit import distributed as dist
    from flatkit.sampling import sample

    dist.setup_command("sample", click.get_current_context().params)  # torchrun: join, same options
    s = settings_from(SampleSettings, params)
    if "," in str(params["weights"]):
        raise UsageError(f"--weights {params['weights']}: sample takes one weights choice")
    dev = resolve_device(params["device"])
    models = load_models(params["ckpt"], (), None, params["weights"], dev, params["adm_flags"],
                         params["trust_checkpoint"], params.get("download", False))
    state = claim_out(params, "sample", s, models.runs, prefixes=("samples",))
    if state.reused:  # --out holds these samples (same settings and checkpoint)
        return
    out_dir = state.path
    sampling_precision_for(models.runs, params["precision"], params["channels_last"], dev)  # checks; channels-last
    with option_errors():
        res = sample(models.runs[0], settings=s, device=dev, progress=not params["no_progress"],
                     precision=params["precision"], channels_last=params["channels_last"],
                     label=models.labels[0])
    if not dist.is_main():  # several ranks: the samples were gathered on rank 0, which writes
        return
    jpath, npath = res.save(out_dir)
    echo_written([jpath, npath, out_dir / "samples.png"])
