"""``--compare raw|ema|ema_<rate>|swa`` on ``flatkit landscape`` and ``perturb`` names other weights of CKPT (as on
``flatkit hessian``); a file of that name still wins."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from flatkit.cli import main

SMALL = ["--n-eval", "8", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture
def mlp_ckpt(make_ckpt):
    """``mlp_ckpt(path)``: an MLP denoiser checkpoint with raw, EMA and SWA weights that differ."""
    return lambda path: make_ckpt(path, "mlp", noise=0, data="builtin:gaussians2d",
                                  others={"ema_0.9": 0.05, "swa": 0.05}, step=3, ema_rates=[0.9])


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_landscape_and_perturb_compare_weight_names(mlp_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = mlp_ckpt(tmp_path / "run" / "ckpt.pt")
    r = run("landscape", c, "--compare", "ema,swa", "--dims", "1", "--points", "3", *SMALL, "--out", "l")
    assert r.exit_code == 0, r.output
    land = json.loads((tmp_path / "l" / "landscape.json").read_text())
    assert land["labels"] == ["run:raw", "run:ema_0.9", "run:swa"]
    assert [x["weights"] for x in land["meta"]["checkpoints"]] == ["raw", "ema_0.9", "swa"]
    assert len(set(land["loss_centre"])) == 3  # three different weight sets

    r = run("perturb", c, "--weights", "swa", "--compare", "raw", "--radii", "0,0.1", "--n-directions", "2",
            "--no-worst", *SMALL, "--out", "p")
    assert r.exit_code == 0, r.output
    pert = json.loads((tmp_path / "p" / "perturb.json").read_text())
    assert pert["labels"] == ["run:swa", "run:raw"] and pert["meta"]["weights"] == "swa"
    assert pert["meta"]["checkpoints"][1]["weights"] == "raw"

    # a checkpoint file named like a weights choice is a checkpoint, loaded with --weights
    (tmp_path / "ema").write_bytes(c.read_bytes())
    r = run("landscape", c, "--compare", "ema", "--dims", "1", "--points", "3", *SMALL, "--out", "l2")
    assert r.exit_code == 0, r.output
    land2 = json.loads((tmp_path / "l2" / "landscape.json").read_text())
    assert land2["meta"]["checkpoints"][1]["weights"] == "raw" and land2["labels"] == ["run:raw", "ema:raw"]
    assert land2["loss_centre"][0] == land2["loss_centre"][1]
