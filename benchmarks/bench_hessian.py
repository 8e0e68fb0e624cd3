"""flatkit vs PyHessian, hessian-eigenthings (v1) and curvlinops: top-5 Hessian eigenvalues and the Hessian trace
of the diffusion loss, same model, same frozen bank (one batch), same device, in one process.

Top-5 at equal accuracy: every contender is run at the setting that reaches ``--target`` (default 1e-3) relative
error on all five eigenvalues against a tight flatkit reference (Lanczos, tol 1e-7):
- flatkit: ``top_eigenvalues(k=5, tol=target)`` (its certified stop);
- hessian-eigenthings 1.0.0a5: ``lanczos(HessianOperator, k=5, which="LA", max_iter=m)``, m fixed; the smallest m
  of a ladder reaching the target is searched first (untimed), then timed;
- curvlinops 3.0.1: ``scipy.sparse.linalg.eigsh(HessianLinearOperator.to_scipy(), k=5, which="LA", tol=tau)``,
  the largest tau of a ladder reaching the target;
- PyHessian 0.1: ``eigenvalues(top_n=5, tol=tau, maxIter=100)`` (deflated power iteration), the largest tau of a
  ladder reaching the target, or its most accurate setting when none does (then flagged).
The timed runs alternate (flatkit, then each contender, in a rotating order, ``--repeats`` rounds); each round
gives one ratio flatkit / contender, and the table reports the median and the min–max of those per-round ratios.

Trace at equal HVP budget: flatkit's Hutch++ (``hessian_trace(method="hutch++", max_hvps=B)``, no early stop,
with its default split, a sketch of B/6, and with curvlinops' thirds) against curvlinops' ``hutchpp_trace(A, B)``,
over ``--trace-seeds`` seeds; the error is against the exact trace Σ_i e_iᵀ H e_i (N HVPs, computed once and
cached with ``--trace-cache``) and reported as the root mean square relative error over seeds.

    python benchmarks/bench_hessian.py --model small --n 16 --repeats 3 --json out.json
    python benchmarks/bench_hessian.py --model tiny --n 32 --repeats 3 --skip-trace

``--model small`` is a 5.6k-parameter conv denoiser (benchmarks/bench_landscape.SmallDenoiser), ``tiny`` the
``tiny`` preset UNet (318k parameters) at random initialisation nudged off ADM's zero output layer, ``--ckpt``
a checkpoint. One torch thread by default (``--threads``): the development machine has 2 cores shared with other
jobs, which is also why the contenders alternate and the ratios are per round.
Speed claims are ratios from one run, never timed assertions in tests (DESIGN.md, "Performance").
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


class _BankModel(torch.nn.Module):
    """The denoiser on the bank: ``forward(idx)`` is the model's ε prediction at the bank entries ``idx``
    (x_t = q_sample(x0, t, ε) as flatkit's objective); with MSELoss(mean) against ε[idx] it is the objective."""

    def __init__(self, model: torch.nn.Module, diffusion, x0, t, eps) -> None:
        super().__init__()
        self.model, self.diffusion = model, diffusion
        self.register_buffer("x0", x0, persistent=False)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("eps", eps, persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x_t = self.diffusion.q_sample(self.x0[idx], self.t[idx], self.eps[idx])
        return self.diffusion.call_model(self.model, x_t, self.t[idx])


class _BankLoss(_BankModel):
    """PyHessian's / hessian-eigenthings' view: ``forward(idx)`` is the loss itself."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        terms = self.diffusion.training_losses(self.model, self.x0[idx], self.t[idx], self.eps[idx])
        return terms["mse"].mean()


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev):
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t0


def build(args):
    from flatkit.config import RunConfig
    from flatkit.diffusion import create_diffusion
    from flatkit.models import build_model, get_preset
    from flatkit.run import Run, load

    dev = torch.device(args.device)
    if args.ckpt:
        return load(args.ckpt, device=dev)
    if args.model == "small":
        from bench_landscape import small_run

        return small_run(dev)
    mcfg, dcfg = get_preset("tiny")
    model = build_model(mcfg, seed=0).to(dev)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g).to(dev))
    return Run(model=model, diffusion=create_diffusion(dcfg), config=RunConfig(mcfg, dcfg, data="builtin:shapes16"))


def _rel_err(vals, ref) -> float:
    vals = np.sort(np.asarray(vals, dtype=np.float64))[::-1][: len(ref)]
    return float(np.max(np.abs(vals - ref) / np.abs(ref)))


class Contenders:
    """One callable per tool computing the top-5 at a given setting, returning (values, HVPs)."""

    def __init__(self, run, obj, dev, k: int) -> None:
        self.obj, self.dev, self.k = obj, dev, k
        self.n = obj.n
        self.idx = torch.arange(self.n, device=dev)
        x0, t, eps = obj._x0, obj._t, obj._eps
        self.loss_module = _BankLoss(copy.deepcopy(run.model), run.diffusion, x0, t, eps).to(dev).eval()
        self.pred_module = _BankModel(copy.deepcopy(run.model), run.diffusion, x0, t, eps).to(dev).eval()
        self.eps = eps
        for m in (self.loss_module, self.pred_module):
            n_params = sum(p.numel() for p in m.parameters())
            if n_params != obj.num_params:
                raise SystemExit(f"the contenders see {n_params} parameters, flatkit {obj.num_params}")

    def flatkit(self, tol: float):
        from flatkit.curvature import top_eigenvalues

        r = top_eigenvalues(self.obj, k=self.k, tol=tol, eigenvectors=False, check=False)
        return r.eigenvalues, r.hvp_count

    def eigenthings(self, steps: int):
        from hessian_eigenthings import HessianOperator, lanczos

        op = HessianOperator(self.loss_module, [self.idx], lambda m, b: m(b))
        count = _count_calls(op, "matvec")
        r = lanczos(op, k=self.k, max_iter=steps, which="LA", seed=0, reorthogonalize=True)
        return r.eigenvalues.detach().cpu().numpy(), count["n"]

    def curvlinops_op(self):
        from curvlinops import HessianLinearOperator

        params = [p for p in self.pred_module.parameters() if p.requires_grad]
        return HessianLinearOperator(self.pred_module, torch.nn.MSELoss(reduction="mean"), params,
                                     [(self.idx, self.eps)], progressbar=False, check_deterministic=False)

    def curvlinops(self, tol: float):
        from scipy.sparse.linalg import LinearOperator, eigsh

        H = self.curvlinops_op()
        count = {"n": 0}
        dt = np.float64

        def mv(v):
            count["n"] += 1
            x = torch.as_tensor(np.asarray(v, dtype=np.float32).reshape(-1), device=self.dev)
            return (H @ x).detach().cpu().numpy().astype(dt)

        lin = LinearOperator((self.obj.num_params,) * 2, matvec=mv, dtype=dt)
        v0 = np.random.default_rng(0).standard_normal(self.obj.num_params)
        vals = eigsh(lin, k=self.k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
        return vals, count["n"]

    def pyhessian(self, tol: float):
        from pyhessian import hessian as PyHessian

        phm = sys.modules[PyHessian.__module__]  # the module (the package exports the class under its name)

        count = _count_calls(phm, "hessian_vector_product")
        try:
            with torch.random.fork_rng(devices=[self.dev] if self.dev.type == "cuda" else []):
                torch.manual_seed(0)
                ph = PyHessian(self.loss_module, lambda out, target: out, data=(self.idx, self.idx),
                               cuda=self.dev.type == "cuda")
                vals, _ = ph.eigenvalues(top_n=self.k, maxIter=100, tol=tol)
        finally:
            _uncount(phm, "hessian_vector_product")
        return np.asarray(vals), count["n"]


def _count_calls(owner, name: str) -> dict:
    orig = getattr(owner, name)
    count = {"n": 0}

    def counted(*a, **k):
        count["n"] += 1
        return orig(*a, **k)

    counted.__wrapped_orig__ = orig
    setattr(owner, name, counted)
    return count


def _uncount(owner, name: str) -> None:
    f = getattr(owner, name)
    setattr(owner, name, getattr(f, "__wrapped_orig__", f))


def search(name, fn, ladder, ref, target, log, integer=False):
    """The first setting of the ladder whose result reaches the target (untimed), or the most accurate one. An
    integer ladder (a step count) is then bisected between the last setting that missed and the first that
    reached, so the count found is the smallest that reaches the target."""
    best, prev = None, None

    def trial(s):
        vals, hvps = fn(s)
        err = _rel_err(vals, ref)
        log(f"  {name:20s} setting {s!r:>8}: {hvps:4d} HVPs, max rel err {err:.1e}")
        return err, hvps

    for s in ladder:
        err, hvps = trial(s)
        if best is None or err < best[1]:
            best = (s, err, hvps)
        if err <= target:
            if integer and prev is not None:
                lo, hi, found = prev, s, (s, err, hvps)
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    e2, h2 = trial(mid)
                    if e2 <= target:
                        hi, found = mid, (mid, e2, h2)
                    else:
                        lo = mid
                return (*found, True)
            return s, err, hvps, True
        prev = s
    return best[0], best[1], best[2], False


def ratio_summary(ratios: list[float]) -> dict:
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "per_round": ratios}


def top5(args, run, obj, dev, out, log) -> None:
    from flatkit.curvature import top_eigenvalues

    k = 5
    ref = top_eigenvalues(obj, k=k, tol=1e-7, eigenvectors=False, check=False).eigenvalues
    out["reference_top5"] = ref.tolist()
    log("reference top-5 (flatkit Lanczos, tol 1e-7): " + np.array2string(ref, precision=6))
    C = Contenders(run, obj, dev, k)
    ladders = {
        "flatkit": (C.flatkit, [args.target]),
        "hessian-eigenthings": (C.eigenthings, [10, 15, 20, 25, 30, 35, 40, 50, 60, 80, 100, 150]),
        "curvlinops": (C.curvlinops, [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5]),
        "pyhessian": (C.pyhessian, [1e-3, 1e-4, 1e-5]),
    }
    skip = set(args.skip)
    settings = {}
    log(f"search for the settings reaching max rel err {args.target:g} (untimed):")
    for name, (fn, ladder) in ladders.items():
        if name in skip:
            continue
        try:
            settings[name] = search(name, fn, ladder, ref, args.target, log, integer=name == "hessian-eigenthings")
        except Exception as e:  # noqa: BLE001 - a contender that fails is reported, the others go on
            log(f"  {name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            out.setdefault("failed", {})[name] = f"{type(e).__name__}: {e}"
    names = list(settings)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(args.repeats):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for name in order:
            fn = ladders[name][0]
            (vals, hvps), t = _timed(lambda fn=fn, name=name: fn(settings[name][0]), dev)
            times[name].append(t)
            log(f"  round {rnd}: {name:20s} {t:7.2f} s, {hvps} HVPs, err {_rel_err(vals, ref):.1e}")
    res = {}
    for name in names:
        s, err, hvps, ok = settings[name]
        res[name] = {"setting": s, "max_rel_err": err, "reached_target": ok, "hvps": hvps,
                     "wall_s": times[name], "median_s": statistics.median(times[name])}
        if name != "flatkit" and "flatkit" in times:
            res[name]["flatkit_over_this"] = ratio_summary([a / b for a, b in zip(times["flatkit"], times[name],
                                                                                  strict=True)])
    out["top5"] = res
    for name, r in res.items():
        line = (f"{name:20s} setting {r['setting']!r:>8}  {r['hvps']:4d} HVPs  err {r['max_rel_err']:.1e}"
                f"{'' if r['reached_target'] else ' (target NOT reached)'}  median {r['median_s']:.2f} s")
        if "flatkit_over_this" in r:
            q = r["flatkit_over_this"]
            line += f"  flatkit/this {q['median']:.2f}x ({q['min']:.2f}-{q['max']:.2f})"
        log(line)


def exact_trace(obj, cache: Path | None, log) -> float:
    """Σ_i e_iᵀ H e_i with flatkit's HVP (N products), cached in a file keyed by the objective."""
    from flatkit.curvature.hvp import HVP

    key = f"{obj.num_params}-{obj.n}-{float(obj.loss()):.6g}"  # 6 digits: a cache written on another device
    if cache is not None and cache.is_file():
        d = json.loads(cache.read_text())
        if d.get("key") == key:
            return float(d["trace"])
    op = HVP(obj, vectors_per_call=32, batch="auto")
    n = obj.num_params
    t0 = time.perf_counter()
    tr = 0.0
    for s in range(0, n, 256):  # unit vectors e_s … e_{s+255}, batched as "auto" finds faster
        rows = torch.arange(s, min(s + 256, n), device=obj.device)
        E = torch.zeros((len(rows), n), dtype=obj.dtype, device=obj.device)
        E[torch.arange(len(rows), device=obj.device), rows] = 1.0
        tr += float(op.many(E)[torch.arange(len(rows), device=obj.device), rows].to(torch.float64).sum())
    log(f"exact trace {tr:.6g} ({n} HVPs, {time.perf_counter() - t0:.0f} s)")
    if cache is not None:
        cache.write_text(json.dumps({"key": key, "trace": tr}))
    return tr


def trace(args, run, obj, dev, out, log) -> None:
    from curvlinops import hutchpp_trace

    from flatkit.curvature import hessian_trace

    B = args.trace_hvps
    exact = exact_trace(obj, Path(args.trace_cache) if args.trace_cache else None, log)
    C = Contenders(run, obj, dev, 1)
    H = C.curvlinops_op()
    errs: dict[str, list[float]] = {"flatkit hutch++": [], "flatkit hutch++ (thirds)": [], "curvlinops hutch++": []}
    times: dict[str, list[float]] = {k: [] for k in errs}
    for s in range(args.trace_seeds):
        runs = [("flatkit hutch++", lambda s=s: hessian_trace(obj, method="hutch++", rtol=1e-12, max_hvps=B,
                                                               seed=s, check=False).estimate),
                ("flatkit hutch++ (thirds)", lambda s=s: hessian_trace(
                    obj, method="hutch++", rtol=1e-12, max_hvps=B, seed=s, sketch_size=B // 3, check=False).estimate),
                ("curvlinops hutch++", lambda s=s: (torch.manual_seed(s), float(hutchpp_trace(H, B)))[1])]
        k = s % len(runs)
        for name, fn in runs[k:] + runs[:k]:
            est, t = _timed(fn, dev)
            errs[name].append((est - exact) / abs(exact))
            times[name].append(t)
    res = {"exact": exact, "hvps": B, "seeds": args.trace_seeds}
    for name in errs:
        e = np.asarray(errs[name])
        res[name] = {"rms_rel_err": float(np.sqrt(np.mean(e ** 2))), "rel_errs": e.tolist(),
                     "median_s": statistics.median(times[name])}
        log(f"{name:20s} {B} HVPs: rms rel err {res[name]['rms_rel_err']:.2e} over {len(e)} seeds, "
            f"median {res[name]['median_s']:.2f} s")
    res["flatkit_over_curvlinops_time"] = ratio_summary(
        [a / b for a, b in zip(times["flatkit hutch++"], times["curvlinops hutch++"], strict=True)])
    out["trace"] = res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--model", default="small", choices=["small", "tiny"], help="without --ckpt")
    ap.add_argument("--n", type=int, default=16, help="bank size (one batch for every tool)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 1 on <= 2 cores)")
    ap.add_argument("--target", type=float, default=1e-3, help="relative accuracy of the top-5 for every tool")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (alternating contenders)")
    ap.add_argument("--skip", default="", type=lambda s: [x for x in s.split(",") if x],
                    help="contenders to leave out: pyhessian,hessian-eigenthings,curvlinops")
    ap.add_argument("--skip-top5", action="store_true")
    ap.add_argument("--skip-trace", action="store_true")
    ap.add_argument("--trace-hvps", type=int, default=99, help="HVP budget of each trace (divisible by 3)")
    ap.add_argument("--trace-seeds", type=int, default=10)
    ap.add_argument("--trace-cache", default=None, help="file caching the exact trace (N HVPs)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    from flatkit.cli import set_cpu_threads
    from flatkit.objective import Objective

    set_cpu_threads(args.threads)
    dev = torch.device(args.device)
    run = build(args)
    obj = Objective(run, n=args.n, seed=0, loss="mse", batch_size=args.n)
    out: dict = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "num_params": obj.num_params, "n": args.n, "target": args.target, "command": " ".join(sys.argv)}
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"device {dev}, {torch.get_num_threads()} thread(s), {obj.num_params} parameters, bank of {args.n}")
    if not args.skip_top5:
        top5(args, run, obj, dev, out, log)
    if not args.skip_trace:
        if math.isfinite(args.trace_hvps) and args.trace_hvps % 3:
            raise SystemExit("--trace-hvps: must be divisible by 3 (curvlinops' Hutch++)")
        trace(args, run, obj, dev, out, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
