"""One training step: SAM's two passes share batch, noise and dropout masks; AMP scaling is transparent."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flatkit.config import DiffusionConfig
from flatkit.diffusion import create_diffusion
from flatkit.train.sam import SAM
from flatkit.train.step import Batch, dropout_rng, train_step


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.l1 = nn.Linear(3, 32, device="meta").to_empty(device="cpu")  # no global-RNG init
        self.l2 = nn.Linear(32, 2, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x, t):
        h = torch.cat([x, t[:, None].float() / 100], dim=1)
        return self.l2(self.drop(torch.tanh(self.l1(h))))


def _batch(ip: bool = True) -> Batch:
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 2, generator=g)
    return Batch(
        x0=x0,
        t=torch.randint(0, 100, (8,), generator=g),
        weights=torch.ones(8),
        noise=torch.randn(8, 2, generator=g),
        ip_noise=torch.randn(8, 2, generator=g) if ip else None,
        dropout_seed=123,
    )


def _run(sam_rho=None, scaler=None, adaptive=False):
    model = DropoutNet().train()
    diffusion = create_diffusion(DiffusionConfig(diffusion_steps=100))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sam = SAM(model.parameters(), adaptive=adaptive) if sam_rho is not None else None
    res = train_step(
        model,
        diffusion,
        opt,
        _batch(),
        ip_gamma=0.1,
        sam=sam,
        rho=sam_rho or 0.0,
        grad_clip=0.5,
        scaler=scaler,
    )
    return model, res


def test_sam_with_rho_zero_equals_plain_step_bitwise():
    # Identical only if both passes use the same (x0, t, eps, IP noise) AND the same dropout masks.
    plain, r1 = _run()
    sam0, r2 = _run(sam_rho=0.0)
    for a, b in zip(plain.parameters(), sam0.parameters(), strict=True):
        assert torch.equal(a, b)
    assert r1.loss == r2.loss and r1.grad_norm == r2.grad_norm and r2.e_norm == 0.0


def test_sam_step_moves_differently_and_reports_e_norm():
    plain, _ = _run()
    sam, res = _run(sam_rho=0.2)
    assert abs(res.e_norm - 0.2) < 1e-6
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), sam.parameters(), strict=True))
    _, res_a = _run(sam_rho=0.2, adaptive=True)
    assert 0 < res_a.e_norm


def test_grad_scaler_is_transparent():
    # Power-of-two loss scaling is exact in float32: a scaled SAM step equals the unscaled one bit for bit,
    # which also checks that the SAM perturbation is computed from unscaled gradients.
    ref, r_ref = _run(sam_rho=0.2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    got, r_got = _run(sam_rho=0.2, scaler=scaler)
    for a, b in zip(ref.parameters(), got.parameters(), strict=True):
        assert torch.equal(a, b)
    assert r_ref.e_norm == pytest.approx(r_got.e_norm, rel=0, abs=0)
    assert not r_got.skipped


def test_dropout_rng_leaves_global_state_alone():
    before = torch.get_rng_state()
    with dropout_rng(5, torch.device("cpu")):
        a = torch.rand(3)
    with dropout_rng(5, torch.device("cpu")):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)


def test_step_does_not_touch_global_rng():
    model = DropoutNet().train()
    diffusion = create_diffusion(DiffusionConfig(diffusion_steps=100))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = torch.get_rng_state()
    train_step(model, diffusion, opt, _batch(), ip_gamma=0.1, sam=SAM(model.parameters()), rho=0.1)
    assert torch.equal(torch.get_rng_state(), before)


def test_bf16_autocast_runs():
    model = DropoutNet().train()
    model0 = copy.deepcopy(model)
    diffusion = create_diffusion(DiffusionConfig(diffusion_steps=100))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    res = train_step(model, diffusion, opt, _batch(), sam=SAM(model.parameters()), rho=0.1, amp="bf16")
    assert torch.isfinite(torch.tensor(res.loss)) and res.e_norm > 0
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), model0.parameters(), strict=True))
