"""Weight averaging tracked during training: EMA at several rates at once, and SWA.

Both keep their own copies and never touch the model they read from.

- EMA (ADM, ``update_ema``): after every optimizer step ``p_ema <- r p_ema + (1 - r) p`` for each rate ``r``,
  in the parameter's dtype (as ADM). Buffers are not averaged: an EMA state dict carries the raw model's
  current buffers (the ADM UNet has none). With ``warmup=True`` the rate after optimizer step ``n`` is
  ``min(r, (1 + n) / (10 + n))`` (the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates)`` and
  diffusers' ``EMAModel``): ADM has none, so after 600 steps at r = 0.999 its EMA still holds the
  initialisation with weight 0.999^600 = 0.55. The warm-up changes the first ~10/(1 - r) steps only.
- SWA (Izmailov et al. 2018): a uniform running average ``p_swa <- p_swa + (p - p_swa) / (n + 1)`` of the
  weights taken at steps ``swa_start, swa_start + swa_every, ...``; floating-point buffers are averaged the
  same way, other buffers (integer counters) take the latest value.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_name(rate: float) -> str:
    """Checkpoint name of an EMA weight set, e.g. ``ema_0.9999`` (as ``flatkit.checkpoint``)."""
    return f"ema_{float(rate):g}"


class EMA:
    """Exponential moving averages of a model's parameters at several rates (ADM update rule)."""

    def __init__(self, model: nn.Module, rates: list[float], warmup: bool = False) -> None:
        self.warmup = bool(warmup)
        for r in rates:
            if not 0.0 < float(r) < 1.0:
                raise ValueError(f"EMA rate must lie in (0, 1), got {r}")
        self.rates = [float(r) for r in rates]
        self.names = [n for n, p in model.named_parameters()]
        self.shadow: list[dict[str, torch.Tensor]] = [
            {n: p.detach().clone() for n, p in model.named_parameters()} for _ in self.rates
        ]

    def rate_at(self, rate: float, step: int | None) -> float:
        """The rate used after optimizer step ``step`` (1-based): ``r``, or ``min(r, (1 + n) / (10 + n))``."""
        if not self.warmup or step is None:
            return rate
        return min(rate, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """``p_ema <- r p_ema + (1 - r) p`` for every rate (ADM's ``update_ema``; ``r`` warmed up if asked)."""
        params = dict(model.named_parameters())
        for rate, shadow in zip(self.rates, self.shadow, strict=True):
            r = self.rate_at(rate, step)
            for n, s in shadow.items():
                s.mul_(r).add_(params[n].detach(), alpha=1.0 - r)

    def state_dicts(self, model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
        """``{"ema_<rate>": full model state dict}`` (EMA parameters, the model's current buffers)."""
        out = {}
        base = model.state_dict()
        for r, shadow in zip(self.rates, self.shadow, strict=True):
            sd = {k: v.detach().clone() for k, v in base.items()}
            sd.update({k: v.detach().clone() for k, v in shadow.items()})
            out[ema_name(r)] = sd
        return out

    @torch.no_grad()
    def load_state_dicts(self, sds: dict[str, dict[str, torch.Tensor]]) -> None:
        for r, shadow in zip(self.rates, self.shadow, strict=True):
            src = sds[ema_name(r)]
            for n, s in shadow.items():
                s.copy_(src[n])


class SWA:
    """Uniform running average of the weights (and float buffers) from ``start`` every ``every`` steps."""

    def __init__(self, model: nn.Module, start: int, every: int = 1) -> None:
        if start < 1 or every < 1:
            raise ValueError(f"SWA needs start >= 1 and every >= 1, got start={start}, every={every}")
        self.start = int(start)
        self.every = int(every)
        self.n = 0
        self.mean: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def due(self, step: int) -> bool:
        """Whether the weights after optimizer step ``step`` (1-based) enter the average."""
        return step >= self.start and (step - self.start) % self.every == 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``mean <- mean + (p - mean) / (n + 1)``; the first sample is copied exactly."""
        self.n += 1
        for k, v in model.state_dict().items():
            m = self.mean[k]
            if self.n == 1 or not torch.is_floating_point(v):
                m.copy_(v)
            else:
                m.add_((v.detach() - m) / self.n)

    def maybe_update(self, model: nn.Module, step: int) -> bool:
        if self.due(step):
            self.update(model)
            return True
        return False

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights as a model state dict (only meaningful once ``n > 0``)."""
        return {k: v.detach().clone() for k, v in self.mean.items()}

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, torch.Tensor], n: int) -> None:
        for k, m in self.mean.items():
            m.copy_(sd[k])
        self.n = int(n)
