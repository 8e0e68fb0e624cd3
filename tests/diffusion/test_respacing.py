"""Timestep respacing as ADM's space_timesteps / SpacedDiffusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatkit.diffusion import GaussianDiffusion, SpacedDiffusion, get_named_beta_schedule, space_timesteps
from flatkit.errors import UsageError

ADM_20 = [0, 53, 105, 158, 210, 263, 315, 368, 421, 473, 526, 578, 631, 684, 736, 789, 841, 894, 946, 999]


def test_ddim_strides() -> None:
    assert space_timesteps(1000, "ddim10") == set(range(0, 1000, 100))
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim25") == set(range(0, 1000, 40))
    # the smallest stride giving exactly N steps: 334 steps need stride 3 -> range(0, 1000, 3) has 334
    assert space_timesteps(1000, "ddim334") == set(range(0, 1000, 3))
    assert space_timesteps(1000, "ddim7") == set(range(0, 1000, 143))
    with pytest.raises(
        UsageError, match="timestep_respacing: cannot create exactly 600 steps with an integer stride"
    ):
        space_timesteps(1000, "ddim600")


def test_uniform_sections() -> None:
    assert sorted(space_timesteps(1000, "20")) == ADM_20
    assert sorted(space_timesteps(1000, [20])) == ADM_20
    assert space_timesteps(1000, "1000") == set(range(1000))
    assert space_timesteps(1000, "") == set(range(1000))
    # sections: 300 -> [0, 100) with 10, [100, 200) with 5 and [200, 300) with 1 step (frac stride rounded)
    steps = sorted(space_timesteps(300, "10,5,1"))
    assert steps[:10] == [round(i * 99 / 9) for i in range(10)]
    assert steps[10:15] == [100 + round(i * 99 / 4) for i in range(5)]
    assert steps[15:] == [200]
    # uneven split: the first T % k sections are one step longer
    assert sorted(space_timesteps(10, "2,2,2")) == [0, 3, 4, 6, 7, 9]


@pytest.mark.parametrize("spec,msg", [("abc", "cannot parse"), ("2000", "cannot divide"), ("ddimx", "ddimN")])
def test_bad_respacing_is_a_usage_error(spec: str, msg: str) -> None:
    with pytest.raises(UsageError, match=f"timestep_respacing: .*{msg}"):
        space_timesteps(1000, spec)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_spaced_diffusion_keeps_the_marginals(schedule: str) -> None:
    base_betas = get_named_beta_schedule(schedule, 1000)
    base = GaussianDiffusion(base_betas)
    spaced = base.respace("ddim10")
    assert isinstance(spaced, SpacedDiffusion)
    assert spaced.num_timesteps == 10 and spaced.original_num_steps == 1000
    np.testing.assert_array_equal(spaced.timestep_map, np.arange(0, 1000, 100))
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[spaced.timestep_map], rtol=1e-12)
    np.testing.assert_array_equal(spaced.original_betas, base_betas)
    # respacing a spaced diffusion starts again from the original schedule
    again = spaced.respace("20")
    assert sorted(again.timestep_map.tolist()) == ADM_20
    np.testing.assert_allclose(again.alphas_cumprod, base.alphas_cumprod[ADM_20], rtol=1e-9)
    # "" is the identity
    ident = spaced.respace("")
    np.testing.assert_array_equal(ident.betas, base_betas)
    assert ident.num_timesteps == 1000


@pytest.mark.parametrize("rescale", [False, True])
def test_model_sees_original_timesteps(rescale: bool) -> None:
    base = GaussianDiffusion(get_named_beta_schedule("linear", 500), rescale_timesteps=rescale)
    spaced = base.respace("ddim10")
    seen = {}

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen["t"] = t
        return torch.zeros_like(x)

    x = torch.zeros(3, 2)
    spaced.p_mean_variance(model, x, torch.tensor([0, 1, 9]))
    if rescale:
        assert seen["t"].dtype == torch.float32 and seen["t"].tolist() == [0.0, 100.0, 900.0]
    else:
        assert seen["t"].tolist() == [0, 50, 450]
    spaced.training_losses(model, x, torch.tensor([2, 3, 4]), torch.zeros_like(x))
    assert seen["t"].tolist() == ([200.0, 300.0, 400.0] if rescale else [100, 150, 200])
    assert spaced.original_timesteps(torch.tensor([9])).tolist() == [450]
