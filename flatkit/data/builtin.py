"""Built-in synthetic data sets, generated offline, fast (vectorised numpy) and deterministically.

- ``shapes16`` / ``shapes32``: antialiased circles, squares and triangles of random size, position, rotation
  and colour over a solid, linear-gradient or striped background (16x16 / 32x32 RGB, uint8 NHWC).
- ``gaussians2d``: a mixture of 8 isotropic Gaussians (std 0.1) whose means sit evenly on a circle; the radius
  is chosen so that each coordinate has unit variance.
- ``swissroll``: the 2-D swiss roll (x, y) = (t cos t, t sin t) + 0.5 ξ, t ~ U(1.5π, 4.5π), centred on its
  exact mean and divided by its exact per-coordinate std.

Randomness: one explicit ``numpy.random.Generator`` (PCG64) per block of ``BLOCK`` samples, seeded by
``(seed, salt of the set, block index)``; so ``n=1000`` is a prefix of ``n=8192`` with the same seed, and the
global RNG is never touched. Per-pixel arithmetic uses only +, -, *, /, sqrt, floor, min/max (IEEE exact or
correctly rounded), so images are bit-identical across machines; point sets use sin/cos/normal draws (libm),
identical on one platform.
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 1024
_SALT = {"shapes16": 16, "shapes32": 32, "gaussians2d": 2, "swissroll": 3}


class _Draws:
    """Draws of a block generator, always ``BLOCK`` values per call truncated to the ``b`` in use, so that the
    random stream does not depend on ``n`` (a smaller ``n`` gives a prefix of a larger one)."""

    def __init__(self, rng: np.random.Generator, b: int):
        self.rng, self.b = rng, b

    def random(self) -> np.ndarray:
        return self.rng.random(BLOCK)[: self.b]

    def uniform(self, lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, BLOCK)[: self.b]

    def integers(self, lo: int, hi: int) -> np.ndarray:
        return self.rng.integers(lo, hi, BLOCK)[: self.b]

    def choice(self, k: int, p: list[float]) -> np.ndarray:
        return self.rng.choice(k, size=BLOCK, p=p)[: self.b]

    def standard_normal(self, dim: int) -> np.ndarray:
        return self.rng.standard_normal((BLOCK, dim))[: self.b]


def _block_draws(name: str, n: int, seed: int):
    """Yield ``(start, stop, draws)`` for each block of ``BLOCK`` samples."""
    for b, start in enumerate(range(0, n, BLOCK)):
        ss = np.random.SeedSequence([int(seed), _SALT[name], b])
        stop = min(start + BLOCK, n)
        yield start, stop, _Draws(np.random.Generator(np.random.PCG64(ss)), stop - start)


# --------------------------------------------------------------------------------------------- colour helpers
def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] -> RGB in [0, 1], shape ``h.shape + (3,)``; f(n) = v - v s clip(min(k, 4 - k), 0, 1),
    k = (n + 6h) mod 6 for n = 5, 3, 1 (the piecewise-linear hue wheel)."""
    out = []
    for n in (5.0, 3.0, 1.0):
        k = np.mod(n + 6.0 * h, 6.0)
        out.append(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(out, axis=-1)


def _unit_vectors(d: _Draws) -> tuple[np.ndarray, np.ndarray]:
    """Directions covering (-90°, 90°) through the rational parametrisation ((1-t²), 2t)/(1+t²) (no libm)."""
    t = d.uniform(-1.0, 1.0)
    d = 1.0 + t * t
    return (1.0 - t * t) / d, 2.0 * t / d


# --------------------------------------------------------------------------------- signed distance functions
# Distances in pixels: a pixel's coverage by a shape is clip(0.5 - sdf, 0, 1), a 1-pixel antialiasing ramp.
def sdf_circle(px: np.ndarray, py: np.ndarray, r: np.ndarray) -> np.ndarray:
    """|p| - r."""
    return np.sqrt(px * px + py * py) - r


def sdf_square(px: np.ndarray, py: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Axis-aligned square of half side h: |max(q, 0)| + min(max(qx, qy), 0), q = |p| - h."""
    qx, qy = np.abs(px) - h, np.abs(py) - h
    ox, oy = np.maximum(qx, 0.0), np.maximum(qy, 0.0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0.0)


def sdf_triangle(px: np.ndarray, py: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Equilateral triangle of half side a, centroid at the origin, vertices (±a, -a/√3) and (0, 2a/√3).

    Fold x by symmetry, reflect across the edge normal when past it, clamp onto the base segment and
    take the distance with the sign of the side.
    """
    k = math.sqrt(3.0)
    x = np.abs(px) - a
    y = py + a / k
    past = x + k * y > 0.0
    x, y = np.where(past, (x - k * y) / 2.0, x), np.where(past, (-k * x - y) / 2.0, y)
    x = x - np.clip(x, -2.0 * a, 0.0)
    return -np.sqrt(x * x + y * y) * np.sign(y)


def _coverage(sdf: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - sdf, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------- shapes
_SHAPE_CFG = {  # size -> (radius range in pixels, probabilities of 1, 2, 3 shapes, stripe period range,
    #                 probabilities of a solid, gradient, striped background)
    # shapes16 is the CPU demo's data: one shape on a plain or gradient background, so that a tiny UNet's
    # samples after a few hundred steps visibly resemble it; shapes32 is the harder set.
    16: ((3.5, 6.5), (1.0, 0.0, 0.0), (3.0, 6.0), (0.5, 0.5, 0.0)),
    32: ((4.0, 10.5), (0.35, 0.40, 0.25), (4.0, 9.0), (0.3, 0.5, 0.2)),
}


def _shapes_block(d: _Draws, size: int) -> np.ndarray:
    """``d.b`` images of ``size``x``size`` RGB in float32 [0, 1], NHWC."""
    (rmin, rmax), pk, (pmin, pmax), pbg = _SHAPE_CFG[size]
    f32 = np.float32
    coords = np.arange(size, dtype=f32) + f32(0.5)  # pixel centres
    X = coords[None, None, :]
    Y = coords[None, :, None]
    half = f32(size / 2)

    # Background: value band dark (60 %) or light; two colours close in hue and value.
    dark = d.random() < 0.6
    h0 = d.random()
    h1 = np.mod(h0 + d.uniform(-0.2, 0.2), 1.0)
    s0, s1 = d.uniform(0.0, 0.6), d.uniform(0.0, 0.6)
    v0 = np.where(dark, d.uniform(0.05, 0.4), d.uniform(0.62, 0.95))
    v1 = np.clip(v0 + d.uniform(-0.25, 0.25), *np.where(dark, [[0.02], [0.45]], [[0.58], [0.98]]))
    c0 = hsv_to_rgb(h0, s0, v0).astype(f32)[:, None, None, :]
    c1 = hsv_to_rgb(h1, s1, v1).astype(f32)[:, None, None, :]
    bg_type = d.choice(3, list(pbg))  # 0 solid, 1 linear gradient, 2 stripes
    gc, gs = _unit_vectors(d)
    gc, gs = gc.astype(f32)[:, None, None], gs.astype(f32)[:, None, None]
    period = d.uniform(pmin, pmax).astype(f32)[:, None, None]
    phase = d.random().astype(f32)[:, None, None]
    proj = (X - half) * gc + (Y - half) * gs  # pixels along the background direction
    grad = np.clip(f32(0.5) + proj / f32(size), 0.0, 1.0)
    u = proj / period + phase
    u = u - np.floor(u)
    stripes = _coverage((np.abs(u - f32(0.5)) - f32(0.25)) * period)  # stripe of width period/2, antialiased
    # stripes keep 70 % of the colour difference so that they never compete with the shapes
    t = np.select(
        [bg_type[:, None, None] == 1, bg_type[:, None, None] == 2], [grad, f32(0.7) * stripes], f32(0.0)
    )
    img = c0 + (c1 - c0) * t[..., None]

    # Shapes: 1..3 per image, painted in order with antialiased alpha.
    count = d.choice(3, list(pk)) + 1
    for slot in range(3):
        kind = d.integers(0, 3)  # 0 circle, 1 square, 2 triangle
        r = d.uniform(rmin, rmax)
        m = 0.75 * r
        cx = m + (size - 2.0 * m) * d.random()
        cy = m + (size - 2.0 * m) * d.random()
        rc, rs = _unit_vectors(d)
        hue = d.random()
        sat = d.uniform(0.55, 1.0)
        val = np.where(dark, d.uniform(0.75, 1.0), d.uniform(0.1, 0.5))
        present = slot < count
        if not present.any():
            continue
        col = hsv_to_rgb(hue, sat, val).astype(f32)[:, None, None, :]
        e = (slice(None), None, None)
        dx = X - cx.astype(f32)[e]
        dy = Y - cy.astype(f32)[e]
        rc32, rs32 = rc.astype(f32)[e], rs.astype(f32)[e]
        px = rc32 * dx + rs32 * dy  # rotate into the shape's frame
        py = rc32 * dy - rs32 * dx
        r32 = r.astype(f32)[e]
        sdf = np.select(
            [kind[e] == 0, kind[e] == 1],
            [sdf_circle(px, py, r32), sdf_square(px, py, f32(0.85) * r32)],
            sdf_triangle(px, py, f32(1.1) * r32),
        )
        alpha = _coverage(sdf) * present[e].astype(f32)
        img = img + (col - img) * alpha[..., None]
    return img


def make_shapes(size: int, n: int, seed: int) -> np.ndarray:
    """``builtin:shapes16`` / ``builtin:shapes32``: ``n`` images, uint8 NHWC."""
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for start, stop, d in _block_draws(f"shapes{size}", n, seed):
        img = _shapes_block(d, size)
        out[start:stop] = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------------- points
GAUSSIANS2D_STD = 0.1
#: means on a circle of radius R with R²/2 + σ² = 1 (unit variance per coordinate).
GAUSSIANS2D_RADIUS = math.sqrt(2.0 * (1.0 - GAUSSIANS2D_STD**2))
_H = math.sqrt(0.5)
_CIRCLE8 = np.array(
    [[1, 0], [_H, _H], [0, 1], [-_H, _H], [-1, 0], [-_H, -_H], [0, -1], [_H, -_H]], dtype=np.float64
)


def make_gaussians2d(n: int, seed: int) -> np.ndarray:
    """``builtin:gaussians2d``: x = R μ_k + σ ξ, k ~ U{0..7}, ξ ~ N(0, I); float32 (n, 2)."""
    out = np.empty((n, 2), dtype=np.float32)
    for start, stop, d in _block_draws("gaussians2d", n, seed):
        k = d.integers(0, 8)
        xi = d.standard_normal(2)
        out[start:stop] = GAUSSIANS2D_RADIUS * _CIRCLE8[k] + GAUSSIANS2D_STD * xi
    return out


SWISSROLL_NOISE = 0.5
_A, _B = 1.5 * math.pi, 4.5 * math.pi
#: exact mean of (t cos t, t sin t) for t ~ U(a, b): (∫ t cos t, ∫ t sin t) / (b - a) = (2, 2/(3π)).
SWISSROLL_MEAN = np.array([2.0, 2.0 / (3.0 * math.pi)])
#: exact per-coordinate std: (E[t²] + 2 noise² - |mean|²) / 2, E[t²] = (a² + ab + b²) / 3.
SWISSROLL_SCALE = math.sqrt(
    ((_A * _A + _A * _B + _B * _B) / 3.0 + 2 * SWISSROLL_NOISE**2 - 4.0 - 4.0 / (9 * math.pi**2)) / 2
)


def make_swissroll(n: int, seed: int) -> np.ndarray:
    """``builtin:swissroll``: ((t cos t, t sin t) + 0.5 ξ - mean) / scale, t ~ U(1.5π, 4.5π); float32 (n, 2)
    (Marsland's swiss roll as in scikit-learn's ``make_swiss_roll``, its (x, z) plane)."""
    out = np.empty((n, 2), dtype=np.float32)
    for start, stop, d in _block_draws("swissroll", n, seed):
        t = d.uniform(_A, _B)
        xi = d.standard_normal(2)
        x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + SWISSROLL_NOISE * xi
        out[start:stop] = (x - SWISSROLL_MEAN) / SWISSROLL_SCALE
    return out


def make_builtin(name: str, n: int, seed: int) -> np.ndarray:
    """Dispatch on the built-in name: uint8 NHWC images or float32 (n, 2) points."""
    if name == "shapes16":
        return make_shapes(16, n, seed)
    if name == "shapes32":
        return make_shapes(32, n, seed)
    if name == "gaussians2d":
        return make_gaussians2d(n, seed)
    if name == "swissroll":
        return make_swissroll(n, seed)
    raise KeyError(name)
