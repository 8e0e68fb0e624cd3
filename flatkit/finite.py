"""Non-finite weights (issue 13, item 7): name the first non-finite tensor of a model, warn once for analyses
that record NaN losses as ``null`` (with a mask), refuse for those that cannot run on NaN (curvature)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch

from flatkit.errors import UsageError

_warned: set = set()


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """``"name (nan)"`` for the first floating tensor holding NaN or ±inf, None when all are finite."""
    for name, v in tensors.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            with torch.no_grad():
                if not bool(torch.isfinite(v).all()):
                    return f"{name} ({'nan' if bool(torch.isnan(v).any()) else 'inf'})"
    return None


def _tensors(source: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return source
    if hasattr(source, "params") and isinstance(source.params, Mapping):  # an Objective
        return source.params
    model = getattr(source, "model", source)
    return model.state_dict() if hasattr(model, "state_dict") else {}


def describe_source(source: Any) -> str:
    """``"ckpt.pt (weights ema_0.9)"`` for a Run or an Objective built from one."""
    path = getattr(source, "path", None) or getattr(source, "source_path", None) or "the model"
    weights = getattr(source, "weights", None) or getattr(source, "source_weights", None)
    return f"{path} (weights {weights})" if isinstance(weights, str) else str(path)


def warn_non_finite(source: Any, consequence: str = "its losses are recorded as null") -> str | None:
    """One ``warning:`` line on stderr (once per model and process) when ``source`` has non-finite weights;
    returns the offending tensor, None when all are finite."""
    bad = first_non_finite(_tensors(source))
    if bad is not None:
        key = (describe_source(source), bad)
        if key not in _warned:
            _warned.add(key)
            print(f"warning: {key[0]}: non-finite weights, first in tensor {bad}; {consequence}",
                  file=sys.stderr, flush=True)
    return bad


def refuse_non_finite(source: Any, analysis: str) -> None:
    """A UsageError naming the checkpoint, the weights and the tensor when ``source`` has non-finite weights."""
    bad = first_non_finite(_tensors(source))
    if bad is not None:
        raise UsageError(f"{describe_source(source)}: non-finite weights, first in tensor {bad}; "
                         f"{analysis} cannot run on them")
