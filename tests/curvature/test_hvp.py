import pytest
import torch

from flatkit.curvature.hvp import HVP, hvp
from flatkit.curvature.vectors import flatten, unflatten

from .helpers import full_hessian, quadratic, symmetric_with_spectrum, tiny_mlp_problem


def test_flatten_unflatten_roundtrip():
    d = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7.0, 8.0])}
    v = flatten(d)
    assert v.tolist() == [0, 1, 2, 3, 4, 5, 7, 8]
    back = unflatten(v, d)
    assert all(torch.equal(back[k], d[k]) for k in d)
    stacked = unflatten(torch.stack([v, 2 * v]), d)
    assert stacked["w"].shape == (2, 2, 3) and torch.equal(stacked["b"][1], 2 * d["b"])


def test_quadratic_hvp_is_A_v():
    A = symmetric_with_spectrum(torch.linspace(-2, 5, 12, dtype=torch.float64))
    obj = quadratic(A)
    v = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for mode in ("fwd_rev", "double_backward"):
        torch.testing.assert_close(HVP(obj, mode=mode)(v), A @ v, rtol=1e-12, atol=1e-12)


def test_fwd_rev_equals_double_backward_and_dense_hessian():
    _, _, _, obj = tiny_mlp_problem()
    H = full_hessian(obj)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        v = torch.randn(obj.num_params, generator=g, dtype=torch.float64)
        a = HVP(obj, mode="fwd_rev")(v)
        b = HVP(obj, mode="double_backward")(v)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a, H @ v, rtol=1e-10, atol=1e-12)


def test_vmapped_many_equals_one_at_a_time_and_counts():
    _, _, _, obj = tiny_mlp_problem()
    V = torch.randn(5, obj.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    op1, op3 = HVP(obj, vectors_per_call=1), HVP(obj, mode="fwd_rev", vectors_per_call=3)  # vmapped
    torch.testing.assert_close(op1.many(V), op3.many(V), rtol=1e-10, atol=1e-12)
    assert op1.count == 5 and op3.count == 5


def test_hvp_accepts_param_dicts():
    _, _, _, obj = tiny_mlp_problem()
    vd = {k: torch.ones_like(t) for k, t in obj.params.items()}
    out = hvp(obj, vd)
    assert set(out) == set(obj.params)
    torch.testing.assert_close(flatten(out), hvp(obj, flatten(vd)))


def test_cached_graph_hvp_equals_fresh_double_backward_over_micro_batches():
    """The kept-graph HVP (auto) gives the same products as rebuilding the graph, over several micro-batches."""
    import torch

    from flatkit.curvature.hvp import HVP
    from flatkit.objective import Objective

    g = torch.Generator().manual_seed(0)
    W1 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    W2 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    X = [torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(3)]

    def fn(p, x):
        return (torch.tanh(x @ p["W1"].T) @ p["W2"].T).pow(2).mean()

    obj = Objective.from_function(fn, {"W1": W1, "W2": W2}, batches=X)
    cached, fresh = HVP(obj, mode="auto"), HVP(obj, mode="double_backward")
    assert cached.mode == "double_backward_cached"
    for _ in range(3):  # the kept graph serves every later product
        v = torch.randn(obj.num_params, generator=g, dtype=torch.float64)
        assert torch.allclose(cached(v), fresh(v), rtol=1e-12, atol=1e-14)



def _conv_bank_objective(batch_size: int):
    """A float32 conv denoiser-like objective with one parameter the loss does not use (its product is 0)."""
    from flatkit.objective import Objective

    g = torch.Generator().manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(6, 3, 3, padding=1))
    params = {k: v.detach() for k, v in net.named_parameters()}
    params["unused"] = torch.randn(4, generator=g)
    x = torch.randn(8, 3, 6, 6, generator=g)

    def f(p, batch):
        q = {k: v for k, v in p.items() if k != "unused"}
        return ((torch.func.functional_call(net, q, (x[batch],)) - x[batch]) ** 2).mean()

    return Objective.from_function(f, params, batches=[list(range(i, min(i + batch_size, 8)))
                                                      for i in range(0, 8, batch_size)])


@pytest.mark.parametrize("engine", ["direct", "no-engine", "engine-signature-changed"])
@pytest.mark.parametrize("batch_size", [8, 3])
def test_cached_product_is_torch_autograd_grad_bit_for_bit(monkeypatch, engine, batch_size):
    """The kept-graph product calls the autograd engine directly (no grad_outputs checks, no float64 round trip
    for one micro-batch, v in a reused buffer); every product, not only the first, equals torch.autograd.grad
    with grad_outputs=v summed in float64 bit for bit, and so does its fallback (a torch without that engine
    call, or with another signature); the vmapped pass works through both."""
    import importlib

    from flatkit.curvature.hvp import _gradient_graph

    hvp_mod = importlib.import_module("flatkit.curvature.hvp")  # the package exports the function hvp too

    if engine == "no-engine":
        monkeypatch.setattr(hvp_mod, "_engine", lambda: None)
    elif engine == "engine-signature-changed":
        class _Other:
            def run_backward(self, *a):
                raise TypeError("run_backward(): incompatible function arguments")

        monkeypatch.setattr(hvp_mod, "_engine", lambda: _Other())
        monkeypatch.setattr(hvp_mod, "_ENGINE_OK", True)
    obj = _conv_bank_objective(batch_size)
    op = HVP(obj)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(obj.num_params, generator=gen)
        want = torch.zeros(obj.num_params, dtype=torch.float64)
        for i in range(obj.n_batches):
            leaves, grads = _gradient_graph(obj, obj.params, i)
            used = [j for j, t in enumerate(grads) if t is not None]
            vs = list(unflatten(v, obj.params).values())
            hv = torch.autograd.grad([grads[j] for j in used], leaves, grad_outputs=[vs[j] for j in used],
                                     allow_unused=True)
            want += torch.cat([(h if h is not None else torch.zeros_like(t)).reshape(-1)
                               for h, t in zip(hv, leaves, strict=True)]).double()
        before = v.clone()
        got = op(v)
        assert got.dtype == torch.float32 and torch.equal(got, want.float())
        assert torch.equal(v, before)  # v is copied into the operator's buffer, not written
        assert torch.equal(got[-4:], torch.zeros(4))  # the unused parameter
    assert op.count == 3
    # the vmapped pass (several vectors per backward) takes the same engine call or fallback, and imports no
    # torch.fx either way; its products agree with one at a time to float rounding (batched kernels)
    V = torch.randn(3, obj.num_params, generator=gen)
    vm = HVP(obj, vectors_per_call=3, batch="vmap")
    torch.testing.assert_close(vm.many(V), torch.stack([op(row) for row in V]), rtol=1e-5, atol=1e-6)
    assert vm.batch == "vmap" and "vmap_failed" not in vm.calibration
    if engine == "engine-signature-changed":
        assert hvp_mod._ENGINE_OK is False  # tried once, then the public API for every later product



class _FusedSiLU(torch.autograd.Function):
    """SiLU with a hand-written backward and no forward-mode derivative, like a fused kernel (on some torch
    builds the fused GroupNorm / SiLU backward raises "ZeroTensors are immutable" under forward mode)."""

    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s))


class _Fused(torch.nn.Module):
    def forward(self, x):
        return _FusedSiLU.apply(x)


def _conv_groupnorm_silu(fused: bool):
    """A Conv–GroupNorm–SiLU net (the blocks of an ADM UNet), float64, over two micro-batches."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8),
                              _Fused() if fused else torch.nn.SiLU(), torch.nn.Conv2d(8, 3, 3, padding=1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)

    def f(p, batch):
        return (torch.func.functional_call(net, p, (x[batch],)) ** 2).mean() / 2

    from flatkit.objective import Objective

    return Objective.from_function(f, {k: v.detach() for k, v in net.named_parameters()}, batches=[[0, 1], [2, 3]])


@pytest.mark.parametrize("fused", [False, True], ids=["torch-silu", "fused-silu"])
def test_fwd_rev_on_conv_groupnorm_silu_or_its_fallback(fused):
    """fwd_rev on Conv–GroupNorm–SiLU gives the dense Hessian's products: directly where forward mode runs,
    else through the double-backward fallback, with a warning (the fused SiLU has no forward-mode rule)."""
    import warnings

    from flatkit.curvature import top_eigenvalues

    obj = _conv_groupnorm_silu(fused)
    v = torch.randn(obj.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    op = HVP(obj, mode="fwd_rev")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = op(v)
    fell_back = [w for w in caught if "forward-over-reverse HVP failed" in str(w.message)]
    assert bool(fell_back) == (op.mode == "double_backward")
    if fused:
        assert fell_back and "double backward" in str(fell_back[0].message)
    torch.testing.assert_close(a, HVP(obj, mode="double_backward")(v), rtol=1e-12, atol=1e-14)
    dense = full_hessian(_conv_groupnorm_silu(fused=False))  # the same function (vmap needs torch's SiLU)
    torch.testing.assert_close(a, dense @ v, rtol=1e-10, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = top_eigenvalues(obj, k=1, mode="fwd_rev", tol=1e-8, check=False)
        many = HVP(obj, mode="fwd_rev", vectors_per_call=2).many(torch.stack([v, 2 * v]))
    ref = top_eigenvalues(obj, k=1, mode="double_backward", tol=1e-8, check=False)
    assert float(e.eigenvalues[0]) == pytest.approx(float(ref.eigenvalues[0]), rel=1e-8)
    torch.testing.assert_close(many, torch.stack([a, 2 * a]), rtol=1e-10, atol=1e-12)
