"""Beta schedules beta_1..beta_T as float64 numpy arrays (ADM semantics).

- linear: Ho et al. 2020, beta from 1e-4 to 0.02 over 1000 steps; for another T the end points are scaled by
  1000 / T so that the schedule keeps the same shape (ADM ``get_named_beta_schedule``).
- cosine: Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t) / f(0),
  f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, s = 0.008, with beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1)
  clipped to at most 0.999.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from flatkit.errors import UsageError

SCHEDULES = ("linear", "cosine")

# Nichol & Dhariwal 2021, eq. 17: the offset s that keeps beta_t from being too small near t = 0.
COSINE_S = 0.008
# Nichol & Dhariwal 2021, section 3.2: betas clipped to be no larger than 0.999 (singularities near t = T).
MAX_BETA = 0.999


def cosine_alpha_bar(u: float) -> float:
    """Unnormalised alpha_bar of the cosine schedule at the fraction u = t/T in [0, 1] (eq. 17's f(t))."""
    return math.cos((u + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2


def betas_for_alpha_bar(
    num_diffusion_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = MAX_BETA
) -> np.ndarray:
    """Discretise a continuous alpha_bar(u), u in [0, 1], into T betas (float64).

    beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta), i = 0..T-1, so that the
    cumulative product of (1 - beta) follows alpha_bar at the grid points (Nichol & Dhariwal 2021, eq. 17).
    """
    T = int(num_diffusion_timesteps)
    betas = []
    for i in range(T):
        u1, u2 = i / T, (i + 1) / T
        betas.append(min(1 - alpha_bar(u2) / alpha_bar(u1), max_beta))
    return np.array(betas, dtype=np.float64)


def linear_betas(num_diffusion_timesteps: int) -> np.ndarray:
    """Ho et al. 2020's linear schedule, 1e-4..0.02 at T = 1000, end points scaled by 1000 / T (ADM)."""
    scale = 1000 / num_diffusion_timesteps
    beta_start = scale * 0.0001
    beta_end = scale * 0.02
    return np.linspace(beta_start, beta_end, num_diffusion_timesteps, dtype=np.float64)


def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """The named beta schedule ("linear" or "cosine") with T steps, float64 numpy, shape (T,)."""
    if not isinstance(num_diffusion_timesteps, (int, np.integer)) or num_diffusion_timesteps < 1:
        raise UsageError(f"diffusion_steps: must be a positive integer, got {num_diffusion_timesteps!r}")
    if schedule_name == "linear":
        return linear_betas(int(num_diffusion_timesteps))
    if schedule_name == "cosine":
        return betas_for_alpha_bar(int(num_diffusion_timesteps), cosine_alpha_bar)
    raise UsageError(
        f"noise_schedule: unknown beta schedule {schedule_name!r} (expected one of {', '.join(SCHEDULES)})"
    )
