"""Float64 oracles for the curvature tests: quadratics with known spectra and a tiny MLP."""

from __future__ import annotations

import torch

from flatkit.objective import Objective


def symmetric_with_spectrum(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A = U diag(eigs) Uᵀ with a random orthogonal U (float64)."""
    g = torch.Generator().manual_seed(seed)
    n = eigs.numel()
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (U * eigs) @ U.T


def quadratic(A: torch.Tensor, seed: int = 1) -> Objective:
    """½ θᵀAθ with θ split over two parameter tensors (so dict handling is exercised)."""
    n = A.shape[0]
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, generator=g, dtype=torch.float64)
    k = n // 3

    def f(p):
        th = torch.cat([p["a"].reshape(-1), p["b"].reshape(-1)])
        return 0.5 * th @ A @ th

    return Objective.from_function(f, {"a": theta[:k].clone(), "b": theta[k:].reshape(-1, 1).clone()})


class TinyMLP(torch.nn.Module):
    def __init__(self, d_in: int = 4, h: int = 6, d_out: int = 2) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(d_in, h)
        self.fc2 = torch.nn.Linear(h, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def tiny_mlp_problem(seed: int = 0, n: int = 32, batches: int = 2):
    """(model, inputs, targets, objective) for MSE regression, float64, loss = mean over all n samples."""
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    model = TinyMLP()
    torch.random.set_rng_state(torch_state)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.8)
    model = model.double()
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    chunks = list(zip(x.chunk(batches), y.chunk(batches), strict=True))

    def f(p, batch):
        xb, yb = batch
        out = torch.func.functional_call(model, p, (xb,))
        return ((out - yb) ** 2).sum() / (n * yb.shape[1])  # the batches sum to the mean over all samples

    obj = Objective.from_function(f, dict(model.named_parameters()), batches=chunks)
    return model, x, y, obj


def full_hessian(obj: Objective) -> torch.Tensor:
    """The dense Hessian (N × N) of the objective's loss by torch.func.hessian on a flat vector."""
    from flatkit.curvature.vectors import flatten, unflatten

    theta = flatten(obj.params)

    def f(vec):
        p = unflatten(vec, obj.params)
        return sum(obj.batch_loss(p, i) for i in range(obj.n_batches))

    return torch.func.hessian(f)(theta)
