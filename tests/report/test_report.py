"""``write_report``: the summary table's numbers are the result files' numbers; the HTML is self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from flatkit.analyses.hessian import HessianResult
from flatkit.analyses.landscape.core import LandscapeResult
from flatkit.analyses.perturb import PerturbResult
from flatkit.analyses.robustness.exposure import ExposureResult
from flatkit.analyses.robustness.prior import PriorResult
from flatkit.analyses.robustness.quantize import QuantizeResult
from flatkit.analyses.sharpness import SharpnessResult
from flatkit.errors import UsageError
from flatkit.report import write_report
from flatkit.report.collect import load_result
from flatkit.report.figures import fmt


@pytest.fixture(scope="module")
def report(result_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    rows = [(None, result_dirs["+SAM"]), ("+EMA", result_dirs["+EMA"]), (None, result_dirs["ADM"])]
    return write_report(rows, out, title="Tiny report")


def expected(d: Path) -> dict:
    """The summary numbers, read straight from the typed results (the definitions the report states)."""
    e: dict = {}
    if (d / "hessian.json").is_file():
        h = HessianResult.load(d)
        e["loss"] = h.loss[0]
        e["lambda_max"] = h.eigenvalues[0][0]
        e["trace"] = h.trace[0]
    if (d / "sharpness.json").is_file():
        e["sharpness"] = SharpnessResult.load(d).value[0]
    if (d / "landscape.json").is_file():
        land = LandscapeResult.load(d)
        a, b, v = land.coords_a, land.coords_b, land.values[0]
        A, B = np.meshgrid(a, b, indexing="ij")
        rr = np.hypot(A, B)
        r = min(-a.min(), a.max(), -b.min(), b.max())
        e["landscape"] = float(np.mean(v[(rr > 0) & (rr <= r)] - land.loss_centre[0]))
    if (d / "perturb.json").is_file():
        e["perturb"] = PerturbResult.load(d).mean[0][-1]  # r = 0.1, the largest radius every arm has
    if (d / "prior.json").is_file():
        e["prior_drift"] = PriorResult.load(d).drift_mse[0][1]  # mu = 0.5, the largest KL
    if (d / "exposure.json").is_file():
        e["exposure_gap"] = ExposureResult.load(d).gap_mean[0]
    if (d / "quantize.json").is_file():
        q = QuantizeResult.load(d)
        e.update(quant_loss_8=q.loss_change[0][0], quant_drift_8=q.drift_mse[0][0], quant_loss_4=q.loss_change[0][1],
                 quant_drift_4=q.drift_mse[0][1], quality=q.distance_fp[0])  # T'=3 ddpm: the column all arms have
    if (d / "fid.json").is_file():  # the same T': fid.json's weight-free distance comes before quantize's
        e["quality"] = load_result(d, "fid").weight_free["sw2"]
    return e


def md_summary(md: str) -> tuple[list[str], list[list[str]]]:
    lines = md.split("## Summary", 1)[1].split("### What each column", 1)[0].splitlines()
    rows = [ln for ln in lines if ln.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in rows]
    return cells[0], [c for c in cells[2:]]


def test_summary_numbers_equal_the_result_files(report, result_dirs):
    assert [r["label"] for r in report.rows] == ["ADM", "+EMA", "+SAM"]  # the paper's order
    keys = [c.key for c in report.columns]
    assert keys == ["loss", "train_loss", "holdout_loss",
                    "lambda_max", "trace", "sharpness", "landscape", "perturb", "prior_drift", "exposure_gap",
                    "quant_loss_8", "quant_drift_8", "quant_loss_4", "quant_drift_4", "quality"]
    doc = json.loads(report.json.read_text())
    headers, rows = md_summary(report.markdown.read_text())
    assert headers[0] == "arm" and headers[1].startswith("L(θ) on the bank") and all("↓" in h for h in headers[4:])
    assert headers[2:4] == ["final training loss", "held-out L(θ)"]
    for row, md_row, jrow in zip(report.rows, rows, doc["rows"], strict=True):
        exp = expected(result_dirs[row["label"]])
        assert md_row[0] == row["label"]
        # the cost in fit: the last logged window of the conftest's metrics.jsonl; no held-out items (footnoted)
        assert row["train_loss"] == pytest.approx(1 / 3) and md_row[2] == fmt(1 / 3)
        assert row["holdout_loss"] is None and md_row[3].startswith("—") and md_row[3] != "—"
        assert "trained without" in row["holdout_loss_note"]
        for j, k in enumerate(keys):
            if k in ("train_loss", "holdout_loss"):
                continue
            want = exp.get(k)
            if want is None:
                assert row[k] is None and md_row[j + 1] == "—", (row["label"], k)
                continue
            assert row[k] == pytest.approx(want, rel=1e-12, abs=1e-15), (row["label"], k)
            assert jrow[k] == pytest.approx(want, rel=1e-12, abs=1e-15)
            shown = md_row[j + 1].rstrip(" †")
            if k == "lambda_max":  # a bound the tolerance did not certify is said in the cell
                uncertified = not HessianResult.load(result_dirs[row["label"]]).eigen_certified[0]
                assert shown.endswith(" (not certified)") == uncertified
                shown = shown.removesuffix(" (not certified)")
            assert shown == fmt(want), (row["label"], k)
    assert "μ=0.5, s=1" in headers[keys.index("prior_drift") + 1]
    assert all(r["quality_metric"] == "SW2" for r in report.rows)


def test_every_column_is_explained_and_figures_linked(report):
    md = report.markdown.read_text()
    expl = md.split("### What each column measures", 1)[1].split("## Figures", 1)[0]
    for c in report.columns:
        assert f"**{c.header}**" in expl and len(c.explanation) > 60
    assert "0 < √(α² + β²) ≤ r" in expl  # the landscape flatness number is defined
    for name in ("flatness", "landscape", "perturb", "exposure", "quantize", "samples_quantized"):
        assert f"](figures/{name}.png)" in md and (report.figures_dir / f"{name}.png").is_file()


def test_html_is_self_contained(report):
    import html as H

    html = report.html.read_text()
    assert 'src="http' not in html and "<script src" not in html and "<link" not in html
    assert html.count("<img alt=") == len(json.loads(report.json.read_text())["figures"]) == 9  # + prior.png
    assert len(re.findall(r"plotly\.js v\d", html)) == 1  # plotly.js inlined exactly once
    assert report.html.stat().st_size < 3_500_000  # plotly.js gzip+base64 (2 MB), figures ≤ 1300 px, 256 colours
    assert "Plotly.newPlot" in html
    for c in report.columns:
        assert H.escape(c.header, quote=False) in html


def test_html_renders_the_markdown(report):
    html = report.html.read_text()
    body = html.split("<body>", 1)[1]
    body = re.sub(r"<script.*?</script>", "", body, flags=re.S)
    assert "**" not in body and "`" not in body  # bold and code spans rendered, not shown literally
    assert "<strong>not FID</strong>" in body and "<code>hessian.json</code>" in body
    assert "<h2>Summary (↓: lower is better)</h2>" in body and body.count("<table>") >= 2
    assert "<li><strong>ADM</strong>: <code>" in body


def test_csv_and_tex_hold_the_summary(report):
    import csv

    rows = list(csv.DictReader(report.csv.read_text().splitlines()))
    keys = [c.key for c in report.columns]
    assert [r["arm"] for r in rows] == ["ADM", "+EMA", "+SAM"]
    for r, want in zip(rows, report.rows, strict=True):
        for k in keys:
            assert (float(r[k]) if r[k] else None) == (pytest.approx(want[k], rel=1e-15) if want[k] is not None
                                                       else None), (r["arm"], k)
        assert r["loss_source"] == "hessian"
    tex = report.tex.read_text()
    lines = tex.splitlines()
    i, j, k = lines.index(r"\toprule"), lines.index(r"\midrule"), lines.index(r"\bottomrule")
    assert i < j < k and k - j - 1 == 3  # one line per arm
    head = lines[i + 1]
    assert head.count("&") == len(keys) and head.endswith(r"\\")
    assert r"$L(\theta)$ on the bank" in head and r"$\lambda_{\max}$ $\downarrow$" in head
    assert r"\begin{tabular}{l" + "r" * len(keys) + "}" in tex
    body = "\n".join(lines[i:k])
    for bad in ("θ", "λ", "ε", "Δ", "↓", "†", "—", "μ"):
        assert bad not in body, bad
    text = re.sub(r"\$[^$]*\$", "", body)  # outside math: every special character escaped
    assert not re.search(r"(?<!\\)[_%#]", text), "unescaped special character"
    assert lines[j + 2].startswith("+EMA & ") and " & -- & " in lines[j + 2]  # +EMA has no sharpness


def test_a_folder_without_results_is_refused(result_dirs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no flatkit result files"):
        write_report([("ADM", result_dirs["ADM"]), ("x", tmp_path / "empty")], tmp_path / "o")


def test_lambda_max_bounds_are_in_the_notes(report, result_dirs):
    """Each arm's certified |λ_max − θ| from hessian.json, in the notes; NOT certified where the stop was max_iter."""
    md = report.markdown.read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("- λ_max error bounds"))
    for label in ("ADM", "+EMA", "+SAM"):
        h = HessianResult.load(result_dirs[label])
        part = line.split(f"{label} ± ", 1)[1].split(",")[0]
        assert float(part.split()[0]) == pytest.approx(h.eigen_bounds[0][0], rel=0.03)  # printed to 2 digits
        assert ("NOT certified" in part) == (not h.eigen_certified[0])
