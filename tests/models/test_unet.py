"""The ADM UNet: reference outputs of guided-diffusion, state-dict layout, torch.func compatibility."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, jvp, vmap

from flatkit.errors import UsageError
from flatkit.models import UNetModel, build_model, get_preset, model_config_from_adm_flags
from flatkit.models.nn import timestep_embedding


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_fixture_loads_strictly_and_reproduces_adm_output(adm_small):
    name, flags, fx = adm_small
    model = build_model(model_config_from_adm_flags(flags))
    model.load_state_dict(fx["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        out = model(fx["x"], fx["t"])
    assert out.shape == fx["out"].shape
    assert _rel_err(out, fx["out"]) < 1e-5, name


def test_fixture_in_float64_agrees(adm_small):
    """The same network in float64 (no hidden float32 casts) agrees with ADM's float32 output."""
    _, flags, fx = adm_small
    model = build_model(model_config_from_adm_flags(flags)).double()
    model.load_state_dict(fx["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        out = model(fx["x"].double(), fx["t"])
    assert out.dtype == torch.float64
    assert _rel_err(out, fx["out"]) < 1e-5


def test_fixture_parameter_count(adm_small, adm_small_flags):
    name, flags, _ = adm_small
    model = build_model(model_config_from_adm_flags(flags), device="meta")
    assert sum(p.numel() for p in model.parameters()) == adm_small_flags[name]["num_params"]


def test_float_and_scalar_timesteps(adm_small):
    _, flags, fx = adm_small
    model = build_model(model_config_from_adm_flags(flags))
    model.load_state_dict(fx["state_dict"])
    model.eval()
    x = fx["x"][:2]
    with torch.no_grad():
        ref = model(x, torch.tensor([7, 7]))
        assert torch.equal(model(x, torch.tensor([7.0, 7.0])), ref)
        assert torch.equal(model(x, 7), ref)
        assert torch.equal(model(x, torch.tensor(7)), ref)


def test_timestep_embedding_matches_closed_form():
    t = torch.tensor([0.0, 1.0, 3.5, 999.0], dtype=torch.float64)
    dim = 7
    emb = timestep_embedding(t, dim, dtype=torch.float64)
    half = dim // 2
    freqs = torch.tensor([10000.0 ** (-i / half) for i in range(half)], dtype=torch.float64)
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs), torch.zeros(4, 1,
                         dtype=torch.float64)], dim=1)
    assert torch.allclose(emb, expected, rtol=1e-12, atol=1e-12)


def test_zero_initialised_output_and_residual_branches():
    cfg = get_preset("tiny")[0]
    model = build_model(cfg)
    # tiny starts its final conv from N(0, 0.02^2) (see presets.py); every other zero-init is ADM's
    assert cfg.out_init == "normal"
    assert 0.015 < float(model.out[2].weight.std()) < 0.025
    cfg.out_init = "zero"
    model = build_model(cfg)
    assert torch.count_nonzero(model.out[2].weight) == 0
    assert torch.count_nonzero(model.input_blocks[1][0].out_layers[3].weight) == 0
    assert torch.count_nonzero(model.middle_block[1].proj_out.weight) == 0


def test_class_conditioning():
    cfg = model_config_from_adm_flags({"image_size": 16, "num_channels": 32, "num_res_blocks": 1,
                                       "channel_mult": "1,2", "attention_resolutions": "8",
                                       "class_cond": True, "num_classes": 10})
    model = build_model(cfg)
    assert model.label_emb.weight.shape == (10, 128)
    nn_init = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=nn_init))
    model.eval()
    x = torch.randn(2, 3, 16, 16, generator=nn_init)
    with torch.no_grad():
        a = model(x, torch.tensor([3, 3]), y=torch.tensor([0, 1]))
    assert not torch.allclose(a[0:1], model(x[0:1], torch.tensor([3]), y=torch.tensor([1])))
    with pytest.raises(UsageError, match="y:"):
        model(x, torch.tensor([3, 3]))


def test_dropout_only_in_train_mode():
    cfg = model_config_from_adm_flags({"image_size": 16, "num_channels": 32, "num_res_blocks": 1,
                                       "channel_mult": "1,2", "attention_resolutions": "8", "dropout": 0.5})
    model = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([1, 500])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x, t), model(x, t))


def test_bad_head_settings_raise():
    with pytest.raises(UsageError, match="num_head_channels"):
        UNetModel(16, 3, 32, 3, 1, (2,), channel_mult=(1, 2), num_head_channels=24)
    with pytest.raises(UsageError, match="num_heads"):
        UNetModel(16, 3, 32, 3, 1, (2,), channel_mult=(1, 2), num_heads=5)
    with pytest.raises(UsageError, match="num_channels"):
        UNetModel(16, 3, 40, 3, 1, (2,), channel_mult=(1, 2))


def _randomised(model: torch.nn.Module, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Random parameters (nothing zero) for ``model``, as a dict for functional_call."""
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 * torch.randn(p.shape, generator=g, dtype=dtype) for k, p in model.named_parameters()}


def test_torch_func_grad_matches_autograd_and_leaves_model_untouched():
    model = build_model(get_preset("tiny")[0]).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = _randomised(model, 0)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 3, 8, 8, generator=g), torch.tensor([0, 400, 999])

    def loss(p):
        return (functional_call(model, p, (x, t)) ** 2).mean()

    g_func = grad(loss)(params)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    torch.autograd.backward(loss(leaves))
    for k in params:
        assert torch.allclose(g_func[k], leaves[k].grad, rtol=1e-5, atol=1e-8), k
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_torch_func_hvp_matches_finite_difference_float64():
    """Forward-over-reverse HVP through the UNet against a central difference of gradients (float64).

    8x8 inputs keep it fast: the UNet is convolutional, attention then runs at 4x4.
    """
    model = build_model(get_preset("tiny")[0]).double().eval()
    params = _randomised(model, 2, torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 700])
    v = {k: torch.randn(p.shape, generator=g, dtype=torch.float64) for k, p in params.items()}

    def loss(p):
        return (functional_call(model, p, (x, t)) ** 2).mean()

    _, hv = jvp(grad(loss), (params,), (v,))
    h = 1e-5
    gp = grad(loss)({k: p + h * v[k] for k, p in params.items()})
    gm = grad(loss)({k: p - h * v[k] for k, p in params.items()})
    num = torch.cat([((gp[k] - gm[k]) / (2 * h)).flatten() for k in params])
    ana = torch.cat([hv[k].flatten() for k in params])
    assert float((num - ana).norm() / ana.norm()) < 1e-6


def test_vmap_over_parameter_sets():
    model = build_model(get_preset("tiny")[0]).eval()
    p0, p1 = _randomised(model, 4), _randomised(model, 5)
    stacked = {k: torch.stack([p0[k], p1[k]]) for k in p0}
    g = torch.Generator().manual_seed(6)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([5, 50])
    out = vmap(lambda p: functional_call(model, p, (x, t)))(stacked)
    for i, p in enumerate((p0, p1)):
        assert torch.allclose(out[i], functional_call(model, p, (x, t)), rtol=1e-5, atol=1e-6)


def test_tiny_runs_at_16_and_32():
    model = build_model(get_preset("tiny")[0]).eval()
    for size in (16, 32):
        x = torch.zeros(1, 3, size, size)
        assert model(x, torch.tensor([1])).shape == (1, 3, size, size)
