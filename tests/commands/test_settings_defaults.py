"""One default per setting: every command's options and every API function's keywords equal the settings class
that owns them (flatkit/settings.py), and one option name has one default across commands."""

import dataclasses
import inspect

import click
import pytest

import flatkit
from flatkit.cli import main
from flatkit.settings import ANALYSES, check_value, option_spec


def _api(name):
    from flatkit.analyses.robustness.exposure import exposure
    from flatkit.analyses.robustness.prior import prior
    from flatkit.analyses.robustness.quantize import quantize
    from flatkit.analyses.track import track
    from flatkit.metrics.fid import fid
    from flatkit.sampling import sample

    return {"hessian": flatkit.hessian, "sharpness": flatkit.sharpness, "landscape": flatkit.landscape,
            "perturb": flatkit.perturb, "sample": sample, "exposure": exposure, "prior": prior,
            "quantize": quantize, "fid": fid, "track": track}[name]


def _norm(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("name", list(ANALYSES))
def test_command_options_equal_settings_defaults(name):
    cmd = main.get_command(click.Context(main), name)
    params = {p.name: p for p in cmd.params}
    for f in dataclasses.fields(ANALYSES[name]):
        spec = option_spec(f)
        assert f.name in params, f"flatkit {name}: no option for setting {f.name} ({spec.flag})"
        p = params[f.name]
        default = p.default
        if spec.kind in ("floats", "ints", "strs"):
            default = check_value(f.name, default, spec)
        assert _norm(default) == _norm(f.default), f"flatkit {name} {spec.flag}: {default!r} != {f.default!r}"
        assert spec.flag.split("/")[0] in p.opts, (name, spec.flag, p.opts)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_api_keywords_equal_settings_defaults(name):
    sig = inspect.signature(_api(name))
    fields = {f.name: f for f in dataclasses.fields(ANALYSES[name])}
    assert "settings" in sig.parameters, f"{name}: the API function takes settings="
    shared = [p for p in sig.parameters.values() if p.name in fields]
    assert shared, name
    for p in shared:
        assert _norm(p.default) == _norm(fields[p.name].default), \
            f"{name}({p.name}={p.default!r}) but {ANALYSES[name].__name__}.{p.name} = {fields[p.name].default!r}"


def test_one_option_one_default_across_commands():
    seen = {}
    for name, cls in ANALYSES.items():
        for f in dataclasses.fields(cls):
            spec = option_spec(f)
            key = spec.flag
            if key in seen:
                assert seen[key][1] == (f.name, _norm(f.default)), f"{key}: {seen[key]} vs {name} {f.name}"
            else:
                seen[key] = (name, (f.name, _norm(f.default)))


def test_glossary_in_docs_is_the_generated_one():
    """docs/cli.md holds the table `python -m flatkit.settings` prints (regenerate it when a setting changes)."""
    from pathlib import Path

    from flatkit.settings import glossary_table

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    block = text.split("<!-- glossary", 1)[1].split("-->", 1)[1].split("<!-- /glossary -->", 1)[0].strip()
    assert block == glossary_table().strip(), "docs/cli.md: regenerate the glossary (python -m flatkit.settings)"


def test_same_loss_default_everywhere():
    """A user's L(θ) agrees across their result files: one bank size for every loss-based measure."""
    sizes = {cls.__dataclass_fields__["n_eval"].default for cls in ANALYSES.values()
             if "n_eval" in cls.__dataclass_fields__}
    assert sizes == {128}
