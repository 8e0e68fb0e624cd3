"""Factories for ``flatkit ... --model examples/custom_model_factory.py:FACTORY`` (see docs/scale.md).

- ``make_task``: a small MLP classifier on synthetic data as a :class:`flatkit.Task` (any model, any loss);
  ``--weights FILE`` loads a state dict written by ``examples/custom_model.py --save FILE``.
- ``make_denoiser``: a tiny convolutional ε-predictor ``model(x_t, t) -> eps`` for 16x16 RGB images, analysed
  as a diffusion model on ``--data builtin:shapes16`` (flatkit adds the diffusion and the ε-MSE loss).

Run from the repository root, e.g.::

    flatkit hessian --model examples/custom_model_factory.py:make_task --top-k 2
    flatkit landscape --model examples.custom_model_factory:make_denoiser --data builtin:shapes16 --dims 1
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import flatkit

N_FEATURES, N_CLASSES, HIDDEN = 8, 3, 16


def synthetic_classification(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n points in 8-D, labelled by which of three fixed random directions they project onto most."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=g)
    w = torch.randn(N_FEATURES, N_CLASSES, generator=torch.Generator().manual_seed(1234))
    return x, (x @ w).argmax(dim=1)


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, N_CLASSES))


def classification_loss(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(output, batch[1])


def make_task() -> flatkit.Task:
    """The MLP, its cross-entropy and 4 batches of 64 (the model is called as model(batch[0]))."""
    x, y = synthetic_classification()
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]
    return flatkit.Task(model=make_mlp(), loss=classification_loss, batches=batches)


class TinyDenoiser(nn.Module):
    """ε_θ(x_t, t) for (N, 3, 16, 16) images: two convolutions conditioned on a sinusoidal embedding of t."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(16, channels)
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10000.0) * torch.arange(8, device=x.device) / 8)
        angles = t.float()[:, None] * freqs[None]
        emb = self.embed(torch.cat([angles.sin(), angles.cos()], dim=1))
        h = F.silu(self.conv_in(x) + emb[:, :, None, None])
        return self.conv_out(h)


def make_denoiser() -> nn.Module:
    torch.manual_seed(0)
    return TinyDenoiser()
