"""``flatkit train``: options reach the trainer, bad input is one line with exit 2, resume keeps options."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from flatkit.checkpoint import read_pt
from flatkit.cli import main
from flatkit.commands.train import parse_ema
from flatkit.errors import UsageError

POINTS = [
    "--data",
    "builtin:gaussians2d?n=64",
    "--batch-size",
    "16",
    "--log-every",
    "2",
    "--samples",
    "0",
    "--quiet",
]


def _invoke(*args):
    return CliRunner().invoke(main, ["train", *args])


def test_parse_ema():
    assert parse_ema(("0.9,0.99", "0.5")) == [0.9, 0.99, 0.5]
    assert parse_ema(("none",)) == []
    with pytest.raises(UsageError, match="ema"):
        parse_ema(("1.0",))
    with pytest.raises(UsageError, match="ema"):
        parse_ema(("abc",))


def test_train_and_resume_with_recorded_options(tmp_path):
    out = tmp_path / "run"
    r = _invoke(
        *POINTS,
        "--out",
        str(out),
        "--steps",
        "2",
        "--sam-rho",
        "0.05",
        "--sam-adaptive",
        "--ema",
        "0.9",
        "--ema",
        "0.99",
        "--swa-start",
        "1",
        "--ip-gamma",
        "0.1",
    )
    assert r.exit_code == 0, r.output
    ck = read_pt(out / "ckpt.pt")
    assert set(ck["weights"]) == {"raw", "ema_0.9", "ema_0.99", "swa"}
    cfg = ck["train"]["config"]
    assert cfg["sam_adaptive"] and cfg["sam_rho"] == 0.05 and cfg["ip_gamma"] == 0.1
    # --resume needs only --out and --steps: the other options come from the run
    r = _invoke("--out", str(out), "--resume", "--steps", "4", "--quiet")
    assert r.exit_code == 0, r.output
    assert read_pt(out / "ckpt.pt")["step"] == 4
    assert json.loads((out / "train.json").read_text())["config"]["sam_adaptive"] is True


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--preset", "nope"], "--preset"),
        (["--steps", "0"], "--steps"),
        (["--steps", "x"], "--steps"),
        (["--ema", "0"], "--ema"),
        (["--sam-rho", "-1"], "--sam-rho"),
        (["--lr", "0"], "--lr"),
        (["--batch-size", "1000"], "--batch-size"),
        (["--timestep-sampler", "nope"], "--timestep-sampler"),
        (["--swa-start", "0"], "--swa-start"),
        (["--data", "builtin:nope"], "nope"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path, args, needle):
    out = tmp_path / "bad"
    r = _invoke(*POINTS, "--out", str(out), "--steps", "2", *args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert not out.exists()


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    assert _invoke(*POINTS, "--out", str(out), "--steps", "1").exit_code == 0
    before = (out / "ckpt.pt").read_bytes()
    r = _invoke(*POINTS, "--out", str(out), "--steps", "2")
    assert r.exit_code == 2 and "--resume" in r.output
    assert (out / "ckpt.pt").read_bytes() == before
    r = _invoke(*POINTS, "--out", str(out), "--steps", "2", "--overwrite")
    assert r.exit_code == 0 and read_pt(out / "ckpt.pt")["step"] == 2
    r = _invoke("--resume", "--steps", "3")
    assert r.exit_code == 2 and "--out" in r.output


def test_a_folder_holding_other_files_is_refused_and_left_intact(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    r = _invoke(*POINTS, "--out", str(out), "--steps", "2")
    assert r.exit_code == 2 and "--out" in r.output and "notes.txt" in r.output, r.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"
