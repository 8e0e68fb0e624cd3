"""flatkit: flatness of diffusion models' loss surfaces, and what it buys.

Top-level API (docs/api.md)::

    run = flatkit.load("ckpt.pt", weights="ema")
    obj = flatkit.Objective(run, data="builtin:shapes16", n=256, seed=0)
    flatkit.top_eigenvalues(obj, k=5); flatkit.hessian_trace(obj); flatkit.spectral_density(obj)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use so `import flatkit` stays light)
_API = {
    "load": "flatkit.run",
    "Run": "flatkit.run",
    "ModelConfig": "flatkit.config",
    "DiffusionConfig": "flatkit.config",
    "RunConfig": "flatkit.config",
    "FlatkitError": "flatkit.errors",
    "UsageError": "flatkit.errors",
    "load_dataset": "flatkit.data",
    "create_diffusion": "flatkit.diffusion",
    "build_model": "flatkit.models.presets",
    "Objective": "flatkit.objective",
    "hessian": "flatkit.analyses.hessian",
    "HessianResult": "flatkit.analyses.hessian",
    "top_eigenvalues": "flatkit.curvature",
    "hessian_trace": "flatkit.curvature",
    "spectral_density": "flatkit.curvature",
    "per_timestep_curvature": "flatkit.curvature",
    "perturb": "flatkit.analyses.perturb",
    "landscape": "flatkit.analyses.landscape",
    "sharpness": "flatkit.analyses.sharpness",
    "Task": "flatkit.interop.custom",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flatkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
