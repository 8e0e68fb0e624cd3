"""``flatkit track``: every saved checkpoint of training runs measured on one bank, one result per (run, weights,
step), resumable point by point; ``flatkit figures`` / ``report`` given the folder draw the trajectories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from flatkit.cli import main
from flatkit.results import file_sha256

STEPS = (10, 20)


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_ckpt) -> list[Path]:
    """Two training folders a, b (different seeds), each with ckpt_10.pt, ckpt_20.pt and the final ckpt.pt (step
    20, as flatkit train --keep-checkpoints leaves it); raw and EMA weights differ."""
    root = tmp_path_factory.mktemp("track_runs")
    out = []
    for name, seed in (("a", 0), ("b", 1)):
        d = root / name
        for step in STEPS:
            make_ckpt(d / f"ckpt_{step}.pt", "mlp", seed=seed, noise=0.05, noise_seed=100 * seed + step,
                      data="builtin:gaussians2d", step=step, others={"ema": 0.02})
        shutil.copyfile(d / "ckpt_20.pt", d / "ckpt.pt")
        out.append(d)
    return out


ARGS = ["--measures", "hessian,sharpness,quantize", "--weights", "raw,ema", "--n-eval", "8", "--batch-size", "8",
        "--top-k", "1", "--trace", "--trace-max-hvps", "4", "--restarts", "1", "--ascent-steps", "1", "--n", "4",
        "--sampling-steps", "2", "--n-ref", "8", "--projections", "8", "--bits", "4", "--device", "cpu",
        "--no-progress"]


@pytest.fixture(scope="module")
def tracked(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("track_out") / "t"
    r = run("track", *runs, *ARGS, "--out", out)
    assert r.exit_code == 0, r.output
    return out


def _points(folder: Path) -> list[dict]:
    return json.loads((folder / "track.json").read_text())["points"]


def test_one_result_per_run_weights_and_step(tracked, runs):
    idx = json.loads((tracked / "track.json").read_text())
    assert idx["complete"] and idx["measures"] == ["hessian", "sharpness", "quantize"]
    got = [(p["run"], p["weights"], p["step"]) for p in idx["points"]]
    assert got == [(r, w, s) for r in ("a", "b") for w in ("raw", "ema") for s in STEPS]  # ckpt.pt = ckpt_20.pt
    for p in idx["points"]:
        folder = tracked / p["folder"]
        assert folder == tracked / p["run"] / p["weights"] / f"step_{p['step']}"
        ckpt = Path(p["checkpoint"])
        assert ckpt.name == f"ckpt_{p['step']}.pt" and p["checkpoint_sha256"] == file_sha256(ckpt)
        for name in ("hessian", "sharpness", "quantize"):
            meta = json.loads((folder / f"{name}.json").read_text())["meta"]
            ck = meta["checkpoints"][0]
            assert (ck["step"], ck["weights"], ck["checkpoint_sha256"]) == (p["step"], p["weights"],
                                                                             p["checkpoint_sha256"])
            assert meta["track"]["step"] == p["step"]
        sc = p["scalars"]
        assert all(sc[k] is not None for k in ("lambda_max", "trace", "sharpness", "quantize_drift_4bit", "loss"))
    assert (tracked / "track.png").is_file()
    lam = {(p["run"], p["weights"], p["step"]): p["scalars"]["lambda_max"] for p in idx["points"]}
    assert len(set(lam.values())) == len(lam)  # every checkpoint and weights choice is another model


def test_every_point_and_measure_is_on_the_same_bank(tracked):
    banks = set()
    for p in _points(tracked):
        folder = tracked / p["folder"]
        banks.add(p["bank_sha256"])
        banks.add(json.loads((folder / "hessian.json").read_text())["meta"]["objective"]["bank_sha256"])
        banks.add(json.loads((folder / "sharpness.json").read_text())["meta"]["objective"][0]["bank_sha256"])
        banks.add(json.loads((folder / "quantize.json").read_text())["meta"]["objective"]["bank_sha256"])
    assert len(banks) == 1 and None not in banks


def test_a_point_equals_the_analysis_of_its_checkpoint_alone(tracked, runs):
    """Oracle: the track's numbers at (b, ema, step 10) are those of flatkit.hessian / sharpness on that
    checkpoint alone, with an objective of the same bank settings."""
    from flatkit import load
    from flatkit.analyses.hessian import hessian
    from flatkit.analyses.sharpness import sharpness
    from flatkit.objective import Objective
    from flatkit.settings import HessianSettings, SharpnessSettings

    p = next(p for p in _points(tracked) if (p["run"], p["weights"], p["step"]) == ("b", "ema", 10))
    r = load(str(runs[1] / "ckpt_10.pt"), weights="ema", device="cpu")
    obj = Objective(r, data="builtin:gaussians2d", n=8, seed=0, batch_size=8)
    bank = dict(data="builtin:gaussians2d", n_eval=8, batch_size=8)
    h = hessian(obj, settings=HessianSettings(**bank, top_k=1, trace=True, trace_max_hvps=4))
    s = sharpness(obj, settings=SharpnessSettings(**bank, restarts=1, ascent_steps=1))
    assert p["scalars"]["lambda_max"] == pytest.approx(h.eigenvalues[0][0], rel=1e-9)
    assert p["scalars"]["trace"] == pytest.approx(h.trace[0], rel=1e-6)  # float32 HVPs, batched or looped
    assert p["scalars"]["sharpness"] == pytest.approx(s.value[0], rel=1e-9)
    assert p["bank_sha256"] == obj.config.bank_sha256


def test_resume_recomputes_only_the_missing_result_with_the_same_numbers(tracked, runs, tmp_path):
    out = tmp_path / "t"
    shutil.copytree(tracked, out)
    gone = out / "b" / "ema" / "step_20" / "sharpness.json"
    before = json.loads(gone.read_text())["value"]
    gone.unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "track.json"}
    r = run("track", *runs, *ARGS, "--out", out)
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output and r.output.count("(reused)") == 7
    assert json.loads(gone.read_text())["value"] == before
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing else was rewritten
    assert _points(out) == _points(tracked)
    r = run("track", *runs, *ARGS, "--out", out)  # finished: reused as a whole
    assert r.exit_code == 0 and "reusing" in r.output


def test_other_settings_in_the_same_folder_are_refused(tracked, runs, tmp_path):
    out = tmp_path / "t"
    shutil.copytree(tracked, out)
    r = run("track", *runs, *[a if a != "8" else "6" for a in ARGS], "--out", out)
    assert r.exit_code == 2 and "--out" in r.output and "other settings" in r.output


def test_repeats_give_every_point_its_interval_and_the_figure_its_bands(tracked, runs, tmp_path, monkeypatch):
    """--repeats 2: each measure at each checkpoint is repeated (not the whole track); a point's scalars stay repeat
    0's, which is the run without --repeats bit for bit; its intervals are those of its result files; track.png
    and flatkit figures' trajectory.png draw a band per line; a rerun resumes and another R is refused."""
    from flatkit.analyses.hessian import HessianResult
    from flatkit.analyses.track import TrackResult

    drawn = []
    monkeypatch.setattr("matplotlib.axes.Axes.fill_between", lambda self, x, lo, hi, **kw: drawn.append(len(x)))
    out = tmp_path / "rep"
    args = [runs[0], "--measures", "hessian,sharpness,perturb,landscape", "--weights", "raw", "--n-eval", "8",
            "--batch-size", "8", "--top-k", "1", "--restarts", "1", "--ascent-steps", "1", "--radii", "0,0.1",
            "--n-directions", "2", "--worst-steps", "1", "--points", "3", "--device", "cpu", "--no-progress"]
    r = run("track", *args, "--repeats", "2", "--out", out)
    assert r.exit_code == 0, r.output
    assert r.output.count("mean ± se over 2 repeats") == 2 and "λ_max" in r.output
    plain = {p["step"]: p["scalars"] for p in _points(tracked) if (p["run"], p["weights"]) == ("a", "raw")}
    points = _points(out)
    assert [p["step"] for p in points] == list(STEPS)
    for p in points:
        folder = out / p["folder"]
        assert sorted(q.name for q in folder.iterdir()) == ["hessian.json", "hessian.npz", "landscape.json",
                                                             "landscape.npz", "perturb.json", "perturb.npz",
                                                             "sharpness.json"]
        h = HessianResult.load(folder)
        assert h.meta["repeats"]["R"] == 2 and [x["seed"] for x in h.repeats] == [0, 1000003]
        assert p["scalars"]["lambda_max"] == plain[p["step"]]["lambda_max"]  # repeat 0 = no --repeats
        assert p["scalars"]["sharpness"] == plain[p["step"]]["sharpness"]
        iv = p["intervals"]
        assert set(iv) == {"lambda_max", "sharpness", "loss", "perturb_random", "perturb_worst", "landscape_mean_dl"}
        assert all(v["n"] == 2 for v in iv.values())
        lam = [x["lambda_max"][0] for x in h.repeats]
        assert iv["lambda_max"]["mean"] == pytest.approx(np.mean(lam), rel=1e-12)
        assert iv["lambda_max"]["se"] == pytest.approx(np.std(lam, ddof=1) / np.sqrt(2), rel=1e-9)
        assert iv["lambda_max"]["lo"] < iv["lambda_max"]["mean"] < iv["lambda_max"]["hi"]
        assert lam[0] != lam[1]  # another bank
    res = TrackResult.load(out)
    steps, mean, lo, hi = res.bands("lambda_max")[("a", "raw")]
    assert list(steps) == list(STEPS) and np.all(lo < mean) and np.all(mean < hi) and res.n_repeats == 2
    assert TrackResult.load(tracked).bands("lambda_max") == {}
    # track.png: λ_max, ε-sharpness, ΔL random and worst, landscape ΔL, L(θ): a band each, over both steps
    assert drawn == [2] * 6 and (out / "track.png").is_file()
    # flatkit figures of the folder: trajectory.png draws the same means and bands
    r = run("figures", out, "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    traj = json.loads((tmp_path / "f" / "figures.json").read_text())["figures"]["trajectory"]["data"]
    assert set(traj) == {"lambda_max", "sharpness", "perturb_random", "perturb_worst", "landscape_mean_dl", "loss"}
    for scalar, data in traj.items():
        (line,) = data.values()
        assert line["steps"] == list(STEPS)
        for key in ("mean", "lo", "hi"):
            got = line["values" if key == "mean" else key]
            assert got == pytest.approx([p["intervals"][scalar][key] for p in points], rel=1e-12), (scalar, key)
    r = run("track", *args, "--repeats", "2", "--out", out)
    assert r.exit_code == 0 and "reusing" in r.output
    r = run("track", *args, "--repeats", "3", "--out", out)
    assert r.exit_code == 2 and "other settings" in r.output


def test_api_progress_false_silences_the_measures_too(runs, tmp_path, capsys, monkeypatch):
    from flatkit import progress
    from flatkit.analyses.track import track

    monkeypatch.setitem(progress._STATE, "enabled", True)  # as in a fresh Python session (CLI tests turn it off)
    kw = dict(measures=("hessian",), n_eval=8, batch_size=8, device="cpu")
    track([runs[0]], tmp_path / "quiet", **kw)
    assert "HVP" not in capsys.readouterr().err and progress.enabled()  # restored afterwards
    track([runs[0]], tmp_path / "loud", progress=True, **kw)
    assert "top-1 eigenvalues (Lanczos)" in capsys.readouterr().err


def test_figures_of_a_track_folder_draw_the_trajectories(tracked, tmp_path):
    r = run("figures", tracked, "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    fj = json.loads((tmp_path / "f" / "figures.json").read_text())
    assert "trajectory" in fj["figures"] and (tmp_path / "f" / "trajectory.png").is_file()
    traj = fj["figures"]["trajectory"]["data"]["lambda_max"]
    assert sorted(traj) == ["a", "a:ema", "b", "b:ema"]
    assert traj["b:ema"]["steps"] == list(STEPS)
    lam = {(p["run"] if p["weights"] == "raw" else f"{p['run']}:{p['weights']}", p["step"]):
           p["scalars"]["lambda_max"] for p in _points(tracked)}
    assert traj["b:ema"]["values"] == pytest.approx([lam[("b:ema", s)] for s in STEPS])
    labels = {x["label"] for x in fj["runs"]}
    assert labels == {f"{r} step {s}" for r in ("a", "a:ema", "b", "b:ema") for s in STEPS}
    assert sum("checkpoints of one run" in n for n in fj["notes"]) == 4
    assert "note:" in r.output


def test_results_of_one_run_at_several_steps_in_separate_folders(tracked, tmp_path):
    """Not only a track folder: result folders of one run's checkpoints at several steps are labelled by step
    (never silently merged) and drawn against the step."""
    dirs = [tracked / "a" / "raw" / f"step_{s}" for s in STEPS]
    r = run("report", *dirs, "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    fj = json.loads((tmp_path / "r" / "figures" / "figures.json").read_text())
    assert {x["label"] for x in fj["runs"]} == {"a step 10", "a step 20"}
    assert "trajectory" in fj["figures"] and "checkpoints of one run" in r.output
    assert "figures/trajectory.png" in (tmp_path / "r" / "report.md").read_text()


def test_checkpoints_of_one_run_in_one_result_are_rows_by_step(runs, tmp_path):
    """``flatkit hessian ckpt_10.pt ckpt_20.pt`` of one run: two rows labelled by step and a trajectory, not one
    point."""
    r = run("hessian", runs[0] / "ckpt_10.pt", runs[0] / "ckpt_20.pt", "--n-eval", "8", "--batch-size", "8",
            "--tol", "0.1", "--device", "cpu", "--no-progress", "--out", tmp_path / "h")
    assert r.exit_code == 0, r.output
    r = run("figures", tmp_path / "h", "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    fj = json.loads((tmp_path / "f" / "figures.json").read_text())
    assert [x["label"] for x in fj["runs"]] == ["a step 10", "a step 20"]
    assert fj["figures"]["trajectory"]["data"]["lambda_max"]["a"]["steps"] == list(STEPS)
    assert any("2 checkpoints of one run" in n for n in fj["notes"])


def test_a_checkpoint_without_the_weights_is_skipped_with_a_line(tmp_path, make_ckpt):
    """SWA weights exist only from --swa-start on: earlier checkpoints are listed as skipped, not fatal."""
    make_ckpt(tmp_path / "c" / "ckpt_10.pt", "mlp", data="builtin:gaussians2d", step=10)
    make_ckpt(tmp_path / "c" / "ckpt_20.pt", "mlp", data="builtin:gaussians2d", step=20, others={"swa": 0.01})
    r = run("track", tmp_path / "c", "--measures", "hessian", "--weights", "raw,swa", "--n-eval", "8", "--tol", "0.1",
            "--device", "cpu", "--no-progress", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    assert "c:swa step 10: skipped" in r.output
    pts = {(p["weights"], p["step"]): p for p in _points(tmp_path / "t")}
    assert pts[("swa", 10)]["missing"] and pts[("swa", 10)]["scalars"] == {}
    assert pts[("swa", 20)]["scalars"]["lambda_max"] is not None
    r = run("figures", tmp_path / "t", "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    fj = json.loads((tmp_path / "f" / "figures.json").read_text())
    assert len(fj["runs"]) == 3


def test_run_checkpoints_adds_a_final_checkpoint_of_another_step(tmp_path, make_ckpt):
    from flatkit.analyses.track import run_checkpoints
    from flatkit.errors import UsageError

    make_ckpt(tmp_path / "c" / "ckpt_5.pt", "mlp", data="builtin:gaussians2d", step=5)
    make_ckpt(tmp_path / "c" / "ckpt.pt", "mlp", data="builtin:gaussians2d", step=7)
    assert [(c.step, c.path.name) for c in run_checkpoints(tmp_path / "c")] == [(5, "ckpt_5.pt"), (7, "ckpt.pt")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no checkpoints"):
        run_checkpoints(tmp_path / "empty")


def test_plot_series_log_scale_and_labels(tmp_path):
    from flatkit.plots.track import line_label, plot_series

    assert line_label("+SAM", "ema") == "+SAM+EMA" and line_label("ADM", "raw") == "ADM"
    assert line_label("ADM", "swa") == "+SWA" and line_label("myrun", "ema_0.9") == "myrun:ema_0.9"
    x = np.array([1.0, 2.0, 3.0])
    paths = plot_series([("λ", {"A": (x, np.array([1.0, 10.0, 1000.0]))}),
                         ("trace", {"A": (x, np.array([1.0, 2.0, np.nan]))})], tmp_path / "p")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.is_file() for p in paths)
