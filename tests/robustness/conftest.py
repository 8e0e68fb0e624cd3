"""A tiny random-init checkpoint (no trainer) shared by the robustness tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from flatkit.checkpoint import make_checkpoint, save_checkpoint
    from flatkit.config import RunConfig
    from flatkit.models.presets import build_model, get_preset

    cfg_m, cfg_d = get_preset("tiny")
    sd = build_model(cfg_m, seed=0).state_dict()
    # ADM zero-initialises output layers: add small noise so the random model's outputs are not all zero
    g = torch.Generator().manual_seed(0)
    sd = {
        k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()
    }
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    ck = make_checkpoint(
        RunConfig(model=cfg_m, diffusion=cfg_d, data="builtin:shapes16?n=256"),
        {"raw": sd, "ema_0.999": sd},
        step=0,
    )
    save_checkpoint(ck, path)
    return path
