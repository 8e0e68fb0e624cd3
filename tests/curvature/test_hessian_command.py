"""``flatkit hessian`` end to end on a small checkpoint (bad input: one line, exit 2)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flatkit.checkpoint import make_checkpoint, save_checkpoint
from flatkit.cli import main
from flatkit.config import DiffusionConfig, ModelConfig, RunConfig


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from flatkit.models import build_model

    mcfg = ModelConfig(image_size=8, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,1",
                       attention_resolutions="4", num_head_channels=16)
    dcfg = DiffusionConfig(diffusion_steps=100)
    model = build_model(mcfg, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: 0.9 * v for k, v in raw.items()}
    cfg = RunConfig(mcfg, dcfg, data="builtin:shapes16?n=32")
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    save_checkpoint(make_checkpoint(cfg, {"raw": raw, "ema": ema}, ema_rates=[0.999]), path)
    return str(path)


def test_hessian_command_writes_results(ckpt, tmp_path):
    out = tmp_path / "h"
    # a deliberately small budget: this checks the plumbing, the estimators are tested on oracles
    args = [ckpt, "--top-k", "2", "--max-iter", "2", "--trace", "--trace-method", "hutchinson",
            "--trace-max-hvps", "2", "--density", "--density-runs", "1", "--density-steps", "2",
            "--per-timestep", "2", "--n-eval", "4", "--batch-size", "4", "--compare", "ema",
            "--include", r"^out\.2\.", "--out", str(out)]
    r = CliRunner().invoke(main, ["hessian", *args])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "hessian.json").read_text())
    assert len(report["top_eigenvalues"]["eigenvalues"]) == 2
    assert report["trace"]["hvp_count"] == 2 and "estimate" in report["trace"]
    assert report["num_params"] == 32 * 3 * 9 + 3  # the final conv only
    assert report["compare"][0]["weights"].startswith("ema")
    assert report["meta"]["config"]["objective"]["bank_sha256"]
    arrs = np.load(out / "hessian.npz")
    assert {"density_grid", "density", "compare0_density", "per_timestep_edges"} <= set(arrs)
    assert (out / "hessian_density.png").is_file() and (out / "hessian_per_timestep.png").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--top-k", "100000000"], "--top-k"),
    (["--include", "no_such_layer"], "no_such_layer"),
    (["--n-eval", "64"], "--n-eval"),
])
def test_bad_input_is_one_line_exit_2(ckpt, tmp_path, args, needle):
    r = CliRunner().invoke(main, ["hessian", ckpt, "--out", str(tmp_path / "x"), "--n-eval", "4", *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
