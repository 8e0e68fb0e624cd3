"""GaussianDiffusion against closed forms in float64: q(x_t | x_0), the Bayes posterior, losses, IP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatkit.diffusion import (
    GaussianDiffusion,
    _extract,
    discretized_gaussian_log_likelihood,
    get_named_beta_schedule,
    mean_flat,
    normal_kl,
)
from flatkit.errors import UsageError

DT = torch.float64


def make(schedule: str = "linear", T: int = 1000, **kw) -> GaussianDiffusion:
    return GaussianDiffusion(get_named_beta_schedule(schedule, T), **kw)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_precomputed_arrays_are_float64() -> None:
    d = make("cosine")
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped"):
        assert getattr(d, name).dtype == np.float64, name
    np.testing.assert_allclose(d.alphas_cumprod, np.cumprod(1 - d.betas), rtol=1e-15)
    assert d.original_num_steps == d.num_timesteps == 1000
    np.testing.assert_array_equal(d.timestep_map, np.arange(1000))


def test_extract_gathers_float64_and_casts_to_x_dtype() -> None:
    arr = np.array([1.0 + 1e-12, 2.0, 3.0])
    t = torch.tensor([2, 0])
    x32 = torch.zeros(2, 3, 4, 4)
    out = _extract(arr, t, x32)
    assert out.dtype == torch.float32 and out.shape == (2, 1, 1, 1)
    assert out.flatten().tolist() == [3.0, 1.0]
    out64 = _extract(arr, t, x32.shape, dtype=DT)
    assert out64.dtype == DT and out64[1].item() == 1.0 + 1e-12


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_is_eq4_and_has_the_right_moments(schedule: str) -> None:
    d = make(schedule)
    x0 = randn(4, 3, seed=1)
    for ti in (0, 10, 500, 999):
        t = torch.full((4,), ti)
        noise = randn(4, 3, seed=ti)
        ab = d.alphas_cumprod[ti]
        expected = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
        torch.testing.assert_close(d.q_sample(x0, t, noise), expected, rtol=1e-14, atol=1e-14)
    # Monte Carlo moments of q(x_t | x_0) at one t: mean sqrt(ab) x0, variance 1 - ab
    n, ti = 200_000, 300
    x0 = torch.full((n, 1), 0.7, dtype=DT)
    xt = d.q_sample(x0, torch.full((n,), ti), randn(n, 1, seed=7))
    ab = d.alphas_cumprod[ti]
    se = math.sqrt((1 - ab) / n)
    assert abs(xt.mean().item() - math.sqrt(ab) * 0.7) < 5 * se
    assert abs(xt.var().item() - (1 - ab)) < 5 * (1 - ab) * math.sqrt(2 / n)


def test_q_sample_requires_explicit_noise() -> None:
    d = make()
    with pytest.raises(UsageError, match="noise"):
        d.q_sample(randn(2, 3), torch.tensor([1, 2]), None)  # type: ignore[arg-type]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_is_the_bayes_posterior(schedule: str) -> None:
    """Bayes: q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) N(x_{t-1}; sqrt(abar_{t-1}) x_0,
    1 - abar_{t-1})."""
    d = make(schedule)
    ts = [1, 2, 50, 500, 998, 999]
    x0, xt = randn(len(ts), 5, seed=2), randn(len(ts), 5, seed=3)
    t = torch.tensor(ts)
    mean, var, logvar = d.q_posterior_mean_variance(x0, xt, t)
    for row, ti in enumerate(ts):
        beta = d.betas[ti]
        alpha = 1 - beta
        ab_prev = np.prod(1 - d.betas[:ti])
        precision = alpha / beta + 1 / (1 - ab_prev)
        post_var = 1 / precision
        post_mean = post_var * (
            math.sqrt(alpha) / beta * xt[row] + math.sqrt(ab_prev) / (1 - ab_prev) * x0[row]
        )
        torch.testing.assert_close(mean[row], post_mean, rtol=1e-10, atol=1e-12)
        assert var[row].item() == pytest.approx(post_var, rel=1e-10)
        assert logvar[row].item() == pytest.approx(math.log(post_var), rel=1e-10)
    # t = 0: beta~_0 = 0, its log clipped to log beta~_1 (ADM)
    _, var0, logvar0 = d.q_posterior_mean_variance(x0[:1], xt[:1], torch.tensor([0]))
    assert var0.item() == 0.0
    assert logvar0.item() == pytest.approx(math.log(d.posterior_variance[1]), rel=1e-14)


def test_eps_and_xstart_predictions_invert_each_other() -> None:
    d = make("cosine")
    x0, eps = randn(3, 4, seed=4), randn(3, 4, seed=5)
    t = torch.tensor([0, 400, 999])
    xt = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.predict_xstart_from_eps(xt, t, eps), x0, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(d.predict_eps_from_xstart(xt, t, x0), eps, rtol=1e-8, atol=1e-8)


class OracleEps:
    """model(x, t) returning the true noise (and a fixed variance channel value v with learned sigma)."""

    def __init__(self, noise: torch.Tensor, v: float | None = None) -> None:
        self.noise, self.v, self.seen_t = noise, v, None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen_t = t
        if self.v is None:
            return self.noise
        return torch.cat([self.noise, torch.full_like(self.noise, self.v)], dim=1)


def test_mse_loss_is_eps_mse_and_vb_zero_without_learned_sigma() -> None:
    d = make(model_var_type="fixed_large")
    x0, noise = randn(4, 3, 2, 2, seed=1), randn(4, 3, 2, 2, seed=2)
    t = torch.tensor([0, 1, 500, 999])
    pred = randn(4, 3, 2, 2, seed=3)
    terms = d.training_losses(lambda x, tt: pred, x0, t, noise)
    expected = ((noise - pred) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["mse"], expected)
    torch.testing.assert_close(terms["loss"], expected)
    assert terms["vb"].shape == (4,) and not terms["vb"].any()


def test_x0_mean_type_targets_x0() -> None:
    d = make(model_mean_type="x0")
    x0, noise = randn(2, 3, seed=1), randn(2, 3, seed=2)
    terms = d.training_losses(lambda x, tt: x0, x0, torch.tensor([3, 700]), noise)
    assert terms["mse"].abs().max().item() == 0.0


def test_input_perturbation_changes_x_t_not_the_target() -> None:
    """Ning et al. 2023: x_t = q_sample(x_0, t, eps + gamma xi), target eps."""
    d = make()
    x0, noise, xi = randn(3, 4, seed=1), randn(3, 4, seed=2), randn(3, 4, seed=3)
    t = torch.tensor([5, 100, 900])
    seen = {}

    def model(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        seen["x"] = x
        return torch.zeros_like(x)

    terms = d.training_losses(model, x0, t, noise, ip_gamma=0.1, ip_noise=xi)
    torch.testing.assert_close(seen["x"], d.q_sample(x0, t, noise + 0.1 * xi))
    torch.testing.assert_close(terms["mse"], (noise**2).mean(dim=1))  # target is noise, not noise + gamma xi
    with pytest.raises(UsageError, match="ip_noise"):
        d.training_losses(model, x0, t, noise, ip_gamma=0.1)
    # gamma = 0 ignores ip_noise
    d.training_losses(model, x0, t, noise, ip_gamma=0.0, ip_noise=xi)
    torch.testing.assert_close(seen["x"], d.q_sample(x0, t, noise))


def test_learned_range_with_oracle_mean_and_posterior_variance_has_zero_kl() -> None:
    """v = -1 selects log beta~_t; the true eps gives the true posterior mean, so L_{t-1} = 0 for t > 0."""
    d = make("cosine", model_var_type="learned_range", loss_type="rescaled_mse")
    x0, noise = randn(3, 2, 4, seed=1).clamp(-1, 1), randn(3, 2, 4, seed=2)
    t = torch.tensor([1, 300, 999])
    terms = d.training_losses(OracleEps(noise, v=-1.0), x0, t, noise)
    assert terms["vb"].abs().max().item() < 1e-9
    assert terms["mse"].abs().max().item() == 0.0


def test_vb_is_decoder_nll_at_t0_and_kl_otherwise_in_bits() -> None:
    d = make(model_var_type="learned_range")
    x0, noise = randn(2, 3, 4, seed=1).clamp(-1, 1), randn(2, 3, 4, seed=2)
    pred = randn(2, 6, 4, seed=3)
    t = torch.tensor([0, 7])
    xt = d.q_sample(x0, t, noise)
    vb = d.vb_terms_bpd(pred, x0, xt, t)
    out = d.p_mean_variance_from_output(pred, xt, t, clip_denoised=False)
    nll0 = -discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])
    assert vb[0].item() == pytest.approx(mean_flat(nll0)[0].item() / math.log(2), rel=1e-12)
    true_mean, _, true_logvar = d.q_posterior_mean_variance(x0, xt, t)
    kl = normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"])
    assert vb[1].item() == pytest.approx(mean_flat(kl)[1].item() / math.log(2), rel=1e-12)
    # learned range (Nichol & Dhariwal eq. 15): log sigma^2 from log beta~_t (v = -1) to log beta_t (v = +1)
    v = pred[1, 3:]
    frac = (v + 1) / 2
    expected = frac * math.log(d.betas[7]) + (1 - frac) * math.log(d.posterior_variance[7])
    torch.testing.assert_close(out["log_variance"][1], expected, rtol=1e-12, atol=1e-12)


def test_normal_kl_closed_form() -> None:
    m1, lv1, m2, lv2 = (torch.tensor(v, dtype=DT) for v in (0.3, math.log(0.5), -0.2, math.log(2.0)))
    expected = 0.5 * (math.log(2.0 / 0.5) + (0.5 + 0.25) / 2.0 - 1)
    assert normal_kl(m1, lv1, m2, lv2).item() == pytest.approx(expected, rel=1e-14)


def test_hybrid_loss_vb_trains_only_sigma_and_rescales_by_T_over_1000() -> None:
    """Nichol & Dhariwal 2021, section 3.1: L_vlb with the mean frozen (stop-gradient)."""
    x0, noise = randn(3, 2, 4, seed=1).clamp(-1, 1), randn(3, 2, 4, seed=2)
    t = torch.tensor([0, 20, 90])
    w_mean = torch.tensor(0.5, dtype=DT, requires_grad=True)
    w_var = torch.tensor(0.1, dtype=DT, requires_grad=True)

    def model(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return torch.cat([w_mean * x, w_var * x], dim=1)

    d = make(T=100, model_var_type="learned_range", loss_type="rescaled_mse")
    terms = d.training_losses(model, x0, t, noise)
    g_mean, g_var = torch.autograd.grad(
        terms["vb"].sum(), [w_mean, w_var], allow_unused=True, retain_graph=True
    )
    assert g_mean is None or g_mean.item() == 0.0
    assert g_var is not None and g_var.item() != 0.0
    g_mean, g_var = torch.autograd.grad(terms["mse"].sum(), [w_mean, w_var], allow_unused=True)
    assert g_var is None or g_var.item() == 0.0
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    plain = make(T=100, model_var_type="learned_range", loss_type="mse").training_losses(model, x0, t, noise)
    torch.testing.assert_close(terms["vb"], plain["vb"] * 100 / 1000)


def test_hybrid_loss_without_detach_keeps_values_and_differentiates_the_mean_too() -> None:
    """detach_mean=False: the true hybrid loss (the values of ADM's surrogate; its VLB term a function of the
    mean as well), what an analysis of the loss surface differentiates."""
    x0, noise = randn(3, 2, 4, seed=1).clamp(-1, 1), randn(3, 2, 4, seed=2)
    t = torch.tensor([0, 20, 90])
    w_mean = torch.tensor(0.5, dtype=DT, requires_grad=True)
    w_var = torch.tensor(0.1, dtype=DT, requires_grad=True)

    def model(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return torch.cat([w_mean * x, w_var * x], dim=1)

    d = make(T=100, model_var_type="learned_range", loss_type="rescaled_mse")
    sur = d.training_losses(model, x0, t, noise)
    true = d.training_losses(model, x0, t, noise, detach_mean=False)
    for k in ("loss", "mse", "vb"):
        assert torch.equal(sur[k], true[k])  # the same values, bit for bit
    g_mean = torch.autograd.grad(true["vb"].sum(), [w_mean], retain_graph=True)[0]
    assert g_mean.item() != 0.0  # the mean now enters the VLB term

    def loss_of(wm: float) -> float:
        with torch.no_grad():
            out = d.training_losses(lambda x, tt: torch.cat([wm * x, w_var * x], dim=1), x0, t, noise)
        return float(out["loss"].sum())

    h = 1e-6  # the gradient of the true hybrid loss is the derivative of its values
    fd = (loss_of(0.5 + h) - loss_of(0.5 - h)) / (2 * h)
    g_true = torch.autograd.grad(true["loss"].sum(), [w_mean])[0].item()
    g_sur = torch.autograd.grad(sur["loss"].sum(), [w_mean])[0].item()
    assert g_true == pytest.approx(fd, rel=1e-7)
    assert abs(g_sur - fd) > 1e-3 * abs(fd)


def test_kl_losses() -> None:
    d = make(T=50, model_var_type="learned_range", loss_type="rescaled_kl")
    x0, noise = randn(2, 2, 3, seed=1).clamp(-1, 1), randn(2, 2, 3, seed=2)
    pred = randn(2, 4, 3, seed=3)
    t = torch.tensor([0, 30])
    terms = d.training_losses(lambda x, tt: pred, x0, t, noise)
    vb = d.vb_terms_bpd(pred, x0, d.q_sample(x0, t, noise), t)
    torch.testing.assert_close(terms["vb"], vb)
    torch.testing.assert_close(terms["loss"], vb * 50)


def test_rescale_timesteps_and_output_channel_check() -> None:
    d = make(T=250, rescale_timesteps=True)
    seen = {}

    def model(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        seen["t"] = tt
        return torch.zeros_like(x)

    d.training_losses(model, randn(2, 3), torch.tensor([0, 100]), randn(2, 3))
    assert seen["t"].dtype == torch.float32 and seen["t"].tolist() == [0.0, 400.0]
    with pytest.raises(UsageError, match="model: output shape"):
        make(model_var_type="learned_range").training_losses(
            model, randn(2, 3), torch.tensor([0, 1]), randn(2, 3)
        )


@pytest.mark.parametrize(
    "kw,option",
    [
        ({"model_mean_type": "v"}, "model_mean_type"),
        ({"model_var_type": "learned"}, "model_var_type"),
        ({"loss_type": "l1"}, "loss_type"),
    ],
)
def test_bad_types_are_usage_errors(kw: dict, option: str) -> None:
    with pytest.raises(UsageError, match=option):
        make(**kw)
