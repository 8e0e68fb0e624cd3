import numpy as np
import torch

from flatkit.curvature.density import spectral_density

from .helpers import quadratic, symmetric_with_spectrum


def test_density_integrates_to_one_and_weights_sum_to_one():
    eigs = torch.linspace(-2.0, 10.0, 150, dtype=torch.float64)
    res = spectral_density(quadratic(symmetric_with_spectrum(eigs)), runs=3, steps=40, seed=0)
    assert abs(res.integral - 1.0) < 1e-6
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-10)
    assert res.nodes.shape == (3, 40) and res.hvp_count == 120
    # first moment: ∫ t φ(t) dt = E[vᵀAv] / ‖v‖² ≈ tr(A)/N
    mean = float(np.trapezoid(res.grid * res.density, res.grid))
    assert abs(mean - float(eigs.mean())) < 0.5
    # the nodes stay inside the spectrum's range
    assert res.nodes.min() >= -2.0 - 1e-8 and res.nodes.max() <= 10.0 + 1e-8


def test_density_mass_at_the_right_eigenvalues():
    # three clusters of 40 equal eigenvalues: the mass near each is ~1/3 and nothing elsewhere
    eigs = torch.cat([torch.full((40,), v, dtype=torch.float64) for v in (-1.0, 2.0, 6.0)])
    res = spectral_density(quadratic(symmetric_with_spectrum(eigs, seed=2)), runs=8, steps=20, sigma=0.05)
    assert abs(res.integral - 1.0) < 1e-6
    for v in (-1.0, 2.0, 6.0):
        near = (res.grid > v - 0.5) & (res.grid < v + 0.5)
        mass = float(np.trapezoid(res.density[near], res.grid[near]))
        assert abs(mass - 1 / 3) < 0.1
    # the weights sit on nodes at the eigenvalues
    w_at = sum(res.weights[np.abs(res.nodes - v) < 1e-6].sum() for v in (-1.0, 2.0, 6.0))
    np.testing.assert_allclose(w_at, res.runs, atol=1e-8)


def test_density_result_saves(tmp_path):
    res = spectral_density(
        quadratic(symmetric_with_spectrum(torch.linspace(0, 1, 20, dtype=torch.float64))),
        runs=2,
        steps=10,
        grid=200,
    )
    jpath, npath = res.save(tmp_path)
    arrs = np.load(npath)
    assert set(arrs) >= {"grid", "density", "nodes", "weights"}
