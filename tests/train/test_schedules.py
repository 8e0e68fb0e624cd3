from __future__ import annotations

import pytest

from flatkit.train.schedules import lr_at, rho_at


def test_lr_warmup():
    assert lr_at(1, 1e-4, 0) == 1e-4
    assert lr_at(1, 1.0, 4) == 0.25
    assert lr_at(4, 1.0, 4) == 1.0
    assert lr_at(100, 1.0, 4) == 1.0


def test_rho_schedule():
    assert rho_at(1, 0.5) == 0.5
    assert rho_at(5, 0.5, "linear", 10) == 0.25
    assert rho_at(50, 0.5, "linear", 10) == 0.5
    with pytest.raises(ValueError):
        rho_at(1, 0.5, "cosine", 10)
