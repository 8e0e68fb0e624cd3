"""``flatkit perturb CKPT... [--compare CKPT2]``: L(θ + r·d) − L(θ) against the radius r, random and worst-case
directions."""

from __future__ import annotations

import time

import click

from flatkit.commands._common import (
    apply_precision,
    echo_written,
    load_models,
    models_options,
    objectives_for,
    option_message,
    precision_options,
    resolve_out_dir,
    run_options,
    settings_from,
    settings_options,
)
from flatkit.errors import UsageError
from flatkit.settings import PerturbSettings


@click.command("perturb")
@models_options
@settings_options(PerturbSettings)
@precision_options()
@run_options
def command(**params) -> None:
    """Loss under weight perturbation: ΔL(r) for random directions (mean ± std) and the worst case.

    Writes perturb.json, perturb.npz, perturb.png and perturb.pdf into --out.
    """
    from flatkit import distributed as dist
    from flatkit.analyses.perturb import PerturbResult, perturb
    from flatkit.plots.landscape import plot_perturb
    from flatkit.results import make_meta

    dist.setup_command("perturb", click.get_current_context().params)  # torchrun: join, same options
    s = settings_from(PerturbSettings, params)
    t0 = time.perf_counter()
    models = load_models(params["ckpts"], params["compare"], params["labels"], params["weights"], params["device"],
                         params["adm_flags"], params["trust_checkpoint"])
    objs = objectives_for(models, s)
    prec = apply_precision(objs, params["precision"], params["channels_last"])
    outdir = resolve_out_dir(params["out"], "perturb")
    try:
        res = perturb(objs[0], compare=objs[1:], labels=models.labels, settings=s)
    except UsageError as e:
        raise UsageError(option_message(str(e))) from None
    res.meta = {**res.meta, **make_meta(config=s, runs=models.runs, labels=models.labels, device=objs[0].device,
                                        wall_time_s=time.perf_counter() - t0), "precision": prec}
    if not dist.is_main():  # several ranks: rank 0 writes
        return
    written = list(res.save(outdir))
    written += plot_perturb(PerturbResult.load(outdir), outdir / "perturb")
    echo_written(written)
    r = res.radii
    for m, name in enumerate(res.labels):
        line = f"{name}: L(θ) = {res.loss0[m]:.6g}, ΔL at r = {r[-1]:g}: random {res.mean[m, -1]:.4g}"
        line += f" ± {res.std[m, -1]:.2g}"
        if s.worst:
            line += f", worst case {res.worst[m, -1]:.4g}"
        click.echo(line)
