"""The curvature figures read a HessianResult and draw one labelled mark per model."""

import numpy as np

from flatkit.analyses.hessian import HessianResult
from flatkit.plots.curvature import plot_hessian


def _result(**kw):
    base = dict(labels=["plain:raw", "sam:raw"], loss=[0.1, 0.2], num_params=[10, 10],
                eigenvalues=[[5.0, 3.0], [1.0, 0.5]], trace=[40.0, 12.0], trace_stderr=[2.0, None],
                meta={"config": {"n_eval": 8}})
    base.update(kw)
    return HessianResult(**base)


def test_summary_figure_for_a_comparison(tmp_path):
    paths = plot_hessian(_result(), tmp_path)
    assert [p.name for p in paths] == ["hessian.png", "hessian.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_density_and_per_timestep_figures_when_present(tmp_path):
    grid = np.linspace(-1, 6, 50)
    dens = np.stack([np.exp(-grid ** 2), np.exp(-(grid - 1) ** 2)])
    res = _result(density_grid=np.stack([grid, grid]), density=dens, per_timestep_edges=np.array([0, 50, 100]),
                  per_timestep_top_eigenvalues=np.array([[[3.0], [1.0]], [[2.0], [0.5]]]))
    names = {p.name for p in plot_hessian(res, tmp_path)}
    assert {"hessian.png", "hessian_density.png", "hessian_per_timestep.png"} <= names


def test_no_curvature_numbers_no_summary_figure(tmp_path):
    assert plot_hessian(_result(eigenvalues=[], trace=[], trace_stderr=[]), tmp_path) == []
