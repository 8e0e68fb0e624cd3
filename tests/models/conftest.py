"""Fixtures of the model tests: the ADM reference files in ../shared/fixtures/adm (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ADM_FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "adm"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    return path


@pytest.fixture(scope="session")
def adm_small_flags() -> dict:
    return json.loads(_require(ADM_FIXTURES / "adm_small_fixtures.json").read_text())


@pytest.fixture(scope="session")
def adm_full_configs() -> dict:
    return json.loads(_require(ADM_FIXTURES / "adm_full_configs_state_dict_shapes.json").read_text())


@pytest.fixture(scope="session", params=["small_a", "small_b"])
def adm_small(request, adm_small_flags) -> tuple[str, dict, dict]:
    """(name, flags, tensors) of one small ADM fixture."""
    name = request.param
    tensors = torch.load(_require(ADM_FIXTURES / f"adm_{name}.pt"), weights_only=True)
    return name, adm_small_flags[name]["flags"], tensors


@pytest.fixture(scope="session")
def adm_small_a_state_dict() -> dict:
    """The state dict of the ``small_a`` fixture (learned sigma, up/down ResBlocks, 8-channel heads)."""
    return torch.load(_require(ADM_FIXTURES / "adm_small_a.pt"), weights_only=True)["state_dict"]
