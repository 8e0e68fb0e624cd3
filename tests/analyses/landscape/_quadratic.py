"""Quadratic objectives ½ (θ − θ*)ᵀ A (θ − θ*) + c with known A (float64 oracles)."""

from __future__ import annotations

import torch

from flatkit.objective import Objective


def spd(n: int, eigs: list[float] | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.tensor(eigs if eigs is not None else [float(i + 1) for i in range(n)], dtype=torch.float64)
    return Q @ torch.diag(lam) @ Q.T


def quadratic(A: torch.Tensor, shapes: dict[str, tuple], theta_star: dict | None = None, c: float = 0.0,
              n_batches: int = 1):
    """An Objective over parameter dict with the given shapes; the loss split evenly over ``n_batches``."""
    params = {k: torch.zeros(s, dtype=torch.float64) for k, s in shapes.items()}
    if theta_star is not None:
        params = {k: v.clone() for k, v in theta_star.items()}
    star = {k: v.clone() for k, v in params.items()}
    names = list(shapes)

    def fn(p, batch=None):
        x = torch.cat([(p[k] - star[k]).reshape(-1) for k in names])
        return (0.5 * x @ A @ x + c) / n_batches

    batches = list(range(n_batches)) if n_batches > 1 else None
    return Objective.from_function(fn, params, batches=batches)
