"""The models of one loss-based analysis: the objective, those of ``compare`` after it, their labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flatkit.errors import UsageError


def check_determinism(objs: Sequence[Any]) -> None:
    """Run each objective's ``check_determinism()`` (those that have one): two evaluations must agree bit for
    bit."""
    for o in objs:
        if hasattr(o, "check_determinism"):
            o.check_determinism()


def labelled_objectives(
    obj: Any, compare: Sequence[Any] = (), labels: Sequence[str] | None = None, check: bool = True
) -> tuple[list[Any], list[str]]:
    """``[obj, *compare]`` and one label each (``labels``, else ``model0``, ``model1`` …); with ``check``, each
    objective's determinism checked first."""
    objs = [obj, *compare]
    labels = list(labels) if labels is not None else [f"model{m}" for m in range(len(objs))]
    if len(labels) != len(objs):
        raise UsageError(f"labels: {len(labels)} given for {len(objs)} models")
    if check:
        check_determinism(objs)
    return objs, labels
