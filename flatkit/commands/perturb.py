"""``flatkit perturb CKPT... [--compare CKPT2]``: L(θ + r·d) − L(θ) against the radius r, random and worst-case
directions."""

from __future__ import annotations

import click

from flatkit.commands._common import analysis_command, analysis_setup, echo_written
from flatkit.settings import PerturbSettings


@analysis_command("perturb", PerturbSettings)
def command(**params) -> None:
    """Loss under weight perturbation: ΔL(r) for random directions (mean ± std) and the worst case.

    Writes perturb.json, perturb.npz, perturb.png and perturb.pdf into --out.
    """
    from flatkit import distributed as dist
    from flatkit.analyses.perturb import PerturbResult, perturb
    from flatkit.plots.landscape import plot_perturb

    dist.setup_command("perturb", click.get_current_context().params)  # torchrun: join, same options
    run = analysis_setup(params, "perturb", PerturbSettings)
    if run.out_state.reused:  # --out holds this result (same settings and checkpoints): nothing to compute
        return
    objs, s = run.objectives, run.settings
    res = perturb(objs[0], compare=objs[1:], labels=run.models.labels, settings=s)
    res.meta = run.meta(res.meta)
    if not dist.is_main():  # several ranks: rank 0 writes
        return
    written = list(res.save(run.out_dir))
    written += plot_perturb(PerturbResult.load(run.out_dir), run.out_dir / "perturb")
    echo_written(written)
    r = res.radii
    for m, name in enumerate(res.labels):
        line = f"{name}: L(θ) = {res.loss0[m]:.6g}, ΔL at r = {r[-1]:g}: random {res.mean[m, -1]:.4g}"
        line += f" ± {res.std[m, -1]:.2g}"
        if s.worst:
            line += f", worst case {res.worst[m, -1]:.4g}"
        click.echo(line)
    from flatkit.repeats import summary_lines

    at = f"at r = {r[-1]:g}"  # --repeats: ΔL at the largest radius
    for line in summary_lines(res, [("mean", (-1,), f"ΔL random {at}"), ("worst", (-1,), f"ΔL worst {at}")]):
        click.echo(line)
