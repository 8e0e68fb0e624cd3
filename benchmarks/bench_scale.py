"""Benchmark: the same analysis with one process and with several torchrun ranks, in one run.

CPU (default): a 2-D landscape grid (9x9, bank of 64, the tiny UNet preset) with ``flatkit landscape`` in one
process (one thread) and under ``torchrun --standalone --nproc-per-node 2`` (one thread per rank: on a small
machine two torch threads in ONE process are far slower than one, see docs/cli.md, so the fair comparison is
1 process x 1 thread against 2 processes x 1 thread). Prints both times (the ``landscape()`` call as the result
records it, and the whole command with start-up and figures), the speed-up and the largest difference between
the two grids (0: they are equal bit for bit).

GPU (``--gpu``; needs CUDA, not run on the development machine): the CIFAR-10 preset (ADM, 36M parameters) on a
256-image bank: top-5 Hessian eigenvalues (``flatkit hessian --top-k 5``) and a 51x51 landscape, each with one
process on one GPU and with torchrun over ``--nproc`` GPUs, next to PyHessian and loss-landscapes on the same
model and bank (through ``benchmarks/bench_hessian.py`` and ``benchmarks/bench_landscape.py``).

Run:  python benchmarks/bench_scale.py [--points 9] [--n-eval 64] [--repeats 2] [--json FILE]
      python benchmarks/bench_scale.py --gpu [--nproc N] [--data cifar10:PATH] [--ckpt CKPT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def make_checkpoint(preset: str, data: str, path: Path) -> str:
    """A random ``preset`` model, every weight moved off its (partly zero) init, saved as a flatkit checkpoint."""
    import torch

    from flatkit.checkpoint import make_checkpoint as mk
    from flatkit.checkpoint import save_checkpoint
    from flatkit.config import RunConfig
    from flatkit.models.presets import build_model, get_preset

    cfg_m, cfg_d = get_preset(preset)
    model = build_model(cfg_m, seed=0)
    g = torch.Generator().manual_seed(0)
    sd = {k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
          for k, v in model.state_dict().items()}
    save_checkpoint(mk(RunConfig(model=cfg_m, diffusion=cfg_d, data=data), {"raw": sd}), path)
    return str(path)


def run(argv: list[str], env: dict, cwd: Path) -> float:
    """Run a command; returns its wall time (s). A failure stops the benchmark with the command's output."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return dt


def flatkit_cmd(nproc: int, args: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "flatkit.cli", *args]
    return [TORCHRUN, "--standalone", "--nproc-per-node", str(nproc), "-m", "flatkit.cli", *args]


def cpu(args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", FLATKIT_THREADS="1")
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    ckpt = args.ckpt or make_checkpoint("tiny", "builtin:shapes16", work / "tiny.pt")
    common = ["landscape", ckpt, "--points", str(args.points), "--n-eval", str(args.n_eval), "--batch-size",
              str(args.n_eval), "--mode", args.mode, "--batch-points", str(args.batch_points), "--device", "cpu"]
    out: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                 "grid": f"{args.points}x{args.points}", "n_eval": args.n_eval, "mode": args.mode,
                 "batch_points": args.batch_points, "threads_per_process": 1, "runs": []}
    grids = {}
    for rep in range(args.repeats):  # interleaved, so a change in the machine's load hits both alike
        for nproc in (1, 2):
            d = work / f"p{nproc}-{rep}"
            wall = run(flatkit_cmd(nproc, [*common, "--out", str(d)]), env, work)
            js = json.loads((d / "landscape.json").read_text())
            grids[nproc] = np.load(d / "landscape.npz")["values"]
            out["runs"].append({"processes": nproc, "repeat": rep, "landscape_s": js["wall_time_s"],
                                "command_s": wall})
            print(f"  {nproc} process(es), repeat {rep}: landscape() {js['wall_time_s']:.2f} s, "
                  f"command {wall:.2f} s", flush=True)
    best = {n: min(r["landscape_s"] for r in out["runs"] if r["processes"] == n) for n in (1, 2)}
    best_cmd = {n: min(r["command_s"] for r in out["runs"] if r["processes"] == n) for n in (1, 2)}
    out.update(landscape_s=best, command_s=best_cmd, speedup=best[1] / best[2],
               speedup_command=best_cmd[1] / best_cmd[2],
               max_abs_diff=float(np.nanmax(np.abs(grids[1] - grids[2]))))
    print(f"landscape {out['grid']}, n-eval {args.n_eval}, --mode {args.mode}: 1 process {best[1]:.2f} s, "
          f"2 ranks {best[2]:.2f} s, speed-up {out['speedup']:.2f}x (whole command: {best_cmd[1]:.2f} s vs "
          f"{best_cmd[2]:.2f} s, {out['speedup_command']:.2f}x); max |grid difference| {out['max_abs_diff']:.3g}")
    shutil.rmtree(work, ignore_errors=True)
    return out


def gpu(args: argparse.Namespace) -> dict:
    """The GPU comparison (CUDA only): flatkit on 1 and on N GPUs, PyHessian and loss-landscapes on 1."""
    import torch

    if not torch.cuda.is_available():
        sys.exit("--gpu: CUDA is not available on this machine")
    nproc = args.nproc or torch.cuda.device_count()
    env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="bench_scale_gpu_"))
    data = args.data or "builtin:shapes32"
    ckpt = args.ckpt or make_checkpoint("cifar10", data, work / "cifar10.pt")
    bank = ["--n-eval", "256", "--batch-size", str(args.gpu_batch_size), "--data", data, "--device", "auto"]
    out: dict = {"gpu": torch.cuda.get_device_name(), "gpus": nproc, "torch": torch.__version__, "bank": 256}
    for n in sorted({1, nproc}):
        d = work / f"hessian-{n}"
        wall = run(flatkit_cmd(n, ["hessian", ckpt, "--top-k", "5", *bank, "--out", str(d)]), env, work)
        h = json.loads((d / "hessian.json").read_text())["top_eigenvalues"]
        out[f"flatkit_top5_{n}gpu"] = {"command_s": wall, "lanczos_s": h["wall_time_s"], "hvps": h["hvp_count"],
                                       "eigenvalues": h["eigenvalues"]}
        d = work / f"landscape-{n}"
        wall = run(flatkit_cmd(n, ["landscape", ckpt, "--points", "51", "--mode", "vmap", *bank, "--out",
                                   str(d)]), env, work)
        js = json.loads((d / "landscape.json").read_text())
        out[f"flatkit_landscape51_{n}gpu"] = {"command_s": wall, "landscape_s": js["wall_time_s"]}
        out[f"_grid{n}"] = np.load(d / "landscape.npz")["values"]
    # the same 51x51 grid on one GPU under bf16 autocast with channels-last (flatkit --precision/--channels-last);
    # --mode auto, since autocast may not reach every vmapped kernel (then it runs sequential: see "mode")
    d = work / "landscape-bf16"
    wall = run(flatkit_cmd(1, ["landscape", ckpt, "--points", "51", "--mode", "auto", *bank, "--precision", "bf16",
                               "--channels-last", "--out", str(d)]), env, work)
    js = json.loads((d / "landscape.json").read_text())
    g16 = np.load(d / "landscape.npz")["values"]
    out["flatkit_landscape51_1gpu_bf16_channels_last"] = {
        "command_s": wall, "landscape_s": js["wall_time_s"], "mode": js["mode"],
        "max_rel_diff_vs_fp32": float(np.nanmax(np.abs(g16 - out["_grid1"]) / np.abs(out["_grid1"])))}
    g1, gn = out.pop("_grid1"), out.pop(f"_grid{nproc}", None)
    if gn is not None:
        out["landscape_max_abs_diff"] = float(np.nanmax(np.abs(g1 - gn)))
    # the reference tools on one GPU, same checkpoint and bank size (their own scripts, their own JSON)
    ph = work / "pyhessian.json"
    run([sys.executable, str(REPO / "benchmarks" / "bench_hessian.py"), "--ckpt", ckpt, "--n", "256", "--device",
         "cuda", "--json", str(ph)], env, work)
    out["pyhessian"] = json.loads(ph.read_text())
    ll = work / "loss_landscapes.json"
    run([sys.executable, str(REPO / "benchmarks" / "bench_landscape.py"), "--ckpt", ckpt, "--device", "cuda",
         "--points", "51", "--n-eval", "256", "--batch-size", str(args.gpu_batch_size), "--json", str(ll)],
        env, work)
    out["loss_landscapes"] = json.loads(ll.read_text())
    for k in ("flatkit_top5", "flatkit_landscape51"):
        a, b = out[f"{k}_1gpu"], out.get(f"{k}_{nproc}gpu")
        key = "lanczos_s" if "top5" in k else "landscape_s"
        if b is not None and nproc > 1:
            print(f"{k}: 1 GPU {a[key]:.2f} s, {nproc} GPUs {b[key]:.2f} s, speed-up {a[key] / b[key]:.2f}x")
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=9, help="grid points per axis (CPU)")
    ap.add_argument("--n-eval", type=int, default=64, help="bank size, one micro-batch (CPU)")
    ap.add_argument("--mode", default="sequential", choices=["sequential", "vmap"],
                    help="landscape evaluation mode, the same for both runs (CPU)")
    ap.add_argument("--batch-points", type=int, default=8, help="grid points per block (CPU)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best of each is reported")
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: a random tiny / cifar10 preset model)")
    ap.add_argument("--gpu", action="store_true", help="the GPU comparison instead (needs CUDA)")
    ap.add_argument("--nproc", type=int, default=None, help="GPUs for --gpu (default: all)")
    ap.add_argument("--data", default=None, help="bank data for --gpu (default builtin:shapes32; cifar10:PATH)")
    ap.add_argument("--gpu-batch-size", type=int, default=64, help="micro-batch for --gpu")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    out = gpu(args) if args.gpu else cpu(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
