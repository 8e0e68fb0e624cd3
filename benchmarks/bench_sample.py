"""flatkit sampling vs a bare sampling loop over the same model: images/s and flatkit's overhead.

Both draw the same number of DDIM (eta 0) and DDPM samples with the same respaced steps, model and batch size in
one process. The bare loop is the least a user could write: x_T from torch.randn, then for each respaced step
one model call and the update of ADM's formulas inlined (no per-sample generators, no callbacks, no progress
bar). flatkit's extra work is the per-sample generators (batch-independent samples) and its bookkeeping.

    python benchmarks/bench_sample.py [--ckpt CKPT] [--n 64] [--steps 50] [--device cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def bare_ddim(model, diffusion, x, eta=0.0):
    """DDIM (Song et al. eq. 12, eta 0) written directly; returns x_0."""
    import numpy as np

    ab = torch.as_tensor(diffusion.alphas_cumprod, dtype=torch.float64)
    ab_prev = torch.as_tensor(np.append(1.0, diffusion.alphas_cumprod[:-1]), dtype=torch.float64)
    tmap = torch.as_tensor(diffusion.timestep_map)
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((x.shape[0],), int(tmap[i]), device=x.device)
        eps = model(x, t)[:, : x.shape[1]]
        a, ap = float(ab[i]), float(ab_prev[i])
        x0 = ((x - (1 - a) ** 0.5 * eps) / a**0.5).clamp(-1, 1)
        eps = (x - a**0.5 * x0) / (1 - a) ** 0.5
        x = ap**0.5 * x0 + (1 - ap) ** 0.5 * eps
    return x


def bare_ddpm(model, diffusion, x, g):
    """Ancestral DDPM with the posterior of the (fixed) variance, written directly; returns x_0."""
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((x.shape[0],), i, device=x.device)
        out = diffusion.p_mean_variance(model, x, t, clip_denoised=True)
        noise = torch.randn(x.shape, generator=g).to(x.device) if i > 0 else 0.0
        x = out["mean"] + (0.5 * out["log_variance"]).exp() * noise
    return x


def _time(fn, device, repeats):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="a flatkit checkpoint (default: the tiny preset, random init)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)

    import flatkit
    from flatkit.diffusion import create_diffusion
    from flatkit.models.presets import build_model, get_preset
    from flatkit.sampling import SamplerConfig, draw_samples, respaced, sample_shape

    device = torch.device(args.device)
    if args.ckpt:
        run = flatkit.load(args.ckpt, device=device)
        model, diffusion, mcfg = run.model, run.diffusion, run.config.model
    else:
        mcfg, dcfg = get_preset("tiny")
        model, diffusion = build_model(mcfg, device=device).eval(), create_diffusion(dcfg)
    shape = sample_shape(mcfg)
    rows = {}
    with torch.no_grad():
        for sampler in ("ddim", "ddpm"):
            cfg = SamplerConfig(n=args.n, sampling_steps=args.steps, sampler=sampler, seed=0, batch_size=args.n)
            sp = respaced(diffusion, cfg)
            t_flat = _time(lambda sp=sp, cfg=cfg: draw_samples(model, sp, cfg, shape, device=device), device,
                           args.repeats)
            x_T = torch.randn((args.n, *shape), generator=torch.Generator().manual_seed(0)).to(device)
            if sampler == "ddim":
                t_bare = _time(lambda sp=sp, x_T=x_T: bare_ddim(model, sp, x_T), device, args.repeats)
            else:
                def ddpm(sp=sp, x_T=x_T):
                    return bare_ddpm(model, sp, x_T, torch.Generator().manual_seed(1))

                t_bare = _time(ddpm, device, args.repeats)
            rows[sampler] = {"flatkit_images_per_s": args.n / t_flat, "bare_images_per_s": args.n / t_bare,
                             "overhead": t_flat / t_bare - 1.0}
            print(f"{sampler}: flatkit {args.n / t_flat:8.1f} images/s, bare loop {args.n / t_bare:8.1f} "
                  f"images/s, flatkit overhead {100 * (t_flat / t_bare - 1):+.1f}%  ({args.n} samples, "
                  f"{args.steps} steps, {device})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "torch": torch.__version__, "n": args.n, "steps": args.steps,
                       **rows}, f, indent=2)


if __name__ == "__main__":
    main()
