"""Grid axes for landscape slices: symmetric around the centre, the centre included exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flatkit.errors import UsageError


def parse_span(span: float | Sequence[float] | str, option: str = "--span") -> tuple[float, float]:
    """``R`` → (−R, R); ``(lo, hi)`` or ``"lo,hi"`` / ``"lo:hi"`` → (lo, hi); lo < hi required."""
    if isinstance(span, str):
        parts = span.replace(":", ",").split(",")
        try:
            vals = [float(p) for p in parts if p.strip()]
        except ValueError:
            raise UsageError(f"{option} {span}: expected R or MIN,MAX") from None
        span = vals[0] if len(vals) == 1 else vals
    if isinstance(span, int | float | np.floating | np.integer):
        r = float(span)
        if not np.isfinite(r) or r <= 0:
            raise UsageError(f"{option} {span}: the half-width R must be a positive number")
        return -r, r
    vals = [float(v) for v in span]
    if len(vals) != 2:
        raise UsageError(f"{option}: expected R or MIN,MAX, got {len(vals)} values")
    lo, hi = vals
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise UsageError(f"{option} {lo},{hi}: need MIN < MAX")
    return lo, hi


def axis(lo: float, hi: float, points: int, option: str = "--points",
         snap: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """``points`` evenly spaced coordinates from lo to hi (float64).

    A symmetric range (lo = −hi) needs an odd number of points and puts exactly 0.0 in the middle, and the
    grid is exactly antisymmetric (c_i = −c_{P−1−i}). In any range, a grid value within rounding of a point in
    ``snap`` (the centre 0, the second checkpoint at 1) is set to it exactly.
    """
    if not isinstance(points, int | np.integer) or points < 2:
        raise UsageError(f"{option} {points}: need at least 2 grid points per axis")
    if lo >= hi:
        raise UsageError(f"span {lo},{hi}: need MIN < MAX")
    if lo == -hi:
        if points % 2 == 0:
            raise UsageError(f"{option} {points}: a symmetric grid needs an odd number of points "
                             "to include the centre")
        m = (points - 1) // 2
        half = hi * np.arange(1, m + 1, dtype=np.float64) / m
        return np.concatenate([-half[::-1], [0.0], half])
    c = np.linspace(lo, hi, points, dtype=np.float64)
    step = (hi - lo) / (points - 1)
    for s in snap:
        i = int(np.argmin(np.abs(c - s)))
        if abs(c[i] - s) < 1e-9 * step:
            c[i] = s
    return c


def grid_coefficients(axes: Sequence[np.ndarray]) -> np.ndarray:
    """All grid points as rows of coefficients, C order: (P,) → (P, 1); (P, Q) → (P·Q, 2), row i·Q + j = (a_i, b_j)."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)
