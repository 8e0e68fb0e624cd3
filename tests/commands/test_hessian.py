"""``flatkit hessian`` end to end on a small checkpoint (bad input: one line, exit 2)."""

import numpy as np
import pytest
from click.testing import CliRunner

from flatkit.analyses.hessian import HessianResult
from flatkit.cli import main
from flatkit.config import DiffusionConfig, ModelConfig


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_ckpt):
    mcfg = ModelConfig(image_size=8, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,1",
                       attention_resolutions="4", num_head_channels=16)
    path = make_ckpt(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", None, model=mcfg,
                     diffusion=DiffusionConfig(diffusion_steps=100), noise_seed=1,
                     data="builtin:shapes16?n=32&image_size=8",
                     others={"ema": lambda raw: {k: 0.9 * v for k, v in raw.items()}}, ema_rates=[0.999])
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
    res = HessianResult.load(out)
    assert res.labels == ["ckpt0:raw", "ckpt0:ema"] or res.labels[1].endswith(":ema")
    assert [len(e) for e in res.eigenvalues] == [2, 2]
    assert [len(b) for b in res.eigen_bounds] == [2, 2] and res.eigen_certified == [False, False]  # 2 HVPs
    assert "NOT certified: worst bound" in r.output and " ± " in r.output
    assert res.trace_hvps == [2, 2] and all(np.isfinite(res.trace))
    assert res.num_params == [32 * 3 * 9 + 3] * 2  # the final conv only
    assert [c["weights"] for c in res.meta["checkpoints"]] == ["raw", "ema"]
    assert res.meta["objective"]["bank_sha256"] and res.meta["config"]["top_k"] == 2
    assert res.density.shape[0] == 2 and res.per_timestep_top_eigenvalues.shape[:2] == (2, 2)
    assert {"density_grid", "density", "per_timestep_edges"} <= set(np.load(out / "hessian.npz").files)
    assert (out / "hessian_density.png").is_file() and (out / "hessian_per_timestep.png").is_file()
    assert "hessian" in res.meta["command_line"]


@pytest.mark.parametrize("args,needle", [
    (["--top-k", "100000000"], "--top-k"),
    (["--include", "no_such_layer"], "no_such_layer"),
    (["--n-eval", "64"], "--n-eval"),
])
def test_bad_input_is_one_line_exit_2(ckpt, tmp_path, args, needle):
    r = CliRunner().invoke(main, ["hessian", ckpt, "--out", str(tmp_path / "x"), "--n-eval", "4", *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output


def test_probe_batch_option_reaches_trace_and_density(ckpt, tmp_path):
    """--probe-batch loop and vmap give the same trace and density to float rounding, and say what they used."""
    res = {}
    for mode in ("loop", "vmap"):
        out = tmp_path / mode
        r = CliRunner().invoke(main, ["hessian", ckpt, "--top-k", "0", "--trace", "--trace-method", "hutchinson",
                                      "--trace-max-hvps", "4", "--density", "--density-runs", "2",
                                      "--density-steps", "3", "--n-eval", "4", "--batch-size", "4",
                                      "--include", r"^out\.2\.", "--probe-batch", mode, "--out", str(out)])
        assert r.exit_code == 0, r.output
        res[mode] = HessianResult.load(out)
        d = res[mode].details[0]
        assert d["trace"]["probe_batch"]["used"] == mode and d["density"]["probe_batch"]["used"] == mode
    np.testing.assert_allclose(res["vmap"].trace, res["loop"].trace, rtol=1e-4)
    np.testing.assert_allclose(res["vmap"].density, res["loop"].density, rtol=1e-3, atol=1e-6)
    r = CliRunner().invoke(main, ["hessian", ckpt, "--probe-batch", "many", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--probe-batch" in r.output
