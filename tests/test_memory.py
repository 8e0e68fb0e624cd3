"""Out of memory: halve the micro-batch (and the grid points per vmapped forward) and retry (flatkit/memory.py).

The model call is monkeypatched to raise ``torch.cuda.OutOfMemoryError`` above a micro-batch size (and above a
number of stacked grid points under vmap); every result must equal the un-failing run at the size it fell back
to, and the note must be printed once per halving.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatkit.errors import FlatkitError
from flatkit.memory import Knob, is_out_of_memory, retry_on_oom
from flatkit.objective import Objective
from tests._small_unet import Images, small_run


def _small_run():
    return small_run(steps=50)


def _Images(n: int = 24) -> Images:
    return Images(n)


@pytest.fixture(scope="module")
def run():
    return _small_run()


def _objective(run, batch_size: int) -> Objective:
    return Objective(run, data=_Images(), n=16, seed=0, batch_size=batch_size)


def _stacked_points(state: dict) -> int:
    """The number of grid points of a vmapped call (1 outside vmap)."""
    for v in state.values():
        if torch._C._functorch.is_batchedtensor(v):
            return int(torch._C._functorch.get_unwrapped(v).shape[0])
    return 1


@pytest.fixture
def oom_above(monkeypatch):
    """``oom_above(max_batch, max_points)``: the model call raises CUDA OOM above these sizes; returns a
    record of the sizes that ran."""
    real = torch.func.functional_call

    def install(max_batch: int, max_points: int | None = None) -> list:
        ran: list = []

        def fake(module, state, args, *a, **k):
            x = args[0]
            pts = _stacked_points(state)
            if x.shape[0] > max_batch or (max_points is not None and pts > max_points):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
            ran.append((int(x.shape[0]), pts))
            return real(module, state, args, *a, **k)

        monkeypatch.setattr(torch.func, "functional_call", fake)
        return ran

    return install


def _notes(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note: out of memory")]


def test_is_out_of_memory_recognises_the_torch_errors():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_loss_halves_the_micro_batch_and_equals_the_unfailing_run(run, oom_above, capsys):
    want = _objective(run, 4).loss()
    obj = _objective(run, 16)
    ran = oom_above(4)
    got = obj.loss()
    assert torch.equal(got, want)
    assert obj.batch_size == 4 and obj.config.batch_size == 16
    assert _notes(capsys) == ["note: out of memory at micro-batch 16; retrying with 8",
                              "note: out of memory at micro-batch 8; retrying with 4"]
    assert all(b <= 4 for b, _ in ran)
    assert torch.equal(obj.loss(), want)  # the smaller size stays: no second note
    assert _notes(capsys) == []


def test_gradient_and_hvp_after_out_of_memory_equal_the_unfailing_run(run, oom_above, capsys):
    from flatkit.curvature.hvp import hvp

    ref = _objective(run, 8)
    g_want = ref.gradient()
    v = {k: torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) for k, p in ref.params.items()}
    hv_want = hvp(ref, v)
    oom_above(8)
    obj = _objective(run, 16)
    g = obj.gradient()
    assert all(torch.equal(g[k], g_want[k]) for k in g)
    obj2 = _objective(run, 16)
    hv = hvp(obj2, v)
    assert all(torch.equal(hv[k], hv_want[k]) for k in hv)
    assert len(_notes(capsys)) == 2


def test_landscape_sequential_after_out_of_memory(run, oom_above, capsys):
    from flatkit.analyses.landscape import landscape

    want = landscape(_objective(run, 4), dims=2, points=3, mode="sequential", check=False).values
    oom_above(4)
    obj = _objective(run, 16)
    res = landscape(obj, dims=2, points=3, mode="sequential", check=False)
    assert np.array_equal(res.values, want)
    assert len(_notes(capsys)) == 2
    assert res.meta["out_of_memory_sizes"]["batch_size"] == 4


def test_landscape_vmap_halves_grid_points_first(run, oom_above, capsys):
    from flatkit.analyses.landscape import landscape

    # un-failing reference: blocks of 2 grid points chunk the rows as blocks of 4 halved to 2 do
    want = landscape(_objective(run, 16), dims=2, points=3, mode="vmap", batch_points=2, check=False).values
    ran = oom_above(16, max_points=2)
    res = landscape(_objective(run, 16), dims=2, points=3, mode="vmap", batch_points=4, check=False)
    assert np.array_equal(res.values, want)
    assert _notes(capsys) == ["note: out of memory at 4 grid points per forward; retrying with 2"]
    assert max(p for _, p in ran) == 2
    assert res.meta["out_of_memory_sizes"]["vmap_points"] == 2


def test_landscape_vmap_then_halves_the_micro_batch(run, oom_above, capsys):
    from flatkit.analyses.landscape import landscape

    want = landscape(_objective(run, 8), dims=2, points=3, mode="vmap", batch_points=1, check=False).values
    ran = oom_above(8, max_points=2)
    res = landscape(_objective(run, 16), dims=2, points=3, mode="vmap", batch_points=4, check=False)
    assert np.array_equal(res.values, want)
    assert _notes(capsys) == ["note: out of memory at 4 grid points per forward; retrying with 2",
                              "note: out of memory at 2 grid points per forward; retrying with 1",
                              "note: out of memory at micro-batch 16; retrying with 8"]
    assert max(b for b, _ in ran) <= 8


def test_nothing_left_to_halve_fails_with_one_line_naming_batch_size(run, oom_above, capsys):
    oom_above(0)
    obj = _objective(run, 2)
    with pytest.raises(FlatkitError) as e:
        obj.loss()
    msg = str(e.value)
    assert "--batch-size" in msg and "\n" not in msg
    assert _notes(capsys) == ["note: out of memory at micro-batch 2; retrying with 1"]


def test_other_errors_are_not_retried(capsys):
    calls = []

    def fn():
        calls.append(1)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        retry_on_oom(fn, [Knob("micro-batch {}", lambda: 8, lambda b: None)])
    assert calls == [1] and _notes(capsys) == []


def test_sampling_halves_the_batch_and_gives_the_same_samples(run, capsys):
    from flatkit.sampling import SamplerConfig, draw_samples, respaced

    cfg = SamplerConfig(n=6, sampling_steps=3, sampler="ddim", seed=0, batch_size=2)
    diff = respaced(run.diffusion, cfg)
    model = run.model.eval()
    want = draw_samples(model, diff, cfg, (3, 8, 8))

    def small_memory_model(x, t):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return model(x, t)

    cfg8 = SamplerConfig(n=6, sampling_steps=3, sampler="ddim", seed=0, batch_size=8)
    got = draw_samples(small_memory_model, diff, cfg8, (3, 8, 8))
    assert torch.equal(got, want)
    assert _notes(capsys) == ["note: out of memory at sampling batch 8; retrying with 4",
                              "note: out of memory at sampling batch 4; retrying with 2"]
