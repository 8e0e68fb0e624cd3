"""Data spec parsing and normalisation (flatkit/data/spec.py)."""

import os

import pytest

from flatkit.data import builtin_names, normalise_spec, parse_data_spec, parse_spec, spec_kind
from flatkit.errors import UsageError


def test_builtin_names():
    assert builtin_names() == ["gaussians2d", "shapes16", "shapes32", "swissroll"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("builtin:shapes16", ("builtin", "shapes16")),
        ("builtin:shapes32?n=64&seed=3", ("builtin", "shapes32")),
        ("BUILTIN:Swissroll", ("builtin", "swissroll")),
        ("cifar10:/data/cifar-10-batches-py", ("cifar10", "/data/cifar-10-batches-py")),
        ("cifar10:c.tar.gz?split=test", ("cifar10", "c.tar.gz")),
        ("folder:imgs/a:b", ("folder", "imgs/a:b")),
        ("folder:what?", ("folder", "what?")),  # a '?' without key=value stays in the path
        ("npz:samples.npz", ("npz", "samples.npz")),
    ],
)
def test_parse_data_spec(spec, expected):
    assert parse_data_spec(spec) == expected


def test_options_and_defaults():
    p = parse_spec("builtin:shapes16?seed=3&n=2048")
    assert p.options == {"n": 2048, "seed": 3} and p.kind == "image"
    assert parse_spec("builtin:gaussians2d").options == {"n": 8192, "seed": 0}
    assert parse_spec("cifar10:x").options == {"split": "train"}
    assert parse_spec("cifar10:x?split=test").options == {"split": "test"}
    assert spec_kind("builtin:swissroll") == "points" and spec_kind("npz:x.npz") == "image"


def test_normalise_spec():
    assert normalise_spec("builtin:shapes16?n=8192&seed=0") == "builtin:shapes16"
    assert normalise_spec("builtin:shapes16?seed=3&n=64") == "builtin:shapes16?n=64&seed=3"
    assert normalise_spec("Builtin:SHAPES32") == "builtin:shapes32"
    assert normalise_spec("npz:a/../s.npz") == "npz:" + os.path.abspath("s.npz")
    assert normalise_spec("cifar10:d?split=train") == "cifar10:" + os.path.abspath("d")
    assert normalise_spec("cifar10:d?split=test") == "cifar10:" + os.path.abspath("d") + "?split=test"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("shapes16", "PREFIX:TARGET"),
        ("imagenet:/data", "unknown prefix 'imagenet'"),
        ("builtin:mnist", "unknown built-in 'mnist'"),
        ("builtin:", "empty name"),
        ("npz:", "empty path"),
        ("builtin:shapes16?n=abc", "n='abc' is not an integer"),
        ("builtin:shapes16?n=0", "out of range"),
        ("builtin:shapes16?seed=-1", "out of range"),
        ("builtin:shapes16?size=32", "unknown option 'size'"),
        ("builtin:shapes16?n=4&n=5", "given twice"),
        ("builtin:shapes16?n=4&x", "not key=value"),
        ("cifar10:d?split=val", "not one of train, test"),
        ("folder:d?split=test", "unknown option 'split' for folder"),
    ],
)
def test_bad_specs(spec, fragment):
    with pytest.raises(UsageError) as e:
        parse_data_spec(spec)
    msg = str(e.value)
    assert fragment in msg and repr(spec) in msg and "\n" not in msg
