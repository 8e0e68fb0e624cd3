"""Landscape and perturbation figures, drawn from result objects read back from files.

- :func:`plot_landscape`: 1-D curves, or per model a filled contour of ΔL = L − L(θ) (top) and a 3-D surface
  (below) on one colour scale with round levels and one z-range, the centre θ marked (and the checkpoints on an
  interpolation plane / PCA path); with several models the radial profiles ΔL(r) (:func:`radial_profile`);
- :func:`plot_landscape_html`: the same as an interactive plotly page filling the window, self-contained
  (plotly.js inlined once, compressed: :func:`plotly_js_script`, :func:`plotly_figure_div`);
- :func:`plot_perturb`: ΔL against the radius, random directions (mean ± spread) and the worst case.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import re
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import colour, save, style

NORM_WORDS = {"filter": "filter-normalised", "layer": "layer-normalised", "model": "‖d‖ = ‖θ‖", "unit": "‖d‖ = 1",
              "none": "unnormalised"}


def _axis_label(res: Any, i: int) -> str:
    """The axis label of coordinate i (0: α, 1: β): two short lines (the name, then what the direction is)."""
    kind = res.directions
    sym = "αβ"[i]
    if kind == "interp":
        return "α  (θ₀ → θ₁)" if i == 0 else ("β  (θ₀ → θ₂, orthogonalised)" if len(res.marks) > 2
                                               else f"β  (random, {NORM_WORDS.get(res.norm, res.norm)})")
    if kind == "eigen":
        return f"{sym}  (Hessian eigenvector {i + 1})"
    if kind == "pca":
        ev = list(getattr(res, "explained_variance", []) or [])
        pct = f", {100 * ev[i]:.0f} % of var." if i < len(ev) else ""
        return f"{sym}  (PCA direction {i + 1}{pct})"
    if kind == "random":
        return f"{sym}  (random d{i + 1}, {NORM_WORDS.get(res.norm, res.norm)})"
    return f"{sym}  (direction d{i + 1})"


def _levels(values: np.ndarray, n: int = 24) -> tuple[np.ndarray, bool]:
    """Contour levels from the finite data: log-spaced when positive and spanning > 2 decades."""
    v = values[np.isfinite(values)]
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-6, 1e-12)
    if lo > 0 and hi / lo > 100:
        return np.geomspace(lo, hi, n), True
    return np.linspace(lo, hi, n), False


def _centre_losses(res: Any, vals: np.ndarray) -> list[float]:
    """L(θ) of each model: the recorded ``loss_centre``, else the grid value at (0, 0), else the grid minimum."""
    out = []
    a = np.asarray(res.coords_a)
    b = np.asarray(res.coords_b) if res.dims == 2 else None
    for m in range(vals.shape[0]):
        c = res.loss_centre[m] if m < len(res.loss_centre or []) else None
        if c is None or not np.isfinite(c):
            i, j = int(np.argmin(np.abs(a))), (int(np.argmin(np.abs(b))) if b is not None else None)
            at = vals[m, i] if j is None else vals[m, i, j]
            c = float(at) if np.isfinite(at) and a[i] == 0 and (b is None or b[j] == 0) else float(np.nanmin(vals[m]))
        out.append(float(c))
    return out


def delta_levels(dl: np.ndarray, n: int = 12) -> tuple[np.ndarray, np.ndarray, bool]:
    """Contour levels and colour-bar ticks for ΔL = L − L(θ), both at round numbers (1, 2, 2.5, 5 × 10^k).

    Returns ``(levels, ticks, log)``. Linear when the values stay within two decades of their spread; when the
    rim of the slice is more than 100× higher than the 5th percentile of the positive values (a narrow basin in
    a wide slice), levels are 1-2-5 per decade from that percentile (``log`` True; negative values and zero
    fall into the lowest level)."""
    from matplotlib.ticker import MaxNLocator

    v = dl[np.isfinite(dl)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-12)
    pos = v[v > 0]
    floor = float(np.percentile(pos, 5)) if pos.size else 0.0
    if floor > 0 and hi / floor > 100:
        k0, k1 = int(np.floor(np.log10(floor))), int(np.ceil(np.log10(hi)))
        steps = np.array([1.0, 2.0, 5.0])
        lev = np.concatenate([steps * 10.0 ** k for k in range(k0, k1 + 1)])
        lev = lev[(lev >= 10.0 ** k0) & (lev <= 10.0 ** k1)]
        lev = lev[: int(np.searchsorted(lev, hi)) + 1]
        ticks = 10.0 ** np.arange(k0, int(np.ceil(np.log10(lev[-1]))) + 1)
        return lev, ticks[ticks <= lev[-1]], True
    lev = MaxNLocator(n, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    lev = lev[(lev >= lo - (lev[1] - lev[0])) & (lev <= hi + (lev[1] - lev[0]))]
    ticks = MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]).tick_values(lev[0], lev[-1])
    return lev, ticks[(ticks >= lev[0]) & (ticks <= lev[-1])], False


def radial_profile(a: np.ndarray, b: np.ndarray, values: np.ndarray, centre: float = 0.0,
                   n_bins: int | None = None) -> dict[str, np.ndarray]:
    """ΔL(r): the mean (and min, max) of ``values − centre`` over annuli of the 2-D grid, r = √(α² + β²).

    Bins of width = the grid step from r = 0 up to the largest disc inside the grid (beyond it an annulus
    is only partly covered); the centre point is its own bin at r = 0. Returns ``r`` (the mean radius of the
    points of each bin), ``mean``, ``lo``, ``hi`` and ``count``; bins without a finite value are left out.
    For an isotropic bowl L = c r² the mean is c r² up to the annulus width; for L = p α² + q β² it is the
    angular average (p + q) r² / 2."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    A, B = np.meshgrid(a, b, indexing="ij")
    rr = np.hypot(A, B)
    dl = np.asarray(values, dtype=np.float64) - centre
    rmax = float(min(abs(a.min()), a.max(), abs(b.min()), b.max()))
    step = float(min(np.min(np.diff(a)) if a.size > 1 else 1.0, np.min(np.diff(b)) if b.size > 1 else 1.0))
    nb = n_bins or max(1, int(round(rmax / step)))
    edges = np.linspace(0.0, rmax, nb + 1)
    keep = np.isfinite(dl) & (rr <= rmax * (1 + 1e-9))
    idx = np.where(rr == 0, -1, np.clip(np.searchsorted(edges, rr, side="left") - 1, 0, nb - 1))
    out: dict[str, list] = {"r": [], "mean": [], "lo": [], "hi": [], "count": []}
    for k in range(-1, nb):
        sel = keep & (idx == k)
        if not sel.any():
            continue
        out["r"].append(float(rr[sel].mean()))
        out["mean"].append(float(dl[sel].mean()))
        out["lo"].append(float(dl[sel].min()))
        out["hi"].append(float(dl[sel].max()))
        out["count"].append(int(sel.sum()))
    return {k: np.asarray(v) for k, v in out.items()}


def _weights_words(res: Any, m: int, label: str) -> str:
    """What the meta records of model m that its label does not say: its weights (raw / EMA / SWA) and step."""
    cks = (res.meta or {}).get("checkpoints") or []
    ck = cks[m] if m < len(cks) else {}
    w, step = ck.get("weights"), ck.get("step")
    parts = []
    if w and f":{w}" not in label and w not in label.lower():
        parts.append(f"{w} weights")
    if step is not None:
        parts.append(f"step {step}")
    return ", ".join(parts)


def _panel_title(res: Any, m: int, label: str) -> str:
    extra = _weights_words(res, m, label)
    head = label + (f" ({extra})" if extra else "")
    lc = res.loss_centre[m] if m < len(res.loss_centre or []) else None
    return head + (f"\nL(θ) = {lc:.4g}" if lc is not None and np.isfinite(lc) else "")


def _draw_marks(ax: Any, res: Any) -> None:
    """The checkpoints on an interpolation plane / PCA path: diamonds, labelled without overlap (the last one
    below left of its marker, the others above right; a point closer than 40 px to a named one stays unnamed)."""
    marks = list(res.marks or [])
    if not marks:
        return
    xs = [mk[1] for mk in marks]
    ys = [mk[2] if len(mk) > 2 else 0.0 for mk in marks]
    if res.directions == "pca":  # the optimisation path, ending at θ (the centre)
        ax.plot([*xs, 0.0], [*ys, 0.0], "-", color="white", lw=1, zorder=3)
    ax.plot(xs, ys, "D", color="white", mec="k", ms=4, zorder=4, ls="none")
    ax.figure.canvas.draw_idle()
    pix = ax.transData.transform(np.column_stack([xs, ys]))
    placed: list[np.ndarray] = []
    order = [len(marks) - 1, *range(len(marks) - 1)]  # the last checkpoint first: it is always named
    for k, i in enumerate(order):
        if any(np.hypot(*(pix[i] - q)) < 40 for q in placed):  # too close to a named one: left unnamed
            continue
        placed.append(pix[i])
        ax.annotate(str(marks[i][0]), (xs[i], ys[i]), textcoords="offset points",
                    xytext=(-6, -12) if k == 0 else (5, 5), ha="right" if k == 0 else "left", fontsize=7,
                    color="white", zorder=6, path_effects=_outline())


def _outline() -> list:
    import matplotlib.patheffects as pe

    return [pe.withStroke(linewidth=1.6, foreground="0.15")]


def _plot_1d(res: Any, vals: np.ndarray, labels: list[str], title: str | None) -> Any:
    import matplotlib.pyplot as plt

    M = vals.shape[0]
    a = np.asarray(res.coords_a)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for m in range(M):
        extra = _weights_words(res, m, labels[m])
        ax.plot(a, vals[m], "-o", ms=2.5, lw=1.4, color=colour(labels[m], m),
                label=labels[m] + (f" ({extra})" if extra else ""))
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
    return fig


def _plot_2d(res: Any, vals: np.ndarray, labels: list[str], title: str | None) -> Any:
    """Per model a filled contour of ΔL = L − L(θ) (top) and its 3-D surface (below) on one colour scale and
    one z-range; with several models on random / eigen directions a third row overlays the radial profiles
    ΔL(r)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm
    from matplotlib.ticker import MaxNLocator

    M = vals.shape[0]
    a, b = np.asarray(res.coords_a), np.asarray(res.coords_b)
    A, B = np.meshgrid(a, b, indexing="ij")
    centres = _centre_losses(res, vals)
    dl = vals - np.asarray(centres)[:, None, None]
    levels, ticks, log = delta_levels(dl)
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    norm = BoundaryNorm(levels, cmap.N, extend="both") if log else None
    profile = M > 1 and res.directions in ("random", "eigen")
    if M == 1:  # one row: the contour, its 3-D surface
        fig = plt.figure(figsize=(8.4, 3.9), layout="constrained")
        gs = fig.add_gridspec(1, 2, width_ratios=[1.0, 1.0])
        cells = [(gs[0, 0], gs[0, 1])]
    else:
        fig = plt.figure(figsize=(3.4 * M + 1.0, 6.6 + (2.4 if profile else 0.0)), layout="constrained")
        gs = fig.add_gridspec(3 if profile else 2, M, height_ratios=[1.0, 0.9] + ([0.75] if profile else []))
        cells = [(gs[0, m], gs[1, m]) for m in range(M)]
    zlo = float(np.nanmin(dl[np.isfinite(dl)])) if np.isfinite(dl).any() else 0.0
    zhi = float(levels[-1]) if not log else float(np.nanmax(dl[np.isfinite(dl)]))
    zlev = np.log10(np.maximum(dl, levels[0])) if log else dl
    zrange = (np.log10(levels[0]), np.log10(max(zhi, levels[0] * 10))) if log else (min(zlo, levels[0]), zhi)
    cs, top = None, []
    for m in range(M):
        Z = np.ma.masked_invalid(dl[m])
        ax = fig.add_subplot(cells[m][0])
        top.append(ax)
        kw = {"norm": norm} if log else {}
        cs = ax.contourf(A, B, np.clip(Z, levels[0], levels[-1]) if log else Z, levels=levels, cmap=cmap,
                         extend="neither", **kw)
        ax.contour(A, B, Z, levels=ticks if log else levels[::2], colors="white", linewidths=0.4, alpha=0.6)
        ax.plot(0, 0, "*", color="red", ms=11, mec="white", mew=0.8, zorder=7, ls="none", label="θ")
        ax.set_xlabel(_axis_label(res, 0))
        ax.set_ylabel(_axis_label(res, 1))
        ax.set_aspect("equal" if res.directions not in ("interp",) else "auto")
        _draw_marks(ax, res)
        ax.set_title(_panel_title(res, m, labels[m]), color=colour(labels[m], m) if M > 1 else "k", fontsize=9)
        if m == 0:
            ax.legend(loc="upper left", fontsize=7, framealpha=0.7, handletextpad=0.2, borderpad=0.3)
        ax3 = fig.add_subplot(cells[m][1], projection="3d")
        ax3.plot_surface(A, B, np.ma.masked_invalid(zlev[m]), cmap=cmap, linewidth=0, antialiased=True,
                         rstride=1, cstride=1, vmin=zrange[0], vmax=zrange[1])
        ax3.set_zlim(*zrange)
        for axis in (ax3.xaxis, ax3.yaxis, ax3.zaxis):
            axis.set_major_locator(MaxNLocator(4))
        ax3.set_xlabel("α", labelpad=-4)
        ax3.set_ylabel("β", labelpad=-4)
        ax3.set_zlabel("log₁₀ ΔL" if log else "ΔL", labelpad=-1)
        ax3.tick_params(labelsize=6, pad=-1)
        ax3.view_init(elev=32, azim=-58)
        ax3.set_box_aspect(None, zoom=0.88 if M == 1 else 1.0)
    cb = fig.colorbar(cs, ax=top, ticks=ticks, shrink=0.9, aspect=25, pad=0.02)
    cb.set_label("ΔL = L(θ + α d₁ + β d₂) − L(θ)")
    cb.ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    if profile:
        axp = fig.add_subplot(gs[2, :])
        for m in range(M):
            p = radial_profile(a, b, vals[m], centres[m])
            c = colour(labels[m], m)
            axp.plot(p["r"], p["mean"], "-o", ms=3, color=c, label=labels[m])
            axp.fill_between(p["r"], p["lo"], p["hi"], color=c, alpha=0.15, lw=0)
        axp.axhline(0.0, color="0.6", lw=0.6, ls=":")
        axp.set_xlabel("radius r = √(α² + β²)  (disc inside the grid)")
        axp.set_ylabel("ΔL(r)  (mean; band: min–max)")
        axp.set_title("radial profile: ΔL averaged over the circle of radius r", fontsize=9)
        axp.set_xlim(0, None)
        axp.grid(alpha=0.25)
        axp.legend(frameon=False, fontsize=7, ncol=min(M, 4))
    fig.suptitle(title or "Loss landscape")
    return fig


def plot_landscape(res: Any, stem: str | Path, title: str | None = None) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``: a 1-D curve per model, or per model the 2-D slice as ΔL."""
    vals = np.asarray(res.values, dtype=np.float64)
    M = vals.shape[0]
    labels = list(res.labels) or [f"model{m}" for m in range(M)]
    with style():
        fig = _plot_1d(res, vals, labels, title) if res.dims == 1 else _plot_2d(res, vals, labels, title)
    return save(fig, stem)


@functools.lru_cache(maxsize=1)
def plotly_js_script() -> str:
    """plotly.js for a self-contained page, to include ONCE per page (in ``<head>``): the bundled minified
    plotly.js gzip-compressed and base64-encoded (about 2.0 MB instead of 4.8 MB), unpacked by the browser
    (``DecompressionStream``, every current browser) into ``window.Plotly``; ``window.flatkitPlotly`` is a
    Promise the figure scripts of :func:`plotly_figure_div` wait for. Works offline (no CDN)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    m = re.search(r"plotly\.js v[\d.]+", js[:400])
    version = m.group(0) if m else "plotly.js"
    b64 = base64.b64encode(gzip.compress(js.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")
    return (
        f"<script>/* {version} (MIT licence), gzip + base64, unpacked below */\n"
        "window.flatkitPlotly = (function () {\n"
        f'  var b64 = "{b64}";\n'
        "  if (typeof DecompressionStream === 'undefined') {\n"
        "    return Promise.reject(new Error('this browser cannot unpack the embedded plotly.js "
        "(no DecompressionStream): open the page in a current Chrome, Edge, Firefox or Safari'));\n"
        "  }\n"
        "  var bin = atob(b64), bytes = new Uint8Array(bin.length);\n"
        "  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);\n"
        "  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));\n"
        "  return new Response(stream).text().then(function (src) { (0, eval)(src); return window.Plotly; });\n"
        "})();\n</script>\n"
    )


def plotly_figure_div(fig: Any, div_id: str, height: str = "calc(100vh - 24px)") -> str:
    """A plotly figure as a ``<div>`` filling the page width (``height`` any CSS length) and a script drawing
    it once :func:`plotly_js_script` has loaded plotly.js; it follows window resizes."""
    spec = fig.to_json().replace("</", "<\\/")
    div_id = re.sub(r"[^A-Za-z0-9_-]", "_", div_id)
    return (
        f'<div id="{div_id}" style="width:100%;height:{height};min-height:360px"></div>\n'
        "<script>window.flatkitPlotly.then(function () {\n"
        f"  var s = {spec};\n"
        f'  Plotly.newPlot("{div_id}", s.data, s.layout, {{responsive: true, displaylogo: false}});\n'
        "}).catch(function (e) {\n"
        f'  document.getElementById("{div_id}").textContent = "interactive figure not shown: " + e.message;\n'
        "});</script>\n"
    )


def _f32(x: Any) -> np.ndarray:
    """Data for the page: float32 (7 significant digits, half the bytes), NaN where not finite (a gap)."""
    v = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(v), v, np.nan).astype(np.float32)


def plot_landscape_html(res: Any, path: str | Path, title: str | None = None) -> Path:
    """An interactive plotly page of ΔL = L − L(θ), filling the browser window, self-contained (plotly.js
    inlined once, compressed: :func:`plotly_js_script`; data as float32)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    vals = np.asarray(res.values, dtype=np.float64)
    M = vals.shape[0]
    labels = list(res.labels) or [f"model{m}" for m in range(M)]
    a = np.asarray(res.coords_a)
    legend = {"orientation": "h", "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"}
    if res.dims == 1:
        fig = go.Figure()
        for m in range(M):
            fig.add_trace(go.Scatter(x=_f32(a), y=_f32(vals[m]), mode="lines+markers", name=labels[m],
                                     line={"color": colour(labels[m], m)}))
        fig.update_layout(xaxis_title=_axis_label(res, 0), yaxis_title="loss L(θ + α d₁)")
    else:
        b = np.asarray(res.coords_b)
        centres = _centre_losses(res, vals)
        dl = vals - np.asarray(centres)[:, None, None]
        finite = dl[np.isfinite(dl)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        titles = [_panel_title(res, m, labels[m]).replace("\n", ", ") for m in range(M)]
        fig = make_subplots(rows=1, cols=M, specs=[[{"type": "surface"}] * M], subplot_titles=titles,
                            horizontal_spacing=0.02)
        for m in range(M):
            fig.add_trace(go.Surface(x=_f32(a), y=_f32(b), z=_f32(dl[m].T), colorscale="Viridis", cmin=lo, cmax=hi,
                                     showscale=(m == M - 1), name=labels[m],
                                     colorbar={"title": {"text": "ΔL = L − L(θ)"}, "x": 1.0, "xanchor": "left",
                                               "len": 0.8},
                                     hovertemplate="α %{x:.3g}<br>β %{y:.3g}<br>ΔL %{z:.4g}<extra>" + labels[m]
                                     + "</extra>",
                                     contours={"z": {"show": True, "usecolormap": True, "project_z": True}}),
                          row=1, col=m + 1)  # plotly: z[row = β][col = α]
            fig.add_trace(go.Scatter3d(x=[0.0], y=[0.0], z=[0.0], mode="markers", showlegend=(m == 0),
                                       marker={"color": "red", "size": 5}, name="θ (ΔL = 0)",
                                       legendgroup="theta"),
                          row=1, col=m + 1)
        fig.update_scenes(xaxis_title="α", yaxis_title="β", zaxis_title="ΔL", zaxis_range=[min(lo, 0.0), hi],
                          aspectmode="cube")
    fig.update_layout(title=title or "Loss landscape", template="plotly_white", autosize=True, legend=legend,
                      margin={"l": 10, "r": 10, "t": 90, "b": 10})
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title or 'Loss landscape')}</title>"
            "<style>html,body{margin:0;padding:0;height:100%;font-family:sans-serif}</style>\n"
            f"{plotly_js_script()}</head><body>\n{plotly_figure_div(fig, 'landscape', '100vh')}</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
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
    pad = 0.03 * (r.max() - r.min()) if ax.containers else 0.0  # room for --repeats' interval bars
    ax.set_xlim(r.min() - pad, r.max() + pad)
    ax.legend(frameon=False)


def plot_perturb(res: Any, stem: str | Path, title: str | None = None) -> list[Path]:
    """ΔL(r) = L(θ + r d) − L(θ): random directions (mean ± one std over K) and the worst-case direction."""
    import matplotlib.pyplot as plt

    from flatkit.repeats import errorbars_along, repeats_note

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
            errorbars_along(ax, r, res, "mean", m, c, M)  # --repeats: 95 % interval of the mean over repeats
        _loss_change_axes(ax, r, res.norm, "L(θ + r d) − L(θ)",
                          f"random Gaussian directions (mean ± std, K = {res.n_directions})")
        if has_worst:
            ax = axes[0, 1]
            for m in range(M):
                ax.plot(r, worst[m], "-s", ms=2.5, color=colour(labels[m], m), label=labels[m])
                errorbars_along(ax, r, res, "worst", m, colour(labels[m], m), M)
            _loss_change_axes(ax, r, res.norm, "max L(θ + r d) − L(θ)",
                              f"worst case (normalised gradient, {res.worst_steps} ascent steps)")
        fig.suptitle((title or "Loss under weight perturbation") + repeats_note(res))
        fig.tight_layout()
    return save(fig, stem)


def _nan_if_none(v) -> float:
    """A recorded loss for a label: None (a non-finite value stored as null) shows as nan."""
    return float("nan") if v is None else float(v)
