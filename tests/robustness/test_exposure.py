"""Exposure bias: keys, gap = sampling − training, δ_t small at the first (exactly forward-noised) step."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import flatkit
from flatkit.cli import main
from flatkit.analyses.robustness.exposure import exposure


def test_exposure_curves_and_gap(tiny_ckpt) -> None:
    run = flatkit.load(tiny_ckpt)
    res = exposure(run, n=4, steps=3, sampler="ddpm", batch_size=4)
    assert len(res.sampling_norm) == len(res.training_norm) == len(res.gap) == len(res.delta_t) == 3
    assert res.t == sorted(res.t, reverse=True)
    for s, t, g in zip(res.sampling_norm, res.training_norm, res.gap, strict=True):
        assert g == pytest.approx(s - t)
    assert res.gap_last == pytest.approx(res.gap[-1]) and res.gap_mean == pytest.approx(sum(res.gap) / 3)
    # at the first step x̂ is exactly q_sample(x0): both norms see the same law, δ is tiny
    assert res.delta_t[0] < 1e-2
    # the first sampling step sees x_T ~ N(0, I) and training q_sample at t_max ≈ N(0, I): close norms
    assert abs(res.gap[0]) / res.training_norm[0] < 0.1


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
            "--steps",
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
    assert len(res["checkpoints"]) == 2 and (out / "exposure.png").is_file()
    r = CliRunner().invoke(main, ["exposure", str(tiny_ckpt), "--steps", "0", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--steps" in r.output
