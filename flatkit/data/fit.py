"""Data and model must fit before any work starts: kind (2-D points vs images), channels and resolution of a
data set checked against what the model takes (issue 13, item 6), with one line naming ``--data`` and the
checkpoint and saying which spec option would make them fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flatkit.errors import UsageError


def model_sample_shape(run: Any) -> tuple[int, ...] | None:
    """(C, H, W) or (D,) that ``run``'s model takes: what the config of a loaded checkpoint says; None for a custom
    model or a Run built in Python (``path`` None), whose config need not describe the model."""
    from flatkit.config import ModelConfig

    cfg = getattr(getattr(run, "config", None), "model", None)
    if not isinstance(cfg, ModelConfig) or str(cfg.arch).startswith("custom") or getattr(run, "path", None) is None:
        return None  # a custom model (--model MODULE:FACTORY) or a Run built by hand declares no input shape
    from flatkit.sampling import sample_shape

    return tuple(sample_shape(cfg))


def _what(shape: Sequence[int]) -> str:
    if len(shape) == 1:
        return f"{shape[0]}-D points"
    c, h, w = shape
    return f"{'grayscale' if c == 1 else 'RGB' if c == 3 else f'{c}-channel'} {h}x{w} images"


def check_fits(data_shape: Sequence[int], model_shape: Sequence[int] | None, spec: str, ckpt: Any) -> None:
    """A UsageError (exit 2) naming ``--data`` and ``ckpt`` when items of ``data_shape`` cannot be fed to a model
    taking ``model_shape`` (None: not known, nothing checked)."""
    if model_shape is None:
        return
    data_shape, model_shape = tuple(int(v) for v in data_shape), tuple(int(v) for v in model_shape)
    if data_shape == model_shape:
        return
    ckpt = ckpt or "the checkpoint"
    head = f"--data {spec}: {_what(data_shape)} do not fit the model of {ckpt}, which takes {_what(model_shape)}"
    if len(data_shape) != len(model_shape):
        raise UsageError(f"{head}; use a data set of that kind")
    if len(data_shape) == 1:
        raise UsageError(head)
    hint = []
    if data_shape[0] != model_shape[0] and model_shape[0] in (1, 3):
        hint.append(f"channels={model_shape[0]}")
    if data_shape[1:] != model_shape[1:] and model_shape[1] == model_shape[2]:
        hint.append(f"image_size={model_shape[1]}")
    raise UsageError(head + (f"; add ?{'&'.join(hint)} to the spec" if hint else ""))
