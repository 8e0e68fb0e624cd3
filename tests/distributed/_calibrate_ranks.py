"""Two ranks whose timings disagree must take one ``batch="auto"`` decision (else their collectives mismatch):
``torchrun --nproc-per-node 2 tests/distributed/_calibrate_ranks.py RESULT.json``.

Rank 0 is made to time the loop fast and rank 1 slow (and the vmapped pass the other way round); rank 1's
vmapped pass also fails once, as an operator without a batching rule would. Every rank writes its decision and
products; the test checks that they agree and equal the one-process products.
"""

import importlib
import json
import sys

import torch

from flatkit import distributed as dist
from flatkit.objective import Objective

hvp_mod = importlib.import_module("flatkit.curvature.hvp")  # the module (the package exports a function hvp)


def objective() -> Objective:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = A @ A.T
    xs = [torch.randn(6, generator=g, dtype=torch.float64) for _ in range(4)]

    def f(p, x):  # a sum over four batches, so each rank has its share
        return 0.5 * p["w"] @ A @ p["w"] + (p["w"] * x).sum() ** 2

    return Objective.from_function(f, {"w": torch.randn(6, generator=g, dtype=torch.float64)}, xs)


def main() -> None:
    out = sys.argv[1]
    dist.setup_command("calibrate-test", {})
    r = dist.rank()
    op = hvp_mod.HVP(objective(), vectors_per_call=4, batch="auto")
    calls = {"timed": 0}

    def timed(fn):
        res = fn()
        calls["timed"] += 1
        # first timed call: one product one at a time; second: two products in one vmapped pass
        loop_fast = r == 0
        t = (0.001 if loop_fast else 1.0) if calls["timed"] == 1 else (1.0 if loop_fast else 0.001)
        return res, t

    op._timed = timed
    V = torch.randn(8, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    H = op.many(V)

    # a vmapped pass that fails on rank 1 only (an operator without a batching rule there)
    real = hvp_mod._backward_many

    def failing(*a, **k):
        if r == 1:
            raise RuntimeError("vmap: no batching rule (made to fail on rank 1)")
        return real(*a, **k)

    hvp_mod._backward_many = failing
    op2 = hvp_mod.HVP(objective(), vectors_per_call=4, batch="vmap")
    H2 = op2.many(V)
    hvp_mod._backward_many = real
    rows = dist.all_gather_objects({"rank": r, "chosen": op.calibration.get("chosen"), "batch": op.batch,
                                    "count": op.count, "H": H.tolist(), "batch2": op2.batch,
                                    "failed2": op2.calibration.get("vmap_failed"), "H2": H2.tolist()})
    if dist.is_main():
        with open(out, "w") as fh:
            json.dump(rows, fh)


if __name__ == "__main__":
    main()
