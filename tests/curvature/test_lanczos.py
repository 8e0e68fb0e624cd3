import numpy as np
import pytest
import torch

from flatkit.curvature.hvp import HVP
from flatkit.curvature.lanczos import top_eigenvalues
from flatkit.curvature.vectors import flatten
from flatkit.errors import UsageError

from .helpers import full_hessian, quadratic, symmetric_with_spectrum, tiny_mlp_problem


def test_quadratic_top_k_to_1e6_relative():
    eigs = torch.cat(
        [
            torch.tensor([50.0, 31.0, 20.0, 12.5, 9.0], dtype=torch.float64),
            torch.linspace(-3.0, 4.0, 195, dtype=torch.float64),
        ]
    )
    obj = quadratic(symmetric_with_spectrum(eigs))
    res = top_eigenvalues(obj, k=5, tol=1e-8)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, [50.0, 31.0, 20.0, 12.5, 9.0], rtol=1e-6)
    assert res.hvp_count < 100  # far below deflated power iteration's budget
    assert res.certified and np.all(res.error_bounds <= 1e-8 * np.abs(res.eigenvalues))
    assert np.all(np.abs(res.eigenvalues - [50.0, 31.0, 20.0, 12.5, 9.0]) <= res.error_bounds + 1e-12)


def test_largest_algebraic_not_largest_magnitude():
    eigs = torch.cat(
        [torch.tensor([-40.0, 7.0, 5.0], dtype=torch.float64), torch.linspace(-1, 1, 47, dtype=torch.float64)]
    )
    res = top_eigenvalues(quadratic(symmetric_with_spectrum(eigs, seed=4)), k=2, tol=1e-9)
    np.testing.assert_allclose(res.eigenvalues, [7.0, 5.0], rtol=1e-6)


def test_eigenvectors_satisfy_H_y_equals_lambda_y():
    A = symmetric_with_spectrum(torch.linspace(0.0, 10.0, 40, dtype=torch.float64) ** 1.5)
    obj = quadratic(A)
    res = top_eigenvalues(obj, k=3, tol=1e-10)
    for lam, y in zip(res.eigenvalues, res.eigenvectors, strict=True):
        y = flatten(y)
        assert set(res.eigenvectors[0]) == set(obj.params)
        torch.testing.assert_close(A @ y, lam * y, rtol=0, atol=1e-6 * lam)
        assert abs(float(y.norm()) - 1.0) < 1e-10


def test_small_problem_exact_when_krylov_space_is_full():
    eigs = torch.tensor([3.0, 1.0, -2.0, 0.5, 0.0, 4.0], dtype=torch.float64)
    res = top_eigenvalues(quadratic(symmetric_with_spectrum(eigs)), k=6, tol=1e-12)
    np.testing.assert_allclose(res.eigenvalues, [4.0, 3.0, 1.0, 0.5, 0.0, -2.0], atol=1e-10)
    assert res.hvp_count <= 6


def test_low_rank_hessian_breakdown_is_handled():
    eigs = torch.zeros(30, dtype=torch.float64)
    eigs[:2] = torch.tensor([5.0, 2.0], dtype=torch.float64)
    res = top_eigenvalues(quadratic(symmetric_with_spectrum(eigs)), k=3, tol=1e-8)
    np.testing.assert_allclose(res.eigenvalues, [5.0, 2.0, 0.0], atol=1e-9)


def test_basis_on_cpu_gives_same_numbers():
    obj = quadratic(symmetric_with_spectrum(torch.linspace(1, 9, 25, dtype=torch.float64)))
    a = top_eigenvalues(obj, k=2, tol=1e-8, basis_device="same")
    b = top_eigenvalues(obj, k=2, tol=1e-8, basis_device="cpu")
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)


def test_tiny_mlp_top5_matches_dense_hessian():
    _, _, _, obj = tiny_mlp_problem()
    exact = torch.linalg.eigvalsh(full_hessian(obj)).flip(0)[:5].numpy()
    res = top_eigenvalues(obj, k=5, tol=1e-6)
    np.testing.assert_allclose(res.eigenvalues, exact, rtol=1e-4)
    res_db = top_eigenvalues(obj, k=5, tol=1e-6, mode="double_backward")
    np.testing.assert_allclose(res_db.eigenvalues, exact, rtol=1e-4)


def test_k_larger_than_parameter_count_is_usage_error():
    obj = quadratic(symmetric_with_spectrum(torch.ones(6, dtype=torch.float64)))
    with pytest.raises(UsageError, match="--top-k"):
        top_eigenvalues(obj, k=7)


def test_result_json_and_save(tmp_path):
    obj = quadratic(symmetric_with_spectrum(torch.linspace(1, 9, 25, dtype=torch.float64)))
    res = top_eigenvalues(obj, k=2)
    js = res.to_json()
    assert "eigenvectors" not in js and len(js["eigenvalues"]) == 2 and js["hvp_count"] == res.hvp_count
    jpath, npath = res.save(tmp_path)
    assert jpath.is_file() and np.load(npath)["eigenvalues"].shape == (2,)


def test_agrees_with_pyhessian_top_eigenvalue():
    pyhessian = pytest.importorskip("pyhessian")
    model, x, y, _ = tiny_mlp_problem(batches=1)
    # the same model and batch as one objective
    from flatkit.objective import Objective

    def f(p):
        return torch.nn.functional.mse_loss(torch.func.functional_call(model, p, (x,)), y)

    obj = Objective.from_function(f, dict(model.named_parameters()))
    ours = top_eigenvalues(obj, k=1, tol=1e-6).eigenvalues[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.random.fork_rng():  # PyHessian draws from the global RNG
        torch.manual_seed(0)
        h = pyhessian.hessian(model, torch.nn.functional.mse_loss, data=(x, y), cuda=False)
        theirs, _ = h.eigenvalues(top_n=1, maxIter=1000, tol=1e-6)
    assert abs(ours - theirs[0]) / abs(ours) < 1e-3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_hvp_count_matches_iterations():
    obj = quadratic(symmetric_with_spectrum(torch.linspace(1, 9, 25, dtype=torch.float64)))
    res = top_eigenvalues(obj, k=1, tol=1e-3)
    assert res.hvp_count == res.iterations
    assert isinstance(HVP(obj).count, int)
