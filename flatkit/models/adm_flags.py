"""ADM command-line flags <-> :class:`ModelConfig`, and what an ADM state dict's shapes say about its config.

ADM (guided-diffusion, DDPM-IP, ADM-ES) checkpoints are bare state dicts: the architecture lives in the
command line that trained them (``script_util.model_and_diffusion_defaults``). This module

- turns such a flag dict into a :class:`ModelConfig` (:func:`model_config_from_adm_flags`), resolving the
  defaults exactly as ADM's ``create_model`` does (``channel_mult=""`` -> the table below);
- turns a :class:`ModelConfig` into :class:`~flatkit.models.unet.UNetModel` arguments (:func:`unet_kwargs`);
- infers from a state dict's key names and shapes everything they determine (:func:`infer_adm_config`), takes
  the rest from the flags (or ADM's defaults, reported as *assumed*), and refuses flags that contradict the
  shapes.

Canonical forms (so that a config written from flags equals one inferred from shapes): ``channel_mult`` is
always explicit (``"1,2,2,2"``), ``attention_resolutions`` is sorted from the largest resolution down
(``"16,8"``), ``num_classes`` is set exactly when class-conditional.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from flatkit.config import ModelConfig
from flatkit.errors import UsageError

#: ADM's ``channel_mult`` for ``channel_mult=""`` by image size (guided-diffusion ``create_model``).
ADM_DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}

#: guided-diffusion's NUM_CLASSES (ImageNet); DDPM-IP's copy uses 10. Pass ``num_classes`` to override.
ADM_NUM_CLASSES = 1000

#: The model flags of ``model_and_diffusion_defaults`` with ADM's defaults, plus two flatkit extensions
#: (``in_channels``, ``num_classes``) that ADM hard-codes.
ADM_MODEL_FLAG_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "",
    "dropout": 0.0,
    "class_cond": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_new_attention_order": False,
    "learn_sigma": False,
    "in_channels": 3,
    "num_classes": None,
}

#: Flags of the ADM family's scripts that do not concern the network: accepted and ignored here.
ADM_IGNORED_FLAGS: frozenset[str] = frozenset({
    # diffusion (flatkit.diffusion reads these)
    "diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
    "rescale_timesteps", "rescale_learned_sigmas", "sigma_small",
    # speed / memory only
    "use_fp16", "use_checkpoint", "fp16_scale_growth",
    # training (image_train.py; DDPM-IP's input perturbation, ADM-ES's epsilon scaling)
    "data_dir", "schedule_sampler", "lr", "weight_decay", "lr_anneal_steps", "batch_size", "microbatch",
    "ema_rate", "log_interval", "save_interval", "resume_checkpoint", "input_pertub", "input_perturbation",
    "eps_scaler",
    # sampling (image_sample.py)
    "clip_denoised", "num_samples", "use_ddim", "model_path",
})

_INT_FLAGS = ("image_size", "num_channels", "num_res_blocks", "num_heads", "num_heads_upsample",
              "num_head_channels", "in_channels")
_BOOL_FLAGS = ("class_cond", "use_scale_shift_norm", "resblock_updown", "use_new_attention_order",
               "learn_sigma")


# ----------------------------------------------------------------------------------------------------------
# Parsing single flags


def _flag_name(name: str) -> str:
    """``--use-fp16`` / ``use_fp16`` -> ``use_fp16``."""
    return str(name).lstrip("-").replace("-", "_")


def _as_int(name: str, v: Any) -> int:
    if isinstance(v, bool):
        raise UsageError(f"{name}: expected an integer, got {v!r}")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    try:
        return int(str(v).strip())
    except ValueError:
        raise UsageError(f"{name}: expected an integer, got {v!r}") from None


def _as_bool(name: str, v: Any) -> bool:
    """ADM's ``str2bool``: yes/true/t/y/1 and no/false/f/n/0."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise UsageError(f"{name}: expected a boolean, got {v!r}")


def _as_float(name: str, v: Any) -> float:
    if isinstance(v, bool):
        raise UsageError(f"{name}: expected a number, got {v!r}")
    try:
        return float(str(v).strip()) if not isinstance(v, (int, float)) else float(v)
    except ValueError:
        raise UsageError(f"{name}: expected a number, got {v!r}") from None


def _as_list_str(v: Any) -> str:
    """``"1,2,2"``, ``[1, 2, 2]`` or ``(1, 2, 2)`` -> ``"1,2,2"``."""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v).strip()


def _mult_value(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def format_channel_mult(mults: Sequence[float]) -> str:
    """``(1, 2, 2, 2)`` -> ``"1,2,2,2"``; ``(0.5, 1)`` -> ``"0.5,1"``."""
    return ",".join(f"{_mult_value(m):g}" for m in mults)


def parse_channel_mult(channel_mult: str, image_size: int) -> tuple[float | int, ...]:
    """The per-level width multipliers; ``""`` means ADM's default for ``image_size``."""
    s = _as_list_str(channel_mult)
    if s == "":
        if image_size not in ADM_DEFAULT_CHANNEL_MULT:
            known = ", ".join(str(k) for k in sorted(ADM_DEFAULT_CHANNEL_MULT))
            raise UsageError(
                f"channel_mult: ADM has no default for image_size {image_size} (only {known}); "
                "pass channel_mult explicitly, e.g. \"1,2,2\""
            )
        return tuple(_mult_value(m) for m in ADM_DEFAULT_CHANNEL_MULT[image_size])
    try:
        mults = tuple(_mult_value(float(p)) for p in s.split(","))
    except ValueError:
        raise UsageError(f"channel_mult: expected numbers like \"1,2,2,2\", got {s!r}") from None
    if any(m <= 0 for m in mults):
        raise UsageError(f"channel_mult: multipliers must be positive, got {s!r}")
    return mults


def parse_attention_resolutions(attention_resolutions: str) -> tuple[int, ...]:
    """``"16,8"`` -> ``(16, 8)`` (pixel resolutions, largest first, no repeats); ``""`` -> ``()``."""
    s = _as_list_str(attention_resolutions)
    if s == "":
        return ()
    try:
        res = {int(p) for p in s.split(",")}
    except ValueError:
        raise UsageError(
            f"attention_resolutions: expected comma-separated integers like \"16,8\", got {s!r}"
        ) from None
    if any(r <= 0 for r in res):
        raise UsageError(f"attention_resolutions: resolutions must be positive, got {s!r}")
    return tuple(sorted(res, reverse=True))


def attention_ds(attention_resolutions: str, image_size: int) -> tuple[int, ...]:
    """ADM's conversion of attention resolutions (pixels) to downsampling rates ``ds = image_size // res``."""
    return tuple(image_size // r for r in parse_attention_resolutions(attention_resolutions))


def _canonical_resolutions(res: Sequence[int]) -> str:
    return ",".join(str(r) for r in sorted(set(res), reverse=True))


# ----------------------------------------------------------------------------------------------------------
# Flags -> ModelConfig -> UNetModel arguments


def normalize_adm_flags(flags: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model flags of ``flags``, typed; ignored flags dropped; unknown names raise :class:`UsageError`."""
    out: dict[str, Any] = {}
    unknown = []
    for raw, v in (flags or {}).items():
        name = _flag_name(raw)
        if name in ADM_IGNORED_FLAGS:
            continue
        if name not in ADM_MODEL_FLAG_DEFAULTS:
            unknown.append(name)
            continue
        if name in _INT_FLAGS:
            v = _as_int(name, v)
        elif name in _BOOL_FLAGS:
            v = _as_bool(name, v)
        elif name == "dropout":
            v = _as_float(name, v)
            if not 0.0 <= v < 1.0:
                raise UsageError(f"dropout: must be in [0, 1), got {v}")
        elif name == "num_classes":
            v = None if v is None or str(v).strip().lower() in ("", "none") else _as_int(name, v)
        else:  # channel_mult, attention_resolutions
            v = _as_list_str(v)
        out[name] = v
    if unknown:
        raise UsageError(f"adm flags: unknown flag name(s): {', '.join(sorted(unknown))}")
    return out


def model_config_from_adm_flags(flags: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of an ADM flag dict (flags not given take ADM's defaults, image_size 64).

    ``channel_mult=""`` resolves to ADM's default for the image size (unknown sizes raise); ``class_cond``
    gives ``num_classes`` (1000 as guided-diffusion unless ``num_classes`` is passed).
    """
    f = dict(ADM_MODEL_FLAG_DEFAULTS)
    f.update(normalize_adm_flags(flags))
    image_size = f["image_size"]
    if image_size < 1:
        raise UsageError(f"image_size: must be positive, got {image_size}")
    for name in ("num_channels", "num_res_blocks", "in_channels"):
        if f[name] < 1:
            raise UsageError(f"{name}: must be at least 1, got {f[name]}")
    if f["num_head_channels"] != -1 and f["num_head_channels"] < 1:
        raise UsageError(f"num_head_channels: must be -1 or positive, got {f['num_head_channels']}")
    if f["num_heads"] < 1:
        raise UsageError(f"num_heads: must be positive, got {f['num_heads']}")
    if f["num_heads_upsample"] != -1 and f["num_heads_upsample"] < 1:
        raise UsageError(f"num_heads_upsample: must be -1 or positive, got {f['num_heads_upsample']}")
    if f["num_classes"] is not None and not f["class_cond"]:
        raise UsageError("num_classes: given but class_cond is false")
    num_classes = (f["num_classes"] or ADM_NUM_CLASSES) if f["class_cond"] else None
    return ModelConfig(
        arch="adm_unet",
        image_size=image_size,
        in_channels=f["in_channels"],
        num_channels=f["num_channels"],
        num_res_blocks=f["num_res_blocks"],
        channel_mult=format_channel_mult(parse_channel_mult(f["channel_mult"], image_size)),
        attention_resolutions=_canonical_resolutions(parse_attention_resolutions(f["attention_resolutions"])),
        num_heads=f["num_heads"],
        num_head_channels=f["num_head_channels"],
        num_heads_upsample=f["num_heads_upsample"],
        use_scale_shift_norm=f["use_scale_shift_norm"],
        resblock_updown=f["resblock_updown"],
        use_new_attention_order=f["use_new_attention_order"],
        dropout=f["dropout"],
        learn_sigma=f["learn_sigma"],
        num_classes=num_classes,
    )


def adm_flags_from_model_config(cfg: ModelConfig) -> dict[str, Any]:
    """The ADM flag dict of an ``adm_unet`` config (inverse of :func:`model_config_from_adm_flags`)."""
    flags = {name: getattr(cfg, name) for name in ADM_MODEL_FLAG_DEFAULTS if hasattr(cfg, name)}
    flags["class_cond"] = cfg.num_classes is not None
    return flags


def unet_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The UNetModel arguments of an ``adm_unet`` config (as ADM's ``create_model``)."""
    return dict(
        image_size=cfg.image_size,
        in_channels=cfg.in_channels,
        model_channels=cfg.num_channels,
        out_channels=cfg.out_channels,
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=attention_ds(cfg.attention_resolutions, cfg.image_size),
        dropout=cfg.dropout,
        channel_mult=parse_channel_mult(cfg.channel_mult, cfg.image_size),
        num_classes=cfg.num_classes,
        num_heads=cfg.num_heads,
        num_head_channels=cfg.num_head_channels,
        num_heads_upsample=cfg.num_heads_upsample,
        use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
        use_new_attention_order=cfg.use_new_attention_order,
    )


# ----------------------------------------------------------------------------------------------------------
# State dict shapes -> ModelConfig


@dataclass
class InferredConfig:
    """The result of :func:`infer_adm_config`.

    ``assumed`` maps each setting the shapes do not determine and the flags did not give to the ADM default
    that was used (e.g. ``{"num_heads": 4, "num_head_channels": -1, ...}``): a loader should tell the user.
    """

    config: ModelConfig
    assumed: dict[str, Any] = field(default_factory=dict)


_BLOCK_KEY = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.+)$")


def _shape_of(v: Any) -> tuple[int, ...]:
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    return tuple(int(s) for s in v)


def _submodule_kind(params: set[str]) -> str:
    if "in_layers.0.weight" in params:
        return "res"
    if "qkv.weight" in params:
        return "attn"
    if "conv.weight" in params:
        return "upsample"
    if "op.weight" in params:
        return "downsample"
    if params <= {"weight", "bias"}:
        return "conv"
    return "unknown"


class _Shapes:
    """A state dict's shapes by key, and the errors that name its ``source``."""

    def __init__(self, state_dict: Mapping[str, Any], source: str) -> None:
        self.source = source
        self.by_key = {str(k): _shape_of(v) for k, v in state_dict.items()}

    def __contains__(self, key: str) -> bool:
        return key in self.by_key

    def __call__(self, key: str) -> tuple[int, ...]:
        if key not in self.by_key:
            prefixed = [k[: -len(key)] for k in self.by_key if k.endswith("." + key)]
            hint = f"; its keys carry the prefix {prefixed[0]!r}" if prefixed else ""
            raise UsageError(f"{self.source}: not an ADM UNet state dict (no key {key!r}{hint})")
        return self.by_key[key]

    def layout_error(self, what: str) -> UsageError:
        return UsageError(f"{self.source}: not an ADM UNet layout ({what})")

    def res_width(self, part: str, i: int) -> int:
        """The output width of the ResBlock opening block ``i`` of ``part`` (its last conv)."""
        return self(f"{part}.{i}.0.out_layers.3.weight")[0]


@dataclass
class _Layout:
    """What an ADM UNet state dict's shapes determine."""

    in_channels: int
    num_channels: int
    learn_sigma: bool
    num_res_blocks: int
    n_levels: int
    widths: list[int]  # per level
    mults: list[float]  # widths / num_channels
    attn_levels: set[int]  # downsampling rates 2**level of the levels holding attention
    resblock_updown: bool | None  # None: a single level, nothing to tell
    use_scale_shift_norm: bool
    num_classes: int | None


def _stem(sh: _Shapes) -> tuple[int, tuple[int, ...], bool]:
    """``num_channels``, the input conv's shape and ``learn_sigma``, from the time embedding and the stem / head
    convs."""
    te = sh("time_embed.0.weight")
    mc = te[1]
    if te != (4 * mc, mc):
        raise sh.layout_error(f"time_embed.0.weight has shape {list(te)}")
    conv_in = sh("input_blocks.0.0.weight")
    if len(conv_in) != 4:
        raise UsageError(f"{sh.source}: only 2-D image UNets are supported (input conv shape {list(conv_in)})")
    in_channels = conv_in[1]
    out_channels = sh("out.2.weight")[0]
    if out_channels == in_channels:
        learn_sigma = False
    elif out_channels == 2 * in_channels:
        learn_sigma = True
    else:
        raise sh.layout_error(f"{out_channels} output channels for {in_channels} input channels")
    return mc, conv_in, learn_sigma


def _block_kinds(sh: _Shapes) -> dict[str, dict[int, list[str]]]:
    """kinds[part][i] = the kinds of the submodules of block i (``res``, ``attn``, ...), input and output
    blocks alike in number."""
    blocks: dict[str, dict[int, dict[int, set[str]]]] = {"input_blocks": {}, "output_blocks": {}}
    for key in sh.by_key:
        m = _BLOCK_KEY.match(key)
        if m:
            part, i, j, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
            blocks[part].setdefault(i, {}).setdefault(j, set()).add(rest)
    kinds = {part: {i: [_submodule_kind(b[i][j]) for j in sorted(b[i])] for i in b}
             for part, b in blocks.items()}
    n_out = max(kinds["output_blocks"], default=-1) + 1
    n_in = max(kinds["input_blocks"], default=-1) + 1
    if n_out == 0 or n_in != n_out or any(i not in kinds["output_blocks"] for i in range(n_out)):
        raise sh.layout_error(f"{n_in} input blocks and {n_out} output blocks")
    return kinds


def _output_levels(sh: _Shapes, out_kinds: dict[int, list[str]], n_out: int) -> tuple[int, int, bool | None]:
    """``num_res_blocks``, the number of levels and ``resblock_updown`` (None for one level) from the output
    blocks: (num_res_blocks + 1) per level, the last of every level but the top one upsampling."""
    ups = [i for i in range(n_out) if out_kinds[i][-1] == "upsample" or out_kinds[i].count("res") == 2]
    nrb = n_out - 1 if not ups else ups[0]
    if nrb < 1 or n_out % (nrb + 1):
        raise sh.layout_error("cannot split the output blocks into levels")
    n_levels = n_out // (nrb + 1)
    if ups != [(nrb + 1) * j + nrb for j in range(n_levels - 1)]:
        raise sh.layout_error("upsampling blocks are not at the end of each level")
    updown_kinds = {"res" if out_kinds[i].count("res") == 2 else "upsample" for i in ups}
    if len(updown_kinds) > 1:
        raise sh.layout_error("mixed upsampling blocks")
    return nrb, n_levels, ("res" in updown_kinds) if ups else None


def _decoder_widths(
    sh: _Shapes, out_kinds: dict[int, list[str]], n_out: int, nrb: int, n_levels: int
) -> tuple[list[int], set[int]]:
    """The width of each level (from the first conv of each output block's ResBlock) and the decoder's
    attention levels (as downsampling rates)."""
    widths: list[int] = [0] * n_levels
    attn_out: set[int] = set()
    for i in range(n_out):
        level = n_levels - 1 - i // (nrb + 1)
        if out_kinds[i][0] != "res":
            raise sh.layout_error(f"output block {i} does not start with a ResBlock")
        w = sh.res_width("output_blocks", i)
        if i % (nrb + 1) == 0:
            widths[level] = w
        elif w != widths[level]:
            raise sh.layout_error(f"output block {i} has width {w}, its level {widths[level]}")
        if len(out_kinds[i]) > 1 and out_kinds[i][1] == "attn":
            attn_out.add(2 ** level)
    return widths, attn_out


def _encoder_attention(
    sh: _Shapes, in_kinds: dict[int, list[str]], nrb: int, n_levels: int, widths: list[int]
) -> set[int]:
    """The encoder's attention levels (as downsampling rates), its ResBlocks checked against the widths."""
    attn_in: set[int] = set()
    for level in range(n_levels):
        has_attn = []
        for j in range(nrb):
            i = 1 + level * (nrb + 1) + j
            if i not in in_kinds or in_kinds[i][0] != "res" or sh.res_width("input_blocks", i) != widths[level]:
                raise sh.layout_error(f"input block {i} is not a ResBlock of width {widths[level]}")
            has_attn.append(len(in_kinds[i]) > 1 and in_kinds[i][1] == "attn")
        if any(has_attn) != all(has_attn):
            raise sh.layout_error(f"attention in only some blocks of level {level}")
        if all(has_attn):
            attn_in.add(2 ** level)
    return attn_in


def _infer_layout(sh: _Shapes) -> _Layout:
    """Everything the state dict's key names and shapes determine (layout errors raise)."""
    mc, conv_in, learn_sigma = _stem(sh)
    kinds = _block_kinds(sh)
    out_kinds = kinds["output_blocks"]
    n_out = max(out_kinds) + 1
    nrb, n_levels, resblock_updown = _output_levels(sh, out_kinds, n_out)
    widths, attn_out = _decoder_widths(sh, out_kinds, n_out, nrb, n_levels)
    attn_in = _encoder_attention(sh, kinds["input_blocks"], nrb, n_levels, widths)
    if attn_in != attn_out:
        raise sh.layout_error("encoder and decoder hold attention at different levels")
    if "middle_block.1.qkv.weight" not in sh:
        raise sh.layout_error("no attention in the middle block")
    if conv_in[0] != widths[0]:
        raise sh.layout_error(f"input conv width {conv_in[0]} differs from level 0 width {widths[0]}")
    mults = [w / mc for w in widths]
    if any(int(m * mc) != w for m, w in zip(mults, widths, strict=True)):
        raise sh.layout_error(f"widths {widths} are not multiples of num_channels {mc}")
    emb_out = sh("input_blocks.1.0.emb_layers.1.weight")[0]
    if emb_out not in (widths[0], 2 * widths[0]):
        raise sh.layout_error(f"embedding projection of {emb_out} for width {widths[0]}")
    return _Layout(
        in_channels=conv_in[1],
        num_channels=mc,
        learn_sigma=learn_sigma,
        num_res_blocks=nrb,
        n_levels=n_levels,
        widths=widths,
        mults=mults,
        attn_levels=attn_in,
        resblock_updown=resblock_updown,
        use_scale_shift_norm=emb_out == 2 * widths[0],
        num_classes=sh.by_key["label_emb.weight"][0] if "label_emb.weight" in sh else None,
    )


def _check_determined(lay: _Layout, given: dict[str, Any], source: str) -> None:
    """Refuse a flag that contradicts what the shapes say."""
    determined: dict[str, Any] = {
        "in_channels": lay.in_channels,
        "num_channels": lay.num_channels,
        "num_res_blocks": lay.num_res_blocks,
        "learn_sigma": lay.learn_sigma,
        "use_scale_shift_norm": lay.use_scale_shift_norm,
        "class_cond": lay.num_classes is not None,
    }
    if lay.resblock_updown is not None:
        determined["resblock_updown"] = lay.resblock_updown
    determined["num_classes"] = lay.num_classes
    for name, value in determined.items():
        if name in given and given[name] != value:
            raise UsageError(f"{name}: flag says {given[name]!r} but {source} has {value!r}")


def _image_size(given: dict[str, Any], n_levels: int, source: str) -> int:
    """``image_size`` from the flags (the shapes do not determine it), checked against the number of levels."""
    if "image_size" not in given:
        raise UsageError(
            f"{source}: the state dict does not determine image_size: pass --adm-flags with image_size"
        )
    image_size = given["image_size"]
    if image_size < 1 or image_size % 2 ** (n_levels - 1):
        raise UsageError(
            f"image_size: {image_size} is not divisible by {2 ** (n_levels - 1)} ({n_levels} levels)"
        )
    return image_size


def _channel_mult(given: dict[str, Any], image_size: int, mults: list[float], source: str) -> str:
    """The canonical ``channel_mult`` of the shapes, a contradicting flag refused."""
    channel_mult = format_channel_mult(mults)
    if "channel_mult" in given and (given["channel_mult"] != "" or image_size in ADM_DEFAULT_CHANNEL_MULT):
        flag_mults = parse_channel_mult(given["channel_mult"], image_size)
        if [float(m) for m in flag_mults] != [float(m) for m in mults]:
            raise UsageError(f"channel_mult: flag gives {format_channel_mult(flag_mults)} but {source} has "
                             f"{channel_mult}")
    return channel_mult


def _attention_resolutions(given: dict[str, Any], image_size: int, lay: _Layout, source: str) -> str:
    """The canonical ``attention_resolutions``: the flag's (resolutions with no level of their own are kept,
    as ADM ignores them) if it agrees with the shapes, else the shapes' (no flag)."""
    attn_ds = sorted(lay.attn_levels)
    level_ds = {2 ** lv for lv in range(lay.n_levels)}
    if "attention_resolutions" not in given:
        return _canonical_resolutions(image_size // d for d in attn_ds)
    flag_res = parse_attention_resolutions(given["attention_resolutions"])
    if {image_size // r for r in flag_res} & level_ds != lay.attn_levels:
        shown = _canonical_resolutions(image_size // d for d in attn_ds) or "none"
        raise UsageError(f"attention_resolutions: flag gives {given['attention_resolutions']!r} but "
                         f"{source} has attention at resolutions {shown} (image_size {image_size})")
    return _canonical_resolutions(flag_res)


def _pick(given: dict[str, Any], assumed: dict[str, Any], name: str) -> Any:
    """The flag ``name`` if given, else ADM's default, recorded in ``assumed``."""
    if name in given:
        return given[name]
    assumed[name] = ADM_MODEL_FLAG_DEFAULTS[name]
    return assumed[name]


def _check_heads(
    lay: _Layout, num_heads: int, num_head_channels: int, num_heads_upsample: int, assumed: dict[str, Any]
) -> None:
    """The head settings must at least be possible for every attention block's width."""
    hint = " (assumed ADM default: pass it in --adm-flags)"
    widths, attn_ds = lay.widths, sorted(lay.attn_levels)
    attn_widths = {"num_heads": {widths[int(d).bit_length() - 1] for d in attn_ds} | {widths[-1]},
                   "num_heads_upsample": {widths[int(d).bit_length() - 1] for d in attn_ds}}
    for w in sorted(attn_widths["num_heads"] | attn_widths["num_heads_upsample"]):
        if num_head_channels != -1:
            if w % num_head_channels:
                raise UsageError(f"num_head_channels: {num_head_channels} does not divide the attention "
                                 f"width {w}" + (hint if "num_head_channels" in assumed else ""))
            continue
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        for name, heads in (("num_heads", num_heads), ("num_heads_upsample", heads_up)):
            if w in attn_widths[name] and w % heads:
                raise UsageError(f"{name}: {heads} heads do not divide the attention width {w}"
                                 + (hint if name in assumed else ""))


def infer_adm_config(state_dict: Mapping[str, Any], flags: Mapping[str, Any] | None = None, *,
                     source: str = "state dict") -> InferredConfig:
    """Infer an ADM UNet's :class:`ModelConfig` from its state dict (tensors or plain shapes) and flags.

    Determined by the shapes: ``in_channels``, ``num_channels``, ``learn_sigma`` (out channels = 2 x in),
    ``num_res_blocks``, ``channel_mult``, ``resblock_updown`` (when there is more than one level),
    ``use_scale_shift_norm`` (embedding projection of 2 x width), the levels holding attention and
    ``num_classes``.
    Not determined: ``image_size`` (only up to the attention resolutions; required in ``flags``), the head
    settings and ``dropout`` (taken from ``flags``, else ADM defaults listed in ``assumed``). Flags that
    contradict the shapes raise :class:`UsageError` naming the flag; ``source`` names the file in messages.
    """
    given = normalize_adm_flags(flags)
    lay = _infer_layout(_Shapes(state_dict, source))
    _check_determined(lay, given, source)
    image_size = _image_size(given, lay.n_levels, source)
    channel_mult = _channel_mult(given, image_size, lay.mults, source)
    attention_resolutions = _attention_resolutions(given, image_size, lay, source)

    # What the shapes do not say: flags, else ADM's defaults (reported).
    assumed: dict[str, Any] = {}
    num_heads = _pick(given, assumed, "num_heads")
    num_head_channels = _pick(given, assumed, "num_head_channels")
    num_heads_upsample = _pick(given, assumed, "num_heads_upsample")
    use_new_attention_order = _pick(given, assumed, "use_new_attention_order")
    dropout = _pick(given, assumed, "dropout")
    resblock_updown = lay.resblock_updown
    if resblock_updown is None:
        resblock_updown = _pick(given, assumed, "resblock_updown")
    _check_heads(lay, num_heads, num_head_channels, num_heads_upsample, assumed)

    cfg = ModelConfig(
        arch="adm_unet",
        image_size=image_size,
        in_channels=lay.in_channels,
        num_channels=lay.num_channels,
        num_res_blocks=lay.num_res_blocks,
        channel_mult=channel_mult,
        attention_resolutions=attention_resolutions,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=lay.use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
        dropout=dropout,
        learn_sigma=lay.learn_sigma,
        num_classes=lay.num_classes,
    )
    return InferredConfig(config=cfg, assumed=assumed)


def infer_model_config(state_dict: Mapping[str, Any], flags: Mapping[str, Any] | None = None) -> ModelConfig:
    """:func:`infer_adm_config` without the report of assumed settings."""
    return infer_adm_config(state_dict, flags).config

