"""Figures of the robustness analyses; they read only result files (``.json`` dicts and ``.npz`` arrays)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import colour, save, style


def _load(res: dict | str | Path) -> dict:
    if isinstance(res, (str, Path)):
        return json.loads(Path(res).read_text())
    return res


def _nan(v: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def plot_prior(result: dict | str | Path, stem: str | Path) -> list[Path]:
    """Drift (MSE to the paired unperturbed samples) and distance to the data against KL(prior ‖ N(0, I)),
    one line per checkpoint; circles: shift/scale priors, triangles: additive noise x_T + η z."""
    import matplotlib.pyplot as plt

    r = _load(result)
    kl = _nan(r["kl"])
    kind = np.array(r["kind"])
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        panels = [
            ("drift_mse", "paired drift MSE (vs unperturbed)"),
            ("distance", r.get("distance_name", "")),
            ("loss_change", "training-loss change (perturbed bank)"),
        ]
        for ci, entry in enumerate(r["checkpoints"]):
            c = colour(entry["label"], ci)
            order = np.argsort(kl, kind="stable")
            for ax, (key, _) in zip(axes, panels, strict=True):
                y = _nan(entry[key])
                ax.plot(kl[order], y[order], "-", color=c, lw=1, alpha=0.6)
                for fam, mk in (("shift_scale", "o"), ("noise", "^")):
                    m = kind == fam
                    if m.any():
                        ax.plot(
                            kl[m],
                            y[m],
                            mk,
                            color=c,
                            ms=4,
                            label=entry["label"] if fam == "shift_scale" else None,
                        )
        for ax, (_, lab) in zip(axes, panels, strict=True):
            ax.set_xscale(
                "symlog", linthresh=max(1e-3, float(np.nanmin(kl[kl > 0])) if (kl > 0).any() else 1.0)
            )
            ax.set_xlabel("KL(perturbed prior ‖ N(0, I)) [nats]")
            ax.set_ylabel(lab if len(lab) < 45 else lab.split(" (")[0])
            ax.grid(alpha=0.3)
        axes[0].legend(loc="best")
        fig.suptitle("Robustness to a perturbed prior (o: x_T = μ + s·z, ^: x_T = z + η·z')")
        fig.tight_layout()
        return save(fig, stem)


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


def plot_prior_samples(result: dict | str | Path, previews: np.ndarray, stem: str | Path) -> list[Path]:
    """The first checkpoint's samples at each prior point, paired by seed (same column = same seed)."""
    r = _load(result)
    labels = []
    for kind, mu, s, eta, kl in zip(r["kind"], r["mu"], r["s"], r["eta"], r["kl"], strict=True):
        lab = f"μ={mu:g}, s={s:g}" if kind == "shift_scale" else f"η={eta:g}"
        labels.append(f"{lab}\nKL={kl:.3g}")
    return plot_sample_rows(previews, labels, stem, title=f"{r['checkpoints'][0]['label']}: paired samples")


def plot_exposure(result: dict | str | Path, stem: str | Path) -> list[Path]:
    """‖ε_θ‖ along the sampling chain (solid) and on forward-noised data (dashed), per checkpoint; the gap;
    δ_t."""
    import matplotlib.pyplot as plt

    r = _load(result)
    has_delta = any(np.isfinite(_nan(e["delta_t"])).any() for e in r["checkpoints"])
    with style():
        fig, axes = plt.subplots(1, 3 if has_delta else 2, figsize=(11 if has_delta else 8, 3.4))
        norm = "‖ε_θ‖²" if r.get("norm") == "squared" else "‖ε_θ‖₂"
        for ci, e in enumerate(r["checkpoints"]):
            c = colour(e["label"], ci)
            t = np.array(e["t"])
            axes[0].plot(t, e["sampling_norm"], "-", color=c, label=f"{e['label']} sampling")
            axes[0].plot(t, e["training_norm"], "--", color=c, label=f"{e['label']} training")
            axes[1].plot(
                t,
                e["gap"],
                "-o",
                color=c,
                ms=2.5,
                label=f"{e['label']} (last {e['gap_last']:.3g}, mean {e['gap_mean']:.3g})",
            )
            if has_delta:
                axes[2].plot(t, _nan(e["delta_t"]), "-o", color=c, ms=2.5, label=e["label"])
        axes[0].set_ylabel(f"mean {norm}")
        axes[0].set_title("predicted-noise norm")
        axes[1].axhline(0, color="0.5", lw=0.8)
        axes[1].set_ylabel(f"gap (sampling − training) of {norm}")
        axes[1].set_title("exposure-bias gap")
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


def plot_quantize(result: dict | str | Path, stem: str | Path) -> list[Path]:
    """Weight error, loss change, paired drift and distance against the bit width."""
    import matplotlib.pyplot as plt

    r = _load(result)
    bits = np.array(r["bits"])
    order = np.argsort(bits)
    panels = [
        ("weight_rel_error", "relative weight error ‖Ŵ−W‖/‖W‖", True),
        ("loss_change", "training-loss change", False),
        ("drift_mse", "paired sample drift MSE", True),
        ("distance", "distance to data (SW₂, pixels)", False),
    ]
    with style():
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
        for ax, (key, lab, logy) in zip(axes, panels, strict=True):
            y = _nan(r[key])
            ax.plot(bits[order], y[order], "-o", color=colour("ADM"), ms=4)
            if key == "distance" and r.get("distance_fp") is not None:
                ax.axhline(r["distance_fp"], color="0.5", ls="--", lw=1, label="full precision")
                ax.legend(loc="best")
            if key == "loss_change":
                ax.axhline(0, color="0.5", lw=0.8)
            if logy and np.all(y[np.isfinite(y)] > 0):
                ax.set_yscale("log")
            ax.set_xlabel("bits")
            ax.set_xticks(bits)
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
        fig.suptitle(f"Weight quantization ({r['granularity']}, round-to-nearest, symmetric)")
        fig.tight_layout()
        return save(fig, stem)


def plot_quantize_samples(result: dict | str | Path, previews: np.ndarray, stem: str | Path) -> list[Path]:
    """Samples at full precision and at each bit width side by side (same seeds in each column)."""
    r = _load(result)
    labels = ["full\nprecision"] + [f"{b}-bit" for b in r["bits"]]
    return plot_sample_rows(
        previews, labels, stem, title=f"Quantized samples ({r['granularity']}), paired by seed"
    )
