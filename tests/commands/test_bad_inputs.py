"""A corpus of bad inputs across every command (issue 13): files, data specs, options, sizes and out folders.

For each: exit code 2, no traceback, one line on stderr naming the file or the option, and every file in the
watched folder byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flatkit.cli import main

ANALYSES = ["hessian", "sharpness", "perturb", "landscape", "prior", "exposure", "quantize"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo EVIL RAN > evil_ran.txt",))


def _make_world(d: Path, ckpt: Path) -> None:
    shutil.copy(ckpt, d / "good.pt")
    (d / "empty.pt").write_bytes(b"")
    (d / "random.pt").write_bytes(np.random.default_rng(0).bytes(2000))
    (d / "text.pt").write_text("this is not a checkpoint\n")
    (d / "notes.json").write_text('{"a": 1}\n')
    np.save(d / "arr.npy", np.zeros(3))
    os.replace(d / "arr.npy", d / "array.pt")
    np.savez(d / "z.npz", a=np.zeros(3))
    os.replace(d / "z.npz", d / "archive.pt")
    (d / "trunc.pt").write_bytes((d / "good.pt").read_bytes()[:300])
    (d / "keras.pt").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    (d / "image.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (d / "gz.pt").write_bytes(b"\x1f\x8b\x08" + bytes(200))
    torch.save({"x": Evil()}, d / "evil.pt")
    torch.save({"step": 3}, d / "nostate.pt")
    torch.save({"w": torch.ones(2)}, d / "foreign_sd.pt")
    (d / "adir.pt").mkdir()
    (d / "imgs_bad").mkdir()
    (d / "imgs_bad" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (d / "imgs_empty").mkdir()
    np.savez(d / "float.npz", arr_0=np.zeros((2, 8, 8, 3), np.float32))
    np.savez(d / "twoarr.npz", a=np.zeros((2, 8, 8, 3), np.uint8), b=np.zeros(2))
    np.savez(d / "rgb8.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    (d / "occupied").mkdir()
    (d / "occupied" / "keep.txt").write_text("precious\n")
    (d / "result").mkdir()
    (d / "result" / "hessian.json").write_text("{ not json")


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_ckpt):
    d = tmp_path_factory.mktemp("bad_inputs")
    _make_world(d, shared_ckpt())
    return d


# (id, argv with {d} for the world folder, what the one line must contain)
FILES = ["empty.pt", "random.pt", "text.pt", "array.pt", "archive.pt", "trunc.pt", "keras.pt", "image.pt",
         "gz.pt", "evil.pt", "adir.pt", "missing.pt", "notes.json"]
CASES: list[tuple[str, list[str], str]] = []
for f in FILES:
    for cmd in ("info", "hessian", "sample") if f in ("random.pt", "array.pt", "evil.pt") else ("info",):
        CASES.append((f"{cmd}-{f}", [cmd, f"{{d}}/{f}", "--out", "{d}/out_new"][: 2 if cmd == "info" else 4],
                      f))
CASES += [
    ("info-nostate", ["info", "{d}/nostate.pt"], "nostate.pt"),
    ("info-foreign-sd", ["info", "{d}/foreign_sd.pt"], "foreign_sd.pt"),
    ("landscape-weights-missing", ["landscape", "{d}/good.pt", "--weights", "swa"], "--weights"),
    ("hessian-compare-missing", ["hessian", "{d}/good.pt", "--compare", "{d}/nothere.pt"], "nothere.pt"),
    ("hessian-compare-ema", ["hessian", "{d}/good.pt", "--compare", "ema"], "ema"),
    ("hessian-no-ckpt", ["hessian"], "CKPT"),
    # data specs
    ("data-prefix", ["hessian", "{d}/good.pt", "--data", "nope:x"], "--data"),
    ("data-no-colon", ["hessian", "{d}/good.pt", "--data", "shapes16"], "--data"),
    ("data-builtin", ["hessian", "{d}/good.pt", "--data", "builtin:shapes99"], "--data"),
    ("data-option", ["hessian", "{d}/good.pt", "--data", "builtin:shapes16?zoom=2"], "--data"),
    ("data-n-zero", ["hessian", "{d}/good.pt", "--data", "builtin:shapes16?n=0"], "--data"),
    ("data-n-text", ["hessian", "{d}/good.pt", "--data", "builtin:shapes16?n=abc"], "--data"),
    ("data-channels-2", ["hessian", "{d}/good.pt", "--data", "builtin:shapes16?channels=2"], "--data"),
    ("data-image-size-0", ["landscape", "{d}/good.pt", "--data", "builtin:shapes16?image_size=0"], "--data"),
    ("data-points-on-image", ["hessian", "{d}/good.pt", "--data", "builtin:gaussians2d"], "good.pt"),
    ("data-resolution", ["hessian", "{d}/good.pt", "--data", "builtin:shapes32"], "image_size=16"),
    ("data-channels", ["landscape", "{d}/good.pt", "--data", "builtin:shapes16?channels=1"], "channels=3"),
    ("data-npz-resolution", ["sharpness", "{d}/good.pt", "--data", "npz:{d}/rgb8.npz"], "good.pt"),
    ("data-npz-float", ["hessian", "{d}/good.pt", "--data", "npz:{d}/float.npz"], "float.npz"),
    ("data-npz-two", ["perturb", "{d}/good.pt", "--data", "npz:{d}/twoarr.npz"], "twoarr.npz"),
    ("data-npz-missing", ["hessian", "{d}/good.pt", "--data", "npz:{d}/none.npz"], "none.npz"),
    ("data-folder-missing", ["hessian", "{d}/good.pt", "--data", "folder:{d}/nodir"], "nodir"),
    ("data-folder-empty", ["hessian", "{d}/good.pt", "--data", "folder:{d}/imgs_empty"], "imgs_empty"),
    ("data-folder-broken", ["hessian", "{d}/good.pt", "--data", "folder:{d}/imgs_bad"], "a.png"),
    ("data-folder-file", ["hessian", "{d}/good.pt", "--data", "folder:{d}/good.pt"], "good.pt"),
    ("data-cifar-missing", ["hessian", "{d}/good.pt", "--data", "cifar10:{d}/nocifar"], "nocifar"),
    ("prior-data-points", ["prior", "{d}/good.pt", "--data", "builtin:swissroll"], "--data"),
    ("exposure-data-res", ["exposure", "{d}/good.pt", "--data", "builtin:shapes32"], "--data"),
    ("quantize-data-res", ["quantize", "{d}/good.pt", "--data", "builtin:shapes32"], "--data"),
    # options: click's own errors in one line, and flatkit's validation
    ("landscape-dims-text", ["landscape", "{d}/good.pt", "--dims", "x"], "--dims"),
    ("landscape-dims-3", ["landscape", "{d}/good.pt", "--dims", "3"], "--dims"),
    ("landscape-points-even", ["landscape", "{d}/good.pt", "--points", "4"], "--points"),
    ("landscape-points-1", ["landscape", "{d}/good.pt", "--points", "1"], "--points"),
    ("landscape-span", ["landscape", "{d}/good.pt", "--span", "1,0"], "--span"),
    ("landscape-norm", ["landscape", "{d}/good.pt", "--norm", "weird"], "--norm"),
    ("landscape-unknown", ["landscape", "{d}/good.pt", "--bogus"], "--bogus"),
    ("landscape-grid-too-big", ["landscape", "{d}/good.pt", "--dims", "1", "--points", "1000000001",
                                "--n-eval", "4"], "--points"),
    ("landscape-grid-2d-too-big", ["landscape", "{d}/good.pt", "--points", "100001", "--n-eval", "4"],
     "--points"),
    ("hessian-top-k", ["hessian", "{d}/good.pt", "--top-k", "-1"], "--top-k"),
    ("hessian-tol", ["hessian", "{d}/good.pt", "--tol", "nan"], "--tol"),
    ("hessian-trace-method", ["hessian", "{d}/good.pt", "--trace-method", "guess"], "--trace-method"),
    ("hessian-n-eval-0", ["hessian", "{d}/good.pt", "--n-eval", "0"], "--n-eval"),
    ("hessian-n-eval-huge", ["hessian", "{d}/good.pt", "--n-eval", "99999999"], "--n-eval"),
    ("hessian-batch-0", ["hessian", "{d}/good.pt", "--batch-size", "0"], "--batch-size"),
    ("sharpness-kind", ["sharpness", "{d}/good.pt", "--kind", "sharpest"], "--kind"),
    ("sharpness-eps", ["sharpness", "{d}/good.pt", "--eps", "-1"], "--eps"),
    ("perturb-radii", ["perturb", "{d}/good.pt", "--radii", "a,b"], "--radii"),
    ("perturb-radii-nan", ["perturb", "{d}/good.pt", "--radii", "0,nan"], "--radii"),
    ("prior-shift-nan", ["prior", "{d}/good.pt", "--shift", "nan"], "--shift"),
    ("prior-scale-nan", ["prior", "{d}/good.pt", "--scale", "nan"], "--scale"),
    ("prior-scale-inf", ["prior", "{d}/good.pt", "--scale", "1,inf"], "--scale"),
    ("sample-n-0", ["sample", "{d}/good.pt", "--n", "0"], "--n"),
    ("sample-sampler", ["sample", "{d}/good.pt", "--sampler", "euler"], "--sampler"),
    ("sample-steps-text", ["sample", "{d}/good.pt", "--sampling-steps", "many"], "--sampling-steps"),
    ("sample-too-many", ["sample", "{d}/good.pt", "--n", "1000000000000"], "--n"),
    ("quantize-bits", ["quantize", "{d}/good.pt", "--bits", "1"], "--bits"),
    ("exposure-eps-norm", ["exposure", "{d}/good.pt", "--eps-norm", "l7"], "--eps-norm"),
    ("fid-missing", ["fid", "{d}/none.npz", "{d}/rgb8.npz"], "none.npz"),
    ("fid-float", ["fid", "{d}/float.npz", "{d}/rgb8.npz"], "float.npz"),
    ("fid-detector-factory", ["fid", "{d}/rgb8.npz", "{d}/rgb8.npz", "--detector", "nosuchmodule_fk:make"],
     "--detector nosuchmodule_fk:make"),
    ("fid-detector-dir", ["fid", "{d}/rgb8.npz", "{d}/rgb8.npz", "--detector", "{d}/adir.pt"], "--detector"),
    ("fid-detector-junk", ["fid", "{d}/rgb8.npz", "{d}/rgb8.npz", "--detector", "{d}/random.pt"], "random.pt"),
    ("fid-detector-name", ["fid", "{d}/rgb8.npz", "{d}/rgb8.npz", "--detector", "torch-fid"], "--detector"),
    ("fid-samples-folder-broken", ["fid", "{d}/imgs_bad", "{d}/rgb8.npz"], "a.png"),
    ("fid-samples-folder-empty", ["fid", "{d}/imgs_empty", "{d}/rgb8.npz"], "imgs_empty"),
    # a Hugging Face repo id absent from the local cache: nothing is downloaded without --download
    ("info-hub-absent", ["info", "nobody-flatkit/no-such-model"], "nobody-flatkit/no-such-model"),
    ("hessian-hub-absent", ["hessian", "nobody-flatkit/no-such-model@v2", "--out", "{d}/out_new"], "--download"),
    ("info-hub-bad-id", ["info", "hf://not a repo"], "hf://"),
    ("threads-text", ["--threads", "x", "info", "{d}/good.pt"], "--threads"),
    ("no-such-command", ["frobnicate"], "frobnicate"),
    # out folders
    ("train-preset", ["train", "--preset", "huge", "--out", "{d}/occupied"], "--preset"),
    ("train-data-points", ["train", "--preset", "tiny", "--data", "builtin:nothing", "--out", "{d}/occupied"],
     "--data"),
    ("train-holdout-zero", ["train", "--holdout", "0", "--out", "{d}/occupied"], "--holdout"),
    ("train-holdout-fraction", ["train", "--holdout", "0.7", "--out", "{d}/occupied"], "--holdout"),
    ("train-holdout-text", ["train", "--holdout", "ten", "--out", "{d}/occupied"], "--holdout"),
    ("train-holdout-nan", ["train", "--holdout", "nan", "--out", "{d}/occupied"], "--holdout"),
    ("train-holdout-too-many", ["train", "--data", "builtin:gaussians2d?n=64", "--holdout", "40", "--out",
                                "{d}/occupied"], "--holdout"),
    ("hessian-bank-holdout", ["hessian", "{d}/good.pt", "--bank", "holdout", "--out", "{d}/out_new"], "--bank"),
    ("demo-out-occupied", ["demo", "--budget", "smoke", "--out", "{d}/occupied"], "occupied"),
    ("figures-corrupt", ["figures", "{d}/result", "--out", "{d}/figs"], "hessian.json"),
    ("report-nothing", ["report", "{d}/imgs_empty", "--out", "{d}/rep"], "imgs_empty"),
    ("track-no-run-dir", ["track", "--out", "{d}/out_new"], "RUN_DIR"),
    ("track-no-checkpoints", ["track", "{d}/imgs_empty", "--out", "{d}/out_new"], "imgs_empty"),
    ("track-file-not-dir", ["track", "{d}/good.pt", "--out", "{d}/out_new"], "good.pt"),
    ("track-unknown-measure", ["track", "{d}/imgs_empty", "--measures", "hessian,curvature"], "--measures"),
    ("track-measure-twice", ["track", "{d}/imgs_empty", "--measures", "hessian,hessian"], "--measures"),
    ("track-option-of-another-measure", ["track", "{d}/imgs_empty", "--measures", "sharpness", "--top-k", "3"],
     "--top-k"),
    ("track-repeats-zero", ["track", "{d}/imgs_empty", "--repeats", "0"], "--repeats"),
    ("track-bad-measure-option", ["track", "{d}/imgs_empty", "--kind", "sharpest"], "--kind"),
]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(world, argv, needle, monkeypatch):
    monkeypatch.chdir(world)
    args = [a.replace("{d}", str(world)) for a in argv]
    before = _snapshot(world)
    r = CliRunner().invoke(main, args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "error" in lines[0], lines[0]
    assert _snapshot(world) == before
    assert not (world / "evil_ran.txt").exists()
