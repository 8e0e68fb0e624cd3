"""Exposure bias: keys, gap = sampling − training, δ_t small at the first (exactly forward-noised) step."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import flatkit
from flatkit.analyses.robustness.exposure import exposure
from flatkit.cli import main


def test_exposure_curves_and_gap(tiny_ckpt) -> None:
    run = flatkit.load(tiny_ckpt)
    res = exposure(run, n=4, sampling_steps=3, sampler="ddpm", batch_size=4)
    assert res.labels[0].endswith(":raw") and res.meta["data_fingerprint"][0]
    assert res.meta["checkpoints"][0]["step"] is not None
    assert len(res.sampling_norm[0]) == len(res.training_norm[0]) == len(res.gap[0]) == len(res.delta_t[0]) == 3
    assert res.t[0] == sorted(res.t[0], reverse=True)
    for s, t, g in zip(res.sampling_norm[0], res.training_norm[0], res.gap[0], strict=True):
        assert g == pytest.approx(s - t)
    assert res.gap_last[0] == pytest.approx(res.gap[0][-1])
    assert res.gap_mean[0] == pytest.approx(sum(res.gap[0]) / 3)
    # at the first step x̂ is exactly q_sample(x0): both norms see the same law, δ is tiny
    assert res.delta_t[0][0] < 1e-2
    # the first sampling step sees x_T ~ N(0, I) and training q_sample at t_max ≈ N(0, I): close norms
    assert abs(res.gap[0][0]) / res.training_norm[0][0] < 0.1


def test_exposure_command(tiny_ckpt, tmp_path) -> None:
    out = tmp_path / "e"
    r = CliRunner().invoke(
        main,
        [
            "exposure",
            str(tiny_ckpt),
            "--weights",
            "raw,ema",
            "--n",
            "2",
            "--sampling-steps",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "exposure.json").read_text())
    for k in ("sampling_norm", "training_norm", "gap", "gap_last", "gap_mean", "delta_t"):
        assert k in res
    assert len(res["labels"]) == 2 and len(res["gap"]) == 2 and (out / "exposure.png").is_file()
    r = CliRunner().invoke(main, ["exposure", str(tiny_ckpt), "--sampling-steps", "0", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--sampling-steps" in r.output
