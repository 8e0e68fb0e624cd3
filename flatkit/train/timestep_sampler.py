"""Timestep samplers of ADM (Nichol & Dhariwal 2021, "Improved DDPM", section 3.3 importance sampling).

A sampler draws ``t`` from a distribution ``p_t`` over ``{0, ..., T-1}`` and returns importance weights
``w_t = 1 / (T p_t)`` so that ``E_t[w_t L_t] = (1/T) sum_t L_t`` stays an unbiased estimate of the uniform
objective.

- ``uniform``: ``p_t = 1/T``, ``w_t = 1``.
- ``loss-second-moment``: ``p_t proportional to sqrt(E[L_t^2])`` over the last ``history`` (10) losses seen
  at each ``t``, mixed with ``uniform_prob`` (0.001) of the uniform distribution; uniform until every ``t``
  has a full history (ADM's ``LossSecondMomentResampler``).

Randomness comes from an explicit CPU ``torch.Generator``; states are plain tensors (``state_dict``) so a
resumed run continues exactly.
"""

from __future__ import annotations

import torch

TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")


class UniformSampler:
    """``t ~ U{0, ..., T-1}``, weights all 1."""

    name = "uniform"

    def __init__(self, num_timesteps: int) -> None:
        self.T = int(num_timesteps)

    def weights(self) -> torch.Tensor:
        """``p_t`` up to normalisation (float64, length T)."""
        return torch.ones(self.T, dtype=torch.float64)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t, w)``: int64 timesteps and float32 importance weights ``1 / (T p_t)``, on the CPU."""
        w = self.weights()
        p = w / w.sum()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        return t, (1.0 / (self.T * p[t])).to(torch.float32)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses (no-op for the uniform sampler)."""

    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"timestep sampler state is for {state.get('name')!r}, not {self.name!r}")


class LossSecondMomentResampler(UniformSampler):
    """``p_t proportional to sqrt(mean of the last 10 L_t^2)``, mixed with 0.001 uniform (ADM)."""

    name = "loss-second-moment"

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        self.history = int(history)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = torch.zeros(self.T, self.history, dtype=torch.float64)
        self.loss_counts = torch.zeros(self.T, dtype=torch.int64)

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history).all())

    def weights(self) -> torch.Tensor:
        if not self.warmed_up():
            return torch.ones(self.T, dtype=torch.float64)
        w = (self.loss_history**2).mean(dim=-1).sqrt()
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.T

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Push each ``(t, L)`` into t's history (oldest dropped once full), in batch order."""
        for ti, li in zip(t.tolist(), losses.detach().to(torch.float64).cpu().tolist(), strict=True):
            c = int(self.loss_counts[ti])
            if c == self.history:
                self.loss_history[ti, :-1] = self.loss_history[ti, 1:].clone()
                self.loss_history[ti, -1] = li
            else:
                self.loss_history[ti, c] = li
                self.loss_counts[ti] = c + 1

    def state_dict(self) -> dict:
        return {
            "name": self.name,
            "loss_history": self.loss_history.clone(),
            "loss_counts": self.loss_counts.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.loss_history.copy_(state["loss_history"])
        self.loss_counts.copy_(state["loss_counts"])


def create_timestep_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """``uniform`` or ``loss-second-moment`` (explicit registry)."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(num_timesteps)
    raise ValueError(f"unknown timestep sampler {name!r} (choose from {', '.join(TIMESTEP_SAMPLERS)})")
