"""The paper's cross-arm figures: one curve (colour + marker, :mod:`flatkit.plots.style`) per arm.

Each function takes ``items``: ``(label, data)`` pairs in the order to draw (the paper's arm order), where
``data`` holds numbers already read from result files (:mod:`flatkit.report.collect`); nothing is recomputed.
Ranges come from the data; every axis names its quantity and unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import colour, marker, save, style

RADIUS_WORDS = {"filter": "radius r (relative to each filter's norm)", "layer": "radius r (relative, per tensor)",
                "model": "radius r (relative to ‖θ‖₂)", "unit": "radius r (‖δ‖₂, absolute)",
                "norm": "radius r (relative to ‖θ‖₂)", "none": "radius r (‖δ‖₂, absolute)"}
LOSS_UNIT = "ε-prediction MSE"


def _legend(ax: Any, n: int) -> None:
    ax.legend(frameon=False, fontsize=7 if n > 5 else 8, ncol=1 if n <= 5 else 2, handlelength=1.6)


def _draw(ax: Any, x: np.ndarray, y: np.ndarray, label: str, i: int, ls: str = "-", **kw: Any) -> None:
    ax.plot(x, y, ls, color=colour(label, i), marker=marker(label, i), ms=4, lw=1.3, label=label, **kw)


def plot_perturb_arms(items: Sequence[tuple[str, dict]], stem: str | Path) -> list[Path]:
    """ΔL(r) = L(θ + r d) − L(θ) per arm: random directions (mean ± std over K) and, when recorded, the
    worst case (normalised-gradient ascent)."""
    import matplotlib.pyplot as plt

    has_worst = any(c.get("worst") is not None for _, c in items)
    rel = {c.get("relative") for _, c in items}
    xlab = RADIUS_WORDS.get(next(iter(rel)), "radius r") if len(rel) == 1 else "radius r (conventions differ!)"
    n = len(items)
    ks = sorted({c.get("k") for _, c in items if c.get("k") is not None})
    groups = arm_groups([lab for lab, _ in items])
    with style():
        if len(groups) > 1:
            fig = _perturb_many(items, groups, xlab, has_worst, ks)
            fig.tight_layout()
            return save(fig, stem)
        fig, axes = plt.subplots(1, 2 if has_worst else 1, figsize=(9.6 if has_worst else 5.0, 3.6), squeeze=False)
        ax = axes[0, 0]
        for i, (lab, c) in enumerate(items):
            _draw(ax, c["radii"], c["mean"], lab, i)
            ax.fill_between(c["radii"], c["mean"] - c["std"], c["mean"] + c["std"], color=colour(lab, i),
                            alpha=0.15, lw=0)
        ax.set_title(f"random Gaussian directions (mean ± std over K = {', '.join(map(str, ks))})")
        panels = [ax]
        if has_worst:
            ax2 = axes[0, 1]
            for i, (lab, c) in enumerate(items):
                if c.get("worst") is not None:
                    _draw(ax2, c["radii"], c["worst"], lab, i)
            ax2.set_title("worst case (normalised-gradient direction)")
            panels.append(ax2)
        r_all = np.concatenate([c["radii"] for _, c in items])
        for a in panels:
            a.axhline(0.0, color="0.6", lw=0.6, ls=":")
            a.set_xlabel(xlab)
            a.set_ylabel(f"ΔL = L(θ + r d) − L(θ)  [{LOSS_UNIT}]")
            a.set_xlim(float(r_all.min()), float(r_all.max()))
            a.grid(alpha=0.25)
            _legend(a, n)
        fig.suptitle("Loss under weight perturbation (lower = flatter)")
        fig.tight_layout()
    return save(fig, stem)


def plot_exposure_arms(items: Sequence[tuple[str, dict]], stem: str | Path) -> list[Path]:
    """‖ε_θ‖ along the sampling chain (solid) and on forward-noised training data (dashed) per arm, and the
    exposure-bias gap (sampling − training) per step."""
    import matplotlib.pyplot as plt

    from flatkit.plots.robustness import gap_symlog

    sq = {c.get("norm") for _, c in items} == {"squared"}
    norm = "‖ε_θ‖₂²" if sq else "‖ε_θ‖₂"
    n = len(items)
    groups = arm_groups([lab for lab, _ in items])
    G = len(groups)
    t_all = np.concatenate([c["t"] for _, c in items])
    steps = sorted({c.get("steps") for _, c in items if c.get("steps")})
    with style():
        if G > 1:  # small multiples: one column per training method, the norms above, the gaps below
            fig, ax2d = plt.subplots(2, G, figsize=(3.3 * G + 0.6, 6.4), squeeze=False, sharey="row", sharex=True)
            gap_curves = [(np.asarray(c["t"]), np.asarray(c["gap"])) for _, c in items]
        else:
            fig, ax1d = plt.subplots(1, 2, figsize=(10.0, 3.8))
            ax2d = np.array([[ax1d[0]], [ax1d[1]]])
        for g, (name, idx) in enumerate(groups):
            top, bot = ax2d[0, g], ax2d[1, g]
            if G > 1:
                _context(bot, gap_curves, idx)
            for i in idx:
                lab, c = items[i]
                col = colour(lab, i)
                top.plot(c["t"], c["sampling"], "-", color=col, marker=marker(lab, i), ms=3.5, lw=1.3, label=lab)
                top.plot(c["t"], c["training"], "--", color=col, lw=1.0, alpha=0.8)
                gm = f"{c['gap_mean']:.3g}" if c.get("gap_mean") is not None else "n/a"
                _draw(bot, c["t"], c["gap"], f"{lab} (mean {gm})", i)
                bot.lines[-1].set_color(col)
                bot.lines[-1].set_marker(marker(lab, i))
            top.plot([], [], "-", color="0.3", label="sampling x̂_t")
            top.plot([], [], "--", color="0.3", label="training x_t ~ q(x_t|x_0)")
            top.set_title(f"{name + ': ' if name else ''}predicted-noise norm", fontsize=9)
            bot.axhline(0.0, color="0.5", lw=0.8)
            bot.set_title(f"{name}: exposure-bias gap" if name else "exposure-bias gap (closer to 0 = less bias)",
                          fontsize=9)
            _legend(top, len(idx) + 2)
            _legend(bot, len(idx))
        gap_symlog(ax2d[1, 0], [np.asarray(c["gap"], dtype=float) for _, c in items])
        ax2d[0, 0].set_ylabel(f"mean per-image {norm}  (ε ~ N(0, I) scale)")
        ax2d[1, 0].set_ylabel(f"gap: sampling − training {norm}\n(closer to 0 = less bias)"
                              + ("  (symlog)" if ax2d[1, 0].get_yscale() == "symlog" else ""))
        for ax in ax2d.ravel():
            ax.set_xlim(float(t_all.max()), float(t_all.min()))
            ax.grid(alpha=0.25)
        for ax in (ax2d[1] if G > 1 else ax2d.ravel()):
            ax.set_xlabel(f"timestep t (T' = {', '.join(map(str, steps))}; sampling runs left → right)")
        if G > 1:
            fig.suptitle("Exposure bias per training method (solid: sampling, dashed: training; grey: the other "
                         f"arms; {n} arms)")
        fig.tight_layout()
    return save(fig, stem)


def plot_quantize_arms(items: Sequence[tuple[str, dict]], stem: str | Path) -> list[Path]:
    """Loss change and paired sample drift against the bit width, per arm (symlog where values span zero)."""
    import matplotlib.pyplot as plt

    n = len(items)
    panels = [("loss_change", f"ΔL = L(θ̂) − L(θ)  [{LOSS_UNIT}]"),
              ("drift_mse", "paired sample drift MSE (pixels on [−1, 1])")]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
        bits_all: set[int] = set()
        for i, (lab, q) in enumerate(items):
            b = np.asarray(q["bits"], dtype=float)
            o = np.argsort(b)
            bits_all |= set(q["bits"])
            for ax, (key, _) in zip(axes, panels, strict=True):
                y = np.array([np.nan if v is None else v for v in q[key]], dtype=float)
                _draw(ax, b[o], y[o], lab, i)
        for ax, (key, ylab) in zip(axes, panels, strict=True):
            ys = np.concatenate([np.asarray([np.nan if v is None else v for v in q[key]], dtype=float)
                                 for _, q in items])
            ys = ys[np.isfinite(ys)]
            if ys.size and ys.min() > 0 and ys.max() / ys.min() > 50:
                ax.set_yscale("log")
            elif ys.size and ys.min() < 0 < ys.max():
                ax.axhline(0.0, color="0.5", lw=0.8)
            ax.set_xlabel("weight bits (symmetric round-to-nearest)")
            ax.set_xticks(sorted(bits_all))
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.25)
            _legend(ax, n)
        gran = sorted({str(q.get("granularity")) for _, q in items})
        fig.suptitle(f"Weight quantization ({', '.join(gran)}; lower = more robust)")
        fig.tight_layout()
    return save(fig, stem)


def plot_flatness_arms(items: Sequence[tuple[str, dict]], stem: str | Path) -> list[Path]:
    """Bars per arm: λ_max, trace (± standard error) and sharpness, for whichever of them were measured."""
    import matplotlib.pyplot as plt

    panels = []
    for key, title in (("lambda_max", "top Hessian eigenvalue λ_max"), ("trace", "Hessian trace tr(H)"),
                       ("sharpness", "sharpness")):
        if any(f.get(key) is not None for _, f in items):
            panels.append((key, title))
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.4, 3.4), squeeze=False)
        labels = [lab for lab, _ in items]
        x = np.arange(len(items))
        for ax, (key, title) in zip(axes[0], panels, strict=True):
            vals = np.array([np.nan if f.get(key) is None else f[key] for _, f in items], dtype=float)
            err = None
            if key == "trace":
                err = np.array([0.0 if f.get("trace_stderr") is None else f["trace_stderr"] for _, f in items])
            ax.bar(x, np.nan_to_num(vals), yerr=err, color=[colour(lab, i) for i, lab in enumerate(labels)],
                   edgecolor="0.2", lw=0.5, capsize=3)
            for i, v in enumerate(vals):
                if not np.isfinite(v):
                    ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
            short = {"lambda_max": "λ_max", "trace": "tr(H)", "sharpness": "sharpness"}[key]
            unit = "[loss / parameter²]"
            if key == "sharpness":
                kinds = sorted({f"{f.get('sharpness_kind')} ε={f.get('sharpness_eps'):g}" for _, f in items
                                if f.get("sharpness") is not None})
                title = f"sharpness ({'; '.join(kinds)})"
                unit = "[% loss increase]" if all(k.startswith("keskar") for k in kinds) else "[loss increase]"
            ax.set_title(title, fontsize=9)
            ax.set_ylabel(f"{short} {unit}")
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=35, ha="right")
            ax.grid(alpha=0.25, axis="y")
        fig.suptitle("Flatness of the loss at θ (lower = flatter)")
        fig.tight_layout()
    return save(fig, stem)


def plot_landscape_arms(items: Sequence[tuple[str, dict]], stem: str | Path) -> list[Path]:
    """2-D slices per arm as filled contours of ΔL = L − L(θ) on one shared colour scale (levels from the
    data), the disc over which the flatness number is averaged drawn as a circle."""
    import matplotlib.pyplot as plt

    items2 = [(lab, d) for lab, d in items if d.get("dims") == 2]
    n = len(items2)
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    dl = [d["values"] - (d["loss_centre"] or 0.0) for _, d in items2]
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in dl])
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-12
    from matplotlib.ticker import MaxNLocator as _Nice

    levels = _Nice(20, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)  # round levels, like the ticks
    with style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol + 1.2, 3.1 * nrow + 0.4), squeeze=False,
                                 layout="constrained")
        cs = None
        for k, ((lab, d), v) in enumerate(zip(items2, dl, strict=True)):
            ax = axes[k // ncol, k % ncol]
            A, B = np.meshgrid(d["coords_a"], d["coords_b"], indexing="ij")
            cs = ax.contourf(A, B, np.ma.masked_invalid(v), levels=levels, cmap="viridis")
            ax.contour(A, B, np.ma.masked_invalid(v), levels=levels[::4], colors="w", linewidths=0.4)
            ax.plot([0], [0], marker=marker(lab, k), color=colour(lab, k), mec="w", ms=8)
            th = np.linspace(0, 2 * np.pi, 100)
            ax.plot(d["radius"] * np.cos(th), d["radius"] * np.sin(th), "w:", lw=0.8)
            val = f"{d['value']:.3g}" if d.get("value") is not None else "n/a"
            ax.set_title(f"{lab}: mean ΔL(r ≤ {d['radius']:g}) = {val}", fontsize=8.5, color=colour(lab, k)
                         if colour(lab, k) != "#000000" else "k")
            ax.set_xlabel("α (direction d₁)")
            ax.set_ylabel("β (direction d₂)")
            ax.set_aspect("equal")
        for k in range(n, nrow * ncol):
            axes[k // ncol, k % ncol].axis("off")
        norms = sorted({str(d.get("norm")) for _, d in items2})
        fig.suptitle(f"2-D loss slices, random directions ({', '.join(norms)}-normalised); "
                     "dotted: the disc of the flatness number")
        from matplotlib.ticker import MaxNLocator

        fig.colorbar(cs, ax=axes.ravel().tolist(), label=f"ΔL = L − L(θ)  [{LOSS_UNIT}]", shrink=0.9,
                     ticks=MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]))
    return save(fig, stem)


def _tile(images: np.ndarray, ncol: int) -> np.ndarray:
    from flatkit.sampling import image_grid

    g = image_grid(images, ncol=ncol, pad=1)
    return g[..., 0] if g.shape[-1] == 1 else g


def plot_sample_table(rows: Sequence[str], cols: Sequence[str], cells: dict[tuple[int, int], np.ndarray],
                      stem: str | Path, title: str, ncol: int = 4) -> list[Path]:
    """A table of sample grids: ``cells[(i, j)]`` (k, H, W, C) uint8 for row i (an arm) and column j (a
    setting); empty where missing. Same column index within a grid = same seed."""
    import matplotlib.pyplot as plt

    R, C = len(rows), len(cols)
    any_img = next(iter(cells.values()))
    k = min(ncol * 2, min(v.shape[0] for v in cells.values()))
    ncol = min(ncol, k)
    h, w = any_img.shape[1:3]
    aspect = (int(np.ceil(k / ncol)) * (h + 1)) / (ncol * (w + 1))
    cw = 0.42 * ncol + 0.1
    with style():
        fig, axes = plt.subplots(R, C, figsize=(cw * C + 1.0, cw * aspect * R + 0.7), squeeze=False)
        for i in range(R):
            for j in range(C):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
                img = cells.get((i, j))
                if img is not None:
                    g = _tile(img[:k], ncol)
                    ax.imshow(g, cmap="gray" if g.ndim == 2 else None, interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "not measured", ha="center", va="center", fontsize=7, color="0.5",
                            transform=ax.transAxes)
                if i == 0:
                    ax.set_title(cols[j], fontsize=9)
                if j == 0:
                    ax.set_ylabel(rows[i], rotation=0, ha="right", va="center", fontsize=9,
                                  color=colour(rows[i], i) if colour(rows[i], i) != "#000000" else "k")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
    return save(fig, stem)


def landscape_plotly_html(items: Sequence[tuple[str, dict]], title: str = "2-D loss landscapes") -> str:
    """The 2-D slices as one interactive plotly figure (a 3-D surface of ΔL = L − L(θ) per arm, one colour
    scale), as a full-width HTML ``<div>`` and its script, WITHOUT plotly.js: the page includes
    :func:`flatkit.plots.landscape.plotly_js_script` once."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from flatkit.plots.landscape import _f32, plotly_figure_div

    items2 = [(lab, d) for lab, d in items if d.get("dims") == 2]
    n = len(items2)
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    fig = make_subplots(rows=nrow, cols=ncol, specs=[[{"type": "surface"}] * ncol] * nrow,
                        subplot_titles=[lab for lab, _ in items2], horizontal_spacing=0.02, vertical_spacing=0.06)
    dl = [np.asarray(d["values"], dtype=float) - (d["loss_centre"] or 0.0) for _, d in items2]
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in dl])
    lo, hi = float(finite.min()), float(finite.max())
    for k, ((lab, d), v) in enumerate(zip(items2, dl, strict=True)):
        fig.add_trace(go.Surface(x=_f32(d["coords_a"]), y=_f32(d["coords_b"]), z=_f32(v.T), colorscale="Viridis",
                                 cmin=lo, cmax=hi, showscale=(k == n - 1), name=lab,
                                 colorbar={"title": {"text": "ΔL = L − L(θ)"}, "len": 0.8},
                                 hovertemplate="α %{x:.3g}<br>β %{y:.3g}<br>ΔL %{z:.4g}<extra>" + lab + "</extra>"),
                      row=k // ncol + 1, col=k % ncol + 1)  # plotly: z[row = β][col = α]
        fig.add_trace(go.Scatter3d(x=[0.0], y=[0.0], z=[0.0], mode="markers", showlegend=False,
                                   marker={"color": colour(lab, k), "size": 5}, name=f"θ ({lab})"),
                      row=k // ncol + 1, col=k % ncol + 1)
    fig.update_scenes(xaxis_title="α", yaxis_title="β", zaxis_title="ΔL", zaxis_range=[min(lo, 0.0), hi])
    fig.update_layout(title=title, template="plotly_white", autosize=True, margin={"l": 0, "r": 0, "t": 60})
    return plotly_figure_div(fig, "landscapes", height=f"{420 * nrow + 60}px")


# ------------------------------------------------------------------------------------------- many arms
FAMILY_OF = {"ADM": "ADM", "+EMA": "ADM", "+SWA": "ADM", "+IP": "+IP", "+IP+EMA": "+IP", "+IP+SWA": "+IP",
             "+SAM": "+SAM", "+SAM+EMA": "+SAM", "+SAM+SWA": "+SAM"}
MANY = 4  # more arms than this: small multiples, one panel per training method


def arm_groups(labels: Sequence[str]) -> list[tuple[str, list[int]]]:
    """The arms split into small multiples: by training method (ADM / +IP / +SAM, each with its EMA and SWA
    weights) for the paper's arms, by the run name before ``:`` (``plain:raw`` → ``plain``) otherwise, else in
    threes. One group when there are at most :data:`MANY` arms."""
    from flatkit.plots.style import canonical_arm

    idx = list(range(len(labels)))
    if len(labels) <= MANY:
        return [("", idx)]
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        arm = canonical_arm(lab)
        key = FAMILY_OF[arm] if arm is not None else (lab.split(":")[0] if ":" in lab else "")
        groups.setdefault(key, []).append(i)
    if "" in groups or len(groups) == 1 or max(len(v) for v in groups.values()) > MANY:
        return [(f"arms {k + 1}–{min(k + 3, len(idx))}", idx[k:k + 3]) for k in range(0, len(idx), 3)]
    return list(groups.items())


def _context(ax: Any, curves: Sequence[tuple[np.ndarray, np.ndarray]], skip: Sequence[int]) -> None:
    """The other arms' curves, thin and grey, so each small multiple reads against all of them."""
    for i, (x, y) in enumerate(curves):
        if i not in skip:
            ax.plot(x, y, "-", color="0.75", lw=0.8, zorder=1)


def _perturb_many(items: Sequence[tuple[str, dict]], groups: list, xlab: str, has_worst: bool, ks: list) -> Any:
    import matplotlib.pyplot as plt

    rows = 2 if has_worst else 1
    G = len(groups)
    fig, axes = plt.subplots(rows, G, figsize=(3.3 * G + 0.6, 2.9 * rows + 0.6), squeeze=False, sharey="row",
                             sharex=True)
    mean_curves = [(np.asarray(c["radii"]), np.asarray(c["mean"])) for _, c in items]
    worst_curves = [(np.asarray(c["radii"]), np.asarray(c["worst"]) if c.get("worst") is not None
                     else np.full(len(c["radii"]), np.nan)) for _, c in items]
    for g, (name, idx) in enumerate(groups):
        ax = axes[0, g]
        _context(ax, mean_curves, idx)
        for i in idx:
            lab, c = items[i]
            _draw(ax, c["radii"], c["mean"], lab, i)
            ax.fill_between(c["radii"], c["mean"] - c["std"], c["mean"] + c["std"], color=colour(lab, i),
                            alpha=0.18, lw=0)
        ax.set_title(f"{name}: random directions (mean ± std, K = {', '.join(map(str, ks))})", fontsize=8.5)
        if has_worst:
            ax = axes[1, g]
            _context(ax, worst_curves, idx)
            for i in idx:
                lab, c = items[i]
                if c.get("worst") is not None:
                    _draw(ax, c["radii"], c["worst"], lab, i)
            ax.set_title(f"{name}: worst case (normalised gradient)", fontsize=8.5)
    for ax in axes.ravel():
        ax.axhline(0.0, color="0.6", lw=0.6, ls=":")
        ax.grid(alpha=0.25)
        ax.legend(frameon=False, fontsize=7, handlelength=1.6)
    for ax in axes[-1]:
        ax.set_xlabel(xlab)
    for r in range(rows):
        axes[r, 0].set_ylabel(f"ΔL = L(θ + r d) − L(θ)\n[{LOSS_UNIT}]")
    fig.suptitle("Loss under weight perturbation (lower = flatter; grey: the other arms)")
    return fig


def plot_prior_arms(items: Sequence[tuple[str, dict]], stem: str | Path) -> list[Path]:
    """Robustness to a perturbed prior per arm: a dot plot, one column per prior point (x_T = μ·1 + s·z or
    z + η·z′, in order of KL(prior ‖ N(0, I))), the arms side by side within it (colour + marker); points only,
    the prior settings are not a sequence to join. Panels: paired sample drift and training-loss change."""
    import matplotlib.pyplot as plt

    from flatkit.report.collect import prior_point_name

    keys: dict[tuple, float] = {}
    for _, p in items:
        for k, kl in zip(p["points"], p["kl"], strict=True):
            keys.setdefault(tuple(k), np.nan if kl is None else float(kl))
    order = sorted(keys, key=lambda k: (np.nan_to_num(keys[k], nan=np.inf), str(k)))
    panels = [(key, lab) for key, lab in (("drift_mse", "paired sample drift MSE\n(pixels on [−1, 1])"),
                                          ("loss_change", f"training-loss change ΔL\n[{LOSS_UNIT}]"))
              if any(any(v is not None for v in p.get(key) or []) for _, p in items)]
    n = len(items)
    width = min(0.8, 0.1 * n + 0.1)
    off = (np.arange(n) - (n - 1) / 2) * (width / max(n, 1))
    with style():
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(5.0, 1.1 * len(order) + 2.4), 2.6 * len(panels) + 0.8),
                                 squeeze=False, sharex=True)
        for ax, (key, ylab) in zip(axes[:, 0], panels, strict=True):
            for i, (lab, p) in enumerate(items):
                pts = [tuple(k) for k in p["points"]]
                x = [order.index(k) + off[i] for k in pts]
                y = [np.nan if v is None else v for v in p.get(key) or [np.nan] * len(pts)]
                ax.plot(x, y, ls="none", marker=marker(lab, i), color=colour(lab, i), ms=5, label=lab)
            ax.axhline(0.0, color="0.6", lw=0.6, ls=":")
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.25, axis="y")
            for j in range(1, len(order)):
                ax.axvline(j - 0.5, color="0.85", lw=0.6)
        axes[0, 0].legend(frameon=False, fontsize=7, ncol=min(n, 5), loc="upper left", handlelength=1.0)
        ax = axes[-1, 0]
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([f"{prior_point_name(k)}\nKL = {keys[k]:.3g} nats" for k in order], fontsize=7)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_xlabel("perturbed prior (x_T = μ·1 + s·z or z + η·z′), in order of KL(prior ‖ N(0, I))")
        steps = sorted({p.get("steps") for _, p in items if p.get("steps")})
        fig.suptitle(f"Robustness to a perturbed prior (same seeds; T' = {', '.join(map(str, steps))}; "
                     "lower = more robust)")
        fig.tight_layout()
    return save(fig, stem)


def plot_curvature_arms(items: Sequence[tuple[str, dict]], stem: str | Path) -> list[Path]:
    """Curvature beyond λ_max per arm, from ``hessian.json``: the SLQ spectral density (top row; small
    multiples by training method, grey: the other arms) and λ_max of the loss restricted to each t-bin (bottom
    row), for whichever of them were measured."""
    import matplotlib.pyplot as plt

    from flatkit.plots.curvature import DENSITY_FLOOR, log_axis

    dens = [(i, lab, d) for i, (lab, d) in enumerate(items) if d.get("density") is not None]
    pert = [(i, lab, d) for i, (lab, d) in enumerate(items) if d.get("per_timestep") is not None]
    rows = [r for r, have in (("density", dens), ("per_timestep", pert)) if have]
    groups = arm_groups([lab for lab, _ in items])
    G = len(groups)
    with style():
        fig, axes = plt.subplots(len(rows), G, figsize=(3.4 * G + 0.8, 2.9 * len(rows) + 0.6), squeeze=False,
                                 sharey="row")
        for r, row in enumerate(rows):
            have = dens if row == "density" else pert
            curves = {i: ((d["density_grid"], np.where(d["density"] > DENSITY_FLOOR * 1.001, d["density"], np.nan))
                          if row == "density" else (d["t_mid"], d["per_timestep"])) for i, _, d in have}
            for g, (name, idx) in enumerate(groups):
                ax = axes[r, g]
                _context(ax, [curves.get(i, (np.zeros(0), np.zeros(0))) for i in range(len(items))], idx)
                for i in idx:
                    if i not in curves:
                        continue
                    lab = items[i][0]
                    x, y = curves[i]
                    if row == "density":
                        ax.plot(x, y, "-", color=colour(lab, i), lw=1.2, label=lab)
                    else:
                        _draw(ax, x, y, lab, i)
                ax.set_title((f"{name}: " if name else "") + ("spectral density (SLQ)" if row == "density"
                                                               else "λ_max per t-bin"), fontsize=9)
                ax.grid(alpha=0.25)
                ax.legend(frameon=False, fontsize=7, handlelength=1.6)
                ax.set_xlabel("eigenvalue λ  [loss / parameter²]" if row == "density"
                              else "timestep t (centre of the t-bin)")
            if row == "density":
                ys = np.concatenate([np.ravel(c[1]) for c in curves.values()])
                ys = ys[np.isfinite(ys)]
                axes[r, 0].set_yscale("log")
                if ys.size:
                    axes[r, 0].set_ylim(max(ys.min(), ys.max() * 1e-10) / 2, ys.max() * 3)
                axes[r, 0].set_ylabel("spectral density")
            else:
                log_axis(axes[r, 0], np.concatenate([np.ravel(c[1]) for c in curves.values()]))
                axes[r, 0].set_ylabel("λ_max of the per-bin loss\n[loss / parameter²]")
        fig.suptitle("Hessian spectrum per arm" + (" (grey: the other arms)" if G > 1 else ""))
        fig.tight_layout()
    return save(fig, stem)
