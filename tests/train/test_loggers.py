"""Watching training: ``--log jsonl|csv|tensorboard`` and ``--sample-every``.

Oracles: metrics.csv equals metrics.jsonl value for value (the CSV holds each float's repr); TensorBoard's scalars
are the jsonl values (as float32), read back with TensorBoard's own EventAccumulator when it is installed and
through a recording stand-in for SummaryWriter always; the EMA / SWA bookkeeping against the checkpoint's weights
and the warm-up formula; the timestep quartiles against hand-made losses. A resume after a "kill" (the last
checkpoint older than the last logged step) appends without duplicating a step in any of the three.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flatkit.checkpoint import read_pt
from flatkit.cli import main
from flatkit.errors import UsageError
from flatkit.train import loggers
from flatkit.train.loggers import check_log, parse_log, tensorboard_tag
from flatkit.train.metrics import MetricsWindow
from flatkit.train.trainer import TrainConfig, train

CFG = TrainConfig(
    data="builtin:gaussians2d?n=64", preset="mlp", steps=4, batch_size=16, ema=[0.9], swa_start=2, log_every=1,
    save_every=2, keep_checkpoints=True, sample_count=8, sample_steps=4, sample_every=2,
    log=["jsonl", "csv", "tensorboard"],
)
WALL = ("wall_time", "steps_per_s")
REPO = Path(__file__).resolve().parents[2]


def test_parse_log():
    assert parse_log("csv,tensorboard") == ["jsonl", "csv", "tensorboard"]
    assert parse_log(("tensorboard", "csv,jsonl", "csv")) == ["jsonl", "csv", "tensorboard"]
    assert parse_log(None) == parse_log("") == ["jsonl"]
    with pytest.raises(UsageError, match=r"log: unknown logger 'wandb'"):
        parse_log("csv,wandb")


def test_missing_tensorboard_is_refused(monkeypatch):
    monkeypatch.setattr(loggers, "tensorboard_available", lambda: False)
    assert check_log(["csv"]) == ["jsonl", "csv"]
    with pytest.raises(UsageError, match=r"pip install 'flatkit\[tensorboard\]'"):
        check_log(["tensorboard"])


def test_quartiles_of_t():
    w = MetricsWindow()
    w.add(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.tensor([0, 250, 500, 999, 249]), 1000, 0.0, 0.0, 1.0)
    s = w.summary()
    assert [s[f"loss_q{k}"] for k in range(4)] == [3.0, 2.0, 3.0, 4.0]  # q0 holds t = 0 and t = 249
    assert s["loss"] == 3.0


def test_tags():
    assert tensorboard_tag("loss") == "loss/mean" and tensorboard_tag("loss_q2") == "loss/q2"
    assert tensorboard_tag("ema_0.9_rate") == "averaging/ema_0.9_rate" and tensorboard_tag("rho") == "sam/rho"
    assert tensorboard_tag("holdout_loss") == "loss/holdout_loss" and tensorboard_tag("xyz") == "metrics/xyz"


class RecordingWriter:
    """Stands in for SummaryWriter: records (file, purge_step) and what each file was given, and passes it all on
    to TensorBoard's own writer when tensorboard is installed (``real=True``)."""

    files: list[dict] = []
    real = False

    def __init__(self, log_dir, purge_step=None):
        self.rec = {"log_dir": log_dir, "purge_step": purge_step, "scalars": [], "images": [], "closed": False}
        RecordingWriter.files.append(self.rec)
        self.writer = None
        if RecordingWriter.real:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step)

    def add_scalar(self, tag, value, step):
        self.rec["scalars"].append((tag, step, value))
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def add_image(self, tag, img, step, dataformats="CHW"):
        assert img.dtype == np.uint8 and dataformats == "HWC" and img.shape[2] == 3
        self.rec["images"].append((tag, step))
        if self.writer is not None:
            self.writer.add_image(tag, img, step, dataformats=dataformats)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        self.rec["closed"] = True
        if self.writer is not None:
            self.writer.close()


@pytest.fixture
def recording(monkeypatch):
    RecordingWriter.files = []
    RecordingWriter.real = loggers.tensorboard_available()
    monkeypatch.setattr(loggers, "summary_writer_class", lambda: RecordingWriter)
    return RecordingWriter


def _records(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def _killed_and_resumed(out):
    """Train 4 steps, then put the step-2 checkpoint back (a kill after step 4 that lost the last save) and resume
    to step 4: steps 3 and 4 are logged twice, the second time after the resume."""
    train(CFG, out, progress=False)
    before = _records(out)
    shutil.copy(out / "ckpt_2.pt", out / "ckpt.pt")
    train(CFG, out, resume=True, progress=False)
    return before, _records(out)


def _strip(recs):
    return [{k: v for k, v in r.items() if k not in WALL} for r in recs]


def _check_jsonl_csv_and_bookkeeping(out, before, after):
    assert [r["step"] for r in after] == [1, 2, 3, 4]
    assert _strip(after) == _strip(before)  # the resumed steps repeat the same numbers
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for rec, row in zip(after, rows, strict=True):
        assert set(row) == set(rec)
        for k, v in rec.items():
            assert (float(row[k]) if row[k] != "" else None) == v, k
    # EMA / SWA bookkeeping against the weights of the final checkpoint and the warm-up formula
    ck = read_pt(out / "ckpt.pt")
    raw, ema, swa = ck["weights"]["raw"], ck["weights"]["ema_0.9"], ck["weights"]["swa"]

    def dist(a):
        return float(torch.sqrt(sum(((a[k].double() - raw[k].double()) ** 2).sum() for k in raw)))

    last = after[-1]
    assert [r["ema_0.9_rate"] for r in after] == [min(0.9, (1 + n) / (10 + n)) for n in (1, 2, 3, 4)]
    assert last["ema_0.9_dist"] == pytest.approx(dist(ema), rel=1e-12)
    assert [r["swa_n"] for r in after] == [0, 1, 2, 3] and after[0]["swa_dist"] is None
    assert last["swa_dist"] == pytest.approx(dist(swa), rel=1e-12)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]


def test_resume_appends_without_duplicates(tmp_path, recording):
    out = tmp_path / "run"
    before, after = _killed_and_resumed(out)
    _check_jsonl_csv_and_bookkeeping(out, before, after)
    first, second = recording.files
    assert first["purge_step"] is None and second["purge_step"] == 3 and first["closed"] and second["closed"]
    assert first["images"] == [("samples", 2), ("samples", 4)] and second["images"] == [("samples", 4)]
    # what TensorBoard shows: the first file's events before the purge step, then the second file's
    seen = [e for e in first["scalars"] if e[1] < 3] + second["scalars"]
    for key in ("loss", "loss_q0", "grad_norm", "lr", "rho", "sam_e_norm", "ema_0.9_dist", "swa_n"):
        got = [(s, v) for tag, s, v in seen if tag == tensorboard_tag(key)]
        assert got == [(r["step"], float(r[key])) for r in after if r[key] is not None], key
    if not recording.real:
        return
    # ... and what TensorBoard itself reads back from the two event files
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    for key in ("loss", "loss_q3", "grad_norm", "lr", "ema_0.9_rate", "swa_dist"):
        events = acc.Scalars(tensorboard_tag(key))
        want = [(r["step"], r[key]) for r in after if r[key] is not None]
        assert [e.step for e in events] == [s for s, _ in want], key
        np.testing.assert_allclose([e.value for e in events], [v for _, v in want], rtol=1e-6)
    images = acc.Images("samples")
    assert [e.step for e in images] == [2, 4] and images[0].width > 100


def test_cli_log_and_sample_every(tmp_path, recording):
    out = tmp_path / "run"
    args = ["train", "--data", "builtin:gaussians2d?n=64", "--batch-size", "16", "--steps", "3", "--log-every", "1",
            "--samples", "4", "--sample-steps", "3", "--sample-every", "3", "--log", "csv", "--log", "tensorboard",
            "--quiet", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"wrote {out / 'metrics.csv'}" in r.output and "tensorboard --logdir" in r.output
    assert (out / "samples" / "step_0000003.png").is_file() and RecordingWriter.files[0]["images"] == [("samples", 3)]
    assert read_pt(out / "ckpt.pt")["train"]["config"]["log"] == ["jsonl", "csv", "tensorboard"]
    # a resume takes the recorded --log and --sample-every; --log may change on a resume
    r = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--steps", "4", "--quiet", "--log", "csv"])
    assert r.exit_code == 0, r.output
    assert len(RecordingWriter.files) == 1 and len((out / "metrics.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--log", "csv,wandb"], "--log: unknown logger 'wandb'"),
        (["--log", "tensorboard"], "pip install 'flatkit[tensorboard]'"),
        (["--sample-every", "5", "--samples", "0"], "--sample-every 5: needs --samples N > 0"),
    ],
)
def test_bad_watch_options_exit_2_before_writing(tmp_path, monkeypatch, extra, needle):
    monkeypatch.setattr(loggers, "tensorboard_available", lambda: False)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--data", "builtin:gaussians2d?n=64", "--steps", "2", "--quiet",
                                  "--out", str(out), *extra])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert not out.exists()


def test_custom_logger_from_the_api(tmp_path):
    class Collect(loggers.Logger):
        def open(self, out, resume_step):
            self.steps, self.images, self.closed = [], [], False

        def log_metrics(self, record):
            self.steps.append(record["step"])

        def log_image(self, step, tag, image):
            self.images.append((step, tag, image.shape[2]))

        def close(self):
            self.closed = True

    c = Collect()
    cfg = dataclasses.replace(CFG, steps=2, log=["jsonl"], keep_checkpoints=False)
    train(cfg, tmp_path / "run", progress=False, loggers=[c])
    assert c.steps == [1, 2] and c.images == [(2, "samples", 3)] and c.closed
    assert not (tmp_path / "run" / "metrics.csv").exists() and not (tmp_path / "run" / "tensorboard").exists()


def _section(page, title):
    text = (REPO / "docs" / page).read_text()
    start = text.index(f"## {title}\n")
    nxt = text.find("\n## ", start + 5)
    return text[start:] if nxt < 0 else text[start:nxt]


def test_docs_watching_training(tmp_path, monkeypatch):
    """docs/training.md "Watching training": its flatkit line parses as written (every option known, every value
    accepted: the run itself is the CLI test above), and its python block runs."""
    from flatkit.commands.train import command

    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```(bash|python)\n(.*?)^```", _section("training.md", "Watching training"),
                        flags=re.M | re.S)
    lines = [ln for lang, body in blocks if lang == "bash" for ln in body.splitlines() if ln.startswith("flatkit ")]
    assert len(lines) == 1 and "--log csv,tensorboard" in lines[0] and "--sample-every" in lines[0]
    ctx = command.make_context("train", shlex.split(lines[0])[2:])
    assert ctx.params["sample_every"] == 100 and parse_log(ctx.params["log"]) == ["jsonl", "csv", "tensorboard"]
    (code,) = [body for lang, body in blocks if lang == "python"]
    exec(compile(code, "training.md", "exec"), {"__name__": "__main__"})  # noqa: S102
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "runs/watch-api/metrics.csv"))] == [20, 40]


def test_tensorboard_is_an_extra_not_a_dependency():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any("tensorboard" in d for d in project["dependencies"])
    assert [d.split(">")[0] for d in project["optional-dependencies"]["tensorboard"]] == ["tensorboard"]
    assert "import tensorboard" not in (REPO / "flatkit" / "train" / "trainer.py").read_text()
