"""Denoiser networks: the ADM UNet (state-dict compatible with guided-diffusion), a 2-D MLP, presets."""

from flatkit.models.adm_flags import (
    InferredConfig,
    adm_flags_from_model_config,
    infer_adm_config,
    infer_model_config,
    model_config_from_adm_flags,
)
from flatkit.models.mlp import MLPDenoiser
from flatkit.models.presets import MODEL_BUILDERS, PRESETS, build_model, get_preset, preset_names
from flatkit.models.unet import UNetModel

__all__ = [
    "InferredConfig",
    "MLPDenoiser",
    "MODEL_BUILDERS",
    "PRESETS",
    "UNetModel",
    "adm_flags_from_model_config",
    "build_model",
    "get_preset",
    "infer_adm_config",
    "infer_model_config",
    "model_config_from_adm_flags",
    "preset_names",
]
