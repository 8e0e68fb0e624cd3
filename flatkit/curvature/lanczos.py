"""Lanczos with full reorthogonalisation, and the top-k Hessian eigenvalues by it.

Lanczos (1950; Golub & Van Loan, "Matrix Computations", alg. 10.1.1) builds an orthonormal basis
``Q_m = [q_1 … q_m]`` of the Krylov space ``span{q_1, H q_1, …, H^{m-1} q_1}`` in which
``Q_mᵀ H Q_m = T_m`` is tridiagonal (diagonal α, off-diagonal β):

    w = H q_j − α_j q_j − β_{j-1} q_{j-1},   α_j = q_jᵀ H q_j,   β_j = ‖w‖,   q_{j+1} = w / β_j.

In floating point the q_j lose orthogonality as Ritz values converge, so every new w is orthogonalised against
the whole basis, twice ("twice is enough", classical Gram–Schmidt repeated; Giraud et al. 2005).
The Ritz values θ_i are the eigenvalues of T_m (symmetric solver, ``numpy.linalg.eigh``), the Ritz vectors
``y_i = Q_m s_i``, and ``‖H y_i − θ_i y_i‖ = |β_m s_{m,i}|`` (Golub & Van Loan, eq. 10.1.8) is the residual
we stop on. Unlike deflated power iteration, the top-k come out of one Krylov space, and they are the largest
ALGEBRAIC eigenvalues (negative curvature is reported as negative, not as a large magnitude).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flatkit.curvature.hvp import HVP
from flatkit.curvature.vectors import ParamDict, cpu_generator, gaussian, unflatten
from flatkit.errors import UsageError
from flatkit.results import Result


class LanczosProcess:
    """The three-term recurrence with full reorthogonalisation, one HVP per :meth:`step`.

    ``basis_device`` keeps Q on the HVP's device ("same") or on the CPU ("cpu", for large models on a GPU).
    On breakdown (β_j ≈ 0: the Krylov space is invariant, e.g. H of low rank) the process continues with a
    fresh random vector orthogonal to Q, with β_j = 0 so T stays block-diagonal and its Ritz values exact.
    """

    def __init__(
        self, op: HVP, q1: Tensor, basis_device: str = "same", generator: torch.Generator | None = None
    ) -> None:
        if basis_device not in ("same", "cpu"):
            raise UsageError(f"--basis-device: {basis_device!r} is not 'same' or 'cpu'")
        self.op = op
        self.basis_device = op.device if basis_device == "same" else torch.device("cpu")
        self.generator = generator
        self.Q: list[Tensor] = []
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples q_{j+1} and q_{j+2} (0-based: Q[j], Q[j+1])
        self._next = (q1 / torch.linalg.vector_norm(q1)).to(self.basis_device)
        self.breakdowns = 0

    @property
    def m(self) -> int:
        return len(self.alpha)

    def _orthogonalise(self, w: Tensor) -> Tensor:
        """w − Q Qᵀ w, twice (classical Gram–Schmidt with one reorthogonalisation)."""
        for _ in range(2):
            if not self.Q:
                break
            Q = torch.stack(self.Q)
            w = w - Q.T @ (Q @ w)
        return w

    def step(self) -> None:
        """One Lanczos step: one HVP, α_j, β_j, and the next basis vector."""
        q = self._next
        self.Q.append(q)
        w = self.op(q.to(self.op.device)).to(self.basis_device)
        a = float(torch.dot(q.to(torch.float64), w.to(torch.float64)))
        self.alpha.append(a)
        w = self._orthogonalise(w)
        b = float(torch.linalg.vector_norm(w.to(torch.float64)))
        scale = max(abs(x) for x in self.alpha) + max(self.beta, default=0.0)
        n = q.numel()
        if b <= 10 * math.sqrt(n) * torch.finfo(q.dtype).eps * max(scale, 1e-300) and self.m < n:
            # invariant subspace: restart with a random vector orthogonal to the basis
            self.breakdowns += 1
            gen = self.generator if self.generator is not None else cpu_generator(self.m)
            for _ in range(3):
                r = self._orthogonalise(gaussian((n,), gen, q.dtype, self.basis_device))
                if float(torch.linalg.vector_norm(r)) > 1e-8:
                    break
            self.beta.append(0.0)
            self._next = r / torch.linalg.vector_norm(r)
        else:
            self.beta.append(b)
            self._next = w / b if b > 0 else w

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors S of T_m, and residuals |β_m s_{m,i}|."""
        T = np.diag(np.asarray(self.alpha, dtype=np.float64))
        if self.m > 1:
            off = np.asarray(self.beta[:-1], dtype=np.float64)
            T += np.diag(off, 1) + np.diag(off, -1)
        theta, S = np.linalg.eigh(T)
        res = np.abs(self.beta[-1] * S[-1, :])
        return theta, S, res

    def ritz_vectors(self, S: np.ndarray) -> list[Tensor]:
        """y_i = Q_m s_i for the columns of S (flat vectors on the HVP's device)."""
        Q = torch.stack(self.Q)
        Sm = torch.as_tensor(S, dtype=Q.dtype, device=Q.device)
        Y = Sm.T @ Q
        return [y.to(self.op.device) for y in Y]


def relative_residuals(theta: np.ndarray, res: np.ndarray) -> np.ndarray:
    """|β_m s_{m,i}| / |θ_i|, with |θ_i| floored at 1e-12 · max|θ| so a zero eigenvalue does not divide by
    0."""
    floor = max(float(np.max(np.abs(theta))) * 1e-12, 1e-300) if theta.size else 1e-300
    return res / np.maximum(np.abs(theta), floor)


@dataclass
class EigenResult(Result):
    """Top-k Hessian eigenvalues (descending, largest algebraic) with their eigenvectors and residuals."""

    name = "top_eigenvalues"
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ‖H y − θ y‖ / |θ|
    hvp_count: int = 0
    iterations: int = 0
    converged: bool = False
    tol: float = 1e-3
    ritz_values: np.ndarray = field(default_factory=lambda: np.zeros(0))  # all Ritz values, ascending
    wall_time_s: float = 0.0
    eigenvectors: list[ParamDict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = super().to_json()
        out.pop("eigenvectors", None)
        return out


def _start_vector(n: int, seed: int, op: HVP) -> tuple[Tensor, torch.Generator]:
    g = cpu_generator(seed)
    return gaussian((n,), g, op.dtype, op.device), g


def top_eigenvalues(
    obj: Any,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    basis_device: str = "same",
    mode: str = "auto",
    check: bool = True,
    eigenvectors: bool = True,
) -> EigenResult:
    """The k largest (algebraic) eigenvalues of the objective's Hessian by Lanczos.

    Stops when every one of the top-k Ritz pairs has relative residual ``|β_m s_{m,i}| / |θ_i| < tol``
    (a bound on ‖H y_i − θ_i y_i‖ / |θ_i|; the eigenvalue error is at most the residual and, once the pair
    is separated from the rest of the spectrum by a gap δ, at most residual² / δ), or after ``max_iter`` HVPs
    (default ``min(N, max(100, 20 k))``); ``converged`` says which.
    """
    n = int(obj.num_params)
    if k < 1 or k > n:
        raise UsageError(f"--top-k: must be between 1 and the {n} analysed parameters, got {k}")
    if tol <= 0:
        raise UsageError(f"--tol: must be positive, got {tol}")
    max_iter = min(n, max(100, 20 * k)) if max_iter is None else min(int(max_iter), n)
    if max_iter < k:
        raise UsageError(f"--max-iter: {max_iter} is fewer than k={k}")
    if check:
        obj.check_determinism()
    t0 = time.perf_counter()
    op = HVP(obj, mode=mode)
    q1, g = _start_vector(n, seed, op)
    proc = LanczosProcess(op, q1, basis_device=basis_device, generator=g)
    converged = False
    while proc.m < max_iter:
        proc.step()
        if proc.m < k:
            continue
        theta, S, res = proc.ritz()
        rel = relative_residuals(theta, res)[::-1][:k]
        if np.all(rel < tol):
            converged = True
            break
    theta, S, res = proc.ritz()
    order = np.argsort(theta)[::-1][:k]
    rel = relative_residuals(theta, res)
    vecs = [unflatten(y, obj.params) for y in proc.ritz_vectors(S[:, order])] if eigenvectors else []
    return EigenResult(
        eigenvalues=theta[order].copy(),
        residuals=rel[order].copy(),
        hvp_count=op.count,
        iterations=proc.m,
        converged=bool(converged or proc.m >= n),
        tol=float(tol),
        ritz_values=theta.copy(),
        wall_time_s=time.perf_counter() - t0,
        eigenvectors=vecs,
        meta={
            "method": "lanczos",
            "k": k,
            "max_iter": max_iter,
            "seed": seed,
            "hvp_mode": op.mode,
            "basis_device": basis_device,
            "breakdowns": proc.breakdowns,
            "objective": _config_of(obj),
        },
    )


def _config_of(obj: Any) -> Any:
    cfg = getattr(obj, "config", None)
    return cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
