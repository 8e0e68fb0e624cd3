"""Fréchet distance against closed forms, statistics files, KID against a direct double sum."""

from __future__ import annotations

import numpy as np
import pytest

from flatkit.errors import UsageError
from flatkit.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    load_statistics,
    save_statistics,
    sqrtm_psd,
)
from flatkit.metrics.kid import kernel_inception_distance, polynomial_mmd2_unbiased


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_sqrtm_psd_squares_back() -> None:
    s = _spd(6, np.random.default_rng(0))
    r = sqrtm_psd(s)
    np.testing.assert_allclose(r @ r, s, atol=1e-10)
    np.testing.assert_allclose(r, r.T, atol=1e-12)


def test_identical_gaussians_give_zero() -> None:
    rng = np.random.default_rng(1)
    s = _spd(8, rng)
    mu = rng.standard_normal(8)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_equal_covariance_gives_mean_distance() -> None:
    rng = np.random.default_rng(2)
    s = _spd(5, rng)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    assert frechet_distance(m1, s, m2, s) == pytest.approx(float(((m1 - m2) ** 2).sum()), rel=1e-9, abs=1e-9)


def test_diagonal_covariances_sum_formula() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 3, 7), rng.uniform(0.1, 3, 7)
    m1, m2 = rng.standard_normal(7), rng.standard_normal(7)
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(want, rel=1e-10)


def test_general_against_nonsymmetric_eigenvalues() -> None:
    """Independent route: tr (Σ₁Σ₂)^{1/2} = Σ √λ(Σ₁Σ₂) with a general eigen-solver."""
    rng = np.random.default_rng(4)
    s1, s2 = _spd(6, rng), _spd(6, rng)
    m1, m2 = rng.standard_normal(6), rng.standard_normal(6)
    lam = np.linalg.eigvals(s1 @ s2)
    want = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam.real.clip(0)).sum()
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-8)


def test_statistics_roundtrip_and_pytorch_fid_layout(tmp_path) -> None:
    rng = np.random.default_rng(5)
    f = rng.standard_normal((50, 4))
    mu, sigma = feature_statistics(f)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False))
    save_statistics(tmp_path / "ours.npz", mu, sigma, f)
    m2, s2, f2 = load_statistics(tmp_path / "ours.npz")
    np.testing.assert_array_equal(m2, mu)
    assert f2 is not None and f2.shape == f.shape
    np.savez(tmp_path / "theirs.npz", mu=mu, sigma=sigma)  # pytorch-fid writes exactly these two keys
    m3, s3, f3 = load_statistics(tmp_path / "theirs.npz")
    assert f3 is None and np.array_equal(s3, sigma)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(UsageError, match="bad.npz"):
        load_statistics(tmp_path / "bad.npz")


def test_kid_matches_direct_double_sum() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((9, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(12) for j in range(9)) / (12 * 9)
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # one subset holding everything of equal-size sets = the plain estimator
    kid, std = kernel_inception_distance(x[:9], y, n_subsets=3, subset_size=9)
    assert kid == pytest.approx(polynomial_mmd2_unbiased(x[:9], y), rel=1e-10) and std == pytest.approx(
        0, abs=1e-12
    )


def test_kid_near_zero_for_same_distribution() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    kid, _ = kernel_inception_distance(x, y, n_subsets=5, subset_size=200)
    far, _ = kernel_inception_distance(x, y + 1.0, n_subsets=5, subset_size=200)
    assert abs(kid) < 0.05 < far
