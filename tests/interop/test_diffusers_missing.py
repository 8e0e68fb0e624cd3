"""Without the diffusers package a diffusers directory is one line naming the extra to install, exit 2 (this
test does not need diffusers: it hides it)."""

from __future__ import annotations

import json
import sys

import torch
from click.testing import CliRunner

from flatkit.cli import main


def test_diffusers_directory_without_diffusers_installed(tmp_path, monkeypatch):
    d = tmp_path / "unet"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "in_channels": 3, "out_channels": 3}))
    torch.save({"conv_in.weight": torch.zeros(4, 3, 3, 3)}, d / "diffusion_pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    r = CliRunner().invoke(main, ["info", str(d)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'flatkit[diffusers]'" in lines[0] and str(d) in lines[0], r.output
