"""Lanczos with full reorthogonalisation, and the top-k Hessian eigenvalues by it.

Lanczos (1950; Golub & Van Loan, "Matrix Computations", alg. 10.1.1) builds an orthonormal basis
``Q_m = [q_1 … q_m]`` of the Krylov space ``span{q_1, H q_1, …, H^{m-1} q_1}`` in which
``Q_mᵀ H Q_m = T_m`` is tridiagonal (diagonal α, off-diagonal β):

    w = H q_j − α_j q_j − β_{j-1} q_{j-1},   α_j = q_jᵀ H q_j,   β_j = ‖w‖,   q_{j+1} = w / β_j.

In floating point the q_j lose orthogonality as Ritz values converge, so every new w is orthogonalised against
the whole basis, twice ("twice is enough", classical Gram–Schmidt repeated; Giraud et al. 2005).
The Ritz values θ_i are the eigenvalues of T_m (symmetric solver, ``numpy.linalg.eigh``), the Ritz vectors
``y_i = Q_m s_i``, and ``‖H y_i − θ_i y_i‖ = |β_m s_{m,i}|`` (Golub & Van Loan, eq. 10.1.8) is the residual
that, with the gap to the other Ritz values, certifies the error of each eigenvalue (:class:`Certifier`:
``|λ_i − θ_i| ≤ min(r_i, r_i²/gap_i)``, guarded); the process stops as soon as the top-k are certified to
``tol``. The basis lives in one preallocated buffer; :class:`BlockLanczosProcess` is the block variant that
resolves repeated eigenvalues. Unlike deflated power iteration, the top-k come out of one Krylov space, and
they are the largest ALGEBRAIC eigenvalues (negative curvature is reported as negative, not as a large magnitude).
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
    The basis lives in ONE preallocated ``(capacity + 1) × N`` buffer (row j is q_{j+1}; the row after the last
    filled one holds the next vector), so reorthogonalisation works on a view of the filled rows instead of
    stacking the basis into a fresh copy every step; ``capacity=None`` grows the buffer by doubling.
    On breakdown (β_j ≈ 0: the Krylov space is invariant, e.g. H of low rank) the process continues with a
    fresh random vector orthogonal to Q, with β_j = 0 so T stays block-diagonal and its Ritz values exact.
    """

    def __init__(
        self,
        op: HVP,
        q1: Tensor,
        basis_device: str = "same",
        generator: torch.Generator | None = None,
        capacity: int | None = None,
    ) -> None:
        if basis_device not in ("same", "cpu"):
            raise UsageError(f"--basis-device: {basis_device!r} is not 'same' or 'cpu'")
        self.op = op
        self.basis_device = op.device if basis_device == "same" else torch.device("cpu")
        self.generator = generator
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples q_{j+1} and q_{j+2} (0-based: rows j and j+1)
        q1 = q1.reshape(-1)
        rows = int(capacity) + 1 if capacity is not None else 16
        self._buf = torch.empty((rows, q1.numel()), dtype=q1.dtype, device=self.basis_device)
        self._buf[0] = (q1 / torch.linalg.vector_norm(q1)).to(self.basis_device)
        self.breakdowns = 0

    @property
    def m(self) -> int:
        return len(self.alpha)

    @property
    def Q(self) -> Tensor:
        """The filled basis rows ``[q_1 … q_m]`` (an ``m × N`` view of the buffer)."""
        return self._buf[: self.m]

    def _reserve(self, rows: int) -> None:
        if rows > self._buf.shape[0]:
            grown = torch.empty((max(rows, 2 * self._buf.shape[0]), self._buf.shape[1]), dtype=self._buf.dtype,
                                device=self._buf.device)
            grown[: self._buf.shape[0]] = self._buf
            self._buf = grown

    def _orthogonalise(self, w: Tensor) -> Tensor:
        """w − Q Qᵀ w, twice (classical Gram–Schmidt with one reorthogonalisation), Q the filled rows."""
        if self.m == 0:
            return w
        Q = self._buf[: self.m]
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        return w

    def step(self) -> None:
        """One Lanczos step: one HVP, α_j, β_j, and the next basis vector."""
        j = self.m
        self._reserve(j + 2)
        q = self._buf[j].clone()  # a fresh (aligned) vector: BLAS sums an offset row in another order
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
            self._buf[j + 1] = r / torch.linalg.vector_norm(r)
        else:
            self.beta.append(b)
            self._buf[j + 1] = w / b if b > 0 else w

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
        Q = self.Q
        Sm = torch.as_tensor(S, dtype=Q.dtype, device=Q.device)
        Y = Sm.T @ Q
        return [y.to(self.op.device) for y in Y]


class BlockLanczosProcess:
    """Block Lanczos with full reorthogonalisation: ``b`` HVPs per :meth:`step`, one block of b basis vectors.

    From one vector Lanczos sees each distinct eigenvalue once (the Krylov space holds one direction of each
    eigenspace); from a block of b random vectors it sees up to b copies of a repeated eigenvalue (Golub &
    Underwood 1977; Golub & Van Loan, §10.3.6). The projected matrix ``T_m = Q_mᵀ H Q_m`` is assembled column
    block by column block from the HVPs themselves (``Q_mᵀ (H Q_j)``), so rank-deficient blocks need no
    bookkeeping: a direction lost in the QR of the new block is replaced by a random vector orthogonal to the
    basis. The residual of a Ritz pair is ``‖(I − Q Qᵀ) H Q_j s_{last}‖`` (the last block of s), computed from
    the b×b Gram matrix of the orthogonalised new block.
    """

    def __init__(self, op: HVP, Q1: Tensor, basis_device: str = "same", generator: torch.Generator | None = None,
                 capacity: int | None = None) -> None:
        if basis_device not in ("same", "cpu"):
            raise UsageError(f"--basis-device: {basis_device!r} is not 'same' or 'cpu'")
        self.op, self.generator = op, generator
        self.basis_device = op.device if basis_device == "same" else torch.device("cpu")
        self.b, n = Q1.shape
        cap = int(capacity) if capacity is not None else 16 * self.b
        self._buf = torch.empty((cap + self.b, n), dtype=Q1.dtype, device=self.basis_device)
        self._filled = 0  # rows holding basis vectors (the next block included)
        self._put(Q1.to(self.basis_device), None)
        self.m = 0  # basis vectors whose HVP is done
        self.T = np.zeros((0, 0))
        self._gram = np.zeros((self.b, self.b))
        self.breakdowns = 0

    def _reserve(self, rows: int) -> None:
        if rows > self._buf.shape[0]:
            grown = torch.empty((max(rows, 2 * self._buf.shape[0]), self._buf.shape[1]), dtype=self._buf.dtype,
                                device=self._buf.device)
            grown[: self._filled] = self._buf[: self._filled]
            self._buf = grown

    def _orth(self, W: Tensor, rows: int) -> Tensor:
        Q = self._buf[:rows]
        for _ in range(2):
            W = W - (W @ Q.T) @ Q
        return W

    def _put(self, W: Tensor, norms: Tensor | None) -> None:
        """Append an orthonormal basis of the rows of W (orthogonal to the basis already there)."""
        b, n = W.shape
        self._reserve(self._filled + b)
        Qn, R = torch.linalg.qr(W.T)
        scale = float(torch.max(torch.abs(R))) if R.numel() else 0.0
        lost = torch.abs(torch.diagonal(R)) <= 1e-10 * max(scale, 1e-300)
        if norms is not None:
            lost |= torch.abs(torch.diagonal(R)) <= 10 * math.sqrt(n) * torch.finfo(W.dtype).eps * float(norms)
        rows = Qn.T.contiguous()
        for c in torch.nonzero(lost).flatten().tolist():  # rank-deficient: a fresh random direction
            self.breakdowns += 1
            gen = self.generator if self.generator is not None else cpu_generator(self._filled + c)
            r = gaussian((n,), gen, W.dtype, self.basis_device)
            for _ in range(2):
                r = self._orth(r[None], self._filled)[0]
                others = torch.cat([rows[:c], rows[c + 1:]])
                r = r - (others @ r) @ others
            rows[c] = r / torch.linalg.vector_norm(r)
        self._buf[self._filled : self._filled + b] = rows
        self._filled += b

    def step(self) -> None:
        """One block step: b HVPs, the new column block of T, and the next block."""
        j0, b = self.m, self.b
        Qj = self._buf[j0 : j0 + b]
        W = torch.stack([self.op(q.to(self.op.device)).to(self.basis_device) for q in Qj])
        m = j0 + b
        col = (self._buf[:m].to(torch.float64) @ W.to(torch.float64).T).cpu().numpy()  # Q_mᵀ H Q_j
        T = np.zeros((m, m))
        T[:j0, :j0] = self.T
        T[:, j0:m] = col
        T[j0:m, :j0] = col[:j0].T
        T[j0:m, j0:m] = 0.5 * (col[j0:m] + col[j0:m].T)
        self.T, self.m = T, m
        W = self._orth(W, m)
        self._gram = (W.to(torch.float64) @ W.to(torch.float64).T).cpu().numpy()
        if m + b <= W.shape[1]:
            norm = float(np.max(np.abs(T))) if T.size else 0.0
            self._put(W, torch.tensor(norm))

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors S of T_m, and residuals ‖(I − QQᵀ) H Q_j s_last‖."""
        theta, S = np.linalg.eigh(self.T)
        last = S[-self.b :, :]
        res = np.sqrt(np.maximum(np.einsum("ai,ab,bi->i", last, self._gram, last), 0.0))
        return theta, S, res

    def ritz_vectors(self, S: np.ndarray) -> list[Tensor]:
        Q = self._buf[: self.m]
        Y = torch.as_tensor(S, dtype=Q.dtype, device=Q.device).T @ Q
        return [y.to(self.op.device) for y in Y]


def relative_residuals(theta: np.ndarray, res: np.ndarray) -> np.ndarray:
    """|β_m s_{m,i}| / |θ_i|, with |θ_i| floored at 1e-12 · max|θ| so a zero eigenvalue does not divide by
    0."""
    return res / _scale(theta, theta)


def _scale(theta_all: np.ndarray, theta: np.ndarray) -> np.ndarray:
    floor = max(float(np.max(np.abs(theta_all))) * 1e-12, 1e-300) if theta_all.size else 1e-300
    return np.maximum(np.abs(theta), floor)


def ritz_bounds(theta: np.ndarray, res: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-k Ritz values (descending), their residuals r_i and their gap bounds r_i² / gap_i.

    ``gap_i = min_{j≠i} (|θ_i − θ_j| − r_j)``: the distance to every other Ritz value, shrunk by that value's
    residual (its eigenvalue lies within r_j of it), so the gap is one to the other EIGENVALUES the Ritz
    values have found. A non-positive gap (or no other Ritz value) gives an infinite gap bound."""
    order = np.argsort(theta)[::-1]
    th, r = theta[order], res[order]
    k = min(k, th.size)
    if th.size < 2:
        return th[:k], r[:k], np.full(k, np.inf)
    d = np.abs(th[:k, None] - th[None, :]) - r[None, :]
    d[np.arange(k), np.arange(k)] = np.inf
    gap = d.min(axis=1)
    with np.errstate(divide="ignore"):
        gapb = np.where(gap > 0, r[:k] ** 2 / np.where(gap > 0, gap, 1.0), np.inf)
    return th[:k], r[:k], gapb


class Certifier:
    r"""The certified stopping rule of :func:`top_eigenvalues`: per top-k Ritz pair an error bound, and whether
    all of them meet the tolerance.

    For a symmetric H and a Ritz pair (θ_i, y_i) with residual r_i = ‖H y_i − θ_i y_i‖ = |β_m s_{m,i}|:

    * residual bound (Krylov–Bogoliubov; Parlett, *The Symmetric Eigenvalue Problem*, SIAM 1998,
      ch. 4): an eigenvalue lies in [θ_i − r_i, θ_i + r_i];
    * gap bound (Kato 1949, Temple 1928; Parlett ch. 11; Bai et al., *Templates for the Solution of Algebraic
      Eigenvalue Problems*, SIAM 2000, §4.8; LAPACK Users' Guide §4.7): when no other eigenvalue lies within
      ``gap_i`` of θ_i, that eigenvalue is within r_i² / gap_i of θ_i.

    The gap is to the other EIGENVALUES, which Lanczos knows only through the Ritz values: :func:`ritz_bounds`
    shrinks the distance to each other Ritz value by that value's residual. An eigenvalue the Krylov space has
    not yet resolved (one of two close eigenvalues still missing) makes that gap too large and r²/gap too
    small, so the gap bound is guarded: it is used only once it has met the tolerance on :attr:`STEADY`
    consecutive earlier steps and the Ritz value has moved since each of them by at most :attr:`MOVE` times
    the bound that step claimed (θ_i only grows towards λ_i, by interlacing, so a move as large as the bound
    disproves it; while a missing eigenvalue emerges, θ_i moves by a sizable fraction of its true error each
    step). The reported bound is ``min(r_i, r_i²/gap_i)`` under these guards, else r_i; the rule stops when
    ``bound_i ≤ tol · |θ_i|`` for all k. The residual bound alone stops where the previous rule (relative
    residual below tol, as ARPACK) stopped, so the rule never needs more HVPs than that.

    Any Krylov method shares one caveat: an eigenvalue whose eigenvector the start vector (nearly) misses is
    invisible, and a repeated eigenvalue is seen once (use ``block_size``); the bounds are certificates for
    the eigenvalues the Krylov space has found, which a random start makes the top ones with high
    probability.
    """

    STEADY = 3
    MOVE = 0.05  # 0.1 let one bound 20x below the true error through (1,000 clustered spectra; see the tests)

    def __init__(self, k: int, tol: float) -> None:
        self.k, self.tol = k, tol
        self.history: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # θ, candidate bound, tolerance met
        self.theta = self.bounds = self.residuals = np.zeros(0)
        self.certified = False

    def update(self, theta_all: np.ndarray, res_all: np.ndarray) -> bool:
        """Take the Ritz values and residuals of a step; True when the top-k are certified."""
        th, r, gapb = ritz_bounds(theta_all, res_all, self.k)
        lim = self.tol * _scale(theta_all, th)
        steady = np.full(th.size, len(self.history) >= self.STEADY)
        for p_th, p_bound, p_met in self.history[-self.STEADY :]:
            steady &= p_met & (np.abs(th - p_th) <= self.MOVE * p_bound)
        use_gap = (gapb < r) & steady
        bound = np.where(use_gap, gapb, r)
        cand = np.minimum(r, gapb)
        self.history = [*self.history[-self.STEADY :], (th, cand, cand <= lim)]
        self.certified = bool(th.size == self.k and np.all(bound <= lim))
        self.theta, self.bounds, self.residuals = th, bound, r
        return self.certified


@dataclass
class EigenResult(Result):
    """Top-k Hessian eigenvalues (descending, largest algebraic) with their eigenvectors, residuals and
    certified error bounds."""

    name = "top_eigenvalues"
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ‖H y − θ y‖ / |θ|
    error_bounds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # |λ_i − θ_i| ≤ bound (absolute)
    certified: bool = False  # every error_bounds[i] ≤ tol · |θ_i| (Certifier)
    hvp_count: int = 0
    iterations: int = 0
    converged: bool = False
    tol: float = 1e-3
    block_size: int = 1
    ritz_values: np.ndarray = field(default_factory=lambda: np.zeros(0))  # all Ritz values, ascending
    wall_time_s: float = 0.0
    eigenvectors: list[ParamDict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def relative_bounds(self) -> np.ndarray:
        """error_bounds / |eigenvalues|."""
        return np.asarray(self.error_bounds) / _scale(np.asarray(self.eigenvalues), np.asarray(self.eigenvalues))

    def to_json(self) -> dict:
        out = super().to_json()
        out.pop("eigenvectors", None)
        return out


def _start_vector(n: int, seed: int, op: HVP, block: int = 1) -> tuple[Tensor, torch.Generator]:
    g = cpu_generator(seed)
    if block == 1:
        return gaussian((n,), g, op.dtype, op.device), g
    return torch.stack([gaussian((n,), g, op.dtype, op.device) for _ in range(block)]), g


def _check_args(n: int, k: int, tol: float, max_iter: int | None, block_size: int) -> int:
    if k < 1 or k > n:
        raise UsageError(f"--top-k: must be between 1 and the {n} analysed parameters, got {k}")
    if tol <= 0:
        raise UsageError(f"--tol: must be positive, got {tol}")
    if block_size < 1 or block_size > n:
        raise UsageError(f"--block-size: must be between 1 and the {n} analysed parameters, got {block_size}")
    max_iter = min(n, max(100, 20 * k) * block_size) if max_iter is None else min(int(max_iter), n)
    if max_iter < max(k, block_size):
        raise UsageError(f"--max-iter: {max_iter} is fewer than k={k}" if max_iter < k else
                         f"--max-iter: {max_iter} is fewer than one block of {block_size}")
    return max_iter


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
    block_size: int = 1,
) -> EigenResult:
    """The k largest (algebraic) eigenvalues of the objective's Hessian by Lanczos.

    Stops as soon as the error of every one of the top-k Ritz values is CERTIFIED below ``tol`` relative:
    ``bound_i ≤ tol · |θ_i|`` with ``bound_i = min(r_i, r_i² / gap_i)`` (the residual and gap bounds, guarded:
    see :class:`Certifier`), or after ``max_iter`` HVPs (default ``min(N, max(100, 20 k) · block_size)``);
    ``certified`` / ``converged`` say which, ``error_bounds`` holds the bounds and ``hvp_count`` the HVPs.
    ``block_size`` b > 1 runs block Lanczos (b HVPs per step), which resolves eigenvalues repeated up to b
    times; b = 1 sees a repeated eigenvalue once (docs/curvature.md, "Limits").
    """
    n = int(obj.num_params)
    max_iter = _check_args(n, k, tol, max_iter, block_size)
    if check:
        obj.check_determinism()
    t0 = time.perf_counter()
    op = HVP(obj, mode=mode)
    q1, g = _start_vector(n, seed, op, block_size)
    if block_size == 1:
        proc: Any = LanczosProcess(op, q1, basis_device=basis_device, generator=g, capacity=max_iter)
    else:
        proc = BlockLanczosProcess(op, q1, basis_device=basis_device, generator=g,
                                   capacity=-(-max_iter // block_size) * block_size)
    cert = Certifier(k, tol)
    while proc.m + block_size <= max_iter:
        proc.step()
        if proc.m >= k and cert.update(*proc.ritz()[::2]):
            break
    theta, S, res = proc.ritz()
    if not cert.theta.size == k:
        cert.update(theta, res)
    if proc.m >= n:  # the whole space: the Ritz values are the eigenvalues (bounds: the rounding residuals)
        cert.certified = True
    order = np.argsort(theta)[::-1][:k]
    rel = relative_residuals(theta, res)
    vecs = [unflatten(y, obj.params) for y in proc.ritz_vectors(S[:, order])] if eigenvectors else []
    return EigenResult(
        eigenvalues=theta[order].copy(),
        residuals=rel[order].copy(),
        error_bounds=cert.bounds.copy(),
        certified=cert.certified,
        hvp_count=op.count,
        iterations=proc.m,
        converged=bool(cert.certified or proc.m >= n),
        tol=float(tol),
        block_size=int(block_size),
        ritz_values=theta.copy(),
        wall_time_s=time.perf_counter() - t0,
        eigenvectors=vecs,
        meta={
            "method": "lanczos" if block_size == 1 else "block lanczos",
            "k": k,
            "max_iter": max_iter,
            "seed": seed,
            "hvp_mode": op.mode,
            "basis_device": basis_device,
            "breakdowns": proc.breakdowns,
            "stop": "certified" if cert.certified else ("full Krylov space" if proc.m >= n else "max_iter"),
            "objective": _config_of(obj),
        },
    )


def _config_of(obj: Any) -> Any:
    cfg = getattr(obj, "config", None)
    return cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
