"""The ADM UNet (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", App. A).

This is flatkit's own implementation of the network of openai/guided-diffusion's ``unet.py`` (as used by
DDPM-IP and ADM-ES, on which the flatness paper builds). Module and attribute names follow ADM so that
``state_dict()`` is key-for-key and shape-for-shape the one guided-diffusion writes: an ADM checkpoint
loads with ``load_state_dict(..., strict=True)``.

Layout (``L = len(channel_mult)`` levels, ``ds`` = downsampling rate of a level)::

    time_embed      Linear(C, 4C) - SiLU - Linear(4C, 4C)          applied to the sinusoidal embedding of t
    label_emb       Embedding(num_classes, 4C)                      only when class-conditional
    input_blocks    [conv_in] + per level: num_res_blocks x (ResBlock [+ AttentionBlock]) [+ Downsample]
    middle_block    ResBlock, AttentionBlock, ResBlock
    output_blocks   per level, reversed: (num_res_blocks + 1) x (ResBlock [+ AttentionBlock]) [+ Upsample]
    out             GroupNorm32 - SiLU - conv (zero-initialised)

Every block is traceable by ``torch.func``: no in-place activations and no Python branch on tensor values.
``use_checkpoint`` (gradient checkpointing) and ``use_fp16`` are accepted for signature compatibility and
ignored: the model stays in the dtype of its parameters (float32 unless the caller converts it).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flatkit.errors import UsageError
from flatkit.models.nn import avg_pool_nd, conv_nd, normalization, timestep_embedding, zero_module

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class TimestepBlock(nn.Module):
    """A module whose ``forward`` also takes the timestep embedding ``emb``."""

    @abstractmethod
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the module to ``x`` given the embedding ``emb``."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """A sequential container that passes ``emb`` to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class _Resample(nn.Module):
    """What Upsample and Downsample share: channels in and out, whether a conv does the work, and ``dims``."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims


class Upsample(_Resample):
    """Nearest-neighbour 2x upsampling of the last two spatial axes, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__(channels, use_conv, dims, out_channels)
        if use_conv:
            self.conv = conv_nd(dims, self.channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:  # keep the depth axis, double height and width
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.use_conv:
            x = self.conv(x)
        return x


class Downsample(_Resample):
    """2x downsampling: a stride-2 3x3 conv, or a 2x2 average pool when ``use_conv`` is False."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: int | None = None):
        super().__init__(channels, use_conv, dims, out_channels)
        stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, self.channels, self.out_channels, 3, stride=stride, padding=1)
        else:
            if self.channels != self.out_channels:
                raise UsageError("channel_mult: an average-pool Downsample cannot change the channel count")
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """ADM's residual block, conditioned on the timestep embedding.

    ``h = conv(SiLU(GN(x)))`` (with an up/down resampling between the activation and the conv when
    ``up``/``down``), then either ``h + W emb`` followed by ``conv(Dropout(SiLU(GN(h))))``, or with
    ``use_scale_shift_norm`` the adaptive group norm ``GN(h) * (1 + scale) + shift`` (ADM, Sec. 3 / App. A).
    Output ``skip(x) + h``; the last conv is zero-initialised so the block starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        dims: int = 2,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.emb_channels = emb_channels
        self.dropout = dropout
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_checkpoint = use_checkpoint  # accepted, ignored
        self.use_scale_shift_norm = use_scale_shift_norm

        self.in_layers = nn.Sequential(
            normalization(channels),
            nn.SiLU(),
            conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd = Upsample(channels, False, dims)
            self.x_upd = Upsample(channels, False, dims)
        elif down:
            self.h_upd = Downsample(channels, False, dims)
            self.x_upd = Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )

        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_conv(self.h_upd(in_rest(x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)
        emb_out = emb_out.reshape(emb_out.shape + (1,) * (h.dim() - emb_out.dim()))
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def _softmax_last(w: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, in at least float32 (as ADM)."""
    if w.dtype in _LOW_PRECISION:
        return torch.softmax(w.float(), dim=-1).to(w.dtype)
    return torch.softmax(w, dim=-1)


class _QKVAttention(nn.Module):
    """Multi-head scaled dot-product attention ``softmax(qᵀk / sqrt(ch)) v`` with the 1/sqrt(ch) split as
    1/ch^(1/4) on q and on k (more stable in fp16); the subclass says how qkv is laid out (:meth:`split`)."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def split(self, qkv: torch.Tensor, ch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v, each (batch · heads, ch, length)."""
        raise NotImplementedError

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = self.split(qkv, ch)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = _softmax_last(weight)
        a = torch.einsum("bts,bcs->bct", weight, v)
        return a.reshape(bs, -1, length)


class QKVAttentionLegacy(_QKVAttention):
    """Attention with qkv laid out per head as [q_h, k_h, v_h] (ADM's legacy order)."""

    def split(self, qkv: torch.Tensor, ch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bs, _, length = qkv.shape
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        return q, k, v


class QKVAttention(_QKVAttention):
    """Attention with qkv laid out as [q (all heads), k (all heads), v (all heads)]."""

    def split(self, qkv: torch.Tensor, ch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bs, _, length = qkv.shape
        q, k, v = (t.reshape(bs * self.n_heads, ch, length) for t in qkv.chunk(3, dim=1))
        return q, k, v


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions: ``x + proj_out(attention(qkv(GN(x))))``.

    Heads: ``num_heads`` when ``num_head_channels == -1``, else ``channels // num_head_channels``.
    ``proj_out`` is zero-initialised.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            if num_heads < 1 or channels % num_heads != 0:
                raise UsageError(f"num_heads: {num_heads} heads do not divide {channels} channels")
            self.num_heads = num_heads
        else:
            if num_head_channels < 1 or channels % num_head_channels != 0:
                raise UsageError(
                    f"num_head_channels: {num_head_channels} does not divide {channels} channels"
                )
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint  # accepted, ignored
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        self.attention = QKVAttention(self.num_heads) if use_new_attention_order else QKVAttentionLegacy(
            self.num_heads
        )
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


def _width(mult: float, model_channels: int) -> int:
    """Channels of a level: ``int(mult * model_channels)`` (ADM)."""
    return int(mult * model_channels)


class UNetModel(nn.Module):
    """The ADM UNet with timestep embedding and optional class conditioning.

    Arguments carry guided-diffusion's names. ``attention_resolutions`` holds downsampling *rates* ``ds``
    (1, 2, 4, ...), not pixel resolutions (see :func:`flatkit.models.adm_flags.attention_ds`).

    ``forward(x, timesteps, y=None)``: ``x`` (N, C, H, W), ``timesteps`` a 1-D tensor of N timesteps
    (int or float) or a scalar broadcast to the batch, ``y`` (N,) class labels when class-conditional.
    Returns (N, out_channels, H, W).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        if num_res_blocks < 1:
            raise UsageError(f"num_res_blocks: must be at least 1, got {num_res_blocks}")
        if len(channel_mult) < 1:
            raise UsageError("channel_mult: needs at least one level")

        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions)
        self.dropout = dropout
        self.channel_mult = tuple(channel_mult)
        self.conv_resample = conv_resample
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint  # accepted, ignored
        self.use_fp16 = use_fp16  # accepted, ignored: parameters stay in their own dtype
        self.num_heads = num_heads
        self.num_head_channels = num_head_channels
        self.num_heads_upsample = num_heads_upsample

        def res_block(ch_in: int, ch_out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(
                ch_in, time_embed_dim, dropout, out_channels=ch_out, dims=dims,
                use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm, up=up, down=down,
            )

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch, num_heads=heads, num_head_channels=num_head_channels,
                use_checkpoint=use_checkpoint, use_new_attention_order=use_new_attention_order,
            )

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim),
            nn.SiLU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        # Encoder: remember each block's output width for the skip connections.
        ch = input_ch = _width(channel_mult[0], model_channels)
        conv_in = conv_nd(dims, in_channels, ch, 3, padding=1)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_in)])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, _width(mult, model_channels))]
                ch = _width(mult, model_channels)
                if ds in self.attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(
                    ch, conv_resample, dims=dims, out_channels=ch
                )
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch), attention(ch, num_heads), res_block(ch, ch)
        )

        # Decoder: each block consumes one skip connection (concatenated on the channel axis).
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip_ch = skip_chans.pop()
                layers = [res_block(ch + skip_ch, _width(mult, model_channels))]
                ch = _width(mult, model_channels)
                if ds in self.attention_resolutions:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True) if resblock_updown
                        else Upsample(ch, conv_resample, dims=dims, out_channels=ch)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(conv_nd(dims, input_ch, out_channels, 3, padding=1)),
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int | float,
                y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise UsageError(
                "y: class labels must be given exactly when the model is class-conditional "
                f"(num_classes={self.num_classes})"
            )
        dtype = self.time_embed[0].weight.dtype
        t = torch.as_tensor(timesteps, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        # Sinusoidal embedding in float32 as ADM (float64 for a float64 model).
        emb_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        emb = self.time_embed(timestep_embedding(t, self.model_channels, dtype=emb_dtype).to(dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)

        hs = []
        h = x.to(dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
