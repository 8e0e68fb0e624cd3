"""The diffusion against reference outputs of the ADM code (../shared/fixtures/adm), to 1e-5 relative."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flatkit.diffusion import create_diffusion, ddim_sample, diffusion_config_from_adm_flags

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "adm"
RTOL = 1e-5
NAMES = ["a", "b"]


def load(name: str) -> tuple[dict, dict]:
    path = FIXTURES / f"adm_small_{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    flags = json.loads((FIXTURES / "adm_small_fixtures.json").read_text())[f"small_{name}"]["flags"]
    return torch.load(path, weights_only=True), flags


def assert_rel(actual, expected, what: str) -> None:
    actual = torch.as_tensor(np.asarray(actual) if not isinstance(actual, torch.Tensor) else actual)
    expected = torch.as_tensor(expected)
    assert actual.shape == expected.shape, what
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= RTOL * scale, f"{what}: max abs error {err:.3g} > {RTOL} * {scale:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_schedules_and_respacing_match_adm(name: str) -> None:
    fx, flags = load(name)
    d = create_diffusion(diffusion_config_from_adm_flags(flags))
    assert d.betas.dtype == np.float64
    np.testing.assert_allclose(d.betas, fx["betas"].numpy(), rtol=RTOL)
    for spec, key in (("ddim10", "ddim10"), ("20", "20")):
        spaced = d.respace(spec)
        np.testing.assert_array_equal(spaced.timestep_map, fx[f"timestep_map_{key}"].numpy())
        np.testing.assert_allclose(spaced.betas, fx[f"betas_{key}"].numpy(), rtol=RTOL)
        via_cfg = create_diffusion(diffusion_config_from_adm_flags({**flags, "timestep_respacing": spec}))
        np.testing.assert_array_equal(via_cfg.betas, spaced.betas)


@pytest.fixture(scope="module")
def models() -> dict:
    pytest.importorskip("flatkit.models.presets")
    from flatkit.models.adm_flags import model_config_from_adm_flags
    from flatkit.models.presets import build_model

    out = {}
    for name in NAMES:
        fx, flags = load(name)
        model = build_model(model_config_from_adm_flags(flags))
        model.load_state_dict(fx["state_dict"])
        model.eval()
        out[name] = (model, fx, flags)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_training_losses_match_adm(models: dict, name: str) -> None:
    model, fx, flags = models[name]
    d = create_diffusion(diffusion_config_from_adm_flags(flags))
    with torch.no_grad():
        terms = d.training_losses(model, fx["x0"], fx["t"], fx["noise"])
    assert_rel(terms["loss"], fx["loss"], "loss")
    assert_rel(terms["mse"], fx["mse"], "mse")
    if fx["vb"].numel():
        assert_rel(terms["vb"], fx["vb"], "vb")


@pytest.mark.parametrize("name", NAMES)
def test_ddim10_sample_matches_adm(models: dict, name: str) -> None:
    model, fx, flags = models[name]
    d = create_diffusion(diffusion_config_from_adm_flags(flags), timestep_respacing="ddim10")
    sample = ddim_sample(d, model, fx["sample_ddim10_xT"], eta=0.0, clip_denoised=True)
    assert_rel(sample, fx["sample_ddim10"], "sample_ddim10")


@pytest.mark.parametrize("name", NAMES)
def test_first_respaced_posterior_mean_matches_adm(models: dict, name: str) -> None:
    model, fx, flags = models[name]
    d = create_diffusion(diffusion_config_from_adm_flags(flags), timestep_respacing="20")
    x = fx["sample_20_xT"]
    with torch.no_grad():
        out = d.p_mean_variance(model, x, torch.full((x.shape[0],), 19), clip_denoised=True)
    assert_rel(out["mean"], fx["sample_20"], "sample_20")
