"""The sequential grid writes its points into one buffer built once per grid (not per block): the values are
bit for bit those of θ + Σ c_i d_i built out of place, point by point, whatever the block size."""

from __future__ import annotations

import numpy as np
import torch

from flatkit.analyses.landscape import landscape
from flatkit.analyses.landscape.evaluate import PointBuffer, loss_float64, losses_sequential, point_params
from flatkit.objective import Objective


def _problem():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.SiLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 1))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 2, 5, 5, generator=g) for _ in range(2)]
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    obj = Objective.from_function(lambda p, x: torch.func.functional_call(net, p, (x,)).pow(2).mean(), params, xs)
    dirs = [{k: torch.randn(v.shape, generator=g) for k, v in params.items()} for _ in range(2)]
    return obj, params, dirs


def test_one_buffer_for_every_block_is_bit_identical_to_out_of_place_points():
    obj, theta, dirs = _problem()
    coeffs = np.array([[a, b] for a in np.linspace(-0.7, 0.7, 4) for b in np.linspace(-0.3, 0.9, 3)])
    ref = np.array([loss_float64(obj, point_params(theta, dirs, row)) for row in coeffs])
    points = PointBuffer.build(theta, dirs)
    blocks = [losses_sequential(obj, theta, dirs, coeffs[s:s + 5], points) for s in range(0, len(coeffs), 5)]
    assert np.array_equal(np.concatenate(blocks), ref)
    assert np.array_equal(losses_sequential(obj, theta, dirs, coeffs), ref)  # a buffer of its own


def test_grid_is_independent_of_the_block_size():
    obj, theta, dirs = _problem()
    grids = [landscape(obj, dims=2, points=5, span=0.5, directions=dirs, mode="sequential", batch_points=bp,
                       check=False).values for bp in (1, 4, 25)]
    assert np.array_equal(grids[0], grids[1]) and np.array_equal(grids[0], grids[2])
