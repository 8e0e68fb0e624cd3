"""Perturbed prior: KL closed form (vs the general formula and numeric integration), zero drift when
unperturbed,
the perturbed-bank loss at the unperturbed point equals the Objective's loss, CLI files and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import flatkit
from flatkit.analyses.robustness.common import diffusion_bank
from flatkit.analyses.robustness.prior import PriorPoint, kl_gaussian, kl_isotropic, perturbed_bank_loss, prior
from flatkit.cli import main


@pytest.mark.parametrize("mu,s,d", [(0.0, 1.0, 5), (0.5, 1.2, 3), (-1.0, 0.7, 10), (2.0, 3.0, 1)])
def test_kl_isotropic_equals_general_formula(mu, s, d) -> None:
    want = kl_gaussian(np.full(d, mu), s**2 * np.eye(d))
    assert kl_isotropic(mu, s, d) == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_kl_general_nondiagonal_against_2d_numeric_integration() -> None:
    mu = np.array([0.3, -0.4])
    sig = np.array([[1.3, 0.4], [0.4, 0.8]])
    g = np.linspace(-9, 9, 1201)
    X, Y = np.meshgrid(g, g, indexing="ij")
    P = np.stack([X - mu[0], Y - mu[1]], -1)
    inv = np.linalg.inv(sig)
    logp = (
        -0.5 * np.einsum("...i,ij,...j->...", P, inv, P)
        - math.log(2 * math.pi)
        - 0.5 * math.log(np.linalg.det(sig))
    )
    logq = -0.5 * (X**2 + Y**2) - math.log(2 * math.pi)
    h = g[1] - g[0]
    num = float((np.exp(logp) * (logp - logq)).sum() * h * h)
    assert kl_gaussian(mu, sig) == pytest.approx(num, rel=1e-6)


@pytest.mark.parametrize("mu,s", [(0.7, 1.0), (0.0, 1.5), (-0.5, 0.6)])
def test_kl_isotropic_against_1d_numeric_integration(mu, s) -> None:
    x = np.linspace(-15, 15, 200001)
    logp = -0.5 * ((x - mu) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
    logq = -0.5 * x**2 - 0.5 * math.log(2 * math.pi)
    num = float(np.trapezoid(np.exp(logp) * (logp - logq), x))
    assert kl_isotropic(mu, s, 1) == pytest.approx(num, rel=1e-7)
    assert kl_isotropic(mu, s, 4) == pytest.approx(4 * num, rel=1e-7)  # independent coordinates add up


def test_noise_point_kl_is_that_of_variance_one_plus_eta_squared() -> None:
    p = PriorPoint("noise", eta=0.5)
    assert p.kl(7) == pytest.approx(kl_gaussian(np.zeros(7), 1.25 * np.eye(7)), rel=1e-12)


def test_bank_loss_at_unperturbed_point_equals_objective(tiny_ckpt) -> None:
    run = flatkit.load(tiny_ckpt)
    bank = diffusion_bank(run.config.data, 8, 0, run.diffusion.num_timesteps)
    got = perturbed_bank_loss(run, bank, PriorPoint("shift_scale"), 0, batch_size=8)
    obj = flatkit.Objective(run, n=8, seed=0, batch_size=8)
    assert got == pytest.approx(float(obj.loss()), rel=1e-6)


def test_prior_zero_drift_when_unperturbed_and_figure(tiny_ckpt, tmp_path) -> None:
    run = flatkit.load(tiny_ckpt)
    res = prior(
        [run, flatkit.load(tiny_ckpt, weights="ema")],
        shifts=[0.0, 0.5],
        scales=[1.0],
        noise_etas=[0.3],
        n=2,
        sampler="ddim",
        sampling_steps=2,
        n_ref=8,
        n_eval=4,
        projections=16,
        batch_size=4,
    )
    assert res.kind == ["shift_scale", "shift_scale", "noise"]
    assert res.kl[0] == 0.0 and res.drift_mse[0][0] == 0.0 and res.drift_psnr[0][0] is None
    assert res.loss_change[0][0] == 0.0 and res.drift_mse[0][1] > 0 and res.drift_mse[0][2] > 0
    assert res.kl[1] == pytest.approx(kl_isotropic(0.5, 1.0, 3 * 16 * 16))
    assert len(res.labels) == 2 and res.labels[1].endswith(":ema_0.999") and len(res.drift_mse) == 2
    assert res.meta["checkpoints"][1]["label"] == res.labels[1] and res.meta["data_fingerprint"][0]
    assert res.previews.shape[:3] == (2, 3, 2)
    from flatkit.plots.robustness import plot_prior

    paths = plot_prior(res, tmp_path / "prior")
    assert paths[0].stat().st_size > 1000


def test_prior_command_and_bad_scale(tiny_ckpt, tmp_path) -> None:
    out = tmp_path / "p"
    r = CliRunner().invoke(
        main,
        [
            "prior",
            str(tiny_ckpt),
            "--shift",
            "0,1",
            "--scale",
            "1",
            "--n",
            "2",
            "--sampler",
            "ddim",
            "--sampling-steps",
            "2",
            "--n-ref",
            "8",
            "--n-eval",
            "4",
            "--projections",
            "8",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "prior.json").read_text())
    assert res["kl"][0] == 0.0 and "kl" in res and (out / "prior.png").is_file()
    assert (out / "prior_samples.png").is_file()
    for bad in (["--scale", "0"], ["--scale", "1,-2"]):
        r = CliRunner().invoke(main, ["prior", str(tiny_ckpt), *bad, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2, r.output
        assert "--scale" in r.output and len(r.output.strip().splitlines()) == 1
