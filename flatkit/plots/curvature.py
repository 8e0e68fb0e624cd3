"""Figures of a :class:`~flatkit.analyses.hessian.HessianResult`: the spectral density and the per-timestep profile
(one line per model, labelled; they read only the result)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flatkit.plots.style import colour, save, style


def plot_density(res: Any, path: str | Path) -> list[Path]:
    """SLQ density of each model on a log axis (the Gaussian-broadened estimate, Ghorbani et al. 2019)."""
    import matplotlib.pyplot as plt

    with style():
        fig, ax = plt.subplots(figsize=(4.5, 3.0))
        for m, label in enumerate(res.labels):
            g, d = res.density_grid[m], res.density[m]
            # below 1e-12 the broadened density is numerically zero: leave a gap, not a plateau at the floor
            ax.semilogy(g, np.where(d > 1e-12, d, np.nan), color=colour(label, m), label=label, lw=1)
        ax.set_xlabel("eigenvalue λ")
        ax.set_ylabel("density (Gaussian-broadened SLQ)")
        ax.legend(frameon=False)
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
        ax.set_xlabel("timestep t (bin centre)")
        ax.set_ylabel("λ_max of the per-bin loss")
        lam = np.concatenate(lams) if lams else np.zeros(0)
        # symlog only when the values span decades (or cross zero): within one decade it draws no tick labels
        if lam.size and (lam.min() <= 0 or lam.max() > 10 * lam.min()):
            ax.set_yscale("symlog", linthresh=1e-3)
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
