"""``flatkit.load(DIR)`` on a diffusers ``UNet2DModel`` directory (needs the optional ``diffusers`` extra).

Accepted layouts (what ``save_pretrained`` writes; nothing is ever downloaded):

- a model directory: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``, or a sharded
  ``*.index.json``; ``--weights VARIANT`` picks ``diffusion_pytorch_model.VARIANT.safetensors``);
- a pipeline directory holding ``unet/`` and ``scheduler/scheduler_config.json``;
- a model directory named ``unet`` inside such a pipeline (the sibling ``scheduler/`` is used).

The Run's model is the UNet itself, its class extended only by a ``forward(x_t, t) -> ε`` with flatkit's
denoiser signature, so parameter names are the diffusers module's (``down_blocks.0.resnets.0.conv1.weight``).
Attention runs through diffusers' explicit (matmul + softmax) processor instead of
``scaled_dot_product_attention``, whose CPU kernel has no forward-mode derivative: HVPs, forward-over-reverse
included, need attention that is differentiable twice in both modes.

The diffusion is flatkit's own :class:`~flatkit.diffusion.GaussianDiffusion` (float64) built from the
scheduler config's beta schedule; without a scheduler config diffusers' ``DDPMScheduler`` defaults are used
and reported in ``Run.assumed``. Weights are read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatkit.errors import UsageError

WEIGHTS_NAME = "diffusion_pytorch_model"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
SCHEDULER_CONFIG = "scheduler_config.json"
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# diffusers' DDPMScheduler defaults (its __init__ signature), used when a directory has no scheduler config.
DDPM_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
}
# diffusers' variance_type -> flatkit's model_var_type (the DDPM sampler's sigma_t^2; the loss ignores it)
VARIANCE_TYPES = {
    "fixed_small": "fixed_small",
    "fixed_small_log": "fixed_small",
    "fixed_large": "fixed_large",
    "fixed_large_log": "fixed_large",
}
INSTALL_HINT = "pip install 'flatkit[diffusers]'"


# ----------------------------------------------------------------------------------------------------------
# recognising a diffusers directory


def _weight_files(d: Path) -> list[Path]:
    return sorted(p for p in d.glob(f"{WEIGHTS_NAME}*") if p.is_file())


def is_diffusers_dir(path: str | os.PathLike) -> bool:
    """A directory that looks like a diffusers model or pipeline (config or weights named as diffusers does)."""
    p = Path(path)
    if not p.is_dir():
        return False
    return (
        (p / "config.json").is_file()
        or (p / "model_index.json").is_file()
        or (p / "unet").is_dir()
        or bool(_weight_files(p))
    )


def _locate(path: Path) -> tuple[Path, Path | None]:
    """(the UNet's directory, the scheduler config or None)."""
    if (path / "unet").is_dir():  # a pipeline
        unet_dir = path / "unet"
        sched = path / "scheduler" / SCHEDULER_CONFIG
    elif (path / "model_index.json").is_file() and not (path / "config.json").is_file():
        raise UsageError(f"{path}: a diffusers pipeline without a unet/ folder (flatkit loads UNet2DModel)")
    else:
        unet_dir = path
        sched = path / SCHEDULER_CONFIG
        if not sched.is_file():
            sched = path.parent / "scheduler" / SCHEDULER_CONFIG
    if not (unet_dir / "config.json").is_file():
        raise UsageError(f"{unet_dir}: a diffusers model directory needs config.json (as save_pretrained writes it)")
    return unet_dir, (sched if sched.is_file() else None)


def _read_json(p: Path) -> dict:
    try:
        obj = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise UsageError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{p}: expected a JSON object")
    return obj


# ----------------------------------------------------------------------------------------------------------
# the diffusion from a scheduler config


def scheduler_betas(cfg: dict, source: str) -> tuple[np.ndarray, str]:
    """β_1..β_T (float64) of a diffusers scheduler config and a name for it.

    ``linear``: β evenly spaced from beta_start to beta_end; ``scaled_linear``: √β evenly spaced (the latent
    diffusion schedule); ``squaredcos_cap_v2``: Nichol & Dhariwal 2021, eq. 17 with β capped at 0.999 (flatkit's
    ``cosine``); ``trained_betas``: the listed values.
    """
    from flatkit.diffusion.schedules import betas_for_alpha_bar, cosine_alpha_bar

    try:
        T = int(cfg.get("num_train_timesteps", DDPM_DEFAULTS["num_train_timesteps"]))
        start = float(cfg.get("beta_start", DDPM_DEFAULTS["beta_start"]))
        end = float(cfg.get("beta_end", DDPM_DEFAULTS["beta_end"]))
    except (TypeError, ValueError) as e:
        raise UsageError(f"{source}: num_train_timesteps / beta_start / beta_end are not numbers ({e})") from None
    if T < 1:
        raise UsageError(f"{source}: num_train_timesteps must be positive, got {T}")
    trained = cfg.get("trained_betas")
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64).reshape(-1)
        return betas, "diffusers:trained_betas"
    schedule = cfg.get("beta_schedule", DDPM_DEFAULTS["beta_schedule"])
    if schedule == "linear":
        betas = np.linspace(start, end, T, dtype=np.float64)
        # flatkit's (ADM's) "linear" is this schedule with 1e-4..0.02 scaled by 1000 / T
        same = np.isclose(start, 1e-4 * 1000 / T, rtol=1e-12) and np.isclose(end, 0.02 * 1000 / T, rtol=1e-12)
        return betas, ("linear" if same else f"diffusers:linear({start:g},{end:g})")
    if schedule == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, T, dtype=np.float64) ** 2
        return betas, f"diffusers:scaled_linear({start:g},{end:g})"
    if schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(T, cosine_alpha_bar), "cosine"
    raise UsageError(
        f"{source}: beta_schedule {schedule!r} is not supported (expected one of {', '.join(BETA_SCHEDULES)})"
    )


def diffusion_from_scheduler(cfg: dict | None, source: str) -> tuple[Any, Any, list[str]]:
    """(GaussianDiffusion, DiffusionConfig, assumed) for a scheduler config (None: DDPMScheduler defaults)."""
    from flatkit.config import DiffusionConfig
    from flatkit.diffusion import GaussianDiffusion

    assumed: list[str] = []
    if cfg is None:
        cfg = dict(DDPM_DEFAULTS)
        assumed.append("scheduler=DDPMScheduler defaults (no scheduler_config.json: "
                       + ", ".join(f"{k}={v}" for k, v in DDPM_DEFAULTS.items()) + ")")
    elif "beta_schedule" not in cfg and "trained_betas" not in cfg:
        raise UsageError(f"{source}: not a beta-schedule scheduler config (no beta_schedule or trained_betas)")
    prediction = cfg.get("prediction_type", DDPM_DEFAULTS["prediction_type"])
    if prediction != "epsilon":
        raise UsageError(f"{source}: prediction_type {prediction!r} is not supported (flatkit's diffusion loss "
                         "needs an epsilon-prediction model)")
    if cfg.get("rescale_betas_zero_snr"):
        raise UsageError(f"{source}: rescale_betas_zero_snr=true is not supported (alpha_bar_T = 0 has no "
                         "epsilon-prediction loss)")
    if cfg.get("thresholding"):
        assumed.append("thresholding ignored (flatkit's samplers clip x0 to [-1, 1])")
    variance = cfg.get("variance_type", DDPM_DEFAULTS["variance_type"]) or DDPM_DEFAULTS["variance_type"]
    if variance not in VARIANCE_TYPES:
        raise UsageError(f"{source}: variance_type {variance!r} is not supported (expected one of "
                         f"{', '.join(VARIANCE_TYPES)})")
    betas, name = scheduler_betas(cfg, source)
    if not (betas.size >= 1 and np.all(betas > 0) and np.all(betas <= 1)):
        raise UsageError(f"{source}: the betas must all lie in (0, 1]")
    diffusion = GaussianDiffusion(betas, model_mean_type="eps", model_var_type=VARIANCE_TYPES[variance],
                                  loss_type="mse")
    dcfg = DiffusionConfig(diffusion_steps=int(betas.size), noise_schedule=name)
    return diffusion, dcfg, assumed


# ----------------------------------------------------------------------------------------------------------
# the model


_DENOISER_CLASS: type | None = None


def _import_diffusers(where: str) -> Any:
    try:
        import diffusers
    except ImportError:
        raise UsageError(f"{where}: a diffusers directory needs the optional diffusers package ({INSTALL_HINT})") \
            from None
    return diffusers


def denoiser_class() -> type:
    """``UNet2DModel`` with ``forward(x_t, t) -> ε`` (flatkit's denoiser signature); same parameters."""
    global _DENOISER_CLASS
    if _DENOISER_CLASS is None:
        from diffusers import UNet2DModel

        class DiffusersUNet2D(UNet2DModel):
            """A diffusers ``UNet2DModel`` called as ``model(x_t, t)``, returning the ε prediction tensor."""

            def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: Any = None) -> torch.Tensor:
                return super().forward(x, t, class_labels=class_labels, return_dict=False)[0]

        _DENOISER_CLASS = DiffusersUNet2D
    return _DENOISER_CLASS


class ExplicitAttention:
    """diffusers' explicit attention processor (``AttnProcessor``), its output made contiguous.

    Twice differentiable in forward and reverse mode (``scaled_dot_product_attention`` on the CPU is not), and
    contiguous so that a following GroupNorm accepts the forward-mode tangent.
    """

    def __init__(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor

        self.inner = AttnProcessor()

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, temb=temb)
        return out.contiguous()


def use_explicit_attention(model: torch.nn.Module) -> int:
    """Give every diffusers ``Attention`` block the explicit processor; returns how many were changed."""
    n = 0
    for m in model.modules():
        if hasattr(m, "set_processor") and hasattr(m, "processor"):
            m.set_processor(ExplicitAttention())
            n += 1
    return n


def _check_unet_config(cfg: dict, source: str) -> None:
    cls = cfg.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise UsageError(f"{source}: _class_name {cls!r} is not supported (flatkit loads diffusers UNet2DModel)")
    if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
        raise UsageError(f"{source}: a class-conditional UNet2DModel is not supported")
    if cfg.get("time_embedding_type", "positional") != "positional":
        raise UsageError(f"{source}: time_embedding_type {cfg['time_embedding_type']!r} is not supported (a "
                         "score-SDE model; flatkit loads epsilon-prediction DDPM UNets)")
    cin, cout = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
    if cin != cout:
        raise UsageError(f"{source}: out_channels {cout} != in_channels {cin} (flatkit needs an epsilon "
                         "prediction of the input's shape)")


def _model_config(cfg: dict) -> Any:
    from flatkit.config import ModelConfig

    size = cfg.get("sample_size") or 32
    size = int(size[0] if isinstance(size, list | tuple) else size)
    chans = [int(c) for c in cfg.get("block_out_channels") or [64]]
    return ModelConfig(
        arch="diffusers:UNet2DModel",
        image_size=size,
        in_channels=int(cfg.get("in_channels", 3)),
        num_channels=chans[0],
        num_res_blocks=int(cfg.get("layers_per_block", 2)),
        channel_mult=",".join(f"{c / chans[0]:g}" for c in chans),
        attention_resolutions="",
        dropout=float(cfg.get("dropout", 0.0)),
        learn_sigma=False,
    )


def _weights_files(unet_dir: Path, weights: str) -> list[Path]:
    """The file(s) holding the weights: plain name for ``raw``, ``WEIGHTS_NAME.<weights>.*`` for a variant;
    a sharded index lists its shards."""
    stem = WEIGHTS_NAME if weights == "raw" else f"{WEIGHTS_NAME}.{weights}"
    for suffix in WEIGHT_SUFFIXES:
        if (unet_dir / f"{stem}{suffix}").is_file():
            return [unet_dir / f"{stem}{suffix}"]
    for suffix in WEIGHT_SUFFIXES:
        index = unet_dir / f"{stem}{suffix}.index.json"
        if index.is_file():
            wmap = _read_json(index).get("weight_map")
            if not isinstance(wmap, dict) or not wmap:
                raise UsageError(f"{index}: no weight_map")
            shards = [unet_dir / f for f in sorted(set(wmap.values()))]
            for s in shards:
                if not s.is_file():
                    raise UsageError(f"{index}: shard {s.name} is missing")
            return shards
    variants = sorted({p.name[len(WEIGHTS_NAME) + 1:].split(".")[0] for p in _weight_files(unet_dir)
                       if p.name.count(".") >= 2 and not p.name.endswith(".index.json")})
    if weights == "raw":
        extra = f" (variants here: {', '.join(variants)}; pick one with --weights VARIANT)" if variants else ""
        raise UsageError(f"{unet_dir}: no {WEIGHTS_NAME}.safetensors or .bin{extra}")
    have = f"variants here: {', '.join(variants)}" if variants else "no variants here"
    raise UsageError(f"weights {weights}: {unet_dir} has no {stem}.safetensors or .bin (a diffusers directory "
                     f"holds one set of weights; --weights names a variant, {have})")


def read_files(path: str | os.PathLike, weights: str = "raw") -> list[Path]:
    """Every file :func:`load_diffusers` reads for ``path``: the UNet's config.json, the scheduler config (when
    there is one) and the weight file(s)."""
    unet_dir, sched_path = _locate(Path(path))
    return [unet_dir / "config.json", *([sched_path] if sched_path is not None else []),
            *_weights_files(unet_dir, weights)]


def _read_weights(files: list[Path], trust: bool) -> dict[str, torch.Tensor]:
    from flatkit.interop.weights import read_state_dict

    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(read_state_dict(f, str(f), trust=trust))
    return sd


def _quiet_diffusers() -> Any:
    """Silence diffusers' logger (unused config keys, accelerate hints) for the duration of a load."""
    import contextlib

    @contextlib.contextmanager
    def quiet():
        from diffusers.utils import logging as dlog

        before = dlog.get_verbosity()
        dlog.set_verbosity_error()
        try:
            yield
        finally:
            dlog.set_verbosity(before)

    return quiet()


def load_diffusers(
    path: str | os.PathLike,
    weights: str = "raw",
    trust: bool = False,
    device: str | torch.device | None = None,
) -> Any:
    """A diffusers ``UNet2DModel`` directory (or a pipeline holding ``unet/``) as a :class:`~flatkit.run.Run`.

    ``weights``: ``raw`` (the directory's weights) or a variant name (``fp16``, ``ema``, ...) for
    ``diffusion_pytorch_model.<variant>.safetensors``. ``trust`` allows a full unpickle of a ``.bin`` that
    ``weights_only=True`` refuses.
    """
    from flatkit.checkpoint import Run
    from flatkit.config import RunConfig
    from flatkit.interop.weights import load_state, strip_prefixes
    from flatkit.results import file_sha256

    p = Path(path)
    unet_dir, sched_path = _locate(p)
    cfg_path = unet_dir / "config.json"
    cfg = _read_json(cfg_path)
    _check_unet_config(cfg, str(cfg_path))
    # the schedule and the weight files are checked before the (slow) diffusers import
    sched_cfg = None if sched_path is None else _read_json(sched_path)
    diffusion, dcfg, assumed = diffusion_from_scheduler(sched_cfg, str(sched_path or p))
    files = _weights_files(unet_dir, weights)
    sd = strip_prefixes(_read_weights(files, trust))

    _import_diffusers(str(p))
    with _quiet_diffusers():
        try:
            model = denoiser_class().from_config(cfg)
        except Exception as e:  # noqa: BLE001 - a config diffusers cannot build from: one line naming the file
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"{cfg_path}: diffusers cannot build a UNet2DModel from it ({msg})") from None
    use_explicit_attention(model)
    where = str(files[0]) if len(files) == 1 else str(unet_dir)
    load_state(model, sd, where)
    model.eval()
    if device is not None:
        model.to(device)
    rc = RunConfig(model=_model_config(cfg), diffusion=dcfg, data=None, source="diffusers")
    return Run(
        model=model, diffusion=diffusion, config=rc, weights=weights, path=str(p), sha256=file_sha256(files[0]),
        step=None, available_weights=[weights], assumed=assumed,
    )
