"""FID detectors and statistics files, offline: a small detector the test builds gives identical features as a
module, a factory, a torch.export program and a TorchScript file; statistics round-trip in the formats of
pytorch-fid, clean-fid and torch-fidelity; the named libraries are reached through their own cache (fake
libraries laid out by the test stand in for them when they are not installed); folders of PNGs are samples."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flatkit.cli import main
from flatkit.errors import UsageError
from flatkit.metrics import detector as detmod
from flatkit.metrics.detector import detector_features, expected_weights, load_detector
from flatkit.metrics.fid import fid, load_samples, samples_sha256, write_png_folder
from flatkit.metrics.frechet import feature_statistics, frechet_distance, load_statistics, save_statistics

DETECTOR_SRC = '''
import torch


class TinyDetector(torch.nn.Module):
    """(N, 3 + 5) features: channel means and a fixed projection of 4x4-pooled pixels of [0, 255] input."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 16, 5, generator=g))

    def forward(self, x):
        x = x / 255.0
        p = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([x.mean(dim=(2, 3)), p @ self.w], dim=1)


def make():
    return TinyDetector()
'''


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (41, 16, 16, 3), dtype=np.uint8)
    b = np.clip(rng.integers(0, 256, (30, 16, 16, 3)) * 0.7 + 40, 0, 255).astype(np.uint8)
    return a, b


@pytest.fixture
def det_files(tmp_path, monkeypatch):
    """The detector as a .py factory, a dynamic-batch and a fixed-batch .pt2 program, and a TorchScript file."""
    (tmp_path / "tinydet.py").write_text(DETECTOR_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tinydet

    det = tinydet.make().eval()
    x = torch.zeros(8, 3, 16, 16)
    dyn = torch.export.export(det, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
    torch.export.save(dyn, str(tmp_path / "dyn.pt2"))
    torch.export.save(torch.export.export(det, (x,)), str(tmp_path / "fixed8.pt2"))  # batch specialised to 8
    with warnings.catch_warnings():  # the old format is still read; writing it warns on torch >= 2.13
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(det, x).save(str(tmp_path / "ts.pt"))
    yield det, tmp_path
    sys.modules.pop("tinydet", None)


def test_every_way_of_bringing_a_detector_gives_identical_features(det_files, images):
    det, d = det_files
    a, _ = images
    want = detector_features(det, a, batch_size=16)  # the module object itself
    for spec in (f"{d / 'tinydet.py'}:make", "tinydet:make", str(d / "dyn.pt2"), str(d / "fixed8.pt2"),
                 str(d / "ts.pt")):
        got = detector_features(load_detector(spec), a, batch_size=16)  # 41 = 16 + 16 + 9: a ragged last batch
        if "fixed8" in spec:  # batches of 8, the last one padded: a matmul of another shape may round differently
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=spec)
        else:
            np.testing.assert_array_equal(got, want, err_msg=spec)
    assert want.shape == (41, 8)
    kinds = {s: load_detector(s).kind for s in (str(d / "dyn.pt2"), str(d / "ts.pt"), "tinydet:make")}
    assert list(kinds.values()) == ["export", "torchscript", "factory"]


def test_stats_round_trip_in_each_library_format(tmp_path):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(50, 6))
    mu, sigma = feature_statistics(f)
    # pytorch-fid's --save-stats: np.savez_compressed(path, mu=mu, sigma=sigma); clean-fid's stats are the same
    np.savez_compressed(tmp_path / "pf.npz", mu=mu, sigma=sigma)
    m, s, feats = load_statistics(tmp_path / "pf.npz")
    np.testing.assert_array_equal(m, mu) and np.testing.assert_array_equal(s, sigma)
    assert feats is None
    save_statistics(tmp_path / "back.npz", m, s)
    with np.load(tmp_path / "back.npz") as z:
        assert sorted(z.files) == ["mu", "sigma"]
        np.testing.assert_array_equal(z["mu"], mu) and np.testing.assert_array_equal(z["sigma"], sigma)
    # clean-fid's KID file holds only feats
    np.savez_compressed(tmp_path / "cf_kid.npz", feats=f.astype(np.float32))
    m2, s2, f2 = load_statistics(tmp_path / "cf_kid.npz")
    assert f2.shape == (50, 6) and np.allclose(m2, mu, atol=1e-6) and np.allclose(s2, sigma, atol=1e-5)
    # torch-fidelity's cache entry: torch.save({"mu": float32, "sigma": float64}) of numpy arrays
    torch.save({"mu": mu.astype(np.float32), "sigma": sigma}, tmp_path / "tf-stat-fid-2048.pt")
    m3, s3, _ = load_statistics(tmp_path / "tf-stat-fid-2048.pt")
    np.testing.assert_array_equal(m3, mu.astype(np.float32)) and np.testing.assert_array_equal(s3, sigma)
    save_statistics(tmp_path / "ours.pt", mu, sigma)
    back = torch.load(tmp_path / "ours.pt", weights_only=False)  # as torch-fidelity reads its cache
    assert back["mu"].dtype == np.float32 and back["sigma"].dtype == np.float64
    np.testing.assert_array_equal(back["sigma"], sigma)
    # a pickle with anything but numpy arrays is refused, not run
    torch.save({"mu": mu, "sigma": sigma, "x": warnings.catch_warnings}, tmp_path / "evil.pt")
    with pytest.raises(UsageError, match="evil.pt"):
        load_statistics(tmp_path / "evil.pt")


def _features(n=60, d=5, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + shift


def test_pytorch_fid_frechet_agrees():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    a, b = _features(), _features(seed=1, shift=0.5)
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    assert fid_score.calculate_frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m1, s1, m2, s2),
                                                                                   rel=1e-6)


def test_clean_fid_frechet_agrees():
    cfid = pytest.importorskip("cleanfid.fid")
    a, b = _features(), _features(seed=1, shift=0.5)
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    assert cfid.frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-6)


def test_torch_fidelity_frechet_agrees():
    mf = pytest.importorskip("torch_fidelity.metric_fid")
    a, b = _features(), _features(seed=1, shift=0.5)
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    got = mf.fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
    assert got["frechet_inception_distance"] == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-6)


# ---------------------------------------------------------------------------------------- the named libraries
# Stand-ins with each library's module layout and call convention (the real ones need torchvision and Inception
# weights): what is tested is flatkit's side, finding the cache file, refusing without it, and calling the
# library as the library calls itself.
FAKES = {
    "pytorch_fid/__init__.py": "",
    "pytorch_fid/inception.py": '''
        import torch
        class InceptionV3(torch.nn.Module):
            BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
            def __init__(self, output_blocks):
                super().__init__()
                assert output_blocks == [3]
            def forward(self, x):  # x in [0, 1]: a (N, 3, 2, 2) "block", pooled by the caller
                assert x.max() <= 1.0
                return [torch.nn.functional.adaptive_avg_pool2d(x, 2)]
    ''',
    "cleanfid/__init__.py": "",
    "cleanfid/resize.py": '''
        import numpy as np
        def build_resizer(mode):
            assert mode == "clean"
            return lambda im: np.asarray(im, dtype=np.float32)[::2, ::2]
    ''',
    "cleanfid/features.py": '''
        def build_feature_extractor(mode, device, use_dataparallel=True):
            assert mode == "clean" and not use_dataparallel
            return lambda x: x.mean(dim=(2, 3)) / 255.0
    ''',
    "torch_fidelity/__init__.py": "",
    "torch_fidelity/feature_extractor_inceptionv3.py": '''
        import torch
        class FeatureExtractorInceptionV3(torch.nn.Module):
            def __init__(self, name, features_list):
                super().__init__()
                assert name == "inception-v3-compat" and features_list == ["2048"]
            def forward(self, x):
                assert x.dtype == torch.uint8
                return (x.to(torch.float32).mean(dim=(2, 3)) / 255.0,)
    ''',
}


@pytest.fixture
def fake_libs(tmp_path, monkeypatch):
    root = tmp_path / "libs"
    for rel, src in FAKES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(detmod, "clean_fid_dir", lambda: tmp_path / "cleanfid_tmp")
    yield tmp_path
    for m in [m for m in sys.modules if m.split(".")[0] in ("pytorch_fid", "cleanfid", "torch_fidelity")]:
        del sys.modules[m]


@pytest.mark.parametrize("name", ["pytorch-fid", "clean-fid", "torch-fidelity"])
def test_named_library_needs_its_cached_weights(fake_libs, images, name, tmp_path):
    a, b = images
    np.savez(tmp_path / "s.npz", arr_0=a)
    np.savez(tmp_path / "r.npz", arr_0=b)
    args = ["fid", str(tmp_path / "s.npz"), str(tmp_path / "r.npz"), "--detector", name, "--no-progress",
            "--kid-subsets", "2"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o1")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    want = expected_weights(name)
    assert len(lines) == 1 and str(want) in lines[0] and "--download" in lines[0], r.output
    want.parent.mkdir(parents=True, exist_ok=True)
    want.write_bytes(b"weights")  # now in the library's cache
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o2")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o2" / "fid.json").read_text())
    # each stand-in's features are the channel means in [0, 1] (clean-fid's of the resized image)
    crop = (lambda x: x[:, ::2, ::2]) if name == "clean-fid" else (lambda x: x)
    fa, fb = (crop(x.astype(np.float64)).mean(axis=(1, 2)) / 255.0 for x in (a, b))
    want_fid = frechet_distance(*feature_statistics(fa), *feature_statistics(fb))
    assert res["fid"] == pytest.approx(want_fid, rel=1e-5, abs=1e-9)
    assert res["detector"] == name and res["detector_kind"] == name and res["feature_dim"] == 3
    assert res["detector_sha256"] is not None and name in res["meta"]["input_convention"]


def test_named_library_not_installed(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch_fidelity" else real(n, *a))
    with pytest.raises(UsageError, match=r"--detector torch-fidelity: the torch-fidelity package is not installed"):
        load_detector("torch-fidelity")


def test_download_lets_the_library_fetch(fake_libs):
    """With download=True a missing cache file is the library's business (the stand-in needs none)."""
    det = load_detector("pytorch-fid", download=True)
    assert det.kind == "pytorch-fid" and det.sha256 is None


# ---------------------------------------------------------------------------------------------- samples layout


def test_png_folder_and_adm_reference_batch(det_files, images, tmp_path):
    _, d = det_files
    a, b = images
    np.savez(tmp_path / "s.npz", arr_0=a)
    write_png_folder(tmp_path / "s.npz", tmp_path / "pngs")
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 41
    np.testing.assert_array_equal(load_samples(tmp_path / "pngs"), a)
    # an ADM reference batch: arr_0 with mu / sigma of ADM's own evaluator, which flatkit does not mix in
    np.savez(tmp_path / "ref_batch.npz", arr_0=b, mu=np.zeros(2048), sigma=np.eye(2048))
    np.savez(tmp_path / "r.npz", arr_0=b)
    out = {}
    for key, s, r in (("npz", "s.npz", "r.npz"), ("pngs", "pngs", "ref_batch.npz")):
        res = CliRunner().invoke(main, ["fid", str(tmp_path / s), str(tmp_path / r), "--detector",
                                        str(d / "dyn.pt2"), "--kid-subsets", "2", "--no-progress", "--out",
                                        str(tmp_path / f"o_{key}"), "--ref-cache", str(tmp_path / f"{key}.pt"),
                                        "--save-stats", str(tmp_path / f"samples_{key}.npz")])
        assert res.exit_code == 0, res.output
        out[key] = json.loads((tmp_path / f"o_{key}" / "fid.json").read_text())
    # --save-stats: the samples' mu / sigma as pytorch-fid writes them (and features)
    mu, sigma, feats = load_statistics(tmp_path / "samples_npz.npz")
    want_mu, want_sigma = feature_statistics(detector_features(det_files[0], a))
    np.testing.assert_allclose(mu, want_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma, want_sigma, rtol=1e-12)
    assert feats.shape == (41, 8) and out["npz"]["samples_stats"] == str(tmp_path / "samples_npz.npz")
    # the API: the same number with the module object, and with MODULE:FACTORY
    for detector in (det_files[0], "tinydet:make"):
        api = fid(str(tmp_path / "s.npz"), str(tmp_path / "r.npz"), detector=detector, kid_subsets=2)
        assert api.fid == pytest.approx(out["npz"]["fid"], rel=1e-12) and api.n_ref == 30
    assert out["pngs"]["fid"] == out["npz"]["fid"] and out["pngs"]["n_ref"] == 30
    # a folder's identity is its images' names and bytes: the same --out is reused until an image changes
    h = out["pngs"]["meta"]["samples_sha256"]
    assert h == samples_sha256(tmp_path / "pngs") and h != samples_sha256(tmp_path / "s.npz")
    again = ["fid", str(tmp_path / "pngs"), str(tmp_path / "ref_batch.npz"), "--detector", str(d / "dyn.pt2"),
             "--kid-subsets", "2", "--no-progress", "--out", str(tmp_path / "o_pngs"), "--ref-cache",
             str(tmp_path / "pngs.pt"), "--save-stats", str(tmp_path / "samples_pngs.npz")]
    r = CliRunner().invoke(main, again)
    assert r.exit_code == 0 and "reusing" in r.output, r.output
    write_png_folder(b[:2], tmp_path / "pngs")  # 000000.png, 000001.png now differ
    assert samples_sha256(tmp_path / "pngs") != h
    r = CliRunner().invoke(main, again)
    assert r.exit_code == 2 and "--out" in r.output, r.output
    # --ref-cache .pt wrote torch-fidelity's format; as REF it gives the same FID (statistics only: no KID)
    r = CliRunner().invoke(main, ["fid", str(tmp_path / "s.npz"), str(tmp_path / "npz.pt"), "--detector",
                                  str(d / "dyn.pt2"), "--no-progress", "--out", str(tmp_path / "o_pt")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o_pt" / "fid.json").read_text())
    assert res["fid"] == pytest.approx(out["npz"]["fid"], rel=1e-6) and res["kid"] is None


@pytest.mark.parametrize("spec,needle", [
    ("nosuchmodule_flatkit:make", "no module named"),
    ("tinydet:nothere", "no attribute"),
    ("pytorch-fid-typo", "no such file"),
])
def test_bad_detector_specs(det_files, spec, needle):
    with pytest.raises(UsageError, match=needle) as e:
        load_detector(spec)
    assert str(e.value).startswith(f"--detector {spec}")
