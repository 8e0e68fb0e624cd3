"""Weight-free distances: exact 1-D W2, sliced Wasserstein against the Gaussian closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatkit.metrics.distances import (
    pixel_frechet_distance,
    random_directions,
    sliced_wasserstein,
    sliced_wasserstein_gaussian,
    wasserstein2_1d,
)


def test_w2_1d_equal_sizes_is_sorted_matching() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(30), rng.standard_normal(30) * 2 + 1
    want = np.mean((np.sort(a) - np.sort(b)) ** 2)
    assert wasserstein2_1d(a[None], b[None])[0] == pytest.approx(want, rel=1e-12)


def test_w2_1d_unequal_sizes_by_replication() -> None:
    """3 points vs 6 points = replicate the 3 twice and match sorted."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(3), rng.standard_normal(6)
    want = np.mean((np.sort(np.repeat(a, 2)) - np.sort(b)) ** 2)
    assert wasserstein2_1d(a[None], b[None])[0] == pytest.approx(want, rel=1e-12)


def test_sliced_wasserstein_gaussian_closed_form() -> None:
    rng = np.random.default_rng(2)
    d = 3
    a = rng.standard_normal((d, d))
    s1 = a @ a.T + 0.2 * np.eye(d)
    s2 = np.diag([0.5, 2.0, 1.0])
    m1, m2 = np.zeros(d), np.array([1.0, -0.5, 0.3])
    n = 40000
    x = rng.multivariate_normal(m1, s1, n)
    y = rng.multivariate_normal(m2, s2, n)
    th = random_directions(d, 64, torch.Generator().manual_seed(0))
    want = sliced_wasserstein_gaussian(m1, s1, m2, s2, th)
    got = sliced_wasserstein(x, y, thetas=th)
    assert got == pytest.approx(want, rel=0.03)
    # identical distributions: the estimate shrinks towards 0
    same = sliced_wasserstein(x, rng.multivariate_normal(m1, s1, n), thetas=th)
    assert same < 0.05 * want


def test_pixel_frechet_zero_for_same_set_and_shift() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 16, 16, generator=g, dtype=torch.float64)
    assert pixel_frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # a constant shift c of every pixel moves every pooled pixel by c: distance = D * c²
    d = 3 * 8 * 8
    assert pixel_frechet_distance(x + 0.5, x) == pytest.approx(
        d * 0.25, rel=1e-6
    )  # rank-deficient Σ: √ of ~0 eigenvalues
