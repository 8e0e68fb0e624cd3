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
