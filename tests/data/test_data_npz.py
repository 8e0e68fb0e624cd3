"""``npz:`` files and :func:`write_uint8_npz` (flatkit/data/npz.py)."""

import os

import numpy as np
import pytest

from flatkit.data import load_dataset, write_uint8_npz
from flatkit.errors import UsageError


def _images(n=5, size=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, c), dtype=np.uint8)


def test_round_trip_is_exact_and_atomic(tmp_path):
    x = _images()
    path = tmp_path / "samples_5x8x8x3.npz"
    write_uint8_npz(path, x)
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left
    with np.load(path) as z:
        assert z.files == ["arr_0"] and np.array_equal(z["arr_0"], x)  # ADM's layout
    ds = load_dataset(f"npz:{path}")
    assert ds.sample_shape == (3, 8, 8) and np.array_equal(ds.uint8(slice(None)), x)
    assert ds.spec == f"npz:{path}"
    write_uint8_npz(path, x[:2])  # overwrite in place
    assert len(load_dataset(f"npz:{path}")) == 2


def test_exact_file_name_kept(tmp_path):
    write_uint8_npz(tmp_path / "noext", _images())
    assert os.listdir(tmp_path) == ["noext"]


def test_single_array_and_npy_accepted(tmp_path):
    x = _images(c=1)
    np.savez(tmp_path / "one.npz", samples=x)
    np.save(tmp_path / "one.npy", x)
    for f in ("one.npz", "one.npy"):
        ds = load_dataset(f"npz:{tmp_path / f}")
        assert ds.sample_shape == (1, 8, 8) and np.array_equal(ds.uint8(slice(None)), x)


def test_arr_0_preferred_over_others(tmp_path):
    x = _images()
    np.savez(
        tmp_path / "m.npz", x, arr_1=np.zeros(3, np.int64)
    )  # ADM's class-conditional samples: arr_0, arr_1
    assert np.array_equal(load_dataset(f"npz:{tmp_path / 'm.npz'}").uint8(slice(None)), x)


def test_image_size_resizes(tmp_path):
    write_uint8_npz(tmp_path / "s.npz", _images(size=16))
    assert load_dataset(f"npz:{tmp_path / 's.npz'}", image_size=8).sample_shape == (3, 8, 8)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: np.savez(p, a=_images(), b=_images()), "no arr_0 array (keys: a, b)"),
        (lambda p: np.savez(p, arr_0=_images().astype(np.float32)), "must be uint8, got float32"),
        (lambda p: np.savez(p, arr_0=_images()[0]), "NHWC with 1 or 3 channels, got shape (8, 8, 3)"),
        (lambda p: np.savez(p, arr_0=_images(c=4)), "got shape (5, 8, 8, 4)"),
        (lambda p: np.savez(p, arr_0=np.zeros((0, 8, 8, 3), np.uint8)), "empty image array"),
        (lambda p: open(p, "wb").write(b"PK\x03\x04 not really a zip"), "not a readable .npz file"),
        (lambda p: np.savez(p, arr_0=np.array([{"a": 1}], dtype=object)), "not a readable .npz file"),
    ],
)
def test_bad_npz(tmp_path, make, fragment):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UsageError) as e:
        load_dataset(f"npz:{path}")
    assert str(path) in str(e.value) and fragment in str(e.value) and "\n" not in str(e.value)


def test_missing_npz_and_bad_writes(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    with pytest.raises(UsageError, match="must be uint8"):
        write_uint8_npz(tmp_path / "w.npz", np.zeros((1, 4, 4, 3), np.float32))
    assert os.listdir(tmp_path) == []
