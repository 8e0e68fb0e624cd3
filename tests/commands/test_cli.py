"""The CLI skeleton: every subcommand is listed, bad input is one line and exit 2, no traceback."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from flatkit.cli import COMMANDS, main

DESIGN_COMMANDS = ["train", "info", "sample", "hessian", "sharpness", "perturb", "landscape", "prior", "exposure",
                   "quantize", "fid", "figures", "demo"]


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_every_subcommand():
    r = run("--help")
    assert r.exit_code == 0
    for name in DESIGN_COMMANDS:
        assert name in r.output
    assert set(DESIGN_COMMANDS) <= set(COMMANDS)


def _one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.output
    text = " ".join(lines)
    for n in needles:
        assert n in text, text


def test_info_missing_file(tmp_path):
    _one_line_error(run("info", str(tmp_path / "nope.pt")), "nope.pt", "no such file")


def test_info_empty_file(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    _one_line_error(run("info", str(p)), "empty.pt", "empty")


def test_info_directory_without_checkpoint(tmp_path):
    _one_line_error(run("info", str(tmp_path)), str(tmp_path), "ckpt.pt")


def test_info_foreign_object(tmp_path):
    p = tmp_path / "list.pt"
    torch.save([1, 2, 3], p)
    _one_line_error(run("info", str(p)), "list.pt", "neither a flatkit checkpoint nor a model state dict")


def test_info_adm_state_dict_without_flags(adm_fixtures, tmp_path):
    sd = torch.load(adm_fixtures / "adm_small_a.pt", weights_only=True)["state_dict"]
    p = tmp_path / "model000000.pt"
    torch.save(sd, p)
    _one_line_error(run("info", str(p)), "image_size")


def test_info_adm_with_flags(adm_fixtures, tmp_path):
    fx = torch.load(adm_fixtures / "adm_small_a.pt", weights_only=True)
    flags = json.loads((adm_fixtures / "adm_small_fixtures.json").read_text())["small_a"]["flags"]
    p = tmp_path / "model000000.pt"
    torch.save({"module." + k: v for k, v in fx["state_dict"].items()}, p)  # DDP prefix is stripped
    fp = tmp_path / "flags.json"
    fp.write_text(json.dumps(flags))
    r = run("info", str(p), "--adm-flags", str(fp))
    assert r.exit_code == 0, r.output
    assert "2,007,462" in r.output
    assert "cosine" in r.output
    r = run("info", str(p), "--adm-flags", str(fp), "--json")
    d = json.loads(r.output)
    assert d["num_params"] == 2007462 and d["model"]["learn_sigma"] is True


def test_adm_flags_file_errors(adm_fixtures, tmp_path):
    sd = torch.load(adm_fixtures / "adm_small_a.pt", weights_only=True)["state_dict"]
    p = tmp_path / "m.pt"
    torch.save(sd, p)
    _one_line_error(run("info", str(p), "--adm-flags", str(tmp_path / "none.json")), "--adm-flags", "no such file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(run("info", str(p), "--adm-flags", str(bad)), "--adm-flags", "not valid JSON")


@pytest.mark.parametrize("flag,value", [("learn_sigma", False), ("num_channels", 64)])
def test_contradicting_flags_are_refused(adm_fixtures, tmp_path, flag, value):
    fx = torch.load(adm_fixtures / "adm_small_a.pt", weights_only=True)
    flags = json.loads((adm_fixtures / "adm_small_fixtures.json").read_text())["small_a"]["flags"]
    flags[flag] = value
    p = tmp_path / "m.pt"
    torch.save(fx["state_dict"], p)
    fp = tmp_path / "flags.json"
    fp.write_text(json.dumps(flags))
    r = run("info", str(p), "--adm-flags", str(fp))
    _one_line_error(r, flag)
