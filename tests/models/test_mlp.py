"""The 2-D MLP denoiser."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, hessian

from flatkit.errors import UsageError
from flatkit.models import MLPDenoiser


def test_shapes_and_timestep_forms():
    model = MLPDenoiser()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    out = model(x, torch.arange(6))
    assert out.shape == (6, 2) and out.dtype == torch.float32
    assert torch.equal(model(x, 3), model(x, torch.full((6,), 3)))
    assert torch.equal(model(x, torch.full((6,), 3.0)), model(x, torch.full((6,), 3)))
    assert MLPDenoiser(learn_sigma=True)(x, torch.arange(6)).shape == (6, 4)
    small = MLPDenoiser(data_dim=3, hidden=16, depth=1)
    assert small(torch.zeros(2, 3), torch.tensor([0, 1])).shape == (2, 3)


def test_time_conditioning_matters():
    model = MLPDenoiser(hidden=32, depth=2)
    x = torch.zeros(2, 2)
    assert not torch.allclose(model(x, torch.tensor([0, 0])), model(x, torch.tensor([500, 500])))


def test_float64_hessian_through_functional_call():
    """A tiny MLP's full Hessian by torch.func is symmetric and agrees with a gradient finite difference."""
    model = MLPDenoiser(hidden=4, depth=1).double()
    g = torch.Generator().manual_seed(1)
    params = {k: torch.randn(p.shape, generator=g, dtype=torch.float64) for k, p in model.named_parameters()}
    names = list(params)
    sizes = [params[k].numel() for k in names]
    x = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (8,), generator=g)

    def loss_flat(theta: torch.Tensor) -> torch.Tensor:
        chunks = theta.split(sizes)
        parts = {k: c.reshape(params[k].shape) for k, c in zip(names, chunks, strict=True)}
        return (functional_call(model, parts, (x, t)) ** 2).mean()

    theta = torch.cat([params[k].flatten() for k in names])
    H = hessian(loss_flat)(theta)
    assert torch.allclose(H, H.T, atol=1e-10)
    v = torch.randn(theta.shape, generator=g, dtype=torch.float64)
    h = 1e-5
    grad = torch.func.grad(loss_flat)
    fd = (grad(theta + h * v) - grad(theta - h * v)) / (2 * h)
    assert torch.allclose(H @ v, fd, rtol=1e-6, atol=1e-8)


def test_bad_sizes_raise():
    with pytest.raises(UsageError, match="mlp"):
        MLPDenoiser(data_dim=0)
