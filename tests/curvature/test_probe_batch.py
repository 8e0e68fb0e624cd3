"""Several Hessian-vector products per pass (probe batching): the vmapped products against one at a time.

Float64 oracles: the tiny MLP and a tiny Conv-GroupNorm-SiLU net. A vmapped pass sums in another order than
one product at a time (batched kernels), so the batched products agree to float rounding (a few ulps), not bit
for bit; "auto" that keeps the loop must give the loop's numbers bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatkit.curvature import hessian_trace, spectral_density
from flatkit.curvature.hvp import HVP
from flatkit.errors import UsageError
from flatkit.objective import Objective

from .helpers import full_hessian, quadratic, symmetric_with_spectrum, tiny_mlp_problem


def _conv_problem(dtype: torch.dtype = torch.float64) -> Objective:
    g = torch.Generator().manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.SiLU(),
                              torch.nn.Conv2d(4, 2, 3, padding=1)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    xs = [torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64).to(dtype) for _ in range(2)]

    def f(p, x):
        return (torch.func.functional_call(net, p, (x,)) - x).pow(2).mean()

    return Objective.from_function(f, dict(net.named_parameters()), batches=xs)


def _force(monkeypatch, winner: str) -> None:
    """Make "auto" measure the loop (or the vmapped pass) as the faster one."""

    def timed(self, fn):
        loop = self._loop_s is None  # the loop is timed first, then the vmapped pass
        return fn(), (0.01 if loop == (winner == "loop") else 0.05)  # both below CPU_TRIAL_MAX_S

    monkeypatch.setattr(HVP, "_timed", timed)


@pytest.mark.parametrize("problem", ["mlp", "conv"])
@pytest.mark.parametrize("mode", ["double_backward_cached", "double_backward", "fwd_rev"])
def test_vmapped_products_equal_one_at_a_time(problem, mode):
    obj = tiny_mlp_problem()[3] if problem == "mlp" else _conv_problem()
    H = full_hessian(obj)
    V = torch.randn(5, obj.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loop = HVP(obj, mode=mode, batch="loop")
    vm = HVP(obj, mode=mode, vectors_per_call=3, batch="vmap")
    a, b = loop.many(V), vm.many(V)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(a, V @ H, rtol=1e-10, atol=1e-12)
    assert loop.count == vm.count == 5 and vm.batch == "vmap"


def test_auto_keeping_the_loop_is_bit_identical(monkeypatch):
    _, _, _, obj = tiny_mlp_problem()
    V = torch.randn(7, obj.num_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = HVP(obj, batch="loop").many(V)
    _force(monkeypatch, "loop")
    op = HVP(obj, vectors_per_call=4, batch="auto")
    from flatkit.curvature.hvp import hvp_progress

    with hvp_progress("test", total=7) as bar:
        out = op.many(V)
        shown = bar.n
    assert torch.equal(out, ref) and op.batch == "loop" and op.count == 7  # the trial products are not counted
    assert shown == 7  # nor shown: the bar does not read 9/7
    assert op.calibration["chosen"] == "loop"


def test_auto_choosing_vmap_batches_later_calls(monkeypatch):
    _, _, _, obj = tiny_mlp_problem()
    V = torch.randn(9, obj.num_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _force(monkeypatch, "vmap")
    op = HVP(obj, vectors_per_call=4, batch="auto")
    torch.testing.assert_close(op.many(V), HVP(obj).many(V), rtol=1e-12, atol=1e-13)
    assert op.batch == "vmap" and op.calibration["chosen"] == "vmap" and op.count == 9


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_batched_equals_loop(method, monkeypatch):
    _, _, _, obj = tiny_mlp_problem()
    kw = dict(method=method, rtol=1e-9, max_hvps=40, seed=4, check=False)
    loop = hessian_trace(obj, probe_batch="loop", **kw)
    vm = hessian_trace(obj, probe_batch="vmap", vectors_per_call=4, **kw)
    assert vm.meta["probe_batch"]["used"] == "vmap" and loop.meta["probe_batch"]["used"] == "loop"
    np.testing.assert_allclose(vm.samples, loop.samples, rtol=1e-11, atol=1e-12)  # the same probes
    assert vm.estimate == pytest.approx(loop.estimate, rel=1e-12) and vm.hvp_count == loop.hvp_count
    _force(monkeypatch, "loop")
    auto = hessian_trace(obj, probe_batch="auto", **kw)
    assert auto.meta["probe_batch"]["chosen"] == "loop"
    assert np.array_equal(auto.samples, loop.samples) and auto.estimate == loop.estimate


def test_trace_stops_at_the_same_probe_batched():
    """The stopping rule is checked after every probe: a batched chunk spends its extra products (counted) but
    the estimate uses the same probes as one at a time."""
    _, _, _, obj = tiny_mlp_problem()
    kw = dict(method="hutchinson", rtol=0.15, max_hvps=200, min_probes=3, seed=1, check=False)
    loop = hessian_trace(obj, probe_batch="loop", **kw)
    vm = hessian_trace(obj, probe_batch="vmap", vectors_per_call=8, **kw)
    assert loop.converged and vm.converged and len(vm.samples) == len(loop.samples)
    np.testing.assert_allclose(vm.samples, loop.samples, rtol=1e-11)
    assert loop.hvp_count <= vm.hvp_count < loop.hvp_count + 8


def test_density_side_by_side_equals_one_after_another(monkeypatch):
    _, _, _, obj = tiny_mlp_problem()
    kw = dict(runs=3, steps=12, seed=2, check=False)
    loop = spectral_density(obj, probe_batch="loop", **kw)
    vm = spectral_density(obj, probe_batch="vmap", **kw)
    assert vm.meta["probe_batch"]["used"] == "vmap" and vm.hvp_count == loop.hvp_count == 36
    np.testing.assert_allclose(vm.nodes, loop.nodes, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(vm.weights, loop.weights, rtol=1e-7, atol=1e-10)
    _force(monkeypatch, "loop")
    auto = spectral_density(obj, probe_batch="auto", **kw)
    assert auto.meta["probe_batch"]["chosen"] == "loop"
    assert np.array_equal(auto.nodes, loop.nodes) and np.array_equal(auto.weights, loop.weights)


def test_density_auto_keeping_the_loop_is_bit_identical_in_float32(monkeypatch):
    """Side by side with the loop kept: each run gets its product as a tensor of its own, so its
    reorthogonalisation rounds as one after another (a row of the batch would start at an offset)."""
    obj = _conv_problem(torch.float32)
    loop = spectral_density(obj, runs=3, steps=8, seed=1, probe_batch="loop", check=False)
    _force(monkeypatch, "loop")
    auto = spectral_density(obj, runs=3, steps=8, seed=1, probe_batch="auto", check=False)
    assert auto.meta["probe_batch"]["chosen"] == "loop"
    assert np.array_equal(auto.nodes, loop.nodes) and np.array_equal(auto.weights, loop.weights)


def test_density_side_by_side_through_breakdowns():
    """A rank-3 quadratic: every run breaks down after 3 steps and restarts from its own generator, so the runs
    side by side meet the same restarts as one after another; every node is an eigenvalue (0 or the three)."""
    eigs = torch.tensor([0.0] * 9 + [1.0, 2.0, 5.0], dtype=torch.float64)
    obj = quadratic(symmetric_with_spectrum(eigs))
    kw = dict(runs=2, steps=8, seed=0, check=False)
    loop, vm = (spectral_density(obj, probe_batch=b, **kw) for b in ("loop", "vmap"))
    np.testing.assert_allclose(vm.nodes, loop.nodes, atol=1e-9)
    big = loop.nodes[np.abs(loop.nodes) > 1e-6]
    assert np.all(np.min(np.abs(big[:, None] - np.array([1.0, 2.0, 5.0])[None]), axis=1) < 1e-8)


def test_failed_vmap_falls_back_to_one_at_a_time(monkeypatch):
    import sys

    hvp_mod = sys.modules[HVP.__module__]

    def broken(*a, **k):
        raise RuntimeError("no batching rule for this operator")

    monkeypatch.setattr(hvp_mod, "_backward_many", broken)
    _, _, _, obj = tiny_mlp_problem()
    V = torch.randn(4, obj.num_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    auto = HVP(obj, vectors_per_call=4, batch="auto")
    assert torch.equal(auto.many(V), HVP(obj).many(V)) and auto.batch == "loop" and auto.count == 4
    vm = HVP(obj, vectors_per_call=4, batch="vmap")
    with pytest.warns(UserWarning, match="vmapped HVP failed"):
        assert torch.equal(vm.many(V), HVP(obj).many(V))
    assert vm.batch == "loop" and vm.count == 4


def test_bad_probe_batch_is_usage_error():
    _, _, _, obj = tiny_mlp_problem()
    with pytest.raises(UsageError, match="--probe-batch"):
        hessian_trace(obj, probe_batch="threads", check=False)
    with pytest.raises(UsageError, match="--probe-batch"):
        spectral_density(obj, probe_batch="threads", check=False)


def test_auto_on_cpu_keeps_a_slow_loop_without_a_trial(monkeypatch):
    """On a CPU a product slower than CPU_TRIAL_MAX_S keeps the loop with no vmapped trial (nothing thrown away)."""
    from flatkit.curvature.hvp import CPU_TRIAL_MAX_S

    calls = {"batched": 0}
    orig = HVP._batched

    def counted(self, *a, **k):
        calls["batched"] += 1
        return orig(self, *a, **k)

    monkeypatch.setattr(HVP, "_timed", lambda self, fn: (fn(), 2 * CPU_TRIAL_MAX_S))
    monkeypatch.setattr(HVP, "_batched", counted)
    _, _, _, obj = tiny_mlp_problem()
    V = torch.randn(6, obj.num_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    op = HVP(obj, vectors_per_call=4, batch="auto")
    assert torch.equal(op.many(V), HVP(obj).many(V)) and op.count == 6
    assert op.batch == "loop" and "cpu" in op.calibration["reason"] and calls["batched"] == 0


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_auto_runs_no_trial_that_too_few_products_could_repay(method, monkeypatch):
    """A budget under MIN_TRIAL_PRODUCTS keeps the loop without the vmapped trial: a 4-HVP Hutch++ computes 4
    products, not 6 (the trial's two thrown away when the loop wins); a larger budget still measures."""
    from flatkit.curvature.hvp import MIN_TRIAL_PRODUCTS

    calls = {"batched": 0, "products": 0}
    orig_batched, orig_call = HVP._batched, HVP.__call__

    def batched(self, chunk, *a, **k):
        calls["batched"] += 1
        calls["products"] += chunk.shape[0]
        return orig_batched(self, chunk, *a, **k)

    def one(self, v):
        calls["products"] += 1
        return orig_call(self, v)

    _force(monkeypatch, "loop")
    monkeypatch.setattr(HVP, "_batched", batched)
    monkeypatch.setattr(HVP, "__call__", one)
    _, _, _, obj = tiny_mlp_problem()
    kw = dict(method=method, rtol=1e-12, seed=4, check=False)
    small = hessian_trace(obj, max_hvps=MIN_TRIAL_PRODUCTS - 2, **kw)
    assert calls == {"batched": 0, "products": MIN_TRIAL_PRODUCTS - 2}
    assert small.meta["probe_batch"]["chosen"] == "loop" and "to go" in small.meta["probe_batch"]["reason"]
    loop = hessian_trace(obj, max_hvps=MIN_TRIAL_PRODUCTS - 2, probe_batch="loop", **kw)
    assert np.array_equal(small.samples, loop.samples) and small.estimate == loop.estimate
    calls.update(batched=0, products=0)
    big = hessian_trace(obj, max_hvps=12, **kw)
    assert calls["batched"] == 1 and calls["products"] == 12 + 2  # measured: the trial's two computed again
    assert big.meta["probe_batch"]["chosen"] == "loop" and "vmap2_s" in big.meta["probe_batch"]
    assert big.hvp_count == 12
