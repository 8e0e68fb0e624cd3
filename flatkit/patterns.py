"""Name patterns: a pattern matches a parameter or module name as a glob (the whole name, ``fnmatch``) or as a
regular expression (``re.search``). Used by the Objective's ``include`` / ``exclude`` and by quantize's
``skip``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from flatkit.errors import UsageError


def matches(pattern: str, name: str) -> bool:
    """A name matches a pattern as a glob (whole name, ``fnmatch``) or as a regular expression
    (``re.search``)."""
    if fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def matches_any(patterns: Sequence[str], name: str) -> bool:
    """Whether any of ``patterns`` matches ``name``."""
    return any(matches(p, name) for p in patterns)


def check_patterns(option: str, patterns: Sequence[str], names: Sequence[str], what: str) -> None:
    """A usage error naming ``option`` and the first pattern that matches none of ``names`` (``what`` they are):
    a typo would otherwise silently select everything, or nothing."""
    for p in patterns:
        if not any(matches(p, n) for n in names):
            raise UsageError(f"{option}: pattern {p!r} matches no {what}")


def select_names(
    names: Sequence[str], include: Sequence[str] | str | None, exclude: Sequence[str] | str | None
) -> list[str]:
    """The names kept by ``include`` patterns (all when None) minus those hit by ``exclude`` patterns.

    A pattern that matches no name at all is an error naming it (a typo would otherwise silently analyse
    every parameter, or none).
    """
    include = [include] if isinstance(include, str) else include
    exclude = [exclude] if isinstance(exclude, str) else exclude
    for option, pats in (("include", include), ("exclude", exclude)):
        check_patterns(option, pats or (), names, "parameter")
    kept = [n for n in names if include is None or matches_any(include, n)]
    kept = [n for n in kept if not matches_any(exclude or (), n)]
    if not kept:
        raise UsageError("include: no parameter left to analyse (with exclude)")
    return kept
