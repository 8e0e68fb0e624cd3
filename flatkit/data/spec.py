"""Data specs: ``PREFIX:TARGET[?key=value&...]`` (docs/data.md).

Prefixes:

- ``builtin:NAME`` synthetic, offline, deterministic (``shapes16``, ``shapes32``, ``gaussians2d``,
  ``swissroll``); options ``n`` (number of samples) and ``seed``.
- ``cifar10:PATH`` the official python batches (directory or ``cifar-10-python.tar.gz``); option ``split``
  (``train`` or ``test``).
- ``folder:PATH`` image files found recursively.
- ``npz:PATH`` ADM sample file (``arr_0`` uint8 NHWC, or (N, H, W) grayscale).

Image specs also take ``image_size`` (ADM centre crop to S x S), ``channels`` (1: grayscale, 3: RGB) and, on
the path prefixes, ``n`` (the first N items).

Parsing never touches the file system; :func:`normalise_spec` makes paths absolute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from flatkit.errors import UsageError

PREFIXES = ("builtin", "cifar10", "folder", "npz")

#: built-in name -> (kind, default options). Every built-in takes ``n`` and ``seed``.
BUILTINS: dict[str, tuple[str, dict[str, int]]] = {
    "shapes16": ("image", {"n": 8192, "seed": 0}),
    "shapes32": ("image", {"n": 8192, "seed": 0}),
    "gaussians2d": ("points", {"n": 8192, "seed": 0}),
    "swissroll": ("points", {"n": 8192, "seed": 0}),
}

#: options accepted by the path prefixes, with their defaults and allowed values.
_PATH_OPTIONS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "cifar10": {"split": ("train", ("train", "test"))},
    "folder": {},
    "npz": {},
}

_MAX_BUILTIN_N = 10_000_000

#: integer options of the image specs (default None: as stored): resize (ADM centre crop), convert, keep the
#: first n items
_INT_OPTIONS: dict[str, tuple[int, int]] = {"image_size": (1, 8192), "channels": (1, 3), "n": (1, 2**62)}


@dataclass(frozen=True)
class ParsedSpec:
    """A parsed data spec: prefix, target (built-in name or path) and fully defaulted options."""

    prefix: str
    target: str
    options: dict

    @property
    def kind(self) -> str:
        """``"image"`` or ``"points"``."""
        if self.prefix == "builtin":
            return BUILTINS[self.target][0]
        return "image"


def builtin_names() -> list[str]:
    """Names accepted by ``builtin:NAME``."""
    return sorted(BUILTINS)


def _split(spec: str) -> tuple[str, str, str | None]:
    if not isinstance(spec, str) or ":" not in spec:
        raise UsageError(f"--data {spec!r}: expected PREFIX:TARGET with PREFIX one of {', '.join(PREFIXES)}")
    prefix, _, rest = spec.partition(":")
    prefix = prefix.strip().lower()
    if prefix not in PREFIXES:
        raise UsageError(
            f"--data {spec!r}: unknown prefix {prefix!r} (expected one of {', '.join(PREFIXES)})"
        )
    query: str | None = None
    head, sep, tail = rest.rpartition("?")
    if sep and "=" in tail:  # a '?' inside a path without key=value after it stays part of the path
        rest, query = head, tail
    if not rest:
        raise UsageError(
            f"--data {spec!r}: empty {'name' if prefix == 'builtin' else 'path'} after '{prefix}:'"
        )
    return prefix, rest, query


def _parse_query(spec: str, query: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not query:
        return out
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"--data {spec!r}: option {item!r} is not key=value")
        if key in out:
            raise UsageError(f"--data {spec!r}: option {key!r} given twice")
        out[key] = value.strip()
    return out


def _parse_int(spec: str, key: str, value: str, lo: int, hi: int) -> int:
    try:
        v = int(value)
    except ValueError:
        raise UsageError(f"--data {spec!r}: option {key}={value!r} is not an integer") from None
    if not lo <= v <= hi:
        raise UsageError(f"--data {spec!r}: option {key}={v} out of range [{lo}, {hi}]")
    return v


def _parse_image_int(spec: str, key: str, value: str) -> int:
    v = _parse_int(spec, key, value, *_INT_OPTIONS[key])
    if key == "channels" and v not in (1, 3):
        raise UsageError(f"--data {spec!r}: option channels={v} must be 1 (grayscale) or 3 (RGB)")
    return v


def parse_spec(spec: str) -> ParsedSpec:
    """Parse and validate a data spec (prefix, built-in name, option names and values); no file access."""
    prefix, target, query = _split(spec)
    raw = _parse_query(spec, query)
    if prefix == "builtin":
        name = target.strip().lower()
        if name not in BUILTINS:
            raise UsageError(
                f"--data {spec!r}: unknown built-in {name!r} (expected one of {', '.join(builtin_names())})"
            )
        options: dict = _defaults(prefix, name)
        image_keys = ("image_size", "channels") if BUILTINS[name][0] == "image" else ()
        for key, value in raw.items():
            if key == "n":
                options["n"] = _parse_int(spec, key, value, 1, _MAX_BUILTIN_N)
            elif key == "seed":
                options["seed"] = _parse_int(spec, key, value, 0, 2**63 - 1)
            elif key in image_keys:
                options[key] = _parse_image_int(spec, key, value)
            else:
                raise UsageError(f"--data {spec!r}: unknown option {key!r} for builtin {name} "
                                 f"(expected {', '.join(['n', 'seed', *image_keys])})")
        return ParsedSpec(prefix, name, options)
    allowed = _PATH_OPTIONS[prefix]
    options = _defaults(prefix, target)
    for key, value in raw.items():
        if key in _INT_OPTIONS:
            options[key] = _parse_image_int(spec, key, value)
            continue
        if key not in allowed:
            expected = ", ".join([*allowed, *_INT_OPTIONS])
            raise UsageError(f"--data {spec!r}: unknown option {key!r} for {prefix} (expected {expected})")
        choices = allowed[key][1]
        if value not in choices:
            raise UsageError(f"--data {spec!r}: option {key}={value!r} not one of {', '.join(choices)}")
        options[key] = value
    return ParsedSpec(prefix, target, options)


def parse_data_spec(spec: str) -> tuple[str, str]:
    """``"builtin:shapes16?n=64"`` -> ``("builtin", "shapes16")``; ``"npz:s.npz"`` -> ``("npz", "s.npz")``

    Options (after ``?``) are validated but not returned; use :func:`parse_spec` for them.
    Raises UsageError on an unknown prefix, an unknown built-in, an empty target or a bad option.
    """
    p = parse_spec(spec)
    return p.prefix, p.target


def spec_kind(spec: str) -> str:
    """``"image"`` or ``"points"`` for a spec, without loading anything."""
    return parse_spec(spec).kind


def _defaults(prefix: str, target: str) -> dict:
    if prefix == "builtin":
        return dict(BUILTINS[target][1])
    return {k: default for k, (default, _) in _PATH_OPTIONS[prefix].items()}


def format_spec(p: ParsedSpec) -> str:
    """The canonical string of a parsed spec: options equal to their default dropped, the rest sorted."""
    defaults = _defaults(p.prefix, p.target)
    extra = sorted((k, v) for k, v in p.options.items() if defaults.get(k) != v)
    query = "&".join(f"{k}={v}" for k, v in extra)
    return f"{p.prefix}:{p.target}" + (f"?{query}" if query else "")


def normalise_spec(spec: str) -> str:
    """Canonical form of a spec: lower-case prefix and built-in name, absolute normalised path, options
    equal to their default dropped, the rest sorted.

    ``"builtin:shapes16?n=8192"`` -> ``"builtin:shapes16"``.
    """
    p = parse_spec(spec)
    if p.prefix != "builtin":
        p = ParsedSpec(p.prefix, os.path.abspath(os.path.expanduser(p.target)), p.options)
    return format_spec(p)
