"""``--repeats R``: R = 1 is today's run bit for bit (CLI and API), R repeats draw R distinct banks with the
documented seeds (seed + 1000003·r), and the reported 95 % interval covers a known mean at its nominal rate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from flatkit.cli import main
from flatkit.config import DiffusionConfig, ModelConfig
from flatkit.repeats import (
    SEED_STRIDE,
    derived_seed,
    interval_at,
    separate,
    summarise,
    summarise_stack,
    t_cdf,
    t_quantile,
)


# ------------------------------------------------------------------------------------------------ the maths
def test_derived_seeds_are_the_documented_ones():
    assert SEED_STRIDE == 1_000_003
    assert [derived_seed(7, r) for r in range(3)] == [7, 7 + 1_000_003, 7 + 2_000_006]


def test_t_quantile_closed_forms():
    """df = 1 (Cauchy): tan(π(p − ½)); df = 2: (2p − 1) / √(2p(1 − p)); df → ∞: the normal 1.959964."""
    for p in (0.6, 0.9, 0.975, 0.995, 0.1):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959963985, abs=1e-6)
    assert t_cdf(t_quantile(0.975, 4), 4) == pytest.approx(0.975, abs=1e-12)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 30, 200):
        for p in (0.55, 0.9, 0.975, 0.995, 0.025):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9, abs=1e-12)


def test_interval_covers_a_known_mean_at_its_nominal_rate():
    """4000 seeded trials of n = 5 draws of N(3, 2²): the 95 % interval holds μ in 93 % to 97 % of them (the
    binomial standard deviation at 0.95 is 0.0034, so the band is about ±6 sd); the normal quantile 1.96 instead
    of t(0.975, 4) = 2.776 would cover only about 88 %."""
    rng = np.random.default_rng(20261129)
    mu, trials = 3.0, 4000
    x = rng.normal(mu, 2.0, (trials, 5))
    ivs = [summarise(row) for row in x]
    rate = np.mean([iv.lo <= mu <= iv.hi for iv in ivs])
    assert 0.93 <= rate <= 0.97, rate
    z_rate = np.mean([abs(iv.mean - mu) <= 1.959964 * iv.se for iv in ivs])
    assert z_rate < 0.91, z_rate  # the t quantile matters at the demo's R
    # and for R = 3 (t(0.975, 2) = 4.303)
    ivs3 = [summarise(row) for row in rng.normal(mu, 2.0, (trials, 3))]
    assert 0.93 <= np.mean([iv.lo <= mu <= iv.hi for iv in ivs3]) <= 0.97


def test_summaries():
    iv = summarise([1.0, 2.0, 3.0, None, float("nan")])
    assert (iv.n, iv.mean, iv.se) == (3, 2.0, pytest.approx(1 / math.sqrt(3)))
    assert iv.hi - iv.mean == pytest.approx(t_quantile(0.975, 2) / math.sqrt(3))
    one = summarise([4.0])
    assert one.mean == 4.0 and math.isnan(one.se) and math.isnan(one.lo)
    st = summarise_stack(np.array([[[1.0, 2.0]], [[3.0, 2.0]]]))  # (R = 2, M = 1, K = 2)
    assert st["mean"] == [[2.0, 2.0]] and st["n"] == [[2, 2]] and st["se"][0][1] == 0.0
    got = interval_at({"x": st}, "x", 0, 0)
    assert got.mean == 2.0 and got.lo == pytest.approx(2.0 - t_quantile(0.975, 1) * 1.0)
    assert interval_at({"x": st}, "x", 0) is None  # an array entry, not a scalar
    assert separate(summarise([1, 1.1, 0.9]), summarise([5, 5.1, 4.9])) is True
    assert separate(summarise([1, 2, 3]), summarise([2, 3, 4])) is False


# ------------------------------------------------------------------------------------------------ the measures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_ckpt):
    mcfg = ModelConfig(image_size=8, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,1",
                       attention_resolutions="4", num_head_channels=16)
    return str(make_ckpt(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", None, model=mcfg,
                         diffusion=DiffusionConfig(diffusion_steps=100), noise_seed=1,
                         data="builtin:shapes16?n=32&image_size=8"))


HESSIAN = ["--top-k", "1", "--max-iter", "3", "--trace", "--trace-method", "hutchinson", "--trace-max-hvps", "2",
           "--n-eval", "4", "--batch-size", "4", "--include", r"^out\.2\.", "--seed", "5", "--no-progress"]


def _numbers(js: dict) -> dict:
    """A result's JSON without the meta entries that differ between any two runs (time, command line)."""
    out = {k: v for k, v in js.items() if k != "meta"}
    out["meta"] = {k: v for k, v in js["meta"].items()
                   if k not in ("created", "wall_time_s", "command_line", "git_commit")}
    for d in out.get("details") or []:
        for v in d.values():
            v.pop("wall_time_s", None)
    out.pop("wall_time_s", None)
    return out


def test_repeats_1_is_todays_run_bit_for_bit_cli(ckpt, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, extra in ((a, []), (b, ["--repeats", "1"])):
        r = CliRunner().invoke(main, ["hessian", ckpt, *HESSIAN, *extra, "--out", str(out)])
        assert r.exit_code == 0, r.output
    ja, jb = (json.loads((d / "hessian.json").read_text()) for d in (a, b))
    assert "intervals" not in ja and "repeats" not in ja and "intervals" not in jb
    assert _numbers(ja) == _numbers(jb)
    assert ja["meta"]["config"]["repeats"] == 1 and "repeats" not in ja["meta"]
    # a result written before --repeats existed (no "repeats" in its settings) is the same settings as R = 1
    del ja["meta"]["config"]["repeats"]
    (a / "hessian.json").write_text(json.dumps(ja))
    r = CliRunner().invoke(main, ["hessian", ckpt, *HESSIAN, "--out", str(a)])
    assert r.exit_code == 0 and "reusing" in r.output, r.output


def test_repeats_api_r1_identical_and_r3_draws_the_documented_banks(ckpt):
    import flatkit
    from flatkit.objective import Objective

    run = flatkit.load(ckpt)
    obj = Objective(run, n=4, seed=5, batch_size=4, include=[r"^out\.2\."])
    kw = dict(top_k=1, max_iter=3, trace=True, trace_method="hutchinson", trace_max_hvps=2, seed=5)
    plain = flatkit.hessian(obj, **kw)
    one = flatkit.hessian(obj, **kw, repeats=1)
    assert _numbers(plain.to_json()) == _numbers(one.to_json()) and not one.intervals
    three = flatkit.hessian(obj, **kw, repeats=3)
    # repeat 0 is today's run; the result's own numbers are repeat 0's
    assert three.eigenvalues == plain.eigenvalues and three.trace == plain.trace and three.loss == plain.loss
    seeds = [rec["seed"] for rec in three.repeats]
    assert seeds == [5, 5 + SEED_STRIDE, 5 + 2 * SEED_STRIDE] == three.meta["repeats"]["seeds"]
    banks = [rec["bank_sha256"] for rec in three.repeats]
    assert len(set(banks)) == 3 and banks[0] == obj.config.bank_sha256
    for s, h, rec in zip(seeds, banks, three.repeats, strict=True):  # the bank Objective(run, seed=s) draws
        fresh = Objective(run, n=4, seed=s, batch_size=4, include=[r"^out\.2\."])
        assert rec["bank_seed"] == s and fresh.config.bank_sha256 == h
        assert rec["loss"] == [float(fresh.loss())]
    iv = three.intervals["lambda_max"]
    lam = [rec["lambda_max"][0] for rec in three.repeats]
    assert iv["n"] == [3] and iv["mean"][0] == pytest.approx(np.mean(lam))
    assert iv["se"][0] == pytest.approx(np.std(lam, ddof=1) / math.sqrt(3))
    assert iv["lo"][0] < iv["mean"][0] < iv["hi"][0]
    assert three.meta["config"]["repeats"] == 3
    # the reseeded objective is the one a fresh Objective draws, restricted ones included
    assert obj.reseeded(9).config.bank_sha256 == Objective(run, n=4, seed=9, include=[r"^out\.2\."]).config.bank_sha256


def test_repeats_cli_writes_intervals_prints_them_and_the_report_shows_them(ckpt, tmp_path):
    from flatkit.analyses.hessian import HessianResult
    from flatkit.report import write_report

    out = tmp_path / "h"
    r = CliRunner().invoke(main, ["hessian", ckpt, *HESSIAN, "--repeats", "3", "--compare", ckpt,
                                  "--labels", "A,B", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "over 3 repeats" in r.output and "lambda_max" in r.output and "95 % CI" in r.output
    res = HessianResult.load(out)
    assert set(res.intervals) == {"loss", "lambda_max", "trace"} and len(res.repeats) == 3
    assert res.intervals["trace"]["n"] == [3, 3]
    rep = write_report([str(out)], tmp_path / "rep")
    md = rep.markdown.read_text()
    assert "### Error bars" in md and " ± " in md and "paired by repeat" in md
    row = rep.rows[0]
    assert row["lambda_max"] == pytest.approx(res.intervals["lambda_max"]["mean"][0])
    assert "lambda_max_se" in rep.csv.read_text().splitlines()[0]


def test_repeats_redraw_directions_and_samples(ckpt, tmp_path):
    """perturb: each repeat draws its own directions; quantize (a sampling measure): its own bank and samples;
    side outputs (save_dir) are written by repeat 0 only."""
    import flatkit
    from flatkit.analyses.robustness.quantize import quantize
    from flatkit.objective import Objective

    run = flatkit.load(ckpt)
    obj = Objective(run, n=4, seed=0, batch_size=4)
    res = flatkit.perturb(obj, radii=(0.0, 0.05), n_directions=2, worst=False, repeats=2)
    a, b = (np.asarray(rec["mean"]) for rec in res.repeats)
    assert a.shape == (1, 2) and not np.allclose(a[:, 1], b[:, 1])
    assert res.intervals["mean"]["n"] == [[2, 2]]
    q = quantize(run, bits=(4,), n=2, sampling_steps=2, n_ref=2, n_eval=4, projections=4, repeats=2)
    assert [rec["seed"] for rec in q.repeats] == [0, SEED_STRIDE]
    assert q.repeats[0]["loss_fp"] != q.repeats[1]["loss_fp"]  # another bank
    assert q.repeats[0]["drift_mse"] != q.repeats[1]["drift_mse"]  # other samples
    one = quantize(run, bits=(4,), n=2, sampling_steps=2, n_ref=2, n_eval=4, projections=4)
    assert one.loss_change == q.loss_change and one.drift_mse == q.drift_mse
    _figures_draw_the_intervals(res, q, tmp_path)


def _figures_draw_the_intervals(perturb_res, quantize_res, tmp_path):
    """perturb.png and quantize.png draw each repeated scalar's 95 % interval (capped bars at the interval's
    ends) and say so in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flatkit.plots.landscape import plot_perturb
    from flatkit.plots.robustness import plot_quantize
    from flatkit.repeats import interval_at

    for res, plot, name, idx in ((perturb_res, plot_perturb, "mean", (0, 1)),
                                 (quantize_res, plot_quantize, "drift_mse", (0, 0))):
        captured = []
        orig = plt.Axes.errorbar

        def spy(ax, *a, _orig=orig, _captured=captured, **k):
            _captured.append((a, k))
            return _orig(ax, *a, **k)

        plt.Axes.errorbar = spy
        try:
            plot(res, tmp_path / name)
        finally:
            plt.Axes.errorbar = orig
        iv = interval_at(res.intervals, name, *idx)
        tops = [np.asarray(a[1]) + np.asarray(k["yerr"][1]) for a, k in captured]
        assert any(np.isclose(t, iv.hi).any() for t in tops), (name, iv, tops)
        assert (tmp_path / f"{name}.png").is_file()


def test_repeats_landscape_writes_no_partial_grid_per_repeat(ckpt, tmp_path):
    """A repeat writes no partial grid into ``out`` (it would record other settings than the whole call): the
    command saves the combined result once."""
    import flatkit
    from flatkit.objective import Objective

    obj = Objective(flatkit.load(ckpt), n=4, seed=0, batch_size=4)
    res = flatkit.landscape(obj, dims=1, points=3, repeats=2, out=tmp_path / "l")
    assert not (tmp_path / "l").exists() and res.done.all()
    assert set(res.intervals) == {"loss_centre", "flatness", "mean_dl"} and res.intervals["flatness"]["n"] == [2]
