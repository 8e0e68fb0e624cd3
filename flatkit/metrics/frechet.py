"""Fréchet distance between Gaussians, in float64, without scipy.

d²(N(μ₁, Σ₁), N(μ₂, Σ₂)) = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})
(Dowson & Landau 1982; FID, Heusel et al. 2017, eq. 6). The matrix square roots are taken through
symmetric eigendecompositions (``numpy.linalg.eigh``): Σ₁^{1/2} = V diag(√λ) Vᵀ, and
tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2} = Σ √λᵢ(M) with M = Σ₁^{1/2} Σ₂ Σ₁^{1/2} symmetric positive semi-definite,
so no non-symmetric solver is involved.
Tiny negative eigenvalues from rounding are clipped at zero.

Statistics files (:func:`load_statistics`, :func:`save_statistics`), as the FID libraries write them; the
covariance is always the unbiased one (``numpy.cov(features, rowvar=False)``), as they all compute it:

- ``.npz`` with ``mu`` (D,) and ``sigma`` (D, D): pytorch-fid's ``--save-stats`` file, clean-fid's reference
  statistics (``{name}_{mode}_{split}_{res}.npz``) and the ``mu`` / ``sigma`` of ADM's reference batches; flatkit
  adds ``features`` (N, D) when it has them, so that KID can be computed;
- ``.npz`` with ``feats`` only: clean-fid's KID reference file (``..._kid.npz``), statistics computed from them;
- ``.pt``: torch-fidelity's cache entry (``fidelity_cache/*-stat-fid-2048.pt``), a ``torch.save`` dict of numpy
  ``mu`` / ``sigma``, read with ``weights_only=True`` (numpy arrays allowed, nothing else).
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


STATS_FORMATS = ("npz", "torch-fidelity")


def statistics_format(path: str | os.PathLike) -> str:
    """``torch-fidelity`` for a ``.pt`` file, else ``npz`` (pytorch-fid / clean-fid / ADM / flatkit)."""
    return "torch-fidelity" if Path(path).suffix == ".pt" else "npz"


def save_statistics(
    path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, features: np.ndarray | None = None
) -> None:
    """Write ``mu`` / ``sigma`` atomically in the format the suffix names: ``.pt`` as torch-fidelity caches them
    (a ``torch.save`` dict of numpy arrays), anything else as a pytorch-fid / clean-fid npz (plus ``features``,
    for KID, when given)."""
    from flatkit.results import atomic_savez

    mu, sigma = _check_stats(mu, sigma, str(path))
    if statistics_format(path) == "torch-fidelity":
        from flatkit.checkpoint import atomic_torch_save

        # torch-fidelity's own dtypes (float32 features: mu float32, np.cov float64); its metric asserts they match
        atomic_torch_save({"mu": mu.astype(np.float32), "sigma": sigma}, path)
        return
    arrays = {"mu": mu, "sigma": sigma}
    if features is not None:
        arrays["features"] = np.asarray(features, dtype=np.float32)
    atomic_savez(path, **arrays)


def _numpy_safe_globals() -> list:
    """What unpickling plain numpy arrays needs under ``weights_only=True`` (numpy 1 and 2 spellings)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [_reconstruct, np.ndarray, np.dtype,
            *{type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int64, np.int32)}]


def _load_torch_fidelity(p: Path, path: str) -> tuple[np.ndarray, np.ndarray, None]:
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UsageError(f"{path}: not a torch-fidelity statistics file (a torch.save dict of numpy mu / sigma; "
                         f"{first})") from None
    if not isinstance(obj, dict) or "mu" not in obj or "sigma" not in obj:
        keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise UsageError(f"{path}: a statistics file needs 'mu' and 'sigma' (has {keys})")
    mu, sigma = (np.asarray(obj[k].cpu().numpy() if hasattr(obj[k], "cpu") else obj[k]) for k in ("mu", "sigma"))
    return mu, sigma, None


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``mu``, ``sigma`` and the features when the file has them, from any format of the module docstring."""
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such file")
    if statistics_format(p) == "torch-fidelity":
        mu, sigma, feats = _load_torch_fidelity(p, str(path))
    else:
        try:
            with np.load(p, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise UsageError(f"{path}: expected an .npz of mu / sigma")
                feats = z["features"] if "features" in z.files else z["feats"] if "feats" in z.files else None
                if "mu" in z.files and "sigma" in z.files:
                    mu, sigma = z["mu"], z["sigma"]
                elif feats is not None:  # clean-fid's KID file: features only
                    mu, sigma = feature_statistics(feats)
                else:
                    raise UsageError(f"{path}: a statistics file needs arrays 'mu' and 'sigma' (or 'feats'; has "
                                     f"{', '.join(z.files) or 'none'})")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise UsageError(f"{path}: not a readable npz ({e})") from None
    mu, sigma = _check_stats(mu, sigma, str(path))
    if feats is not None:
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[1] != mu.shape[0]:
            raise UsageError(f"{path}: features of shape {feats.shape} do not match mu of dimension {mu.shape[0]}")
    return mu, sigma, feats
