"""Benchmark: the same 2-D landscape grid with flatkit (vmap and sequential) and with loss-landscapes.

Same model, same frozen evaluation bank, same two filter-normalised Gaussian directions (flatkit's), so the
grids must agree. loss-landscapes' ``planar_interpolation`` walks the grid with in-place ``add_`` / ``sub_``
(its points drift in floating point) and, on odd rows, one step behind the even rows (its boustrophedon walk
adds before evaluating on even rows and subtracts before evaluating on odd rows); the comparison maps each of
its values to the grid point it was really evaluated at.

Run:  python benchmarks/bench_landscape.py [--ckpt CKPT | --model small] [--device cuda] [--points 11] [--n-eval 64]
      [--repeats 3]
The contenders run in turn, ``--repeats`` rounds (flatkit sequential, each vmap B, auto, loss-landscapes, in an
order rotating by one each round), and each keeps its best time, so load from other processes hits them alike;
the ratio flatkit / loss-landscapes is also taken per round and reported as median and min-max.
``--threads`` defaults to 1 on machines with at most 2 cores, as the flatkit CLI does.
Prints the timings, the speed-up ratios and the largest grid differences; ``--json FILE`` writes them.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import numpy as np
import torch


class _GroupNorm(torch.nn.GroupNorm):
    """GroupNorm from elementary operations: torch's fused GroupNorm backward has no forward-mode rule, which
    curvlinops' forward-over-reverse HVP needs (the values are GroupNorm's up to float rounding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        g = x.reshape(b, self.num_groups, -1)
        mean = g.mean(dim=2, keepdim=True)
        var = (g - mean).pow(2).mean(dim=2, keepdim=True)
        y = ((g - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
        shape = (1, c) + (1,) * (x.dim() - 2)
        return y * self.weight.reshape(shape) + self.bias.reshape(shape)


class SmallDenoiser(torch.nn.Module):
    """A 5.6k-parameter conv ε-predictor (3 -> 16 channels, two residual Conv-GroupNorm-SiLU blocks, a linear
    time embedding): a model so small that per-point and per-HVP overheads show against its forward pass."""

    def __init__(self, ch: int = 16) -> None:
        super().__init__()
        self.inp = torch.nn.Conv2d(3, ch, 3, padding=1)
        self.temb = torch.nn.Linear(1, ch)
        self.c1, self.n1 = torch.nn.Conv2d(ch, ch, 3, padding=1), _GroupNorm(4, ch)
        self.c2, self.n2 = torch.nn.Conv2d(ch, ch, 3, padding=1), _GroupNorm(4, ch)
        self.out = torch.nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        def silu(h: torch.Tensor) -> torch.Tensor:  # x·σ(x): torch's fused SiLU backward has no forward-mode rule
            return h * torch.sigmoid(h)  # (curvlinops' HVP is forward-over-reverse)

        h = self.inp(x) + self.temb((t.to(x.dtype) / 1000)[:, None])[:, :, None, None]
        h = h + self.c1(silu(self.n1(h)))
        h = h + self.c2(silu(self.n2(h)))
        return self.out(silu(h))


def small_run(device: str | torch.device = "cpu"):
    """A :class:`flatkit.checkpoint.Run` of :class:`SmallDenoiser` (seed 0) on builtin:shapes16, linear schedule."""
    from flatkit.checkpoint import Run
    from flatkit.config import DiffusionConfig, ModelConfig, RunConfig
    from flatkit.diffusion import create_diffusion

    torch.manual_seed(0)
    model = SmallDenoiser().to(device).eval()
    dcfg = DiffusionConfig(diffusion_steps=1000, noise_schedule="linear")
    return Run(model=model, diffusion=create_diffusion(dcfg),
               config=RunConfig(ModelConfig(image_size=16), dcfg, data="builtin:shapes16"))


def build_objective(ckpt: str | None, n_eval: int, batch_size: int, device: str, model: str = "tiny"):
    import flatkit
    from flatkit.objective import Objective

    if ckpt is None and model == "small":
        run = small_run(device)
        return run, Objective(run, n=n_eval, seed=0, loss="mse", batch_size=batch_size)
    if ckpt is None:  # a random tiny ADM UNet, every weight moved off its (partly zero) init
        import tempfile

        from flatkit.checkpoint import make_checkpoint, save_checkpoint
        from flatkit.config import RunConfig
        from flatkit.models.presets import build_model, get_preset

        cfg_m, cfg_d = get_preset("tiny")
        model = build_model(cfg_m)
        g = torch.Generator().manual_seed(0)
        sd = {k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
              for k, v in model.state_dict().items()}
        ckpt = tempfile.mkdtemp() + "/tiny.pt"
        save_checkpoint(make_checkpoint(RunConfig(model=cfg_m, diffusion=cfg_d, data="builtin:shapes16"),
                                        {"raw": sd}), ckpt)
    run = flatkit.load(ckpt, device=device)
    return run, Objective(run, n=n_eval, seed=0, batch_size=batch_size)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def loss_landscapes_plane(model, obj, theta, d1, d2, R, P):
    """A thunk computing loss-landscapes' ``planar_interpolation`` over flatkit's plane θ + a d1 + b d2,
    a, b in [-R, R] on P points, through the same objective (bank) as flatkit."""

    import loss_landscapes
    from loss_landscapes.metrics import Metric

    class ObjectiveLoss(Metric):
        """The flatkit objective at the wrapped module's current parameters (same bank)."""

        def __call__(self, model_wrapper):
            m = model_wrapper.modules[0]
            return float(obj.loss({k: v.detach() for k, v in m.named_parameters()}))

    a = np.linspace(-R, R, P)
    u = {k: (a[1] - a[0]) * d1[k] for k in theta}
    v = {k: (a[1] - a[0]) * d2[k] for k in theta}
    corner = {k: theta[k] + a[0] * d1[k] + a[0] * d2[k] - v[k] for k in theta}

    def module_at(p):
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            for k, t in m.named_parameters():
                t.copy_(p[k])
        return m

    m0 = module_at(corner)
    m1 = module_at({k: corner[k] + P * u[k] for k in theta})
    m2 = module_at({k: corner[k] + P * v[k] for k in theta})
    return lambda: loss_landscapes.planar_interpolation(m0, m1, m2, ObjectiveLoss(), steps=P, deepcopy_model=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--model", default="tiny", choices=["tiny", "small"],
                    help="without --ckpt: the tiny preset UNet (318k parameters) or the 5.6k-parameter SmallDenoiser")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-points", default="4,8,16")
    ap.add_argument("--span", type=float, default=1.0)
    ap.add_argument("--skip-ll", action="store_true", help="skip loss-landscapes")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the best time of each is kept")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 on machines with <= 2 cores, as the CLI)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                    help="autocast of the model's forward, for every contender (GPU measurements)")
    ap.add_argument("--channels-last", action="store_true", help="channels-last inputs and weights (CUDA)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from flatkit.cli import set_cpu_threads

    set_cpu_threads(args.threads)

    from flatkit.analyses.directions import random_directions
    from flatkit.analyses.landscape import landscape

    run, obj = build_objective(args.ckpt, args.n_eval, args.batch_size, args.device, args.model)
    obj.set_precision(args.precision, args.channels_last)
    theta = obj.params
    d1, d2 = random_directions(theta, 2, seed=0, norm="filter", bias="zero")
    P, R = args.points, args.span
    out: dict = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda")
                 else platform.processor() or "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "points": P, "n_eval": args.n_eval, "batch_size": args.batch_size,
                 "num_params": obj.num_params, "precision": args.precision,
                 "channels_last": args.channels_last, "timings_s": {}}

    # time spent inside the objective's micro-batch loss (the model's forward and the loss: the same work for
    # every contender) against the rest (each tool's own overhead: building grid points, walking the grid,
    # bookkeeping), which the load of other processes disturbs far less than the total (CPU only: on a GPU the
    # kernels run asynchronously)
    in_model = {"s": 0.0}
    batch_loss = obj.batch_loss

    def timed_batch_loss(p, i):
        t0 = time.perf_counter()
        r = batch_loss(p, i)
        in_model["s"] += time.perf_counter() - t0
        return r

    obj.batch_loss = timed_batch_loss

    def run_timed(name, fn):
        sync(args.device)
        in_model["s"] = 0.0
        t0 = time.perf_counter()
        res = fn()
        sync(args.device)
        dt = time.perf_counter() - t0
        own = dt - in_model["s"]
        out["timings_s"][name] = min(dt, out["timings_s"].get(name, float("inf")))
        overhead = out.setdefault("overhead_s", {})
        overhead[name] = min(own, overhead.get(name, float("inf")))
        out.setdefault("all_timings_s", {}).setdefault(name, []).append(dt)
        print(f"{name:28s} {dt:8.2f} s   (outside the objective's micro-batch loss: {own:6.3f} s)", flush=True)
        return res

    contenders = []  # (name, warm-up, timed call)
    contenders.append(("flatkit sequential",
                       lambda: landscape(obj, dims=2, points=3, span=R, directions=[d1, d2], mode="sequential",
                                         check=False),
                       lambda: landscape(obj, dims=2, points=P, span=R, directions=[d1, d2], mode="sequential",
                                         check=False)))
    for bp in [int(b) for b in args.batch_points.split(",")]:
        contenders.append((f"flatkit vmap (B={bp})",
                           lambda bp=bp: landscape(obj, dims=2, points=3, span=R, directions=[d1, d2], mode="vmap",
                                                   batch_points=bp, check=False),
                           lambda bp=bp: landscape(obj, dims=2, points=P, span=R, directions=[d1, d2], mode="vmap",
                                                   batch_points=bp, check=False)))
    contenders.append(("flatkit auto", None,
                       lambda: landscape(obj, dims=2, points=P, span=R, directions=[d1, d2], mode="auto",
                                         check=False)))
    if not args.skip_ll:
        contenders.append(("loss-landscapes", None, loss_landscapes_plane(run.model, obj, theta, d1, d2, R, P)))

    results = {}
    for rnd in range(max(1, args.repeats)):
        k = rnd % len(contenders)  # a rotating order: no contender always runs first or last in a round
        for name, warm, fn in contenders[k:] + contenders[:k]:
            if name not in results and warm is not None:
                warm()  # one warm-up call on a 3-point grid
            results[name] = run_timed(name, fn)
    seq = results["flatkit sequential"]
    grids = {k.replace("flatkit ", ""): r.values[0] for k, r in results.items()
             if k.startswith("flatkit") and k != "flatkit auto"}
    auto = results["flatkit auto"]
    out["auto_choice"] = {"mode": auto.mode, "calibration": auto.timing}
    out["max_abs_diff"] = {k: float(np.max(np.abs(v - grids["sequential"]))) for k, v in grids.items()}
    out["max_abs_diff"]["auto"] = float(np.max(np.abs(auto.values[0] - grids["sequential"])))
    out["repeats"] = max(1, args.repeats)
    if not args.skip_ll:
        ll = results["loss-landscapes"]
        ref = grids["sequential"]
        even = np.abs(ll[0::2] - ref[0::2]).max()
        odd = np.abs(ll[1::2, 1:] - ref[1::2, :-1]).max() if P > 1 else 0.0
        out["max_abs_diff"]["loss-landscapes"] = float(max(even, odd))
        out["loss_landscapes_note"] = "odd rows evaluated one step behind (mapped before comparing)"
        assert np.allclose(seq.coords_a, np.linspace(-R, R, P))
    t = out["timings_s"]
    best_vmap = min(v for k, v in t.items() if k.startswith("flatkit vmap"))
    out["ratios"] = {"sequential / best vmap": t["flatkit sequential"] / best_vmap}
    if "loss-landscapes" in t:
        import statistics

        every = out["all_timings_s"]
        for name in ("flatkit sequential", "flatkit auto"):  # per round: the ratio of the two runs of that round
            per = [a / b for a, b in zip(every[name], every["loss-landscapes"], strict=True)]
            out.setdefault("per_round_ratios", {})[f"{name} / loss-landscapes"] = {
                "median": statistics.median(per), "min": min(per), "max": max(per), "per_round": per}
        out["ratios"]["loss-landscapes / flatkit sequential"] = t["loss-landscapes"] / t["flatkit sequential"]
        out["ratios"]["loss-landscapes / flatkit auto"] = t["loss-landscapes"] / t["flatkit auto"]
        out["ratios"]["loss-landscapes / best vmap"] = t["loss-landscapes"] / best_vmap
    print(json.dumps({"ratios": out["ratios"], "per_round_ratios": out.get("per_round_ratios"),
                      "overhead_s": out["overhead_s"], "max_abs_diff": out["max_abs_diff"],
                      "auto": out["auto_choice"]}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
