"""Result folders of three arms (ADM, +EMA, +SAM), built once per session.

Two small ADM-UNet checkpoints (32 channels, one level, no attention, 16x16 images) in the trainer's format,
whose ``train.config`` says plain training (with EMA) or SAM (rho 0.5); random weights moved off their init so
every layer matters. Every analysis runs through the CLI in-process with tiny budgets, so the folders hold the
files the commands really write: ADM has every result (and samples + a detector-free fid.json), +EMA a subset,
+SAM all but fid.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flatkit.cli import main

EVAL = ["--n-eval", "4", "--batch-size", "8", "--device", "cpu"]
SAMP = ["--n", "4", "--sampling-steps", "3", "--no-progress", "--device", "cpu"]


def cli(*args) -> None:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output


def analyses(ckpt: Path, weights: str, out: Path, which: tuple[str, ...]) -> Path:
    a = [ckpt, "--weights", weights, "--out", out]
    if "hessian" in which:
        cli("hessian", *a, "--top-k", "1", "--trace", "--max-iter", "4", "--trace-max-hvps", "4", *EVAL)
    if "sharpness" in which:
        cli("sharpness", *a, "--ascent-steps", "1", "--restarts", "1", *EVAL)
    if "perturb" in which:
        cli("perturb", *a, "--radii", "0,0.05,0.1", "--n-directions", "2", "--worst-steps", "1", *EVAL)
    if "landscape" in which:
        cli("landscape", *a, "--points", "5", *EVAL)
    if "exposure" in which:
        cli("exposure", *a, *SAMP, "--no-delta")
    if "prior" in which:
        cli("prior", *a, *SAMP, "--shift", "0,0.5", "--scale", "1", "--n-ref", "8", "--n-eval", "4",
            "--projections", "16")
    if "quantize" in which:
        cli("quantize", *a, *SAMP, "--bits", "8,4", "--n-ref", "8", "--n-eval", "4")
    if "fid" in which:
        cli("sample", ckpt, "--weights", weights, "--out", out, *SAMP)
        cli("fid", out / "samples.npz", DATA, "--max-ref", "8", "--device", "cpu", "--no-progress",
            "--out", out)
    return out


DATA = "builtin:shapes16?n=64"


def micro_checkpoint(make_ckpt, path: Path, seed: int, **train: object) -> Path:
    """A checkpoint as the trainer writes it (raw + EMA weights, ``train.config``), but untrained and small."""
    from flatkit.train.trainer import TrainConfig

    cfg = TrainConfig(data=DATA, steps=3, ema=[0.9], **train)
    rho = float(train.get("sam_rho", 0.0))
    (path.parent / "metrics.jsonl").write_text("".join(  # the trainer's log beside it (the training figure)
        json.dumps({"step": s, "loss": 1.0 / s, "grad_norm": 2.0 / s, "sam_e_norm": rho, "lr": 1e-3, "rho": rho})
        + "\n" for s in (1, 2, 3)))
    return make_ckpt(path, "tiny", model={"attention_resolutions": "", "channel_mult": "1"}, seed=seed, noise=0.05,
                     data=DATA, others={"ema_0.9": 0.01}, step=3, ema_rates=[0.9],
                     train={"config": dataclasses.asdict(cfg)})


ALL = ("hessian", "sharpness", "perturb", "landscape", "exposure", "prior", "quantize")


@pytest.fixture(scope="session")
def result_dirs(tmp_path_factory, make_ckpt, worker_id) -> dict[str, Path]:
    """Built once per test run: under pytest-xdist the workers share one copy (the first to ask builds it under a
    file lock, the others read it; the tests only read these folders)."""
    if worker_id == "master":
        return _result_dirs(tmp_path_factory.mktemp("report"), make_ckpt)
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / "report-results"  # the parent every worker shares
    with FileLock(str(root) + ".lock"):
        if not (root / "done").is_file():
            if root.exists():
                shutil.rmtree(root)  # a build that did not finish
            root.mkdir()
            dirs = _result_dirs(root, make_ckpt)
            (root / "done").write_text(json.dumps({k: str(v) for k, v in dirs.items()}))
        return {k: Path(v) for k, v in json.loads((root / "done").read_text()).items()}


def _result_dirs(root: Path, make_ckpt) -> dict[str, Path]:
    (root / "plain").mkdir()
    (root / "sam").mkdir()
    plain = micro_checkpoint(make_ckpt, root / "plain" / "ckpt.pt", 0)
    sam = micro_checkpoint(make_ckpt, root / "sam" / "ckpt.pt", 1, sam_rho=0.5)
    return {
        "ADM": analyses(plain, "raw", root / "res" / "plain-raw", (*ALL, "fid")),
        "+EMA": analyses(plain, "ema", root / "res" / "plain-ema", ("hessian", "perturb", "exposure", "quantize")),
        "+SAM": analyses(sam, "raw", root / "res" / "sam-raw", ALL),
    }
