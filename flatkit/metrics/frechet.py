"""Fréchet distance between Gaussians, in float64, without scipy.

d²(N(μ₁, Σ₁), N(μ₂, Σ₂)) = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})
(Dowson & Landau 1982; FID, Heusel et al. 2017, eq. 6). The matrix square roots are taken through
symmetric eigendecompositions (``numpy.linalg.eigh``): Σ₁^{1/2} = V diag(√λ) Vᵀ, and
tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2} = Σ √λᵢ(M) with M = Σ₁^{1/2} Σ₂ Σ₁^{1/2} symmetric positive semi-definite,
so no non-symmetric solver is involved.
Tiny negative eigenvalues from rounding are clipped at zero.

Statistics files follow pytorch-fid: an ``.npz`` with ``mu`` (D,) and ``sigma`` (D, D); the covariance is the
unbiased one (``numpy.cov(features, rowvar=False)``), as pytorch-fid and StyleGAN's metrics compute it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flatkit.errors import UsageError


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root V diag(√max(λ, 0)) Vᵀ of a symmetric matrix (float64)."""
    a = np.asarray(a, dtype=np.float64)
    a = 0.5 * (a + a.T)
    lam, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2} (= tr (Σ₁Σ₂)^{1/2}) by two symmetric eigen-decompositions, float64."""
    s1 = sqrtm_psd(sigma1)
    m = s1 @ np.asarray(sigma2, dtype=np.float64) @ s1
    m = 0.5 * (m + m.T)
    lam = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def _check_stats(mu: np.ndarray, sigma: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UsageError(f"{what}: mu must be (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), float64 (Heusel et al. eq.
    6)."""
    mu1, sigma1 = _check_stats(mu1, sigma1, "statistics 1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "statistics 2")
    if mu1.shape != mu2.shape:
        raise UsageError(f"statistics: feature dimensions differ ({mu1.shape[0]} vs {mu2.shape[0]})")
    if not all(np.isfinite(a).all() for a in (mu1, sigma1, mu2, sigma2)):
        return float("nan")  # non-finite samples (NaN weights): recorded as null
    diff = mu1 - mu2
    d2 = (
        float(diff @ diff)
        + float(np.trace(sigma1))
        + float(np.trace(sigma2))
        - 2.0 * trace_sqrt_product(sigma1, sigma2)
    )
    return max(d2, 0.0)  # rounding can push an exact zero a hair below


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """μ and the unbiased covariance Σ of (N, D) features, in float64 (pytorch-fid convention)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise UsageError(f"features: need an (N, D) array with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def save_statistics(
    path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, features: np.ndarray | None = None
) -> None:
    """Write ``mu`` / ``sigma`` (and optionally ``features``, for KID) atomically as a pytorch-fid style
    npz."""
    from flatkit.results import atomic_savez

    arrays = {"mu": np.asarray(mu, dtype=np.float64), "sigma": np.asarray(sigma, dtype=np.float64)}
    if features is not None:
        arrays["features"] = np.asarray(features, dtype=np.float32)
    atomic_savez(path, **arrays)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read ``mu``, ``sigma`` (and ``features`` when present) from an npz (ours or pytorch-fid's)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "mu" not in z or "sigma" not in z:
                raise UsageError(
                    f"{path}: a statistics file needs arrays 'mu' and 'sigma' (has {', '.join(z.files)})"
                )
            mu, sigma = z["mu"], z["sigma"]
            feats = z["features"] if "features" in z else None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable npz ({e})") from None
    mu, sigma = _check_stats(mu, sigma, str(path))
    return mu, sigma, feats
