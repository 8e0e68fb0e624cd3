"""The GPU suite: a paper-sized model on one GPU, in one prepared script (at most 8 minutes on an H100/H200).

On the ``cifar10`` preset (ADM UNet at 32x32, random initialisation nudged off ADM's zero-initialised output
layer, a frozen bank of 256 from ``builtin:shapes32``: no download), it measures and writes one markdown table:

- top-5 Hessian eigenvalues (flatkit Lanczos) next to PyHessian on the same objective, both checked against a
  tight flatkit reference (equal accuracy), and the Hessian trace at 100 HVPs (flatkit Hutch++, PyHessian
  Hutchinson);
- a 51x51 loss-landscape slice with vmap in fp32 and bf16, next to loss-landscapes (on a smaller grid: its time
  per point is compared);
- DDIM-20 sampling of 256 images;
- training steps/s, plain and SAM;
- the peak GPU memory of each (``torch.cuda.max_memory_allocated``, reset before each row).

Every row runs in its own try/except under a time cap (SIGALRM), inside a total budget: one failure or a slow
contender does not lose the rest. ``--smoke`` runs the same path on the CPU with the ``tiny`` preset and tiny
sizes (the test suite runs it).

    python benchmarks/gpu_suite.py --out gpu_suite.md            # on the GPU (about 8 minutes at most)
    python benchmarks/gpu_suite.py --smoke --out smoke.md        # the whole path on the CPU, in seconds
    bash benchmarks/gpu_suite.sh                                 # the same, writing gpu_suite-<date>.md

The contenders' code is reused from ``bench_hessian.py`` (PyHessian's view of the objective) and
``bench_train.py`` (the timed training step).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import math
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, imported below
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # flatkit from a checkout without installing


@dataclass
class Sizes:
    """Everything the suite's cost depends on; ``full`` is the GPU run, ``smoke`` the CPU test."""

    preset: str
    data: str
    bank: int
    batch_size: int
    topk_tol: float
    ref_tol: float
    lanczos_max_iter: int | None  # None: until converged (the smoke run caps it: its numbers mean nothing)
    pyhessian_iters: int
    trace_hvps: int
    points: int
    batch_points: int
    ll_points: int
    samples: int
    sample_steps: int
    train_batch: int
    train_steps: int
    train_warmup: int
    budget_s: float
    caps: dict = field(default_factory=dict)


FULL = Sizes(preset="cifar10", data="builtin:shapes32", bank=256, batch_size=256, topk_tol=1e-3, ref_tol=1e-6,
             lanczos_max_iter=None, pyhessian_iters=100, trace_hvps=100, points=51, batch_points=8, ll_points=11,
             samples=256, sample_steps=20, train_batch=128, train_steps=10, train_warmup=3, budget_s=470,
             caps={"top5_flatkit": 60, "landscape_fp32": 130, "landscape_bf16": 90, "trace_flatkit": 40,
                   "sample_ddim": 30, "train_plain": 25, "train_sam": 30, "top5_pyhessian": 90,
                   "trace_pyhessian": 40, "landscape_ll": 40, "top5_reference": 60,
                   "trace_loop": 30, "trace_vmap": 30})
SMOKE = Sizes(preset="tiny", data="builtin:shapes16", bank=4, batch_size=4, topk_tol=1e-2, ref_tol=1e-4,
              lanczos_max_iter=10, pyhessian_iters=2, trace_hvps=8, points=3, batch_points=3, ll_points=3,
              samples=2, sample_steps=20, train_batch=2, train_steps=1, train_warmup=1, budget_s=240,
              caps={k: 60 for k in FULL.caps})


def row_titles(s: Sizes) -> dict[str, str]:
    """Row id -> what it measures, in the order of the table (the order they run in is ``ORDER``)."""
    return {
        "top5_flatkit": f"top-5 eigenvalues, flatkit Lanczos (tol {s.topk_tol:g})",
        "top5_pyhessian": f"top-5 eigenvalues, PyHessian power iteration (tol {s.topk_tol:g}, maxIter "
                          f"{s.pyhessian_iters})",
        "top5_reference": f"top-5 reference, flatkit Lanczos (tol {s.ref_tol:g})",
        "trace_flatkit": f"Hessian trace, flatkit Hutch++ ({s.trace_hvps} HVPs)",
        "trace_pyhessian": f"Hessian trace, PyHessian Hutchinson ({s.trace_hvps} HVPs)",
        "trace_loop": f"Hessian trace, flatkit Hutch++, probes one per pass ({s.trace_hvps} HVPs)",
        "trace_vmap": f"Hessian trace, flatkit Hutch++, probes vmapped ({s.trace_hvps} HVPs)",
        "landscape_fp32": f"{s.points}x{s.points} landscape, flatkit vmap fp32 (B={s.batch_points})",
        "landscape_bf16": f"{s.points}x{s.points} landscape, flatkit vmap bf16 (B={s.batch_points})",
        "landscape_ll": f"{s.ll_points}x{s.ll_points} landscape, loss-landscapes",
        "sample_ddim": f"DDIM-{s.sample_steps} sampling, {s.samples} images",
        "train_plain": f"training steps/s, plain (batch {s.train_batch})",
        "train_sam": f"training steps/s, SAM (batch {s.train_batch})",
    }


# cheap and flatkit's own rows first, then the contenders, the reference last: a spent budget loses the least
ORDER = ["sample_ddim", "train_plain", "train_sam", "top5_flatkit", "landscape_fp32", "landscape_bf16",
         "trace_flatkit", "top5_pyhessian", "trace_pyhessian", "landscape_ll", "top5_reference",
         "trace_loop", "trace_vmap"]


class PartTimeout(Exception):
    """A row ran past its time cap."""


@contextlib.contextmanager
def time_cap(seconds: float):
    """Raise :class:`PartTimeout` in the main thread after ``seconds`` (SIGALRM; no cap where there is none)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise PartTimeout(f"over its {seconds:.0f} s cap")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Suite:
    """Runs the rows (each guarded, timed, capped, with its peak GPU memory) and writes the table."""

    def __init__(self, sizes: Sizes, device: torch.device) -> None:
        self.s, self.dev = sizes, device
        self.titles = row_titles(sizes)
        self.rows: dict[str, dict] = {k: {"result": "", "wall_s": None, "peak_mib": None, "note": "not run"}
                                      for k in self.titles}
        self.state: dict[str, Any] = {}
        self.t0 = time.perf_counter()

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def run(self, key: str, fn: Callable[[], tuple[str, str]]) -> None:
        """Run one row: ``fn() -> (result, note)``; a failure or a timeout is the row's note."""
        row = self.rows[key]
        left = self.s.budget_s - (time.perf_counter() - self.t0)
        if left < 2:
            row["note"] = "skipped: the total time budget is spent"
            return
        cap = min(self.s.caps.get(key, left), left)
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.dev)
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {key} (cap {cap:.0f} s) ...", flush=True)
        self.sync()
        t = time.perf_counter()
        try:
            with time_cap(cap):
                row["result"], row["note"] = fn()
                self.sync()
        except PartTimeout as e:
            row["note"] = f"timed out: {e}" + (f"; {row['partial']}" if row.get("partial") else "")
        except Exception as e:  # noqa: BLE001 - one failing row must not lose the others
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            row["note"] = f"failed: {type(e).__name__}: {msg}"
            traceback.print_exc()
        row["wall_s"] = time.perf_counter() - t
        if self.dev.type == "cuda":
            row["peak_mib"] = torch.cuda.max_memory_allocated(self.dev) / 2**20
        print(f"    {row['wall_s']:.1f} s: {row['result']} {row['note']}", flush=True)

    def markdown(self, header: dict) -> str:
        lines = [f"# flatkit GPU suite ({header['date']})", ""]
        lines += [f"- {k}: {v}" for k, v in header.items() if k != "date"]
        lines += ["", "| id | what | result | wall (s) | peak GPU memory (MiB) | notes |", "|---|---|---|---|---|---|"]
        for key, title in self.titles.items():
            r = self.rows[key]
            wall = "" if r["wall_s"] is None else f"{r['wall_s']:.2f}"
            mem = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            cells = [key, title, r["result"], wall, mem, r["note"]]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
        ratios = self.ratios()
        if ratios:
            lines += ["", "Ratios (wall time of the contender over flatkit's):", ""]
            lines += [f"- {k}: {v}" for k, v in ratios.items()]
        return "\n".join(lines) + "\n"

    def ratios(self) -> dict[str, str]:
        st, out = self.state, {}
        if "top5_flatkit_s" in st and "top5_pyhessian_s" in st:
            out["top-5, PyHessian / flatkit"] = f"{st['top5_pyhessian_s'] / st['top5_flatkit_s']:.2f}x"
        if "trace_flatkit_s" in st and "trace_pyhessian_s" in st:
            out["trace at equal HVPs, PyHessian / flatkit"] = f"{st['trace_pyhessian_s'] / st['trace_flatkit_s']:.2f}x"
        if "trace_loop_s" in st and "trace_vmap_s" in st:
            out["trace, probes one per pass / vmapped"] = f"{st['trace_loop_s'] / st['trace_vmap_s']:.2f}x"
        if "ll_per_point_s" in st and "landscape_fp32_per_point_s" in st:
            r = st["ll_per_point_s"] / st["landscape_fp32_per_point_s"]
            out["landscape per grid point, loss-landscapes / flatkit vmap fp32"] = f"{r:.2f}x"
        if "train_plain_step_s" in st and "train_sam_step_s" in st:
            out["training step, SAM / plain"] = f"{st['train_sam_step_s'] / st['train_plain_step_s']:.2f}x"
        return out


# ------------------------------------------------------------------------------------------------------------ rows
def build_run(s: Sizes, dev: torch.device):
    """The preset's model at random initialisation, every weight nudged by 0.02·N(0, 1) (as bench_hessian)."""
    from flatkit.config import RunConfig
    from flatkit.diffusion import create_diffusion
    from flatkit.models import build_model, get_preset
    from flatkit.run import Run

    mcfg, dcfg = get_preset(s.preset)
    model = build_model(mcfg, seed=0).to(dev)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g).to(dev))
    return Run(model=model, diffusion=create_diffusion(dcfg), config=RunConfig(mcfg, dcfg, data=s.data))


def _max_rel_err(values, ref) -> float:
    k = min(len(values), len(ref))
    return float(np.max(np.abs(np.asarray(values[:k]) - ref[:k]) / np.abs(ref[:k])))


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.5g}" for v in values) + "]"


def add_hessian_rows(suite: Suite, run: Any, obj: Any) -> None:
    from bench_hessian import _BankLoss

    from flatkit.curvature import hessian_trace, top_eigenvalues

    s, dev, st = suite.s, suite.dev, suite.state

    def flatkit_top5():
        t = time.perf_counter()
        r = top_eigenvalues(obj, k=5, tol=s.topk_tol, max_iter=s.lanczos_max_iter, eigenvectors=False, check=False)
        suite.sync()
        st["top5_flatkit_s"] = time.perf_counter() - t
        st["top5_flatkit"] = r.eigenvalues
        return _fmt(r.eigenvalues), f"{r.hvp_count} HVPs, converged {r.converged}"

    def reference():
        r = top_eigenvalues(obj, k=5, tol=s.ref_tol, max_iter=s.lanczos_max_iter and 2 * s.lanczos_max_iter,
                            eigenvectors=False, check=False)
        st["reference"] = r.eigenvalues
        return _fmt(r.eigenvalues), f"{r.hvp_count} HVPs, converged {r.converged}"

    def pyhessian_setup():
        from pyhessian import hessian as PyHessian

        if "pyhessian" not in st:
            wrapper = _BankLoss(copy.deepcopy(run.model), run.diffusion, obj._x0, obj._t, obj._eps).to(dev)
            idx = torch.arange(obj.n, device=dev)
            st["pyhessian"] = PyHessian(wrapper, lambda out, target: out, data=(idx, idx), cuda=dev.type == "cuda")
            phm = sys.modules[PyHessian.__module__]  # count its HVPs as bench_hessian does
            orig = phm.hessian_vector_product
            st["pyhessian_hvps"] = 0

            def counted(*a, **k):
                st["pyhessian_hvps"] += 1
                return orig(*a, **k)

            phm.hessian_vector_product = counted
        return st["pyhessian"]

    def pyhessian_top5():
        t = time.perf_counter()
        st["pyhessian_hvps"] = 0
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)
            ph = pyhessian_setup()  # setup (its gradient with create_graph) is counted in its time
            try:
                vals, _ = ph.eigenvalues(top_n=5, maxIter=s.pyhessian_iters, tol=s.topk_tol)
            finally:
                suite.rows["top5_pyhessian"]["partial"] = f"{st['pyhessian_hvps']} HVPs before the cap"
        suite.sync()
        st["top5_pyhessian_s"] = time.perf_counter() - t
        vals = np.sort(np.asarray(vals, dtype=float))[::-1]
        st["top5_pyhessian"] = vals
        return _fmt(vals), f"{st['pyhessian_hvps']} HVPs"

    def flatkit_trace(probe_batch: str = "auto"):
        t = time.perf_counter()
        r = hessian_trace(obj, method="hutch++", rtol=1e-12, max_hvps=s.trace_hvps, check=False,
                          probe_batch=probe_batch)
        suite.sync()
        key = "trace_flatkit" if probe_batch == "auto" else f"trace_{probe_batch}"
        st[f"{key}_s"] = time.perf_counter() - t
        pb = (r.meta or {}).get("probe_batch", {})
        used = f"; probes: {pb.get('used', '?')}, {pb.get('vectors_per_call', '?')} per pass" if pb else ""
        return f"{r.estimate:.5g} ± {r.stderr:.2g}", f"{r.hvp_count} HVPs (± one standard error){used}"

    def pyhessian_trace():
        t = time.perf_counter()
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)
            ph = pyhessian_setup()
            st["pyhessian_hvps"] = 0
            samples = np.asarray(ph.trace(maxIter=s.trace_hvps, tol=0.0), dtype=float)
        suite.sync()
        st["trace_pyhessian_s"] = time.perf_counter() - t
        se = float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.nan
        return f"{samples.mean():.5g} ± {se:.2g}", f"{st['pyhessian_hvps']} HVPs (± one standard error)"

    suite.state["rows"] = {"top5_flatkit": flatkit_top5, "top5_reference": reference,
                           "top5_pyhessian": pyhessian_top5, "trace_flatkit": flatkit_trace,
                           "trace_loop": lambda: flatkit_trace("loop"), "trace_vmap": lambda: flatkit_trace("vmap"),
                           "trace_pyhessian": pyhessian_trace}


def accuracy_notes(suite: Suite) -> None:
    """Each top-5 row's largest relative error against the reference (when the reference ran)."""
    st = suite.state
    if "reference" not in st:
        return
    for key in ("top5_flatkit", "top5_pyhessian"):
        if key in st:
            suite.rows[key]["note"] += f"; max rel err {_max_rel_err(st[key], st['reference']):.1e} vs reference"


def add_landscape_rows(suite: Suite, run: Any, obj: Any) -> None:
    from flatkit.analyses.directions import random_directions
    from flatkit.analyses.landscape import landscape

    s, st = suite.s, suite.state
    theta = obj.params
    d1, d2 = random_directions(theta, 2, seed=0, norm="filter", bias="zero")

    def flatkit_grid(precision: str) -> Callable[[], tuple[str, str]]:
        # flatkit refuses a vmapped bf16 forward on the CPU (conv bias dtype): the smoke run goes sequential there
        mode = "sequential" if precision != "fp32" and suite.dev.type == "cpu" else "vmap"

        def go():
            obj.set_precision(precision)
            try:
                if suite.dev.type == "cuda":  # warm-up (kernel selection, caches)
                    landscape(obj, dims=2, points=3, span=1.0, directions=[d1, d2], mode=mode,
                              batch_points=s.batch_points, check=False)
                suite.sync()
                t = time.perf_counter()
                row = suite.rows[f"landscape_{precision}"]

                def progress(done: int, total: int) -> None:  # what a timeout reports
                    row["partial"] = f"{done}/{total} points in {time.perf_counter() - t:.0f} s"

                r = landscape(obj, dims=2, points=s.points, span=1.0, directions=[d1, d2], mode=mode,
                              batch_points=s.batch_points, check=False, progress=progress)
                suite.sync()
                dt = time.perf_counter() - t
            finally:
                obj.set_precision("fp32")
            st[f"landscape_{precision}_per_point_s"] = dt / s.points**2
            v = np.asarray(r.values[0])
            centre = float(v[s.points // 2, s.points // 2])
            warm = ", after a 3x3 warm-up" if suite.dev.type == "cuda" else ""
            return (f"{dt:.1f} s for {s.points**2} points",
                    f"{1e3 * dt / s.points**2:.2f} ms/point ({mode}{warm}), loss at the centre {centre:.5g}, "
                    f"range [{v.min():.4g}, {v.max():.4g}]")
        return go

    def loss_landscapes_grid():
        from bench_landscape import loss_landscapes_plane

        P = s.ll_points
        plane = loss_landscapes_plane(run.model, obj, theta, d1, d2, 1.0, P)
        suite.sync()
        t = time.perf_counter()
        plane()
        suite.sync()
        dt = time.perf_counter() - t
        st["ll_per_point_s"] = dt / P**2
        return f"{dt:.1f} s for {P**2} points", f"{1e3 * dt / P**2:.2f} ms/point (sequential, fp32)"

    st["rows"].update({"landscape_fp32": flatkit_grid("fp32"), "landscape_bf16": flatkit_grid("bf16"),
                       "landscape_ll": loss_landscapes_grid})


def add_sample_row(suite: Suite, run: Any) -> None:
    from flatkit.sampling import SamplerConfig, draw_samples, respaced, sample_shape

    s = suite.s

    def go():
        cfg = SamplerConfig(n=s.samples, sampling_steps=s.sample_steps, sampler="ddim", seed=0,
                            batch_size=s.samples)
        sp = respaced(run.diffusion, cfg)
        shape = sample_shape(run.config.model)
        with torch.no_grad():
            t = time.perf_counter()
            x = draw_samples(run.model.eval(), sp, cfg, shape, device=suite.dev)
            suite.sync()
            dt = time.perf_counter() - t
        x = x[0] if isinstance(x, tuple) else x
        return f"{s.samples / dt:.1f} images/s", f"{dt:.2f} s, one batch of {s.samples}, output {tuple(x.shape)}"

    suite.state["rows"]["sample_ddim"] = go


def add_train_rows(suite: Suite) -> None:
    from bench_train import time_steps

    s, st = suite.s, suite.state

    def go(rho: float, key: str):
        def run_it():
            step = time_steps(s.preset, s.train_batch, rho, s.train_steps, s.train_warmup, suite.dev)
            st[f"{key}_step_s"] = step
            return f"{1 / step:.2f} steps/s", (f"median of {s.train_steps} steps after {s.train_warmup} warm-up"
                                               + (f", rho {rho}" if rho else ""))
        return run_it

    st["rows"].update({"train_plain": go(0.0, "train_plain"), "train_sam": go(0.05, "train_sam")})


# ------------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_suite.md", help="the markdown table (default: gpu_suite.md)")
    ap.add_argument("--json", default=None, help="also write the raw rows to this file")
    ap.add_argument("--smoke", action="store_true", help="the whole path on the CPU, tiny preset, tiny sizes")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--budget", type=float, default=None, help="total seconds for all rows (default 470; smoke 240)")
    ap.add_argument("--only", default=None, help="comma-separated row ids to run (default: all)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="the objective's micro-batch (default: the whole bank, one batch for flatkit and PyHessian; "
                         "smaller on a GPU with less memory)")
    args = ap.parse_args(argv)

    s = copy.deepcopy(SMOKE if args.smoke else FULL)
    if args.budget is not None:
        s.budget_s = args.budget
    if args.batch_size is not None:
        s.batch_size = args.batch_size
    dev = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if dev.type == "cpu":
        from flatkit.cli import set_cpu_threads

        set_cpu_threads(None)
    elif not torch.cuda.is_available():
        print("gpu_suite: no CUDA device (use --smoke for the CPU path)", file=sys.stderr)
        return 2

    from flatkit.objective import Objective

    t_start = time.perf_counter()
    suite = Suite(s, dev)
    suite.state["rows"] = {}
    run = build_run(s, dev)
    obj = Objective(run, n=s.bank, seed=0, loss="mse", batch_size=s.batch_size)
    for add in (lambda: add_hessian_rows(suite, run, obj), lambda: add_landscape_rows(suite, run, obj),
                lambda: add_sample_row(suite, run), lambda: add_train_rows(suite)):
        try:
            add()
        except Exception as e:  # noqa: BLE001 - e.g. a contender not installed: its rows say so
            print(f"gpu_suite: setup failed: {type(e).__name__}: {e}", file=sys.stderr)
    only = set(args.only.split(",")) if args.only else None
    for key in ORDER:
        if only is not None and key not in only:
            continue
        fn = suite.state["rows"].get(key)
        if fn is None:
            suite.rows[key]["note"] = "failed: its setup failed (see stderr)"
            continue
        suite.run(key, fn)
        if key == "trace_pyhessian":  # PyHessian keeps its create_graph gradient (and a model copy): free them
            suite.state.pop("pyhessian", None)
            gc.collect()
    accuracy_notes(suite)

    header = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()}, "
                  f"threads: {torch.get_num_threads()})",
        "torch": torch.__version__,
        "model": f"preset {s.preset}, {obj.num_params:,} parameters, random init nudged by 0.02·N(0, 1)",
        "objective": f"ε-MSE over a frozen bank of {s.bank} from {s.data} (micro-batch {s.batch_size})",
        "command": "python benchmarks/gpu_suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "total wall time": f"{time.perf_counter() - t_start:.0f} s (budget {s.budget_s:.0f} s)",
    }
    text = suite.markdown(header)
    Path(args.out).write_text(text)
    print(text)
    if args.json:
        rows = {k: {kk: vv for kk, vv in r.items() if kk != "partial"} for k, r in suite.rows.items()}
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows, "ratios": suite.ratios()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
