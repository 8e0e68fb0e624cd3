"""Curvature of an objective's loss: HVPs, Lanczos top-k eigenvalues, Hutchinson / Hutch++ trace, SLQ
density."""

from flatkit.curvature.density import DensityResult, spectral_density
from flatkit.curvature.hvp import HVP, hvp
from flatkit.curvature.lanczos import EigenResult, LanczosProcess, top_eigenvalues
from flatkit.curvature.per_timestep import PerTimestepResult, per_timestep_curvature
from flatkit.curvature.trace import TraceResult, hessian_trace
from flatkit.curvature.vectors import flatten, unflatten

__all__ = [
    "HVP",
    "hvp",
    "flatten",
    "unflatten",
    "LanczosProcess",
    "top_eigenvalues",
    "EigenResult",
    "hessian_trace",
    "TraceResult",
    "spectral_density",
    "DensityResult",
    "per_timestep_curvature",
    "PerTimestepResult",
]
