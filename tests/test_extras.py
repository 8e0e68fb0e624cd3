"""The optional extras pull only what each feature needs, and the base install gains no heavy dependency: the hub
resolver and the FID detectors import their optional packages only when used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("huggingface", "diffusers", "safetensors", "scipy", "torchvision", "pytorch-fid", "clean-fid",
         "torch-fidelity", "tensorflow")


def _names(reqs: list[str]) -> list[str]:
    import re

    return [re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs]


def test_extras_pull_only_what_each_needs():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = _names(project["dependencies"])
    assert not [n for n in base if n.startswith(HEAVY)], base
    extras = {k: _names(v) for k, v in project["optional-dependencies"].items()}
    assert extras["hub"] == ["huggingface-hub", "diffusers", "safetensors"]
    assert extras["fid"] == []  # flatkit's FID needs nothing more; the libraries have an extra each
    for lib in ("pytorch-fid", "clean-fid", "torch-fidelity"):
        assert extras[lib] == [lib]
        assert lib not in extras["dev"]  # they need torchvision: never installed for the tests
    assert "torchvision" not in extras["dev"]


def test_hub_and_detectors_import_nothing_optional():
    code = ("import sys, flatkit.interop.hub, flatkit.metrics.detector, flatkit.metrics.fid, flatkit.metrics.frechet; "
            "bad = [m for m in ('huggingface_hub', 'diffusers', 'scipy', 'pytorch_fid', 'cleanfid', 'torch_fidelity') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
