"""The bundled DDPM trainer: SAM / ASAM, EMA, SWA, input perturbation, ADM timestep samplers.

``TrainConfig`` and ``train`` are imported lazily so the building blocks (``sam``, ``averaging``,
``timestep_sampler``, ``schedules``) load without the model and diffusion packages.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from flatkit.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'flatkit.train' has no attribute {name!r}")
