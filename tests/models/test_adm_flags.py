"""ADM flags <-> ModelConfig, and inference of the config from a state dict's shapes."""

from __future__ import annotations

import dataclasses

import pytest

from flatkit.config import ModelConfig
from flatkit.errors import UsageError
from flatkit.models import build_model, infer_adm_config, infer_model_config, model_config_from_adm_flags
from flatkit.models.adm_flags import (
    ADM_DEFAULT_CHANNEL_MULT,
    adm_flags_from_model_config,
    attention_ds,
    parse_channel_mult,
    unet_kwargs,
)

HEAD_FLAGS = ("num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order", "dropout")


def _shapes(cfg: ModelConfig) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}


def _undetermined_flags(cfg: ModelConfig) -> dict:
    """The flags a state dict cannot tell: image_size and the attention head settings (and dropout)."""
    return {"image_size": cfg.image_size, **{k: getattr(cfg, k) for k in HEAD_FLAGS}}


# ---------------------------------------------------------------------------------------------------------
# flags -> config


def test_fixture_flags(adm_small_flags):
    a = model_config_from_adm_flags(adm_small_flags["small_a"]["flags"])
    assert (a.channel_mult, a.attention_resolutions, a.num_head_channels) == ("1,2,2", "8,4", 8)
    assert a.learn_sigma
    assert a.resblock_updown and a.use_new_attention_order and a.use_scale_shift_norm and a.out_channels == 6
    b = model_config_from_adm_flags(adm_small_flags["small_b"]["flags"])
    assert (b.num_heads, b.num_head_channels, b.use_scale_shift_norm, b.out_channels) == (4, -1, False, 3)
    assert unet_kwargs(b)["attention_resolutions"] == (2,)


@pytest.mark.parametrize("size", sorted(ADM_DEFAULT_CHANNEL_MULT))
def test_default_channel_mult_by_image_size(size):
    cfg = model_config_from_adm_flags({"image_size": size, "channel_mult": ""})
    assert parse_channel_mult(cfg.channel_mult, size) == ADM_DEFAULT_CHANNEL_MULT[size]
    assert cfg.channel_mult == {512: "0.5,1,1,2,2,4,4", 256: "1,1,2,2,4,4", 128: "1,1,2,3,4", 64: "1,2,3,4",
                                32: "1,2,2,2"}[size]


def test_adm_defaults_apply():
    cfg = model_config_from_adm_flags({})
    assert (cfg.image_size, cfg.num_channels, cfg.num_res_blocks, cfg.channel_mult) == (64, 128, 2, "1,2,3,4")
    assert (cfg.attention_resolutions, cfg.num_heads, cfg.use_scale_shift_norm, cfg.num_classes) == \
        ("16,8", 4, True, None)


def test_unknown_size_without_channel_mult_raises():
    with pytest.raises(UsageError, match="channel_mult"):
        model_config_from_adm_flags({"image_size": 16})


def test_command_line_strings_are_parsed():
    cfg = model_config_from_adm_flags({"--image_size": "32", "num-channels": "64", "learn_sigma": "True",
                                       "dropout": "0.1", "attention_resolutions": "8,16",
                                       "resblock_updown": "f"})
    assert (cfg.image_size, cfg.num_channels, cfg.learn_sigma, cfg.dropout) == (32, 64, True, 0.1)
    assert (cfg.attention_resolutions, cfg.resblock_updown) == ("16,8", False)
    assert attention_ds(cfg.attention_resolutions, cfg.image_size) == (2, 4)


def test_diffusion_and_training_flags_are_ignored():
    cfg = model_config_from_adm_flags({"image_size": 32, "diffusion_steps": 4000, "noise_schedule": "cosine",
                                       "use_fp16": True, "use_checkpoint": True,
                                       "rescale_learned_sigmas": True, "timestep_respacing": "ddim10",
                                       "lr": 1e-4, "input_pertub": 0.15})
    assert cfg == model_config_from_adm_flags({"image_size": 32})


@pytest.mark.parametrize("flags, name", [
    ({"image_size": 32, "num_chanels": 64}, "num_chanels"),
    ({"image_size": "big"}, "image_size"),
    ({"image_size": 32, "learn_sigma": "maybe"}, "learn_sigma"),
    ({"image_size": 32, "channel_mult": "1,x"}, "channel_mult"),
    ({"image_size": 32, "attention_resolutions": "16;8"}, "attention_resolutions"),
    ({"image_size": 32, "dropout": 1.5}, "dropout"),
    ({"image_size": 32, "num_head_channels": 0}, "num_head_channels"),
    ({"image_size": 32, "num_classes": 10}, "num_classes"),
])
def test_bad_flags_raise_naming_the_flag(flags, name):
    with pytest.raises(UsageError, match=name):
        model_config_from_adm_flags(flags)


def test_class_cond():
    assert model_config_from_adm_flags({"image_size": 32, "class_cond": True}).num_classes == 1000
    cfg = model_config_from_adm_flags({"image_size": 32, "class_cond": True, "num_classes": 10})
    assert cfg.num_classes == 10


def test_flags_round_trip_through_config(adm_full_configs):
    cfg = model_config_from_adm_flags(adm_full_configs["cifar10_32"]["flags"])
    assert model_config_from_adm_flags(adm_flags_from_model_config(cfg)) == cfg


# ---------------------------------------------------------------------------------------------------------
# state dict shapes -> config


def test_infer_full_configs_round_trip(adm_full_configs):
    for entry in adm_full_configs.values():
        true = model_config_from_adm_flags(entry["flags"])
        inferred = infer_adm_config(entry["state_dict"], _undetermined_flags(true))
        assert inferred.config == true
        assert inferred.assumed == {}


def test_infer_fixture_state_dicts_round_trip(adm_small):
    _, flags, fx = adm_small
    true = model_config_from_adm_flags(flags)
    assert infer_model_config(fx["state_dict"], _undetermined_flags(true)) == true
    # With only image_size the head settings and dropout are ADM's defaults, and reported as assumed.
    res = infer_adm_config(fx["state_dict"], {"image_size": 16})
    assert set(res.assumed) == {"num_heads", "num_head_channels", "num_heads_upsample",
                                "use_new_attention_order", "dropout"}
    assert res.assumed["num_heads"] == 4 and res.assumed["num_head_channels"] == -1
    assert dataclasses.replace(res.config, **{k: getattr(true, k) for k in HEAD_FLAGS}) == true


def test_infer_with_all_fixture_flags(adm_small):
    _, flags, fx = adm_small
    res = infer_adm_config(fx["state_dict"], flags)
    assert res.config == model_config_from_adm_flags(flags)
    assert set(res.assumed) <= {"num_heads", "num_heads_upsample", "num_head_channels",
                                "use_new_attention_order"}


@pytest.mark.parametrize("flags", [
    {"image_size": 32, "num_channels": 32, "num_res_blocks": 2, "channel_mult": "1",
     "attention_resolutions": "", "resblock_updown": True},
    {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,3",
     "attention_resolutions": "", "use_scale_shift_norm": False, "learn_sigma": True},
    {"image_size": 64, "num_channels": 64, "num_res_blocks": 2, "channel_mult": "1,1,2,2",
     "attention_resolutions": "32,8", "num_heads": 2, "num_heads_upsample": 1, "class_cond": True,
     "num_classes": 10},
    {"image_size": 32, "num_channels": 64, "num_res_blocks": 1, "channel_mult": "0.5,1,2",
     "attention_resolutions": "16", "num_head_channels": 32, "resblock_updown": True, "in_channels": 1},
])
def test_infer_other_layouts_round_trip(flags):
    true = model_config_from_adm_flags(flags)
    extra = {"resblock_updown": true.resblock_updown} if true.channel_mult.count(",") == 0 else {}
    assert infer_model_config(_shapes(true), {**_undetermined_flags(true), **extra}) == true


def test_infer_requires_image_size(adm_small):
    _, _, fx = adm_small
    with pytest.raises(UsageError, match="image_size"):
        infer_adm_config(fx["state_dict"], {})


@pytest.mark.parametrize("flag, value", [
    ("num_channels", 64), ("num_res_blocks", 3), ("learn_sigma", False), ("use_scale_shift_norm", False),
    ("resblock_updown", False), ("channel_mult", "1,2,4"), ("attention_resolutions", "16,8"),
    ("class_cond", True), ("num_head_channels", 24), ("num_heads", 3), ("num_heads_upsample", 5),
    ("image_size", 10),
])
def test_contradicting_flags_raise(adm_small_a_state_dict, flag, value):
    with pytest.raises(UsageError, match=flag):
        infer_adm_config(adm_small_a_state_dict, {"image_size": 16, flag: value})


def test_not_an_adm_state_dict_raises():
    with pytest.raises(UsageError, match="not an ADM UNet"):
        infer_adm_config({"weight": [3, 3]}, {"image_size": 32})
    shapes = _shapes(model_config_from_adm_flags({"image_size": 32, "num_channels": 32, "num_res_blocks": 1,
                                                  "channel_mult": "1,2", "attention_resolutions": "16"}))
    broken = {k: v for k, v in shapes.items() if not k.startswith("output_blocks.2.")}
    with pytest.raises(UsageError, match="not an ADM UNet"):
        infer_adm_config(broken, {"image_size": 32})
    with pytest.raises(UsageError, match="adm flags: unknown flag"):
        infer_adm_config(shapes, {"image_size": 32, "bogus": 1})
    with pytest.raises(UsageError, match="prefix 'module.'"):
        infer_adm_config({"module." + k: v for k, v in shapes.items()}, {"image_size": 32})
