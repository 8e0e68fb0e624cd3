"""A script run beside a checkout folder named ``flatkit/`` imports the package, not the checkout's root as an
empty namespace package (the editable install is a path entry: ``scripts/setup.sh``)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_beside_a_checkout_named_flatkit(tmp_path):
    (tmp_path / "flatkit").symlink_to(REPO, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", "import flatkit; print(flatkit.__version__, callable(flatkit.load))"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split()[-1] == "True", r.stdout + r.stderr
