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


def plot_hessian(res: Any, outdir: str | Path) -> list[Path]:
    """Every figure the result has data for, into ``outdir`` (``hessian_density``, ``hessian_per_timestep``)."""
    outdir = Path(outdir)
    paths: list[Path] = []
    if res.has_density:
        paths += plot_density(res, outdir / "hessian_density")
    if res.has_per_timestep:
        paths += plot_per_timestep(res, outdir / "hessian_per_timestep")
    return paths
