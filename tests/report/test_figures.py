"""``flatkit figures``: figures and tables rebuilt from result folders, numbers equal to the result files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from flatkit.cli import main
from flatkit.report.collect import arm_label, load_result
from flatkit.report.figures import fmt

FIGS = ("training", "flatness", "landscape", "perturb", "exposure", "quantize", "samples", "samples_quantized")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def js(d: Path, name: str) -> dict:
    return json.loads((d / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def built(result_dirs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("figs")
    r = run("figures", *result_dirs.values(), "--out", out)
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "figures.json").read_text())


@pytest.mark.parametrize(("cfg", "weights", "label"), [
    ({"sam_rho": 0.0, "ip_gamma": 0.0}, "raw", "ADM"), ({"sam_rho": 0.0}, "ema_0.9999", "+EMA"),
    ({}, "swa", "+SWA"), ({"ip_gamma": 0.1}, "raw", "+IP"), ({"ip_gamma": 0.15}, "ema", "+IP+EMA"),
    ({"ip_gamma": 0.1}, "swa", "+IP+SWA"), ({"sam_rho": 0.5}, "raw", "+SAM"), ({"sam_rho": 0.5}, "ema_0.999",
                                                                              "+SAM+EMA"),
    ({"sam_rho": 0.05, "ip_gamma": 0.0}, "swa", "+SAM+SWA")])
def test_arm_label_from_train_config(cfg, weights, label):
    assert arm_label(cfg, weights) == label


def test_every_figure_and_table_written_in_paper_order(built, result_dirs):
    out, fj = built
    for name in FIGS:
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, name
    assert not fj["skipped"]
    # labels derived from each checkpoint's train config and the weights, rows in the paper's order
    assert [r["label"] for r in fj["runs"]] == ["ADM", "+EMA", "+SAM"]
    assert all(r["label_source"].startswith("train config") for r in fj["runs"])
    md = (out / "tables.md").read_text()
    for title in ("Sample quality", "Flatness", "Weight quantization", "Exposure bias", "perturbed prior"):
        assert title in md


def test_table_numbers_are_the_result_numbers(built, result_dirs):
    out, fj = built
    t = fj["tables"]
    flat = {n["label"]: n for n in t["flatness"]["numbers"]}
    for arm, d in result_dirs.items():
        h = load_result(d, "hessian")
        assert flat[arm]["lambda_max"] == h.eigenvalues[0][0]
        assert flat[arm]["trace"] == h.trace[0]
        p = load_result(d, "perturb")
        assert flat[arm]["perturb_radius"] == 0.1
        assert flat[arm]["perturb_random"] == p.mean[0][-1] and flat[arm]["perturb_worst"] == p.worst[0][-1]
        q = load_result(d, "quantize")
        qn = next(n for n in t["quantize"]["numbers"] if n["label"] == arm)
        assert qn["loss_change_8"] == q.loss_change[0][0] and qn["drift_mse_4"] == q.drift_mse[0][1]
        e = load_result(d, "exposure")
        en = next(n for n in t["exposure"]["numbers"] if n["label"] == arm)
        assert en["gap_mean"] == e.gap_mean[0] and en["gap_last"] == e.gap_last[0]
    assert flat["ADM"]["sharpness"] == load_result(result_dirs["ADM"], "sharpness").value[0]
    assert flat["+EMA"]["sharpness"] is None  # not measured: missing, not a number
    # the printed tables show the same numbers
    md = (out / "tables.md").read_text()
    adm_row = next(ln for ln in md.splitlines() if ln.startswith("| ADM |") and "±" in ln)
    assert fmt(flat["ADM"]["lambda_max"]) in adm_row and fmt(flat["ADM"]["sharpness"]) in adm_row
    # sample quality: no detector anywhere, so the weight-free distance (marked †), per T'
    sq = t["sample_quality"]
    assert sq["headers"][1:] == ["T'=3 (ddpm)"]  # every sampling measure: DDPM (the settings' one sampler)
    by = {n["label"]: n for n in sq["numbers"]}
    assert by["ADM"]["T'=3 (ddpm)"]["value"] == load_result(result_dirs["ADM"], "fid").weight_free["sw2"]
    assert by["+SAM"]["T'=3 (ddpm)"]["value"] == load_result(result_dirs["+SAM"], "quantize").distance_fp[0]
    assert "†" in sq["rows"][0][1]


def test_fid_when_measured_and_columns_per_t(result_dirs, tmp_path):
    d = tmp_path / "adm"
    shutil.copytree(result_dirs["ADM"], d)
    sub = d / "fid_t20"
    sub.mkdir()
    fid = js(d, "fid")
    fid["fid"] = 12.5
    fid["meta"]["config"]["samples"] = str(sub / "samples.npz")
    (sub / "fid.json").write_text(json.dumps(fid))
    sample = js(d, "sample")
    sample["sampler"]["sampling_steps"] = 20
    (sub / "sample.json").write_text(json.dumps(sample))
    r = run("figures", d, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    sq = json.loads((tmp_path / "o" / "figures.json").read_text())["tables"]["sample_quality"]
    assert "T'=20 (ddpm)" in sq["headers"]
    i = sq["headers"].index("T'=20 (ddpm)")
    assert sq["rows"][0][i] == "12.5"  # FID: no dagger


def test_label_override_and_missing_results_skip_with_a_note(result_dirs, tmp_path):
    only = tmp_path / "only_sharpness"
    only.mkdir()
    shutil.copy(result_dirs["+SAM"] / "sharpness.json", only)
    r = run("figures", only, "--label", f"{only}=+SAM+SWA", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    fj = json.loads((tmp_path / "o" / "figures.json").read_text())
    assert fj["runs"][0]["label"] == "+SAM+SWA" and fj["runs"][0]["label_source"] == "given"
    assert set(fj["figures"]) == {"training", "flatness"}  # training: the metrics.jsonl beside its checkpoint
    for name in ("perturb", "exposure", "quantize", "landscape", "samples", "samples_quantized"):
        assert name in fj["skipped"] and f"skipped {name}" in r.output
    assert not (tmp_path / "o" / "perturb.png").exists()


def test_unknown_checkpoint_falls_back_to_the_folder_name(result_dirs, tmp_path):
    d = tmp_path / "mystery"
    d.mkdir()
    p = js(result_dirs["ADM"], "perturb")
    p["meta"]["checkpoint"] = p["meta"]["checkpoints"][0]["checkpoint"] = str(tmp_path / "gone.pt")
    (d / "perturb.json").write_text(json.dumps(p))
    shutil.copy(result_dirs["ADM"] / "perturb.npz", d)
    r = run("figures", d, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    fj = json.loads((tmp_path / "o" / "figures.json").read_text())
    assert fj["runs"][0]["label"] == "mystery" and "--label" in " ".join(fj["notes"])


@pytest.mark.parametrize("case", ["empty", "missing", "bad_label", "label_not_a_run_dir"])
def test_bad_input_is_one_line_exit_2(case, result_dirs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {"empty": [empty], "missing": [tmp_path / "nope"],
            "bad_label": [result_dirs["ADM"], "--label", "ADM"],
            "label_not_a_run_dir": [result_dirs["ADM"], "--label", f"{tmp_path}=X"]}[case]
    r = run("figures", *args, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    if case == "empty":
        assert str(empty) in lines[0] and "no flatkit result files" in lines[0]
