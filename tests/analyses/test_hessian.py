"""flatkit.hessian: every curvature measure in one typed result, checked against a quadratic's known spectrum."""

import math

import numpy as np
import pytest
import torch

import flatkit
from flatkit.analyses.hessian import HessianResult
from flatkit.errors import UsageError
from flatkit.settings import HessianSettings
from tests.curvature.helpers import quadratic, symmetric_with_spectrum

EIGS = torch.tensor([9.0, 4.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.0, -0.5], dtype=torch.float64)


def test_top_eigenvalues_and_trace_of_two_quadratics_in_one_result(tmp_path):
    a = quadratic(symmetric_with_spectrum(EIGS, seed=0))
    b = quadratic(symmetric_with_spectrum(EIGS * 0.5, seed=3))
    res = flatkit.hessian(a, compare=[b], labels=["sharp", "flat"], top_k=2, tol=1e-8, trace=True,
                          trace_max_hvps=40, trace_rtol=1e-12)
    assert res.labels == ["sharp", "flat"]
    np.testing.assert_allclose(res.eigenvalues[0], [9.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(res.eigenvalues[1], [4.5, 2.0], rtol=1e-6)
    assert res.lambda_max == pytest.approx([9.0, 4.5], rel=1e-6)
    # Hutch++: within a few of its own standard errors of the exact trace
    for est, se, exact in zip(res.trace, res.trace_stderr, [float(EIGS.sum()), float(EIGS.sum()) / 2], strict=True):
        assert abs(est - exact) <= 4 * se + 1e-9, (est, se, exact)
    assert res.meta["config"]["top_k"] == 2
    res.save(tmp_path)
    back = HessianResult.load(tmp_path)
    assert back.labels == res.labels and back.eigenvalues == res.eigenvalues and back.trace == res.trace
    assert not back.has_density and not back.has_per_timestep


def test_settings_and_keywords_give_the_same_numbers_and_conflict_is_refused():
    obj = quadratic(symmetric_with_spectrum(EIGS, seed=0))
    # probe_batch="loop": "auto" times loop against vmap on each call, and the two agree only to rounding
    s = HessianSettings(top_k=3, tol=1e-6, density=True, density_steps=8, probe_batch="loop")
    r1 = flatkit.hessian(obj, settings=s)
    r2 = flatkit.hessian(obj, top_k=3, tol=1e-6, density=True, density_steps=8, probe_batch="loop")
    assert r1.eigenvalues == r2.eigenvalues
    np.testing.assert_array_equal(r1.density, r2.density)
    assert r1.density.shape[0] == 1 and math.isclose(float(np.trapezoid(r1.density[0], r1.density_grid[0])), 1.0,
                                                     rel_tol=0.05)
    with pytest.raises(UsageError, match="top_k"):
        flatkit.hessian(obj, top_k=2, settings=s)
    with pytest.raises(UsageError, match="top_k 0"):
        flatkit.hessian(obj, top_k=0)


@pytest.mark.parametrize("text,needle", [
    ("{not json", "unreadable"),
    ('{"labels": ["a"]}', "meta object"),
    ('{"labels": 3, "meta": {}}', "labels is int"),
    ('[1, 2]', "meta object"),
])
def test_load_names_a_corrupt_result(tmp_path, text, needle):
    (tmp_path / "hessian.json").write_text(text)
    with pytest.raises(UsageError, match=needle) as e:
        HessianResult.load(tmp_path)
    assert "hessian.json" in str(e.value)


def test_certified_bounds_are_recorded_shown_and_old_results_still_load(tmp_path):
    import json

    from flatkit.commands.hessian import summary_line

    obj = quadratic(symmetric_with_spectrum(EIGS, seed=0))
    res = flatkit.hessian(obj, top_k=2, tol=1e-6)
    lam = np.sort(EIGS.numpy())[::-1][:2]
    assert res.eigen_certified == [True]
    assert np.all(np.abs(np.array(res.eigenvalues[0]) - lam) <= np.array(res.eigen_bounds[0]) + 1e-12)
    assert np.all(np.array(res.eigen_bounds[0]) <= 1e-6 * lam)
    line = summary_line(res, 0)
    assert "± " in line and f"({res.eigen_hvps[0]} HVPs, certified to 1e-06)" in line
    res.save(tmp_path)
    back = HessianResult.load(tmp_path)
    assert back.eigen_bounds == res.eigen_bounds and back.eigen_certified == [True]
    js = json.loads((tmp_path / "hessian.json").read_text())  # a result written before the bounds existed
    del js["eigen_bounds"], js["eigen_certified"]
    (tmp_path / "hessian.json").write_text(json.dumps(js))
    old = HessianResult.load(tmp_path)
    assert old.eigen_bounds == [] and "±" not in summary_line(old, 0) and "HVPs)" in summary_line(old, 0)


def test_block_size_setting_reaches_block_lanczos():
    eigs = torch.cat([torch.tensor([6.0, 6.0]), torch.linspace(-1.0, 2.0, 28)]).double()
    obj = quadratic(symmetric_with_spectrum(eigs, seed=1))
    res = flatkit.hessian(obj, top_k=2, tol=1e-8, block_size=2)
    np.testing.assert_allclose(res.eigenvalues[0], [6.0, 6.0], rtol=1e-7)
    assert res.details[0]["top_eigenvalues"]["meta"]["method"] == "block lanczos"
    assert res.eigen_hvps[0] % 2 == 0
