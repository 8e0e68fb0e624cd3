"""Shared plot style: one colour and one marker per paper arm, labelled axes, ranges from the data, PNG + PDF.

Every figure that shows arms of the paper (Lee et al. 2025, Table 1) takes its colours from :func:`colour`, its
markers from :func:`marker` and its order from :func:`arm_sort_key`, so an arm looks the same in every figure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# One colour per arm of the paper (Lee et al. 2025, Table 1), colour-blind-safe (Okabe–Ito + tints).
ARM_COLOURS: dict[str, str] = {
    "ADM": "#000000",
    "+EMA": "#E69F00",
    "+SWA": "#56B4E9",
    "+IP": "#009E73",
    "+IP+EMA": "#999933",  # olive: Okabe-Ito's yellow is unreadable on white
    "+IP+SWA": "#0072B2",
    "+SAM": "#D55E00",
    "+SAM+EMA": "#CC79A7",
    "+SAM+SWA": "#882255",
}
# The paper's row order (Table 1).
ARM_ORDER: tuple[str, ...] = tuple(ARM_COLOURS)
# One marker per arm: circle / square / triangle for the raw / EMA / SWA weights of plain training, then diamonds
# and down-triangles (IP) and filled plus / x / star (SAM).
ARM_MARKERS: dict[str, str] = {
    "ADM": "o",
    "+EMA": "s",
    "+SWA": "^",
    "+IP": "D",
    "+IP+EMA": "v",
    "+IP+SWA": "<",
    "+SAM": "P",
    "+SAM+EMA": "X",
    "+SAM+SWA": "*",
}
FALLBACK_MARKERS = ["h", "p", ">", "d", "8", "H"]
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


def _norm_arm(label: str) -> str:
    return label.strip().lower().replace("+", "").replace(" ", "").replace("adm", "") or "adm"


_CANONICAL = {_norm_arm(k): k for k in ARM_COLOURS}


def canonical_arm(label: str) -> str | None:
    """The paper's spelling of an arm (``sam+ema`` → ``+SAM+EMA``, ``adm`` → ``ADM``), or None."""
    if label.strip() in ARM_COLOURS:
        return label.strip()
    return _CANONICAL.get(_norm_arm(label))


def colour(label: str, index: int = 0) -> str:
    """The arm's colour when ``label`` names an arm (``ADM``, ``+SAM``, ``sam``, ...), else a fixed cycle."""
    arm = canonical_arm(label)
    if arm is not None:
        return ARM_COLOURS[arm]
    return FALLBACK[index % len(FALLBACK)]


def marker(label: str, index: int = 0) -> str:
    """The arm's marker when ``label`` names an arm, else a fixed cycle."""
    arm = canonical_arm(label)
    if arm is not None:
        return ARM_MARKERS[arm]
    return FALLBACK_MARKERS[index % len(FALLBACK_MARKERS)]


def arm_sort_key(label: str) -> tuple[int, str]:
    """Sort key putting the paper's arms in the paper's order, anything else after them (alphabetically)."""
    arm = canonical_arm(label)
    return (ARM_ORDER.index(arm), "") if arm is not None else (len(ARM_ORDER), label)


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
    bbox: Any = RC["savefig.bbox"]
    if bbox == "tight" and len(formats) > 1:
        # the tight box once for every format: savefig lays the figure out twice per format to find it (a dry
        # draw, then the real one), and text layout is most of a figure's cost
        from matplotlib import rcParams
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig) if not hasattr(fig.canvas, "get_renderer") else fig.canvas
        saved_dpi = fig.dpi
        fig.dpi = RC["savefig.dpi"]  # the box where the PNG is rendered, as savefig would find it
        try:
            renderer = canvas.get_renderer()
            fig.draw_without_rendering()
            bbox = fig.get_tightbbox(renderer).padded(rcParams["savefig.pad_inches"])
        finally:
            fig.dpi = saved_dpi
    for f in formats:
        p = stem.with_suffix("." + f)
        fig.savefig(p, dpi=RC["savefig.dpi"], bbox_inches=bbox)  # also when called outside style()
        paths.append(p)
    plt.close(fig)
    return paths
