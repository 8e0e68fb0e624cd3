"""DDPM / DDIM samplers on 1-D Gaussian data with the analytically optimal eps-predictor.

Data x_0 ~ N(m, s^2) gives x_t ~ N(sqrt(abar_t) m, abar_t s^2 + 1 - abar_t) and the optimal (MMSE) noise
prediction eps*(x_t, t) = E[eps | x_t] = sqrt(1 - abar_t) (x_t - sqrt(abar_t) m) / (abar_t s^2 + 1 - abar_t).
Every step is then affine in x_t plus Gaussian noise, so the law of the chain's output is Gaussian with
moments given by an independent float64 recursion (Ho et al. eq. 11 for DDPM; Song et al. eq. 12 for DDIM).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatkit.diffusion import (
    GaussianDiffusion,
    ddim_sample,
    ddpm_sample,
    gaussian_noise,
    get_named_beta_schedule,
)
from flatkit.errors import UsageError

M, S = 0.3, 0.5
N = 20_000
DT = torch.float64


def optimal_eps(base: GaussianDiffusion):
    abar = torch.from_numpy(base.alphas_cumprod)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # t: ORIGINAL timesteps
        a = abar[t].reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return (1 - a).sqrt() * (x - a.sqrt() * M) / (a * S**2 + 1 - a)

    return model


def chain_moments(d: GaussianDiffusion, kind: str) -> tuple[float, float]:
    """Mean and std of the sampler output from x_T ~ N(0, 1), by propagating an affine-Gaussian recursion."""
    mu, var = 0.0, 1.0
    for i in range(d.num_timesteps - 1, -1, -1):
        ab, ab_prev, beta = d.alphas_cumprod[i], d.alphas_cumprod_prev[i], d.betas[i]
        k = math.sqrt(1 - ab) / (ab * S**2 + 1 - ab)  # eps*(x) = k (x - sqrt(ab) m)
        if kind == "ddpm":  # Ho et al. eq. 11: mu = (x - beta / sqrt(1 - ab) eps) / sqrt(alpha)
            a = (1 - beta / math.sqrt(1 - ab) * k) / math.sqrt(1 - beta)
            b = beta / math.sqrt(1 - ab) * k * math.sqrt(ab) * M / math.sqrt(1 - beta)
            small = beta * (1 - ab_prev) / (1 - ab)
            sig2 = 0.0 if i == 0 else (small if d.model_var_type == "fixed_small" else beta)
        else:  # DDIM eta = 0: x' = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev) eps
            c = math.sqrt(1 - ab_prev) - math.sqrt(ab_prev) * math.sqrt(1 - ab) / math.sqrt(ab)
            a, b, sig2 = math.sqrt(ab_prev) / math.sqrt(ab) + c * k, -c * k * math.sqrt(ab) * M, 0.0
        mu, var = a * mu + b, a * a * var + sig2
    return mu, math.sqrt(var)


def x_T(seed: int = 0, n: int = N) -> tuple[torch.Tensor, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, generator=g, dtype=DT), g


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_samples_gaussian_data(schedule: str, var_type: str) -> None:
    base = GaussianDiffusion(get_named_beta_schedule(schedule, 1000), model_var_type=var_type)
    d = base.respace("50")
    xT, g = x_T()
    x0 = ddpm_sample(d, optimal_eps(base), xT, g, clip_denoised=False)
    mu, sd = chain_moments(d, "ddpm")
    # the sampler's output law, to Monte Carlo error
    assert abs(x0.mean().item() - mu) < 5 * sd / math.sqrt(N)
    assert abs(x0.std().item() - sd) < 5 * sd / math.sqrt(2 * N)
    # and the data law, to the discretisation error of 50 steps
    assert abs(x0.mean().item() - M) < 0.02
    assert abs(x0.std().item() / S - 1) < 0.15


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_samples_gaussian_data(schedule: str) -> None:
    base = GaussianDiffusion(get_named_beta_schedule(schedule, 1000))
    d = base.respace("ddim50")
    xT, _ = x_T(1)
    x0 = ddim_sample(d, optimal_eps(base), xT, clip_denoised=False)
    mu, sd = chain_moments(d, "ddim")
    # eta = 0 is deterministic and affine here: x_0 = mu + sd * x_T exactly
    torch.testing.assert_close(x0, mu + sd * xT, rtol=1e-9, atol=1e-9)
    assert abs(x0.mean().item() - M) < 0.02
    assert abs(x0.std().item() / S - 1) < 0.08


def test_ddim_eta1_is_ddpm_with_posterior_variance() -> None:
    """Song et al. 2021, eq. 16: eta = 1 gives sigma_t^2 = beta~_t, the DDPM ancestral sampler."""
    base = GaussianDiffusion(get_named_beta_schedule("linear", 1000), model_var_type="fixed_small")
    d = base.respace("20")
    xT, _ = x_T(2, 64)
    a = ddim_sample(d, optimal_eps(base), xT, torch.Generator().manual_seed(5), eta=1.0, clip_denoised=False)
    b = ddpm_sample(d, optimal_eps(base), xT, torch.Generator().manual_seed(5), clip_denoised=False)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_per_sample_generators_make_samples_batch_independent() -> None:
    base = GaussianDiffusion(get_named_beta_schedule("linear", 1000))
    d = base.respace("10")
    model = optimal_eps(base)

    def gens(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    xT4 = gaussian_noise((4, 3), gens([0, 1, 2, 3]), "cpu", DT)
    xT2 = gaussian_noise((2, 3), gens([2, 3]), "cpu", DT)
    torch.testing.assert_close(xT4[2:], xT2, rtol=0, atol=0)
    big = ddpm_sample(d, model, xT4, gens([10, 11, 12, 13]))
    small = ddpm_sample(d, model, xT2, gens([12, 13]))
    torch.testing.assert_close(big[2:], small, rtol=0, atol=0)
    big = ddim_sample(d, model, xT4, gens([10, 11, 12, 13]), eta=0.5)
    small = ddim_sample(d, model, xT2, gens([12, 13]), eta=0.5)
    torch.testing.assert_close(big[2:], small, rtol=0, atol=0)
    # one generator: reproducible from its seed
    one = ddpm_sample(d, model, xT4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        one, ddpm_sample(d, model, xT4, torch.Generator().manual_seed(3)), rtol=0, atol=0
    )
    with pytest.raises(UsageError, match="generator"):
        ddpm_sample(d, model, xT4, gens([1, 2]))
    with pytest.raises(UsageError, match="generator"):
        ddpm_sample(d, model, xT4, None)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="generator"):
        ddim_sample(d, model, xT4, None, eta=1.0)


def test_callback_and_trajectory() -> None:
    base = GaussianDiffusion(get_named_beta_schedule("cosine", 1000))
    d = base.respace("ddim10")
    calls = []

    def hook(i: int, t: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> None:
        calls.append((i, t.tolist(), x.clone(), out.clone()))

    xT, g = x_T(0, 5)
    x0, traj = ddpm_sample(d, optimal_eps(base), xT, g, return_trajectory=True, callback=hook)
    assert [c[0] for c in calls] == list(range(9, -1, -1))
    assert [c[1] for c in calls] == [[int(t)] * 5 for t in np.arange(900, -1, -100)]
    assert len(traj) == 11 and traj[0] is xT and torch.equal(traj[-1], x0)
    for k, (_, t, x, out) in enumerate(calls):
        assert torch.equal(x, traj[k])  # x_t the model saw
        torch.testing.assert_close(out, optimal_eps(base)(x, torch.tensor(t)))
