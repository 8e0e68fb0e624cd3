"""``--compare raw|ema|ema_<rate>|swa`` on ``flatkit landscape`` and ``perturb`` names other weights of CKPT (as on
``flatkit hessian``); a file of that name still wins."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from flatkit.checkpoint import make_checkpoint, save_checkpoint
from flatkit.cli import main
from flatkit.config import RunConfig
from flatkit.models.presets import build_model, get_preset

SMALL = ["--n-eval", "8", "--batch-size", "8", "--device", "cpu"]


def _ckpt(path: Path) -> Path:
    """An MLP denoiser checkpoint with raw, EMA and SWA weights that differ."""
    cfg_m, cfg_d = get_preset("mlp")
    g = torch.Generator().manual_seed(0)
    raw = build_model(cfg_m, seed=0).state_dict()
    other = [{k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in raw.items()} for _ in range(2)]
    weights = {"raw": raw, "ema_0.9": other[0], "swa": other[1]}
    save_checkpoint(make_checkpoint(RunConfig(model=cfg_m, diffusion=cfg_d, data="builtin:gaussians2d"), weights,
                                    step=3, ema_rates=[0.9]), path)
    return path


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_landscape_and_perturb_compare_weight_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = _ckpt(tmp_path / "run" / "ckpt.pt")
    r = run("landscape", c, "--compare", "ema,swa", "--dims", "1", "--points", "3", *SMALL, "--out", "l")
    assert r.exit_code == 0, r.output
    land = json.loads((tmp_path / "l" / "landscape.json").read_text())
    assert land["labels"] == ["run:raw", "run:ema", "run:swa"]
    assert [x["weights"] for x in land["meta"]["compare"]] == ["ema_0.9", "swa"]
    assert len(set(land["loss_centre"])) == 3  # three different weight sets

    r = run("perturb", c, "--weights", "swa", "--compare", "raw", "--radii", "0,0.1", "--k", "2", "--no-worst",
            *SMALL, "--out", "p")
    assert r.exit_code == 0, r.output
    pert = json.loads((tmp_path / "p" / "perturb.json").read_text())
    assert pert["labels"] == ["run:swa", "run:raw"] and pert["meta"]["weights"] == "swa"
    assert pert["meta"]["compare"][0]["weights"] == "raw"

    # a checkpoint file named like a weights choice is a checkpoint, loaded with --weights
    (tmp_path / "ema").write_bytes(c.read_bytes())
    r = run("landscape", c, "--compare", "ema", "--dims", "1", "--points", "3", *SMALL, "--out", "l2")
    assert r.exit_code == 0, r.output
    land2 = json.loads((tmp_path / "l2" / "landscape.json").read_text())
    assert land2["meta"]["compare"][0]["weights"] == "raw" and land2["labels"] == ["run", "ema"]
    assert land2["loss_centre"][0] == land2["loss_centre"][1]
