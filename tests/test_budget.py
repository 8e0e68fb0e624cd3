"""flatkit.budget: estimates, and refusal before allocation (issue 13, item 4)."""

from __future__ import annotations

import pytest

from flatkit import budget
from flatkit.errors import UsageError


def test_estimates_scale_with_the_grid():
    assert budget.landscape_bytes(100001, 2, 1) > 80e9  # the 80 GB grid of `--points 100001`
    assert budget.landscape_bytes(21, 2, 1) < 1e5
    assert budget.bank_bytes(256, (3, 32, 32)) == 256 * (2 * 3072 * 4 + 8)
    assert budget.lanczos_bytes(99, 1000) == 100 * 1000 * 4


def test_available_memory_is_known_here_and_capped_by_the_variable(monkeypatch):
    assert budget.available_bytes("cpu") is None or budget.available_bytes("cpu") > 0
    monkeypatch.setenv("FLATKIT_MEMORY_LIMIT", "1M")
    assert budget.available_bytes("cpu") == 1_000_000


def test_check_names_the_parameter_and_the_estimate(monkeypatch):
    monkeypatch.setenv("FLATKIT_MEMORY_LIMIT", "1G")
    with pytest.raises(UsageError, match=r"^points 100001: .* needs about 4\d\d GB, .*; lower points$"):
        budget.check_landscape(100001, 2, 1)
    budget.check_landscape(21, 2, 3)  # fits


def test_landscape_refuses_before_allocating(shared_ckpt, monkeypatch):
    import flatkit
    from flatkit.analyses.landscape import core
    from flatkit.settings import LandscapeSettings

    def no_axis(*a, **k):
        raise AssertionError("the grid was allocated")

    monkeypatch.setattr(core, "axis", no_axis)
    obj = flatkit.Objective(flatkit.load(shared_ckpt()), n=4, batch_size=4)
    with pytest.raises(UsageError, match=r"^points 1000000001: "):
        core.landscape(obj, settings=LandscapeSettings(dims=1, points=1000000001, n_eval=4))


@pytest.mark.parametrize("args,needle", [
    (["hessian", "--top-k", "0", "--density", "--density-steps", "100000000"], "--density-steps"),
    (["hessian", "--top-k", "0", "--trace", "--trace-max-hvps", "600000000"], "--trace-max-hvps"),
    (["landscape", "--points", "3", "--batch-points", "100000000"], "--batch-points"),
])
def test_probes_bases_and_vmapped_blocks_are_refused_before_allocating(shared_ckpt, tmp_path, args, needle):
    from click.testing import CliRunner

    from flatkit.cli import main

    ckpt = shared_ckpt("tiny")
    r = CliRunner().invoke(main, [args[0], str(ckpt), "--n-eval", "4", "--out", str(tmp_path / "x"), *args[1:]])
    assert r.exit_code == 2 and needle in r.output and "needs about" in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_slq_runs_side_by_side_only_where_their_bases_fit(monkeypatch):
    """Side by side (probe_batch auto/vmap), every SLQ run's basis is held at once: auto falls back to one run
    after another (one basis) where they do not fit, an explicit vmap is refused naming density_runs; the
    loop's densities are the same either way."""
    import numpy as np
    import torch

    import flatkit
    from flatkit.curvature import lanczos
    from tests.curvature.helpers import quadratic, symmetric_with_spectrum

    obj = quadratic(symmetric_with_spectrum(torch.linspace(-1.0, 5.0, 300, dtype=torch.float64)))
    one = budget.lanczos_bytes(20, 300, itemsize=8)
    live, peak = [0], [0]
    init = lanczos.LanczosProcess.__init__

    def counted_init(self, *a, **k):
        init(self, *a, **k)
        live[0] += 1
        peak[0] = max(peak[0], live[0])

    def counted_del(self):
        live[0] -= 1

    monkeypatch.setattr(lanczos.LanczosProcess, "__init__", counted_init)
    monkeypatch.setattr(lanczos.LanczosProcess, "__del__", counted_del, raising=False)
    kw = dict(top_k=0, density=True, density_runs=4, density_steps=20)
    monkeypatch.setattr(budget, "available_bytes", lambda device="cpu": int(2.5 * one / budget.HEADROOM))
    auto = flatkit.hessian(obj, probe_batch="auto", **kw)
    assert auto.details[0]["density"]["probe_batch"]["requested"] == "loop" and peak[0] == 1
    with pytest.raises(UsageError, match=r"^density_runs 4: 4 SLQ bases .* needs about"):
        flatkit.hessian(obj, probe_batch="vmap", **kw)
    peak[0] = live[0] = 0
    monkeypatch.setattr(budget, "available_bytes", lambda device="cpu": None)  # unknown: no refusal
    loop = flatkit.hessian(obj, probe_batch="loop", **kw)
    assert peak[0] == 1  # one basis at a time
    np.testing.assert_array_equal(auto.density, loop.density)
