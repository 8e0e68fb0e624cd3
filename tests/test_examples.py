"""The examples run as written (with a smaller budget), and show what they claim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flatkit.analyses.hessian import HessianResult
from flatkit.analyses.landscape import LandscapeResult

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_runs_end_to_end(tmp_path):
    out = tmp_path / "qs"
    env = dict(os.environ, QUICKSTART_TRAIN_ARGS="--samples 4 --sample-steps 5 --quiet", TOPK="2", TRACE_HVPS="12",
               POINTS="5", OMP_NUM_THREADS="1", FLATKIT_THREADS="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    r = subprocess.run(["bash", str(REPO / "examples" / "quickstart.sh"), str(out), "12", "8"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    h = HessianResult.load(out / "hessian")
    assert len(h.eigenvalues[0]) == 2 and h.meta["config"]["trace_max_hvps"] == 12  # TOPK, TRACE_HVPS
    assert h.meta["checkpoints"][1]["checkpoint"].endswith("sam/ckpt.pt")
    assert (out / "landscape" / "landscape.png").is_file() and (out / "landscape" / "landscape.html").is_file()
    assert LandscapeResult.load(out / "landscape").values.shape == (2, 5, 5)  # POINTS
    assert "lambda_max" in r.stdout
    # a rerun resumes: both trainings are recognised as finished
    r2 = subprocess.run(["bash", str(REPO / "examples" / "quickstart.sh"), str(out), "12", "8"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0 and "already trained to step 12" in r2.stdout
