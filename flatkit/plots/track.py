"""Measures against the training step: one panel per scalar (λ_max, trace, ε-sharpness, quantisation drift, ...,
L(θ)), one line per run and weights (``flatkit track``, and ``flatkit report`` / ``figures`` given checkpoints of
one run at several steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import canonical_arm, colour, marker, save, style

#: scalar key -> y label (quantize drift / loss change keys are per bit width, see :func:`scalar_label`)
LABELS: dict[str, str] = {
    "lambda_max": "top Hessian eigenvalue λ_max",
    "trace": "Hessian trace",
    "sharpness": "ε-sharpness",
    "perturb_random": "ΔL, random directions",
    "perturb_worst": "ΔL, worst-case direction",
    "landscape_mean_dl": "mean ΔL over the landscape slice",
    "loss": "L(θ) on the bank",
}
SHARPNESS_WORDS = {"keskar": "Keskar ε-sharpness (%)", "l2": "SAM worst-case ΔL (L2 ball)",
                   "average": "average ΔL under N(0, σ²I)", "adaptive": "ASAM worst-case ΔL"}


def scalar_label(key: str, settings: dict | None = None) -> str:
    """The y label of one scalar (with the measure's parameters from ``settings``: measure -> settings dict)."""
    settings = settings or {}
    if key.startswith("quantize_drift_"):
        return f"{key.split('_')[2][:-3]}-bit weights: sample drift (same seeds)"
    if key.startswith("quantize_loss_change_"):
        return f"ΔL, {key.split('_')[3][:-3]}-bit weights"
    if key == "sharpness":
        s = settings.get("sharpness") or {}
        kind = s.get("kind", "keskar")
        eps = s.get("eps")
        eps = eps if eps is not None else {"keskar": 1e-3, "l2": 0.05, "average": 0.01, "adaptive": 0.05}.get(kind)
        sym = {"keskar": "ε", "l2": "ρ", "average": "σ", "adaptive": "ρ"}.get(kind, "ε")
        return f"{SHARPNESS_WORDS.get(kind, 'sharpness')}, {sym} = {eps:g}" if eps is not None else \
            SHARPNESS_WORDS.get(kind, "sharpness")
    if key.startswith("perturb_"):
        radii = (settings.get("perturb") or {}).get("radii") or []
        return LABELS[key] + (f", r = {max(radii):g}" if radii else "")
    return LABELS.get(key, key)


def line_label(run: str, weights: str) -> str:
    """``+SAM`` with ``ema`` -> ``+SAM+EMA`` (the paper's arm), ``ADM`` with ``raw`` -> ``ADM``; else
    ``run:weights`` when the weights are not raw."""
    w = (weights or "raw").lower()
    suffix = "+EMA" if w.startswith("ema") else "+SWA" if w.startswith("swa") else ""
    if canonical_arm(run) is not None and (not suffix or canonical_arm(run + suffix) is not None):
        return (suffix or "ADM") if canonical_arm(run) == "ADM" else canonical_arm(run) + suffix
    return run if w == "raw" else f"{run}:{weights}"


def short_label(key: str, settings: dict | None = None) -> str:
    """The y axis of one scalar: the quantity and its unit (the panel title says what it is)."""
    if key == "sharpness":
        kind = ((settings or {}).get("sharpness") or {}).get("kind", "keskar")
        return "ε-sharpness (%)" if kind == "keskar" else "ΔL"
    if key.startswith("quantize_drift_"):
        return "MSE vs full precision"
    return {"lambda_max": "λ_max", "trace": "tr H", "loss": "L(θ)"}.get(key, "ΔL")


def default_keys(keys: list[str]) -> list[str]:
    """The panels in order: λ_max, trace, sharpness, drift at the fewest bits, perturb, landscape, then L(θ)."""
    drift = sorted((int(k.split("_")[2][:-3]), k) for k in keys if k.startswith("quantize_drift_"))
    order = ["lambda_max", "trace", "sharpness", *([drift[0][1]] if drift else []), "perturb_random",
             "perturb_worst", "landscape_mean_dl", "loss"]
    return [k for k in order if k in keys]


def plot_series(panels: list[tuple], stem: str | Path, title: str | None = None) -> list[Path]:
    """One panel per (y label, {line label: (steps, values)}) or (panel title, y label, {...}); x the training
    step; log y where a panel's positive values span more than a decade and a half. A line given as (steps,
    values, lo, hi) also gets a shaded band from lo to hi (an interval; NaN where none). Writes ``<stem>.png``
    and ``.pdf``."""
    import matplotlib.pyplot as plt

    n = len(panels)
    ncol = 1 if n == 1 else 2 if n in (2, 4) else 3
    nrow = -(-n // ncol)
    panels = [p if len(p) == 3 else (None, *p) for p in panels]
    names = list(dict.fromkeys(lab for *_, lines in panels for lab in lines))
    with style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.6 * nrow + 0.5), squeeze=False)
        for ax, (head, ylabel, lines) in zip(axes.flat, panels, strict=False):
            vals = []
            for lab, (x, y, *band) in lines.items():
                i = names.index(lab)
                x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
                ok = np.isfinite(y)
                ax.plot(x[ok], y[ok], marker=marker(lab, i), ms=4, lw=1.4, color=colour(lab, i), label=lab)
                vals.extend(y[ok].tolist())
                if band:
                    lo, hi = (np.asarray(b, dtype=float) for b in band)
                    both = np.isfinite(lo) & np.isfinite(hi)
                    if both.any():
                        ax.fill_between(x[both], lo[both], hi[both], color=colour(lab, i), alpha=0.2, lw=0)
                        vals.extend(lo[both].tolist() + hi[both].tolist())
            v = np.asarray(vals, dtype=float)
            if v.size and (v > 0).all() and v.max() / v.min() > 30:
                ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            if head:
                ax.set_title(head)
            ax.grid(alpha=0.25, lw=0.5)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        handles, labs = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labs, loc="lower center", ncol=min(len(labs), 6), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        if title:
            fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.07 if nrow == 1 else 0.045, 1, 1))
    return save(fig, stem)


def plot_track(res: Any, stem: str | Path, keys: list[str] | None = None, title: str | None = None) -> list[Path]:
    """The figure of a :class:`~flatkit.analyses.track.TrackResult`: each scalar against the training step, one
    line per run and weights."""
    found = list(dict.fromkeys(k for p in res.points for k, v in (p.get("scalars") or {}).items() if v is not None))
    keys = keys or default_keys(found)
    if not keys:
        return []
    panels = []
    banded = False
    for k in keys:
        series, bands = res.series(k), res.bands(k)
        lines = {}
        for (r, w), xy in series.items():
            if (r, w) in bands:  # --repeats: the mean over the repeats and its 95 % interval
                steps, mean, lo, hi = bands[(r, w)]
                lines[line_label(r, w)] = (steps, np.where(np.isfinite(mean), mean, xy[1]), lo, hi)
                banded = True
            else:
                lines[line_label(r, w)] = xy
        panels.append((scalar_label(k, res.settings), short_label(k, res.settings), lines))
    if title is None:
        cfg = (res.meta or {}).get("config", {}).get("track", {})
        title = (f"Along training: one bank of {cfg.get('n_eval')} (x0, t, ε) from {cfg.get('data')} and seed "
                 f"{cfg.get('seed')} for every checkpoint") if cfg else None
        if title and banded:
            title = (f"Along training: banks of {cfg.get('n_eval')} (x0, t, ε) from {cfg.get('data')}, the same "
                     f"{res.n_repeats} seeds at every checkpoint; lines: mean, bands: 95 % interval over the "
                     "repeats")
    return plot_series(panels, stem, title)
