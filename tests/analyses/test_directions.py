"""Directions: filter normalisation, zero filters, device/dtype, interpolation, plane, PCA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatkit.analyses.directions import (
    dot,
    interpolation_direction,
    normalize_direction,
    pca_directions,
    plane_directions,
    random_direction,
    random_directions,
)
from flatkit.errors import UsageError


def _params(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g, dtype=dtype),
        "conv.bias": torch.randn(4, generator=g, dtype=dtype),
        "norm.weight": torch.ones(4, dtype=dtype),
        "norm.bias": torch.zeros(4, dtype=dtype),  # an untrained GroupNorm bias: all zero
        "lin.weight": torch.randn(5, 8, generator=g, dtype=dtype),
    }


def _fnorms(t):
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1).double(), dim=1)


def test_filter_normalisation_gives_each_filter_the_weights_norm():
    p = _params()
    p["conv.weight"][2] = 0.0  # a dead filter: its direction filter must be zero, not NaN
    d = random_direction(p, torch.Generator().manual_seed(1), norm="filter", bias="zero")
    for k in ("conv.weight", "lin.weight"):
        torch.testing.assert_close(_fnorms(d[k]), _fnorms(p[k]), rtol=1e-5, atol=1e-6)
    assert torch.all(d["conv.weight"][2] == 0)
    assert torch.all(d["conv.bias"] == 0) and torch.all(d["norm.weight"] == 0)
    assert all(torch.isfinite(v).all() for v in d.values())


def test_bias_normalise_scales_each_1d_tensor_once():
    p = _params()
    d = random_direction(p, torch.Generator().manual_seed(1), norm="filter", bias="normalise")
    for k in ("conv.bias", "norm.weight"):
        assert float(torch.linalg.vector_norm(d[k].double())) == pytest.approx(
            float(torch.linalg.vector_norm(p[k].double())), rel=1e-5)
    assert torch.all(d["norm.bias"] == 0)  # zero weights → zero direction, no division by zero


def test_layer_and_none():
    p = _params()
    dl = random_direction(p, torch.Generator().manual_seed(1), norm="layer")
    for k in p:
        assert float(torch.linalg.vector_norm(dl[k].double())) == pytest.approx(
            float(torch.linalg.vector_norm(p[k].double())), rel=1e-5, abs=1e-7)
    dn = random_direction(p, torch.Generator().manual_seed(1), norm="none")
    z = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(dn["conv.weight"], z.float())  # Gaussian, not uniform: the same draw


def test_directions_follow_dtype_and_are_reproducible():
    p = _params(torch.float64)
    a = random_directions(p, 2, seed=7)
    b = random_directions(p, 2, seed=7)
    assert all(v.dtype == torch.float64 for v in a[0].values())
    assert all(torch.equal(a[i][k], b[i][k]) for i in range(2) for k in p)
    assert not torch.equal(a[0]["lin.weight"], a[1]["lin.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_directions_on_the_params_device():
    p = {k: v.cuda() for k, v in _params().items()}
    d = random_direction(p, torch.Generator().manual_seed(0))
    assert all(v.is_cuda for v in d.values())


def test_interpolation_and_plane():
    a, b, c = _params(torch.float64), _params(torch.float64), _params(torch.float64)
    for k in b:
        b[k] = b[k] + 1.0
        c[k] = c[k] * 2.0 + 0.5
    line = interpolation_direction(a, b)
    assert torch.equal(a["lin.weight"] + line.directions[0]["lin.weight"], b["lin.weight"])
    plane = plane_directions(a, b, c)
    d1, d2 = plane.directions
    assert abs(dot(d1, d2)) < 1e-9 * dot(d1, d1)
    ca, cb = plane.points[2]
    for k in a:  # θ0 + ca d1 + cb d2 = θ2
        torch.testing.assert_close(a[k] + ca * d1[k] + cb * d2[k], c[k])
    bad = dict(b)
    bad["lin.weight"] = torch.zeros(6, 8, dtype=torch.float64)
    with pytest.raises(UsageError, match="architectures"):
        interpolation_direction(a, bad)
    with pytest.raises(UsageError, match="one line"):
        plane_directions(a, b, {k: 2 * b[k] - a[k] for k in a})


def test_pca_of_a_trajectory_recovers_its_plane():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    traj = [{"w": (3.0 * np.cos(t)) * u + np.sin(t) * v} for t in np.linspace(0, 1.5, 8)]
    dirs, ratio, coords = pca_directions(traj, k=2)
    assert ratio.sum() == pytest.approx(1.0)  # the trajectory lies in a plane
    M = torch.stack([t["w"] - traj[-1]["w"] for t in traj])
    recon = torch.tensor(coords) @ torch.stack([d["w"] for d in dirs])
    torch.testing.assert_close(recon, M)
    with pytest.raises(UsageError, match="trajectory"):
        pca_directions(traj[:2], k=2)


def test_normalize_rejects_unknown_modes():
    with pytest.raises(UsageError, match="norm"):
        normalize_direction(_params(), _params(), norm="bogus")
    with pytest.raises(UsageError, match="bias"):
        normalize_direction(_params(), _params(), bias="twice")


def test_model_and_unit_norms_scale_the_whole_direction():
    p = _params()
    d = {k: v * 3.0 + 1.0 for k, v in p.items()}
    theta_norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in p.values()))
    for mode, target in (("model", theta_norm), ("unit", 1.0)):
        out = normalize_direction(d, p, norm=mode)
        got = math.sqrt(sum(float((v.double() ** 2).sum()) for v in out.values()))
        assert got == pytest.approx(target, rel=1e-6)
        zero = normalize_direction({k: torch.zeros_like(v) for k, v in p.items()}, p, norm=mode)
        assert all(float(v.abs().sum()) == 0.0 for v in zero.values())
