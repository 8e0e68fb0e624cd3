"""Figures of a :class:`~flatkit.analyses.hessian.HessianResult`: the spectral density and the per-timestep profile
(one line per model, labelled; they read only the result)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import colour, save, style

DENSITY_FLOOR = 1e-12  # the SLQ density is clamped here (log of zero): values at the floor are not drawn


def log_axis(ax: Any, values: np.ndarray, axis: str = "y") -> None:
    """A readable logarithmic axis for positive ``values`` spanning more than a factor 10: decade ticks labelled
    as plain numbers (0.01, 1, 100), and 2 and 5 × 10^k too when the span is under two decades; values ≤ 0:
    symlog with the linear range set to the smallest |value| rounded down to a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return
    fmt = FuncFormatter(lambda x, _: f"{x:g}")
    a = ax.yaxis if axis == "y" else ax.xaxis
    setscale = ax.set_yscale if axis == "y" else ax.set_xscale
    if v.min() > 0:
        if v.max() <= 10 * v.min():
            return
        setscale("log")
        subs = (1.0, 2.0, 5.0) if v.max() < 100 * v.min() else (1.0,)
        a.set_major_locator(LogLocator(base=10, subs=subs))
        a.set_major_formatter(fmt)
        a.set_minor_formatter(FuncFormatter(lambda x, _: ""))
        return
    nz = np.abs(v[v != 0])
    if nz.size and nz.max() > 10 * nz.min():
        setscale("symlog", linthresh=10.0 ** np.floor(np.log10(nz.min())))
        a.set_major_formatter(fmt)


def plot_density(res: Any, path: str | Path) -> list[Path]:
    """SLQ density of each model on a log axis (the Gaussian-broadened estimate, Ghorbani et al. 2019)."""
    import matplotlib.pyplot as plt

    with style():
        fig, ax = plt.subplots(figsize=(4.8, 3.2))
        shown, peak, low = set(), 0.0, np.inf
        for m, label in enumerate(res.labels):
            g, d = np.asarray(res.density_grid[m], dtype=float), np.asarray(res.density[m], dtype=float)
            # at or below the floor the broadened density is numerically zero: a gap, not a plateau
            ok = np.isfinite(d) & (d > DENSITY_FLOOR * 1.001)
            ax.semilogy(g, np.where(ok, d, np.nan), color=colour(label, m), lw=1,
                        label=None if label in shown else label)  # one legend entry per run
            shown.add(label)
            if ok.any():
                peak, low = max(peak, float(d[ok].max())), min(low, float(d[ok].min()))
        if peak > 0:  # the range of what was resolved, at most 10 decades below the peak; never the floor
            ax.set_ylim(max(low, peak * 1e-10) / 2, peak * 3)
        ax.set_xlabel("eigenvalue λ of the Hessian  [loss / parameter²]")
        ax.set_ylabel("spectral density (Gaussian-broadened SLQ)")
        ax.grid(alpha=0.25)
        ax.legend(frameon=False, fontsize=7)
        return save(fig, Path(path))


def plot_per_timestep(res: Any, path: str | Path) -> list[Path]:
    """λ_max of the loss restricted to each t-bin, against the bin centre."""
    import matplotlib.pyplot as plt

    edges = np.asarray(res.per_timestep_edges, dtype=float)
    mid = 0.5 * (edges[:-1] + edges[1:])
    with style():
        fig, ax = plt.subplots(figsize=(4.5, 3.0))
        lams = []
        for m, label in enumerate(res.labels):
            lam = np.asarray(res.per_timestep_top_eigenvalues[m])[:, 0]
            lams.append(lam[np.isfinite(lam)])
            ax.plot(mid, lam, "o-", color=colour(label, m), label=label, ms=3, lw=1)
        ax.set_xlabel("timestep t (centre of the t-bin)")
        ax.set_ylabel("λ_max of the per-bin loss  [loss / parameter²]")
        log_axis(ax, np.concatenate(lams) if lams else np.zeros(0))
        ax.grid(alpha=0.25, which="major")
        ax.legend(frameon=False)
        return save(fig, Path(path))


def plot_summary(res: Any, path: str | Path) -> list[Path]:
    """Top eigenvalues (λ_1 a bar, λ_2..k points) and the trace (± its standard error) of each model, side by side."""
    import matplotlib.pyplot as plt

    panels = [p for p, have in (("eig", bool(res.eigenvalues)), ("trace", bool(res.trace))) if have]
    if not panels:
        return []
    x = np.arange(len(res.labels))
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(max(3.2, 0.9 * len(x) + 1.6) * len(panels), 3.0),
                                 squeeze=False)
        for ax, panel in zip(axes[0], panels, strict=True):
            for m, label in enumerate(res.labels):
                c = colour(label, m)
                if panel == "eig":
                    lam = np.asarray(res.eigenvalues[m], dtype=float)
                    ax.bar(m, lam[0], color=c, alpha=0.8, width=0.6)
                    if lam.size > 1:
                        ax.plot(np.full(lam.size - 1, m), lam[1:], "_", color="black", ms=14, mew=1.2)
                else:
                    se = res.trace_stderr[m] if res.trace_stderr[m] is not None else np.nan
                    ax.bar(m, res.trace[m], yerr=se if np.isfinite(se) else None, color=c, alpha=0.8, width=0.6,
                           capsize=3)
            from flatkit.repeats import errorbars

            if errorbars(ax, x + 0.2, res, "lambda_max" if panel == "eig" else "trace"):  # --repeats
                ax.legend(frameon=False, loc="best", fontsize=7)
            ax.set_xticks(x, res.labels, rotation=20 if len(x) > 3 else 0, ha="right" if len(x) > 3 else "center")
            k = max((len(e) for e in res.eigenvalues), default=1)
            ax.set_ylabel(f"λ₁ (bar), λ₂ … λ{k} (ticks)" if panel == "eig" and k > 1 else
                          "λ_max" if panel == "eig" else "tr H (± standard error)")
            n = (res.meta.get("config") or {}).get("n_eval", "?")
            ax.set_title(f"{'top Hessian eigenvalues' if panel == 'eig' else 'Hessian trace'} (bank n = {n})",
                         fontsize=9)
            ax.axhline(0, color="0.6", lw=0.6)
        return save(fig, Path(path))


def plot_hessian(res: Any, outdir: str | Path) -> list[Path]:
    """Every figure the result has data for, into ``outdir`` (``hessian`` for the top eigenvalues / trace of each
    model, ``hessian_density``, ``hessian_per_timestep``)."""
    outdir = Path(outdir)
    paths: list[Path] = plot_summary(res, outdir / "hessian")
    if res.has_density:
        paths += plot_density(res, outdir / "hessian_density")
    if res.has_per_timestep:
        paths += plot_per_timestep(res, outdir / "hessian_per_timestep")
    return paths
