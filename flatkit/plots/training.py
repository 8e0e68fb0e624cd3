"""Training curves from ``metrics.jsonl``, overlaid across runs (one colour per run, the arm's colour when the run
is one of the paper's): the loss (raw logged windows faint, smoothed solid), the gradient norm, the learning rate,
and, when a run trained with SAM, the radius ρ (dashed) and the norm ‖e‖ of the ascent step (solid); x = step."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flatkit.plots.style import colour, save, style


def smooth(y: Sequence[float], span: int | None = None) -> np.ndarray:
    """Exponential moving average of ``y`` with the bias of its start corrected (NaN entries skipped, carried
    over): weight ``a = 1 − 2/(span + 1)``, ``span`` a tenth of the points by default (at least 1)."""
    y = np.asarray(y, dtype=np.float64)
    span = max(1, len(y) // 10) if span is None else max(1, int(span))
    a = 1.0 - 2.0 / (span + 1.0)
    out = np.full(y.shape, np.nan)
    s = w = 0.0
    for i, v in enumerate(y):
        if np.isfinite(v):
            s, w = a * s + (1 - a) * v, a * w + (1 - a)
        out[i] = s / w if w > 0 else np.nan
    return out


def series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(step, value) of ``key`` over the metrics lines (missing / null values as NaN)."""
    steps = np.array([float(r.get("step", np.nan)) for r in records])
    vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in records])
    return steps, vals


def is_sam(records: Sequence[dict]) -> bool:
    return any((r.get("rho") or 0) > 0 or (r.get("sam_e_norm") or 0) > 0 for r in records)


def plot_training_curves(items: Sequence[tuple[str, Sequence[dict]]], stem: str | Path) -> list[Path]:
    """``items``: (run label, the lines of its ``metrics.jsonl``). Writes ``<stem>.png`` and ``.pdf``."""
    import matplotlib.pyplot as plt

    items = [(lab, list(rec)) for lab, rec in items if rec]
    if not items:
        raise ValueError("no metrics lines to plot")
    sam = [i for i, (_, rec) in enumerate(items) if is_sam(rec)]
    panels = ["loss", "grad_norm", "lr"] + (["sam"] if sam else [])
    with style():
        fig, axes = plt.subplots(2, 2, figsize=(10.5, 6.6)) if sam else plt.subplots(1, 3, figsize=(12.5, 3.6))
        axes = dict(zip(panels, np.ravel(axes), strict=True))
        for i, (lab, rec) in enumerate(items):
            col = colour(lab, i)
            mk = {"marker": "o", "ms": 3.5} if len(rec) <= 12 else {}  # a short run's few lines stay visible
            x, loss = series(rec, "loss")
            ax = axes["loss"]
            ax.plot(x, loss, "-", color=col, lw=0.8, alpha=0.3)
            ax.plot(x, smooth(loss), "-", color=col, lw=1.6, label=lab, **mk)
            x, g = series(rec, "grad_norm")
            axes["grad_norm"].plot(x, g, "-", color=col, lw=1.2, label=lab, **mk)
            x, lr = series(rec, "lr")
            axes["lr"].plot(x, lr, "-", color=col, lw=max(0.8, 3.0 - 0.7 * i), label=lab, **mk)  # equal lr: visible
            if i in sam:
                x, rho = series(rec, "rho")
                _, e = series(rec, "sam_e_norm")
                axes["sam"].plot(x, rho, "--", color=col, lw=1.2, **({"marker": "x", "ms": 4.5} if mk else {}))
                axes["sam"].plot(x, e, "-", color=col, lw=1.4, label=lab, **mk)
        ax = axes["loss"]
        ax.set_title("training loss (faint: each logged window; solid: smoothed)")
        ax.set_ylabel("loss (minibatch mean, ε-MSE)")
        finite = np.concatenate([series(rec, "loss")[1] for _, rec in items])
        finite = finite[np.isfinite(finite) & (finite > 0)]
        if finite.size and finite.max() / finite.min() > 20:
            ax.set_yscale("log")
        ax = axes["grad_norm"]
        ax.set_title("gradient norm (before clipping)")
        ax.set_ylabel("‖∇L‖₂ (window mean)")
        ax.set_yscale("log")
        ax = axes["lr"]
        ax.set_title("learning rate")
        ax.set_ylabel("AdamW learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if sam:
            ax = axes["sam"]
            ax.set_title("SAM: radius ρ (dashed) and ascent step ‖e‖ (solid)")
            ax.set_ylabel("ρ, ‖e‖₂ (parameter-space norm)")
            ax.plot([], [], "--", color="0.3", label="ρ")
            ax.plot([], [], "-", color="0.3", label="‖e‖")
        for key in ("lr", "sam"):  # from 0: a constant lr or ‖e‖ = ρ must not zoom into rounding noise
            if key in axes:
                top = max([np.nanmax(ln.get_ydata()) for ln in axes[key].lines if len(ln.get_ydata())] + [0.0])
                axes[key].set_ylim(0.0, 1.15 * top if np.isfinite(top) and top > 0 else 1.0)
        last = max(float(np.nanmax(series(rec, "step")[0])) for _, rec in items)
        for ax in axes.values():
            ax.set_xlim(0, 1.03 * last)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
            ax.legend(loc="best", frameon=False)
        fig.tight_layout()
        return save(fig, stem)
