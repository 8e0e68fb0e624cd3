"""``write_report``: the summary table's numbers are the result files' numbers; the HTML is self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from flatkit.errors import UsageError
from flatkit.report import write_report
from flatkit.report.figures import fmt


def js(d: Path, name: str) -> dict:
    return json.loads((d / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def report(result_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    rows = [(None, result_dirs["+SAM"]), ("+EMA", result_dirs["+EMA"]), (None, result_dirs["ADM"])]
    return write_report(rows, out, title="Tiny report")


def expected(d: Path) -> dict:
    """The summary numbers, read straight from the result files (the definitions the report states)."""
    e: dict = {}
    if (d / "hessian.json").is_file():
        h = js(d, "hessian")
        e["lambda_max"] = h["top_eigenvalues"]["eigenvalues"][0]
        e["trace"] = h["trace"]["estimate"]
    if (d / "sharpness.json").is_file():
        e["sharpness"] = js(d, "sharpness")["value"]
    if (d / "landscape.json").is_file():
        z = np.load(d / "landscape.npz")
        a, b, v = z["coords_a"], z["coords_b"], z["values"][0]
        A, B = np.meshgrid(a, b, indexing="ij")
        rr = np.hypot(A, B)
        r = min(-a.min(), a.max(), -b.min(), b.max())
        e["landscape"] = float(np.mean(v[(rr > 0) & (rr <= r)] - js(d, "landscape")["loss_centre"][0]))
    if (d / "perturb.json").is_file():
        e["perturb"] = js(d, "perturb")["mean"][0][-1]  # r = 0.1, the largest radius every arm has
    if (d / "prior.json").is_file():
        e["prior_drift"] = js(d, "prior")["checkpoints"][0]["drift_mse"][1]  # mu = 0.5, the largest KL
    if (d / "exposure.json").is_file():
        e["exposure_gap"] = js(d, "exposure")["gap_mean"]
    if (d / "quantize.json").is_file():
        q = js(d, "quantize")
        e.update(quant_loss_8=q["loss_change"][0], quant_drift_8=q["drift_mse"][0], quant_loss_4=q["loss_change"][1],
                 quant_drift_4=q["drift_mse"][1], quality=q["distance_fp"])  # T'=3 ddim: the column all arms have
    return e


def md_summary(md: str) -> tuple[list[str], list[list[str]]]:
    lines = md.split("## Summary", 1)[1].split("### What each column", 1)[0].splitlines()
    rows = [ln for ln in lines if ln.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in rows]
    return cells[0], [c for c in cells[2:]]


def test_summary_numbers_equal_the_result_files(report, result_dirs):
    assert [r["label"] for r in report.rows] == ["ADM", "+EMA", "+SAM"]  # the paper's order
    keys = [c.key for c in report.columns]
    assert keys == ["lambda_max", "trace", "sharpness", "landscape", "perturb", "prior_drift", "exposure_gap",
                    "quant_loss_8", "quant_drift_8", "quant_loss_4", "quant_drift_4", "quality"]
    doc = json.loads(report.json.read_text())
    headers, rows = md_summary(report.markdown.read_text())
    assert headers[0] == "arm" and all("↓" in h for h in headers[1:])
    for row, md_row, jrow in zip(report.rows, rows, doc["rows"], strict=True):
        exp = expected(result_dirs[row["label"]])
        assert md_row[0] == row["label"]
        for j, k in enumerate(keys):
            want = exp.get(k)
            if want is None:
                assert row[k] is None and md_row[j + 1] == "—", (row["label"], k)
                continue
            assert row[k] == pytest.approx(want, rel=1e-12, abs=1e-15), (row["label"], k)
            assert jrow[k] == pytest.approx(want, rel=1e-12, abs=1e-15)
            assert md_row[j + 1].rstrip(" †") == fmt(want), (row["label"], k)
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
    html = report.html.read_text()
    assert 'src="http' not in html and "<script src" not in html and "<link" not in html
    assert html.count("<img alt=") == len(json.loads(report.json.read_text())["figures"]) == 7
    assert len(re.findall(r"plotly\.js v\d", html)) == 1  # plotly.js inlined exactly once
    assert "Plotly.newPlot" in html
    for c in report.columns:
        assert c.header.replace("'", "&#x27;") in html


def test_a_folder_without_results_is_refused(result_dirs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no flatkit result files"):
        write_report([("ADM", result_dirs["ADM"]), ("x", tmp_path / "empty")], tmp_path / "o")
