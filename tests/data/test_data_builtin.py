"""Built-in synthetic data sets (flatkit/data/builtin.py): determinism, ranges, variety, SDF oracles."""

import math

import numpy as np
import pytest
import torch

from flatkit.data import load_dataset
from flatkit.data.builtin import (
    GAUSSIANS2D_RADIUS,
    make_gaussians2d,
    make_shapes,
    make_swissroll,
    sdf_circle,
    sdf_square,
    sdf_triangle,
)


@pytest.mark.parametrize("name", ["shapes16", "shapes32", "gaussians2d", "swissroll"])
def test_same_spec_same_bytes_other_seed_differs(name):
    a = load_dataset(f"builtin:{name}?n=300&seed=5")
    b = load_dataset(f"builtin:{name}?seed=5&n=300")
    c = load_dataset(f"builtin:{name}?n=300&seed=6")
    assert torch.equal(a.get(slice(None)), b.get(slice(None)))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not torch.equal(a.get(slice(None)), c.get(slice(None)))


def test_generators_are_pure_and_prefix_stable():
    x = make_shapes(16, 1500, 7)
    assert np.array_equal(x, make_shapes(16, 1500, 7))  # regenerated from scratch, no hidden state
    assert np.array_equal(make_shapes(16, 1100, 7), x[:1100])  # a smaller n is a prefix (blocks of 1024)
    assert np.array_equal(make_gaussians2d(1500, 1)[:1030], make_gaussians2d(1030, 1))
    assert not np.array_equal(make_shapes(16, 8, 0), make_shapes(32, 8, 0)[:, ::2, ::2])


def test_global_rng_untouched():
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    make_shapes(16, 10, 0)
    make_swissroll(10, 0)
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(
        torch.get_rng_state(), torch_state
    )


@pytest.mark.parametrize("name, size", [("shapes16", 16), ("shapes32", 32)])
def test_shapes_shape_range_and_variety(name, size):
    ds = load_dataset(f"builtin:{name}?n=512")
    assert ds.kind == "image" and ds.sample_shape == (3, size, size) and len(ds) == 512
    x = ds.get(slice(None))
    assert x.dtype == torch.float32 and x.shape == (512, 3, size, size)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.min() < -0.9 and x.max() > 0.9  # the full range is used
    u8 = ds.uint8(slice(None))
    assert u8.dtype == np.uint8 and u8.shape == (512, size, size, 3)
    # Not trivial: every image has structure, images differ, colours vary, and antialiased edges exist.
    per_image_std = u8.reshape(512, -1).astype(np.float64).std(axis=1)
    assert per_image_std.min() > 8.0 and np.median(per_image_std) > 25.0
    flat = u8.reshape(512, -1)
    assert len(np.unique(flat, axis=0)) == 512
    mean_colour = u8.reshape(512, -1, 3).mean(axis=1)
    assert mean_colour.std(axis=0).min() > 15.0
    assert np.abs(flat.astype(np.float64).mean(axis=0) - flat.mean()).max() < 40  # no fixed layout
    # Shapes cover a minority of pixels: the image is neither one flat colour nor noise.
    diff = np.abs(np.diff(u8.astype(np.int16), axis=2)).max(axis=3)
    assert ((diff > 60).mean(axis=(1, 2)) < 0.5).all()


def test_shapes_generation_is_fast():
    import time

    t = time.perf_counter()
    make_shapes(32, 2048, 0)
    assert time.perf_counter() - t < 5.0  # ~0.3 s here; a generous bound, not a benchmark


def _segment_distance(p, a, b):
    ab, ap = b - a, p - a
    t = np.clip((ap @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(ap - np.outer(t, ab), axis=1)


def _inside_convex(p, verts):
    s = []
    for i in range(len(verts)):
        a, b = verts[i], verts[(i + 1) % len(verts)]
        s.append((b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0]))
    s = np.stack(s)
    return (s >= 0).all(axis=0) | (s <= 0).all(axis=0)


def _polygon_sdf(p, verts):
    d = np.min(
        [_segment_distance(p, verts[i], verts[(i + 1) % len(verts)]) for i in range(len(verts))], axis=0
    )
    return np.where(_inside_convex(p, verts), -d, d)


def test_sdfs_against_polygon_oracle():
    rng = np.random.default_rng(0)
    p = rng.uniform(-6, 6, (4000, 2))
    r = 2.5
    assert np.allclose(sdf_circle(p[:, 0], p[:, 1], r), np.hypot(p[:, 0], p[:, 1]) - r)
    square = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
    assert np.allclose(sdf_square(p[:, 0], p[:, 1], r), _polygon_sdf(p, square), atol=1e-9)
    tri = np.array([[-r, -r / math.sqrt(3)], [r, -r / math.sqrt(3)], [0.0, 2 * r / math.sqrt(3)]])
    assert np.allclose(tri.mean(axis=0), 0.0)  # centroid at the origin
    assert np.allclose(sdf_triangle(p[:, 0], p[:, 1], r), _polygon_sdf(p, tri), atol=1e-9)


def test_gaussians2d():
    ds = load_dataset("builtin:gaussians2d")
    assert ds.kind == "points" and ds.sample_shape == (2,) and len(ds) == 8192
    x = ds.get(slice(None)).double()
    assert x.dtype == torch.float64 and torch.isfinite(x).all()
    assert torch.allclose(x.std(dim=0), torch.ones(2, dtype=torch.float64), atol=0.05)
    assert x.mean(dim=0).abs().max() < 0.05
    # every point is near one of the 8 means on the circle of radius R
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = GAUSSIANS2D_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)
    d = torch.cdist(x, means)
    assert d.min(dim=1).values.max() < 0.6
    counts = torch.bincount(d.argmin(dim=1), minlength=8)
    assert counts.min() > 8192 / 8 * 0.85


def test_swissroll():
    x = load_dataset("builtin:swissroll").get(slice(None)).double()
    assert x.shape == (8192, 2)
    assert x.mean(dim=0).abs().max() < 0.05
    assert torch.allclose(x.std(dim=0), torch.ones(2, dtype=torch.float64), atol=0.06)
    r = x.norm(dim=1)
    assert r.min() < 0.9 and r.max() > 1.9  # a spiral, not a blob
