from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ADM_FIXTURES = SHARED / "fixtures" / "adm"


@pytest.fixture
def adm_fixtures() -> Path:
    if not (ADM_FIXTURES / "adm_small_a.pt").is_file():
        pytest.skip("../shared/fixtures/adm is not present")
    return ADM_FIXTURES


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The tests use small tensors: intra-op threads only spin-wait (10x slower on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
