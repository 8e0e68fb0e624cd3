"""Sharpness measures of a loss at parameters θ (all evaluated through the objective; θ is never modified).

- ``keskar``: ε-sharpness of Keskar et al. 2017 ("On Large-Batch Training ...", eq. 3):
  ``φ = (max_{z ∈ C_ε} L(θ + z) − L(θ)) / (1 + L(θ)) × 100`` over the box ``C_ε = {|z_i| ≤ ε(|θ_i| + 1)}``
  (full space, no random sub-space), maximised by projected (sign) gradient ascent with restarts
  (``solver="ascent"``, the default) or by Keskar's own optimiser, L-BFGS-B over the box (``solver="lbfgsb"``,
  needs scipy). On a quadratic at its minimum the maximum is ``max over box vertices ½ zᵀAz``.
- ``l2``: worst case in the L2 ball of radius ρ (SAM sharpness, Foret et al. 2021, eq. 1):
  ``max_{‖δ‖ ≤ ρ} L(θ + δ) − L(θ)``; at a quadratic minimum ``½ ρ² λ_max``. The default ``solver="krylov"``
  solves the trust-region subproblem of the quadratic model ``gᵀδ + ½ δᵀHδ`` in a Krylov subspace of HVPs
  (Lanczos started from the gradient, then from random vectors, one orthonormal basis; the small problem by
  the secular equation, Moré & Sorensen 1983; Gould et al. 1999, GLTR), so it converges at the Lanczos rate,
  then refines the best point on the true loss by the projected ascent; ``solver="ascent"`` is that ascent
  alone (from ρ∇/‖∇‖ and random points), which contracts only at about (1 + λ₂/λ₁)/2 per step.
- ``average``: average-case sharpness ``E_{δ ~ N(0, σ² I)} L(θ + δ) − L(θ)`` by Monte Carlo with a confidence
  interval (Andriushchenko et al. 2023, Sec. 2); at a quadratic minimum ``½ σ² tr A``.
- ``adaptive``: adaptive worst-case sharpness ``max_{‖δ / c‖ ≤ ρ} L(θ + δ) − L(θ)`` with ``c = |θ| + η``
  (ASAM's ``T_θ = diag(|θ| + η)``, Kwon et al. 2021, eq. 6, applied to every analysed parameter;
  Andriushchenko et al. 2023 use η = 0). At a quadratic minimum ``½ ρ² λ_max(T A T)``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flatkit.analyses.directions import ParamDict, dot
from flatkit.analyses.landscape.evaluate import loss_and_gradient, loss_float64
from flatkit.errors import UsageError
from flatkit.results import Result, make_meta
from flatkit.settings import BANK_FIELDS, SharpnessSettings, takes

KINDS = ("keskar", "l2", "average", "adaptive")
DEFAULT_EPS = {"keskar": 1e-3, "l2": 0.05, "average": 0.01, "adaptive": 0.05}
#: what ``solver="auto"`` is for each kind
DEFAULT_SOLVER = {"keskar": "ascent", "l2": "krylov", "adaptive": "krylov", "average": None}


@dataclass
class SharpnessResult(Result):
    """Sharpness of one or several models (``labels[m]``) at the same settings, bank and seeds.

    ``value[m]`` is model m's sharpness in the kind's own units (Keskar: percent; the others: a loss difference),
    ``loss0[m]`` its L(θ) on the bank. Worst-case kinds fill ``loss_max`` (the best loss found) and
    ``per_restart`` (the best loss increase per restart); ``average`` fills ``std_err`` and the ``confidence``
    interval ``ci_low`` .. ``ci_high`` of the mean. Per-model entries of the other kind are None.

    ``solver`` is the maximiser used (``ascent``, ``krylov`` or ``lbfgsb``). With ``krylov``, ``upper_bound[m]``
    bounds the sharpness of the quadratic model at θ from above (``ρ‖g‖ + ½ ρ² λ̂``, λ̂ the top Ritz value plus its
    residual norm, an upper bound of λ_max(H) once the top Ritz value has converged to the top eigenvalue; at a
    critical point ``½ ρ² λ̂``), so ``upper_bound − value`` is the gap left between the loss found (a lower bound)
    and that bound; ``residual[m]`` is the relative KKT residual ``‖g + Hδ − μδ‖ / (‖g‖ + μρ)`` of the subspace
    solution δ in the full space, and ``hvps[m]`` the number of Hessian-vector products used.
    """

    name = "sharpness"
    kind: str = "keskar"
    eps: float = 0.0
    labels: list = field(default_factory=list)
    value: list = field(default_factory=list)
    loss0: list = field(default_factory=list)
    loss_max: list = field(default_factory=list)
    per_restart: list = field(default_factory=list)
    std_err: list = field(default_factory=list)
    ci_low: list = field(default_factory=list)
    ci_high: list = field(default_factory=list)
    confidence: float | None = None
    samples: int | None = None
    restarts: int | None = None
    ascent_steps: int | None = None
    lr: float | None = None
    asam_eta: float | None = None
    solver: str | None = None
    upper_bound: list = field(default_factory=list)
    residual: list = field(default_factory=list)
    hvps: list = field(default_factory=list)
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def L_theta(self) -> list:
        """L(θ_m) of each model on the result's bank (the loss-based results' common name: ``loss0``)."""
        return list(self.loss0)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def _randn_like(theta: ParamDict, g: torch.Generator) -> ParamDict:
    return {k: torch.randn(tuple(v.shape), generator=g, dtype=torch.float64).to(v.device, v.dtype)
            for k, v in theta.items()}


def _rand_like(theta: ParamDict, g: torch.Generator) -> ParamDict:
    return {k: torch.rand(tuple(v.shape), generator=g, dtype=torch.float64).to(v.device, v.dtype)
            for k, v in theta.items()}


def _add(theta: ParamDict, z: ParamDict) -> ParamDict:
    return {k: theta[k] + z[k] for k in theta}


# ---------------------------------------------------------------------------------------------------------
# Keskar: box, sign gradient ascent


def _keskar(obj: Any, theta: ParamDict, L0: float, eps: float, restarts: int, steps: int, lr: float,
            g: torch.Generator) -> tuple[float, list[float]]:
    b = {k: eps * (v.abs() + 1.0) for k, v in theta.items()}  # half-widths ε(|θ_i| + 1)
    _, g0 = loss_and_gradient(obj, theta)
    best, per = L0, []
    for r in range(restarts):
        if r == 0 and math.sqrt(dot(g0, g0)) > 0.0:
            z = {k: lr * b[k] * torch.sign(g0[k]) for k in theta}  # first step from z = 0
        else:  # uniform in the box
            u = _rand_like(theta, g)
            z = {k: (2.0 * u[k] - 1.0) * b[k] for k in theta}
        rbest = -math.inf
        for s in range(steps + 1):
            p = _add(theta, z)
            if s < steps:
                val, grad = loss_and_gradient(obj, p)
            else:
                val = loss_float64(obj, p)
            if not math.isfinite(val):
                rbest = math.inf
                break
            rbest = max(rbest, val)
            if s == steps:
                break
            # projected sign ascent: z ← clip(z + lr·b·sign(∇L), −b, b)
            z = {k: torch.maximum(torch.minimum(z[k] + lr * b[k] * torch.sign(grad[k]), b[k]), -b[k])
                 for k in theta}
        per.append(rbest - L0)
        best = max(best, rbest)
    return best, per


# ---------------------------------------------------------------------------------------------------------
# L2 ball (plain or adaptive): normalised gradient ascent in u = δ / c, projected on ‖u‖ ≤ ρ


def _delta(u: ParamDict, c: ParamDict | None) -> ParamDict:
    return u if c is None else {k: c[k] * u[k] for k in u}


def _grad_u(grad: ParamDict, c: ParamDict | None) -> ParamDict:  # ∂L/∂u = c ⊙ ∇L
    return grad if c is None else {k: c[k] * grad[k] for k in grad}


def _unit(v: ParamDict) -> ParamDict | None:
    n = math.sqrt(dot(v, v))
    return None if n == 0.0 else {k: t / n for k, t in v.items()}


def _ball_ascent(obj: Any, theta: ParamDict, u: ParamDict, rho: float, c: ParamDict | None, steps: int,
                 lr: float) -> float:
    """The best L(θ + c ⊙ u) met by ``steps`` projected normalised-gradient steps from u (inf if not finite)."""
    def project(u: ParamDict) -> ParamDict:
        n = math.sqrt(dot(u, u))
        return u if n <= rho or n == 0.0 else {k: v * (rho / n) for k, v in u.items()}

    rbest = -math.inf
    for s in range(steps + 1):
        p = _add(theta, _delta(u, c))
        if s < steps:
            val, grad = loss_and_gradient(obj, p)
        else:
            val = loss_float64(obj, p)
        if not math.isfinite(val):
            return math.inf
        rbest = max(rbest, val)
        if s == steps:
            break
        step = _unit(_grad_u(grad, c))
        if step is None:
            break
        u = project({k: u[k] + lr * rho * step[k] for k in u})
    return rbest


def _ball(obj: Any, theta: ParamDict, L0: float, rho: float, c: ParamDict | None, restarts: int, steps: int,
          lr: float, g: torch.Generator) -> tuple[float, list[float]]:
    _, g0 = loss_and_gradient(obj, theta)
    best, per = L0, []
    for r in range(restarts):
        d0 = _unit(_grad_u(g0, c)) if r == 0 else None  # restart 0: SAM's ε̂ = ρ ∇/‖∇‖
        if d0 is None:
            d0 = _unit(_randn_like(theta, g))
        u = {k: rho * v for k, v in d0.items()}
        rbest = _ball_ascent(obj, theta, u, rho, c, steps, lr)
        per.append(rbest - L0)
        best = max(best, rbest)
    return best, per


def trust_region_max(M: np.ndarray, b: np.ndarray, rho: float) -> tuple[np.ndarray, float, float]:
    """``max bᵀy + ½ yᵀMy`` over ``‖y‖ ≤ ρ`` for a small symmetric M: ``(y, μ, value)`` with ``b + My = μy``,
    ``μ ≥ max(λ_max(M), 0)`` and ``μ(ρ − ‖y‖) = 0`` (the trust-region subproblem; Moré & Sorensen 1983: the
    secular equation ``‖(μI − M)⁻¹b‖ = ρ`` by safeguarded Newton on ``1/‖y(μ)‖ − 1/ρ``, in the eigenbasis of M,
    with the hard case, b ⊥ the top eigenvectors, filled along them). All in float64."""
    M = 0.5 * (np.asarray(M, dtype=np.float64) + np.asarray(M, dtype=np.float64).T)
    b = np.asarray(b, dtype=np.float64)
    lam, V = np.linalg.eigh(M)
    cb = V.T @ b
    l1 = float(lam[-1])
    scale = max(abs(l1), abs(float(lam[0])), 1e-300)

    def value(y: np.ndarray) -> float:
        return float(b @ y + 0.5 * y @ (M @ y))

    if l1 < 0:  # concave model: the stationary point, if inside the ball
        y = -(V @ (cb / lam))
        if np.linalg.norm(y) <= rho:
            return y, 0.0, value(y)
    lo = max(l1, 0.0)
    top = lam >= l1 - 1e-12 * scale
    if lo == l1 and np.linalg.norm(cb[top]) <= 1e-14 * max(np.linalg.norm(cb), 1e-300) + 1e-300:
        rest = ~top
        z = np.zeros_like(cb)
        z[rest] = cb[rest] / (l1 - lam[rest])
        nz = float(np.linalg.norm(z))
        if nz <= rho:  # the hard case: μ = λ_max, the rest of the ball along its eigenvector
            z[np.flatnonzero(top)[-1]] = math.sqrt(max(rho * rho - nz * nz, 0.0))
            y = V @ z
            return y, l1, value(y)

    def norm_at(mu: float) -> tuple[float, float]:  # ‖y(μ)‖ and d‖y‖/dμ
        w = cb / (mu - lam)
        n = float(np.linalg.norm(w))
        return n, -float(np.sum(w * w / (mu - lam))) / max(n, 1e-300)

    hi = lo + float(np.linalg.norm(cb)) / rho + 1e-300
    mu = hi
    for _ in range(200):
        n, dn = norm_at(mu)
        if not math.isfinite(n) or n > rho:
            lo = mu
        else:
            hi = mu
        if math.isfinite(n) and abs(n - rho) <= 1e-15 * rho:
            break
        # Newton on ψ(μ) = 1/‖y‖ − 1/ρ (nearly linear in μ): μ ← μ − ψ/ψ'
        step = (1.0 / n - 1.0 / rho) / (-dn / (n * n)) if math.isfinite(n) and n > 0 and dn != 0 else math.nan
        new = mu - step
        mu = new if math.isfinite(new) and lo < new < hi else 0.5 * (lo + hi)
        if hi - lo <= 1e-16 * max(abs(hi), 1e-300):
            break
    y = V @ (cb / (mu - lam))
    n = float(np.linalg.norm(y))
    if n > rho:
        y *= rho / n
    return y, mu, value(y)


def _ball_krylov(obj: Any, theta: ParamDict, L0: float, rho: float, c: ParamDict | None, restarts: int,
                 steps: int, lr: float, g: torch.Generator) -> tuple[float, list[float], dict]:
    """The trust-region subproblem of the quadratic model in u = δ/c, in a Krylov subspace of HVPs, refined on
    the true loss.

    ``restarts`` Lanczos sequences of ``max(steps, 1)`` vectors each (the first started from the gradient, the
    others from seeded Gaussian vectors, all orthonormalised into one basis Q, so the subspace only grows);
    after each the subproblem ``max (Qᵀg)ᵀy + ½ yᵀ(QᵀHQ)y, ‖y‖ ≤ ρ`` is solved (:func:`trust_region_max`) and
    the true loss evaluated at δ = c ⊙ Qy (``per_restart``); then ``steps`` projected ascent steps refine the
    best point. Two more HVPs give the full-space KKT residual and the upper bound (see
    :class:`SharpnessResult`)."""
    from flatkit.curvature.hvp import HVP
    from flatkit.curvature.vectors import flatten, unflatten

    _, g0 = loss_and_gradient(obj, theta)
    op = HVP(obj, params=theta)
    dtype = next(iter(theta.values())).dtype
    cf = None if c is None else flatten(c).to(torch.float64)
    gu = flatten(_grad_u(g0, c)).to(torch.float64)
    gnorm = float(gu.norm())

    def H(v: torch.Tensor) -> torch.Tensor:  # the Hessian in u: C H C, on float64 flat vectors
        x = v if cf is None else cf * v
        y = op(x.to(dtype)).to(torch.float64)
        return y if cf is None else cf * y

    Q: list[torch.Tensor] = []  # the basis, stored in the parameters' dtype
    M = np.zeros((0, 0))
    bq: list[float] = []

    def orthogonalise(w: torch.Tensor) -> torch.Tensor:
        for _ in range(2):  # twice is enough (Giraud et al. 2005)
            for q in Q:
                w = w - float(q.to(torch.float64) @ w) * q.to(torch.float64)
        return w

    def add(q: torch.Tensor) -> torch.Tensor:
        """Append q (unit, orthogonal to Q); return Hq, filling the new row/column of M = QᵀHQ."""
        nonlocal M
        Q.append(q.to(dtype))
        bq.append(float(q @ gu))
        w = H(q)
        col = np.array([float(p.to(torch.float64) @ w) for p in Q])
        m = len(Q)
        M2 = np.zeros((m, m))
        M2[: m - 1, : m - 1] = M
        M2[:, m - 1] = col
        M2[m - 1, :] = col
        M = M2
        return w

    best_val, best_u, per = L0, None, []
    y = np.zeros(0)
    mu = 0.0
    for r in range(restarts):
        start = gu if (r == 0 and gnorm > 0.0) else flatten(_randn_like(theta, g)).to(torch.float64)
        q = orthogonalise(start.clone())
        nq = float(q.norm())
        if nq > 1e-12 * float(start.norm()):
            q = q / nq
            for j in range(max(steps, 1)):
                w = add(q)
                if j == max(steps, 1) - 1:
                    break
                q = orthogonalise(w)
                nq = float(q.norm())
                if nq <= 1e-12 * max(float(w.norm()), 1e-300):  # an invariant subspace: nothing new
                    break
                q = q / nq
        y, mu, _ = trust_region_max(M, np.asarray(bq), rho)
        u_flat = sum(float(y[j]) * Q[j].to(torch.float64) for j in range(len(Q)))
        u = unflatten(u_flat.to(dtype), theta)
        val = loss_float64(obj, _add(theta, _delta(u, c)))
        if not math.isfinite(val):
            per.append(math.inf)
            return math.inf, per, {}
        per.append(val - L0)
        if best_u is None or val > best_val:
            best_val, best_u = val, u
    best_val = max(best_val, _ball_ascent(obj, theta, best_u, rho, c, steps, lr))
    # the full-space KKT residual of the last subspace solution, and λ̂ = top Ritz value + its residual
    u_flat = sum(float(y[j]) * Q[j].to(torch.float64) for j in range(len(Q)))
    res = H(u_flat) + gu - mu * u_flat
    residual = float(res.norm()) / max(gnorm + abs(mu) * rho, 1e-300)
    lam, V = np.linalg.eigh(M)
    x = sum(float(V[j, -1]) * Q[j].to(torch.float64) for j in range(len(Q)))
    lam_hat = float(lam[-1]) + float((H(x) - lam[-1] * x).norm())
    upper = rho * gnorm + 0.5 * rho * rho * max(lam_hat, 0.0)
    return best_val, per, {"upper_bound": upper, "residual": residual, "hvps": op.count}


# ---------------------------------------------------------------------------------------------------------
# Keskar with L-BFGS-B over the box (Keskar et al. 2017's own optimiser)


class _NotFinite(Exception):
    pass


def _keskar_lbfgsb(obj: Any, theta: ParamDict, L0: float, eps: float, restarts: int, steps: int, lr: float,
                   g: torch.Generator) -> tuple[float, list[float]]:
    """max L(θ + z) over the box by scipy's L-BFGS-B (bounds ±ε(|θ|+1)), ``steps`` iterations and at most
    ``steps + 1`` evaluations per restart, from the same starting points as the sign ascent."""
    try:
        from scipy.optimize import Bounds, minimize
    except ImportError:
        raise UsageError("solver lbfgsb: needs scipy (pip install scipy)") from None
    from flatkit.curvature.vectors import flatten, unflatten

    b = {k: eps * (v.abs() + 1.0) for k, v in theta.items()}
    bf = flatten(b).to(torch.float64).cpu().numpy()
    device, dtype = next(iter(theta.values())).device, next(iter(theta.values())).dtype
    found = [-math.inf]  # the best loss met in the current restart

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        val, grad = loss_and_gradient(obj, _add(theta, unflatten(torch.as_tensor(x, device=device).to(dtype),
                                                                 theta)))
        if not math.isfinite(val):
            raise _NotFinite
        found[0] = max(found[0], val)
        return -val, -flatten(grad).to(torch.float64).cpu().numpy()

    _, g0 = loss_and_gradient(obj, theta)
    best, per = L0, []
    for r in range(restarts):
        if r == 0 and math.sqrt(dot(g0, g0)) > 0.0:
            z = {k: lr * b[k] * torch.sign(g0[k]) for k in theta}
        else:
            u = _rand_like(theta, g)
            z = {k: (2.0 * u[k] - 1.0) * b[k] for k in theta}
        found[0] = -math.inf
        try:
            minimize(fun, flatten(z).to(torch.float64).cpu().numpy(), jac=True, method="L-BFGS-B",
                     bounds=Bounds(-bf, bf), options={"maxiter": max(steps, 1), "maxfun": steps + 1})
        except _NotFinite:
            found[0] = math.inf
        per.append(found[0] - L0)
        best = max(best, found[0])
    return best, per


# ---------------------------------------------------------------------------------------------------------


@takes(SharpnessSettings, skip=BANK_FIELDS)
def sharpness(obj: Any, compare: Sequence[Any] = (), labels: Sequence[str] | None = None, check: bool = True, *,
              settings: SharpnessSettings) -> SharpnessResult:
    """Sharpness of ``obj`` (and of each objective in ``compare``, on the same seeds) at its parameters; see the
    module docstring for each ``kind``.

    ``eps``: Keskar's ε (box ε(|θ|+1)), the ball radius ρ (``l2``, ``adaptive``) or the noise σ (``average``);
    default per kind :data:`DEFAULT_EPS`. ``restarts`` × ``ascent_steps`` gradient-ascent steps for the
    worst-case kinds (``lr`` in units of the box half-width, default 0.25, or of ρ, default 1); ``samples``
    Gaussian draws for ``average``, with a normal ``confidence`` interval of the mean; ``asam_eta``: the η of
    ``adaptive``'s c = |θ| + η. ``solver``: the worst-case maximiser, ``"auto"`` (:data:`DEFAULT_SOLVER`: the
    Krylov trust-region solver for ``l2``/``adaptive``, sign ascent for ``keskar``), ``"ascent"``, ``"krylov"``
    (``l2``/``adaptive``: ``restarts`` Lanczos blocks of ``ascent_steps`` HVPs, then ``ascent_steps`` ascent
    steps) or ``"lbfgsb"`` (``keskar``, needs scipy). ``settings``: a
    :class:`~flatkit.settings.SharpnessSettings` instead of the keywords.
    """
    s = settings
    t0 = time.perf_counter()
    eps = DEFAULT_EPS[s.kind] if s.eps is None else float(s.eps)
    lr = None if s.kind == "average" else (0.25 if s.kind == "keskar" else 1.0) if s.lr is None else s.lr
    objs = [obj, *compare]
    labels = list(labels) if labels is not None else [f"model{m}" for m in range(len(objs))]
    if len(labels) != len(objs):
        raise UsageError(f"labels: {len(labels)} given for {len(objs)} models")
    if check:
        for o in objs:
            if hasattr(o, "check_determinism"):
                o.check_determinism()
    res = SharpnessResult(kind=s.kind, eps=eps, labels=labels, lr=lr)
    if s.kind == "average":
        res.samples, res.confidence = s.samples, s.confidence
    else:
        res.restarts, res.ascent_steps = s.restarts, s.ascent_steps
        res.asam_eta = s.asam_eta if s.kind == "adaptive" else None
        res.solver = DEFAULT_SOLVER[s.kind] if s.solver == "auto" else s.solver
    from flatkit import progress

    with progress.bar(total=len(objs), desc=f"{s.kind} sharpness", unit="model") as pb:
        for o in objs:
            _one_model(o, s, eps, lr, res)
            pb.update(1)
    res.wall_time_s = time.perf_counter() - t0
    res.meta = make_meta(config=s, wall_time_s=res.wall_time_s, objective=[_objective_config(o) for o in objs])
    return res


def _one_model(obj: Any, s: SharpnessSettings, eps: float, lr: float | None, res: SharpnessResult) -> None:
    """Append one model's numbers to ``res`` (every model starts from the same seed)."""
    theta = {k: v.detach() for k, v in obj.params.items()}
    L0 = loss_float64(obj, theta)
    g = _gen(s.seed)
    best = per = se = lo = hi = None
    info: dict = {}
    if s.kind == "keskar":
        solve = _keskar_lbfgsb if res.solver == "lbfgsb" else _keskar
        best, per = solve(obj, theta, L0, eps, s.restarts, s.ascent_steps, lr, g)
        value = (best - L0) / (1.0 + L0) * 100.0  # Keskar et al. 2017, eq. 3
    elif s.kind in ("l2", "adaptive"):
        c = None if s.kind == "l2" else {k: v.abs() + s.asam_eta for k, v in theta.items()}
        if res.solver == "krylov":
            best, per, info = _ball_krylov(obj, theta, L0, eps, c, s.restarts, s.ascent_steps, lr, g)
        else:
            best, per = _ball(obj, theta, L0, eps, c, s.restarts, s.ascent_steps, lr, g)
        value = best - L0
    else:
        d = []
        for _ in range(s.samples):
            z = _randn_like(theta, g)
            d.append(loss_float64(obj, {k: theta[k] + eps * z[k] for k in theta}) - L0)
        value = statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(len(d)) if all(map(math.isfinite, d)) else float("nan")
        zq = statistics.NormalDist().inv_cdf(0.5 + s.confidence / 2)
        lo, hi = value - zq * se, value + zq * se
    res.value.append(value)
    res.loss0.append(L0)
    res.loss_max.append(best)
    res.per_restart.append(per)
    res.std_err.append(se)
    res.ci_low.append(lo)
    res.ci_high.append(hi)
    res.upper_bound.append(info.get("upper_bound"))
    res.residual.append(info.get("residual"))
    res.hvps.append(info.get("hvps"))


def _objective_config(o: Any) -> Any:
    c = getattr(o, "config", None)
    return c.to_dict() if hasattr(c, "to_dict") else c
