"""``Dataset`` indexing, conversion, fingerprint and ``load_dataset`` options (flatkit/data/dataset.py)."""

import numpy as np
import pytest
import torch

from flatkit.data import Dataset, load_dataset, write_uint8_npz
from flatkit.errors import UsageError


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("builtin:shapes16?n=64")


def test_conversion_matches_adm_convention(shapes):
    u8 = shapes.uint8(slice(None)).astype(np.float64)
    ref = torch.from_numpy(u8.transpose(0, 3, 1, 2) / 127.5 - 1.0)
    x = shapes.get(slice(None))
    assert x.dtype == torch.float32 and x.is_contiguous()
    assert torch.allclose(x.double(), ref, atol=1e-6)


def test_index_kinds_give_batches(shapes):
    full = shapes.get(slice(None))
    idx = [5, 0, 63, 5]
    assert torch.equal(shapes.get(idx), full[idx])
    assert torch.equal(shapes.get(np.array(idx)), full[idx])
    assert torch.equal(shapes.get(torch.tensor(idx)), full[idx])
    assert torch.equal(shapes.get(3), full[3:4])  # an int gives a batch of one
    assert torch.equal(shapes.get(np.int64(-1)), full[-1:])
    assert torch.equal(shapes.get(slice(2, 10, 3)), full[2:10:3])
    mask = torch.zeros(64, dtype=torch.bool)
    mask[[1, 7]] = True
    assert torch.equal(shapes.get(mask), full[[1, 7]])
    assert shapes.uint8(7).shape == (1, 16, 16, 3)
    with pytest.raises(IndexError):
        shapes.get(64)


def test_results_do_not_alias_storage(shapes):
    before = shapes.fingerprint()
    shapes.uint8(slice(None))[:] = 0
    shapes.get(slice(0, 4)).zero_()
    pts = load_dataset("builtin:gaussians2d?n=16")
    pts.get(slice(None)).zero_()
    assert shapes.fingerprint() == before and shapes.uint8(0).any()
    assert pts.get(slice(None)).abs().sum() > 0
    fresh = load_dataset("builtin:shapes16?n=64")  # the cached generator output is untouched too
    assert fresh.fingerprint() == before


def test_points_dataset():
    ds = load_dataset("builtin:swissroll?n=100&seed=2", image_size=32)  # image_size ignored for points
    assert ds.kind == "points" and ds.sample_shape == (2,) and ds.get([0, 1]).shape == (2, 2)
    assert ds.spec == "builtin:swissroll?n=100&seed=2" and ds.labels is None
    with pytest.raises(UsageError, match="no uint8 images"):
        ds.uint8(0)


def test_fingerprint(tmp_path, shapes):
    fp = shapes.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    path = tmp_path / "s.npz"
    write_uint8_npz(path, shapes.uint8(slice(None)))
    assert load_dataset(f"npz:{path}").fingerprint() == fp  # content, not source
    assert load_dataset("builtin:shapes16?n=63").fingerprint() != fp
    imgs = shapes.uint8(slice(None))
    assert Dataset("x", "image", images=imgs.reshape(64, 16, 48, 1)).fingerprint() != fp  # shape counts


def test_image_size_option():
    ds = load_dataset("builtin:shapes32?n=4", image_size=16)
    assert ds.sample_shape == (3, 16, 16) and ds.spec == "builtin:shapes32?n=4"
    for bad in (0, -3, 2.5, True):
        with pytest.raises(UsageError, match="^image_size "):
            load_dataset("builtin:shapes16?n=4", image_size=bad)


def test_unknown_specs_raise_usage_error():
    for spec in ("mnist:/x", "builtin:nope", "nocolon"):
        with pytest.raises(UsageError):
            load_dataset(spec)
