import numpy as np
import pytest
import torch

from flatkit.curvature.trace import hessian_trace
from flatkit.errors import UsageError

from .helpers import full_hessian, quadratic, symmetric_with_spectrum, tiny_mlp_problem


def _outlier_spectrum(n: int = 120) -> torch.Tensor:
    """A few large outliers over a bulk (the shape of a network Hessian)."""
    g = torch.Generator().manual_seed(7)
    bulk = 0.05 * torch.randn(n - 8, generator=g, dtype=torch.float64) + 0.1
    return torch.cat([torch.tensor([80.0, 40.0, 25.0, 12.0, 8.0, 6.0, 4.0, 3.0], dtype=torch.float64), bulk])


@pytest.mark.parametrize("method,rtol,budget", [("hutch++", 1e-2, 120), ("hutchinson", 0.1, 200)])
def test_trace_converges_to_exact_within_budget(method, rtol, budget):
    eigs = _outlier_spectrum()
    exact = float(eigs.sum())
    obj = quadratic(symmetric_with_spectrum(eigs))
    res = hessian_trace(obj, method=method, rtol=rtol, max_hvps=budget, seed=0)
    assert res.converged and res.hvp_count <= budget
    assert res.stderr <= rtol * abs(res.estimate) + 1e-12
    assert abs(res.estimate - exact) <= 4 * res.stderr + 1e-9


def test_hutch_plus_plus_beats_hutchinson_on_outliers():
    eigs = _outlier_spectrum()
    exact = float(eigs.sum())
    obj = quadratic(symmetric_with_spectrum(eigs))
    ses = {m: [] for m in ("hutch++", "hutchinson")}
    for seed in range(3):
        for m in ses:
            r = hessian_trace(obj, method=m, rtol=1e-9, max_hvps=36, seed=seed, check=False)
            assert r.hvp_count == 36
            assert abs(r.estimate - exact) <= 4 * r.stderr
            ses[m].append(r.stderr)
    # the same budget gives a much smaller standard error once the outliers are taken exactly
    assert np.mean(ses["hutch++"]) < 0.5 * np.mean(ses["hutchinson"])


def test_convergence_in_budget_stderr_shrinks():
    eigs = _outlier_spectrum()
    exact = float(eigs.sum())
    obj = quadratic(symmetric_with_spectrum(eigs))
    ses, errs = [], []
    for budget in (12, 48, 192):
        r = hessian_trace(obj, method="hutchinson", rtol=1e-12, max_hvps=budget, seed=1, check=False)
        ses.append(r.stderr)
        errs.append(abs(r.estimate - exact))
    assert ses[0] > ses[1] > ses[2]
    assert errs[2] <= 4 * ses[2]


def test_sketch_spanning_everything_is_exact():
    eigs = torch.linspace(-1.0, 3.0, 12, dtype=torch.float64)
    r = hessian_trace(quadratic(symmetric_with_spectrum(eigs)), sketch_size=12, max_hvps=30, probe="gaussian")
    assert abs(r.estimate - float(eigs.sum())) < 1e-10 and r.stderr == 0.0 and r.hvp_count == 24


def test_tiny_mlp_trace():
    _, _, _, obj = tiny_mlp_problem()
    exact = float(torch.trace(full_hessian(obj)))
    r = hessian_trace(obj, rtol=1e-3, max_hvps=120)
    assert abs(r.estimate - exact) <= max(4 * r.stderr, 1e-9 * abs(exact))


def test_bad_method_is_usage_error():
    obj = quadratic(symmetric_with_spectrum(torch.ones(6, dtype=torch.float64)))
    with pytest.raises(UsageError, match="--trace-method"):
        hessian_trace(obj, method="exact")
