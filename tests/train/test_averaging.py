"""EMA (several rates, ADM rule) and SWA (uniform average from a start step) against float64 oracles."""

from __future__ import annotations

import torch
from torch import nn

from flatkit.train.averaging import EMA, SWA, ema_name


def _model():
    torch.manual_seed(0)  # test-local construction only
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    return m


def _set(model, value: float):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_several_rates():
    m = _model()
    _set(m, 0.0)
    ema = EMA(m, [0.5, 0.9])
    seq = [1.0, 2.0, 3.0]
    for v in seq:
        _set(m, v)
        ema.update(m)
    sds = ema.state_dicts(m)
    for r in (0.5, 0.9):
        expect = 0.0
        for v in seq:
            expect = r * expect + (1 - r) * v
        w = sds[ema_name(r)]["0.weight"]
        torch.testing.assert_close(w, torch.full_like(w, expect), rtol=0, atol=1e-14)
        # buffers are the model's current ones
        assert torch.equal(sds[ema_name(r)]["1.running_mean"], m.state_dict()["1.running_mean"])
    assert set(sds) == {"ema_0.5", "ema_0.9"}
    # the model itself is untouched
    assert torch.equal(m[0].weight, torch.full_like(m[0].weight, 3.0))


def test_ema_warmup_rate():
    """With warm-up the rate after step n is min(r, (1 + n) / (10 + n)); without, ADM's constant r."""
    m = _model()
    _set(m, 0.0)
    ema = EMA(m, [0.9, 0.999], warmup=True)
    assert not EMA(m, [0.9]).warmup
    seq = [1.0, 2.0, 3.0, 4.0, 5.0] + [6.0] * 200
    expect = {0.9: 0.0, 0.999: 0.0}
    for n, v in enumerate(seq, start=1):
        _set(m, v)
        ema.update(m, n)
        for r in expect:
            rn = min(r, (1 + n) / (10 + n))
            expect[r] = rn * expect[r] + (1 - rn) * v
    assert ema.rate_at(0.9, 1) == 2 / 11 and ema.rate_at(0.9, 1000) == 0.9
    sds = ema.state_dicts(m)
    for r, e in expect.items():
        w = sds[ema_name(r)]["0.weight"]
        torch.testing.assert_close(w, torch.full_like(w, e), rtol=0, atol=1e-12)
    # the warm-up forgets the initialisation: after 205 steps at r = 0.999 the init's weight is tiny
    init_weight = 1.0
    for n in range(1, len(seq) + 1):
        init_weight *= min(0.999, (1 + n) / (10 + n))
    assert init_weight < 1e-4


def test_ema_load_roundtrip():
    m = _model()
    ema = EMA(m, [0.99])
    _set(m, 1.0)
    ema.update(m)
    sds = ema.state_dicts(m)
    ema2 = EMA(m, [0.99])
    ema2.load_state_dicts(sds)
    pairs = zip(ema.shadow[0].values(), ema2.shadow[0].values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_swa_uniform_average_with_buffers():
    m = _model()
    swa = SWA(m, start=3, every=2)
    taken = []
    for step in range(1, 10):
        _set(m, float(step))
        with torch.no_grad():
            m[1].running_mean.fill_(10.0 * step)
            m[1].num_batches_tracked.fill_(step)
        if swa.maybe_update(m, step):
            taken.append(step)
    assert taken == [3, 5, 7, 9] and swa.n == 4
    sd = swa.state_dict()
    mean = sum(taken) / len(taken)
    torch.testing.assert_close(sd["0.weight"], torch.full_like(sd["0.weight"], mean), rtol=0, atol=1e-14)
    torch.testing.assert_close(
        sd["1.running_mean"], torch.full_like(sd["1.running_mean"], 10 * mean), rtol=0, atol=1e-13
    )
    assert int(sd["1.num_batches_tracked"]) == 9  # integer buffers: latest value
    swa2 = SWA(m, start=3, every=2)
    swa2.load_state_dict(sd, swa.n)
    assert swa2.n == 4 and torch.equal(swa2.state_dict()["0.weight"], sd["0.weight"])
