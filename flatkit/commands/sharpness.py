"""``flatkit sharpness CKPT --kind keskar|l2|average|adaptive --eps E``."""

from __future__ import annotations

import time

import click

from flatkit.commands._common import (
    analysis_options,
    echo_written,
    resolve_out_dir,
)
from flatkit.commands.landscape import build_objectives, run_meta


@click.command("sharpness")
@click.argument("ckpt", metavar="CKPT", required=False)
@click.option("--kind", type=click.Choice(["keskar", "l2", "average", "adaptive"]), default="keskar",
              show_default=True, help="Keskar ε-sharpness, L2-ball (SAM) worst case, Gaussian average, or "
                                      "adaptive (ASAM) worst case.")
@click.option("--eps", metavar="E", type=float, default=None,
              help="Keskar ε, ball radius ρ, or noise σ  [default: keskar 1e-3, l2 0.05, average 0.01, "
                   "adaptive 0.05]")
@click.option("--restarts", metavar="N", type=click.IntRange(min=1), default=3, show_default=True,
              help="Restarts of the gradient ascent (worst-case kinds).")
@click.option("--steps", metavar="N", type=click.IntRange(min=0), default=10, show_default=True,
              help="Ascent steps per restart (worst-case kinds).")
@click.option("--lr", metavar="A", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Ascent step, in box half-widths (keskar, default 0.25) or radii (l2/adaptive, default 1).")
@click.option("--samples", metavar="N", type=click.IntRange(min=2), default=32, show_default=True,
              help="Gaussian draws (average).")
@click.option("--confidence", metavar="C", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.95, show_default=True, help="Confidence level of the interval (average).")
@click.option("--eta", metavar="η", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Adaptive: c = |θ| + η.")
@analysis_options(n_eval=64)
def command(ckpt: str, kind: str, eps: float | None, restarts: int, steps: int, lr: float | None, samples: int,
            confidence: float, eta: float, data: str | None, n_eval: int, seed: int, weights: str, device: str,
            batch_size: int, out: str | None, adm_flags: str | None, trust_checkpoint: bool) -> None:
    """Sharpness of the diffusion loss at CKPT's weights; writes sharpness.json into --out."""
    from flatkit.analyses.sharpness import sharpness

    t0 = time.perf_counter()
    runs, objs = build_objectives(ckpt, [], weights, data, n_eval, seed, batch_size, device, adm_flags,
                                  trust_checkpoint)
    outdir = resolve_out_dir(out, "sharpness")
    res = sharpness(objs[0], kind=kind, eps=eps, restarts=restarts, steps=steps, lr=lr, samples=samples,
                    confidence=confidence, eta=eta, seed=seed)
    config = {"ckpt": ckpt, "kind": kind, "eps": res.eps, "restarts": restarts, "steps": steps, "lr": lr,
              "samples": samples, "confidence": confidence, "eta": eta, "data": data, "n_eval": n_eval,
              "seed": seed, "weights": weights, "batch_size": batch_size}
    res.meta = run_meta(runs, objs[0].device, t0, config, res.meta)
    echo_written(list(res.save(outdir)))
    unit = " %" if kind == "keskar" else ""
    extra = f"  ({confidence:.0%} CI {res.ci_low:.4g} .. {res.ci_high:.4g})" if kind == "average" else ""
    click.echo(f"{kind} sharpness (eps {res.eps:g}): {res.value:.6g}{unit}{extra}; L(θ) = {res.loss0:.6g}")
