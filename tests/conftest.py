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
