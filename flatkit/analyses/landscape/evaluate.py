"""Losses at many parameter sets θ + Σ_i c_i d_i: sequential ``functional_call`` or ``torch.func.vmap`` over a
stack of parameter sets (several grid points per forward). Neither path touches a module or ``obj.params``.

Both sum the objective's micro-batches (``obj.batch_loss(params, i)``) in float64. A non-finite loss is
returned as such (NaN / inf), never raised: the grid records it in its mask.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from flatkit.errors import FlatkitError, UsageError
from flatkit.memory import Knob, retry_micro_batches

ParamDict = dict[str, Tensor]

MODES = ("auto", "vmap", "sequential")

#: calibration: vmap over two grid points costing more than this times the sequential time per point is not
#: timed on the whole block. On a GPU two points per forward cost about as much as one (so per point about half);
#: on the 2-core CPU they cost 1.3x per point and vmap over 4 points 1.75x (tiny UNet), so more points per
#: forward do not rescue it there.
VMAP_HOPELESS = 1.0


def point_params(theta: ParamDict, dirs: Sequence[ParamDict], coeffs: Sequence[float]) -> ParamDict:
    """θ + Σ_i c_i d_i in the parameters' dtype (coefficients cast to it, as in :func:`stacked_params`)."""
    out = {}
    for k, v in theta.items():
        acc = v
        for c, d in zip(coeffs, dirs, strict=False):
            acc = acc + torch.as_tensor(float(c), dtype=v.dtype, device=v.device) * d[k]
        out[k] = acc
    return out


def stacked_params(theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray) -> ParamDict:
    """The same parameter sets for a block of B coefficient rows, stacked along a new leading dim (B, ...)."""
    out = {}
    for k, v in theta.items():
        acc = v.unsqueeze(0).expand((coeffs.shape[0],) + tuple(v.shape))
        for i, d in enumerate(dirs):
            c = torch.as_tensor(coeffs[:, i], dtype=v.dtype, device=v.device).reshape((-1,) + (1,) * v.dim())
            acc = acc + c * d[k]
        out[k] = acc
    return out


def loss_float64(obj, params: ParamDict, batches: Sequence[int] | None = None) -> float:
    """Σ_i obj.batch_loss(params, i) in float64 (no error on a non-finite value); ``batches``: a subset of the
    micro-batches (calibration)."""
    def run() -> float:
        total = torch.zeros((), dtype=torch.float64, device=next(iter(params.values())).device)
        with torch.no_grad():
            for i in (range(obj.n_batches) if batches is None else batches):
                total = total + obj.batch_loss(params, i).to(torch.float64)
        return float(total)

    return retry_micro_batches(obj, run, what="loss")


class PointBuffer:
    """θ + Σ_i c_i d_i written into one reused flat buffer: the same float operations as
    :func:`point_params` (``c_i`` cast to the parameters' dtype, ``c_i · d_i`` rounded, then added left to
    right), so the values are bit-identical, without allocating a parameter set per grid point.

    Each tensor starts at a 64-byte aligned offset of the buffer (so the model's kernels see aligned
    weights). Only for parameters of one dtype and device (:meth:`build` returns None otherwise).
    """

    ALIGN_BYTES = 64

    def __init__(self, theta: ParamDict, dirs: Sequence[ParamDict]) -> None:
        first = next(iter(theta.values()))
        self.dtype, self.device = first.dtype, first.device
        align = max(1, self.ALIGN_BYTES // first.element_size())
        offsets, total = {}, 0
        for k, v in theta.items():
            offsets[k] = total
            total += -(-v.numel() // align) * align

        def flat(d: ParamDict) -> Tensor:
            out = torch.zeros(total, dtype=self.dtype, device=self.device)
            for k, v in d.items():
                out[offsets[k]:offsets[k] + v.numel()].copy_(v.reshape(-1))
            return out

        self.theta = flat(theta)
        self.dirs = [flat(d) for d in dirs]
        self.buf = torch.empty_like(self.theta)
        self.tmp = torch.empty_like(self.theta)
        self.views = {k: self.buf[offsets[k]:offsets[k] + v.numel()].view(v.shape) for k, v in theta.items()}

    @classmethod
    def build(cls, theta: ParamDict, dirs: Sequence[ParamDict]) -> PointBuffer | None:
        vals = list(theta.values())
        if not vals or not all(v.dtype == vals[0].dtype and v.device == vals[0].device
                               and v.dtype.is_floating_point for v in vals):
            return None
        for d in dirs:
            if list(d) != list(theta) or any(d[k].dtype != theta[k].dtype or d[k].device != theta[k].device
                                             or d[k].shape != theta[k].shape for k in theta):
                return None
        return cls(theta, dirs)

    def __call__(self, coeffs: Sequence[float]) -> ParamDict:
        """The parameter dict at ``coeffs`` (views into the buffer: valid until the next call)."""
        self.buf.copy_(self.theta)
        for c, d in zip(coeffs, self.dirs, strict=False):
            torch.mul(torch.as_tensor(float(c), dtype=self.dtype, device=self.device), d, out=self.tmp)
            self.buf.add_(self.tmp)
        return self.views


def losses_sequential(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray,
                      points: PointBuffer | None = None) -> np.ndarray:
    """One functional evaluation per grid point (the points written into one reused buffer; ``points``: a
    :class:`PointBuffer` of ``theta`` and ``dirs`` built once for the whole grid, else one is built here)."""
    points = PointBuffer.build(theta, dirs) if points is None else points
    if points is None:
        return np.array([loss_float64(obj, point_params(theta, dirs, row)) for row in coeffs], dtype=np.float64)
    return np.array([loss_float64(obj, points(row)) for row in coeffs], dtype=np.float64)


def losses_vmap(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray,
                batches: Sequence[int] | None = None) -> np.ndarray:
    """All rows of ``coeffs`` in one vmapped forward per micro-batch (``batches``: a subset, for calibration).

    Out of memory: the rows go through in chunks of half as many grid points per forward (down to one), then
    with half the micro-batch (:mod:`flatkit.memory`); the chunk size stays for the next blocks.
    """
    B = int(coeffs.shape[0])
    device = next(iter(theta.values())).device

    def chunk_size() -> int:
        return max(1, min(B, int(getattr(obj, "_vmap_points", None) or B)))

    def set_chunk(c: int) -> None:
        obj._vmap_points = int(c)

    def run() -> np.ndarray:
        c = chunk_size()
        out = []
        for s0 in range(0, B, c):
            block = coeffs[s0:s0 + c]
            stacked = stacked_params(theta, dirs, block)
            total = torch.zeros(block.shape[0], dtype=torch.float64, device=device)
            with torch.no_grad():
                for i in (range(obj.n_batches) if batches is None else batches):
                    f = torch.func.vmap(lambda p, i=i: obj.batch_loss(p, i))
                    total = total + f(stacked).to(torch.float64)
            out.append(total.cpu().numpy())
            del stacked
        return np.concatenate(out)

    try:
        return retry_micro_batches(obj, run, extra=[Knob("{} grid points per forward", chunk_size, set_chunk)],
                                   what="vmapped grid block")
    except (RuntimeError, NotImplementedError) as e:
        precision = getattr(obj, "precision", "fp32")
        if precision == "fp32":
            raise
        # e.g. CPU autocast does not reach every batched kernel: the layer gets bf16 inputs and an fp32 bias
        raise FlatkitError(f"mode vmap: the vmapped forward fails under --precision {precision} on "
                           f"{device.type} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); use "
                           "--mode sequential or auto") from None


def calibrate(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray,
              return_values: bool = False) -> tuple:
    """Time one block on micro-batch 0 both ways and return the faster mode and the timings (and, with
    ``return_values``, the block's losses by that mode when micro-batch 0 is the whole bank, else None).

    Sequential: the block's points one at a time, the first one untimed (warm-up), the block's time
    extrapolated from the others. vmap: a warm-up on one point, then two points per forward, then the whole
    block, unless the two points already cost more per point than the sequential path (``VMAP_HOPELESS``):
    then vmap's time is extrapolated from them and the block is not computed twice more. Both compute exactly
    what :func:`losses_sequential` / :func:`losses_vmap` compute, so with one micro-batch the chosen mode's
    values are the block's values and need not be computed again.
    vmap failing on the model (an op without a batching rule) counts as infinitely slow.
    """
    B = int(coeffs.shape[0])
    timings: dict[str, float | str] = {"block": B}
    values: dict[str, np.ndarray] = {}
    points = PointBuffer.build(theta, dirs)

    def at(row: np.ndarray) -> ParamDict:
        return points(row) if points is not None else point_params(theta, dirs, row)

    seq = np.empty(B, dtype=np.float64)
    seq[0] = loss_float64(obj, at(coeffs[0]), batches=[0])  # warm-up
    _sync(theta)
    t0 = time.perf_counter()
    for j in range(1, B):
        seq[j] = loss_float64(obj, at(coeffs[j]), batches=[0])
    _sync(theta)
    if B > 1:
        timings["sequential_s"] = (time.perf_counter() - t0) * B / (B - 1)
    else:  # one point: time it again
        t0 = time.perf_counter()
        loss_float64(obj, at(coeffs[0]), batches=[0])
        _sync(theta)
        timings["sequential_s"] = time.perf_counter() - t0
    values["sequential"] = seq
    try:
        losses_vmap(obj, theta, dirs, coeffs[:1], batches=[0])  # warm-up (first-call costs)
        _sync(theta)
        t0 = time.perf_counter()
        pair = losses_vmap(obj, theta, dirs, coeffs[:2], batches=[0])
        _sync(theta)
        t_pair = time.perf_counter() - t0
        per_point_seq = timings["sequential_s"] / B
        if B <= 2:
            values["vmap"], timings["vmap_s"] = pair, t_pair
        elif t_pair / 2 > VMAP_HOPELESS * per_point_seq:
            # two points per forward cost clearly more per point than one at a time (the CPU case): vmap is not
            # timed on the whole block; its time is extrapolated from the two points
            timings["vmap_s"] = t_pair / 2 * B
            timings["vmap_timed_points"] = 2
        else:
            t0 = time.perf_counter()
            values["vmap"] = losses_vmap(obj, theta, dirs, coeffs, batches=[0])
            _sync(theta)
            timings["vmap_s"] = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - any failure of the vmap path means: do not use it
        from flatkit.memory import is_out_of_memory

        if is_out_of_memory(e):
            from flatkit.memory import free_memory

            free_memory(theta)
        timings["vmap_s"] = float("inf")
        timings["vmap_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    mode = "vmap" if timings["vmap_s"] < timings["sequential_s"] else "sequential"
    if not return_values:
        return mode, timings
    return mode, timings, (values.get(mode) if obj.n_batches == 1 else None)


def _sync(theta: ParamDict) -> None:
    dev = next(iter(theta.values())).device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"mode: {mode!r} is not one of {', '.join(MODES)}")


def loss_and_gradient(obj, params: ParamDict) -> tuple[float, ParamDict]:
    """L(params) and ∇L(params), both summed over micro-batches in float64 (the gradient returned in the
    parameters' dtype), the value and the gradient from the same evaluation. ``params`` is not modified."""
    from flatkit.objective import value_and_grad

    def run() -> tuple[float, ParamDict]:
        acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
        total = 0.0
        for i in range(obj.n_batches):
            val, g = value_and_grad(lambda q, i=i: obj.batch_loss(q, i), params)  # autograd.grad: 0.8x func.grad
            total += float(val.to(torch.float64))
            for k in acc:
                acc[k] += g[k].to(torch.float64)
        return total, acc

    total, acc = retry_micro_batches(obj, run, what="gradient")
    return total, {k: acc[k].to(params[k].dtype) for k in acc}


def evaluate_block(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray, mode: str) -> np.ndarray:
    """Losses at the rows of ``coeffs`` by the given mode ("vmap" or "sequential")."""
    if mode == "vmap":
        return losses_vmap(obj, theta, dirs, coeffs)
    return losses_sequential(obj, theta, dirs, coeffs)
