"""After training: a picture of what the model learned (``DIR/samples.png``).

One panel per weight set of the run (raw, each EMA rate, SWA), all from the same x_T, so the arms of one run
can be compared at a glance.  Images: an 8-column grid of ancestral DDPM samples (``steps`` respaced steps)
in [-1, 1] mapped to uint8.  2-D points: a scatter plot of samples over the training data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def image_grid(x: torch.Tensor, ncol: int = 8, pad: int = 2) -> np.ndarray:
    """NCHW in [-1, 1] -> an HWC uint8 grid (white padding)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    ncol = min(ncol, n)
    nrow = math.ceil(n / ncol)
    grid = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[
            :, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w
        ] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    return arr[..., 0] if c == 1 else arr


def save_image_grid(x: torch.Tensor, path: Path, ncol: int = 8, upscale: int = 1) -> None:
    from PIL import Image

    img = Image.fromarray(image_grid(x, ncol))
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    img.save(path)


def save_points(samples: torch.Tensor, data: torch.Tensor | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if data is not None:
        d = data.cpu().numpy()
        ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, label="data", color="tab:gray")
    s = samples.detach().cpu().numpy()
    ax.scatter(s[:, 0], s[:, 1], s=4, alpha=0.8, label="samples", color="tab:red")
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _labelled(img, label: str):
    from PIL import Image, ImageDraw

    canvas = Image.new(
        img.mode if img.mode in ("RGB", "L") else "RGB",
        (img.width, img.height + 16),
        255 if img.mode == "L" else (255, 255, 255),
    )
    canvas.paste(img, (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), label, fill=0 if img.mode == "L" else (0, 0, 0))
    return canvas


def save_panels(panels: dict[str, torch.Tensor], path: Path, upscale: int = 1) -> None:
    """Labelled image grids side by side (one per weight set)."""
    from PIL import Image

    imgs = []
    for name, x in panels.items():
        img = Image.fromarray(image_grid(x))
        if upscale > 1:
            img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
        imgs.append(_labelled(img, f"{name} weights"))
    gap = 8
    canvas = Image.new(
        imgs[0].mode,
        (sum(i.width for i in imgs) + gap * (len(imgs) - 1), imgs[0].height),
        255 if imgs[0].mode == "L" else (255, 255, 255),
    )
    x = 0
    for img in imgs:
        canvas.paste(img, (x, 0))
        x += img.width + gap
    canvas.save(path)


def save_point_panels(panels: dict[str, torch.Tensor], data: torch.Tensor | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, s) in zip(axes[0], panels.items(), strict=True):
        if data is not None:
            d = data.cpu().numpy()
            ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, label="data", color="tab:gray")
        s = s.detach().cpu().numpy()
        ax.scatter(s[:, 0], s[:, 1], s=4, alpha=0.8, label="samples", color="tab:red")
        ax.set_title(f"{name} weights")
        ax.set_aspect("equal", adjustable="datalim")
    axes[0][0].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def draw_samples(
    model,
    diffusion_cfg,
    sample_shape: tuple[int, ...],
    kind: str,
    n: int,
    steps: int,
    seed: int,
    device: torch.device,
) -> torch.Tensor:
    """``n`` ancestral DDPM samples (``steps`` uniformly respaced steps) drawn with ``seed``; model unchanged.

    Ancestral sampling rather than DDIM: on the short CPU runs the preview is for, deterministic DDIM
    overshoots into saturated colours and leaves grain that the ancestral noise washes out.
    """
    from flatkit.diffusion import create_diffusion
    from flatkit.sampling import SamplerConfig
    from flatkit.sampling import draw_samples as draw

    steps = max(1, min(int(steps), int(diffusion_cfg.diffusion_steps)))
    diffusion = create_diffusion(diffusion_cfg, timestep_respacing=str(steps))
    cfg = SamplerConfig(n=n, sampler="ddpm", sampling_steps=steps, clip=(kind == "image"), seed=seed,
                        batch_size=n)
    # one generator for the whole preview (x_T, then every step's noise): the preview's historical stream
    return draw(model, diffusion, cfg, sample_shape, device=device, generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def write_samples(
    model,
    diffusion_cfg,
    sample_shape: tuple[int, ...],
    kind: str,
    path: Path,
    n: int,
    steps: int,
    seed: int,
    device: torch.device,
    title: str,
    data: torch.Tensor | None = None,
) -> None:
    """Draw ``n`` samples (see :func:`draw_samples`) from ``model`` and save a grid / scatter.

    ``model`` must be a module in eval mode holding the chosen weights (it is not modified).
    """
    x0 = draw_samples(model, diffusion_cfg, sample_shape, kind, n, steps, seed, device)
    if kind == "image":
        save_image_grid(x0, path, upscale=max(1, 128 // sample_shape[-1]))
    else:
        save_points(x0, data, path, title)
