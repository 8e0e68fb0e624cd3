"""ADM's timestep samplers: uniform, loss-second-moment (history 10, uniform prob 0.001), state round trip."""

from __future__ import annotations

import torch

from flatkit.train.timestep_sampler import LossSecondMomentResampler, UniformSampler, create_timestep_sampler


def test_uniform_weights_are_one():
    s = UniformSampler(10)
    t, w = s.sample(500, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 9
    assert torch.equal(w, torch.ones(500))
    assert len(set(t.tolist())) == 10


def test_second_moment_uniform_until_warm():
    s = LossSecondMomentResampler(4)
    s.update(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    assert not s.warmed_up()
    torch.testing.assert_close(s.weights(), torch.ones(4, dtype=torch.float64))


def test_second_moment_probabilities_and_importance_weights():
    T = 4
    s = LossSecondMomentResampler(T)
    base = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    for k in range(12):  # more than the history: the oldest entries are dropped
        s.update(torch.arange(T), base * (1 + k))
    assert s.warmed_up()
    hist = torch.stack([base * (1 + k) for k in range(2, 12)], dim=1)
    torch.testing.assert_close(s.loss_history, hist)
    w = (hist**2).mean(1).sqrt()
    p = w / w.sum() * (1 - 0.001) + 0.001 / T
    torch.testing.assert_close(s.weights() / s.weights().sum(), p)
    t, iw = s.sample(1000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(iw, (1.0 / (T * p[t])).float())
    # the importance-weighted mean of the losses is unbiased for the uniform mean
    counts = torch.bincount(t, minlength=T).double() / 1000
    assert (counts - p).abs().max() < 0.05


def test_state_roundtrip():
    s = create_timestep_sampler("loss-second-moment", 5)
    s.update(torch.tensor([0, 1, 1]), torch.tensor([0.5, 0.25, 0.75]))
    s2 = create_timestep_sampler("loss-second-moment", 5)
    s2.load_state_dict(s.state_dict())
    assert torch.equal(s2.loss_history, s.loss_history) and torch.equal(s2.loss_counts, s.loss_counts)
