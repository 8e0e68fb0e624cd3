"""examples/custom_model.py and examples/custom_model_factory.py run as written (a smaller training budget),
through the real ``flatkit`` entry point, and show what they claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flatkit.analyses.hessian import HessianResult

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1", FLATKIT_THREADS="1",
           PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def test_custom_model_example_and_its_factory_on_the_cli(tmp_path):
    w = tmp_path / "mlp.pt"
    r = subprocess.run([sys.executable, str(REPO / "examples" / "custom_model.py"), "--steps", "150", "--save",
                        str(w), "--out", str(tmp_path / "api")], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ok: flatkit's top eigenvalue matches torch.func.hessian's" in r.stdout
    api = json.loads((tmp_path / "api" / "top_eigenvalues.json").read_text())

    r = subprocess.run(["flatkit", "hessian", "--model", "examples/custom_model_factory.py:make_task", "--weights",
                        str(w), "--top-k", "3", "--tol", "1e-6", "--out", str(tmp_path / "cli")],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cli = HessianResult.load(tmp_path / "cli")
    # the CLI (float32 weights) finds the eigenvalues the example computed in float64
    for a, b in zip(cli.eigenvalues[0], api["eigenvalues"], strict=True):
        assert abs(a - b) <= 1e-3 * abs(b), (cli.eigenvalues[0], api["eigenvalues"])
    assert cli.meta["checkpoint"] == "examples/custom_model_factory.py:make_task"
