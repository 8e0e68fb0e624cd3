"""Quantization: error within half a step per channel, about halving per bit, caller untouched, CLI,
--save."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import flatkit
from flatkit.analyses.robustness.quantize import (
    quant_step,
    quantizable_layers,
    quantize_state_dict,
    quantize_tensor,
)
from flatkit.cli import main


@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_error_within_half_step(bits, granularity) -> None:
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    w[2] *= 10  # channels of different range
    q = quantize_tensor(w, bits, granularity)
    delta = quant_step(w, bits, granularity)
    assert torch.all((q - w).abs() <= delta / 2 * (1 + 1e-9))
    assert torch.all((q / delta - torch.round(q / delta)).abs() < 1e-6)  # on the grid
    levels = torch.unique(torch.round(q / delta)) if granularity == "per-tensor" else None
    if levels is not None:
        assert levels.abs().max() <= 2 ** (bits - 1) - 1


def test_error_about_halves_with_each_bit() -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = [float((quantize_tensor(w, b, "per-channel") - w).pow(2).mean().sqrt()) for b in range(4, 11)]
    ratios = [b / a for a, b in zip(errs, errs[1:], strict=False)]
    assert all(0.4 < r < 0.6 for r in ratios), ratios


def test_per_channel_never_worse_than_per_tensor() -> None:
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(1))
    w[0] *= 50
    e_t = (quantize_tensor(w, 4, "per-tensor") - w).abs().sum()
    e_c = (quantize_tensor(w, 4, "per-channel") - w).abs().sum()
    assert e_c < e_t


def test_state_dict_quantization_leaves_model_untouched_and_skips(tiny_ckpt) -> None:
    run = flatkit.load(tiny_ckpt)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    layers = quantizable_layers(run.model)
    qw = quantize_state_dict(run.model, 4, "per-channel", skip=[layers[1]], skip_first_last=True)
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    assert layers[0] not in qw.layers and layers[-1] not in qw.layers and layers[1] not in qw.layers
    assert qw.max_error_over_half_step <= 1 + 1e-6
    assert torch.equal(qw.state_dict[f"{layers[0]}.weight"], before[f"{layers[0]}.weight"])
    k = f"{qw.layers[0]}.weight"
    assert not torch.equal(qw.state_dict[k], before[k])
    bias = [k for k in before if k.endswith(".bias")][0]
    assert torch.equal(qw.state_dict[bias], before[bias])


def test_quantize_command_save_and_figures(tiny_ckpt, tmp_path) -> None:
    out = tmp_path / "q"
    r = CliRunner().invoke(
        main,
        [
            "quantize",
            str(tiny_ckpt),
            "--bits",
            "8,4",
            "--granularity",
            "per-channel",
            "--n",
            "2",
            "--sampler",
            "ddim",
            "--sampling-steps",
            "2",
            "--n-eval",
            "8",
            "--n-ref",
            "8",
            "--save",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "quantize.json").read_text())
    assert res["bits"] == [8, 4] and res["weight_rel_error"][0][1] > res["weight_rel_error"][0][0]
    assert res["drift_mse"][0][1] > 0 and len(res["loss_change"][0]) == 2 and res["labels"][0].endswith(":raw")
    assert (out / "quantize.png").is_file() and (out / "quantize_samples.png").is_file()
    q = flatkit.load(out / "quantized_4bit_per-channel.pt")
    w = next(v for k, v in q.model.state_dict().items() if k.endswith("weight") and v.ndim == 4)
    assert w.unique().numel() <= 2 * 7 * w.shape[0] + 1


@pytest.mark.parametrize(
    "args,name",
    [
        (["--bits", "1"], "--bits"),
        (["--bits", "17"], "--bits"),
        (["--bits", "8,x"], "--bits"),
        (["--skip", "nomatch"], "--skip"),
    ],
)
def test_quantize_bad_input_exits_2(tiny_ckpt, tmp_path, args, name) -> None:
    r = CliRunner().invoke(
        main,
        [
            "quantize",
            str(tiny_ckpt),
            *args,
            "--n",
            "2",
            "--sampler",
            "ddim",
            "--sampling-steps",
            "2",
            "--n-eval",
            "4",
            "--n-ref",
            "4",
            "--out",
            str(tmp_path / "x"),
            "--no-progress",
        ],
    )
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and name in lines[0], r.output
