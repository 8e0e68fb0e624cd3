"""``flatkit demo`` end to end with the smoke budget: trains three arms, measures nine, writes the report;
a rerun resumes; bad --out is refused without touching anything."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flatkit.analyses.hessian import HessianResult
from flatkit.demo import ARMS, BUDGETS, measure_tasks
from flatkit.report.collect import load_result

REPO = Path(__file__).resolve().parents[1]


def _flatkit(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, FLATKIT_THREADS="1")
    return subprocess.run([sys.executable, "-m", "flatkit.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    r = _flatkit("demo", "--budget", "smoke", "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def _summary_rows(md: str) -> dict[str, list[str]]:
    lines = md.split("## Summary", 1)[1].split("\n#", 1)[0].splitlines()  # up to the next heading
    table = [ln for ln in lines if ln.startswith("|")]
    rows = {}
    for ln in table[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_demo_writes_the_report_of_nine_arms(smoke):
    out, r = smoke
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    md = (out / "report.md").read_text()
    assert "Its numbers carry no meaning" in md  # the smoke budget says so in its report
    rows = _summary_rows(md)
    assert list(rows) == [label for _, _, label in ARMS]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)  # plotly inlined, nothing from the network
    # every arm got every measure, from the checkpoint of its own training run
    for arm, weights, label in ARMS:
        d = out / "results" / f"{arm}-{weights}"
        for name in ("hessian", "sharpness", "landscape", "perturb", "prior", "exposure", "quantize"):
            res = load_result(d, name)
            assert res.labels == [label], name
            assert res.meta["checkpoint"].endswith(f"train/{arm}/ckpt.pt"), name
            assert res.meta["checkpoints"][0]["checkpoint_sha256"] == res.meta["checkpoint_sha256"], name
            w = res.meta.get("weights")
            assert w is None or w.startswith(weights), (name, w)
    # the report's numbers are the result files' numbers, L(θ) beside the flatness ones
    rep = json.loads((out / "report.json").read_text())
    keys = [c["key"] for c in rep["columns"]]
    assert keys[:5] == ["loss", "train_loss", "holdout_loss", "lambda_max", "trace"]  # the cost in fit first
    for arm, weights, label in ARMS:
        h = HessianResult.load(out / "results" / f"{arm}-{weights}")
        row = next(x for x in rep["rows"] if x["label"] == label)
        # --repeats: the cells are the mean over the budget's repeats ± one standard error
        assert len(h.repeats) == BUDGETS["smoke"].repeats and h.repeats[0]["lambda_max"] == h.lambda_max
        lam = h.intervals["lambda_max"]["mean"][0]
        assert row["lambda_max"] == pytest.approx(lam, rel=1e-12)
        assert row["loss"] == pytest.approx(h.intervals["loss"]["mean"][0], rel=1e-12)
        assert f"{lam:.4g} ± " in rows[label][keys.index("lambda_max")]
        assert row["train_loss"] is not None and row["holdout_loss"] is not None  # each run holds 5 % out
    assert "### Error bars" in md and "not seed-to-seed training variance" in md
    assert (out / "summary.csv").is_file() and (out / "summary.tex").is_file()
    assert "training" in rep["figures"]  # the curves of the three runs
    # the three trainings reached the budget's steps and track EMA and SWA
    for arm in ("plain", "sam", "ip"):
        tj = json.loads((out / "train" / arm / "train.json").read_text())
        assert tj["config"]["steps"] == BUDGETS["smoke"].steps
    assert "[demo] training 3 model(s)" in r.stderr and "[demo] measuring 9 arm(s)" in r.stderr


def test_demo_rerun_resumes_without_recomputing(smoke):
    out, _ = smoke
    stamp = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")}
    report = {p: p.stat().st_mtime_ns for p in out.glob("report.*")}
    r = _flatkit("demo", "--budget", "smoke", "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training" not in r.stderr and "measuring" not in r.stderr
    assert stamp == {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")}
    # nothing changed: the report is kept, not written again
    assert "the report is up to date" in r.stderr and "writing the report" not in r.stderr
    assert report == {p: p.stat().st_mtime_ns for p in out.glob("report.*")}


def test_report_fingerprint_follows_the_result_and_training_files(tmp_path):
    from flatkit.demo import _report_inputs

    out = tmp_path / "d"
    (out / "results" / "plain-raw").mkdir(parents=True)
    (out / "train" / "plain").mkdir(parents=True)
    res, log, met = (out / "results" / "plain-raw" / "hessian.json", out / "train" / "plain" / "log.txt",
                     out / "train" / "plain" / "metrics.jsonl")
    res.write_text("{}")
    met.write_text("{}\n")
    log.write_text("a")
    first = _report_inputs(out, "t", "i")
    assert _report_inputs(out, "t", "i") == first
    log.write_text("a log line more")  # not read by the report
    assert _report_inputs(out, "t", "i") == first
    assert _report_inputs(out, "t", "other notes") != first
    os.utime(res, ns=(res.stat().st_atime_ns, res.stat().st_mtime_ns + 1000))  # a result rewritten
    second = _report_inputs(out, "t", "i")
    assert second != first
    met.write_text("{}\n{}\n")  # training went on
    assert _report_inputs(out, "t", "i") != second
    (out / "results" / "plain-raw" / "perturb.npz").write_bytes(b"x")  # a result added
    assert _report_inputs(out, "t", "i") not in (first, second)


def test_demo_redoes_a_result_whose_checkpoint_changed(smoke, tmp_path):
    out, _ = smoke
    t = measure_tasks(BUDGETS["smoke"], str(out / "train" / "sam" / "ckpt.pt"), "raw",
                      str(out / "results" / "sam-raw"), "+SAM")
    from flatkit.demo import result_done

    assert all(result_done(x) for x in t)
    other = measure_tasks(BUDGETS["smoke"], str(out / "train" / "plain" / "ckpt.pt"), "raw",
                          str(out / "results" / "sam-raw"), "+SAM")
    assert not any(result_done(x) for x in other)


def test_demo_refuses_a_foreign_out_dir(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    r = _flatkit("demo", "--budget", "smoke", "--out", str(d))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"flatkit demo: error: --out {d}: exists and holds other files (not a flatkit demo); use another --out"]
    assert sorted(p.name for p in d.iterdir()) == ["thesis.tex"]
    f = tmp_path / "file"
    f.write_text("x")
    r = _flatkit("demo", "--out", str(f))
    assert r.returncode == 2 and "is not a directory" in r.stderr and f.read_text() == "x"


def test_demo_refuses_another_budget_in_the_same_dir(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "demo.json").write_text(json.dumps({"budget": "fast", "sizes": {}}))
    r = _flatkit("demo", "--budget", "smoke", "--out", str(d))
    assert r.returncode == 2 and "holds a demo with --budget fast" in r.stderr
    r = _flatkit("demo", "--budget", "huge", "--out", str(d))
    assert r.returncode == 2 and "--budget" in r.stderr


def test_a_demo_folder_of_an_older_flatkit_stays_resumable():
    """A size a folder's flatkit did not record counts as its default: a fast demo written before the perturb
    and training-sample sizes existed is the same budget; another budget, or changed sizes, are not."""
    import json as _json

    from flatkit.demo import _demo_config, _same_sizes

    fast = _json.loads(_json.dumps(_demo_config("fast")["sizes"]))
    older = {k: v for k, v in fast.items() if k not in ("perturb_radii", "worst_steps", "train_sample_steps")}
    assert _same_sizes(older, _demo_config("fast")["sizes"])
    smoke = _json.loads(_json.dumps(_demo_config("smoke")["sizes"]))
    assert _same_sizes(smoke, _demo_config("smoke")["sizes"])
    assert not _same_sizes({k: smoke[k] for k in older}, _demo_config("smoke")["sizes"])  # smoke's sizes changed
    assert not _same_sizes(fast, _demo_config("full")["sizes"])
    assert not _same_sizes({**fast, "unknown": 1}, _demo_config("fast")["sizes"])
    assert not _same_sizes(None, _demo_config("fast")["sizes"])
