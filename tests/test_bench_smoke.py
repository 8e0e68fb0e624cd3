"""Smoke runs of benchmarks/bench_hessian.py and bench_probe_batch.py at tiny sizes (their numbers mean nothing):
the scripts run end to end and write the JSON the docs' tables are read from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", FLATKIT_THREADS="1")
    p = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                       timeout=600, cwd=BENCH)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]


def test_bench_probe_batch_smoke(tmp_path):
    js = tmp_path / "pb.json"
    _run("bench_probe_batch.py", "--model", "small", "--n", "2", "--hvps", "6", "--runs", "2", "--steps", "3",
         "--repeats", "1", "--device", "cpu", "--json", str(js))
    out = json.loads(js.read_text())
    assert set(out["tasks"]) == {"hutch++", "hutchinson", "slq"}
    for row in out["tasks"].values():
        assert row["auto"]["used"] in ("loop", "vmap") and row["vmap/loop"]["median"] > 0


def test_bench_hessian_smoke(tmp_path):
    pytest.importorskip("hessian_eigenthings")
    js = tmp_path / "h.json"
    _run("bench_hessian.py", "--model", "small", "--n", "2", "--repeats", "1", "--device", "cpu", "--skip-trace",
         "--skip", "pyhessian,curvlinops", "--target", "1e-2", "--json", str(js))
    out = json.loads(js.read_text())
    assert out["top5"]["flatkit"]["reached_target"] and "hessian-eigenthings" in out["top5"]
    assert out["top5"]["hessian-eigenthings"]["flatkit_over_this"]["median"] > 0
