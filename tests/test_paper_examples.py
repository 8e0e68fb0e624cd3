"""examples/analyse_adm_checkpoint.sh, compare_raw_ema_swa.sh and paper_cifar10.sh run as written, through the real
``flatkit`` entry point, with the tiny preset and small budgets set in their environment variables, and show what
they claim."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from flatkit.analyses.hessian import HessianResult
from flatkit.analyses.landscape import LandscapeResult

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", FLATKIT_THREADS="1",
           PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def run_example(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", str(REPO / "examples" / name), *args], cwd=REPO, env={**ENV, **env},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def finite(xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def test_analyse_adm_checkpoint(tmp_path):
    out = tmp_path / "adm"
    r = run_example("analyse_adm_checkpoint.sh", {"OUT": str(out), "NEVAL": "8", "TOPK": "2", "TRACE_HVPS": "12",
                                                  "POINTS": "3", "DEVICE": "cpu"})
    # the stand-in is a bare state dict with guided-diffusion's key names, described by ADM flags
    sd = torch.load(out / "adm" / "ema_0.9999_000000.pt", weights_only=True)
    assert {"time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight"} <= set(sd)
    assert "format" not in sd and "weights" not in sd
    assert json.loads((out / "adm" / "flags.json").read_text())["learn_sigma"] is True
    # flatkit info rebuilt the architecture from the flags and the shapes
    assert "ADM UNet 16x16x3, 32 channels, mult 1,2" in r.stdout and "learned sigma True" in r.stdout
    h = HessianResult.load(out / "hessian")
    obj = h.meta["objective"]
    assert obj["loss_resolved"] == "hybrid" and obj["n"] == 8 and obj["data"] == "builtin:shapes16"
    ev = h.eigenvalues[0]
    assert len(ev) == 2 and finite(ev) and ev[0] >= ev[1]
    assert finite(h.trace)
    land = LandscapeResult.load(out / "landscape")
    assert land.values.shape[-2:] == (3, 3) and np.isfinite(land.values).all()
    # the same frozen bank (n-eval, seed, data) in both commands: the landscape's centre is the Hessian's loss
    assert abs(land.loss_centre[0] - h.loss[0]) <= 1e-5 * abs(h.loss[0])
    assert (out / "landscape" / "landscape.png").is_file() and (out / "landscape" / "landscape.html").is_file()
    assert "lambda_1..k" in r.stdout and "(hybrid, bank of 8" in r.stdout


def test_compare_raw_ema_swa(tmp_path):
    out = tmp_path / "avg"
    r = run_example("compare_raw_ema_swa.sh", {"OUT": str(out), "STEPS": "8", "NEVAL": "8", "TOPK": "1",
                                               "TRACE_HVPS": "10", "POINTS": "3", "K": "2",
                                               "TRAIN_ARGS": "--samples 0 --quiet --log-every 4"})
    h = HessianResult.load(out / "hessian")
    ck = h.meta["checkpoints"]
    assert [c["weights"] for c in ck] == ["raw", "ema_0.999", "swa"]
    assert len({c["checkpoint_sha256"] for c in ck}) == 1  # one checkpoint, three weight sets
    assert len(set(h.loss)) == 3  # ... that differ
    for m in range(3):
        assert finite([h.loss[m], *h.eigenvalues[m], h.trace[m]])
    land = LandscapeResult.load(out / "landscape")
    assert land.labels == ["raw", "EMA", "SWA"]
    assert [c["weights"] for c in land.meta["checkpoints"][1:]] == ["ema_0.999", "swa"]
    assert land.values.shape == (3, 3, 3) and np.isfinite(land.values).all()
    # the slice's centre is each weight set's loss on the same bank as the Hessian's
    for loss, c in zip(h.loss, land.loss_centre, strict=True):
        assert abs(c - loss) <= 1e-5 * abs(loss)
    figs = json.loads((out / "figures" / "figures.json").read_text())
    assert [x["label"] for x in figs["runs"]] == ["ADM", "+EMA", "+SWA"]
    for f in ("landscape/landscape.png", "landscape/landscape.html", "figures/perturb.png", "figures/tables.md"):
        assert (out / f).is_file(), f
    assert "arms in the figures: ADM, +EMA, +SWA" in r.stdout
    assert "ema_0.999" in r.stdout.split("lambda_max")[1]  # the summary table


class _Detector(torch.nn.Module):
    """A stand-in for the Inception detector: colour means and a fixed random projection of 4x4 pooled pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("proj", torch.randn(48, 6, generator=torch.Generator().manual_seed(1)))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x / 255.0
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([x.mean(dim=(2, 3)), pooled @ self.proj], dim=1)


def readme_paper_command() -> dict[str, str]:
    """The environment of the tiny-preset ``paper_cifar10.sh`` command in examples/README.md."""
    text = (REPO / "examples" / "README.md").read_text()
    block = re.search(r"^```bash\n(.*?)^```", text, flags=re.M | re.S).group(1)
    words = shlex.split(block.strip())
    assert words[-2:] == ["bash", "examples/paper_cifar10.sh"], words[-2:]
    return dict(w.split("=", 1) for w in words[:-2])


def test_paper_cifar10_script_on_the_tiny_preset(tmp_path):
    """examples/README.md's command, with OUT in the test's folder, on the CPU, and FID with a tiny detector."""
    det = tmp_path / "detector.pt2"  # a torch.export program (TorchScript is deprecated)
    batch = {"x": {0: torch.export.Dim("batch", min=1, max=65536)}}
    program = torch.export.export(_Detector(), (torch.zeros(2, 3, 16, 16),), dynamic_shapes=batch)  # shapes16
    torch.export.save(program, str(det))
    out = tmp_path / "paper"
    env = {**readme_paper_command(), "OUT": str(out), "DEVICE": "cpu", "DETECTOR": str(det)}
    assert env["ARMS"] == "sam:swa" and env["TPRIME"] == "2 4" and env["PRESET"] == "tiny"
    r = run_example("paper_cifar10.sh", env)
    # the training: the recipe's options reached the trainer; ARMS named only the SAM run
    cfg = json.loads((out / "train" / "sam" / "train.json").read_text())["config"]
    assert cfg["sam_rho"] == 0.5 and cfg["ip_gamma"] == 0.0 and cfg["steps"] == 6 and cfg["batch_size"] == 8
    assert cfg["ema"] == [0.9999] and cfg["ema_warmup"] is False and cfg["swa_start"] == 3
    assert sorted(p.name for p in (out / "train").iterdir()) == ["sam"]
    res = out / "results" / "sam-swa"
    for name in ("hessian", "sharpness", "landscape", "perturb", "prior", "exposure", "quantize"):
        assert json.loads((res / f"{name}.json").read_text())["meta"]["weights"] == "swa", name
    figs = out / "figures"
    for name in ("flatness", "landscape", "perturb", "exposure", "quantize", "samples"):
        assert (figs / f"{name}.png").is_file() and (figs / f"{name}.pdf").is_file(), name
    fj = json.loads((figs / "figures.json").read_text())
    assert [x["label"] for x in fj["runs"]] == ["+SAM+SWA"]
    tables = (figs / "tables.md").read_text()
    assert "| +SAM+SWA |" in tables and "Flatness" in tables
    # sample quality at T' = 2 and 4 (respaced DDPM), FID with the test's detector
    quality = tables[tables.index("Sample quality"):tables.index("Flatness")]
    assert "T'=2 (ddpm)" in quality and "T'=4 (ddpm)" in quality
    for t in (2, 4):
        fid = json.loads((res / f"t{t}" / "fid.json").read_text())
        assert fid["fid"] is not None and math.isfinite(fid["fid"]) and fid["n_samples"] == 8
        s = json.loads((res / f"t{t}" / "sample.json").read_text())
        assert s["sampler"]["sampling_steps"] == t and s["sampler"]["sampler"] == "ddpm"
    assert "Sample quality" in r.stdout  # the script ends by printing the tables
