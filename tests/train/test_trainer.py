"""The training loop: resume is bit-identical, changed configurations are refused, outputs are complete."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from flatkit.checkpoint import read_pt
from flatkit.errors import UsageError
from flatkit.train.trainer import TrainConfig, train

# A tiny UNet with dropout, SAM, EMA at two rates, SWA, IP and the loss-second-moment sampler: every piece
# of state that a resume must carry.
FULL = TrainConfig(
    data="builtin:shapes16?n=64",
    preset="tiny",
    dropout=0.1,
    steps=6,
    batch_size=4,
    lr=1e-3,
    warmup=2,
    grad_clip=1.0,
    sam_rho=0.5,
    rho_schedule="linear",
    rho_warmup=3,
    ema=[0.9, 0.5],
    swa_start=2,
    swa_every=2,
    ip_gamma=0.1,
    timestep_sampler="loss-second-moment",
    save_every=2,
    log_every=2,
    sample_count=0,
)
POINTS = TrainConfig(
    data="builtin:gaussians2d?n=64",
    preset="mlp",
    steps=4,
    batch_size=16,
    ema=[0.9],
    log_every=2,
    save_every=2,
    sample_count=0,
)


def _weights(path):
    return read_pt(path)["weights"]


def _assert_same_weights(a, b):
    assert set(a) == set(b)
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}/{k} differs"


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_resume_is_bit_identical(tmp_path):
    one = train(FULL, tmp_path / "one", progress=False)
    train(dataclasses.replace(FULL, steps=3), tmp_path / "two", progress=False)
    two = train(FULL, tmp_path / "two", resume=True, progress=False)
    _assert_same_weights(_weights(one), _weights(two))
    a, b = read_pt(one), read_pt(two)
    assert a["step"] == b["step"] == 6
    assert set(a["weights"]) == {"raw", "ema_0.9", "ema_0.5", "swa"}
    assert a["train"]["swa_n"] == b["train"]["swa_n"] == 3  # steps 2, 4, 6
    torch.testing.assert_close(
        a["train"]["timestep_sampler"]["loss_history"],
        b["train"]["timestep_sampler"]["loss_history"],
        rtol=0,
        atol=0,
    )
    # metrics match an uninterrupted run line for line (except wall-clock fields)
    strip = [
        {k: v for k, v in r.items() if k not in ("wall_time", "steps_per_s")}
        for r in _metrics(tmp_path / "one")
    ]
    strip2 = [
        {k: v for k, v in r.items() if k not in ("wall_time", "steps_per_s")}
        for r in _metrics(tmp_path / "two")
    ]
    assert strip == strip2
    assert [r["step"] for r in strip] == [2, 4, 6]
    assert all(r["sam_e_norm"] > 0 for r in strip)


def test_resume_from_off_grid_step_drops_partial_line(tmp_path):
    one = train(POINTS, tmp_path / "one", progress=False)
    train(dataclasses.replace(POINTS, steps=3, save_every=3), tmp_path / "two", progress=False)
    assert _metrics(tmp_path / "two")[-1].get("partial") is True
    two = train(POINTS, tmp_path / "two", resume=True, progress=False)
    _assert_same_weights(_weights(one), _weights(two))
    m1, m2 = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [2, 4]
    assert [r["loss"] for r in m1] == [r["loss"] for r in m2]


def test_resume_refuses_changed_config(tmp_path):
    train(dataclasses.replace(POINTS, steps=2), tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "ckpt.pt").read_bytes()
    with pytest.raises(UsageError, match=r"lr: 0.001 -> 0.0002"):
        train(dataclasses.replace(POINTS, lr=2e-4), tmp_path / "r", resume=True, progress=False)
    with pytest.raises(UsageError, match="already at step 2"):
        train(dataclasses.replace(POINTS, steps=1), tmp_path / "r", resume=True, progress=False)
    assert (tmp_path / "r" / "ckpt.pt").read_bytes() == before


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "r"
    train(dataclasses.replace(POINTS, steps=2), out, progress=False)
    before = (out / "ckpt.pt").read_bytes()
    with pytest.raises(UsageError, match="already holds a run"):
        train(POINTS, out, progress=False)
    assert (out / "ckpt.pt").read_bytes() == before
    with pytest.raises(UsageError, match="resume"):
        train(POINTS, tmp_path / "empty", resume=True, progress=False)
    train(dataclasses.replace(POINTS, steps=1, log_every=1), out, overwrite=True, progress=False)
    assert read_pt(out / "ckpt.pt")["step"] == 1
    assert [r["step"] for r in _metrics(out)] == [1]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(preset="nope"), "preset"),
        (dict(steps=0), "steps"),
        (dict(ema=[1.0]), "ema"),
        (dict(ema=[0.0]), "ema"),
        (dict(sam_rho=-0.1), "sam_rho"),
        (dict(batch_size=1000), "batch_size"),
        (dict(preset="tiny"), "preset tiny"),  # image model on points
        (dict(lr=0.0), "lr"),
        (dict(swa_start=0), "swa_start"),
    ],
)
def test_bad_input_is_refused_before_writing(tmp_path, change, match):
    out = tmp_path / "bad"
    with pytest.raises(UsageError, match=match):
        train(dataclasses.replace(POINTS, **change), out, progress=False)
    assert not out.exists()


def test_outputs(tmp_path):
    out = tmp_path / "r"
    cfg = dataclasses.replace(
        POINTS, steps=3, swa_start=2, sample_count=16, sample_steps=3, keep_checkpoints=True
    )
    path = train(cfg, out, progress=False)
    ck = read_pt(path)
    assert ck["config"]["data"] == "builtin:gaussians2d?n=64"
    assert ck["config"]["model"]["arch"] == "mlp"
    assert set(ck["weights"]) == {"raw", "ema_0.9", "swa"} and ck["ema_rates"] == [0.9]
    assert (out / "ckpt_2.pt").is_file() and (out / "ckpt_3.pt").is_file()
    assert (out / "samples.png").is_file()
    info = json.loads((out / "train.json").read_text())
    assert info["config"]["steps"] == 3 and info["preset"] == "mlp"
    rec = _metrics(out)[0]
    for key in ("step", "loss", "loss_q0", "loss_q3", "grad_norm", "sam_e_norm", "lr", "wall_time"):
        assert key in rec


def test_all_weight_sets_load_with_flatkit_load(tmp_path):
    from flatkit.run import load

    cfg = dataclasses.replace(POINTS, steps=3, swa_start=2)
    path = train(cfg, tmp_path / "r", progress=False)
    raw = read_pt(path)["weights"]
    for name, key in (("raw", "raw"), ("ema", "ema_0.9"), ("swa", "swa")):
        run = load(path, weights=name)
        sd = run.model.state_dict()
        assert all(torch.equal(sd[k].cpu(), raw[key][k]) for k in sd)
