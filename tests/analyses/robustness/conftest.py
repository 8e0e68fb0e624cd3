"""A tiny random-init checkpoint (no trainer) shared by the robustness tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_ckpt(shared_ckpt):
    return shared_ckpt("tiny", data="builtin:shapes16?n=256", others={"ema_0.999": 0})
