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

Several vectors per call: ``torch.func.vmap`` over the jvp (one batched forward/backward for ``k`` vectors)
when ``vectors_per_call > 1``. Accumulation over micro-batches is in float64.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from flatkit import distributed as dist
from flatkit.curvature.vectors import ParamDict, flatten, num_entries, unflatten
from flatkit.errors import FlatkitError, UsageError

__all__ = ["HVP", "hvp", "hvp_progress", "flatten", "unflatten", "num_entries", "HVP_MODES"]

HVP_MODES = ("auto", "fwd_rev", "double_backward", "double_backward_cached")

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
    it).
    """

    def __init__(
        self, obj: Any, mode: str = "auto", vectors_per_call: int = 1, params: ParamDict | None = None
    ) -> None:
        if mode not in HVP_MODES:
            raise UsageError(f"--hvp-mode: {mode!r} is not one of {', '.join(HVP_MODES)}")
        if vectors_per_call < 1:
            raise UsageError(f"--vectors-per-call: must be at least 1, got {vectors_per_call}")
        self.obj = obj
        self.params = obj.params if params is None else params
        self.mode = mode
        self.vectors_per_call = int(vectors_per_call)
        self.count = 0  # number of Hessian-vector products computed (each over the whole bank)
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device
        if mode == "auto":
            # Measured (benchmarks/bench_hessian.py, tiny UNet): double backward costs 1.93x a gradient on an
            # H200 against 2.86x forward-over-reverse, and about 3.2x against 4.5x on the CPU; keeping the
            # gradient's graph makes each further product a single backward pass (PyHessian does the same).
            self.mode = "double_backward_cached"
        self._graphs: dict[int, tuple[list[Tensor], list[Tensor | None]]] = {}
        self._graphs_batch_size = getattr(obj, "batch_size", None)
        self.n = num_entries(self.params)
        if dist.world() > obj.n_batches and dist.is_main():
            warnings.warn(f"{dist.world()} ranks share {obj.n_batches} micro-batch(es) of the bank: some ranks "
                          "idle (lower --batch-size for more micro-batches)", stacklevel=2)

    def _one_batch_cached(self, v: ParamDict, i: int) -> ParamDict:
        """H_i v = ∂(∇L_i · v)/∂θ through the kept graph of ∇L_i (one backward pass per product)."""
        if i not in self._graphs:
            self._graphs[i] = _gradient_graph(self.obj, self.params, i)
        leaves, g = self._graphs[i]
        vs = list(v.values())
        used = [j for j, gj in enumerate(g) if gj is not None and gj.requires_grad]
        if not used:  # the loss is linear in θ
            return {k: torch.zeros_like(t) for k, t in self.params.items()}
        hv = torch.autograd.grad([g[j] for j in used], leaves, grad_outputs=[vs[j] for j in used],
                                 retain_graph=True, allow_unused=True)
        return {k: (h if h is not None else torch.zeros_like(t))
                for (k, t), h in zip(self.params.items(), hv, strict=True)}

    def _one_batch(self, v: ParamDict, i: int) -> ParamDict:
        if self.mode == "double_backward_cached":
            return self._one_batch_cached(v, i)
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

        vd = unflatten(v.to(dtype=self.dtype, device=self.device), self.params)

        def run() -> Tensor:
            if self._graphs_batch_size != getattr(self.obj, "batch_size", None):  # halved after out of memory
                self._graphs.clear()
                self._graphs_batch_size = getattr(self.obj, "batch_size", None)
            acc = torch.zeros(self.n, dtype=torch.float64, device=self.device)
            for i in dist.shard(range(self.obj.n_batches)):  # several ranks: each its micro-batches, then Σ
                acc += flatten(self._one_batch(vd, i)).to(torch.float64)
            return acc

        acc = retry_micro_batches(self.obj, run, what="Hessian-vector product")
        dist.all_reduce_sum(acc)
        self.count += 1
        _tick()
        return acc.to(self.dtype)

    def many(self, V: Tensor) -> Tensor:
        """H v_r for the rows of V (shape (r, N)), ``vectors_per_call`` rows per vmapped call."""
        out = []
        for start in range(0, V.shape[0], self.vectors_per_call):
            chunk = V[start : start + self.vectors_per_call].to(dtype=self.dtype, device=self.device)
            if chunk.shape[0] == 1 or self.mode.startswith("double_backward"):
                out.extend(self(row) for row in chunk)
                continue
            try:
                acc = torch.zeros(chunk.shape, dtype=torch.float64, device=self.device)
                Vd = unflatten(chunk, self.params)
                for i in dist.shard(range(self.obj.n_batches)):
                    acc += flatten_many(_hvp_fwd_rev_many(self.obj, self.params, Vd, i)).to(torch.float64)
                dist.all_reduce_sum(acc)
                self.count += chunk.shape[0]
                _tick(chunk.shape[0])
                out.extend(acc.to(self.dtype))
            except FlatkitError:
                raise
            except (RuntimeError, NotImplementedError) as e:
                from flatkit.memory import free_memory

                free_memory()
                warnings.warn(f"vmapped HVP failed ({e}); computing one vector per call", stacklevel=2)
                self.vectors_per_call = 1
                out.extend(self(row) for row in chunk)
        return torch.stack(out)


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
