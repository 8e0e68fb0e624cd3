"""Named (model, diffusion) configurations and the one explicit registry ``arch -> builder``.

Presets:

- ``cifar10``: the ADM UNet of the flatness paper's CIFAR-10 32x32 runs (the DDPM-IP / ADM-ES CIFAR-10 flags:
  128 channels, 3 res blocks, attention at 16 and 8 with 32-channel heads in the new order, scale-shift
  norm, up/down-sampling ResBlocks, dropout 0.3, learned sigma, cosine schedule, rescaled learned
  sigmas), 57,094,662 parameters.
- ``lsun64``: the LSUN tower 64x64 UNet (192 channels, 3 res blocks, attention at 32, 16, 8 with 64-channel
  heads, dropout 0.1, otherwise as ``cifar10``), 295,136,454 parameters.
- ``ffhq64``: the paper's FFHQ 64x64 runs; no separate flag set is published, so this is the same
  architecture and diffusion as ``lsun64`` (the ADM-family 64x64 configuration).
- ``tiny``: a 16x16 ADM UNet (32 channels, channel_mult "1,1", one res block per level, attention at 8x8
  with 16-channel heads, eps-MSE with a 1000-step linear schedule, no learned sigma; 318,691 parameters)
  that trains on a 2-core CPU in minutes; it also runs on 32x32 images unchanged (the UNet is convolutional).
  Its final conv starts from N(0, 0.02^2), not zero as ADM's: with zero, the first gradient lives in the
  output layer only and SAM at a diffusion-sized rho (0.5) stalls at "predict zero" on a model this small
  (measured: loss 0.94 after 150 steps vs 0.12 with the normal init, lr 1e-3).
- ``mlp``: the residual MLP denoiser for 2-D point data with a 1000-step linear schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flatkit.config import DiffusionConfig, ModelConfig
from flatkit.errors import UsageError
from flatkit.models.adm_flags import model_config_from_adm_flags, unet_kwargs
from flatkit.models.mlp import MLPDenoiser
from flatkit.models.unet import UNetModel

#: Standard deviation of the output conv's initialisation when ``out_init == "normal"``.
OUT_INIT_STD = 0.02


def build_adm_unet(cfg: ModelConfig) -> UNetModel:
    """The ADM :class:`UNetModel` of an ``adm_unet`` config (final conv zero-initialised unless ``out_init``
    says ``normal``)."""
    model = UNetModel(**unet_kwargs(cfg))
    out_init = getattr(cfg, "out_init", "zero")
    if out_init == "normal":
        with torch.no_grad():
            model.out[-1].weight.normal_(0.0, OUT_INIT_STD)
    elif out_init != "zero":
        raise UsageError(f"out_init: unknown initialisation {out_init!r} (zero, normal)")
    return model


def build_mlp(cfg: ModelConfig) -> MLPDenoiser:
    """The :class:`MLPDenoiser` of an ``mlp`` config."""
    return MLPDenoiser(data_dim=cfg.data_dim, hidden=cfg.hidden, depth=cfg.depth, learn_sigma=cfg.learn_sigma)


#: The explicit registry of architectures (no class resolved from a string at run time).
MODEL_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "adm_unet": build_adm_unet,
    "mlp": build_mlp,
}


def build_model(cfg: ModelConfig, *, seed: int = 0, device: torch.device | str | None = None) -> nn.Module:
    """A freshly initialised network for ``cfg``.

    The initialisation is a deterministic function of ``seed``: it runs under a forked RNG, so the caller's
    global RNG state is left untouched. ``device="meta"`` builds the structure without allocating weights
    (for checking key/shape lists of the full-size models).
    """
    if cfg.arch not in MODEL_BUILDERS:
        known = ", ".join(sorted(MODEL_BUILDERS))
        raise UsageError(f"arch: unknown architecture {cfg.arch!r} (known: {known})")
    builder = MODEL_BUILDERS[cfg.arch]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "meta":
        with torch.device("meta"):
            return builder(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder(cfg)
    return model.to(dev)


def _adm_diffusion(learn_sigma: bool, noise_schedule: str = "cosine") -> DiffusionConfig:
    return DiffusionConfig(
        diffusion_steps=1000,
        noise_schedule=noise_schedule,
        learn_sigma=learn_sigma,
        rescale_learned_sigmas=learn_sigma,
    )


#: ADM flags of the paper's CIFAR-10 32x32 model (``cifar10_32`` in
#: ../shared/fixtures/adm/adm_full_configs_state_dict_shapes.json).
CIFAR10_FLAGS = {
    "image_size": 32, "num_channels": 128, "num_res_blocks": 3, "learn_sigma": True, "dropout": 0.3,
    "diffusion_steps": 1000, "noise_schedule": "cosine", "num_head_channels": 32,
    "attention_resolutions": "16,8", "resblock_updown": True, "use_new_attention_order": True,
    "use_scale_shift_norm": True, "rescale_learned_sigmas": True,
}

#: ADM flags of the LSUN tower 64x64 model (same source).
LSUN64_FLAGS = {
    "image_size": 64, "num_channels": 192, "num_res_blocks": 3, "learn_sigma": True, "dropout": 0.1,
    "diffusion_steps": 1000, "noise_schedule": "cosine", "num_head_channels": 64,
    "attention_resolutions": "32,16,8", "resblock_updown": True, "use_new_attention_order": True,
    "use_scale_shift_norm": True, "rescale_learned_sigmas": True,
}

TINY_MODEL = ModelConfig(
    arch="adm_unet", image_size=16, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,1",
    attention_resolutions="8", num_heads=4, num_head_channels=16, num_heads_upsample=-1,
    use_scale_shift_norm=True, resblock_updown=False, use_new_attention_order=True, dropout=0.0,
    learn_sigma=False, out_init="normal",
)

MLP_MODEL = ModelConfig(arch="mlp", data_dim=2, hidden=128, depth=3, learn_sigma=False)

PRESETS: dict[str, tuple[ModelConfig, DiffusionConfig]] = {
    "cifar10": (model_config_from_adm_flags(CIFAR10_FLAGS), _adm_diffusion(learn_sigma=True)),
    "lsun64": (model_config_from_adm_flags(LSUN64_FLAGS), _adm_diffusion(learn_sigma=True)),
    "ffhq64": (model_config_from_adm_flags(LSUN64_FLAGS), _adm_diffusion(learn_sigma=True)),
    "tiny": (TINY_MODEL, DiffusionConfig(diffusion_steps=1000, noise_schedule="linear")),
    "mlp": (MLP_MODEL, DiffusionConfig(diffusion_steps=1000, noise_schedule="linear")),
}


#: Default AdamW learning rate per preset: ADM's 1e-4 for the paper's models; 1e-3 for the small CPU models,
#: which at 1e-4 are still far from fitted after the few hundred steps a CPU run affords.
PRESET_LR: dict[str, float] = {"cifar10": 1e-4, "lsun64": 1e-4, "ffhq64": 1e-4, "tiny": 1e-3, "mlp": 1e-3}

#: Default SAM radius warm-up (steps of a linear ramp of rho) per preset; absent: constant rho (vanilla SAM).
#: At a constant rho = 0.5 from the first step, the 0.3M-parameter `tiny` UNet fits far worse in a CPU-sized
#: run (loss 0.061 vs 0.037 plain after 600 steps; samples are colour blobs), because the whole perturbation
#: of norm rho lands where the gradient is largest, mostly the output layer; ramped over 300 steps it reaches
#: 0.047 and its samples show the shapes (docs/training.md, "Notes on small runs").
PRESET_RHO_WARMUP: dict[str, int] = {"tiny": 300}


def preset_names() -> list[str]:
    """The known preset names, sorted."""
    return sorted(PRESETS)


def get_preset(name: str) -> tuple[ModelConfig, DiffusionConfig]:
    """Copies of the (model, diffusion) configs of preset ``name``; unknown names raise UsageError."""
    if name not in PRESETS:
        raise UsageError(f"preset: unknown preset {name!r} (known: {', '.join(preset_names())})")
    model_cfg, diffusion_cfg = PRESETS[name]
    return ModelConfig(**vars(model_cfg)), DiffusionConfig(**vars(diffusion_cfg))
