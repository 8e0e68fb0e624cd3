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


# --- the worst case reaches the maximum it reports (issue 14) ---------------------------------------------


def _spectrum_092(n: int) -> list[float]:
    """λ₁ = 1, λ₂ = 0.92 (the ratio at which plain projected ascent falls 0.05–2.5 % short), the rest below."""
    return [1.0, 0.92] + list(np.linspace(0.9, 0.0, n - 2))


def _trs_oracle(lam: torch.Tensor, c: torch.Tensor, rho: float) -> float:
    """max cᵀy + ½ Σ λ_i y_i² over ‖y‖ ≤ ρ in the eigenbasis (λ₁ = max λ > 0), by bisection on μ (float64)."""
    l1 = float(lam.max())
    top = lam == l1
    rest = c[~top] / (l1 - lam[~top])
    if float(c[top].abs().max()) == 0.0 and float(rest.norm()) <= rho:  # the hard case
        y = torch.zeros_like(c)
        y[~top] = rest
        y[torch.nonzero(top)[0]] = math.sqrt(rho ** 2 - float(rest @ rest))
    else:
        lo, hi = l1, l1 + float(c.norm()) / rho
        for _ in range(400):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float((c / (mid - lam)).norm()) > rho else (lo, mid)
        y = c / (hi - lam)
    return float(c @ y + 0.5 * (lam * y * y).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_l2_sharpness_reaches_half_rho2_lambda_max_at_the_default_budget(seed):
    n = 100
    A = spd(n, eigs=_spectrum_092(n), seed=seed)
    obj = quadratic(A, {"w": (n,)}, theta_star={"w": torch.randn(n, generator=torch.Generator().manual_seed(seed),
                                                                 dtype=torch.float64)}, c=0.1)
    res = sharpness(obj, kind="l2", seed=seed)  # the default budget: 3 restarts x 20 steps, rho 0.05
    exact = 0.5 * 0.05 ** 2 * 1.0
    assert res.solver == "krylov"
    assert res.value[0] == pytest.approx(exact, rel=1e-6)
    assert res.value[0] <= exact * (1 + 1e-12)  # a loss found, never above the maximum
    assert res.value[0] <= res.upper_bound[0] and res.upper_bound[0] == pytest.approx(exact, rel=1e-3)
    assert res.residual[0] < 1e-2 and res.hvps[0] == 3 * 20 + 2
    old = sharpness(obj, kind="l2", seed=seed, solver="ascent")  # plain ascent, as before, stops short
    assert old.value[0] < exact * (1 - 1e-5)


def test_adaptive_sharpness_reaches_the_closed_form_at_the_default_budget():
    n = 60
    A = spd(n, eigs=_spectrum_092(n), seed=7)
    star = torch.randn(n, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    obj = quadratic(A, {"w": (n,)}, theta_star={"w": star})
    T = torch.diag(star.abs() + 0.01)
    lam = float(torch.linalg.eigvalsh(T @ A @ T)[-1])
    res = sharpness(obj, kind="adaptive", asam_eta=0.01)
    assert res.value[0] == pytest.approx(0.5 * 0.05 ** 2 * lam, rel=1e-6)


@pytest.mark.parametrize("c1", [1e-6, 0.0], ids=["near-hard", "hard"])
def test_l2_sharpness_in_the_hard_case_at_the_default_budget(c1):
    """The gradient (almost) orthogonal to the top eigenvector: the maximum of gᵀδ + ½δᵀAδ over the ball
    (the trust-region subproblem, an exact oracle) within 1e-6 at the default budget."""
    n, rho = 100, 0.05
    for seed in range(3):
        g = torch.Generator().manual_seed(100 + seed)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        lam = torch.tensor(_spectrum_092(n), dtype=torch.float64)
        A = Q @ torch.diag(lam) @ Q.T
        c = torch.randn(n, generator=g, dtype=torch.float64) * 0.002
        c[0] = c1
        grad = Q @ c

        def fn(p, grad=grad, A=A):
            return grad @ p["w"] + 0.5 * p["w"] @ A @ p["w"]

        from flatkit.objective import Objective

        obj = Objective.from_function(fn, {"w": torch.zeros(n, dtype=torch.float64)})
        best = _trs_oracle(lam, c, rho)
        res = sharpness(obj, kind="l2", eps=rho, seed=seed)
        assert res.value[0] == pytest.approx(best, rel=1e-6)
        assert res.value[0] <= best * (1 + 1e-12) and res.upper_bound[0] >= best


def test_trust_region_subproblem_against_an_oracle():
    from flatkit.analyses.sharpness import trust_region_max

    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        m = 6
        lam = torch.randn(m, generator=g, dtype=torch.float64) * (1.0 if trial % 4 else -1.0).__abs__()
        if trial % 5 == 0:
            lam = -lam.abs()  # concave: the maximum may lie inside
        Q, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
        c = torch.randn(m, generator=g, dtype=torch.float64) * (0.05 if trial % 3 else 2.0)
        if trial % 7 == 0:
            c[int(torch.argmax(lam))] = 0.0  # the hard case when the rest fits inside the ball
        M, b = (Q @ torch.diag(lam) @ Q.T).numpy(), (Q @ c).numpy()
        y, mu, val = trust_region_max(M, b, 1.0)
        assert np.linalg.norm(y) <= 1.0 + 1e-12 and val == pytest.approx(float(b @ y + 0.5 * y @ M @ y), rel=1e-12)
        assert mu >= max(float(lam.max()), 0.0) - 1e-12
        np.testing.assert_allclose(b + M @ y, mu * y, atol=1e-9)  # stationary with the multiplier μ
        # no point of the ball does better (random points and the eigenvectors' ends)
        pts = np.concatenate([np.random.default_rng(trial).normal(size=(4000, m)), Q.T.numpy(), -Q.T.numpy()])
        pts = pts / np.maximum(np.linalg.norm(pts, axis=1, keepdims=True), 1.0)
        vals = pts @ b + 0.5 * np.einsum("ij,jk,ik->i", pts, M, pts)
        assert vals.max() <= val + 1e-12


@pytest.mark.parametrize("seed", range(6))
def test_keskar_lbfgsb_at_least_sign_ascent_and_never_above_the_box_maximum(seed):
    pytest.importorskip("scipy")
    n, eps = 10, 1e-2
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = B @ B.T / n  # dense
    star = {"w": torch.randn(n, generator=g, dtype=torch.float64)}
    obj = quadratic(A, {"w": (n,)}, theta_star=star)
    b = eps * (star["w"].abs() + 1.0)
    brute = max(float(0.5 * (torch.tensor(s, dtype=torch.float64) * b) @ A @ (torch.tensor(s, dtype=torch.float64)
                                                                              * b))
                for s in itertools.product([-1.0, 1.0], repeat=n))
    sign = sharpness(obj, kind="keskar", eps=eps, seed=seed)
    lb = sharpness(obj, kind="keskar", eps=eps, seed=seed, solver="lbfgsb")
    assert sign.solver == "ascent" and lb.solver == "lbfgsb"
    gain = {r.solver: r.loss_max[0] - r.loss0[0] for r in (sign, lb)}
    assert gain["lbfgsb"] >= gain["ascent"] - 1e-15
    assert gain["lbfgsb"] <= brute * (1 + 1e-12)


@pytest.mark.parametrize("kw, match", [(dict(kind="keskar", solver="krylov"), "^solver krylov"),
                                       (dict(kind="l2", solver="lbfgsb"), "^solver lbfgsb"),
                                       (dict(kind="average", solver="ascent"), "^solver ascent")])
def test_solver_must_fit_the_kind(kw, match):
    with pytest.raises(UsageError, match=match):
        sharpness(quadratic(spd(5), SHAPES), **kw)
