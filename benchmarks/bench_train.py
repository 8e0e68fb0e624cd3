"""Steps/s of plain vs SAM training steps on the tiny and CIFAR-10 presets (a benchmark, not a test).

SAM needs two forward/backward passes per step, so it should cost about 2x a plain step, not more.

    python benchmarks/bench_train.py                       # tiny (batch 32) and cifar10 (batch 4) on the CPU
    python benchmarks/bench_train.py --device cuda --cifar-batch 128 --steps 20
    python benchmarks/bench_train.py --threads 1           # on a busy CPU one thread is often faster

Each configuration is timed on the same batch stream after ``--warmup`` untimed steps (the median step time
is reported).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from flatkit.diffusion import create_diffusion  # noqa: E402
from flatkit.models.presets import build_model, get_preset  # noqa: E402
from flatkit.train.sam import SAM  # noqa: E402
from flatkit.train.step import Batch, train_step  # noqa: E402


def _batches(shape: tuple[int, ...], T: int, n: int, device: torch.device, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x0 = torch.rand(shape, generator=g) * 2 - 1
        out.append(
            Batch(
                x0=x0.to(device),
                t=torch.randint(0, T, (shape[0],), generator=g).to(device),
                weights=torch.ones(shape[0], device=device),
                noise=torch.randn(shape, generator=g).to(device),
                ip_noise=None,
                dropout_seed=i,
            )
        )
    return out


def time_steps(
    preset: str, batch: int, sam_rho: float, steps: int, warmup: int, device: torch.device, amp: str = "off"
) -> float:
    """Median seconds per training step."""
    model_cfg, diffusion_cfg = get_preset(preset)
    model = build_model(model_cfg, device=device).train()
    diffusion = create_diffusion(diffusion_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sam = SAM(model.parameters()) if sam_rho > 0 else None
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    shape = (batch, model_cfg.in_channels, model_cfg.image_size, model_cfg.image_size)
    times = []
    for i, b in enumerate(_batches(shape, diffusion.num_timesteps, warmup + steps, device)):
        t0 = time.perf_counter()
        train_step(model, diffusion, opt, b, sam=sam, rho=sam_rho, amp=amp, scaler=scaler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tiny-batch", type=int, default=32)
    ap.add_argument("--cifar-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rho", type=float, default=0.5)
    ap.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"))
    ap.add_argument("--presets", default="tiny,cifar10")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {name}; torch {torch.__version__}; amp {args.amp}; median of {args.steps} steps "
        f"after {args.warmup} warm-up steps"
    )
    print("| preset | batch | plain steps/s | SAM steps/s | SAM / plain time |")
    print("|---|---|---|---|---|")
    for preset in args.presets.split(","):
        batch = args.tiny_batch if preset == "tiny" else args.cifar_batch
        plain = time_steps(preset, batch, 0.0, args.steps, args.warmup, device, args.amp)
        sam = time_steps(preset, batch, args.rho, args.steps, args.warmup, device, args.amp)
        print(f"| {preset} | {batch} | {1 / plain:.2f} | {1 / sam:.2f} | {sam / plain:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
