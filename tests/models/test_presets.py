"""Presets and the model registry: full-size ADM layouts, the tiny UNet, determinism of initialisation."""

from __future__ import annotations

import pytest
import torch

from flatkit.config import ModelConfig
from flatkit.errors import UsageError
from flatkit.models import PRESETS, MLPDenoiser, UNetModel, build_model, get_preset, preset_names


@pytest.mark.parametrize("preset, key", [("cifar10", "cifar10_32"), ("lsun64", "lsun_tower_64")])
def test_full_presets_match_adm_state_dict_layout(adm_full_configs, preset, key):
    model_cfg, diffusion_cfg = get_preset(preset)
    model = build_model(model_cfg, device="meta")
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(adm_full_configs[key]["state_dict"])
    assert shapes == adm_full_configs[key]["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == adm_full_configs[key]["num_params"]
    flags = adm_full_configs[key]["flags"]
    assert diffusion_cfg.noise_schedule == flags["noise_schedule"]
    assert diffusion_cfg.diffusion_steps == flags["diffusion_steps"]
    assert diffusion_cfg.learn_sigma == model_cfg.learn_sigma == flags["learn_sigma"]
    assert diffusion_cfg.rescale_learned_sigmas == flags["rescale_learned_sigmas"]
    assert model_cfg.dropout == flags["dropout"]


def test_parameter_counts_of_the_paper_models():
    counts = {name: sum(p.numel() for p in build_model(get_preset(name)[0], device="meta").parameters())
              for name in ("cifar10", "lsun64", "ffhq64")}
    assert counts == {"cifar10": 57_094_662, "lsun64": 295_136_454, "ffhq64": 295_136_454}


def test_ffhq64_is_the_lsun64_architecture():
    assert get_preset("ffhq64") == get_preset("lsun64")


def test_tiny_preset():
    model_cfg, diffusion_cfg = get_preset("tiny")
    model = build_model(model_cfg)
    assert isinstance(model, UNetModel)
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 350_000
    assert not model_cfg.learn_sigma and not diffusion_cfg.learn_sigma
    x = torch.zeros(4, 3, 16, 16)
    loss = (model(x, torch.tensor([0, 1, 2, 3])) - 1).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_preset():
    model_cfg, diffusion_cfg = get_preset("mlp")
    model = build_model(model_cfg)
    assert isinstance(model, MLPDenoiser)
    assert model(torch.zeros(5, 2), torch.arange(5)).shape == (5, 2)
    assert diffusion_cfg.diffusion_steps in (100, 1000) and diffusion_cfg.noise_schedule == "linear"


def test_preset_names_and_unknown_preset():
    assert preset_names() == sorted(PRESETS)
    assert {"cifar10", "lsun64", "ffhq64", "tiny", "mlp"} <= set(PRESETS)
    with pytest.raises(UsageError, match="known: .*cifar10"):
        get_preset("imagenet")


def test_get_preset_returns_copies():
    cfg, _ = get_preset("tiny")
    cfg.num_channels = 64
    assert get_preset("tiny")[0].num_channels == 32


def test_unknown_arch_raises():
    with pytest.raises(UsageError, match="arch"):
        build_model(ModelConfig(arch="transformer"))


def test_initialisation_is_seeded_and_leaves_global_rng_alone():
    cfg = get_preset("mlp")[0]
    state = torch.random.get_rng_state()
    a, b, c = build_model(cfg, seed=1), build_model(cfg, seed=1), build_model(cfg, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
