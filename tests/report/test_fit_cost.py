"""The cost in fit beside the flatness: the report's summary holds L(θ) on the bank, the final training loss (from
the run's metrics.jsonl) and the held-out loss (``flatkit train --holdout``), a footnoted reason where one is
missing; and the training-curves figure overlays the runs behind the arms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from flatkit.cli import main
from flatkit.plots import training as T
from flatkit.report import collect as C
from flatkit.report.writer import write_report

DATA = "builtin:gaussians2d?n=64"


def _cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def folders(tmp_path_factory, shared_ckpt):
    from flatkit.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("fit")
    base = dict(data=DATA, preset="mlp", steps=8, batch_size=16, ema=[0.9], log_every=2, save_every=8,
                sample_count=0, holdout=16)
    plain = train(TrainConfig(**base), root / "plain", progress=False)
    sam = train(TrainConfig(**base, sam_rho=0.05), root / "sam", progress=False)
    out = {}
    for name, ck, w in (("plain-raw", plain, "raw"), ("plain-ema", plain, "ema"), ("sam-raw", sam, "raw"),
                        ("other", shared_ckpt(), "raw")):
        _cli("sharpness", ck, "--weights", w, "--kind", "average", "--samples", "2", "--n-eval", "8",
             "--no-progress", "--out", root / "res" / name)
        out[name] = root / "res" / name
    return root, out


@pytest.fixture(scope="module")
def report(folders):
    root, out = folders
    return write_report(list(out.values()), root / "report")


def test_summary_has_the_three_fit_columns_beside_flatness(report):
    keys = [c.key for c in report.columns]
    i = keys.index("loss")
    assert keys[i:i + 3] == ["loss", "train_loss", "holdout_loss"]
    md = report.markdown.read_text()
    assert "final training loss" in md and "held-out L(θ)" in md and "L(θ) on the bank" in md
    assert "train_loss" in report.csv.read_text().splitlines()[0]


def test_fit_numbers_equal_their_sources(report, folders):
    root, out = folders
    rows = {r["dir"]: r for r in report.rows}
    lines = [json.loads(x) for x in (root / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6, 8]
    for name, run in (("plain-raw", "plain"), ("plain-ema", "plain"), ("sam-raw", "sam")):
        row = rows[str(out[name])]
        res = json.loads((out[name] / "sharpness.json").read_text())
        assert row["loss"] == pytest.approx(res["loss0"][0])
        assert row["holdout_loss"] == pytest.approx(res["meta"]["holdout"]["loss"][0])
        last = json.loads((root / run / "metrics.jsonl").read_text().splitlines()[-1])
        assert row["train_loss"] == pytest.approx(last["loss"])  # the last 10 % of 8 steps: the last window
    assert rows[str(out["plain-raw"])]["holdout_loss"] != rows[str(out["plain-ema"])]["holdout_loss"]


def test_missing_fit_numbers_are_footnoted(report, folders):
    _, out = folders
    row = next(r for r in report.rows if r["dir"] == str(out["other"]))
    assert row["train_loss"] is None and row["holdout_loss"] is None
    assert "trained without" in row["holdout_loss_note"] and "metrics.jsonl" in row["train_loss_note"]
    md = report.markdown.read_text()
    table_row = next(ln for ln in md.splitlines() if ln.startswith(f"| {row['label']} |"))
    assert "—¹" in table_row or "—²" in table_row
    assert "¹ final training loss — for" in md and "trained without flatkit train --holdout" in md


def test_final_train_loss_rule():
    recs = [{"step": s, "loss": v} for s, v in ((10, 5.0), (20, 4.0), (90, 3.0), (95, 2.0), (100, 1.0))]
    f = C.final_train_loss(recs)  # the last 10 steps: windows (90, 95] and (95, 100], 5 steps each
    assert f["value"] == pytest.approx(1.5) and f["from_step"] == 90 and f["to_step"] == 100
    recs.append({"step": 103, "loss": 7.0, "partial": True})  # a run ending off the grid: weighted by its 3 steps
    cut = 103 - 11
    expect = (5 * 2.0 + 5 * 1.0 + 3 * 7.0) / 13 if cut < 95 else None
    assert C.final_train_loss(recs)["value"] == pytest.approx(expect)
    assert C.final_train_loss([]) is None


def test_training_figure_in_the_report(report, folders):
    fj = json.loads((report.figures_dir / "figures.json").read_text())
    assert set(fj["figures"]["training"]["data"]) == {"ADM", "+SAM"}
    assert (report.figures_dir / "training.png").is_file()
    assert "![training](figures/training.png)" in report.markdown.read_text()


def _records(n, sam):
    return [{"step": 10 * (i + 1), "loss": 1.0 / (i + 1), "grad_norm": 2.0 + i, "lr": 1e-3, "rho": 0.5 if sam else 0.0,
             "sam_e_norm": 0.5 if sam else 0.0} for i in range(n)]


def test_training_plot_draws_one_colour_per_run(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(T, "save", lambda fig, stem: figs.append(fig) or [tmp_path / "x.png"])
    T.plot_training_curves([("ADM", _records(6, False)), ("+SAM", _records(6, True))], tmp_path / "training")
    axes = {a.get_title().split(" ")[0]: a for a in figs[0].axes}
    loss = axes["training"]
    assert len(loss.lines) == 4  # raw and smoothed per run
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["ADM", "+SAM"]
    assert loss.lines[0].get_color() == loss.lines[1].get_color() != loss.lines[2].get_color()
    assert all(a.get_xlabel() == "training step" and a.get_ylabel() for a in figs[0].axes)
    sam = axes["SAM:"]
    assert len([ln for ln in sam.lines if len(ln.get_xdata())]) == 2  # ρ and ‖e‖ of the one SAM run
    np.testing.assert_allclose(loss.lines[0].get_ydata(), [1.0 / (i + 1) for i in range(6)])
    figs.clear()
    T.plot_training_curves([("ADM", _records(3, False))], tmp_path / "t2")
    assert len(figs[0].axes) == 3  # no SAM run: no ρ panel


def test_smooth_is_an_unbiased_ema():
    assert T.smooth([2.0, 2.0, 2.0]).tolist() == [2.0, 2.0, 2.0]
    s = T.smooth([1.0, np.nan, 3.0], span=3)  # a = 0.5
    assert s[0] == 1.0 and s[1] == 1.0 and s[2] == pytest.approx((0.5 * 0.5 * 1 + 0.5 * 3) / (0.5 * 0.5 + 0.5))
