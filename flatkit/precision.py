"""Reduced-precision evaluation (``--precision``) and channels-last memory format (``--channels-last``).

``fp32`` runs the model as it is (bit for bit what flatkit computed before these options existed). ``bf16`` /
``fp16`` run its forward under ``torch.autocast`` (CUDA; bf16 and fp16 also on the CPU where this torch
supports them): matmuls and convolutions in 16 bits, the output cast back to the parameters' dtype, losses still
accumulated in float64. Fine for loss values (landscapes, perturbation, sampling-based robustness); the Hessian
analyses keep fp32 unless asked, since Lanczos on 16-bit HVPs loses the small eigenvalues and its
orthogonality. Channels-last applies to 4-D tensors on CUDA only (on the CPU it is accepted and ignored).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch

from flatkit.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """A usage error naming ``--precision`` for an unknown value or one the device cannot autocast to."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type not in ("cuda", "cpu"):
        raise UsageError(f"precision {precision}: autocast is only used on cuda and cpu devices, not {dev.type}")
    if dev.type == "cpu" and not torch.amp.is_autocast_available("cpu"):  # pragma: no cover - old builds
        raise UsageError(f"precision {precision}: this torch build has no CPU autocast")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """``torch.autocast`` to the precision's dtype on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        yield
        return
    dev = torch.device(device)
    with torch.autocast(device_type=dev.type, dtype=DTYPES[precision]):
        yield


def _is_batched(t: torch.Tensor) -> bool:
    try:
        return bool(torch._C._functorch.is_batchedtensor(t))
    except AttributeError:  # pragma: no cover
        return False


def to_channels_last(t: Any) -> Any:
    """A 4-D tensor in channels-last memory format (same values); anything else, and tensors inside vmap, as
    they are."""
    if isinstance(t, torch.Tensor) and t.dim() == 4 and not _is_batched(t):
        return t.contiguous(memory_format=torch.channels_last)
    return t


def autocast_model(model: Any, precision: str, channels_last: bool = False) -> Any:
    """``model(x, t)`` under autocast (output cast back to float32) and channels-last inputs on CUDA; the model
    itself unchanged. ``model`` as given for fp32 without channels-last."""
    if precision == "fp32" and not channels_last:
        return model

    class _Wrapped:
        def __init__(self) -> None:
            self.inner = model

        def parameters(self) -> Iterator[torch.nn.Parameter]:
            return model.parameters()

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cl = channels_last and x.device.type == "cuda"
            with torch.no_grad(), autocast(precision, x.device):
                out = model(to_channels_last(x) if cl else x, t)
            return out.float().contiguous()

    return _Wrapped()


def precision_meta(precision: str, channels_last: bool, device: torch.device | str) -> dict:
    """What the result's ``meta`` records."""
    dev = torch.device(device)
    return {"precision": precision, "autocast": None if precision == "fp32" else str(DTYPES[precision]),
            "channels_last": bool(channels_last), "channels_last_applied": bool(channels_last and dev.type == "cuda")}


_SAMPLING: contextvars.ContextVar[tuple[str, bool]] = contextvars.ContextVar(
    "flatkit_sampling_precision", default=("fp32", False))


@contextlib.contextmanager
def sampling_precision(precision: str = "fp32", channels_last: bool = False) -> Iterator[None]:
    """Within the block, :func:`flatkit.sampling.draw_samples` runs the model under :func:`autocast_model` (the
    sampling-based robustness analyses; their loss and distance computations stay in fp32)."""
    check_precision(precision)
    token = _SAMPLING.set((precision, bool(channels_last)))
    try:
        yield
    finally:
        _SAMPLING.reset(token)


def current_sampling_precision() -> tuple[str, bool]:
    return _SAMPLING.get()
