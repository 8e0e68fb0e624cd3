"""End to end: ``flatkit landscape / perturb / sharpness`` on a small random checkpoint (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from flatkit.cli import main

SMALL = ["--n-eval", "8", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def ckpts(shared_ckpt) -> dict[str, str]:
    # the ADM UNet for the default run; small MLP denoisers (2-D data) where only the plumbing is under test
    return {"unet": str(shared_ckpt("tiny")),
            "a": str(shared_ckpt("mlp", data="builtin:gaussians2d")),
            "b": str(shared_ckpt("mlp", seed=1, data="builtin:gaussians2d"))}


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(r, needle: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.output, r.output


def test_landscape_defaults_write_every_file_and_replot(ckpts, tmp_path):
    out = tmp_path / "l"
    before = Path(ckpts["unet"]).read_bytes()
    r = run("landscape", ckpts["unet"], "--points", "3", *SMALL, "--out", out)
    assert r.exit_code == 0, r.output
    for f in ("landscape.json", "landscape.npz", "landscape.png", "landscape.pdf", "landscape.html"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    js = json.loads((out / "landscape.json").read_text())
    assert js["dims"] == 2 and js["directions"] == "random" and js["norm"] == "filter" and js["complete"]
    assert js["meta"]["checkpoint_sha256"] and js["meta"]["config"]["seed"] == 0
    assert js["meta"]["objective"]["n"] == 8
    html = (out / "landscape.html").read_text()
    assert 'src="http' not in html and len(html) > 1_000_000  # plotly.js inlined, no CDN: works offline
    z = np.load(out / "landscape.npz")
    assert z["values"].shape == (1, 3, 3) and np.isfinite(z["values"]).all()
    assert Path(ckpts["unet"]).read_bytes() == before
    # --replot reads only the result files
    (out / "landscape.png").unlink()
    r = run("landscape", "--replot", out)
    assert r.exit_code == 0, r.output
    assert (out / "landscape.png").is_file()


def test_landscape_compare_and_interp(ckpts, tmp_path):
    r = run("landscape", ckpts["a"], "--compare", ckpts["b"], "--dims", "1", "--points", "5", *SMALL,
            "--out", tmp_path / "cmp")
    assert r.exit_code == 0, r.output
    z = np.load(tmp_path / "cmp" / "landscape.npz")
    assert z["values"].shape == (2, 5)
    r = run("landscape", ckpts["a"], "--compare", ckpts["b"], "--directions", "interp", "--dims", "1",
            "--points", "5", *SMALL, "--out", tmp_path / "int")
    assert r.exit_code == 0, r.output
    js = json.loads((tmp_path / "int" / "landscape.json").read_text())
    assert js["coords_a"] == [-0.5, 0.0, 0.5, 1.0, 1.5] and len(js["marks"]) == 2


def test_landscape_resume_refuses_another_configuration(ckpts, tmp_path):
    out = tmp_path / "r"
    assert run("landscape", ckpts["a"], "--dims", "1", "--points", "3", *SMALL, "--out", out).exit_code == 0
    r = run("landscape", ckpts["a"], "--dims", "1", "--points", "5", *SMALL, "--out", out, "--resume")
    _one_line_error(r, "--resume")


@pytest.mark.parametrize("args, needle", [
    (["--points", "0"], "--points"), (["--points", "-2"], "--points"), (["--points", "4"], "--points"),
    (["--span", "1,1"], "--span"), (["--span", "2,-1"], "--span"), (["--span", "abc"], "--span"),
    (["--directions", "interp"], "--directions"), (["--resume"], "--resume"),
])
def test_landscape_bad_input(ckpts, tmp_path, args, needle):
    _one_line_error(run("landscape", ckpts["a"], "--dims", "1", *SMALL, *args), needle)


def test_interpolation_between_architectures_is_refused(ckpts):
    r = run("landscape", ckpts["unet"], "--compare", ckpts["a"], "--directions", "interp", "--dims", "1",
            "--points", "3", "--data", "builtin:shapes16", *SMALL)
    _one_line_error(r, "--compare")


def test_replot_of_a_folder_without_results(tmp_path):
    _one_line_error(run("landscape", "--replot", tmp_path), str(tmp_path))


def test_perturb_command(ckpts, tmp_path):
    out = tmp_path / "p"
    r = run("perturb", ckpts["a"], "--compare", ckpts["b"], "--radii", "0,0.05,0.1", "--n-directions", "2",
            "--worst-steps", "1", *SMALL, "--out", out)
    assert r.exit_code == 0, r.output
    for f in ("perturb.json", "perturb.npz", "perturb.png", "perturb.pdf"):
        assert (out / f).is_file(), f
    js = json.loads((out / "perturb.json").read_text())
    assert js["norm"] == "filter" and np.asarray(js["mean"]).shape == (2, 3)
    assert js["mean"][0][0] == 0.0 and js["worst"][0][2] >= js["mean"][0][2]
    _one_line_error(run("perturb", ckpts["a"], "--radii", "0,-1", *SMALL), "--radii")


def test_sharpness_command(ckpts, tmp_path):
    for kind, extra in (("keskar", ["--ascent-steps", "2", "--restarts", "1"]), ("average", ["--samples", "3"])):
        out = tmp_path / kind
        r = run("sharpness", ckpts["a"], "--kind", kind, *extra, *SMALL, "--out", out)
        assert r.exit_code == 0, r.output
        js = json.loads((out / "sharpness.json").read_text())
        assert js["kind"] == kind and js["value"][0] is not None and js["meta"]["checkpoint_sha256"]
        assert (out / "sharpness.png").is_file()
    out = tmp_path / "both"
    r = run("sharpness", ckpts["a"], "--compare", ckpts["b"], "--labels", "A,B", "--kind", "average",
            "--samples", "3", *SMALL, "--out", out)
    assert r.exit_code == 0, r.output
    js = json.loads((out / "sharpness.json").read_text())
    assert js["labels"] == ["A", "B"] and len(js["value"]) == 2 and len(js["ci_low"]) == 2
    assert [c["label"] for c in js["meta"]["checkpoints"]] == ["A", "B"]
    _one_line_error(run("sharpness", ckpts["a"], "--kind", "l2", "--eps", "-1", *SMALL), "--eps")
