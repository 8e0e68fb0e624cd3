"""Hessian trace by Hutchinson's estimator and by Hutch++.

Hutchinson (1989): for z with E[z zᵀ] = I (Rademacher), ``tr(H) = E[zᵀ H z]``; the estimate is the mean of
``m`` probes and its standard error ``s / √m`` (s the sample standard deviation of the probes).

Hutch++ (Meyer, Musco, Musco & Woodruff 2021, alg. 1): spend ``s`` HVPs on a sketch ``H S`` and take the exact
trace of H on its range, ``Q = orth(H S)``: ``tr(Qᵀ H Q)`` (``s`` more HVPs), then estimate the rest,
``tr((I − QQᵀ) H (I − QQᵀ))``, by Hutchinson with probes projected off Q. For a Hessian whose spectrum is
dominated by a few outliers, the low-rank part takes the outliers exactly and the Hutchinson part only sees
the bulk, so its variance (hence the error for a given budget) is far smaller. Here the Hutchinson part is
sequential and stops at the relative tolerance (an adaptive variant in the spirit of Persson, Cortinovis &
Kressner 2022); the standard error reported is that of the Hutchinson part, ``s_res / √m_res``, conditional on
the sketch (the low-rank part is exact given Q, so it adds no variance once Q is fixed).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flatkit.curvature.hvp import BATCH_MODES, HVP
from flatkit.curvature.vectors import cpu_generator, probes
from flatkit.errors import UsageError
from flatkit.results import Result

TRACE_METHODS = ("hutch++", "hutchinson")
DEFAULT_VECTORS_PER_CALL = 8  # probes per vmapped pass when batched (memory grows with it)


def _batch_meta(op: HVP) -> dict[str, Any]:
    """How the products were computed: the batching asked for, the one used, and what "auto" measured."""
    return {**op.calibration, "used": op.batch, "vectors_per_call": op.vectors_per_call}


@dataclass
class TraceResult(Result):
    """A Hessian trace estimate with its standard error and the probes behind it."""

    name = "trace"
    estimate: float = math.nan
    stderr: float = math.nan
    hvp_count: int = 0
    method: str = "hutch++"
    converged: bool = False
    rtol: float = 1e-2
    low_rank_part: float = 0.0  # tr(Qᵀ H Q) (Hutch++), 0 for Hutchinson
    sketch_size: int = 0
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0))  # zᵀ H z of each Hutchinson probe
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)


def _hutchinson_probes(
    op: HVP,
    gen: torch.Generator,
    n: int,
    budget: int,
    rtol: float,
    min_probes: int,
    probe: str,
    project: Any = None,
) -> tuple[list[float], bool]:
    """Draw probes z (optionally projected, z ← (I − QQᵀ) z) until stderr < rtol·|total| or the budget is
    spent.

    ``project`` returns (projected z, offset) where offset is the part of the total already known.
    """
    samples: list[float] = []
    offset = 0.0 if project is None else project.offset
    op.expect(budget)
    while len(samples) < budget:
        # one probe per pass one at a time; a chunk of vectors_per_call when the products are batched (and while
        # "auto" measures: it needs a few rows). Probes are drawn one row at a time and the stopping rule is
        # checked after each, so every batching uses the same probes (a batched chunk may compute a few
        # products past the stop: counted in hvp_count, not used).
        per_call = 1 if op.batch == "loop" else max(op.vectors_per_call, 2)
        r = min(per_call, budget - len(samples))
        Z = [probes(probe, (1, n), gen, op.dtype, op.device) for _ in range(r)]
        if project is not None:
            Z = [project(z) for z in Z]  # row by row: the same bits whatever the chunk
        HZ = op.many(torch.cat(Z))
        for z, hz in zip(Z, HZ, strict=True):  # the stopping rule after every probe, as one at a time
            samples.append(float((z[0].to(torch.float64) * hz.to(torch.float64)).sum()))
            m = len(samples)
            if m >= min_probes:
                mean = float(np.mean(samples))
                se = float(np.std(samples, ddof=1) / math.sqrt(m))
                if se <= rtol * abs(offset + mean):
                    return samples, True
    return samples, False


class _Projector:
    """z ↦ (I − QQᵀ) z for an orthonormal Q (rows), and the exact low-rank trace as ``offset``."""

    def __init__(self, Q: torch.Tensor, offset: float) -> None:
        self.Q, self.offset = Q, offset

    def __call__(self, Z: torch.Tensor) -> torch.Tensor:
        return Z - (Z @ self.Q.T) @ self.Q


def hessian_trace(
    obj: Any,
    method: str = "hutch++",
    rtol: float = 1e-2,
    max_hvps: int = 300,
    seed: int = 0,
    sketch_size: int | None = None,
    min_probes: int = 10,
    probe: str = "rademacher",
    mode: str = "auto",
    vectors_per_call: int | None = None,
    check: bool = True,
    probe_batch: str = "auto",
) -> TraceResult:
    """tr(∇²L) by Hutch++ (default) or Hutchinson, stopping at ``stderr ≤ rtol·|estimate|`` or ``max_hvps``.

    Hutch++ spends ``2·sketch_size`` HVPs on the exact low-rank part first (default sketch size
    ``min(N, max(1, max_hvps // 6))``, a third of the budget for sketch + projection), the rest on probes.
    ``probe_batch``: "loop" (one HVP per pass), "vmap" (``vectors_per_call`` probes per vmapped pass, default
    8) or "auto" (measured on the first probes, see :class:`~flatkit.curvature.hvp.HVP`; the choice is in
    ``meta["probe_batch"]``). Batched products equal the loop's up to float rounding; with "vmap" the stopping
    rule is checked once per chunk, so up to ``vectors_per_call − 1`` more probes may be spent.
    """
    if method not in TRACE_METHODS:
        raise UsageError(f"--trace-method: {method!r} is not one of {', '.join(TRACE_METHODS)}")
    if rtol <= 0:
        raise UsageError(f"--trace-rtol: must be positive, got {rtol}")
    n = int(obj.num_params)
    if max_hvps < 2:
        raise UsageError(f"--trace-max-hvps: need at least 2, got {max_hvps}")
    if check:
        obj.check_determinism()
    t0 = time.perf_counter()
    if probe_batch not in BATCH_MODES:
        raise UsageError(f"--probe-batch: {probe_batch!r} is not one of {', '.join(BATCH_MODES)}")
    vpc = DEFAULT_VECTORS_PER_CALL if vectors_per_call is None else int(vectors_per_call)
    op = HVP(obj, mode=mode, vectors_per_call=vpc, batch=probe_batch)
    op.expect(max_hvps)
    gen = cpu_generator(seed)
    min_probes = max(2, int(min_probes))
    if method == "hutchinson":
        samples, ok = _hutchinson_probes(op, gen, n, max_hvps, rtol, min_probes, probe)
        est = float(np.mean(samples))
        se = float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.nan
        return TraceResult(
            estimate=est,
            stderr=se,
            hvp_count=op.count,
            method=method,
            converged=ok,
            rtol=rtol,
            samples=np.asarray(samples),
            wall_time_s=time.perf_counter() - t0,
            meta={"seed": seed, "probe": probe, "hvp_mode": op.mode, "probe_batch": _batch_meta(op)},
        )

    s = min(n, max(1, max_hvps // 6)) if sketch_size is None else int(sketch_size)
    if not 1 <= s <= n or 2 * s > max_hvps:
        raise UsageError(f"--sketch-size: need 1 <= s <= min(N, max_hvps/2), got {s}")
    # Hutch++ step 1: sketch H S and orthonormalise (Meyer et al. 2021, alg. 1, lines 1-2).
    S = probes(probe, (s, n), gen, op.dtype, op.device)
    HS = op.many(S)
    Qm, R = torch.linalg.qr(HS.to(torch.float64).T)  # (n, s)
    keep = torch.abs(torch.diagonal(R)) > 1e-10 * torch.abs(torch.diagonal(R)).max().clamp_min(1e-300)
    Q = Qm[:, keep].T.contiguous()  # (r, n), rows orthonormal
    # step 2: exact trace on range(Q): tr(Qᵀ H Q) (line 3).
    HQ = op.many(Q.to(op.dtype))
    low = float((Q * HQ.to(torch.float64)).sum())
    # step 3: Hutchinson on the deflated remainder (line 3, second term), adaptively.
    budget = max_hvps - op.count
    if Q.shape[0] >= n:  # the sketch spans everything: the trace is exact
        samples, ok = [], True
    else:
        proj = _Projector(Q.to(op.dtype), low)
        samples, ok = _hutchinson_probes(
            op, gen, n, budget, rtol, min(min_probes, max(budget, 2)), probe, proj
        )
    res = float(np.mean(samples)) if samples else 0.0
    se = (
        float(np.std(samples, ddof=1) / math.sqrt(len(samples)))
        if len(samples) > 1
        else (0.0 if not samples else math.nan)
    )
    return TraceResult(
        estimate=low + res,
        stderr=se,
        hvp_count=op.count,
        method=method,
        converged=bool(ok and math.isfinite(se)),
        rtol=rtol,
        low_rank_part=low,
        sketch_size=int(Q.shape[0]),
        samples=np.asarray(samples),
        wall_time_s=time.perf_counter() - t0,
        meta={"seed": seed, "probe": probe, "hvp_mode": op.mode, "sketch_requested": s,
              "probe_batch": _batch_meta(op)},
    )
