"""Timestep respacing (Nichol & Dhariwal 2021, section 4; ADM ``respace.py`` semantics).

A subsequence S of the original timesteps defines a shorter diffusion with the same marginals at the kept
steps: alpha_bar'_i = alpha_bar_{S_i}, beta'_i = 1 - alpha_bar_{S_i} / alpha_bar_{S_{i-1}}
(with alpha_bar_{S_{-1}} = 1).

This module is the numpy half: which timesteps to keep (:func:`space_timesteps`) and the respaced betas
(:func:`respaced_betas`). The diffusion over them, :class:`~flatkit.diffusion.gaussian.SpacedDiffusion`, lives
beside its base class in :mod:`flatkit.diffusion.gaussian` (whose ``respace`` method builds one), so that this
module does not import it back (import it from :mod:`flatkit.diffusion`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from flatkit.errors import UsageError

OPTION = "timestep_respacing"


def _parse_counts(section_counts: str | Sequence[int]) -> list[int]:
    if isinstance(section_counts, str):
        try:
            counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise UsageError(
                f"{OPTION}: cannot parse {section_counts!r} (expected 'ddimN', 'N' or comma-separated counts)"
            ) from None
    else:
        counts = [int(x) for x in section_counts]
    if not counts or any(c < 0 for c in counts):
        raise UsageError(f"{OPTION}: section counts must be non-negative integers, got {section_counts!r}")
    return counts


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """The original timesteps to keep, as ADM's ``space_timesteps``.

    - "ddimN": the integer stride s (smallest first) for which range(0, T, s) has exactly N elements.
    - "N" or "a,b,c" (or a list of ints): T is cut into len(counts) near-equal sections (the first T % k one
      step longer); section i keeps counts[i] steps evenly spaced from its first to its last step, rounded.
    - "" or None: every step.
    """
    if section_counts is None or (isinstance(section_counts, str) and section_counts.strip() == ""):
        return set(range(num_timesteps))
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        try:
            desired_count = int(section_counts[len("ddim") :])
        except ValueError:
            raise UsageError(f"{OPTION}: cannot parse {section_counts!r} (expected 'ddimN')") from None
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == desired_count:
                return set(range(0, num_timesteps, stride))
        raise UsageError(f"{OPTION}: cannot create exactly {desired_count} steps with an integer stride")

    counts = _parse_counts(section_counts)
    size_per = num_timesteps // len(counts)
    extra = num_timesteps % len(counts)
    start_idx = 0
    all_steps: list[int] = []
    for i, section_count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise UsageError(f"{OPTION}: cannot divide section of {size} steps into {section_count}")
        frac_stride = 1.0 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))  # Python's round (half to even), as ADM
            cur_idx += frac_stride
        start_idx += size
    if not all_steps:
        raise UsageError(f"{OPTION}: {section_counts!r} keeps no timestep")
    return set(all_steps)


def respaced_betas(alphas_cumprod: np.ndarray, use_timesteps: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """The betas of the diffusion over the kept timesteps, and the map respaced index -> original timestep.

    ``alphas_cumprod`` is the base schedule's alpha_bar (float64); beta'_i = 1 - alpha_bar_{S_i} /
    alpha_bar_{S_{i-1}} with alpha_bar_{S_{-1}} = 1. ``use_timesteps`` must be a non-empty subset of
    0..len(alphas_cumprod)-1.
    """
    keep = set(int(i) for i in use_timesteps)
    if not keep or min(keep) < 0 or max(keep) >= len(alphas_cumprod):
        raise UsageError(
            f"{OPTION}: kept timesteps must be a non-empty subset of 0..{len(alphas_cumprod) - 1}"
        )
    timestep_map: list[int] = []
    new_betas: list[float] = []
    last_alpha_cumprod = 1.0
    for i, alpha_cumprod in enumerate(alphas_cumprod):
        if i in keep:
            new_betas.append(1.0 - alpha_cumprod / last_alpha_cumprod)  # beta'_i = 1 - abar_{S_i}/abar_{S_{i-1}}
            last_alpha_cumprod = alpha_cumprod
            timestep_map.append(i)
    return np.array(new_betas, dtype=np.float64), np.array(timestep_map, dtype=np.int64)

