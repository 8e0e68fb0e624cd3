"""``--precision`` (autocast) and ``--channels-last`` (flatkit/precision.py): fp32 is bit for bit what flatkit
computed before these options; bf16 loss values stay close to fp32; the choice is recorded in the results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flatkit.errors import FlatkitError, UsageError
from flatkit.objective import Objective
from tests._small_unet import Images, small_run

# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per operation); the loss is a mean over many pixels, so
# its error is far below that of one activation: measured 2e-4 relative on this model. The tolerance leaves
# a 50x margin.
BF16_RTOL = 1e-2


def _small_run():
    return small_run(steps=50)


def _Images(n: int = 24) -> Images:
    return Images(n)


@pytest.fixture(scope="module")
def run():
    return _small_run()


def _objective(run, batch_size: int = 8) -> Objective:
    return Objective(run, data=_Images(), n=16, seed=0, batch_size=batch_size)


def _loss_as_before(obj: Objective, params: dict) -> torch.Tensor:
    """The objective's loss written out as flatkit computed it before --precision existed."""
    state = {**obj._fixed, **obj._buffers, **params}
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for i in range(obj.n_batches):
            s = obj._slice(i)

            def model(x, t):
                return torch.func.functional_call(obj._module, state, (x, t))

            ls = obj._diffusion.training_losses(model, obj._x0[s], obj._t[s], obj._eps[s])["loss"]
            total = total + (ls.sum() / obj.n).to(torch.float64)
    return total


def test_fp32_and_channels_last_on_cpu_are_bit_identical_to_before(run):
    obj = _objective(run)
    want = _loss_as_before(obj, obj.params)
    assert torch.equal(obj.loss(), want)
    obj.set_precision("fp32", channels_last=True)  # channels-last is for CUDA: ignored on the CPU
    assert torch.equal(obj.loss(), want)


def test_fp32_landscape_is_bit_identical_to_before(run):
    from flatkit.analyses.landscape import landscape
    from flatkit.analyses.landscape.evaluate import point_params

    obj = _objective(run)
    res = landscape(obj, dims=2, points=3, mode="sequential", check=False)
    from flatkit.analyses.directions import random_directions

    d1, d2 = random_directions(obj.params, 2, seed=0, norm="filter", bias="zero")
    res2 = landscape(obj, dims=2, points=3, directions=[d1, d2], mode="sequential", check=False)
    ax = res2.coords_a
    want = np.array([[float(_loss_as_before(obj, point_params(obj.params, [d1, d2], [a, b]))) for b in ax]
                     for a in ax])
    assert np.array_equal(res2.values[0], want)
    assert res.meta["precision"] == "fp32" and "precision" not in res.meta["grid"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_landscape_is_close_to_fp32_and_recorded(run, precision):
    from flatkit.analyses.landscape import landscape

    ref = landscape(_objective(run), dims=2, points=3, mode="sequential", check=False)
    obj = _objective(run).set_precision(precision)
    res = landscape(obj, dims=2, points=3, mode="auto", check=False)
    np.testing.assert_allclose(res.values, ref.values, rtol=BF16_RTOL)
    assert not np.array_equal(res.values, ref.values)  # autocast did act
    assert res.meta["precision"] == precision
    assert res.meta["grid"]["precision"] == {"precision": precision, "channels_last": False}
    assert res.config_hash != ref.config_hash  # a resume cannot mix precisions


def test_vmap_under_cpu_autocast_is_close_or_refused_clearly(run):
    from flatkit.analyses.landscape import landscape

    ref = landscape(_objective(run), dims=1, points=3, mode="sequential", check=False)
    obj = _objective(run).set_precision("bf16")
    try:
        res = landscape(obj, dims=1, points=3, mode="vmap", check=False)
    except FlatkitError as e:  # this torch's CPU autocast does not reach every batched kernel
        assert "--mode" in str(e) and "\n" not in str(e)
    else:
        np.testing.assert_allclose(res.values, ref.values, rtol=BF16_RTOL)


def test_bad_precision_is_a_usage_error(run):
    with pytest.raises(UsageError, match="precision"):
        _objective(run).set_precision("fp8")
    f = Objective.from_function(lambda p: (p["w"] ** 2).sum(), {"w": torch.ones(3)})
    with pytest.raises(UsageError, match="precision"):
        f.set_precision("bf16")


def test_top_eigenvalue_under_bf16_only_when_asked_and_close(run):
    from flatkit.curvature import top_eigenvalues

    # each certified to 1e-2 relative (well inside the 5e-2 compared), which halves the HVPs of the default 1e-3
    e32 = top_eigenvalues(_objective(run), k=1, tol=1e-2)
    e16 = top_eigenvalues(_objective(run).set_precision("bf16"), k=1, tol=1e-2)
    assert e32.certified and e16.certified
    np.testing.assert_allclose(np.asarray(e16.eigenvalues), np.asarray(e32.eigenvalues), rtol=5e-2)


def test_sampling_under_bf16_is_close_and_recorded(run):
    from flatkit.sampling import sample

    a = sample(run, n=4, sampling_steps=3, sampler="ddim", batch_size=4)
    b = sample(run, n=4, sampling_steps=3, sampler="ddim", batch_size=4, precision="bf16")
    assert b.meta["precision"]["precision"] == "bf16" and a.meta["precision"]["precision"] == "fp32"
    diff = np.abs(a.images.astype(int) - b.images.astype(int))
    assert diff.mean() < 8  # uint8 levels


def test_cli_landscape_records_precision(shared_ckpt, tmp_path):
    from flatkit.cli import main

    ckpt = shared_ckpt("tiny")
    out = tmp_path / "l"
    r = CliRunner().invoke(main, ["landscape", str(ckpt), "--points", "3", "--n-eval", "8", "--batch-size", "8",
                                  "--device", "cpu", "--precision", "bf16", "--channels-last", "--out", str(out)])
    assert r.exit_code == 0, r.output
    js = json.loads((out / "landscape.json").read_text())
    assert js["meta"]["precision"] == {"precision": "bf16", "autocast": "torch.bfloat16", "channels_last": True,
                                       "channels_last_applied": False}
    assert js["meta"]["config"]["n_eval"] == 8
    r = CliRunner().invoke(main, ["landscape", str(ckpt), "--precision", "fp8"])
    assert r.exit_code == 2 and "--precision" in r.output


def test_cli_sample_records_precision(shared_ckpt, tmp_path):
    from flatkit.cli import main

    ckpt = shared_ckpt("mlp", noise=0, data="builtin:gaussians2d")
    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["sample", str(ckpt), "--n", "4", "--sampling-steps", "2", "--device", "cpu",
                                  "--precision", "bf16", "--no-progress", "--out", str(out)])
    assert r.exit_code == 0, r.output
    js = json.loads((out / "sample.json").read_text())
    assert js["meta"]["precision"]["precision"] == "bf16"
