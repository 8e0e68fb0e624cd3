"""Pictures of data sets: an image grid (uint8) and the PNGs of ``docs/data.md``.

``python -m flatkit.data.preview docs/img`` regenerates ``data_shapes16.png``, ``data_shapes32.png`` and
``data_points.png``.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def image_grid(
    images_nhwc: np.ndarray, cols: int = 8, scale: int = 1, pad: int = 1, pad_value: int = 255
) -> np.ndarray:
    """uint8 NHWC images -> one uint8 (H', W', C) grid, ``cols`` per row, each image enlarged ``scale`` times
    (nearest neighbour, so pixels stay visible) with ``pad`` pixels of ``pad_value`` between them."""
    n, h, w, c = images_nhwc.shape
    x = images_nhwc.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    rows = -(-n // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = (
            x[i]
        )
    return grid


def render_docs(out_dir: str) -> list[str]:
    """Write the data pictures of ``docs/data.md`` into ``out_dir``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from flatkit.data import load_dataset

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, scale in (("shapes16", 6), ("shapes32", 3)):
        ds = load_dataset(f"builtin:{name}")
        grid = image_grid(ds.uint8(slice(0, 64)), cols=8, scale=scale, pad=2)
        path = os.path.join(out_dir, f"data_{name}.png")
        Image.fromarray(grid).save(path)
        written.append(path)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, name in zip(axes, ("gaussians2d", "swissroll"), strict=True):
        x = load_dataset(f"builtin:{name}").get(slice(None)).numpy()
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, linewidths=0)
        ax.set_title(f"builtin:{name} (n={len(x)})")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, "data_points.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


if __name__ == "__main__":
    for p in render_docs(sys.argv[1] if len(sys.argv) > 1 else "docs/img"):
        print(p)
