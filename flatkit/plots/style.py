"""Shared plot style: one colour per paper arm, labelled axes, ranges from the data, PNG + PDF output."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

# One colour per arm of the paper (Lee et al. 2025, Table 1), colour-blind-safe (Okabe–Ito + tints).
ARM_COLOURS: dict[str, str] = {
    "ADM": "#000000",
    "+EMA": "#E69F00",
    "+SWA": "#56B4E9",
    "+IP": "#009E73",
    "+IP+EMA": "#F0E442",
    "+IP+SWA": "#0072B2",
    "+SAM": "#D55E00",
    "+SAM+EMA": "#CC79A7",
    "+SAM+SWA": "#882255",
}
FALLBACK = ["#332288", "#117733", "#44AA99", "#88CCEE", "#DDCC77", "#CC6677", "#AA4499", "#999933"]

RC = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}


def colour(label: str, index: int = 0) -> str:
    """The arm's colour when ``label`` names an arm (``ADM``, ``+SAM``, ``sam``, ...), else a fixed cycle."""
    key = label.strip()
    norm = {k.lower().replace("+", "").replace("adm", "") or "adm": v for k, v in ARM_COLOURS.items()}
    k2 = key.lower().replace("+", "").replace("adm", "") or "adm"
    if key in ARM_COLOURS:
        return ARM_COLOURS[key]
    if k2 in norm:
        return norm[k2]
    return FALLBACK[index % len(FALLBACK)]


@contextlib.contextmanager
def style() -> Iterator[None]:
    """matplotlib rcParams for paper figures (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with plt.rc_context(RC):
        yield


def save(fig, stem: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; close the figure; return the paths."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in formats:
        p = stem.with_suffix("." + f)
        fig.savefig(p)
        paths.append(p)
    plt.close(fig)
    return paths
