"""An instant CLI: ``--help``, ``CMD --help`` and shell completion import no heavy module; ``info`` only torch.

Each case runs the CLI in a fresh ``python -c`` process (the test process has torch loaded already) and reads
``sys.modules`` after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flatkit.cli import COMMANDS

HEAVY = ("torch", "numpy", "matplotlib", "plotly", "scipy", "diffusers")
PLOTTING = ("matplotlib", "plotly", "scipy", "diffusers")

# run the CLI (as the `flatkit` entry point would), then print which top-level modules got imported
_RUNNER = """
import json, sys
from flatkit.cli import main
try:
    main(sys.argv[1:], prog_name="flatkit", complete_var="_FLATKIT_COMPLETE", standalone_mode=False)
except SystemExit:
    pass
print("\\nMODULES=" + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def imported(*args: str, env: dict[str, str] | None = None) -> set[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("_FLATKIT_COMPLETE")}
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-c", _RUNNER, *args], capture_output=True, text=True, env=full_env,
                       timeout=300)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("MODULES=")]
    assert lines, (p.stdout, p.stderr)
    return set(json.loads(lines[-1][len("MODULES="):]))


def test_group_help_imports_nothing_heavy():
    mods = imported("--help")
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_imports_nothing_heavy(name):
    mods = imported(name, "--help")
    assert not mods & set(HEAVY), f"flatkit {name} --help imported {sorted(mods & set(HEAVY))}"


@pytest.mark.parametrize("words,cword", [("flatkit la", "1"), ("flatkit hessian --", "2"),
                                         ("flatkit landscape --mode ", "3")])
def test_shell_completion_imports_nothing_heavy(words, cword):
    mods = imported(env={"_FLATKIT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword})
    assert not mods & set(HEAVY), f"completion of {words!r} imported {sorted(mods & set(HEAVY))}"


def test_completion_still_completes():
    env = {k: v for k, v in os.environ.items() if not k.startswith("_FLATKIT_COMPLETE")}
    env.update({"_FLATKIT_COMPLETE": "bash_complete", "COMP_WORDS": "flatkit hessian --n-e", "COMP_CWORD": "2"})
    p = subprocess.run([sys.executable, "-c", _RUNNER], capture_output=True, text=True, env=env, timeout=300)
    assert "--n-eval" in p.stdout, (p.stdout, p.stderr)
    env.update({"COMP_WORDS": "flatkit la", "COMP_CWORD": "1"})
    p = subprocess.run([sys.executable, "-c", _RUNNER], capture_output=True, text=True, env=env, timeout=300)
    assert "landscape" in p.stdout, (p.stdout, p.stderr)


def test_info_imports_torch_but_no_plotting(shared_ckpt):
    mods = imported("info", str(shared_ckpt()))
    assert "torch" in mods
    assert not mods & set(PLOTTING), f"flatkit info imported {sorted(mods & set(PLOTTING))}"


def test_threads_are_set_when_a_command_runs(shared_ckpt):
    """``--threads`` still reaches torch, now when the subcommand runs rather than when the group parses."""
    code = ("import sys, torch\nfrom flatkit.cli import main\n"
            "main(['--threads', '1', 'info', sys.argv[1]], standalone_mode=False)\n"
            "print('THREADS=%d' % torch.get_num_threads())\n")
    p = subprocess.run([sys.executable, "-c", code, str(shared_ckpt())], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="2"), timeout=300)
    assert "THREADS=1" in p.stdout, (p.stdout, p.stderr)
