"""Hessian-vector products of an objective, summed over its micro-batches.

``H v = Σ_i ∇²L_i(θ) v`` with ``L_i = obj.batch_loss(θ, i)``. Two ways to get it:

- forward-over-reverse: ``jvp(grad(L_i), (θ,), (v,))`` — Pearlmutter's R-operator (Pearlmutter 1994)
  pushed forward through the reverse-mode gradient; one forward + one backward pass with dual numbers,
  about 2-3x a gradient.
- double backward: ``∂/∂θ (∇L_i(θ) · v)`` with ``create_graph=True``; "auto" keeps each micro-batch's gradient
  graph so that every product is one backward pass (measured fastest, see :class:`HVP`).

``fwd_rev`` falls back to double backward, with a warning, where a layer has no forward-mode derivative of
its backward (torch's fused GroupNorm and SiLU backward raise "ZeroTensors are immutable" under jvp); the
products are the same, only slower or larger in memory.

Several vectors per call (:meth:`HVP.many`, ``batch="vmap"``): ``torch.func.vmap`` over the jvp (fwd_rev), or
over the second backward pass through the micro-batch's gradient graph (double backward, kept or rebuilt once
per chunk of vectors), ``vectors_per_call`` vectors per pass. ``batch="auto"`` times both on the vectors it is
given (one at a time against two per pass) and keeps the faster; ``"loop"`` computes one at a time. The
vmapped products equal the one-at-a-time ones up to float rounding (batched kernels sum in another order), so
a chunk that calibration computed batched is recomputed one at a time when the loop wins: ``auto`` that picks
the loop gives the loop's numbers bit for bit. Accumulation over micro-batches is in float64.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from flatkit import distributed as dist
from flatkit.curvature.vectors import ParamDict, flatten, num_entries, unflatten
from flatkit.errors import FlatkitError, UsageError

__all__ = ["HVP", "hvp", "hvp_progress", "flatten", "unflatten", "num_entries", "HVP_MODES", "BATCH_MODES"]

HVP_MODES = ("auto", "fwd_rev", "double_backward", "double_backward_cached")
BATCH_MODES = ("auto", "loop", "vmap")
#: batch="auto" on a CPU keeps the loop without a vmapped trial when one product takes longer than this: there a
#: vmapped pass saves only per-call overheads (milliseconds), and the trial's two thrown-away products would
#: cost more than it can win (measured on the 2-core CPU: tiny UNet vmap/loop 1.01x, a trial 1.45x over a 24-HVP
#: Hutch++; a 5.6k-parameter model vmap/loop 0.6-0.8x; docs/benchmarks.md)
CPU_TRIAL_MAX_S = 0.5
#: batch="auto" runs its vmapped trial only while at least this many products are still to come (:meth:`HVP.expect`):
#: when the loop wins, the trial's two products are computed again one at a time (2 products lost); when the
#: vmapped pass wins it saves a third (2-core CPU, 5.6k-parameter model) to a half (H200) of each later product.
#: With fewer than 6 to come the trial cannot win back what it may lose (a 4-HVP Hutch++ took 6 products).
MIN_TRIAL_PRODUCTS = 6

# The progress bar that HVPs report to while an analysis runs (see :func:`hvp_progress`); None: silent.
_progress_bar: Any = None


@contextlib.contextmanager
def hvp_progress(desc: str, total: int | None = None, enabled: bool = True) -> Iterator[Any]:
    """Show a progress bar counting Hessian-vector products for the duration of the block.

    The estimators stop on a tolerance, so ``total`` is their HVP budget (an upper bound).
    """
    global _progress_bar
    if not enabled or not dist.is_main():  # several ranks: rank 0 alone draws the bar
        yield None
        return
    from flatkit.progress import bar as progress_bar

    outer = _progress_bar
    bar = progress_bar(total=total, desc=desc, unit="HVP")  # off under --no-progress; plain lines in a log
    _progress_bar = bar
    ok = False
    try:
        yield bar
        ok = True
    finally:
        _progress_bar = outer
        if ok:
            bar.finish("converged" if total is not None and bar.n < total else "done")  # 100 % when it stops early
        else:
            bar.close()


def _tick(n: int = 1) -> None:
    if _progress_bar is not None:
        _progress_bar.update(n)


def _hvp_fwd_rev(obj: Any, params: ParamDict, v: ParamDict, i: int) -> ParamDict:
    """∇²L_i v by forward-over-reverse: the directional derivative of ∇L_i along v."""
    grad_fn = torch.func.grad(lambda p: obj.batch_loss(p, i))
    return torch.func.jvp(grad_fn, (params,), (v,))[1]


def _hvp_fwd_rev_many(obj: Any, params: ParamDict, V: ParamDict, i: int) -> ParamDict:
    """∇²L_i v_r for a stack of vectors (leading dim r), vmapped over the tangents."""
    grad_fn = torch.func.grad(lambda p: obj.batch_loss(p, i))
    return torch.func.vmap(lambda v: torch.func.jvp(grad_fn, (params,), (v,))[1])(V)


def _hvp_double_backward(obj: Any, params: ParamDict, v: ParamDict, i: int) -> ParamDict:
    """∇²L_i v as ∂(∇L_i · v)/∂θ (reverse-over-reverse)."""
    with torch.enable_grad():
        p = {k: t.detach().requires_grad_(True) for k, t in params.items()}
        loss = obj.batch_loss(p, i)
        g = torch.autograd.grad(loss, list(p.values()), create_graph=True, allow_unused=True)
        gv = sum((gk * vk).sum() for gk, vk in zip(g, v.values(), strict=False) if gk is not None)
        if not torch.is_tensor(gv) or not gv.requires_grad:  # the loss is linear in θ
            return {k: torch.zeros_like(t) for k, t in params.items()}
        hv = torch.autograd.grad(gv, list(p.values()), allow_unused=True)
    return {
        k: (h.detach() if h is not None else torch.zeros_like(params[k])) for k, h in zip(p, hv, strict=False)
    }


def _backward_many(leaves: list[Tensor], g: list[Tensor | None], V: ParamDict, params: ParamDict) -> Tensor:
    """H_i v_r for the stacked vectors of V (leading dim r) by one vmapped backward pass through the gradient
    graph ``g`` of micro-batch i (kept); an (r, N) float64 matrix."""
    vs = list(V.values())
    used = [j for j, gj in enumerate(g) if gj is not None and gj.requires_grad]
    r = vs[0].shape[0]
    if not used:  # the loss is linear in θ
        return torch.zeros((r, num_entries(params)), dtype=torch.float64, device=vs[0].device)

    def one(*v: Tensor) -> tuple[Tensor, ...]:
        hv = _backward_through([g[j] for j in used], list(v), leaves)  # vmapped: v_r are batched tensors
        # a parameter the gradient does not reach: zeros (vmap returns tensors only; it expands them to (r, ...))
        return tuple(h if h is not None else torch.zeros_like(t) for h, t in zip(hv, leaves, strict=True))

    hv = torch.func.vmap(one)(*[vs[j] for j in used])
    return torch.cat([h.reshape(r, -1).to(torch.float64) for h in hv], dim=1)


def _engine() -> Any:
    """torch's autograd engine (``torch.autograd.Variable._execution_engine``), or None where a torch lacks it."""
    return getattr(getattr(torch.autograd, "Variable", None), "_execution_engine", None)


_ENGINE_OK = True  # False once the engine's call failed with a TypeError (another signature): the public API then


def _backward_through(outputs: list[Tensor], grad_outputs: list[Tensor], inputs: list[Tensor]) -> tuple:
    """The gradient of ``Σ_j outputs_j · grad_outputs_j`` with respect to ``inputs`` (None where unused), the
    graph kept: ``torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True, allow_unused=True)``.

    It calls the autograd engine directly, as ``torch.autograd.grad`` does after its Python-side checks of
    ``grad_outputs``; those checks import torch.fx's symbolic shapes (0.8 s, once per process) and cost about
    0.5 ms per call, 3-8 % of a product on a 5.6k-parameter model (docs/benchmarks.md). The caller passes
    tensors whose shapes and dtypes match (under ``torch.func.vmap`` too: batched grad_outputs). Where a torch
    has no such engine call (or another signature), it is ``torch.autograd.grad`` itself, the same pass."""
    global _ENGINE_OK
    engine = _engine() if _ENGINE_OK else None
    if engine is not None:
        try:
            return tuple(engine.run_backward(tuple(outputs), tuple(grad_outputs), True, False, tuple(inputs),
                                             True, False))
        except TypeError:
            _ENGINE_OK = False
    return torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True)


def _gradient_graph(obj: Any, params: ParamDict, i: int) -> tuple[list[Tensor], list[Tensor | None]]:
    """Leaves and ∇L_i built with ``create_graph=True``, kept so that every later product is one backward."""
    leaves = [t.detach().requires_grad_(True) for t in params.values()]
    with torch.enable_grad():
        loss = obj.batch_loss(dict(zip(params, leaves, strict=True)), i)
        g = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    return leaves, list(g)


class HVP:
    """The linear map ``v ↦ H v`` of an objective on flat vectors, counting the products it computes.

    ``mode``: "auto", "fwd_rev", "double_backward" or "double_backward_cached". "auto" is the cached double
    backward: the graph of each micro-batch's gradient is built once (``create_graph=True``) and kept, so every
    product is one backward pass through it. It measured fastest; it holds each micro-batch's graph in memory,
    so where that does not fit use "double_backward" (rebuilds the graph per product) or "fwd_rev". Double
    backward measured faster than forward-over-reverse on both the CPU (3.2x a gradient against 4.5x for the
    tiny UNet) and an H200 (1.93x against 2.86x), see docs/benchmarks.md.
    ``vectors_per_call``: how many vectors :meth:`many` pushes through one vmapped call (memory grows with
    it). ``batch``: how :meth:`many` computes several products: "loop" (one at a time), "vmap"
    (``vectors_per_call`` per pass) or "auto" (measured on the first vectors it is given, see
    :attr:`calibration`); default "vmap" when ``vectors_per_call > 1``, else "loop".
    """

    def __init__(
        self,
        obj: Any,
        mode: str = "auto",
        vectors_per_call: int = 1,
        params: ParamDict | None = None,
        batch: str | None = None,
    ) -> None:
        if mode not in HVP_MODES:
            raise UsageError(f"--hvp-mode: {mode!r} is not one of {', '.join(HVP_MODES)}")
        if vectors_per_call < 1:
            raise UsageError(f"--vectors-per-call: must be at least 1, got {vectors_per_call}")
        batch = ("vmap" if vectors_per_call > 1 else "loop") if batch is None else batch
        if batch not in BATCH_MODES:
            raise UsageError(f"--probe-batch: {batch!r} is not one of {', '.join(BATCH_MODES)}")
        self.obj = obj
        self.params = obj.params if params is None else params
        self.mode = mode
        self.vectors_per_call = int(vectors_per_call)
        self.batch = batch if self.vectors_per_call > 1 else "loop"
        # what "auto" measured: seconds per product one at a time and batched, and the choice
        self.calibration: dict[str, Any] = {"requested": batch}
        self._loop_s: float | None = None  # seconds of one product one at a time (after a warm-up product)
        self.count = 0  # number of Hessian-vector products computed (each over the whole bank)
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device
        if mode == "auto":
            # Measured (benchmarks/bench_hessian.py, tiny UNet): double backward costs 1.93x a gradient on an
            # H200 against 2.86x forward-over-reverse, and about 3.2x against 4.5x on the CPU; keeping the
            # gradient's graph makes each further product a single backward pass (PyHessian does the same).
            self.mode = "double_backward_cached"
        self._graphs: dict[int, tuple[list[Tensor], list[Tensor | None]]] = {}
        self._v_buf: Tensor | None = None  # one flat buffer for v (cached mode) ...
        self._v_views: list[Tensor] | None = None  # ... and its views shaped like the parameters
        self._graphs_batch_size = getattr(obj, "batch_size", None)
        self.n = num_entries(self.params)
        if dist.world() > obj.n_batches and dist.is_main():
            warnings.warn(f"{dist.world()} ranks share {obj.n_batches} micro-batch(es) of the bank: some ranks "
                          "idle (lower --batch-size for more micro-batches)", stacklevel=2)

    def _put_v(self, v: Tensor) -> list[Tensor]:
        """v (flat, the parameters' dtype) copied into one buffer whose parameter-shaped views are made once: the
        products' ``grad_outputs`` without 2×(number of tensors) slicing and reshaping calls per product."""
        if self._v_views is None:
            self._v_buf = torch.empty(self.n, dtype=self.dtype, device=self.device)
            self._v_views = list(unflatten(self._v_buf, self.params).values())  # views: slices of a flat buffer
        self._v_buf.copy_(v)
        return self._v_views

    def expect(self, products: int) -> None:
        """The caller will ask for at most ``products`` more products. With ``batch="auto"`` and fewer than
        :data:`MIN_TRIAL_PRODUCTS` of them, keep the loop without the vmapped trial (its products would be
        computed twice when the loop wins); the loop's numbers either way."""
        if self.batch == "auto" and products < MIN_TRIAL_PRODUCTS:
            self.batch = "loop"
            self.calibration.update(chosen="loop", reason=f"{products} product(s) to go: fewer than the "
                                    f"{MIN_TRIAL_PRODUCTS} a vmapped trial needs to pay for itself")

    def _one_batch_cached(self, vs: list[Tensor], i: int) -> Tensor:
        """H_i v = ∂(∇L_i · v)/∂θ through the kept graph of ∇L_i (one backward pass per product), for v as
        parameter-shaped pieces (:meth:`_put_v`); a flat vector in the parameters' dtype."""
        if i not in self._graphs:
            self._graphs[i] = _gradient_graph(self.obj, self.params, i)
        leaves, g = self._graphs[i]
        used = [j for j, gj in enumerate(g) if gj is not None and gj.requires_grad]
        if not used:  # the loss is linear in θ
            return torch.zeros(self.n, dtype=self.dtype, device=self.device)
        hv = _backward_through([g[j] for j in used], [vs[j] for j in used], leaves)
        return torch.cat([(h if h is not None else torch.zeros_like(t)).reshape(-1)
                          for t, h in zip(leaves, hv, strict=True)])

    def _one_batch(self, v: ParamDict, i: int) -> ParamDict:
        if self.mode == "double_backward":
            return _hvp_double_backward(self.obj, self.params, v, i)
        try:
            return _hvp_fwd_rev(self.obj, self.params, v, i)
        except FlatkitError:
            raise
        except (RuntimeError, NotImplementedError) as e:
            from flatkit.memory import is_out_of_memory

            if is_out_of_memory(e):  # the micro-batch retry handles it
                raise
            # An operator without a forward-mode derivative (torch's fused GroupNorm / SiLU backward raises
            # "ZeroTensors are immutable"): the same product by double backward, for this and every later call.
            warnings.warn(f"forward-over-reverse HVP failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "using double backward (hvp_mode double_backward)", stacklevel=3)
            self.mode = "double_backward"
            return _hvp_double_backward(self.obj, self.params, v, i)

    def __call__(self, v: Tensor) -> Tensor:
        """H v for one flat vector v (shape (N,)); returned in the parameters' dtype."""
        from flatkit.memory import retry_micro_batches

        v = v.to(dtype=self.dtype, device=self.device)
        cached = self.mode == "double_backward_cached"
        vd: Any = self._put_v(v.reshape(-1)) if cached else unflatten(v, self.params)

        def run() -> Tensor:
            if self._graphs_batch_size != getattr(self.obj, "batch_size", None):  # halved after out of memory
                self._graphs.clear()
                self._graphs_batch_size = getattr(self.obj, "batch_size", None)
            mine = dist.shard(range(self.obj.n_batches))  # several ranks: each its micro-batches, then Σ
            if cached and len(mine) == 1 and not dist.active():
                # one term: the float64 sum below would give the same bits (x → float64 → x is exact)
                return self._one_batch_cached(vd, mine[0])
            acc = torch.zeros(self.n, dtype=torch.float64, device=self.device)
            for i in mine:
                acc += (self._one_batch_cached(vd, i) if cached else flatten(self._one_batch(vd, i))).to(torch.float64)
            return acc

        acc = retry_micro_batches(self.obj, run, what="Hessian-vector product")
        dist.all_reduce_sum(acc)
        self.count += 1
        _tick()
        return acc.to(self.dtype)

    def many(self, V: Tensor) -> Tensor:
        """H v_r for the rows of V (shape (r, N)): one at a time or ``vectors_per_call`` rows per vmapped pass,
        as ``batch`` says ("auto": measured on these rows, the decision kept for later calls)."""
        V = V.to(dtype=self.dtype, device=self.device)
        out: list[Tensor] = []
        start = 0
        while start < V.shape[0]:
            if self.batch == "loop":
                out.extend(self(row) for row in V[start:])
                break
            if self.batch == "auto":
                done = self._calibrate(V[start:])
                out.extend(done)
                start += len(done)
                continue
            chunk = V[start : start + self.vectors_per_call]
            start += chunk.shape[0]
            if chunk.shape[0] == 1:
                out.append(self(chunk[0]))
                continue
            out.extend(self._batched(chunk))
        return torch.stack(out) if out else V.new_zeros((0, self.n))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _timed(self, fn: Any) -> tuple[Any, float]:
        self._sync()
        t0 = time.perf_counter()
        res = fn()
        self._sync()
        return res, time.perf_counter() - t0

    def _calibrate(self, V: Tensor) -> list[Tensor]:
        """``batch="auto"``: the products of the first rows of V, computed so as to measure. One product one at
        a time as a warm-up (it builds the kept gradient graphs), one timed, then two rows in one vmapped pass,
        timed: the loop wins when that costs as much per product, and the two rows are then computed again one
        at a time, so "auto" that keeps the loop gives the loop's numbers bit for bit. On a CPU, a product
        slower than ``CPU_TRIAL_MAX_S`` keeps the loop without the trial. Returns the products of the rows it
        used (at least one)."""
        if self._loop_s is None:
            if self.count == 0 and not self.calibration.get("warm"):
                self.calibration["warm"] = True
                return [self(V[0])]
            w, t = self._timed(lambda: self(V[0]))
            self._loop_s = dist.broadcast_object(t)  # rank 0's timing: every rank takes the same decision
            return [w]
        if self.device.type == "cpu" and self._loop_s > CPU_TRIAL_MAX_S:
            self.batch = "loop"
            self.calibration.update(loop_s=self._loop_s, chosen="loop",
                                    reason=f"cpu, one product > {CPU_TRIAL_MAX_S} s")
            return [self(V[0])]
        if V.shape[0] < 2:
            return [self(V[0])]
        W, t2 = self._timed(lambda: self._batched(V[:2], fallback=False))
        per = dist.broadcast_object(t2 / 2 if W is not None else math.inf)  # one decision for all ranks
        self.calibration.update(loop_s=self._loop_s, vmap2_s=per)
        if per < self._loop_s:
            self.batch = "vmap"
            self.calibration["chosen"] = "vmap"
            return list(W)
        self.batch = "loop"
        self.calibration["chosen"] = "loop"
        if W is not None:
            self.count -= 2  # the batched products are thrown away: computed again one at a time
            _tick(-2)  # ... and the progress bar counts the products the result uses, as ``count``
        return [self(V[0]), self(V[1])]

    def _batched(self, chunk: Tensor, fallback: bool = True) -> Any:
        """H v_r for the rows of ``chunk`` in one vmapped pass per micro-batch (the rows in the parameters'
        dtype). Where the vmapped pass fails (an operator without a batching rule, out of memory), the rows are
        computed one at a time and later calls compute one at a time (``fallback``), or None is returned."""
        from flatkit.memory import retry_micro_batches

        r = chunk.shape[0]
        Vd = unflatten(chunk, self.params)

        def run() -> Tensor:
            if self._graphs_batch_size != getattr(self.obj, "batch_size", None):  # halved after out of memory
                self._graphs.clear()
                self._graphs_batch_size = getattr(self.obj, "batch_size", None)
            acc = torch.zeros((r, self.n), dtype=torch.float64, device=self.device)
            for i in dist.shard(range(self.obj.n_batches)):
                if self.mode == "double_backward_cached":
                    if i not in self._graphs:
                        self._graphs[i] = _gradient_graph(self.obj, self.params, i)
                    acc += _backward_many(*self._graphs[i], Vd, self.params)
                elif self.mode == "double_backward":  # the graph built once for the whole chunk
                    acc += _backward_many(*_gradient_graph(self.obj, self.params, i), Vd, self.params)
                else:
                    acc += flatten_many(_hvp_fwd_rev_many(self.obj, self.params, Vd, i)).to(torch.float64)
            return acc

        failed: str | None = None
        try:
            acc = retry_micro_batches(self.obj, run, what="Hessian-vector product")
        except FlatkitError:
            raise
        except (RuntimeError, NotImplementedError) as e:
            from flatkit.memory import free_memory

            free_memory()
            failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if dist.active():  # a pass that failed on one rank falls back on every rank (no collective mismatch)
            flag = torch.tensor([0.0 if failed is None else 1.0], dtype=torch.float64, device=self.device)
            dist.all_reduce_sum(flag)
            if failed is None and float(flag) > 0:
                failed = "the vmapped pass failed on another rank"
        if failed is not None:
            self.calibration["vmap_failed"] = failed
            if not fallback:
                return None
            warnings.warn(f"vmapped HVP failed ({self.calibration['vmap_failed']}); computing one vector per call",
                          stacklevel=3)
            self.batch, self.vectors_per_call = "loop", 1
            return [self(row) for row in chunk]
        dist.all_reduce_sum(acc)
        self.count += r
        _tick(r)
        return list(acc.to(self.dtype))


def flatten_many(d: ParamDict) -> Tensor:
    """Flatten a dict of stacked tensors (leading dim r) into an (r, N) matrix."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in d.values()], dim=1)


def hvp(
    obj: Any, v: ParamDict | Tensor, mode: str = "auto", params: ParamDict | None = None
) -> ParamDict | Tensor:
    """H v at ``params`` (default ``obj.params``); v a flat vector or a parameter dict (same type
    returned)."""
    op = HVP(obj, mode=mode, params=params)
    if isinstance(v, dict):
        return unflatten(op(flatten(v)), op.params)
    return op(v)
