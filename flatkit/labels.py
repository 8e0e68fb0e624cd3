"""The one labelling rule for a model in a result, a legend or a report row.

A model's label is the run's name plus its weights, ``NAME:WEIGHTS``: NAME is the run folder's name when the file
is called ``ckpt.pt`` / ``model.pt`` (as ``flatkit train`` writes them) or is a directory (a diffusers folder),
else the file's stem. ``--labels`` replaces the labels; repeated labels get ``#2``, ``#3``, ... appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

RUN_FILE_STEMS = ("ckpt", "model")


def run_name(path: str | None) -> str:
    """NAME of a checkpoint path (see the module docstring)."""
    if not path:
        return "model"
    p = Path(str(path).rstrip("/"))
    if p.is_dir():
        return p.name or "model"
    if p.stem in RUN_FILE_STEMS and p.parent.name:
        return p.parent.name
    return p.stem or "model"


def default_label(path: str | None, weights: str | None) -> str:
    return f"{run_name(path)}:{weights or 'raw'}"


def unique(labels: Sequence[str]) -> list[str]:
    """Labels made unique by appending ``#k`` to the k-th repeat."""
    out: list[str] = []
    for lab in labels:
        new, k = lab, 2
        while new in out:
            new, k = f"{lab}#{k}", k + 1
        out.append(new)
    return out
