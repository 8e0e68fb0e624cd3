"""Every loss-based result records L(θ) on its bank (``L_theta``), equal to an independent evaluation of the
training loss at θ on the same bank (ADM's ``training_losses`` on the bank drawn by ``diffusion_bank``); and the
held-out loss (``--bank holdout``, and ``meta["holdout"]`` beside a train-side bank) is that loss on the items
``flatkit train --holdout`` reserved."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import flatkit
from flatkit.analyses.hessian import hessian
from flatkit.analyses.robustness.common import diffusion_bank
from flatkit.cli import main
from flatkit.objective import Objective

N, SEED = 8, 3


def _independent_loss(run, spec, n=N, seed=SEED, bank=None):
    """Mean ε-MSE of ADM's training_losses on the bank of (spec, n, seed), one item at a time, float64."""
    x0, t, eps = diffusion_bank(spec, n, seed, int(run.diffusion.num_timesteps), run=run if bank else None,
                                bank=bank or "train")
    with torch.no_grad():
        per = [float(run.diffusion.training_losses(run.model, x0[i:i + 1], t[i:i + 1], eps[i:i + 1])["mse"])
               for i in range(n)]
    return float(np.mean(per))


@pytest.fixture(scope="module")
def setup(shared_ckpt):
    run = flatkit.load(shared_ckpt())
    obj = Objective(run, n=N, seed=SEED, batch_size=3, loss="mse")
    return run, obj, _independent_loss(run, run.config.data)


def test_hessian_sharpness_perturb_landscape_record_L_theta(setup):
    run, obj, ref = setup
    results = {
        "hessian": hessian(obj, top_k=1, max_iter=3),
        "sharpness": flatkit.sharpness(obj, kind="average", samples=2),
        "perturb": flatkit.perturb(obj, radii=(0.0, 0.01), n_directions=1, worst=False),
        "landscape": flatkit.landscape(obj, dims=1, points=3, mode="sequential"),
    }
    for name, res in results.items():
        assert len(res.L_theta) == 1, name
        assert res.L_theta[0] == pytest.approx(ref, rel=1e-5), name


def test_landscape_L_theta_when_the_grid_misses_the_centre(setup):
    run, obj, ref = setup
    res = flatkit.landscape(obj, dims=1, points=2, span="0.5,1.5", mode="sequential")  # no centre on the grid
    assert not np.isfinite(res.loss_centre[0])
    assert res.L_theta[0] == pytest.approx(ref, rel=1e-5)


def test_L_theta_per_model_and_saved(setup, shared_ckpt, tmp_path):
    run, obj, _ = setup
    other = flatkit.load(shared_ckpt(seed=1))
    res = flatkit.perturb(obj, compare=[obj.for_run(other)], radii=(0.0, 0.01), n_directions=1, worst=False)
    ref1 = _independent_loss(other, run.config.data)
    assert res.L_theta[1] == pytest.approx(ref1, rel=1e-5) and res.L_theta[0] != res.L_theta[1]
    res.save(tmp_path)
    assert type(res).load(tmp_path).L_theta == pytest.approx(res.L_theta)


@pytest.fixture(scope="module")
def held_run(tmp_path_factory):
    from flatkit.train.trainer import TrainConfig, train

    d = tmp_path_factory.mktemp("held")
    cfg = TrainConfig(data="builtin:gaussians2d?n=64", preset="mlp", steps=4, batch_size=16, ema=[0.9], log_every=2,
                      save_every=4, sample_count=0, holdout=16)
    return train(cfg, d / "run", progress=False)


def test_bank_holdout_and_the_recorded_holdout_loss(held_run, tmp_path):
    run = flatkit.load(held_run)
    spec = run.config.data
    train_ref = _independent_loss(run, spec, bank="train")
    held_ref = _independent_loss(run, spec, bank="holdout")
    args = ["sharpness", str(held_run), "--kind", "average", "--samples", "2", "--n-eval", str(N), "--seed",
            str(SEED), "--loss", "mse", "--no-progress"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "a" / "sharpness.json").read_text())
    res = flatkit.analyses.sharpness.SharpnessResult.load(tmp_path / "a")
    assert res.L_theta[0] == pytest.approx(train_ref, rel=1e-5)
    h = meta["meta"]["holdout"]
    assert h["bank"] == "train" and h["n"] == N and h["split"]["n_holdout"] == 16
    assert h["loss"][0] == pytest.approx(held_ref, rel=1e-5)
    r = CliRunner().invoke(main, [*args, "--bank", "holdout", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    res_b = flatkit.analyses.sharpness.SharpnessResult.load(tmp_path / "b")
    assert res_b.L_theta[0] == pytest.approx(held_ref, rel=1e-5)
    assert res_b.meta["holdout"]["bank"] == "holdout"


def test_no_holdout_records_the_reason(shared_ckpt, tmp_path):
    r = CliRunner().invoke(main, ["perturb", str(shared_ckpt()), "--n-eval", "4", "--radii", "0,0.01",
                                  "--n-directions", "1", "--no-worst", "--no-progress", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    h = json.loads((tmp_path / "p" / "perturb.json").read_text())["meta"]["holdout"]
    assert h["loss"] is None and "without" in h["reason"]
