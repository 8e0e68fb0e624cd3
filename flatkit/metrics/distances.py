"""Weight-free distribution distances between two sets of samples (no detector network; never called FID).

- Sliced Wasserstein-2 (Rabin et al. 2011; Bonneel et al. 2015) on flattened pixels:
  SW₂²(P, Q) = E_{θ∼U(S^{d−1})} W₂²(θ♯P, θ♯Q), estimated with L random directions θ drawn from an explicit
  generator. Each 1-D W₂² between empirical measures is computed exactly from their quantile functions,
  W₂²(a, b) = ∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du (sets of different sizes allowed). For Gaussians the
  projections are
  Gaussian and W₂²(N(m₁, s₁²), N(m₂, s₂²)) = (m₁ − m₂)² + (s₁ − s₂)², which gives the closed form
  :func:`sliced_wasserstein_gaussian` the tests use.
- Fréchet distance on average-pooled pixels ("FD-pix"): the Fréchet distance
(:mod:`flatkit.metrics.frechet`) of
  Gaussians fitted to images pooled to ``size × size``. Biased at small N like FID; compare equal N only.
"""

from __future__ import annotations

import numpy as np
import torch

from flatkit.errors import UsageError
from flatkit.metrics.frechet import feature_statistics, frechet_distance

SW_NAME = "sliced Wasserstein-2 on pixels (weight-free, not FID)"
FD_PIX_NAME = "Fréchet distance on {s}x{s} average-pooled pixels (weight-free, not FID)"


def _flat(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1:
        raise UsageError(f"samples: expected a batch (N, ...), got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def wasserstein2_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact W₂² between empirical 1-D measures, row by row: ``a`` (P, n), ``b`` (P, m) → (P,).

    The quantile functions are step functions with breaks at i/n and j/m; on each piece between consecutive
    breaks both are constant, so the integral is a finite sum over the merged breaks.
    """
    a = np.sort(np.atleast_2d(np.asarray(a, dtype=np.float64)), axis=1)
    b = np.sort(np.atleast_2d(np.asarray(b, dtype=np.float64)), axis=1)
    n, m = a.shape[1], b.shape[1]
    u = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    w = np.diff(np.concatenate([[0.0], u]))
    mid = u - w / 2
    ia = np.minimum(np.floor(mid * n).astype(np.int64), n - 1)
    ib = np.minimum(np.floor(mid * m).astype(np.int64), m - 1)
    return ((a[:, ia] - b[:, ib]) ** 2 * w).sum(axis=1)


def random_directions(d: int, n_projections: int, generator: torch.Generator) -> np.ndarray:
    """L directions uniform on the unit sphere S^{d−1} (normalised Gaussians), float64 (L, d)."""
    if n_projections < 1:
        raise UsageError(f"projections: must be at least 1, got {n_projections}")
    th = torch.randn(n_projections, d, generator=generator, dtype=torch.float64).numpy()
    return th / np.linalg.norm(th, axis=1, keepdims=True)


def sliced_wasserstein(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    n_projections: int = 256,
    seed: int = 0,
    thetas: np.ndarray | None = None,
) -> float:
    """SW₂(P̂_x, P̂_y) = sqrt(mean_θ W₂²(θᵀx, θᵀy)) over flattened samples (float64)."""
    xf, yf = _flat(x), _flat(y)
    if xf.shape[1] != yf.shape[1]:
        raise UsageError(f"samples: dimensions differ ({xf.shape[1]} vs {yf.shape[1]})")
    if thetas is None:
        g = torch.Generator().manual_seed(int(seed))
        thetas = random_directions(xf.shape[1], n_projections, g)
    return float(np.sqrt(wasserstein2_1d(thetas @ xf.T, thetas @ yf.T).mean()))


def sliced_wasserstein_gaussian(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, thetas: np.ndarray
) -> float:
    """Closed form of SW₂ between N(μ₁, Σ₁) and N(μ₂, Σ₂) over the given directions θ:
    sqrt(mean_θ [(θᵀ(μ₁ − μ₂))² + (√(θᵀΣ₁θ) − √(θᵀΣ₂θ))²])."""
    th = np.asarray(thetas, dtype=np.float64)
    dm = th @ (np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64))
    s1 = np.sqrt(np.einsum("pi,ij,pj->p", th, np.asarray(sigma1, dtype=np.float64), th))
    s2 = np.sqrt(np.einsum("pi,ij,pj->p", th, np.asarray(sigma2, dtype=np.float64), th))
    return float(np.sqrt(np.mean(dm**2 + (s1 - s2) ** 2)))


def _pool(x: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    t = torch.as_tensor(
        np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x), dtype=torch.float64
    )
    if t.ndim == 4 and t.shape[-1] > size:
        t = torch.nn.functional.adaptive_avg_pool2d(t, size)
    return t.reshape(t.shape[0], -1).numpy()


def pixel_frechet_distance(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, size: int = 8
) -> float:
    """Fréchet distance between Gaussians fitted to NCHW images pooled to ``size`` × ``size`` (or to flat
    points)."""
    xa, ya = _pool(x, size), _pool(y, size)
    if xa.shape[0] < 2 or ya.shape[0] < 2:
        raise UsageError("samples: the pixel Fréchet distance needs at least 2 samples in each set")
    mu1, s1 = feature_statistics(xa)
    mu2, s2 = feature_statistics(ya)
    return frechet_distance(mu1, s1, mu2, s2)


def weight_free_distances(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    n_projections: int = 256,
    seed: int = 0,
    pool: int = 8,
) -> dict[str, float]:
    """Both weight-free distances of ``x`` to ``y`` (NCHW images in [-1, 1], or (N, d) points).

    Keys: ``sw2`` (sliced Wasserstein-2 on pixels) and ``fd_pix`` (Fréchet distance on pooled pixels).
    """
    return {
        "sw2": sliced_wasserstein(x, y, n_projections=n_projections, seed=seed),
        "fd_pix": pixel_frechet_distance(x, y, size=pool),
    }


def distance_names(pool: int = 8) -> dict[str, str]:
    """What each key of :func:`weight_free_distances` is, for result files and figure labels."""
    return {"sw2": SW_NAME, "fd_pix": FD_PIX_NAME.format(s=pool)}
