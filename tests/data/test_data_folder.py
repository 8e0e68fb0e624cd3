"""``folder:`` image folders (flatkit/data/folder.py): order, ADM centre crop and resize, bad input."""

import numpy as np
import pytest
from PIL import Image

from flatkit.data import load_dataset
from flatkit.data.folder import center_crop_arr, resize_images
from flatkit.errors import UsageError


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _solid(h, w, colour):
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def test_sorted_recursive_order_and_filters(tmp_path):
    colours = {"a.png": (250, 0, 0), "b/10.bmp": (0, 250, 0), "b/2.webp": (0, 0, 250), "c.JPG": (250, 250, 0)}
    for name, c in colours.items():
        _save(tmp_path / name, _solid(8, 8, c))
    (tmp_path / "notes.txt").write_text("not an image")
    _save(tmp_path / ".hidden.png", _solid(8, 8, (9, 9, 9)))
    _save(tmp_path / ".cache" / "x.png", _solid(8, 8, (9, 9, 9)))
    ds = load_dataset(f"folder:{tmp_path}")
    assert len(ds) == 4 and ds.sample_shape == (3, 8, 8)
    means = ds.uint8(slice(None)).reshape(4, -1, 3).mean(axis=1)
    assert np.abs(means - np.array(list(colours.values()))).max() < 6  # sorted relative paths; jpg/webp lossy
    assert ds.spec == f"folder:{tmp_path}"


def test_modes_converted_to_rgb(tmp_path):
    _save(tmp_path / "g.png", np.full((8, 8), 77, np.uint8))
    pal = Image.fromarray(np.zeros((8, 8), np.uint8), "P")
    pal.putpalette([10, 20, 30] + [0] * 765)
    pal.save(tmp_path / "p.png")
    rgba = np.dstack([_solid(8, 8, (1, 2, 3)), np.full((8, 8), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "r.png")
    x = load_dataset(f"folder:{tmp_path}").uint8(slice(None))
    assert x.shape == (3, 8, 8, 3)
    assert (x[0] == 77).all() and (x[1] == (10, 20, 30)).all() and (x[2] == (1, 2, 3)).all()


def test_centre_crop_takes_the_middle():
    # 64 wide x 32 tall: 16 red columns | 32 green | 16 blue; target 32 -> no resize, the centre is all green
    arr = np.concatenate(
        [_solid(32, 16, (255, 0, 0)), _solid(32, 32, (0, 255, 0)), _solid(32, 16, (0, 0, 255))], 1
    )
    out = center_crop_arr(Image.fromarray(arr), 32)
    assert out.shape == (32, 32, 3) and (out == (0, 255, 0)).all()


def _box_half(a):
    """2x2 box mean as PIL computes it: horizontal pass, round half up, vertical pass, round half up."""
    h = np.floor(a.reshape(a.shape[0], -1, 2, *a.shape[2:]).mean(axis=2) + 0.5)
    return np.floor(h.reshape(-1, 2, *h.shape[1:]).mean(axis=1) + 0.5)


def test_box_halving_while_at_least_twice():
    # 128 -> 64 -> 32 by 2x2 box means, then scale 1 (no bicubic), then nothing to crop
    arr = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = center_crop_arr(Image.fromarray(arr), 32)
    assert out.shape == (32, 32, 3)
    assert np.array_equal(out, _box_half(_box_half(arr.astype(np.float64))))
    # the rounding-free 4x4 block mean agrees within two rounding steps
    assert np.abs(out - arr.astype(np.float64).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))).max() <= 2.0


def test_bicubic_then_crop_offsets():
    # 30 wide x 50 tall, target 20: no halving (30 < 40), bicubic to 20 x 33, crop rows 6..25
    arr = np.repeat(np.arange(50, dtype=np.uint8)[:, None] * 5, 30, axis=1)
    arr = np.dstack([arr] * 3)
    out = center_crop_arr(Image.fromarray(arr), 20)
    full = np.asarray(Image.fromarray(arr).resize((20, 33), Image.Resampling.BICUBIC))
    assert out.shape == (20, 20, 3) and np.array_equal(
        out, full[6:26, 5:25] if full.shape[1] > 20 else full[6:26]
    )
    # rows keep their order and span the middle of the gradient
    assert 100 < out[:, 10, 0].mean() < 150 and (np.diff(out[:, 10, 0].astype(int)) >= 0).all()


def test_constant_image_stays_constant():
    out = center_crop_arr(Image.fromarray(_solid(100, 61, (10, 200, 30))), 16)
    assert out.shape == (16, 16, 3) and (out == (10, 200, 30)).all()


def test_folder_with_image_size(tmp_path):
    _save(tmp_path / "a.png", _solid(40, 60, (0, 0, 0)))
    _save(tmp_path / "b.png", _solid(90, 30, (255, 255, 255)))
    ds = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert ds.sample_shape == (3, 16, 16) and len(ds) == 2
    x = ds.get(slice(None))
    assert (x[0] == -1).all() and (x[1] == 1).all()


def test_resize_images_grayscale_and_identity():
    x = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    assert resize_images(x, 8) is x
    y = resize_images(x, 4)
    assert y.shape == (3, 4, 4, 1)
    assert np.abs(y[..., 0] - x[..., 0].reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))).max() <= 1.0


def test_bad_folders(tmp_path):
    with pytest.raises(UsageError, match="no such directory"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    f = tmp_path / "file.png"
    _save(f, _solid(4, 4, (0, 0, 0)))
    with pytest.raises(UsageError, match=f"{f}: not a directory"):
        load_dataset(f"folder:{f}")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    with pytest.raises(UsageError, match=f"{empty}: no images"):
        load_dataset(f"folder:{empty}")
    bad = tmp_path / "bad"
    _save(bad / "a.png", _solid(4, 4, (0, 0, 0)))
    (bad / "b.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(UsageError, match=f"{bad / 'b.png'}: unreadable image"):
        load_dataset(f"folder:{bad}", image_size=4)
    trunc = tmp_path / "trunc"
    _save(trunc / "a.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    raw = (trunc / "a.png").read_bytes()
    (trunc / "a.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UsageError, match="a.png: unreadable image"):
        load_dataset(f"folder:{trunc}")


def test_mixed_and_non_square_folders_are_centre_cropped(tmp_path):
    _save(tmp_path / "a.png", _solid(8, 8, (0, 0, 0)))
    _save(tmp_path / "b.png", _solid(16, 16, (0, 0, 0)))
    assert load_dataset(f"folder:{tmp_path}").sample_shape == (3, 8, 8)  # the smallest short side
    other = tmp_path / "o"
    _save(other / "a.png", _solid(60, 80, (10, 20, 30)))
    ds = load_dataset(f"folder:{other}")
    assert ds.sample_shape == (3, 60, 60)
    assert (ds.uint8(0) == np.array([10, 20, 30], np.uint8)).all()
    with pytest.raises(UsageError, match="image_size"):
        load_dataset(f"folder:{other}", image_size=0)


def test_spec_options_image_size_channels_n(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", _solid(60, 80, (200, 100, 50)))
    ds = load_dataset(f"folder:{tmp_path}?image_size=16&channels=1&n=2")
    assert ds.sample_shape == (1, 16, 16) and len(ds) == 2
    grey = np.asarray(Image.fromarray(_solid(4, 4, (200, 100, 50))).convert("L"))[0, 0]
    assert (ds.uint8(0) == grey).all()
    np.savez(tmp_path / "g.npz", arr_0=np.full((5, 8, 8), 7, np.uint8))  # (N, H, W): grayscale
    ds = load_dataset(f"npz:{tmp_path / 'g.npz'}?n=3")
    assert ds.sample_shape == (1, 8, 8) and len(ds) == 3
    assert load_dataset(f"npz:{tmp_path / 'g.npz'}?channels=3&image_size=4").sample_shape == (3, 4, 4)
    for bad in ("channels=2", "image_size=0", "n=0", "n=x"):
        with pytest.raises(UsageError, match=f"--data .*{bad.split('=')[0]}"):
            load_dataset(f"folder:{tmp_path}?{bad}")
