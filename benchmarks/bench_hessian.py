"""flatkit vs PyHessian: top-1 / top-5 Hessian eigenvalues of the diffusion loss, same model and batch.

Runs both in ONE process on the same model, the same frozen evaluation bank (one batch) and the same device,
and prints HVP counts, wall times and their ratios, the accuracy each reached (against a tight flatkit
reference), and the cost of one HVP (forward-over-reverse and double backward) over one gradient.
Speed claims are ratios from one run, never timed assertions in tests (DESIGN.md, "Performance").

    python benchmarks/bench_hessian.py [--ckpt CKPT] [--n 64] [--device cpu] [--repeats 3]

Without ``--ckpt`` the ``tiny`` preset UNet is used at random initialisation, nudged off ADM's zero-initialised
output layer (an untrained ADM UNet outputs 0, whose Hessian is degenerate).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch


class _BankLoss(torch.nn.Module):
    """PyHessian's (model, criterion, (inputs, targets)) view of the same objective: inputs are bank indices."""

    def __init__(self, model: torch.nn.Module, diffusion, x0, t, eps) -> None:
        super().__init__()
        self.model, self.diffusion = model, diffusion
        self.register_buffer("x0", x0, persistent=False)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("eps", eps, persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        terms = self.diffusion.training_losses(self.model, self.x0[idx], self.t[idx], self.eps[idx])
        return terms["mse"].mean()


def _timed(fn, sync):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def build(args):
    from flatkit.config import RunConfig
    from flatkit.diffusion import create_diffusion
    from flatkit.models import build_model, get_preset
    from flatkit.run import Run, load

    dev = torch.device(args.device)
    if args.ckpt:
        return load(args.ckpt, device=dev)
    mcfg, dcfg = get_preset("tiny")
    model = build_model(mcfg, seed=0).to(dev)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g).to(dev))
    return Run(model=model, diffusion=create_diffusion(dcfg), config=RunConfig(mcfg, dcfg, data="builtin:shapes16"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--n", type=int, default=64, help="bank size (one batch for both tools)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--pyhessian-tol", type=float, default=None,
                    help="PyHessian's stopping tolerance (default --tol). Its power iteration stops on a relative "
                         "change between iterates, which on close eigenvalues is far from the error reached: pass "
                         "a smaller value to compare at equal accuracy")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the HVP / gradient timing")
    ap.add_argument("--skip-pyhessian-top5", action="store_true")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()

    from pyhessian import hessian as PyHessian

    from flatkit.curvature import top_eigenvalues
    from flatkit.curvature.hvp import HVP
    from flatkit.objective import Objective

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    run = build(args)
    obj = Objective(run, n=args.n, seed=0, loss="mse", batch_size=args.n)
    out: dict = {"device": str(dev), "torch": torch.__version__, "num_params": obj.num_params, "n": args.n,
                 "tol": args.tol}
    print(f"device {dev}, {obj.num_params} parameters, bank of {args.n} (one batch)")

    # --- one HVP over one gradient -------------------------------------------------------------------------
    v = torch.randn(obj.num_params, generator=torch.Generator().manual_seed(0)).to(dev)
    obj.gradient()
    HVP(obj, mode="fwd_rev")(v)
    HVP(obj, mode="double_backward")(v)
    tg = min(_timed(obj.gradient, sync)[1] for _ in range(args.repeats))
    tf = min(_timed(lambda: HVP(obj, mode="fwd_rev")(v), sync)[1] for _ in range(args.repeats))
    td = min(_timed(lambda: HVP(obj, mode="double_backward")(v), sync)[1] for _ in range(args.repeats))
    out["gradient_s"], out["hvp_fwd_rev_s"], out["hvp_double_backward_s"] = tg, tf, td
    print(f"one gradient {tg * 1e3:.1f} ms; one HVP: fwd-over-rev {tf * 1e3:.1f} ms ({tf / tg:.2f}x), "
          f"double backward {td * 1e3:.1f} ms ({td / tg:.2f}x)")

    # --- reference eigenvalues -----------------------------------------------------------------------------
    ph_tol = args.tol if args.pyhessian_tol is None else args.pyhessian_tol
    ref = top_eigenvalues(obj, k=5, tol=1e-7, eigenvectors=False).eigenvalues
    out["reference_top5"] = ref.tolist()
    print("reference top-5 (Lanczos, tol 1e-7):", np.array2string(ref, precision=6))

    # --- PyHessian on the same model, bank and device ------------------------------------------------------
    wrapper = _BankLoss(copy.deepcopy(run.model), run.diffusion, obj._x0, obj._t, obj._eps).to(dev)
    idx = torch.arange(args.n, device=dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(0)
        (ph, t_setup) = _timed(lambda: PyHessian(wrapper, lambda out, target: out, data=(idx, idx),
                                                 cuda=dev.type == "cuda"), sync)
        counter = {"n": 0}
        import sys

        phm = sys.modules[PyHessian.__module__]  # the module holding hessian_vector_product

        orig = phm.hessian_vector_product

        def counted(*a, **k):
            counter["n"] += 1
            return orig(*a, **k)

        phm.hessian_vector_product = counted
        try:
            for k in (1, 5):
                if k == 5 and args.skip_pyhessian_top5:
                    continue
                counter["n"] = 0
                (vals, _), t = _timed(lambda k=k: ph.eigenvalues(top_n=k, maxIter=100, tol=ph_tol), sync)
                vals = np.sort(np.asarray(vals))[::-1]
                err = float(np.max(np.abs(vals - ref[:k]) / np.abs(ref[:k])))
                out[f"pyhessian_top{k}"] = {"hvps": counter["n"], "wall_s": t + t_setup, "values": vals.tolist(),
                                            "max_rel_err": err}
                print(f"PyHessian top-{k}: {counter['n']} HVPs, {t + t_setup:.2f} s, max rel err {err:.1e}")
        finally:
            phm.hessian_vector_product = orig

    # --- flatkit -------------------------------------------------------------------------------------------
    for k in (1, 5):
        r, t = _timed(lambda k=k: top_eigenvalues(obj, k=k, tol=args.tol, eigenvectors=False, check=False), sync)
        err = float(np.max(np.abs(r.eigenvalues - ref[:k]) / np.abs(ref[:k])))
        out[f"flatkit_top{k}"] = {"hvps": r.hvp_count, "wall_s": t, "values": r.eigenvalues.tolist(),
                                  "max_rel_err": err, "hvp_mode": r.meta["hvp_mode"]}
        print(f"flatkit   top-{k}: {r.hvp_count} HVPs, {t:.2f} s, max rel err {err:.1e}")
        ph_k = out.get(f"pyhessian_top{k}")
        if ph_k:
            print(f"  ratio PyHessian / flatkit: HVPs {ph_k['hvps'] / r.hvp_count:.2f}x, "
                  f"wall {ph_k['wall_s'] / t:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
