"""The output-folder policy (docs/cli.md "Outputs"): occupied --out refused intact, same result reused,
--overwrite replaces, one writer at a time (pid lock), files as the umask says, plain progress lines in a log."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from flatkit.cli import main
from flatkit.outputs import LOCK_NAME, OutLock

ARGS = ["--n-eval", "4", "--batch-size", "4", "--top-k", "1", "--max-iter", "2"]


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def ckpts(shared_ckpt):
    return str(shared_ckpt("tiny")), str(shared_ckpt("tiny", seed=1))


@pytest.fixture(scope="module")
def done(ckpts, tmp_path_factory):
    """A hessian result of the first checkpoint, written once (read-only for the tests below: copy it)."""
    out = tmp_path_factory.mktemp("hess") / "h"
    r = run("hessian", ckpts[0], *ARGS, "--out", out)
    assert r.exit_code == 0, r.output
    return out


def copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_other_checkpoint_refused_and_intact(ckpts, done, tmp_path):
    out = copy(done, tmp_path / "h")
    before = snapshot(out)
    r = run("hessian", ckpts[1], *ARGS, "--out", out)
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "another checkpoint" in lines[0], r.output
    assert snapshot(out) == before
    # another analysis of another checkpoint in the same folder: refused too
    r = run("sharpness", ckpts[1], "--n-eval", "4", "--out", out)
    assert r.exit_code == 2 and "another checkpoint" in r.output
    assert snapshot(out) == before


def test_same_settings_reused_other_settings_refused_overwrite_replaces(ckpts, done, tmp_path):
    out = copy(done, tmp_path / "h")
    before = snapshot(out)
    r = run("hessian", ckpts[0], *ARGS, "--out", out)
    assert r.exit_code == 0 and "reusing" in r.output, r.output
    assert snapshot(out) == before
    r = run("hessian", ckpts[0], *ARGS[:-1], "3", "--out", out)  # --max-iter 3: other settings
    assert r.exit_code == 2 and "other settings" in r.output and "--overwrite" in r.output
    assert snapshot(out) == before
    r = run("hessian", ckpts[0], *ARGS[:-1], "3", "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    import json

    assert json.loads((out / "hessian.json").read_text())["meta"]["config"]["max_iter"] == 3


def test_corrupt_result_named(ckpts, tmp_path):
    out = tmp_path / "h"
    out.mkdir()
    (out / "hessian.json").write_text("{not json")
    r = run("hessian", ckpts[0], *ARGS, "--out", out)
    assert r.exit_code == 2 and "corrupt" in r.output and "--out" in r.output
    assert (out / "hessian.json").read_text() == "{not json"


def test_out_not_a_directory_or_impossible(ckpts, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, f / "sub"):
        r = run("hessian", ckpts[0], *ARGS, "--out", out)
        assert r.exit_code == 2 and r.output.count("\n") == 1 and "--out" in r.output, r.output
    assert f.read_text() == "x"


def test_second_writer_refused_nothing_lost(ckpts, done, tmp_path):
    out = copy(done, tmp_path / "h")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{holder.pid} {os.uname().nodename}\n")
        before = snapshot(out)
        r = run("hessian", ckpts[0], *ARGS, "--out", out, "--overwrite")
        assert r.exit_code == 2 and f"in use by pid {holder.pid}" in r.output and "--out" in r.output
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    # its holder gone: the lock is stale, taken over, and released at the end
    r = run("hessian", ckpts[0], *ARGS, "--out", out)
    assert r.exit_code == 0 and "reusing" in r.output, r.output
    assert not (out / LOCK_NAME).exists()


def test_two_processes_one_lock(tmp_path):
    """Two real processes: the second is refused while the first holds the lock."""
    code = ("import sys, time; from flatkit.outputs import OutLock; l = OutLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(30)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        from flatkit.errors import UsageError

        with pytest.raises(UsageError, match=f"in use by pid {p.pid}"):
            OutLock(tmp_path).acquire()
    finally:
        p.kill()
        p.wait()
    with OutLock(tmp_path):  # stale now
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()


def test_modes_follow_umask(tmp_path):
    import numpy as np

    from flatkit.checkpoint import atomic_torch_save
    from flatkit.results import atomic_savez, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_savez(tmp_path / "a.npz", x=np.zeros(2))
        atomic_torch_save({"x": 1}, tmp_path / "a.pt")
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        assert modes == {"a.json": 0o644, "a.npz": 0o644, "a.pt": 0o644}
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_command_results_follow_umask(done):
    # written under the test's umask (022 by default here): group and others may read
    mask = os.umask(0)
    os.umask(mask)
    for p in done.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask, p


def test_kill_between_temp_and_rename_then_resume(tmp_path):
    out = tmp_path / "t"
    base = ["train", "--data", "builtin:shapes16?n=16", "--batch-size", "4", "--samples", "0", "--quiet",
            "--ema", "none", "--save-every", "1", "--out", out]
    r = run(*base, "--steps", "1")
    assert r.exit_code == 0, r.output
    # what a kill -9 inside atomic_torch_save / atomic_write_text leaves: temp files beside the real ones
    (out / ".ckpt.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (out / ".train.json.xyz.tmp").write_text("{")
    (out / "metrics.jsonl.tmp").write_text("{")
    r = run(*base, "--steps", "2", "--resume")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")) == []


def test_progress_plain_lines_when_not_a_tty(ckpts, tmp_path):
    r = CliRunner().invoke(main, ["hessian", ckpts[0], *ARGS, "--out", str(tmp_path / "h")],
                           env={"FLATKIT_PROGRESS_EVERY": "0"})
    assert r.exit_code == 0, r.output
    err = r.output
    assert "\r" not in err and "\x1b[" not in err  # no tqdm frames
    lines = [ln for ln in err.splitlines() if ln.startswith("top-1 eigenvalues")]
    assert lines and lines[-1].split(" - ")[-1] in ("done", "converged") and "(100%)" in lines[-1], err
    r = run("sample", ckpts[0], "--n", "2", "--sampling-steps", "3", "--out", tmp_path / "s",
            env={"FLATKIT_PROGRESS_EVERY": "0"})
    assert r.exit_code == 0 and "2/2 sample (100%)" in r.output and "\r" not in r.output, r.output
    r = run("sample", ckpts[0], "--n", "2", "--sampling-steps", "3", "--out", tmp_path / "s2", "--no-progress")
    assert r.exit_code == 0 and "sample (" not in r.output


def test_progress_bar_finish_closes_at_100(capsys):
    from flatkit.progress import Bar

    b = Bar(total=10, desc="lanczos", unit="HVP")
    b.update(7)
    b.finish("converged")
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("lanczos: 7/7 HVP (100%)") and "converged" in err
