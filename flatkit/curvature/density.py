"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

The spectral density ``φ(t) = 1/N Σ_i δ(t − λ_i)`` smoothed by a Gaussian ``g_σ`` satisfies, for a random unit
vector v (Rademacher or Gaussian, normalised), ``φ_σ(t) ≈ E_v[vᵀ g_σ(tI − H) v]``. Lanczos from q_1 = v for m
steps gives T_m = U Θ Uᵀ, and Gauss quadrature turns the quadratic form into
``Σ_i τ_i g_σ(t − θ_i)`` with nodes θ_i (Ritz values) and weights ``τ_i = U_{1,i}²`` (the squared first
components, which sum to 1) (Golub & Meurant 2010; Lin, Saad & Yang 2016, sec. 3.2; Ghorbani, Krishnan & Xiao
2019, sec. 2). Averaging over ``runs`` independent vectors reduces the variance. Lanczos uses full
reorthogonalisation (without it, ghost copies of converged Ritz values distort the weights), and the
tridiagonal is diagonalised by a symmetric solver.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flatkit.curvature.hvp import BATCH_MODES, HVP
from flatkit.curvature.lanczos import LanczosProcess
from flatkit.curvature.trace import DEFAULT_VECTORS_PER_CALL
from flatkit.curvature.vectors import cpu_generator, probes
from flatkit.errors import UsageError
from flatkit.results import Result


@dataclass
class DensityResult(Result):
    """Gaussian-broadened spectral density on a grid, with the raw quadrature nodes and weights per run."""

    name = "density"
    grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    density: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nodes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (runs, steps) Ritz values θ
    weights: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 0))
    )  # (runs, steps) τ = U_{1,i}², rows sum to 1
    sigma: float = math.nan
    runs: int = 0
    steps: int = 0
    hvp_count: int = 0
    integral: float = math.nan  # trapezoid integral of density over grid (≈ 1)
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)


class _Deferred:
    """What a :class:`LanczosProcess` of SLQ calls for its products: the HVP itself (``op``, one at a time), or,
    when the runs go side by side, the product of its next vector computed beforehand in a batch (``ready``)."""

    def __init__(self, op: HVP) -> None:
        self.op: HVP | None = None
        self.device, self.dtype = op.device, op.dtype
        self.ready: Tensor | None = None

    def __call__(self, q: Tensor) -> Tensor:
        if self.op is not None:
            return self.op(q)
        w, self.ready = self.ready, None
        if w is None:
            raise RuntimeError("SLQ: a Lanczos step asked for a product that was not computed")
        return w


def _pending(proc: LanczosProcess) -> Tensor:
    """The vector whose product the process's next step asks for: row m of the preallocated basis."""
    return proc._buf[proc.m]


def gaussian_broadening(grid: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """φ_σ(t) = 1/R Σ_r Σ_i τ_{r,i} exp(−(t − θ_{r,i})² / 2σ²) / (σ√(2π)) on the grid."""
    th = nodes.reshape(-1)[None, :]
    w = weights.reshape(-1)[None, :] / nodes.shape[0]
    z = (grid[:, None] - th) / sigma
    return (w * np.exp(-0.5 * z * z)).sum(axis=1) / (sigma * math.sqrt(2.0 * math.pi))


def choose_grid(nodes: np.ndarray, sigma: float | None, grid: int | np.ndarray) -> tuple[np.ndarray, float]:
    """σ (default 1% of the node span) and a grid over [min θ − 5σ, max θ + 5σ] with spacing ≤ σ/5."""
    lo, hi = float(nodes.min()), float(nodes.max())
    span = hi - lo
    if sigma is None:
        sigma = 0.01 * span if span > 0 else max(abs(hi) * 1e-3, 1e-12)
    if sigma <= 0:
        raise UsageError(f"--sigma: must be positive, got {sigma}")
    if isinstance(grid, int | np.integer):
        a, b = lo - 5 * sigma, hi + 5 * sigma
        points = max(int(grid), int(math.ceil((b - a) / (sigma / 5))) + 1)
        points = min(points, 200_000)
        return np.linspace(a, b, points), float(sigma)
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size < 2 or np.any(np.diff(g) <= 0):
        raise UsageError("--grid: must be an increasing 1-D array of at least 2 points")
    return g, float(sigma)


def spectral_density(
    obj: Any,
    runs: int = 3,
    steps: int = 80,
    grid: int | np.ndarray = 1000,
    sigma: float | None = None,
    seed: int = 0,
    probe: str = "rademacher",
    basis_device: str = "same",
    mode: str = "auto",
    check: bool = True,
    probe_batch: str = "auto",
    vectors_per_call: int | None = None,
) -> DensityResult:
    """SLQ density: ``runs`` Lanczos runs of ``steps`` steps (at most N) from random unit vectors.

    Costs ``runs × steps`` HVPs. ``grid`` is a number of points (range chosen from the nodes, ±5σ) or an
    array; ``sigma`` the broadening (default 1% of the node span). ``probe_batch``: "loop" runs the Lanczos
    runs one after another; "vmap" runs them side by side, the products of their next vectors (up to
    ``vectors_per_call``, default 8) in one vmapped pass; "auto" measures which is faster on the first steps
    (see :class:`~flatkit.curvature.hvp.HVP`). Both draw the same start vectors; their nodes agree up to float
    rounding (batched kernels), "auto" that keeps the loop bit for bit.
    """
    n = int(obj.num_params)
    if runs < 1:
        raise UsageError(f"--density-runs: must be at least 1, got {runs}")
    if steps < 1:
        raise UsageError(f"--density-steps: must be at least 1, got {steps}")
    steps = min(int(steps), n)
    if check:
        obj.check_determinism()
    if probe_batch not in BATCH_MODES:
        raise UsageError(f"--probe-batch: {probe_batch!r} is not one of {', '.join(BATCH_MODES)}")
    t0 = time.perf_counter()
    vpc = min(runs, DEFAULT_VECTORS_PER_CALL if vectors_per_call is None else int(vectors_per_call))
    op = HVP(obj, mode=mode, vectors_per_call=vpc, batch=probe_batch)
    op.expect(runs * steps)
    gen = cpu_generator(seed)
    nodes = np.zeros((runs, steps))
    weights = np.zeros((runs, steps))
    # the start vectors first, then one generator per run for its breakdown restarts: the same draws whether
    # the runs go one after another or side by side
    starts = [probes(probe, (n,), gen, op.dtype, op.device) for _ in range(runs)]
    restart_seeds = torch.randint(0, 2**62, (runs,), generator=gen).tolist()

    def start(r: int) -> LanczosProcess:  # each basis one preallocated (steps + 1) × N buffer
        return LanczosProcess(_Deferred(op), starts[r], basis_device=basis_device,
                              generator=cpu_generator(restart_seeds[r]), capacity=steps)

    def record(r: int, proc: LanczosProcess) -> None:
        theta, S, _ = proc.ritz()
        nodes[r] = theta
        weights[r] = S[0, :] ** 2  # Gauss quadrature weights: squared first components

    if op.batch == "loop" or runs == 1:
        for r in range(runs):  # one run after another: one basis in memory at a time
            proc = start(r)
            proc.op.op = op  # one product at a time: the HVP itself
            for _ in range(steps):
                proc.step()
            record(r, proc)
            del proc
    else:
        procs = [start(r) for r in range(runs)]
        for _ in range(steps):  # the runs side by side: one batched call for their next vectors
            W = op.many(torch.stack([_pending(proc) for proc in procs]).to(op.device))
            for proc, w in zip(procs, W, strict=True):
                proc.op.ready = w.clone()  # a tensor of its own, as one at a time: a row of W starts at an offset
                proc.step()               # where vectorised kernels (the reorthogonalisation) round differently
        for r, proc in enumerate(procs):
            record(r, proc)
    g, sig = choose_grid(nodes, sigma, grid)
    dens = gaussian_broadening(g, nodes, weights, sig)
    return DensityResult(
        grid=g,
        density=dens,
        nodes=nodes,
        weights=weights,
        sigma=sig,
        runs=runs,
        steps=steps,
        hvp_count=op.count,
        integral=float(np.trapezoid(dens, g)),
        wall_time_s=time.perf_counter() - t0,
        meta={"seed": seed, "probe": probe, "hvp_mode": op.mode,
              "probe_batch": {**op.calibration, "used": op.batch, "vectors_per_call": op.vectors_per_call}},
    )
