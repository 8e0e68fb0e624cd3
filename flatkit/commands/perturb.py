"""``flatkit perturb CKPT``: L(θ + r·d) − L(θ) against the radius r, random and worst-case directions."""

from __future__ import annotations

import time

import click

from flatkit.commands._common import (
    analysis_options,
    echo_written,
    parse_float_list,
    precision_options,
    resolve_out_dir,
)
from flatkit.commands.landscape import compared_objectives, run_meta
from flatkit.errors import UsageError


@click.command("perturb")
@click.argument("ckpt", metavar="CKPT", required=False)
@click.option("--compare", metavar="CKPT2", multiple=True,
              help="More checkpoints in the same figure, same bank and directions (repeat or comma-separated); "
                   "raw/ema/ema_<rate>/swa names the other weights of CKPT.")
@click.option("--labels", metavar="A,B,..", default=None, help="Legend labels (default: the file names).")
@click.option("--radii", metavar="R1,R2,..", default="0,0.01,0.02,0.04,0.06,0.08,0.1", show_default=True,
              help="Perturbation radii.")
@click.option("--relative", type=click.Choice(["filter", "norm", "none"]), default="filter", show_default=True,
              help="Radius per filter (filter-normalised d), relative to ‖θ‖, or absolute L2.")
@click.option("--bias", type=click.Choice(["zero", "normalise"]), default="zero", show_default=True,
              help="1-D tensors under --relative filter: not perturbed, or normalised as one filter.")
@click.option("--k", "k", metavar="K", type=click.IntRange(min=1), default=8, show_default=True,
              help="Number of random directions.")
@click.option("--worst-steps", metavar="N", type=click.IntRange(min=0), default=3, show_default=True,
              help="Normalised-gradient ascent steps refining the worst-case (SAM) direction.")
@click.option("--no-worst", is_flag=True, help="Skip the worst-case direction.")
@click.option("--mode", type=click.Choice(["auto", "vmap", "sequential"]), default="auto", show_default=True,
              help="Radii of one direction in one vmapped forward, one at a time, or the faster.")
@precision_options()
@analysis_options(n_eval=64)
def command(ckpt: str, compare: tuple[str, ...], labels: str | None, radii: str, relative: str, bias: str,
            k: int, worst_steps: int, no_worst: bool, mode: str, data: str | None, n_eval: int, seed: int,
            weights: str, device: str, batch_size: int, out: str | None, adm_flags: str | None,
            trust_checkpoint: bool, precision: str = "fp32", channels_last: bool = False) -> None:
    """Loss under weight perturbation: ΔL(r) for K random directions (mean ± std) and the worst case.

    Writes perturb.json, perturb.npz, perturb.png and perturb.pdf into --out.
    """
    from flatkit import distributed as dist
    from flatkit.analyses.perturb import load_perturb, perturb
    from flatkit.plots.landscape import plot_perturb

    dist.setup_command("perturb", click.get_current_context().params)  # torchrun: join, same options

    r = parse_float_list(radii, "--radii")
    if any(x < 0 for x in r):
        raise UsageError(f"--radii {radii}: radii must be >= 0")
    t0 = time.perf_counter()
    paths, lab, runs, objs, prec = compared_objectives(ckpt, compare, labels, weights, data, n_eval, seed,
                                                       batch_size, device, adm_flags, trust_checkpoint, precision,
                                                       channels_last)
    outdir = resolve_out_dir(out, "perturb")
    res = perturb(objs[0], radii=r, k=k, seed=seed, relative=relative, bias=bias, worst_case=not no_worst,
                  worst_steps=worst_steps, compare=objs[1:], labels=lab, mode=mode)
    config = {"ckpt": ckpt, "compare": paths[1:], "labels": lab, "radii": r, "relative": relative, "bias": bias,
              "k": k, "worst_steps": worst_steps, "worst_case": not no_worst, "mode": mode, "data": data,
              "n_eval": n_eval, "seed": seed, "weights": weights, "batch_size": batch_size}
    config.update(precision=precision, channels_last=channels_last)
    res.meta = run_meta(runs, objs[0].device, t0, config, res.meta)
    res.meta["precision"] = prec
    if not dist.is_main():  # several ranks: rank 0 writes
        return
    written = list(res.save(outdir))
    written += plot_perturb(load_perturb(outdir), outdir / "perturb")
    echo_written(written)
    for m, name in enumerate(lab):
        line = f"{name}: L(θ) = {res.loss0[m]:.6g}, ΔL at r = {r[-1]:g}: random {res.mean[m, -1]:.4g}"
        line += f" ± {res.std[m, -1]:.2g}"
        if not no_worst:
            line += f", worst case {res.worst[m, -1]:.4g}"
        click.echo(line)
