"""The same numbers on a CUDA device as on the CPU (float64), with CPU generators; skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from flatkit.diffusion import (
    GaussianDiffusion,
    ddim_sample,
    ddpm_sample,
    gaussian_noise,
    get_named_beta_schedule,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DT = torch.float64


def linear_model(device: str):
    w = torch.linspace(-0.5, 0.5, 6, dtype=DT, device=device).reshape(1, 6, 1)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.device == x.device
        out = torch.cat([x, x], dim=1) * w + 1e-3 * t.to(x.dtype).reshape(-1, 1, 1)
        return out.tanh()

    return model


@pytest.mark.parametrize("var_type", ["learned_range", "fixed_small"])
def test_losses_and_samplers_agree_between_cpu_and_cuda(var_type: str) -> None:
    base = GaussianDiffusion(
        get_named_beta_schedule("cosine", 1000), model_var_type=var_type, loss_type="rescaled_mse"
    )
    n_out = 6 if var_type == "learned_range" else 3
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, generator=g, dtype=DT).clamp(-1, 1)
    noise, xi = torch.randn(2, 4, 3, 5, generator=g, dtype=DT)
    t = torch.tensor([0, 1, 500, 999])

    def run(device: str, t_device: str):
        full = linear_model(device)

        def model(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return full(x, tt)[:, :n_out]

        terms = base.training_losses(
            model, x0.to(device), t.to(t_device), noise.to(device), ip_gamma=0.1, ip_noise=xi.to(device)
        )
        d = base.respace("ddim10")
        gens = [torch.Generator().manual_seed(s) for s in range(4)]
        xT = gaussian_noise((4, 3, 5), gens, device, DT)
        a = ddpm_sample(d, model, xT, [torch.Generator().manual_seed(10 + s) for s in range(4)])
        b = ddim_sample(d, model, xT, torch.Generator().manual_seed(1), eta=0.5)
        return [v.cpu() for v in (terms["loss"], terms["mse"], terms["vb"], xT, a, b)]

    cpu = run("cpu", "cpu")
    for t_device in ("cpu", "cuda"):
        for u, v in zip(cpu, run("cuda", t_device), strict=True):
            torch.testing.assert_close(v, u, rtol=1e-9, atol=1e-9)


def test_cuda_generator_and_half_precision() -> None:
    base = GaussianDiffusion(get_named_beta_schedule("linear", 1000)).respace("20")
    g = torch.Generator(device="cuda").manual_seed(0)
    xT = gaussian_noise((2, 3, 5), g, "cuda", torch.float16)
    assert xT.device.type == "cuda" and xT.dtype == torch.float16
    out = ddpm_sample(base, lambda x, t: torch.zeros_like(x), xT, g)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
