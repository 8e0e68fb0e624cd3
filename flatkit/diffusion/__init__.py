"""Gaussian diffusion core with ADM (openai/guided-diffusion) semantics: float64 schedules, q_sample, losses
(eps-MSE, ADM hybrid with learned sigma, input perturbation), respacing, DDPM / DDIM samplers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flatkit.config import DiffusionConfig
from flatkit.diffusion.gaussian import (
    LOSS_TYPES,
    MEAN_TYPES,
    VAR_TYPES,
    GaussianDiffusion,
    ModelFn,
    SpacedDiffusion,
    _extract,
    extract,
)
from flatkit.diffusion.losses import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)
from flatkit.diffusion.respace import space_timesteps
from flatkit.diffusion.samplers import ddim_sample, ddim_step, ddpm_sample, gaussian_noise, p_sample
from flatkit.diffusion.schedules import (
    SCHEDULES,
    betas_for_alpha_bar,
    cosine_alpha_bar,
    get_named_beta_schedule,
    linear_betas,
)
from flatkit.errors import UsageError

__all__ = [
    "LOSS_TYPES",
    "MEAN_TYPES",
    "SCHEDULES",
    "VAR_TYPES",
    "GaussianDiffusion",
    "ModelFn",
    "SpacedDiffusion",
    "_extract",
    "approx_standard_normal_cdf",
    "betas_for_alpha_bar",
    "cosine_alpha_bar",
    "create_diffusion",
    "ddim_sample",
    "ddim_step",
    "ddpm_sample",
    "diffusion_config_from_adm_flags",
    "discretized_gaussian_log_likelihood",
    "extract",
    "gaussian_noise",
    "get_named_beta_schedule",
    "linear_betas",
    "mean_flat",
    "normal_kl",
    "p_sample",
    "space_timesteps",
]

# ADM's diffusion_defaults() (guided-diffusion script_util.py), plus sigma_small (default False).
ADM_DIFFUSION_DEFAULTS: dict[str, Any] = dict(
    diffusion_steps=1000,
    noise_schedule="linear",
    learn_sigma=False,
    sigma_small=False,
    rescale_learned_sigmas=False,
    use_kl=False,
    predict_xstart=False,
    rescale_timesteps=False,
    timestep_respacing="",
)


def _model_var_type(cfg: DiffusionConfig) -> str:
    """ADM: learned_range with learn_sigma, else fixed_large unless sigma_small."""
    if cfg.learn_sigma:
        return "learned_range"
    return "fixed_small" if getattr(cfg, "sigma_small", False) else "fixed_large"


def _loss_type(cfg: DiffusionConfig) -> str:
    """ADM: rescaled_kl with use_kl, else rescaled_mse with rescale_learned_sigmas, else mse."""
    if cfg.use_kl:
        return "rescaled_kl"
    if cfg.rescale_learned_sigmas:
        return "rescaled_mse"
    return "mse"


def create_diffusion(cfg: DiffusionConfig, timestep_respacing: str | None = None) -> GaussianDiffusion:
    """The diffusion described by ``cfg``, as ADM's ``create_gaussian_diffusion``.

    ``timestep_respacing`` (None: ``cfg.timestep_respacing``) selects a ``SpacedDiffusion``; "" gives the
    plain ``GaussianDiffusion`` over all ``cfg.diffusion_steps`` steps.
    """
    betas = get_named_beta_schedule(cfg.noise_schedule, cfg.diffusion_steps)
    kwargs = dict(
        model_mean_type="x0" if cfg.predict_xstart else "eps",
        model_var_type=_model_var_type(cfg),
        loss_type=_loss_type(cfg),
        rescale_timesteps=bool(cfg.rescale_timesteps),
    )
    diffusion = GaussianDiffusion(betas, **kwargs)
    spec = cfg.timestep_respacing if timestep_respacing is None else timestep_respacing
    if spec is None or str(spec).strip() == "":
        return diffusion
    return diffusion.respace(spec)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int,)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "t",
        "yes",
        "y",
        "1",
        "false",
        "f",
        "no",
        "n",
        "0",
    ):
        return value.strip().lower() in ("true", "t", "yes", "y", "1")
    raise UsageError(f"{name}: expected a boolean, got {value!r}")


def diffusion_config_from_adm_flags(flags: Mapping[str, Any]) -> DiffusionConfig:
    """A ``DiffusionConfig`` from ADM command-line flags (missing flags take ADM's defaults).

    Reads diffusion_steps, noise_schedule, learn_sigma, rescale_learned_sigmas, use_kl, predict_xstart,
    rescale_timesteps, timestep_respacing; other (model) flags are ignored. ``sigma_small=True`` is refused
    unless ``DiffusionConfig`` has a ``sigma_small`` field, since it cannot be represented otherwise.
    """
    f = {**ADM_DIFFUSION_DEFAULTS, **{k: v for k, v in flags.items() if k in ADM_DIFFUSION_DEFAULTS}}
    try:
        steps = int(f["diffusion_steps"])
    except (TypeError, ValueError):
        raise UsageError(f"diffusion_steps: expected an integer, got {f['diffusion_steps']!r}") from None
    if steps < 1:
        raise UsageError(f"diffusion_steps: must be positive, got {steps}")
    schedule = str(f["noise_schedule"])
    if schedule not in SCHEDULES:
        raise UsageError(
            f"noise_schedule: unknown beta schedule {schedule!r} (expected one of {', '.join(SCHEDULES)})"
        )
    respacing = "" if f["timestep_respacing"] is None else str(f["timestep_respacing"])
    space_timesteps(steps, respacing)  # validate now: a bad string fails with the option named
    values: dict[str, Any] = dict(
        diffusion_steps=steps,
        noise_schedule=schedule,
        learn_sigma=_as_bool("learn_sigma", f["learn_sigma"]),
        rescale_learned_sigmas=_as_bool("rescale_learned_sigmas", f["rescale_learned_sigmas"]),
        use_kl=_as_bool("use_kl", f["use_kl"]),
        predict_xstart=_as_bool("predict_xstart", f["predict_xstart"]),
        rescale_timesteps=_as_bool("rescale_timesteps", f["rescale_timesteps"]),
        timestep_respacing=respacing,
    )
    sigma_small = _as_bool("sigma_small", f["sigma_small"])
    if "sigma_small" in {fl.name for fl in dataclasses.fields(DiffusionConfig)}:
        values["sigma_small"] = sigma_small
    elif sigma_small and not values["learn_sigma"]:
        raise UsageError(
            "sigma_small: not supported (DiffusionConfig has no sigma_small field; ADM default False)"
        )
    return DiffusionConfig(**values)
