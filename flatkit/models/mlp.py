"""A small residual MLP epsilon-predictor for 2-D point data (the toy denoiser of demos and tests)."""

from __future__ import annotations

import torch
from torch import nn

from flatkit.errors import UsageError
from flatkit.models.nn import timestep_embedding


class MLPBlock(nn.Module):
    """Residual block conditioned on the time embedding: ``h + W2 SiLU(W1 SiLU(h) + W_t emb)``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(h)) + self.emb(emb)))


class MLPDenoiser(nn.Module):
    """``eps_theta(x_t, t)`` for (N, data_dim) data: input layer, ``depth`` residual blocks, output layer.

    The timestep enters through ADM's sinusoidal embedding (``hidden`` features, max period 10000) followed
    by a two-layer MLP. With ``learn_sigma`` the output has ``2 * data_dim`` columns (eps, then the
    variance interpolation ``v`` of Nichol & Dhariwal 2021), as the ADM UNet's channels.
    """

    def __init__(self, data_dim: int = 2, hidden: int = 128, depth: int = 3, learn_sigma: bool = False):
        super().__init__()
        if data_dim < 1 or hidden < 2 or depth < 0:
            raise UsageError(
                f"mlp: need data_dim >= 1, hidden >= 2, depth >= 0 (got {data_dim}, {hidden}, {depth})"
            )
        self.data_dim = data_dim
        self.hidden = hidden
        self.learn_sigma = learn_sigma
        self.out_dim = data_dim * (2 if learn_sigma else 1)
        self.time_embed = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(data_dim, hidden)
        self.blocks = nn.ModuleList([MLPBlock(hidden) for _ in range(depth)])
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, self.out_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int | float) -> torch.Tensor:
        dtype = self.inp.weight.dtype
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        emb = self.time_embed(timestep_embedding(t, self.hidden, dtype=emb_dtype).to(dtype))
        h = self.inp(x.to(dtype))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
