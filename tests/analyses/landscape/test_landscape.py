"""Landscape slices on quadratics: 1-D = ½ a² dᵀAd, 2-D = the bilinear form; vmap == sequential; resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatkit.analyses.landscape import LandscapeResult, axis, landscape
from flatkit.errors import UsageError
from tests.analyses.landscape._quadratic import quadratic, spd

SHAPES = {"w": (3, 2), "b": (3,)}


def _dirs(k: int, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in SHAPES.items()} for _ in range(k)]


def _flat(d: dict) -> torch.Tensor:
    return torch.cat([d[n].reshape(-1) for n in SHAPES])


def test_axis_symmetric_includes_centre_exactly():
    a = axis(-0.7, 0.7, 9)
    assert a[4] == 0.0 and a[0] == -0.7 and a[-1] == 0.7
    assert np.array_equal(a, -a[::-1])
    b = axis(-0.5, 1.5, 21)
    assert 0.0 in b and 1.0 in b


@pytest.mark.parametrize("mode", ["vmap", "sequential"])
def test_1d_slice_is_half_a2_dAd(mode):
    A = spd(9, seed=3)
    obj = quadratic(A, SHAPES, c=0.25, n_batches=3)
    (d,) = _dirs(1)
    res = landscape(obj, dims=1, points=11, span=2.0, directions=[d], mode=mode, batch_points=4)
    x = _flat(d)
    expect = 0.5 * res.coords_a ** 2 * float(x @ A @ x) + 0.25
    np.testing.assert_allclose(res.values[0], expect, rtol=1e-12, atol=1e-12)
    assert res.complete and res.done.all() and res.loss_centre[0] == pytest.approx(0.25, abs=1e-14)


@pytest.mark.parametrize("mode", ["vmap", "sequential"])
def test_2d_slice_is_bilinear_form(mode):
    A = spd(9, seed=4)
    obj = quadratic(A, SHAPES)
    d1, d2 = _dirs(2)
    res = landscape(obj, dims=2, points=7, span=(-1.0, 2.0), directions=[d1, d2], mode=mode, batch_points=5)
    D = torch.stack([_flat(d1), _flat(d2)])
    B = (D @ A @ D.T).numpy()
    a, b = np.meshgrid(res.coords_a, res.coords_b, indexing="ij")
    expect = 0.5 * (a * a * B[0, 0] + 2 * a * b * B[0, 1] + b * b * B[1, 1])
    np.testing.assert_allclose(res.values[0], expect, rtol=1e-12, atol=1e-12)


def test_vmap_equals_sequential_on_a_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.SiLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 1))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 2, 5, 5, generator=g) for _ in range(2)]
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    from flatkit.objective import Objective

    obj = Objective.from_function(lambda p, x: torch.func.functional_call(net, p, (x,)).pow(2).mean(), params, xs)
    r1 = landscape(obj, dims=2, points=5, span=0.5, mode="vmap", batch_points=6, seed=2)
    r2 = landscape(obj, dims=2, points=5, span=0.5, mode="sequential", batch_points=6, seed=2)
    np.testing.assert_allclose(r1.values, r2.values, rtol=1e-5, atol=1e-7)
    for k, v in net.state_dict().items():  # the caller's model is bit-identical
        assert torch.equal(v, before[k])
    for k, v in obj.params.items():
        assert torch.equal(v, params[k])


def test_auto_mode_records_its_choice_and_timings():
    obj = quadratic(spd(9), SHAPES)
    res = landscape(obj, dims=1, points=5, span=1.0, mode="auto")
    assert res.mode in ("vmap", "sequential")
    assert "sequential_s" in res.timing and "vmap_s" in res.timing


class _Stop(Exception):
    pass


@pytest.mark.parametrize("mode", ["vmap", "sequential"])
def test_resume_equals_uninterrupted(tmp_path, mode):
    A = spd(9, seed=5)
    obj = quadratic(A, SHAPES, c=1.0)
    kw = dict(dims=2, points=7, span=1.0, mode=mode, batch_points=5, seed=3)
    full = landscape(obj, **kw)

    calls = []

    def stop_after_3(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        landscape(obj, out=tmp_path, progress=stop_after_3, **kw)
    part = LandscapeResult.load(tmp_path)
    assert not part.complete and 0 < part.done.sum() < part.done.size
    assert np.isnan(part.values[~part.done]).all()  # NaN marks what is not computed
    seen = []
    res = landscape(obj, out=tmp_path, resume=True, progress=lambda d, t: seen.append(d), **kw)
    assert len(seen) == len(range(0, 49, 5)) - 3  # only the missing blocks were computed
    assert np.array_equal(res.values, full.values) and res.complete
    again = LandscapeResult.load(tmp_path)
    assert np.array_equal(again.values, full.values) and again.complete


def test_resume_refuses_a_changed_configuration(tmp_path):
    obj = quadratic(spd(9), SHAPES)
    landscape(obj, dims=1, points=5, span=1.0, out=tmp_path, mode="sequential")
    with pytest.raises(UsageError, match="resume"):
        landscape(obj, dims=1, points=7, span=1.0, out=tmp_path, resume=True, mode="sequential")
    with pytest.raises(UsageError, match="resume"):
        landscape(obj, dims=1, points=5, span=1.0, out=tmp_path, resume=True, seed=9, mode="sequential")


def test_non_finite_losses_are_recorded_not_raised():
    params = {"w": torch.zeros(2, dtype=torch.float64)}
    from flatkit.objective import Objective

    obj = Objective.from_function(lambda p: torch.log(1.0 - p["w"].sum()), params)
    d = {"w": torch.ones(2, dtype=torch.float64)}
    res = landscape(obj, dims=1, points=5, span=1.0, directions=[d], mode="sequential")
    assert res.done.all() and not np.isfinite(res.values[0, -1]) and res.meta["non_finite_points"] >= 1


@pytest.mark.parametrize("kw, match", [
    (dict(points=0), "points"), (dict(points=-3), "points"), (dict(points=4), "points"),
    (dict(span=(1.0, 1.0)), "span"), (dict(span=(2.0, -1.0)), "span"), (dict(span=-1.0), "span"),
    (dict(dims=3), "dims"), (dict(directions="sideways"), "directions"), (dict(norm="bogus"), "norm"),
    (dict(directions="interp"), "directions"),
])
def test_bad_input_is_a_usage_error(kw, match):
    obj = quadratic(spd(9), SHAPES)
    args = dict(dims=1, points=5, span=1.0, mode="sequential")
    args.update(kw)
    with pytest.raises(UsageError, match=match):
        landscape(obj, **args)
