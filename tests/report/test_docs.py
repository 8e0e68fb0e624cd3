"""docs/figures.md: every command of its example is a valid flatkit command line (parsed, not run)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import click

from flatkit.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "figures.md"


def test_example_commands_parse(tmp_path):
    block = re.search(r"```bash\n(.*?)```", DOC.read_text(), re.S).group(1)
    rec = tmp_path / "commands.txt"
    stub = f'flatkit() {{ printf "%q " "$@" >> {rec}; echo >> {rec}; }}\n'
    r = subprocess.run(["bash", "-e", "-c", stub + block], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, OUT=str(tmp_path / "figs")), timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [shlex.split(ln) for ln in rec.read_text().splitlines() if ln.strip()]
    names = [ln[0] for ln in lines]
    assert names.count("train") == 2 and names.count("hessian") == 6 and names[-1] == "figures"
    ctx = click.Context(main)
    for args in lines:
        cmd = main.get_command(ctx, args[0])
        assert cmd is not None, args
        cmd.make_context(args[0], args[1:])  # raises on an unknown option or a bad value
    assert (DOC.parent / "img" / "figures_perturb.png").is_file()


def test_report_page_commands_parse(tmp_path):
    """docs/report.md: its example is valid flatkit command lines, ending with ``flatkit report``."""
    page = DOC.parent / "report.md"
    block = re.search(r"```bash\n(.*?)```", page.read_text(), re.S).group(1)
    lines = [shlex.split(ln, comments=True) for ln in block.splitlines()]
    cmds = [ln[1:] for ln in lines if ln and ln[0] == "flatkit"]
    assert [c[0] for c in cmds] == ["report", "hessian", "report"]
    ctx = click.Context(main)
    for args in cmds:
        main.get_command(ctx, args[0]).make_context(args[0], args[1:])  # raises on an unknown option
    readme = (DOC.parents[1] / "README.md").read_text()
    assert "(docs/report.md)" in readme and "(report.md)" in (DOC.parent / "README.md").read_text()
