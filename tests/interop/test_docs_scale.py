"""The commands of docs/scale.md's sections "Analyse a diffusers checkpoint" and "Analyse your own model" run
as written (in a fresh folder holding a link to examples/), in this process: every ```bash line and every
```python block of the two sections, in order. ``pip install`` lines are not rerun."""

from __future__ import annotations

import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flatkit.cli import main

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "scale.md"


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}\n")
    nxt = text.find("\n## ", start + 5)
    return text[start:] if nxt < 0 else text[start:nxt]


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of the fenced bash / python blocks that start a line (indented sketches excluded)."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.M | re.S)


def _forget_examples() -> None:
    for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")
                 or m in ("custom_model_factory", "flatkit_user_custom_model_factory")]:
        sys.modules.pop(name, None)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _forget_examples()
    yield tmp_path
    _forget_examples()


def run_section(title: str, monkeypatch) -> list[str]:
    done = []
    for lang, body in blocks(section(title)):
        if lang == "python":
            exec(compile(body, f"{DOC.name}:{title}", "exec"), {"__name__": "__main__"})  # noqa: S102
            done.append("python block")
            continue
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[:2] == ["pip", "install"]:
                continue
            if words[0] == "flatkit":
                r = CliRunner().invoke(main, words[1:])
                assert r.exit_code == 0, f"{line}\n{r.output}"
            elif words[0] == "python" and words[1].endswith(".py"):
                monkeypatch.setattr(sys, "argv", words[1:])
                runpy.run_path(words[1], run_name="__main__")
            else:
                raise AssertionError(f"docs/scale.md: unexpected command {line!r}")
            done.append(line)
    return done


def test_doc_diffusers_section(workdir, monkeypatch):
    pytest.importorskip("diffusers")
    pytest.importorskip("safetensors")
    done = run_section("Analyse a diffusers checkpoint", monkeypatch)
    assert sum(d.startswith("flatkit ") for d in done) >= 4
    for f in ("tiny-ddpm-hessian/hessian.json", "tiny-ddpm-landscape/landscape.json",
              "tiny-ddpm-sharpness/sharpness.json", "tiny-ddpm-samples/samples.png"):
        assert (workdir / "runs" / f).is_file(), f


def test_doc_custom_model_section(workdir, monkeypatch):
    done = run_section("Analyse your own model", monkeypatch)
    assert sum(d.startswith("flatkit ") for d in done) >= 3
    assert (workdir / "mlp.pt").is_file()
    for f in ("mlp-hessian/hessian.json", "mlp-landscape/landscape.json", "mlp-sharpness/sharpness.json",
              "denoiser-hessian/hessian.json"):
        assert (workdir / "runs" / f).is_file(), f
