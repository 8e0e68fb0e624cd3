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

from flatkit.errors import UsageError

ParamDict = dict[str, Tensor]

MODES = ("auto", "vmap", "sequential")


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


def loss_float64(obj, params: ParamDict) -> float:
    """Σ_i obj.batch_loss(params, i) in float64 (no error on a non-finite value)."""
    total = torch.zeros((), dtype=torch.float64, device=next(iter(params.values())).device)
    with torch.no_grad():
        for i in range(obj.n_batches):
            total = total + obj.batch_loss(params, i).to(torch.float64)
    return float(total)


def losses_sequential(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray) -> np.ndarray:
    """One functional evaluation per grid point."""
    return np.array([loss_float64(obj, point_params(theta, dirs, row)) for row in coeffs], dtype=np.float64)


def losses_vmap(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray,
                batches: Sequence[int] | None = None) -> np.ndarray:
    """All rows of ``coeffs`` in one vmapped forward per micro-batch (``batches``: a subset, for calibration)."""
    stacked = stacked_params(theta, dirs, coeffs)
    total = torch.zeros(coeffs.shape[0], dtype=torch.float64, device=next(iter(theta.values())).device)
    with torch.no_grad():
        for i in (range(obj.n_batches) if batches is None else batches):
            f = torch.func.vmap(lambda p, i=i: obj.batch_loss(p, i))
            total = total + f(stacked).to(torch.float64)
    return total.cpu().numpy()


def calibrate(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray) -> tuple[str, dict]:
    """Time one block on micro-batch 0 both ways (after a warm-up) and return the faster mode and the timings.

    vmap failing on the model (an op without a batching rule) counts as infinitely slow.
    """
    def seq() -> None:
        with torch.no_grad():
            for row in coeffs:
                obj.batch_loss(point_params(theta, dirs, row), 0)

    def vm() -> None:
        losses_vmap(obj, theta, dirs, coeffs, batches=[0])

    timings: dict[str, float | str] = {"block": int(coeffs.shape[0])}
    for name, fn in (("sequential", seq), ("vmap", vm)):
        try:
            fn()
            _sync(theta)
            t0 = time.perf_counter()
            fn()
            _sync(theta)
            timings[name + "_s"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - any failure of the vmap path means: do not use it
            if name == "sequential":
                raise
            timings["vmap_s"] = float("inf")
            timings["vmap_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    mode = "vmap" if timings["vmap_s"] < timings["sequential_s"] else "sequential"
    return mode, timings


def _sync(theta: ParamDict) -> None:
    dev = next(iter(theta.values())).device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")


def loss_and_gradient(obj, params: ParamDict) -> tuple[float, ParamDict]:
    """L(params) and ∇L(params), both summed over micro-batches in float64 (the gradient returned in the
    parameters' dtype). ``params`` is not modified."""
    acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    total = 0.0
    for i in range(obj.n_batches):
        g, val = torch.func.grad_and_value(lambda q, i=i: obj.batch_loss(q, i))(
            {k: v.detach() for k, v in params.items()})
        total += float(val.to(torch.float64))
        for k in acc:
            acc[k] += g[k].to(torch.float64)
    return total, {k: acc[k].to(params[k].dtype) for k in acc}


def evaluate_block(obj, theta: ParamDict, dirs: Sequence[ParamDict], coeffs: np.ndarray, mode: str) -> np.ndarray:
    """Losses at the rows of ``coeffs`` by the given mode ("vmap" or "sequential")."""
    if mode == "vmap":
        return losses_vmap(obj, theta, dirs, coeffs)
    return losses_sequential(obj, theta, dirs, coeffs)
