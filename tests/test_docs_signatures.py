"""The call signatures written in docs/api.md and docs/curvature.md are the functions' own: every documented
keyword exists with the documented default, and the documented lines name every keyword."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import flatkit
import flatkit.curvature as curvature

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: (page, the name as written, the function)
DOCUMENTED = [
    ("api.md", "flatkit.hessian", flatkit.hessian),
    ("curvature.md", "top_eigenvalues", curvature.top_eigenvalues),
    ("curvature.md", "hessian_trace", curvature.hessian_trace),
    ("curvature.md", "spectral_density", curvature.spectral_density),
    ("curvature.md", "per_timestep_curvature", curvature.per_timestep_curvature),
]


def _documented(page: str, name: str) -> dict[str, object]:
    """keyword -> default (``inspect.Parameter.empty`` for a keyword written without one) of the backticked
    ``name(...)`` on the page."""
    text = (DOCS / page).read_text()
    m = re.search(r"^`" + re.escape(name) + r"\((.*?)\)(?: -> \w+)?`", text, flags=re.S | re.M)  # at a line start
    assert m, f"{page}: no `{name}(...)`"
    args = m.group(1).replace("\n", " ")
    call = ast.parse(f"f({args.replace('*,', '').replace(', *', '')})", mode="eval").body
    out: dict[str, object] = {a.id: inspect.Parameter.empty for a in call.args if isinstance(a, ast.Name)}
    for kw in call.keywords:
        out[kw.arg] = ast.literal_eval(kw.value)
    return out


@pytest.mark.parametrize(("page", "name", "fn"), DOCUMENTED, ids=[d[1] for d in DOCUMENTED])
def test_documented_signature_is_the_functions(page, name, fn):
    doc = _documented(page, name)
    sig = inspect.signature(fn).parameters
    assert list(doc) == [p for p in sig if sig[p].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                inspect.Parameter.VAR_POSITIONAL)]
    for key, default in doc.items():
        if default is not inspect.Parameter.empty:
            assert sig[key].default == default, (name, key)
