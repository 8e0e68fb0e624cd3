"""Beta schedules against their closed forms (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatkit.diffusion import betas_for_alpha_bar, get_named_beta_schedule
from flatkit.errors import UsageError


@pytest.mark.parametrize("T", [1000, 250, 4000])
def test_linear_schedule_end_points_scaled_by_1000_over_T(T: int) -> None:
    betas = get_named_beta_schedule("linear", T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    scale = 1000 / T
    assert betas[0] == pytest.approx(1e-4 * scale, rel=1e-15)
    assert betas[-1] == pytest.approx(0.02 * scale, rel=1e-15)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) * scale / (T - 1), rtol=1e-9)


@pytest.mark.parametrize("T", [1000, 100])
def test_cosine_alpha_bar_follows_eq17(T: int) -> None:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
    betas = get_named_beta_schedule("cosine", T)
    assert betas.dtype == np.float64
    s = 0.008

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    alpha_bar = np.cumprod(1 - betas)
    expected = np.array([f((i + 1) / T) / f(0) for i in range(T)])
    unclipped = betas < 0.999
    # every beta before the clipped tail follows eq. 17 exactly
    last_ok = int(np.argmin(unclipped)) if not unclipped.all() else T
    np.testing.assert_allclose(alpha_bar[:last_ok], expected[:last_ok], rtol=1e-10, atol=1e-14)
    assert betas.max() <= 0.999
    assert betas[-1] == pytest.approx(0.999)  # the clip is active at t = T (f(1) = 0)


def test_betas_for_alpha_bar_respects_max_beta() -> None:
    betas = betas_for_alpha_bar(10, lambda u: 1 - u, max_beta=0.5)
    assert betas.max() == 0.5
    np.testing.assert_allclose(betas[:5], [1 - (1 - (i + 1) / 10) / (1 - i / 10) for i in range(5)])


def test_unknown_schedule_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match="noise_schedule: .*'quadratic'"):
        get_named_beta_schedule("quadratic", 1000)
    with pytest.raises(UsageError, match="diffusion_steps"):
        get_named_beta_schedule("linear", 0)
