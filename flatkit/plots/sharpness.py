"""Sharpness figure: the models of one :class:`~flatkit.analyses.sharpness.SharpnessResult` side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import colour, save, style

KIND_WORDS = {"keskar": "Keskar ε-sharpness (%)", "l2": "worst case in the L2 ball (SAM): ΔL",
              "average": "average case E ΔL under N(0, σ²I)", "adaptive": "adaptive worst case (ASAM): ΔL"}
EPS_WORDS = {"keskar": "ε", "l2": "ρ", "average": "σ", "adaptive": "ρ"}


def plot_sharpness(res: Any, stem: str | Path, title: str | None = None) -> list[Path]:
    """One bar per model (its label under it, the value above it); ``average`` draws its confidence interval
    as an error bar, the worst-case kinds each restart's best ΔL as points."""
    import matplotlib.pyplot as plt

    labels = list(res.labels) or [f"model{m}" for m in range(len(res.value))]
    M = len(labels)
    vals = np.array([np.nan if v is None else float(v) for v in res.value])
    x = np.arange(M)
    with style():
        fig, ax = plt.subplots(figsize=(max(3.2, 1.1 * M + 1.6), 3.2))
        colours = [colour(lab, m) for m, lab in enumerate(labels)]
        ax.bar(x, np.nan_to_num(vals), width=0.6, color=colours, alpha=0.85)
        if res.kind == "average":
            lo = np.array([np.nan if v is None else float(v) for v in res.ci_low])
            hi = np.array([np.nan if v is None else float(v) for v in res.ci_high])
            ax.errorbar(x, vals, yerr=np.vstack([vals - lo, hi - vals]), fmt="none", ecolor="0.15", capsize=4,
                        lw=1, label=f"{res.confidence:.0%} confidence interval")
            ax.legend(frameon=False, loc="best")
        else:
            for m, per in enumerate(res.per_restart):
                if not per:
                    continue
                pv = np.asarray(per, dtype=float)
                if res.kind == "keskar":
                    pv = pv / (1.0 + float("nan" if res.loss0[m] is None else res.loss0[m])) * 100.0
                ax.plot(np.full(pv.size, x[m]) + np.linspace(-0.12, 0.12, pv.size), pv, "o", ms=3, color="0.15",
                        label="per restart" if m == 0 else None)
            ax.legend(frameon=False, loc="best")
        from flatkit.repeats import errorbars

        if errorbars(ax, x + 0.2, res, "value"):  # --repeats: beside the bar (repeat 0's value)
            ax.legend(frameon=False, loc="best")
        for m, v in enumerate(vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.3g}", (x[m], v), textcoords="offset points", xytext=(0, 3), ha="center",
                            va="bottom", fontsize=7)
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_xticks(x, labels, rotation=20 if M > 3 else 0, ha="right" if M > 3 else "center")
        ax.set_ylabel(KIND_WORDS.get(res.kind, "sharpness"))
        ax.set_title(title or f"{res.kind} sharpness, {EPS_WORDS.get(res.kind, 'ε')} = {res.eps:g}")
        ax.margins(y=0.15)
        fig.tight_layout()
    return save(fig, stem, formats=("png",))
