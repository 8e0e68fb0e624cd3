"""Configuration dataclasses stored inside checkpoints and in every result's ``meta`` (nanoGPT style)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """Architecture of the denoiser.

    ``arch="adm_unet"`` uses the ADM flag names of guided-diffusion's ``script_util.py`` so an ADM
    flag dict maps onto this one-to-one. ``arch="mlp"`` is the small MLP denoiser for 2-D data.
    """

    arch: str = "adm_unet"  # "adm_unet" | "mlp"
    # --- ADM UNet (flag names as guided-diffusion) ---
    image_size: int = 32
    in_channels: int = 3
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: str = ""  # "" = ADM's default for the image size, else "1,2,2,2"
    attention_resolutions: str = "16,8"  # resolutions (pixels), as the ADM flag
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    dropout: float = 0.0
    learn_sigma: bool = False
    num_classes: int | None = None
    # Initialisation of the final output conv: "zero" as ADM, or "normal" N(0, 0.02^2). Zero makes the first
    # gradient live in the output layer alone, so SAM's first ascent step (rho g/||g||) lands entirely there;
    # on a small model with a diffusion-sized rho (0.5) training then stalls at "predict zero".
    out_init: str = "zero"
    # --- MLP denoiser ---
    data_dim: int = 2
    hidden: int = 128
    depth: int = 3

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


@dataclass
class DiffusionConfig:
    """Gaussian diffusion as ADM's ``diffusion_defaults`` (flag names kept)."""

    diffusion_steps: int = 1000
    noise_schedule: str = "linear"  # "linear" | "cosine"
    learn_sigma: bool = False
    rescale_learned_sigmas: bool = False
    use_kl: bool = False
    predict_xstart: bool = False
    rescale_timesteps: bool = False
    timestep_respacing: str = ""


@dataclass
class RunConfig:
    """What a checkpoint says about itself: model, diffusion and the data it was trained on."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: str | None = None  # data spec, e.g. "builtin:shapes16"
    source: str = "flatkit"  # "flatkit" | "adm" | "diffusers"
    holdout: dict | None = None  # items of `data` held out of training (flatkit/data/holdout.py), None: none


def to_dict(cfg: Any) -> dict:
    """A dataclass (possibly nested) as plain JSON-able values."""
    return dataclasses.asdict(cfg)


def config_hash(d: Any) -> str:
    """A stable hash of a configuration (for refusing a resume with a changed configuration)."""
    if dataclasses.is_dataclass(d):
        d = dataclasses.asdict(d)
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def model_config_from_dict(d: dict) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in known})


def diffusion_config_from_dict(d: dict) -> DiffusionConfig:
    known = {f.name for f in dataclasses.fields(DiffusionConfig)}
    return DiffusionConfig(**{k: v for k, v in d.items() if k in known})
