"""NaN weights in every command (issue 13, item 7): loss-valued results record NaN as null with a warning naming
the first non-finite tensor; curvature refuses in one line; sampling flags non-finite samples."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from flatkit.cli import main


def _nan(sd):
    return {k: v * float("nan") if v.is_floating_point() else v for k, v in sd.items()}


@pytest.fixture(scope="module")
def nan_ckpt(shared_ckpt):
    return str(shared_ckpt(others={"ema_0.9": _nan}))


def _run(*args):
    import flatkit.finite

    flatkit.finite._warned.clear()  # the warning comes once per model and process: each command here is one
    return CliRunner().invoke(main, [str(a) for a in args])


WARNING = "non-finite weights, first in tensor time_embed.0.weight (nan)"


@pytest.mark.parametrize("cmd,extra,key", [
    ("landscape", ["--dims", "1", "--points", "3", "--mode", "sequential"], "loss_centre"),
    ("perturb", ["--radii", "0,0.01", "--n-directions", "1", "--no-worst"], "loss0"),
    ("sharpness", ["--kind", "average", "--samples", "2"], "loss0"),
    ("quantize", ["--bits", "8", "--n", "2", "--sampling-steps", "2", "--n-ref", "2", "--projections", "4"],
     None),
])
def test_loss_valued_results_record_null_with_a_warning(nan_ckpt, tmp_path, cmd, extra, key):
    r = _run(cmd, nan_ckpt, "--weights", "ema_0.9", "--n-eval", 4, "--batch-size", 4, *extra,
             "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert WARNING in r.stderr and "ema_0.9" in r.stderr
    data = json.loads((tmp_path / "o" / f"{cmd}.json").read_text())
    if key is not None:
        assert data[key] == [None]
    assert "NaN" not in (tmp_path / "o" / f"{cmd}.json").read_text()


def test_hessian_refuses_in_one_line(nan_ckpt, tmp_path):
    r = _run("hessian", nan_ckpt, "--weights", "ema_0.9", "--n-eval", 4, "--out", tmp_path / "h")
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and nan_ckpt in lines[0] and "weights ema_0.9" in lines[0]
    assert "time_embed.0.weight" in lines[0]


def test_exposure_and_prior_finish(nan_ckpt, tmp_path):
    r = _run("exposure", nan_ckpt, "--weights", "ema_0.9", "--n", 2, "--sampling-steps", 2, "--no-delta",
             "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    r = _run("prior", nan_ckpt, "--weights", "ema_0.9", "--n", 2, "--sampling-steps", 2, "--n-eval", 4,
             "--shift", "0", "--scale", "1", "--n-ref", 2, "--projections", 4, "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output


def test_sample_flags_non_finite(nan_ckpt, tmp_path):
    from flatkit.sampling import SampleResult

    r = _run("sample", nan_ckpt, "--weights", "ema_0.9", "--n", 2, "--sampling-steps", 2, "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert "samples flagged: 2 of 2 non-finite" in r.stderr
    assert SampleResult.load(tmp_path / "s").flags == ["non-finite", "non-finite"]


def test_pure_noise_criterion():
    from flatkit.data import load_dataset
    from flatkit.sampling import NOISE_AUTOCORRELATION, sample_flags, spatial_autocorrelation

    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 3, 16, 16, generator=g)
    assert spatial_autocorrelation(z).abs().max() < NOISE_AUTOCORRELATION / 2  # measured: 0.094
    assert spatial_autocorrelation(z.clamp(-1, 1)).abs().max() < NOISE_AUTOCORRELATION / 2
    for name in ("shapes16", "shapes32"):
        x = load_dataset(f"builtin:{name}?n=200").get(slice(0, 200))
        assert spatial_autocorrelation(x).min() > 4 * NOISE_AUTOCORRELATION  # measured: 0.85 and 0.84
    x = torch.cat([z[:2], load_dataset("builtin:shapes16?n=2").get(slice(0, 2)), torch.zeros(1, 3, 16, 16)])
    x[1, 0, 0, 0] = float("inf")
    assert sample_flags(x) == ["noise", "non-finite", "ok", "ok", "ok"]
    assert sample_flags(torch.full((2, 2), float("nan"))) == ["non-finite", "non-finite"]
