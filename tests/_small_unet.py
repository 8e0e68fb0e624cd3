"""A small 8x8 ADM UNet run, moved off ADM's zero-initialised output, and a tiny in-memory image Dataset: the
model the objective, out-of-memory and precision tests evaluate."""

from __future__ import annotations

import torch

from flatkit.config import DiffusionConfig, ModelConfig, RunConfig


def small_run(learn_sigma: bool = False, dropout: float = 0.0, steps: int = 100):
    from flatkit.diffusion import create_diffusion
    from flatkit.models import build_model
    from flatkit.run import Run

    mcfg = ModelConfig(image_size=8, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,1",
                       attention_resolutions="4", num_head_channels=16, learn_sigma=learn_sigma, dropout=dropout)
    dcfg = DiffusionConfig(diffusion_steps=steps, learn_sigma=learn_sigma)
    model = build_model(mcfg, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # ADM zero-initialises the output layers: move off that degenerate point
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    data = "builtin:shapes16?image_size=8"  # the data fit the 8-pixel model
    return Run(model=model, diffusion=create_diffusion(dcfg), config=RunConfig(mcfg, dcfg, data=data))


class Images:
    """A tiny in-memory Dataset (len, get(indices) -> float32 batch)."""

    spec = "test:images"

    def __init__(self, n: int = 40) -> None:
        self.x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return self.x.shape[0]

    def get(self, index):
        return self.x[torch.as_tensor(index)]
