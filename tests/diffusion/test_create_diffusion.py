"""create_diffusion / diffusion_config_from_adm_flags: ADM's create_gaussian_diffusion mapping."""

from __future__ import annotations

import numpy as np
import pytest

from flatkit.config import DiffusionConfig
from flatkit.diffusion import (
    GaussianDiffusion,
    SpacedDiffusion,
    create_diffusion,
    diffusion_config_from_adm_flags,
    get_named_beta_schedule,
)
from flatkit.errors import UsageError


def test_defaults_are_adm_defaults() -> None:
    cfg = diffusion_config_from_adm_flags({})
    assert cfg == DiffusionConfig()
    d = create_diffusion(cfg)
    assert type(d) is GaussianDiffusion
    assert (d.model_mean_type, d.model_var_type, d.loss_type) == ("eps", "fixed_large", "mse")
    np.testing.assert_array_equal(d.betas, get_named_beta_schedule("linear", 1000))


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"learn_sigma": True}, ("eps", "learned_range", "mse")),
        ({"learn_sigma": True, "rescale_learned_sigmas": True}, ("eps", "learned_range", "rescaled_mse")),
        ({"use_kl": True, "rescale_learned_sigmas": True}, ("eps", "fixed_large", "rescaled_kl")),
        ({"predict_xstart": "True"}, ("x0", "fixed_large", "mse")),
    ],
)
def test_flag_mapping(flags: dict, expected: tuple) -> None:
    d = create_diffusion(diffusion_config_from_adm_flags({**flags, "num_channels": 128}))
    assert (d.model_mean_type, d.model_var_type, d.loss_type) == expected


def test_respacing_gives_a_spaced_diffusion() -> None:
    cfg = diffusion_config_from_adm_flags(
        {
            "diffusion_steps": 4000,
            "noise_schedule": "cosine",
            "timestep_respacing": "ddim50",
            "rescale_timesteps": 1,
        }
    )
    d = create_diffusion(cfg)
    assert isinstance(d, SpacedDiffusion) and d.num_timesteps == 50 and d.original_num_steps == 4000
    assert d.rescale_timesteps
    np.testing.assert_array_equal(d.original_betas, get_named_beta_schedule("cosine", 4000))
    # the argument overrides the config; "" is the plain diffusion
    assert create_diffusion(cfg, timestep_respacing="").num_timesteps == 4000
    assert create_diffusion(cfg, timestep_respacing="25").num_timesteps == 25


@pytest.mark.parametrize(
    "flags,match",
    [
        ({"noise_schedule": "sqrt"}, "noise_schedule: .*'sqrt'"),
        ({"timestep_respacing": "ddim600"}, "timestep_respacing: cannot create exactly 600 steps"),
        ({"learn_sigma": "maybe"}, "learn_sigma"),
        ({"diffusion_steps": "many"}, "diffusion_steps"),
    ],
)
def test_bad_flags_are_usage_errors(flags: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        diffusion_config_from_adm_flags(flags)


def test_bad_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="noise_schedule"):
        create_diffusion(DiffusionConfig(noise_schedule="sqrt"))
    with pytest.raises(UsageError, match="timestep_respacing"):
        create_diffusion(DiffusionConfig(), timestep_respacing="ddim600")
