"""Sampling: per-sample seeds (batch-size independence), DDIM determinism and the ADM fixture, files
written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import flatkit
from flatkit.cli import main
from flatkit.sampling import SamplerConfig, draw_samples, respaced, sample, sample_seed, to_uint8


@pytest.fixture(scope="module")
def tiny_run(shared_ckpt):
    return flatkit.load(shared_ckpt("tiny", noise=0, data="builtin:shapes16?n=64"))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_does_not_depend_on_batch_size(tiny_run, sampler) -> None:
    eta = 0.5 if sampler == "ddim" else 0.0
    a = sample(tiny_run, n=5, sampling_steps=3, sampler=sampler, ddim_eta=eta, seed=3, batch_size=2)
    b = sample(tiny_run, n=5, sampling_steps=3, sampler=sampler, ddim_eta=eta, seed=3, batch_size=5)
    np.testing.assert_allclose(a.images.astype(int), b.images.astype(int), atol=1)
    assert (a.images == b.images).mean() > 0.99
    c = sample(tiny_run, n=5, sampling_steps=3, sampler=sampler, ddim_eta=eta, seed=4, batch_size=5)
    assert not np.array_equal(a.images, c.images)


def test_subset_of_indices_reproduces_the_same_samples(tiny_run) -> None:
    cfg = SamplerConfig(n=4, sampling_steps=2, sampler="ddpm", seed=1, batch_size=4)
    diff = respaced(tiny_run.diffusion, cfg)
    full = draw_samples(tiny_run.model, diff, cfg, (3, 16, 16))
    part = draw_samples(tiny_run.model, diff, cfg, (3, 16, 16), indices=[2, 3])
    torch.testing.assert_close(part, full[2:], atol=1e-5, rtol=0)


def test_ddim_eta0_is_deterministic_and_seeds_are_distinct(tiny_run) -> None:
    a = sample(tiny_run, n=2, sampling_steps=2, sampler="ddim", seed=0)
    b = sample(tiny_run, n=2, sampling_steps=2, sampler="ddim", seed=0)
    assert np.array_equal(a.images, b.images)
    assert len({sample_seed(0, i) for i in range(100)} | {sample_seed(1, i) for i in range(100)}) == 200


def test_ddim_matches_adm_fixture(adm_fixtures) -> None:
    fx = torch.load(adm_fixtures / "adm_small_b.pt", weights_only=True)
    run = flatkit.load(
        adm_fixtures / "adm_small_b.pt",
        adm_flags=json.loads((adm_fixtures / "adm_small_fixtures.json").read_text())["small_b"]["flags"],
    )
    cfg = SamplerConfig(n=fx["sample_ddim10_xT"].shape[0], sampling_steps=10, sampler="ddim", respacing="ddim10")
    diff = respaced(run.diffusion, cfg)
    x_T = fx["sample_ddim10_xT"].to(torch.float32)
    got = draw_samples(run.model, diff, cfg, tuple(x_T.shape[1:]), prior=lambda z, idx: x_T[list(idx)])
    torch.testing.assert_close(got, fx["sample_ddim10"].to(torch.float32), atol=1e-4, rtol=1e-4)


def test_to_uint8_convention() -> None:
    x = torch.tensor([-1.0, -0.999, 0.0, 1.0, 1.5]).reshape(1, 1, 1, 5).permute(0, 1, 2, 3)
    got = to_uint8(x.reshape(1, 1, 1, 5))
    assert got.shape == (1, 1, 5, 1) and got.dtype == np.uint8
    assert got.reshape(-1).tolist() == [0, 0, 128, 255, 255]


def test_sample_command_writes_npz_png_json(tiny_run, tmp_path) -> None:
    out = tmp_path / "s"
    r = CliRunner().invoke(
        main,
        [
            "sample",
            tiny_run.path,
            "--n",
            "3",
            "--sampling-steps",
            "2",
            "--sampler",
            "ddim",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    arr = np.load(out / "samples.npz")["arr_0"]
    assert arr.shape == (3, 16, 16, 3) and arr.dtype == np.uint8
    from PIL import Image

    assert Image.open(out / "samples.png").size[0] >= 64
    meta = json.loads((out / "sample.json").read_text())
    assert meta["respacing"] == "ddim2" and meta["meta"]["checkpoint_sha256"] == tiny_run.sha256


@pytest.mark.parametrize(
    "args,name",
    [(["--sampling-steps", "5000"], "--sampling-steps"), (["--sampler", "ddpm", "--ddim-eta", "0.5"], "--ddim-eta")],
)
def test_sample_bad_input_exits_2(tiny_run, tmp_path, args, name) -> None:
    r = CliRunner().invoke(main, ["sample", tiny_run.path, "--n", "2", *args, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and name in lines[0]
