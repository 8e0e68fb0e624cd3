from __future__ import annotations

import pytest

from flatkit.train.schedules import lr_at, rho_at


def test_lr_warmup():
    assert lr_at(1, 1e-4, 0) == 1e-4
    assert lr_at(1, 1.0, 4) == 0.25
    assert lr_at(4, 1.0, 4) == 1.0
    assert lr_at(100, 1.0, 4) == 1.0


def test_rho_schedule():
    assert rho_at(1, 0.5) == 0.5
    assert rho_at(5, 0.5, "linear", 10) == 0.25
    assert rho_at(50, 0.5, "linear", 10) == 0.5
    with pytest.raises(ValueError):
        rho_at(1, 0.5, "cosine", 10)


def test_rho_schedule_defaults_per_preset():
    """tiny ramps rho over 300 steps by default; the paper's presets and explicit choices keep vanilla SAM."""
    from flatkit.train.trainer import TrainConfig, validate_config

    c = validate_config(TrainConfig(preset="tiny", sam_rho=0.5))
    assert (c.rho_schedule, c.rho_warmup) == ("linear", 300)
    c = validate_config(TrainConfig(preset="auto", data="builtin:shapes16", sam_rho=0.5))
    assert (c.rho_schedule, c.rho_warmup) == ("linear", 300)
    c = validate_config(TrainConfig(preset="tiny"))  # no SAM: nothing to ramp
    assert (c.rho_schedule, c.rho_warmup) == ("constant", 0)
    c = validate_config(TrainConfig(preset="cifar10", data="builtin:shapes32", sam_rho=0.5))
    assert (c.rho_schedule, c.rho_warmup) == ("constant", 0)
    c = validate_config(TrainConfig(preset="tiny", sam_rho=0.5, rho_schedule="constant"))
    assert (c.rho_schedule, c.rho_warmup) == ("constant", 0)
    c = validate_config(TrainConfig(preset="tiny", sam_rho=0.5, rho_warmup=50))
    assert (c.rho_schedule, c.rho_warmup) == ("linear", 50)
    assert rho_at(150, 0.5, "linear", 300) == 0.25 and rho_at(300, 0.5, "linear", 300) == 0.5
