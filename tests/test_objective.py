"""The frozen evaluation bank and the loss as a pure function of parameters (flatkit/objective.py)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from flatkit.errors import FlatkitError, UsageError
from flatkit.objective import Objective, select_names, stratified_timesteps
from tests._small_unet import Images, small_run


def _small_run(learn_sigma: bool = False, dropout: float = 0.0, steps: int = 100):
    run = small_run(learn_sigma=learn_sigma, dropout=dropout, steps=steps)
    run.model.train()  # the objective must evaluate in eval mode without touching this flag
    return run


_Images = Images


@pytest.fixture(scope="module")
def run():
    return _small_run(dropout=0.1)


def test_bank_is_frozen_and_reproducible(run):
    a = Objective(run, data=_Images(), n=16, seed=3, batch_size=5)
    b = Objective(run, data=_Images(), n=16, seed=3, batch_size=16)
    assert a.config.bank_sha256 == b.config.bank_sha256
    assert a.n_batches == 4 and b.n_batches == 1
    la, lb = a.loss(), b.loss()
    assert la.dtype == torch.float64 and la.ndim == 0
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=0)  # micro-batching changes only float rounding
    assert torch.equal(a.loss(), la)
    c = Objective(run, data=_Images(), n=16, seed=4)
    assert c.config.bank_sha256 != a.config.bank_sha256


def test_batch_losses_sum_to_the_mean_loss(run):
    obj = Objective(run, data=_Images(), n=12, seed=0, batch_size=5)
    per = torch.cat([obj.per_sample_losses(obj.params, i) for i in range(obj.n_batches)]).double()
    torch.testing.assert_close(obj.loss(), per.mean(), rtol=1e-6, atol=0)


def test_timesteps_stratified_and_restricted(run):
    obj = Objective(run, data=_Images(), n=20, seed=0)
    t = obj.timesteps.sort().values
    strata = (t * 20) // 100  # one t per stratum of width T/n
    assert torch.equal(strata, torch.arange(20))
    r = Objective(run, data=_Images(), n=20, seed=0, timesteps=(10, 30))
    assert int(r.timesteps.min()) >= 10 and int(r.timesteps.max()) < 30
    binned = Objective(run, data=_Images(), n=20, seed=0, t_bins=4)
    _, edges, counts = binned.per_timestep(bins=4)
    assert counts.tolist() == [5, 5, 5, 5] and edges.tolist() == [0, 25, 50, 75, 100]


def test_stratified_timesteps_use_the_given_generator():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    assert torch.equal(stratified_timesteps(10, 0, 1000, g1), stratified_timesteps(10, 0, 1000, g2))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched


def test_model_is_not_mutated(run):
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    obj = Objective(run, data=_Images(), n=4, seed=0)
    params = {k: v + 0.1 for k, v in obj.params.items()}
    obj.loss(params)
    from flatkit.curvature import hessian_trace, top_eigenvalues

    top_eigenvalues(obj, k=1, tol=1e-1, max_iter=2, check=False)
    hessian_trace(obj, method="hutchinson", max_hvps=2, check=False)
    assert run.model.training  # the caller's mode is kept
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    assert all(p.grad is None for p in run.model.parameters())


def test_eval_mode_means_no_dropout_and_determinism(run):
    obj = Objective(run, data=_Images(), n=8, seed=0)
    assert torch.equal(obj.check_determinism(), obj.loss())


def test_check_determinism_fails_loudly():
    calls = {"n": 0}

    def f(p):
        calls["n"] += 1
        return (p["w"] ** 2).sum() + 1e-3 * calls["n"]

    obj = Objective.from_function(f, {"w": torch.ones(3, dtype=torch.float64)})
    with pytest.raises(FlatkitError, match="not deterministic"):
        obj.check_determinism()


def test_include_exclude_patterns(run):
    names = [n for n, _ in run.model.named_parameters()]
    only_attn = select_names(names, include=["*.qkv.*", r"proj_out\."], exclude=None)  # a glob and a regex
    assert only_attn and all((".qkv." in n or "proj_out." in n) for n in only_attn)
    no_bias = select_names(names, include=None, exclude=[r"\.bias$", "*norm*"])
    assert no_bias and not any(n.endswith(".bias") or "norm" in n for n in no_bias)
    obj = Objective(run, data=_Images(), n=8, seed=0, exclude=[r"\.bias$"])
    assert obj.num_params == sum(
        p.numel() for n, p in run.model.named_parameters() if not n.endswith(".bias")
    )
    assert obj.num_params < obj.config.num_params_total


def test_pattern_matching_nothing_raises(run):
    with pytest.raises(UsageError, match="'nothing_here' matches no parameter"):
        Objective(run, data=_Images(), n=8, include=["nothing_here"])
    with pytest.raises(UsageError, match="exclude"):
        Objective(run, data=_Images(), n=8, exclude=["zzz*"])


def test_bank_larger_than_dataset_is_usage_error(run):
    with pytest.raises(UsageError, match="--n-eval"):
        Objective(run, data=_Images(10), n=11)


def test_nan_names_the_timestep_bin(run):
    obj = Objective(run, data=_Images(), n=8, seed=0)
    bad = {k: v.clone() for k, v in obj.params.items()}
    name = next(iter(bad))
    bad[name].fill_(float("nan"))
    with pytest.raises(FlatkitError, match=r"loss is nan at t=\d+, in t-bin \d+ \[\d+, \d+\)") as e:
        obj.loss(bad)
    assert not isinstance(e.value, UsageError)


def test_per_timestep_and_restrict(run):
    obj = Objective(run, data=_Images(), n=20, seed=1, t_bins=4, batch_size=7)
    means, edges, counts = obj.per_timestep(bins=4)
    subs = obj.restrict(4)
    assert len(subs) == 4
    for b, sub in enumerate(subs):
        assert sub.n == counts[b]
        assert torch.all((sub.timesteps >= edges[b]) & (sub.timesteps < edges[b + 1]))
        torch.testing.assert_close(float(sub.loss()), means[b], rtol=1e-6, atol=0)
    # the mean loss is the count-weighted mean of the bins
    assert abs(float(obj.loss()) - float((means * counts).sum() / counts.sum())) < 1e-6
    one = obj.restrict((0, 25))
    assert one.config.restricted_to == [0, 25]


def test_config_is_json_able(run):
    obj = Objective(run, data=_Images(), n=8, seed=2, include=["*out*"])
    d = obj.config.to_dict()
    json.dumps(d)
    assert d["n"] == 8 and d["seed"] == 2 and d["loss_resolved"] == "mse" and d["include"] == ["*out*"]
    assert dataclasses.is_dataclass(obj.config)


def test_hybrid_loss_kind_is_recorded():
    run = _small_run(learn_sigma=True)
    obj = Objective(run, data=_Images(), n=6, seed=0)
    assert obj.config.loss_resolved == "hybrid"
    mse = Objective(run, data=_Images(), n=6, seed=0, loss="mse")
    assert float(obj.loss()) > float(mse.loss())  # the VLB term is added
    with pytest.raises(UsageError, match="--loss"):
        Objective(_small_run(), data=_Images(), n=6, loss="hybrid")
    with pytest.raises(UsageError, match="--loss"):
        Objective(_small_run(), data=_Images(), n=6, loss="hybrid-surrogate")
    sur = Objective(run, data=_Images(), n=6, seed=0, loss="hybrid-surrogate")
    assert sur.config.loss_resolved == "hybrid-surrogate" and sur.config.loss == "hybrid-surrogate"
    assert torch.equal(sur.loss(), obj.loss())  # the same values; only the derivatives differ


@pytest.fixture(scope="module")
def learned_sigma_run():
    """A tiny learned-σ UNet with the cosine schedule, in float64."""
    from flatkit.diffusion import create_diffusion
    from flatkit.run import Run

    run = _small_run(learn_sigma=True)
    dcfg = dataclasses.replace(run.config.diffusion, noise_schedule="cosine")
    return Run(model=run.model.double(), diffusion=create_diffusion(dcfg),
               config=dataclasses.replace(run.config, diffusion=dcfg))


def _float64_bank(obj):
    obj._x0, obj._eps = obj._x0.double(), obj._eps.double()
    return obj


@pytest.mark.parametrize("timesteps", [(0, 50), None], ids=["t<50", "all-t"])
def test_hvp_is_the_curvature_of_the_loss_values_for_each_loss_choice(learned_sigma_run, timesteps):
    """vᵀHv from the HVP equals a float64 central second difference of obj.loss along v for mse, hybrid and
    auto (= hybrid); ADM's surrogate (the mean detached in the VLB term) differentiates another function."""
    from flatkit.curvature.hvp import HVP
    from flatkit.curvature.vectors import flatten, unflatten

    vhv, sd = {}, {}
    for loss in ("auto", "mse", "hybrid", "hybrid-surrogate"):
        obj = _float64_bank(Objective(learned_sigma_run, data=_Images(), n=4, seed=0, timesteps=timesteps,
                                      loss=loss))
        theta = flatten(obj.params)
        v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        v /= v.norm()
        vhv[loss] = float(v @ HVP(obj)(v))

        def L(x, obj=obj):
            return float(obj.loss(unflatten(x, obj.params)))

        h = 1e-3
        sd[loss] = (L(theta + h * v) - 2 * L(theta) + L(theta - h * v)) / h**2
    for loss in ("auto", "mse", "hybrid"):
        assert vhv[loss] == pytest.approx(sd[loss], rel=1e-5), loss
    assert vhv["auto"] == vhv["hybrid"]
    assert sd["hybrid-surrogate"] == sd["hybrid"]  # the same loss values
    assert abs(vhv["hybrid-surrogate"] - sd["hybrid"]) > 1e-3 * abs(sd["hybrid"])  # not their curvature


def test_for_run_shares_the_bank(run):
    obj = Objective(run, data=_Images(), n=8, seed=0)
    other = _small_run()
    with torch.no_grad():
        for p in other.model.parameters():
            p.mul_(0.9)
    o2 = obj.for_run(other)
    assert o2.config.bank_sha256 == obj.config.bank_sha256
    assert float(o2.loss()) != float(obj.loss())


def test_data_spec_from_run_config(run):
    # builtin:shapes16 on an 8-pixel model: refused before any work, naming the fix
    import dataclasses

    loaded = dataclasses.replace(run, path="small.pt")  # checked for a checkpoint's run (a path)
    with pytest.raises(UsageError, match=r"^--data builtin:shapes16: RGB 16x16 images do not fit .*small.pt.*"
                                         r"image_size=8"):
        Objective(loaded, data="builtin:shapes16", n=8, seed=0)
    obj = Objective(run, n=8, seed=0)  # the run records builtin:shapes16?image_size=8
    assert obj.config.data.startswith("builtin:shapes16") and obj.config.data_fingerprint
    assert np.isfinite(float(obj.loss()))


def test_from_function_with_batches_sums():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    batches = [torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 3.0], dtype=torch.float64)]
    obj = Objective.from_function(lambda p, b: (p["w"] * b).sum() ** 2, {"w": w}, batches=batches)
    assert obj.n_batches == 2 and obj.num_params == 2
    assert float(obj.loss()) == 1.0 + 36.0
    g = obj.gradient()
    torch.testing.assert_close(g["w"], torch.tensor([2.0, 36.0], dtype=torch.float64))
    with pytest.raises(UsageError, match="--per-timestep"):
        obj.restrict((0, 1))
