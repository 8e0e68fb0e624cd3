"""``flatkit.load`` end to end against the ADM reference fixtures (../shared/fixtures/adm), to 1e-5 relative."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import flatkit
from flatkit.checkpoint import make_checkpoint, save_checkpoint
from flatkit.config import RunConfig
from flatkit.diffusion.samplers import ddim_sample
from flatkit.errors import UsageError
from flatkit.run import strip_prefixes


def rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture(params=["small_a", "small_b"])
def adm_case(request, adm_fixtures, tmp_path):
    name = request.param
    fx = torch.load(adm_fixtures / f"adm_{name}.pt", weights_only=True)
    flags = json.loads((adm_fixtures / "adm_small_fixtures.json").read_text())[name]["flags"]
    p = tmp_path / f"{name}.pt"
    # as a torch.compile'd DDP model would save it: both prefixes must be stripped
    torch.save({"module._orig_mod." + k: v for k, v in fx["state_dict"].items()}, p)
    return fx, flags, p


def test_adm_fixture_end_to_end(adm_case):
    fx, flags, path = adm_case
    run = flatkit.load(path, adm_flags=flags)
    assert run.config.source == "adm"
    assert run.diffusion.betas.dtype == np.float64
    assert rel(run.diffusion.betas, fx["betas"]) < 1e-12
    with torch.no_grad():
        assert rel(run.model(fx["x"], fx["t"]), fx["out"]) < 1e-5
        terms = run.diffusion.training_losses(run.model, fx["x0"], fx["t"], fx["noise"])
        assert rel(terms["loss"], fx["loss"]) < 1e-5
        assert rel(terms["mse"], fx["mse"]) < 1e-5
        if fx["vb"].numel():
            assert rel(terms["vb"], fx["vb"]) < 1e-5
    ddim10 = run.diffusion.respace("ddim10")
    assert torch.equal(torch.as_tensor(ddim10.timestep_map), fx["timestep_map_ddim10"])
    assert rel(ddim10.betas, fx["betas_ddim10"]) < 1e-5
    assert rel(ddim_sample(ddim10, run.model, fx["sample_ddim10_xT"], eta=0.0), fx["sample_ddim10"]) < 1e-5
    sp20 = run.diffusion.respace("20")
    assert torch.equal(torch.as_tensor(sp20.timestep_map), fx["timestep_map_20"])
    assert rel(sp20.betas, fx["betas_20"]) < 1e-5
    with torch.no_grad():
        t = torch.full((fx["sample_20_xT"].shape[0],), 19, dtype=torch.long)
        mean = sp20.p_mean_variance(run.model, fx["sample_20_xT"], t, clip_denoised=True)["mean"]
    assert rel(mean, fx["sample_20"]) < 1e-5


def test_adm_flags_from_json_file_and_fixture_layout(adm_case, tmp_path):
    fx, flags, path = adm_case
    fp = tmp_path / "flags.json"
    fp.write_text(json.dumps({"flags": flags}))
    run = flatkit.load(path, adm_flags=str(fp))
    assert run.num_params == sum(v.numel() for v in fx["state_dict"].values())


def test_missing_image_size_fails_clearly(adm_case):
    fx, flags, path = adm_case
    flags = {k: v for k, v in flags.items() if k != "image_size"}
    with pytest.raises(UsageError, match="image_size"):
        flatkit.load(path, adm_flags=flags)


def test_ema_of_plain_state_dict_is_refused(adm_case):
    _, flags, path = adm_case
    with pytest.raises(UsageError, match="weights ema"):
        flatkit.load(path, weights="ema", adm_flags=flags)


def test_strip_prefixes():
    sd = {"module.a": 1, "_orig_mod.module.b": 2, "c": 3}
    assert strip_prefixes(sd) == {"a": 1, "b": 2, "c": 3}


def test_flatkit_checkpoint_weights_choice(tmp_path):
    from flatkit.models.presets import build_model, get_preset

    mcfg, dcfg = get_preset("tiny")
    torch.manual_seed(0)
    m = build_model(mcfg)
    raw = m.state_dict()
    ema = {k: v + 1 for k, v in raw.items()}
    swa = {k: v - 1 for k, v in raw.items()}
    ck = make_checkpoint(RunConfig(model=mcfg, diffusion=dcfg, data="builtin:shapes16"),
                         {"raw": raw, "ema_0.999": ema, "swa": swa}, step=12, ema_rates=[0.999])
    p = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(ck, p)
    for w, ref in (("raw", raw), ("ema", ema), ("ema_0.999", ema), ("swa", swa)):
        run = flatkit.load(p, weights=w)
        got = run.model.state_dict()
        assert all(torch.equal(got[k], ref[k]) for k in ref)
    run = flatkit.load(tmp_path / "run", weights="swa")  # the training folder works too
    assert run.step == 12 and run.weights == "swa" and run.config.data == "builtin:shapes16"
    assert run.available_weights == ["raw", "ema_0.999", "swa"]
    assert not run.model.training
    with pytest.raises(UsageError, match="adm_flags"):
        flatkit.load(p, adm_flags={"image_size": 16})


def test_top_level_api_names():
    import flatkit.analyses.landscape  # noqa: F401 - importing the submodule must not shadow the function
    import flatkit.analyses.sharpness  # noqa: F401

    for name in ("load", "Objective", "top_eigenvalues", "hessian_trace", "spectral_density", "landscape",
                 "sharpness", "perturb"):
        assert callable(getattr(flatkit, name)), name
