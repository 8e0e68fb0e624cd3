"""Directions in parameter space for slices, perturbations and planes (parameter dicts, like ``obj.params``).

- Random Gaussian directions with filter normalisation (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the
  Loss Landscape of Neural Nets", eq. 1: ``d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖`` for filter j of layer i),
  layer normalisation (one factor per parameter tensor) or none. One-dimensional tensors (biases, GroupNorm /
  LayerNorm scales) have no filters: ``bias="zero"`` zeroes them (Li et al.'s ``ignore='biasbn'``),
  ``bias="normalise"`` treats the whole tensor as one filter (normalised exactly once).
- Hessian top eigenvectors (through :func:`flatkit.curvature.top_eigenvalues`).
- The line between two parameter sets and the plane through three (Garipov et al. 2018, Fig. 1 style).
- PCA of an optimisation trajectory (Li et al. 2018, Sec. 7).

Every direction is created with the device and dtype of the parameters it belongs to; random numbers come
from an explicit CPU ``torch.Generator`` (the same seed gives the same direction on every device). A filter of
zero norm (an all-zero bias, an untrained GroupNorm) gives a zero direction filter, never a division by zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flatkit.errors import UsageError

ParamDict = dict[str, Tensor]

NORMS = ("filter", "layer", "model", "unit", "none")
BIAS_MODES = ("zero", "normalise")


# ---------------------------------------------------------------------------------------------------------
# small vector algebra on parameter dicts (accumulated in float64)


def dot(a: ParamDict, b: ParamDict) -> float:
    """⟨a, b⟩ over all entries, in float64."""
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def norm(a: ParamDict) -> float:
    """‖a‖₂ over all entries, in float64."""
    return math.sqrt(dot(a, a))


def axpy(theta: ParamDict, coeffs: Sequence[float], dirs: Sequence[ParamDict]) -> ParamDict:
    """θ + Σ_i c_i d_i (a new dict; ``theta`` is not touched)."""
    out = {}
    for k, v in theta.items():
        acc = v.clone()
        for c, d in zip(coeffs, dirs, strict=False):
            if c != 0.0:
                acc = acc + c * d[k]
        out[k] = acc
    return out


def scale(a: ParamDict, c: float) -> ParamDict:
    return {k: v * c for k, v in a.items()}


def sub(a: ParamDict, b: ParamDict) -> ParamDict:
    return {k: a[k] - b[k] for k in a}


def check_compatible(a: ParamDict, b: ParamDict, what: str) -> None:
    """Same names and shapes, else a usage error naming ``what`` (e.g. the option or the file)."""
    if list(a) != list(b):
        missing = sorted(set(a) ^ set(b))
        raise UsageError(f"{what}: parameters differ in names (e.g. {missing[0] if missing else 'order'}); "
                         "different architectures?")
    for k in a:
        if tuple(a[k].shape) != tuple(b[k].shape):
            raise UsageError(f"{what}: parameter {k} has shape {tuple(b[k].shape)}, expected "
                             f"{tuple(a[k].shape)}; different architectures?")


# ---------------------------------------------------------------------------------------------------------
# random directions and their normalisation


def gaussian_like(params: ParamDict, generator: torch.Generator) -> ParamDict:
    """Standard Gaussian entries (not uniform), drawn on the CPU in float64 from ``generator`` (names in order),
    then cast to each parameter's dtype and moved to its device."""
    out = {}
    for k, p in params.items():
        z = torch.randn(tuple(p.shape), generator=generator, dtype=torch.float64)
        out[k] = z.to(device=p.device, dtype=p.dtype)
    return out


def _filter_norms(t: Tensor) -> Tensor:
    """‖t_j‖ for each filter j (the slices along dim 0), shaped to broadcast against ``t``."""
    flat = t.reshape(t.shape[0], -1).double()
    return torch.linalg.vector_norm(flat, dim=1).reshape((-1,) + (1,) * (t.dim() - 1))


def _rescale(d: Tensor, target: Tensor, current: Tensor) -> Tensor:
    """d · target / current, with a zero result where ``current`` is zero (no division by zero)."""
    safe = torch.where(current > 0, current, torch.ones_like(current))
    factor = torch.where(current > 0, target / safe, torch.zeros_like(current))
    return (d.double() * factor).to(d.dtype)


def normalize_direction(d: ParamDict, params: ParamDict, norm: str = "filter", bias: str = "zero") -> ParamDict:
    """Scale a direction to the weights (Li et al. 2018, eq. 1).

    ``norm="filter"``: each filter of d (a slice along dim 0 of a tensor with ≥ 2 dims) gets the norm of the
    weight's filter; ``"layer"``: each tensor of d gets the norm of its weight tensor; ``"model"``: d as a whole
    gets ‖θ‖ (‖d‖ = ‖θ‖); ``"unit"``: ‖d‖ = 1 (a radius is then an absolute L2 distance); ``"none"``: d unchanged.
    Under ``"model"`` / ``"unit"`` a zero d stays zero.
    ``bias`` decides 1-D tensors (biases, norm scales) under ``"filter"``: ``"zero"`` sets them to 0,
    ``"normalise"`` scales the whole tensor once to the weight tensor's norm. 0-d tensors count as 1-D.
    """
    if norm not in NORMS:
        raise UsageError(f"norm {norm!r}: expected one of {', '.join(NORMS)}")
    if bias not in BIAS_MODES:
        raise UsageError(f"bias {bias!r}: expected one of {', '.join(BIAS_MODES)}")
    if norm == "none":
        return {k: v.clone() for k, v in d.items()}
    if norm in ("model", "unit"):
        n = math.sqrt(dot(d, d))
        if n == 0.0:
            return scale(d, 0.0)
        target = math.sqrt(dot(params, params)) if norm == "model" else 1.0
        return scale(d, target / n)
    out = {}
    for k, v in d.items():
        w = params[k]
        if norm == "filter" and w.dim() >= 2:
            out[k] = _rescale(v, _filter_norms(w), _filter_norms(v))
        elif norm == "filter" and bias == "zero":
            out[k] = torch.zeros_like(v)
        else:  # layer normalisation, or a 1-D tensor treated as a single filter
            out[k] = _rescale(v, torch.linalg.vector_norm(w.double()), torch.linalg.vector_norm(v.double()))
    return out


def random_direction(params: ParamDict, generator: torch.Generator, norm: str = "filter",
                     bias: str = "zero") -> ParamDict:
    """A Gaussian direction normalised to ``params`` (see :func:`normalize_direction`)."""
    return normalize_direction(gaussian_like(params, generator), params, norm=norm, bias=bias)


def random_directions(params: ParamDict, k: int, seed: int = 0, norm: str = "filter",
                      bias: str = "zero") -> list[ParamDict]:
    """``k`` independent random directions from one generator seeded with ``seed``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return [random_direction(params, g, norm=norm, bias=bias) for _ in range(k)]


# ---------------------------------------------------------------------------------------------------------
# Hessian eigenvectors


def eigen_directions(obj, k: int = 2, seed: int = 0, tol: float = 1e-3) -> tuple[list[ParamDict], np.ndarray]:
    """The top-k Hessian eigenvectors (unit norm) and eigenvalues, by Lanczos on the objective."""
    from flatkit.curvature.lanczos import top_eigenvalues

    res = top_eigenvalues(obj, k=k, seed=seed, tol=tol)
    vecs = [{n: v.to(device=obj.params[n].device, dtype=obj.params[n].dtype) for n, v in e.items()}
            for e in res.eigenvectors]
    return vecs, np.asarray(res.eigenvalues, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# lines and planes through checkpoints


@dataclass
class Plane:
    """Directions through given points and the points' coordinates in them (``origin`` at (0, 0))."""

    directions: list[ParamDict]
    points: np.ndarray  # (m, dims): coordinates of the given parameter sets
    names: list[str] | None = None  # labels of the points (default point0, point1, ...)


def interpolation_direction(theta_a: ParamDict, theta_b: ParamDict, what: str = "--compare") -> Plane:
    """d = θ_b − θ_a: the grid coordinate a gives θ_a + a·d (θ_a at 0, θ_b at 1)."""
    check_compatible(theta_a, theta_b, what)
    return Plane([sub(theta_b, theta_a)], np.array([[0.0], [1.0]]))


def plane_directions(theta_0: ParamDict, theta_1: ParamDict, theta_2: ParamDict,
                     what: str = "--compare") -> Plane:
    """The plane through three parameter sets: d1 = θ1 − θ0, d2 = (θ2 − θ0) minus its d1 component
    (Gram–Schmidt, keeping its length), so θ0 = (0, 0), θ1 = (1, 0), θ2 = (⟨θ2−θ0, d1⟩/‖d1‖², 1)."""
    check_compatible(theta_0, theta_1, what)
    check_compatible(theta_0, theta_2, what)
    d1 = sub(theta_1, theta_0)
    u = sub(theta_2, theta_0)
    n1 = dot(d1, d1)
    if n1 == 0.0:
        raise UsageError(f"{what}: the first two checkpoints have identical parameters")
    c = dot(u, d1) / n1
    d2 = {k: u[k] - c * d1[k] for k in u}
    if norm(d2) <= 1e-12 * math.sqrt(n1):
        raise UsageError(f"{what}: the three checkpoints lie on one line; no plane through them")
    return Plane([d1, d2], np.array([[0.0, 0.0], [1.0, 0.0], [c, 1.0]]))


def pca_directions(trajectory: Sequence[ParamDict], k: int = 2,
                   centre: ParamDict | None = None) -> tuple[list[ParamDict], np.ndarray, np.ndarray]:
    """PCA of a trajectory (Li et al. 2018, Sec. 7): the top-k principal directions (unit norm) of the
    matrix [θ_i − θ_centre] (centre: the last point), the explained-variance ratios, and the trajectory's
    coordinates (projections) in those directions, shape (len(trajectory), k)."""
    if len(trajectory) < k + 1:
        raise UsageError(f"trajectory: need at least {k + 1} checkpoints for {k} PCA directions, "
                         f"got {len(trajectory)}")
    centre = trajectory[-1] if centre is None else centre
    for t in trajectory:
        check_compatible(centre, t, "--trajectory")
    names = list(centre)
    M = torch.stack([torch.cat([(t[n] - centre[n]).reshape(-1).double().cpu() for n in names])
                     for t in trajectory])  # (m, N)
    _, S, Vh = torch.linalg.svd(M, full_matrices=False)
    var = (S ** 2).numpy()
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    dirs, coords = [], []
    for j in range(k):
        v = Vh[j]
        # a deterministic sign: the largest-magnitude entry positive
        v = v * torch.sign(v[torch.argmax(v.abs())])
        coords.append((M @ v).numpy())
        d, off = {}, 0
        for n in names:
            m = centre[n].numel()
            d[n] = v[off:off + m].reshape(centre[n].shape).to(device=centre[n].device, dtype=centre[n].dtype)
            off += m
        dirs.append(d)
    return dirs, ratio[:k], np.stack(coords, axis=1)


def direction_fingerprint(dirs: Sequence[ParamDict]) -> str:
    """sha256 of the directions' bytes (part of a grid's config hash, so a resume uses the same directions)."""
    import hashlib

    h = hashlib.sha256()
    for d in dirs:
        for k in sorted(d):
            h.update(k.encode())
            h.update(d[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
