"""Bounded work: estimate what an analysis will allocate before it allocates it, and refuse what the device cannot
hold (docs/cli.md, "Out of memory").

Every estimator returns bytes for the large arrays of one analysis (landscape grid values and blocks, the
evaluation bank, the Lanczos basis and trace probes, samples and sampling chains, prior / quantize grids);
:func:`check` compares their sum with what the device has (the CPU: ``MemAvailable`` of ``/proc/meminfo``, or
psutil when installed; CUDA: ``torch.cuda.mem_get_info``) and raises a :class:`~flatkit.errors.UsageError`
whose message starts with the parameter that would shrink it (``points 100001: the grid needs 80 GB ...``),
which the command line shows as its option (``--points``). Unknown availability (no ``/proc``, no psutil) never
refuses. ``FLATKIT_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix) caps the available memory, for tests and for
shared machines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from flatkit.errors import UsageError

FLOAT = 4  # bytes of a float32
DOUBLE = 8

#: the share of the available memory an analysis may plan to use (the rest: activations, the model, the OS)
HEADROOM = 0.8


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _parse_size(text: str) -> int | None:
    text = text.strip().upper().removesuffix("B")
    mult = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if mult != 1 else text) * mult)
    except ValueError:
        return None


def _cpu_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - not installed or not supported: availability unknown
        return None


def available_bytes(device: Any = "cpu") -> int | None:
    """Free memory of ``device`` in bytes (None when unknown), capped by ``FLATKIT_MEMORY_LIMIT``."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    avail: int | None
    if dev.type == "cuda" and torch.cuda.is_available():
        try:
            avail = int(torch.cuda.mem_get_info(dev)[0])
        except Exception:  # noqa: BLE001
            avail = None
    elif dev.type == "cpu":
        avail = _cpu_available()
    else:
        avail = None
    limit = _parse_size(os.environ.get("FLATKIT_MEMORY_LIMIT", "") or "x")
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def fits(need: float, device: Any = "cpu") -> bool:
    """Whether ``need`` bytes fit in :data:`HEADROOM` of the device's free memory (True where it is unknown)."""
    avail = available_bytes(device)
    return avail is None or need <= HEADROOM * avail


def check(param: str, value: Any, what: str, need: float, device: Any = "cpu") -> None:
    """Refuse (UsageError naming ``param``) when ``need`` bytes exceed :data:`HEADROOM` of the device's free
    memory."""
    if fits(need, device):
        return
    avail = available_bytes(device)
    dev = str(device)
    raise UsageError(
        f"{param} {value}: {what} needs about {format_bytes(need)}, more than the {format_bytes(avail)} free on "
        f"{dev}; lower {param}"
    )


# ------------------------------------------------------------------------------------------------ estimators
def landscape_bytes(points: int, dims: int, models: int) -> float:
    """The grid of a landscape: per model float64 values and a bool mask, once the float64 coefficients and the
    meshgrid they are built from (P^dims points)."""
    grid = float(points) ** int(dims)
    return grid * (DOUBLE + 1) * max(1, models) + grid * DOUBLE * dims * 2 + points * DOUBLE


def landscape_block_bytes(batch_points: int, num_params: int) -> float:
    """One vmapped block: a copy of the parameters per grid point (float32)."""
    return float(batch_points) * num_params * FLOAT


def bank_bytes(n: int, sample_shape: Sequence[int]) -> float:
    """The frozen (x0, t, ε) bank: x0 and ε float32, t int64."""
    return float(n) * (2 * math.prod(sample_shape) * FLOAT + 8)


def lanczos_bytes(steps: int, num_params: int, vectors: int = 1, itemsize: int = FLOAT) -> float:
    """The Lanczos basis: ONE preallocated buffer of ``steps + vectors`` rows of the parameter size
    (``steps`` basis vectors and the next ``vectors``: 1 for Lanczos, the block size for block Lanczos, the
    probes of a sketch), ``itemsize`` bytes per number (float32 by default)."""
    return float(steps + vectors) * num_params * itemsize


def samples_bytes(n: int, sample_shape: Sequence[int], copies: int = 1) -> float:
    """``copies`` sets of ``n`` float32 samples (and their uint8 images), plus one chain's working state."""
    per = math.prod(sample_shape) * (FLOAT + 1)
    return float(n) * per * max(1, copies) + float(n) * math.prod(sample_shape) * FLOAT * 3


def check_landscape(points: int, dims: int, models: int, device: Any = "cpu") -> None:
    if not isinstance(points, int) or points < 2 or dims not in (1, 2):
        return  # invalid sizes are refused by their own checks
    if dims == 2:
        what = f"the {points}x{points} grid of {models} model(s)"
    else:
        what = f"the grid of {points} points for {models} model(s)"
    check("points", points, what, landscape_bytes(points, dims, models), device)


def check_bank(n: int, sample_shape: Sequence[int], device: Any = "cpu") -> None:
    check("n_eval", n, f"the evaluation bank of {n} items of shape {tuple(sample_shape)}",
          bank_bytes(n, sample_shape), device)


def check_samples(n: int, sample_shape: Sequence[int], copies: int = 1, device: Any = "cpu",
                  param: str = "n") -> None:
    what = f"{n} samples of shape {tuple(sample_shape)}" + (f" in {copies} settings" if copies > 1 else "")
    check(param, n, what, samples_bytes(n, sample_shape, copies), device)
