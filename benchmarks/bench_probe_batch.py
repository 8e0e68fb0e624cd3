"""Probe batching: Hutch++ / Hutchinson probes and SLQ runs one HVP per pass ("loop") against several per
vmapped pass ("vmap") and the measured choice ("auto"), same objective, same probes, one process.

    python benchmarks/bench_probe_batch.py [--model tiny|small] [--n 64] [--device cuda] [--repeats 3]

The three run in a rotating order for ``--repeats`` rounds; each round gives the ratios vmap / loop and
auto / loop, reported as median and min-max. Also prints what "auto" measured and chose, and the largest
difference of the estimates and SLQ nodes from the loop's (batched kernels round differently).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--n", type=int, default=64, help="bank size (one micro-batch)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--hvps", type=int, default=60, help="HVP budget of each trace")
    ap.add_argument("--runs", type=int, default=4, help="SLQ runs")
    ap.add_argument("--steps", type=int, default=20, help="SLQ steps per run")
    ap.add_argument("--vectors-per-call", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", default="hutch++,hutchinson,slq", help="which of hutch++,hutchinson,slq")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from bench_landscape import build_objective

    from flatkit.cli import set_cpu_threads
    from flatkit.curvature import hessian_trace, spectral_density

    set_cpu_threads(args.threads)
    run, obj = build_objective(None, args.n, args.n, args.device, args.model)
    dev = torch.device(args.device)
    out: dict = {"device": str(dev), "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None,
                 "torch": torch.__version__, "threads": torch.get_num_threads(), "num_params": obj.num_params,
                 "n": args.n, "command": " ".join(sys.argv), "tasks": {}}
    print(f"{dev}, {obj.num_params} parameters, bank {args.n}, {torch.get_num_threads()} thread(s)", flush=True)
    vpc = args.vectors_per_call
    tasks = {
        "hutch++": lambda b: hessian_trace(obj, method="hutch++", rtol=1e-12, max_hvps=args.hvps, seed=0,
                                           probe_batch=b, vectors_per_call=vpc, check=False),
        "hutchinson": lambda b: hessian_trace(obj, method="hutchinson", rtol=1e-12, max_hvps=args.hvps, seed=0,
                                              probe_batch=b, vectors_per_call=vpc, check=False),
        "slq": lambda b: spectral_density(obj, runs=args.runs, steps=args.steps, seed=0, probe_batch=b,
                                          vectors_per_call=vpc, check=False),
    }
    modes = ["loop", "vmap", "auto"]
    for name, fn in tasks.items():
        if name not in args.tasks.split(","):
            continue
        fn("loop")  # warm-up
        times: dict[str, list[float]] = {m: [] for m in modes}
        res = {}
        for rnd in range(args.repeats):
            for m in modes[rnd % 3:] + modes[: rnd % 3]:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                res[m] = fn(m)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[m].append(time.perf_counter() - t0)
        row: dict = {"median_s": {m: statistics.median(v) for m, v in times.items()}, "times_s": times,
                     "auto": res["auto"].meta["probe_batch"], "hvps": {m: r.hvp_count for m, r in res.items()}}
        for m in ("vmap", "auto"):
            per = [a / b for a, b in zip(times[m], times["loop"], strict=True)]
            row[f"{m}/loop"] = {"median": statistics.median(per), "min": min(per), "max": max(per)}
            if name == "slq":
                row[f"{m} max |Δ node|"] = float(np.max(np.abs(res[m].nodes - res["loop"].nodes)))
            else:
                row[f"{m} rel Δ estimate"] = abs(res[m].estimate - res["loop"].estimate) / abs(res["loop"].estimate)
        out["tasks"][name] = row
        q, a = row["vmap/loop"], row["auto/loop"]
        print(f"{name:10s} loop {row['median_s']['loop']:.2f} s | vmap/loop {q['median']:.2f}x "
              f"({q['min']:.2f}-{q['max']:.2f}) | auto/loop {a['median']:.2f}x ({a['min']:.2f}-{a['max']:.2f}), "
              f"auto chose {row['auto'].get('chosen', row['auto'].get('used'))}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
