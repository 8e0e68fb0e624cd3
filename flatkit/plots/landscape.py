"""Landscape and perturbation figures, drawn from result objects read back from files.

- :func:`plot_landscape`: 1-D curves, or per model a filled contour (top) and a 3-D surface (bottom), shared
  levels computed from the data, the centre θ marked (and the checkpoints on an interpolation plane);
- :func:`plot_landscape_html`: the same as an interactive plotly page that works offline (plotly.js inlined);
- :func:`plot_perturb`: ΔL against the radius, random directions (mean ± spread) and the worst case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import colour, save, style

NORM_WORDS = {"filter": "filter-normalised", "layer": "layer-normalised", "model": "‖d‖ = ‖θ‖", "unit": "‖d‖ = 1",
              "none": "unnormalised"}


def _axis_label(res: Any, i: int) -> str:
    kind = res.directions
    if kind == "interp":
        return "α  (θ₀ → θ₁)" if i == 0 else ("β  (θ₀ → θ₂, orthogonalised)" if len(res.marks) > 2
                                               else f"β  (random, {NORM_WORDS.get(res.norm, res.norm)})")
    if kind == "eigen":
        return f"{'αβ'[i]}  (Hessian eigenvector {i + 1})"
    if kind == "pca":
        ev = list(getattr(res, "explained_variance", []) or [])
        pct = f", {100 * ev[i]:.1f} % of variance" if i < len(ev) else ""
        return f"{'αβ'[i]}  (trajectory PCA direction {i + 1}{pct})"
    if kind == "random":
        return f"{'αβ'[i]}  (random direction d{i + 1}, {NORM_WORDS.get(res.norm, res.norm)})"
    return f"{'αβ'[i]}  (direction d{i + 1})"


def _levels(values: np.ndarray, n: int = 24) -> tuple[np.ndarray, bool]:
    """Contour levels from the finite data: log-spaced when positive and spanning > 2 decades."""
    v = values[np.isfinite(values)]
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-6, 1e-12)
    if lo > 0 and hi / lo > 100:
        return np.geomspace(lo, hi, n), True
    return np.linspace(lo, hi, n), False


def plot_landscape(res: Any, stem: str | Path, title: str | None = None) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    vals = np.asarray(res.values, dtype=np.float64)
    M = vals.shape[0]
    labels = list(res.labels) or [f"model{m}" for m in range(M)]
    a = np.asarray(res.coords_a)
    with style():
        if res.dims == 1:
            fig, ax = plt.subplots(figsize=(4.6, 3.4))
            for m in range(M):
                ax.plot(a, vals[m], "-o", ms=2.5, lw=1.4, color=colour(labels[m], m), label=labels[m])
            ic = int(np.argmin(np.abs(a)))
            if a[ic] == 0.0:
                ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
                ax.plot([0.0] * M, vals[:, ic], "*", color="k", ms=8, zorder=5, label="θ (centre)")
            for mk in res.marks[1:]:
                j = int(np.argmin(np.abs(a - mk[1])))
                ax.plot(a[j], vals[0, j], "D", color="k", ms=4, zorder=5)
                ax.annotate(mk[0], (a[j], vals[0, j]), textcoords="offset points", xytext=(4, 4), fontsize=7)
            finite = vals[np.isfinite(vals)]
            if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
                ax.set_yscale("log")
            ax.set_xlabel(_axis_label(res, 0))
            ax.set_ylabel("loss L(θ + α d₁)")
            ax.set_xlim(a.min(), a.max())
            ax.legend(frameon=False)
            ax.set_title(title or "1-D loss slice")
        else:
            b = np.asarray(res.coords_b)
            A, B = np.meshgrid(a, b, indexing="ij")
            levels, log = _levels(vals)
            fig = plt.figure(figsize=(3.6 * M + 0.8, 6.6))
            cs, top = None, []
            for m in range(M):
                Z = np.ma.masked_invalid(vals[m])
                ax = fig.add_subplot(2, M, m + 1)
                top.append(ax)
                kw = {"norm": LogNorm(levels[0], levels[-1])} if log else {}
                cs = ax.contourf(A, B, Z, levels=levels, cmap="viridis", extend="neither", **kw)
                ax.contour(A, B, Z, levels=levels[::3], colors="white", linewidths=0.4, alpha=0.6, **kw)
                ax.plot(0, 0, "*", color="red", ms=9, mec="white", mew=0.6, label="θ")
                if res.directions == "pca" and res.marks:  # the optimisation path
                    ax.plot([mk[1] for mk in res.marks], [mk[2] for mk in res.marks], "-", color="white", lw=1)
                for mk in res.marks:
                    ax.plot(mk[1], mk[2] if len(mk) > 2 else 0.0, "D", color="white", mec="k", ms=4)
                    ax.annotate(mk[0], (mk[1], mk[2] if len(mk) > 2 else 0.0), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color="white")
                ax.set_xlabel(_axis_label(res, 0))
                ax.set_ylabel(_axis_label(res, 1))
                ax.set_aspect("equal" if res.directions != "interp" else "auto")
                ax.set_title(labels[m] + (f"  (L(θ) = {res.loss_centre[m]:.4g})" if res.loss_centre else ""),
                             color=colour(labels[m], m) if M > 1 else "k")
                ax3 = fig.add_subplot(2, M, M + m + 1, projection="3d")
                Zs = np.log10(vals[m]) if log else vals[m]
                ax3.plot_surface(A, B, np.ma.masked_invalid(Zs), cmap="viridis", linewidth=0, antialiased=True,
                                 rstride=1, cstride=1, vmin=np.log10(levels[0]) if log else levels[0],
                                 vmax=np.log10(levels[-1]) if log else levels[-1])
                ax3.set_xlabel("α", labelpad=-2)
                ax3.set_ylabel("β", labelpad=-2)
                ax3.set_zlabel("log₁₀ loss" if log else "loss", labelpad=2)
                ax3.tick_params(labelsize=6, pad=0)
                ax3.view_init(elev=32, azim=-58)
            top[0].legend(loc="upper right", fontsize=7, framealpha=0.6)
            fig.subplots_adjust(wspace=0.45, hspace=0.25)
            fig.colorbar(cs, ax=top, label="loss", fraction=0.046 if M == 1 else 0.025, pad=0.04)
            fig.suptitle(title or "Loss landscape", y=0.98)
    return save(fig, stem)


def plot_landscape_html(res: Any, path: str | Path, title: str | None = None) -> Path:
    """An interactive plotly page (plotly.js inlined: no CDN, works offline)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    vals = np.asarray(res.values, dtype=np.float64)
    M = vals.shape[0]
    labels = list(res.labels) or [f"model{m}" for m in range(M)]
    a = np.asarray(res.coords_a)
    if res.dims == 1:
        fig = go.Figure()
        for m in range(M):
            fig.add_trace(go.Scatter(x=a, y=vals[m], mode="lines+markers", name=labels[m],
                                     line={"color": colour(labels[m], m)}))
        fig.update_layout(xaxis_title=_axis_label(res, 0), yaxis_title="loss")
    else:
        b = np.asarray(res.coords_b)
        fig = make_subplots(rows=1, cols=M, specs=[[{"type": "surface"}] * M], subplot_titles=labels)
        finite = vals[np.isfinite(vals)]
        for m in range(M):
            z = np.where(np.isfinite(vals[m]), vals[m], None).T  # plotly: z[row=b][col=a]
            fig.add_trace(go.Surface(x=a, y=b, z=z, colorscale="Viridis", cmin=float(finite.min()),
                                     cmax=float(finite.max()), showscale=(m == M - 1), name=labels[m],
                                     contours={"z": {"show": True, "usecolormap": True, "project_z": True}}),
                          row=1, col=m + 1)
            if res.loss_centre and np.isfinite(res.loss_centre[m]):
                fig.add_trace(go.Scatter3d(x=[0.0], y=[0.0], z=[res.loss_centre[m]], mode="markers",
                                           marker={"color": "red", "size": 5}, name=f"θ ({labels[m]})"),
                              row=1, col=m + 1)
        fig.update_scenes(xaxis_title="α", yaxis_title="β", zaxis_title="loss")
    fig.update_layout(title=title or "Loss landscape", template="plotly_white", height=560)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


RADIUS_WORDS = {"filter": "radius r (relative, per filter)", "layer": "radius r (relative, per tensor)",
                "model": "radius r (relative to ‖θ‖)", "unit": "radius r (L2 norm of the perturbation)",
                "none": "radius r (times an unnormalised Gaussian)"}


def _loss_change_axes(ax: Any, r: np.ndarray, norm: str, ylabel: str, title: str) -> None:
    """The frame of a loss-change-versus-radius panel: the zero line, the labels, the radius range, the legend."""
    ax.axhline(0.0, color="0.6", lw=0.6, ls=":")
    ax.set_xlabel(RADIUS_WORDS.get(norm, "radius r"))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xlim(r.min(), r.max())
    ax.legend(frameon=False)


def plot_perturb(res: Any, stem: str | Path, title: str | None = None) -> list[Path]:
    """ΔL(r) = L(θ + r d) − L(θ): random directions (mean ± one std over K) and the worst-case direction."""
    import matplotlib.pyplot as plt

    r = np.asarray(res.radii)
    M = len(res.loss0)
    labels = list(res.labels) or [f"model{m}" for m in range(M)]
    worst = np.asarray(res.worst)
    has_worst = worst.size > 0
    with style():
        fig, axes = plt.subplots(1, 2 if has_worst else 1, figsize=(8.4 if has_worst else 4.6, 3.4), squeeze=False)
        ax = axes[0, 0]
        for m in range(M):
            c = colour(labels[m], m)
            mean, std = np.asarray(res.mean)[m], np.asarray(res.std)[m]
            ax.plot(r, mean, "-o", ms=2.5, color=c, label=f"{labels[m]} (L(θ) = {_nan_if_none(res.loss0[m]):.4g})")
            ax.fill_between(r, mean - std, mean + std, color=c, alpha=0.18, lw=0)
        _loss_change_axes(ax, r, res.norm, "L(θ + r d) − L(θ)",
                          f"random Gaussian directions (mean ± std, K = {res.n_directions})")
        if has_worst:
            ax = axes[0, 1]
            for m in range(M):
                ax.plot(r, worst[m], "-s", ms=2.5, color=colour(labels[m], m), label=labels[m])
            _loss_change_axes(ax, r, res.norm, "max L(θ + r d) − L(θ)",
                              f"worst case (normalised gradient, {res.worst_steps} ascent steps)")
        fig.suptitle(title or "Loss under weight perturbation")
        fig.tight_layout()
    return save(fig, stem)


def _nan_if_none(v) -> float:
    """A recorded loss for a label: None (a non-finite value stored as null) shows as nan."""
    return float("nan") if v is None else float(v)
