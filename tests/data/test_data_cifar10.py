"""CIFAR-10 python batches (flatkit/data/cifar10.py) on a small fake archive with the official structure."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from flatkit.data import load_dataset
from flatkit.data.cifar10 import (
    ARCHIVE_NAME,
    SPLITS,
    RefusedPickle,
    RestrictedUnpickler,
    cifar_batch_bytes,
    download_cifar10,
    md5_file,
)
from flatkit.errors import FlatkitError, UsageError

PER_BATCH = 6


def _fake_batches(seed=0):
    """name -> (images NHWC, labels, bytes) for the five training batches and the test batch."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in SPLITS["train"] + SPLITS["test"]:
        images = rng.integers(0, 256, (PER_BATCH, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, PER_BATCH)
        out[name] = (images, labels, cifar_batch_bytes(images, labels, batch_label=name))
    return out


def _write_dir(d, batches, skip=()):
    os.makedirs(d, exist_ok=True)
    for name, (_, _, raw) in batches.items():
        if name not in skip:
            with open(os.path.join(d, name), "wb") as fh:
                fh.write(raw)
    with open(os.path.join(d, "batches.meta"), "wb") as fh:
        fh.write(b"not needed")
    return d


def _write_tar(path, batches, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, (_, _, raw) in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def _expected(batches, split):
    names = SPLITS[split]
    return np.concatenate([batches[n][0] for n in names]), np.concatenate([batches[n][1] for n in names])


def test_fake_batch_has_the_official_structure():
    images = np.arange(32 * 32 * 3, dtype=np.int64).reshape(1, 32, 32, 3).astype(np.uint8)
    raw = cifar_batch_bytes(images, [3])
    ops = {op.name for op, _, _ in __import__("pickletools").genops(raw)}
    assert "SHORT_BINSTRING" in ops and "BINUNICODE" not in ops  # Python 2 byte strings
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    d = pickle.loads(raw, encoding="bytes")  # the documented way to read the official files
    assert set(d) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (1, 3072)
    # row-major CHW: the first 1024 values are the red plane
    assert np.array_equal(d[b"data"][0, :1024], images[0, :, :, 0].reshape(-1))
    assert np.array_equal(d[b"data"][0, 1024:2048], images[0, :, :, 1].reshape(-1))


@pytest.mark.parametrize("form", ["dir", "nested_dir", "tar_gz", "tar", "dir_with_archive"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_reader_forms(tmp_path, form, split):
    batches = _fake_batches()
    if form == "dir":
        path = _write_dir(tmp_path / "b", batches)
    elif form == "nested_dir":
        _write_dir(tmp_path / "root" / "cifar-10-batches-py", batches)
        path = tmp_path / "root"
    elif form == "tar_gz":
        path = _write_tar(tmp_path / ARCHIVE_NAME, batches)
    elif form == "tar":
        path = _write_tar(tmp_path / "c.tar", batches, mode="w")
    else:
        os.makedirs(tmp_path / "dl")
        _write_tar(tmp_path / "dl" / ARCHIVE_NAME, batches)
        path = tmp_path / "dl"
    spec = f"cifar10:{path}" + ("?split=test" if split == "test" else "")
    ds = load_dataset(spec)
    images, labels = _expected(batches, split)
    assert ds.kind == "image" and ds.sample_shape == (3, 32, 32) and len(ds) == len(images)
    assert np.array_equal(ds.uint8(slice(None)), images)
    assert np.array_equal(ds.labels, labels)
    x = ds.get(slice(None)).double()
    ref = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float64)) / 127.5 - 1.0
    assert torch.allclose(x, ref, atol=1e-6)
    assert ds.spec.startswith("cifar10:" + str(tmp_path)) and ds.spec.endswith("?split=test") == (
        split == "test"
    )


def test_tar_is_not_extracted_to_disk(tmp_path):
    path = _write_tar(tmp_path / ARCHIVE_NAME, _fake_batches())
    load_dataset(f"cifar10:{path}")
    assert sorted(os.listdir(tmp_path)) == [ARCHIVE_NAME]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    batches = _fake_batches()
    d = _write_dir(tmp_path / "b", batches)
    evil = pickle.dumps(
        {b"data": _Evil(marker), b"labels": [0]} if protocol > 2 else _Evil(marker), protocol=protocol
    )
    (d / "data_batch_3").write_bytes(evil)
    with pytest.raises(UsageError) as e:
        load_dataset(f"cifar10:{d}")
    msg = str(e.value)
    assert str(d / "data_batch_3") in msg and "not allowed" in msg and "\n" not in msg
    assert not marker.exists()
    # the same file inside a tarball: refused, naming archive and member
    batches["data_batch_3"] = (None, None, evil)
    tar = _write_tar(tmp_path / ARCHIVE_NAME, batches)
    with pytest.raises(UsageError, match="data_batch_3.*not allowed"):
        load_dataset(f"cifar10:{tar}")
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [("builtins", "eval"), ("numpy", "load"), ("numpy.core.multiarray", "scalar"), ("os", "system")],
)
def test_restricted_unpickler_refuses_other_globals(module, name):
    raw = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nq\x00."
    with pytest.raises(RefusedPickle, match="not allowed"):
        RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (lambda raw: raw[: len(raw) // 2], "not a CIFAR-10 python batch"),  # truncated
        (lambda raw: b"hello, this is not a pickle", "not a CIFAR-10 python batch"),
        (lambda raw: b"", "not a CIFAR-10 python batch"),
        (lambda raw: pickle.dumps([1, 2, 3], protocol=4), "not a dict"),
        (lambda raw: pickle.dumps({b"labels": [0]}, protocol=4), "'data' is not a uint8 (N, 3072) array"),
        (
            lambda raw: pickle.dumps(
                {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, protocol=4
            ),
            "'data' is not a uint8",
        ),
        (
            lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=4),
            "'labels' must be 2 integers in 0..9",
        ),
    ],
)
def test_bad_batch_files(tmp_path, content, fragment):
    batches = _fake_batches()
    d = _write_dir(tmp_path / "b", batches)
    (d / "data_batch_2").write_bytes(content(batches["data_batch_2"][2]))
    with pytest.raises(UsageError) as e:
        load_dataset(f"cifar10:{d}")
    assert str(d / "data_batch_2") in str(e.value) and fragment in str(e.value)


def test_missing_and_foreign_paths(tmp_path):
    batches = _fake_batches()
    with pytest.raises(UsageError, match="no such file or directory"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=f"{empty}: no CIFAR-10 train batches"):
        load_dataset(f"cifar10:{empty}")
    partial = _write_dir(tmp_path / "partial", batches, skip=("data_batch_4",))
    with pytest.raises(UsageError, match="missing data_batch_4"):
        load_dataset(f"cifar10:{partial}")
    assert len(load_dataset(f"cifar10:{partial}?split=test")) == PER_BATCH  # the test split is complete
    notar = tmp_path / "x.tar.gz"
    notar.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UsageError, match=f"{notar}: not a readable CIFAR-10 tar archive"):
        load_dataset(f"cifar10:{notar}")
    full = _write_tar(tmp_path / "full.tar.gz", batches)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(UsageError, match=str(cut)):
        load_dataset(f"cifar10:{cut}")
    lacking = _write_tar(tmp_path / "lacking.tar.gz", {k: v for k, v in batches.items() if k != "test_batch"})
    with pytest.raises(UsageError, match="lacks CIFAR-10 batches test_batch"):
        load_dataset(f"cifar10:{lacking}?split=test")


def test_no_download_unless_asked(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(UsageError):
        load_dataset(f"cifar10:{tmp_path / 'absent'}")


def test_download_checks_md5(tmp_path):
    """The download path, offline: a file:// URL stands for the official one."""
    src = _write_tar(tmp_path / "src.tar.gz", _fake_batches())
    url = src.as_uri()
    with pytest.raises(FlatkitError, match="md5"):
        download_cifar10(str(tmp_path / "bad"), url=url, md5="0" * 32)
    assert os.listdir(tmp_path / "bad") == []  # nothing left behind
    got = download_cifar10(str(tmp_path / "good"), url=url, md5=md5_file(str(src)))
    assert got == str(tmp_path / "good" / ARCHIVE_NAME) and md5_file(got) == md5_file(str(src))
    with pytest.raises(FlatkitError, match="download failed"):
        download_cifar10(str(tmp_path / "missing"), url=(tmp_path / "nope.tar.gz").as_uri(), md5="0" * 32)
