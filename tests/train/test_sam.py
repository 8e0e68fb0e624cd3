"""SAM / ASAM on an analytic quadratic: one step lands exactly where the formulas say (float64)."""

from __future__ import annotations

import torch

from flatkit.train.sam import SAM, T_w, sam_perturbation


def _quadratic(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = 7
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = m @ m.T + torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    w0 = torch.randn(n, generator=g, dtype=torch.float64)
    return A, b, w0


def _loss(A, b, w):
    # L(w) = 1/2 w^T A w - b^T w, grad = A w - b
    return 0.5 * w @ A @ w - b @ w


def _split(w):
    # two parameter tensors, so the norm must be taken over all parameters jointly
    return [torch.nn.Parameter(w[:3].clone()), torch.nn.Parameter(w[3:].clone())]


def _one_step(A, b, w0, rho, lr, adaptive, eta=0.01):
    params = _split(w0)
    opt = torch.optim.SGD(params, lr=lr)
    sam = SAM(params, adaptive=adaptive, eta=eta)
    _loss(A, b, torch.cat(params)).backward()
    e_norm = sam.perturb(rho)
    opt.zero_grad()
    _loss(A, b, torch.cat(params)).backward()
    sam.restore()
    assert torch.equal(torch.cat([p.detach() for p in params]), w0)  # restored bit for bit
    opt.step()
    return torch.cat([p.detach() for p in params]), e_norm


def test_sam_step_matches_formula():
    A, b, w0 = _quadratic()
    rho, lr = 0.3, 0.05
    g = A @ w0 - b
    e = rho * g / g.norm()  # Foret et al. eq. 2
    expected = w0 - lr * (A @ (w0 + e) - b)
    w1, e_norm = _one_step(A, b, w0, rho, lr, adaptive=False)
    torch.testing.assert_close(w1, expected, rtol=0, atol=1e-13)
    assert abs(e_norm - rho) < 1e-12


def test_asam_step_matches_formula():
    A, b, w0 = _quadratic(1)
    rho, lr, eta = 0.5, 0.02, 0.01
    g = A @ w0 - b
    T = w0.abs() + eta  # T_w = |w| + eta on all parameters
    e = rho * T * T * g / (T * g).norm()  # Kwon et al. eq. 12
    expected = w0 - lr * (A @ (w0 + e) - b)
    w1, e_norm = _one_step(A, b, w0, rho, lr, adaptive=True, eta=eta)
    torch.testing.assert_close(w1, expected, rtol=0, atol=1e-13)
    assert abs(e_norm - float(e.norm())) < 1e-12


def test_rho_zero_is_plain_gradient_step():
    A, b, w0 = _quadratic(2)
    w1, e_norm = _one_step(A, b, w0, 0.0, 0.1, adaptive=False)
    torch.testing.assert_close(w1, w0 - 0.1 * (A @ w0 - b), rtol=0, atol=1e-14)
    assert e_norm == 0.0


def test_perturbation_uses_unscaled_gradient():
    A, b, w0 = _quadratic(3)
    g = [A @ w0 - b]
    e1, n1 = sam_perturbation([w0], g, 0.2)
    e2, n2 = sam_perturbation([w0], [1024.0 * g[0]], 0.2, grad_scale=1024.0)
    torch.testing.assert_close(e1[0], e2[0], rtol=0, atol=1e-15)
    assert abs(n1 - n2) < 1e-15


def test_zero_and_nonfinite_gradients_give_no_perturbation():
    w = torch.ones(4, dtype=torch.float64)
    e, n = sam_perturbation([w], [torch.zeros(4, dtype=torch.float64)], 0.5)
    assert n == 0.0 and torch.equal(e[0], torch.zeros(4, dtype=torch.float64))
    e, n = sam_perturbation([w], [torch.tensor([1.0, float("inf"), 0, 0], dtype=torch.float64)], 0.5)
    assert n == 0.0 and torch.equal(e[0], torch.zeros(4, dtype=torch.float64))
    e, n = sam_perturbation([w, w], [None, torch.ones(4, dtype=torch.float64)], 1.0)
    assert torch.equal(e[0], torch.zeros(4, dtype=torch.float64)) and abs(n - 1.0) < 1e-15


def test_T_w():
    w = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(T_w(w, 0.01), torch.tensor([2.01, 0.01, 3.01], dtype=torch.float64))
