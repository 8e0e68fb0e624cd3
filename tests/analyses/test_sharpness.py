"""Sharpness on quadratics against closed forms at the minimum, and worst-case perturbation directions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from flatkit.analyses.perturb import perturb
from flatkit.analyses.sharpness import sharpness
from flatkit.errors import UsageError
from tests.analyses.landscape._quadratic import quadratic, spd

SHAPES = {"w": (2, 2), "b": (1,)}


def _star(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(2, 2, generator=g, dtype=torch.float64), "b": torch.randn(1, generator=g,
                                                                                       dtype=torch.float64)}


def test_keskar_equals_box_vertex_maximum():
    A = spd(5, eigs=[4.0, 2.0, 1.0, 0.5, 0.25], seed=1)
    star = _star()
    obj = quadratic(A, SHAPES, theta_star=star, c=0.3, n_batches=2)
    eps = 1e-2
    b = eps * (torch.cat([star["w"].reshape(-1), star["b"]]).abs() + 1.0)
    best = max(float(0.5 * (torch.tensor(s, dtype=torch.float64) * b) @ A @ (torch.tensor(s, dtype=torch.float64)
                                                                              * b))
               for s in itertools.product([-1.0, 1.0], repeat=5))
    res = sharpness(obj, kind="keskar", eps=eps, restarts=8, ascent_steps=10, seed=0)
    assert res.loss0[0] == pytest.approx(0.3, abs=1e-15)
    assert res.value[0] == pytest.approx(best / 1.3 * 100.0, rel=1e-9)


def test_l2_sharpness_is_half_rho2_lambda_max():
    A = spd(5, eigs=[5.0, 2.0, 1.0, 0.5, 0.1], seed=2)
    obj = quadratic(A, SHAPES, theta_star=_star(1))
    res = sharpness(obj, kind="l2", eps=0.1, restarts=2, ascent_steps=60)
    assert res.value[0] == pytest.approx(0.5 * 0.1 ** 2 * 5.0, rel=1e-8)


def test_adaptive_sharpness_is_half_rho2_lambda_max_TAT():
    A = spd(5, eigs=[5.0, 2.0, 1.0, 0.5, 0.1], seed=3)
    star = _star(2)
    obj = quadratic(A, SHAPES, theta_star=star)
    T = torch.diag(torch.cat([star["w"].reshape(-1), star["b"]]).abs() + 0.01)
    lam = float(torch.linalg.eigvalsh(T @ A @ T)[-1])
    res = sharpness(obj, kind="adaptive", eps=0.2, asam_eta=0.01, restarts=2, ascent_steps=200)
    assert res.value[0] == pytest.approx(0.5 * 0.2 ** 2 * lam, rel=1e-6)


def test_average_sharpness_converges_to_half_sigma2_trace():
    A = spd(5, eigs=[5.0, 2.0, 1.0, 0.5, 0.1], seed=4)
    obj = quadratic(A, SHAPES)
    exact = 0.5 * 0.1 ** 2 * float(torch.trace(A))
    errs = []
    for n in (50, 800):
        res = sharpness(obj, kind="average", eps=0.1, samples=n, seed=0)
        assert res.ci_low[0] < res.value[0] < res.ci_high[0]
        errs.append(abs(res.value[0] - exact))
        assert abs(res.value[0] - exact) < 4 * res.std_err[0]  # within the reported uncertainty
    assert res.std_err[0] < 0.1 * exact  # the budget buys precision


@pytest.mark.parametrize("kw, match", [(dict(kind="max"), "^kind"), (dict(eps=0.0), "^eps"),
                                       (dict(eps=-1.0), "^eps"), (dict(samples=1, kind="average"), "^samples")])
def test_bad_sharpness_input(kw, match):
    with pytest.raises(UsageError, match=match):
        sharpness(quadratic(spd(5), SHAPES), **kw)


def test_worst_case_direction_finds_top_curvature():
    A = spd(5, eigs=[6.0, 2.0, 1.0, 0.5, 0.1], seed=5)
    obj = quadratic(A, SHAPES, theta_star=_star(3))
    radii = [0.0, 0.05, 0.1]
    res = perturb(obj, radii=radii, n_directions=16, norm="unit", worst_steps=40, seed=0)
    np.testing.assert_allclose(res.worst[0], 0.5 * np.square(radii) * 6.0, rtol=1e-8, atol=1e-15)
    # random unit directions: ½ r² dᵀAd ≤ worst case; mean over K approaches ½ r² tr(A)/N
    assert np.all(res.deltas[0] <= res.worst[0][None, :] + 1e-15)
    assert res.mean[0, 0] == 0.0 and res.mean[0, 2] > 0
    assert res.mean[0, 2] == pytest.approx(0.5 * 0.01 * float(torch.trace(A)) / 5, rel=0.5)


def test_perturb_radius_conventions_and_bad_input():
    A = spd(5, seed=6)
    obj = quadratic(A, SHAPES, theta_star=_star(4))
    rn = perturb(obj, radii=[0.0, 0.1], n_directions=2, norm="model", worst=False)
    norm_theta = math.sqrt(sum(float((v ** 2).sum()) for v in _star(4).values()))
    # ΔL = ½ (r‖θ‖)² uᵀAu ≤ ½ (r‖θ‖)² λ_max
    assert np.all(rn.deltas[0, :, 1] <= 0.5 * (0.1 * norm_theta) ** 2 * 5.0 + 1e-12)
    assert rn.worst.shape == (1, 0)
    with pytest.raises(UsageError, match="^norm"):
        perturb(obj, norm="sideways")
    with pytest.raises(UsageError, match="^radii"):
        perturb(obj, radii=[-0.1])
