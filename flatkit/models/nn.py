"""Small building blocks of the ADM UNet (Dhariwal & Nichol 2021, guided-diffusion's ``nn.py``).

Everything here is written to be traced by ``torch.func`` (``functional_call``, ``grad``, ``jvp``,
``vmap``): no in-place updates of activations, no ``.data``, no Python branches on tensor values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flatkit.errors import UsageError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in at least float32.

    ADM casts the input to float32 before normalising (for fp16 training) and back afterwards; here
    only half-precision inputs are upcast, so a float64 model stays float64 end to end.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _LOW_PRECISION:
            return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def normalization(channels: int) -> GroupNorm32:
    """ADM's normalisation layer: GroupNorm(32 groups, ``channels``)."""
    if channels % 32 != 0:
        raise UsageError(f"num_channels: every UNet width must be a multiple of 32 (GroupNorm32): {channels}")
    return GroupNorm32(32, channels)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1-, 2- or 3-D convolution."""
    convs = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    if dims not in convs:
        raise UsageError(f"dims: unsupported number of spatial dimensions {dims} (1, 2 or 3)")
    return convs[dims](*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1-, 2- or 3-D average pooling."""
    pools = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
    if dims not in pools:
        raise UsageError(f"dims: unsupported number of spatial dimensions {dims} (1, 2 or 3)")
    return pools[dims](*args, **kwargs)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (ADM zero-initialises the last conv of each residual branch)."""
    with torch.no_grad():
        for p in module.parameters():
            nn.init.zeros_(p)
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal timestep embedding as ADM (Vaswani et al. 2017, Eq. 5; cos half first, then sin).

    ``freqs_i = exp(-log(max_period) * i / half)`` for ``i < half = dim // 2``;
    ``emb = [cos(t * freqs), sin(t * freqs)]``, zero-padded by one column when ``dim`` is odd.

    ``timesteps``: 1-D tensor of N (possibly fractional) timesteps, integer or float. Computed in
    ``dtype`` (float32 reproduces ADM; a float64 model passes float64).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=dtype, device=timesteps.device) / half
    )
    args = timesteps.reshape(-1, 1).to(dtype) * freqs.reshape(1, -1)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
