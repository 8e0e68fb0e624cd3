"""Figures of the robustness analyses; they read only Result objects (:class:`PriorResult`,
:class:`ExposureResult`, :class:`QuantizeResult`), one line (or row of samples) per model, labelled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flatkit.plots.style import colour, save, style

if TYPE_CHECKING:
    from flatkit.analyses.robustness.exposure import ExposureResult
    from flatkit.analyses.robustness.prior import PriorResult
    from flatkit.analyses.robustness.quantize import QuantizeResult


def _nan(v: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def plot_prior(res: PriorResult, stem: str | Path) -> list[Path]:
    """Drift (MSE to the paired unperturbed samples), distance to the data and loss change against
    KL(prior ‖ N(0, I)), one line per model; circles: shift/scale priors, triangles: additive noise x_T + η z."""
    import matplotlib.pyplot as plt

    kl = _nan(res.kl)
    kind = np.array(res.kind)
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        panels = [
            ("drift_mse", "paired drift MSE (vs unperturbed)"),
            ("distance", res.distance_name),
            ("loss_change", "training-loss change (perturbed bank)"),
        ]
        for m, label in enumerate(res.labels):
            c = colour(label, m)
            for ax, (key, _) in zip(axes, panels, strict=True):
                y = _nan(getattr(res, key)[m])
                for fam, mk in (("shift_scale", "o"), ("noise", "^")):
                    sel = kind == fam
                    if sel.any():  # points only: the (μ, s) / η settings are not a sequence to join
                        ax.plot(kl[sel], y[sel], marker=mk, ls="none", color=c, ms=5, alpha=0.85,
                                label=label if fam == "shift_scale" or not (kind == "shift_scale").any() else None)
        for ax, (_, lab) in zip(axes, panels, strict=True):
            _kl_axis(ax, kl)
            ax.set_xlabel("KL(perturbed prior ‖ N(0, I)) [nats]")
            ax.set_ylabel(lab if len(lab) < 45 else lab.split(" (")[0])
            ax.grid(alpha=0.3)
        _name_points(axes[0], kl, [_nan(res.drift_mse[m]) for m in range(len(res.labels))], res.point_labels())
        axes[0].legend(loc="best")
        fig.suptitle("Robustness to a perturbed prior (o: x_T = μ·1 + s·z, ^: x_T = z + η·z'; points, not a "
                     "sequence)")
        fig.tight_layout()
        return save(fig, stem)


def _name_points(ax: Any, kl: np.ndarray, ys: list[np.ndarray], names: list[str]) -> None:
    """Name each prior point once, at its highest value; a name that would overlap one already placed (closer
    than 30 px) is left out."""
    ax.figure.canvas.draw_idle()
    placed: list[np.ndarray] = []
    for p, name in enumerate(names):
        vals = [v[p] for v in ys if np.isfinite(v[p])]
        if not vals or not np.isfinite(kl[p]):
            continue
        xy = ax.transData.transform((kl[p], max(vals)))
        if any(np.hypot(*(xy - q)) < 30 for q in placed):
            continue
        placed.append(xy)
        ax.annotate(name, (kl[p], max(vals)), textcoords="offset points", xytext=(3, 4), fontsize=6, color="0.3")


def _kl_axis(ax: Any, kl: np.ndarray) -> None:
    """A KL axis readable from 0: linear up to the decade below the smallest positive KL, logarithmic above,
    ticks at 0 and at each decade."""
    from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator

    pos = kl[np.isfinite(kl) & (kl > 0)]
    if not pos.size:
        return
    lt = 10.0 ** np.floor(np.log10(pos.min()))
    ax.set_xscale("symlog", linthresh=lt, linscale=0.6)
    ax.xaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=lt))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "0" if x == 0 else f"{x:g}"))
    ax.set_xlim(-0.15 * lt, None)


def plot_sample_rows(
    previews: np.ndarray,
    labels: Sequence[str],
    stem: str | Path,
    title: str = "",
    formats: tuple[str, ...] = ("png",),
) -> list[Path]:
    """One row of samples per setting (``previews``: (R, k, H, W, C) uint8), labelled on the left."""
    import matplotlib.pyplot as plt

    from flatkit.sampling import image_grid

    R, k = previews.shape[:2]
    h, w = previews.shape[2:4]
    with style():
        fig, axes = plt.subplots(R, 1, figsize=(min(1.0 * k, 14), 1.05 * R + 0.4), squeeze=False)
        for i in range(R):
            row = image_grid(previews[i], ncol=k, pad=1)
            ax = axes[i, 0]
            ax.imshow(
                row[..., 0] if row.shape[-1] == 1 else row,
                cmap="gray" if row.shape[-1] == 1 else None,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            ax.set_ylabel(labels[i], rotation=0, ha="right", va="center", fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return save(fig, stem, formats)


def plot_prior_samples(res: PriorResult, stem: str | Path) -> list[Path]:
    """Every model's samples at each prior point, paired by seed (same column = same seed), one row per
    (model, point) labelled with both."""
    if res.previews is None:
        return []
    prev = np.asarray(res.previews)
    rows, labels = [], []
    for m, model in enumerate(res.labels):
        for p, (lab, kl) in enumerate(zip(res.point_labels(), res.kl, strict=True)):
            rows.append(prev[m, p])
            labels.append(f"{model}\n{lab}\nKL={kl:.3g}" if len(res.labels) > 1 else f"{lab}\nKL={kl:.3g}")
    title = "paired samples" if len(res.labels) > 1 else f"{res.labels[0]}: paired samples"
    return plot_sample_rows(np.stack(rows), labels, stem, title=title)


def plot_exposure(res: ExposureResult, stem: str | Path) -> list[Path]:
    """‖ε_θ‖ along the sampling chain (solid) and on forward-noised data (dashed), per checkpoint; the gap;
    δ_t."""
    import matplotlib.pyplot as plt

    has_delta = any(np.isfinite(_nan(d)).any() for d in res.delta_t)
    with style():
        fig, axes = plt.subplots(1, 3 if has_delta else 2, figsize=(11 if has_delta else 8, 3.4))
        norm = "‖ε_θ‖²" if res.eps_norm == "squared" else "‖ε_θ‖₂"
        for m, label in enumerate(res.labels):
            c = colour(label, m)
            t = np.array(res.t[m])
            axes[0].plot(t, _nan(res.sampling_norm[m]), "-", color=c, label=f"{label} sampling")
            axes[0].plot(t, _nan(res.training_norm[m]), "--", color=c, label=f"{label} training")
            axes[1].plot(t, _nan(res.gap[m]), "-o", color=c, ms=2.5,
                         label=f"{label} (last {_num(res.gap_last[m]):.3g}, mean {_num(res.gap_mean[m]):.3g})")
            if has_delta:
                axes[2].plot(t, _nan(res.delta_t[m]), "-o", color=c, ms=2.5, label=label)
        axes[0].set_ylabel(f"mean {norm}")
        axes[0].set_title("predicted-noise norm")
        axes[1].axhline(0, color="0.5", lw=0.8)
        gap_symlog(axes[1], [_nan(g) for g in res.gap])
        axes[1].set_ylabel(f"gap (sampling − training) of {norm}")
        axes[1].set_title("exposure-bias gap (symlog: the last step dominates)"
                          if axes[1].get_yscale() == "symlog" else "exposure-bias gap")
        if has_delta:
            axes[2].set_ylabel("δ_t = (std − √(1−ᾱ_t))²")
            axes[2].set_yscale("symlog", linthresh=1e-4)
            axes[2].set_title("variance mismatch δ_t")
        for ax in axes:
            ax.set_xlabel("timestep t (sampling runs left to right)")
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=7)
        fig.tight_layout()
        return save(fig, stem)


def gap_symlog(ax: Any, gaps: Sequence[np.ndarray]) -> None:
    """A symlog y axis for the exposure gap when its largest |value| (the last step, where x̂_0 is decoded) is
    more than 10× the typical one: linear within the median |gap| rounded down to a decade, logarithmic beyond."""
    g = np.concatenate([np.abs(np.asarray(v, dtype=float)) for v in gaps]) if len(gaps) else np.zeros(0)
    g = g[np.isfinite(g) & (g > 0)]
    if g.size < 2 or g.max() <= 10 * np.median(g):
        return
    ax.set_yscale("symlog", linthresh=10.0 ** np.floor(np.log10(np.median(g))), linscale=0.8)


def plot_quantize(res: QuantizeResult, stem: str | Path) -> list[Path]:
    """Weight error, loss change, paired drift and distance against the bit width, one line per model (dashed:
    each model's full-precision distance)."""
    import matplotlib.pyplot as plt

    from flatkit.repeats import errorbars_along, repeats_note

    bits = np.array(res.bits)
    order = np.argsort(bits)
    panels = [
        ("weight_rel_error", "relative weight error ‖Ŵ−W‖/‖W‖", True),
        ("loss_change", "training-loss change", False),
        ("drift_mse", "paired sample drift MSE", True),
        ("distance", "distance to data (SW₂, pixels)", False),
    ]
    with style():
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
        for ax, (key, lab, logy) in zip(axes, panels, strict=True):
            ys = [_nan(v) for v in getattr(res, key)]
            for m, label in enumerate(res.labels):
                c = colour(label, m)
                ax.plot(bits[order], ys[m][order], "-o", color=c, ms=4, label=label)
                if key != "weight_rel_error":  # --repeats: the bank and the sample seeds redrawn
                    errorbars_along(ax, bits, res, key, m, c, len(res.labels))
                if key == "distance" and res.distance_fp[m] is not None:
                    ax.axhline(res.distance_fp[m], color=c, ls="--", lw=1,
                               label=f"{label} full precision" if len(res.labels) > 1 else "full precision")
            if key == "loss_change":
                ax.axhline(0, color="0.5", lw=0.8)
            y = np.concatenate(ys) if ys else np.array([])
            if logy and y.size and np.all(y[np.isfinite(y)] > 0):
                ax.set_yscale("log")
            ax.set_xlabel("bits")
            ax.set_xticks(bits)
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
        axes[0].legend(loc="best", fontsize=7)
        axes[3].legend(loc="best", fontsize=7)
        fig.suptitle(f"Weight quantization ({res.granularity}, round-to-nearest, symmetric){repeats_note(res)}")
        fig.tight_layout()
        return save(fig, stem)


def plot_quantize_samples(res: QuantizeResult, stem: str | Path) -> list[Path]:
    """Samples at full precision and at each bit width (same seeds in each column), one row per (model,
    precision) labelled with both."""
    if res.previews is None:
        return []
    prev = np.asarray(res.previews)
    precisions = ["full\nprecision"] + [f"{b}-bit" for b in res.bits]
    rows, labels = [], []
    for m, model in enumerate(res.labels):
        for i, p in enumerate(precisions):
            rows.append(prev[m, i])
            labels.append(f"{model}\n{p}")
    return plot_sample_rows(np.stack(rows), labels, stem,
                            title=f"Quantized samples ({res.granularity}), paired by seed")


def _num(v) -> float:
    """A recorded value for a label: None (a non-finite value stored as null) shows as nan."""
    return float("nan") if v is None else float(v)
