"""Step-indexed schedules of the trainer: the learning rate (linear warm-up) and SAM's radius rho.

Steps are counted from 1: ``step`` is the index of the optimizer update about to be taken.
"""

from __future__ import annotations

RHO_SCHEDULES = ("constant", "linear")


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up from ``lr / warmup`` at step 1 to ``lr`` at step ``warmup``, constant afterwards.

    ``warmup = 0`` means no warm-up (ADM's default: constant lr 1e-4).
    """
    if warmup <= 0:
        return float(lr)
    return float(lr) * min(1.0, step / warmup)


def rho_at(step: int, rho: float, schedule: str = "constant", warmup: int = 0) -> float:
    """SAM radius at ``step``: ``constant`` (always ``rho``) or ``linear`` (warm-up from ``rho/warmup`` to
    ``rho`` over ``warmup`` steps, constant afterwards)."""
    if schedule == "constant" or warmup <= 0:
        return float(rho)
    if schedule == "linear":
        return float(rho) * min(1.0, step / warmup)
    raise ValueError(f"unknown rho schedule {schedule!r} (choose from {', '.join(RHO_SCHEDULES)})")
