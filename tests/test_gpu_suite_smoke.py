"""benchmarks/gpu_suite.py: ``--smoke`` runs the whole GPU suite's path on the CPU and its table has every row;
one failing or slow row does not lose the others."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def _suite_module():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_suite", mod)  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_smoke_writes_every_row(tmp_path):
    out, js = tmp_path / "smoke.md", tmp_path / "smoke.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", FLATKIT_THREADS="1")
    p = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--json", str(js)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    text = out.read_text()
    rows = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln}
    ids = list(_suite_module().ORDER)
    assert len(ids) == 13
    for key in ids:
        assert key in rows, f"row {key} missing from\n{text}"
        assert "failed" not in rows[key] and "timed out" not in rows[key] and "skipped" not in rows[key], rows[key]
        assert rows[key].split("|")[3].strip(), f"row {key} has no result: {rows[key]}"
    for ratio in ("top-5, PyHessian / flatkit", "loss-landscapes / flatkit vmap fp32", "SAM / plain"):
        assert ratio in text
    assert "preset tiny" in text and "--smoke" in text


def test_a_failing_or_slow_row_keeps_the_others():
    mod = _suite_module()
    s = mod.Sizes(**{**vars(mod.SMOKE), "caps": {"slow": 0.3}, "budget_s": 5.0})
    suite = mod.Suite(s, torch.device("cpu"))
    suite.rows = {k: {"result": "", "wall_s": None, "peak_mib": None, "note": "not run"}
                  for k in ("ok", "boom", "slow", "late")}
    suite.titles = {k: k for k in suite.rows}

    def boom():
        raise RuntimeError("out of memory\nsecond line")

    def slow():
        time.sleep(5)
        return "never", ""

    suite.run("ok", lambda: ("42", "fine"))
    suite.run("boom", boom)
    suite.run("slow", slow)
    suite.t0 -= 10  # the total budget is spent
    suite.run("late", lambda: ("never", ""))
    assert suite.rows["ok"]["result"] == "42"
    assert suite.rows["boom"]["note"] == "failed: RuntimeError: out of memory"
    assert suite.rows["slow"]["note"].startswith("timed out") and suite.rows["slow"]["wall_s"] < 3
    assert suite.rows["late"]["note"].startswith("skipped")
    text = suite.markdown({"date": "today"})
    assert all(f"| {k} |" in text for k in suite.rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_the_full_suite_says_so(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.md")], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and "--smoke" in p.stderr
