"""``flatkit fid`` with a detector the test exports (torch.export, .pt2) and saves; bad input exits 2 with one
line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flatkit.cli import main
from flatkit.metrics.frechet import frechet_distance


class TinyDetector(torch.nn.Module):
    """Features = per-channel means and a fixed linear map of 4x4-pooled pixels, scaled to [0, 1] input."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 16, 5, generator=g))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x / 255.0
        p = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([x.mean(dim=(2, 3)), p @ self.w], dim=1)


class WrongShapeDetector(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return x.mean(dim=1)


def _features_numpy(imgs: np.ndarray, w: np.ndarray) -> np.ndarray:
    x = imgs.astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    n, c, h, _ = x.shape
    p = x.reshape(n, c, 4, h // 4, 4, h // 4).mean(axis=(3, 5)).reshape(n, -1)
    return np.concatenate([x.mean(axis=(2, 3)), p @ w], axis=1)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    b = np.clip(rng.integers(0, 256, (50, 16, 16, 3)) * 0.8 + 30, 0, 255).astype(np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=a)
    np.savez(tmp_path / "ref.npz", arr_0=b)
    det = TinyDetector()
    x = torch.zeros(4, 3, 16, 16)
    batch = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    torch.export.save(torch.export.export(det, (x,), dynamic_shapes=batch), str(tmp_path / "det.pt2"))
    wrong = torch.export.export(WrongShapeDetector(), (x,), dynamic_shapes=batch)
    torch.export.save(wrong, str(tmp_path / "wrong.pt2"))
    return tmp_path, a, b, det.w.numpy().astype(np.float64)


def test_fid_kid_against_independent_computation(files) -> None:
    d, a, b, w = files
    out = d / "out"
    r = CliRunner().invoke(
        main,
        [
            "fid",
            str(d / "samples.npz"),
            str(d / "ref.npz"),
            "--detector",
            str(d / "det.pt2"),
            "--out",
            str(out),
            "--ref-cache",
            str(d / "cache.npz"),
            "--kid-subsets",
            "4",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "fid.json").read_text())
    fa, fb = _features_numpy(a, w), _features_numpy(b, w)
    want = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    # independent check of the same number through the non-symmetric eigenvalues of Σ₁Σ₂
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    lam = np.linalg.eigvals(s1 @ s2).real.clip(0)
    indep = ((fa.mean(0) - fb.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum()
    assert res["fid"] == pytest.approx(want, rel=1e-5) and res["fid"] == pytest.approx(indep, rel=1e-5)
    assert res["kid"] is not None and "sw2" in res["weight_free"]
    assert res["meta"]["config"]["detector"] == str(d / "det.pt2")
    # the cache is pytorch-fid shaped and is read back: same FID from statistics alone (KID then null)
    z = np.load(d / "cache.npz")
    assert set(z.files) >= {"mu", "sigma"}
    np.savez(d / "stats_only.npz", mu=z["mu"], sigma=z["sigma"])
    r2 = CliRunner().invoke(
        main,
        [
            "fid",
            str(d / "samples.npz"),
            str(d / "stats_only.npz"),
            "--detector",
            str(d / "det.pt2"),
            "--out",
            str(d / "out2"),
            "--no-progress",
        ],
    )
    assert r2.exit_code == 0, r2.output
    res2 = json.loads((d / "out2" / "fid.json").read_text())
    assert res2["fid"] == pytest.approx(res["fid"], rel=1e-9) and res2["kid"] is None


def test_fid_without_detector_is_weight_free_only(files) -> None:
    d, *_ = files
    r = CliRunner().invoke(main, ["fid", str(d / "samples.npz"), str(d / "ref.npz"), "--out", str(d / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((d / "o" / "fid.json").read_text())
    assert res["fid"] is None and res["kid"] is None and res["weight_free"]["sw2"] > 0
    assert "not FID" in res["weight_free_names"]["sw2"]


@pytest.mark.parametrize("case", ["dtype", "shape", "not_torchscript", "wrong_output", "missing"])
def test_bad_input_exits_2_with_one_line(files, case) -> None:
    d, a, *_ = files
    samples, det = str(d / "samples.npz"), str(d / "det.pt2")
    if case == "dtype":
        np.savez(d / "f.npz", arr_0=a.astype(np.float32))
        samples, name = str(d / "f.npz"), "f.npz"
    elif case == "shape":
        np.savez(d / "s.npz", arr_0=a[..., 0])
        samples, name = str(d / "s.npz"), "s.npz"
    elif case == "not_torchscript":
        (d / "junk.pt").write_bytes(b"not a model")
        det, name = str(d / "junk.pt"), "--detector"
    elif case == "wrong_output":
        det, name = str(d / "wrong.pt2"), "--detector"
    else:
        samples, name = str(d / "nope.npz"), "nope.npz"
    r = CliRunner().invoke(
        main, ["fid", samples, str(d / "ref.npz"), "--detector", det, "--out", str(d / "x"), "--no-progress"]
    )
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and name in lines[0], r.output
