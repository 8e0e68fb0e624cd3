"""``flatkit report DIR... --out DIR``: result folders written by the real commands (a --compare folder gives one
row per model, a demo-like folder stands for its results/*), the five files, and bad input as one line, exit 2."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flatkit.cli import main

DATA = "builtin:shapes16?n=64"
EVAL = ["--n-eval", "4", "--batch-size", "8", "--device", "cpu"]
FILES = ("report.md", "report.html", "report.json", "summary.csv", "summary.tex")


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: object):
    r = cli(*args)
    assert r.exit_code == 0, r.output
    return r


def ckpt(make_ckpt, path: Path, seed: int, **train: float) -> Path:
    cfg = {"data": DATA, "steps": 3, "sam_rho": 0.0, "ip_gamma": 0.0, **train}
    return make_ckpt(path, "tiny", model={"attention_resolutions": "", "channel_mult": "1"}, seed=seed, noise=0.05,
                     data=DATA, others={"ema_0.9": 0.01}, step=3, ema_rates=[0.9], train={"config": cfg})


@pytest.fixture(scope="module")
def folders(tmp_path_factory, make_ckpt) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmdreport")
    plain = ckpt(make_ckpt, root / "plain" / "ckpt.pt", 0)
    sam = ckpt(make_ckpt, root / "sam" / "ckpt.pt", 1, sam_rho=0.5)
    cmp_dir, q_dir = root / "res" / "compare", root / "demo" / "results" / "sam-raw"
    # one hessian call on two models (plain and +SAM, same bank): one result, two rows
    ok("hessian", plain, "--compare", sam, "--top-k", "1", "--trace", "--max-iter", "4", "--trace-max-hvps", "4",
       "--out", cmp_dir, *EVAL)
    # a demo-like folder: results/<arm>-<weights>/ holding a hessian result of +SAM
    ok("hessian", sam, "--top-k", "1", "--max-iter", "4", "--out", q_dir, *EVAL)
    (root / "demo" / "demo.json").write_text("{}")
    return {"root": root, "compare": cmp_dir, "demo": root / "demo", "sam": q_dir}


def test_report_of_a_comparison_and_a_demo_folder(folders, tmp_path):
    from flatkit.analyses.hessian import HessianResult

    out = tmp_path / "rep"
    r = ok("report", folders["compare"], folders["demo"], "--out", out, "--title", "Cmp & 100% #1")
    for f in FILES:
        assert f"wrote {out / f}" in r.output and (out / f).is_file()
    h = HessianResult.load(folders["compare"])
    h2 = HessianResult.load(folders["sam"])
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    # the comparison gives one row per model (labelled from each checkpoint's train config), the demo one more
    assert [r["arm"] for r in rows] == ["ADM", "+SAM", "+SAM#2"]
    for row, (res, m) in zip(rows, [(h, 0), (h, 1), (h2, 0)], strict=True):
        assert float(row["loss"]) == pytest.approx(res.loss[m], rel=1e-15)
        assert float(row["lambda_max"]) == pytest.approx(res.lambda_max[m], rel=1e-15)
        assert row["loss_source"] == "hessian" and row["loss_n_eval"] == "4"
    assert rows[2]["trace"] == ""  # not measured: empty, not a number
    doc = json.loads((out / "report.json").read_text())
    assert [x["model"] for x in doc["runs"]] == [0, 1, 0]
    md = (out / "report.md").read_text()
    assert md.startswith("# Cmp & 100% #1\n") and (
        "| arm | L(θ) on the bank (n = 4) | final training loss | held-out L(θ) | λ_max ↓ | trace ↓ |" in md)
    tex = (out / "summary.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert (r"arm & $L(\theta)$ on the bank (n = 4) & final training loss & held-out $L(\theta)$ & $\lambda_{\max}$ "
            r"$\downarrow$ & trace $\downarrow$ \\") in tex
    assert "+SAM\\#2 & " in tex  # '#' escaped
    html = (out / "report.html").read_text()
    body = re.sub(r"<script.*?</script>", "", html.split("<body>", 1)[1], flags=re.S)
    assert "**" not in body and "`" not in body and "<strong>ADM</strong>" in body
    assert "<title>Cmp &amp; 100% #1</title>" in html


def test_an_occupied_out_is_refused_unless_overwrite(folders, tmp_path):
    out = tmp_path / "rep"
    ok("report", folders["compare"], "--out", out)
    before = (out / "report.md").read_text()
    r = cli("report", folders["compare"], "--out", out)
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"flatkit report: error: --out {out}: holds a report already (report.md); pass --overwrite or another --out"]
    assert (out / "report.md").read_text() == before
    ok("report", folders["compare"], "--out", out, "--overwrite", "--title", "again")
    assert (out / "report.md").read_text().startswith("# again\n")


def test_a_dir_without_results_is_one_line(folders, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("report", folders["compare"], empty, "--out", tmp_path / "o")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flatkit report: error: {empty}: no flatkit result files here")
    assert not (tmp_path / "o" / "report.md").exists()
    r = cli("report", tmp_path / "missing", "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.output.strip() == f"flatkit report: error: {tmp_path / 'missing'}: not a directory"


def test_a_corrupt_result_is_named(folders, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folders["sam"], bad)
    (bad / "hessian.json").write_text('{"labels": ["x"], "loss": [1.0')  # truncated
    r = cli("report", bad, "--out", tmp_path / "o")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flatkit report: error: {bad / 'hessian.json'}: corrupt hessian")
    (bad / "hessian.json").write_text('[1, 2]')  # not a result object
    r = cli("report", bad, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "corrupt hessian result" in r.output


def test_label_must_name_a_dir(folders, tmp_path):
    r = cli("report", folders["compare"], "--out", tmp_path / "o", "--label", "elsewhere=X")
    assert r.exit_code == 2 and "--label elsewhere=X: elsewhere is not one of the DIRs" in r.output
