"""Training metrics: window averages written to the append-only ``DIR/metrics.jsonl``.

One line every ``log_every`` steps (the average over the steps since the previous line) with step, loss,
per-timestep-quartile loss (``loss_q0`` .. ``loss_q3``, t in [kT/4, (k+1)T/4), as ADM's
``log_loss_dict``), grad norm, SAM perturbation norm, lr, rho, steps/s and wall time.  A run that ends off
that grid writes one more line marked ``"partial": true``.  The window's sums are part of the checkpoint,
and a resume truncates the file to the lines an uninterrupted run would have written up to the checkpoint
(dropping later and partial lines).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from flatkit.results import jsonable


class MetricsWindow:
    """Running sums since the last logged line (plain floats, so a checkpoint restores them exactly)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.loss_sum = 0.0
        self.grad_norm_sum = 0.0
        self.e_norm_sum = 0.0
        self.q_sum = [0.0, 0.0, 0.0, 0.0]
        self.q_count = [0, 0, 0, 0]
        self.wall = 0.0

    def add(
        self,
        losses: torch.Tensor,
        t: torch.Tensor,
        num_timesteps: int,
        grad_norm: float,
        e_norm: float,
        wall: float,
    ) -> None:
        """Add one step: per-sample losses at timesteps ``t``, the step's norms and its wall time."""
        self.steps += 1
        self.loss_sum += float(losses.double().mean())
        self.grad_norm_sum += float(grad_norm)
        self.e_norm_sum += float(e_norm)
        self.wall += float(wall)
        q = (t.cpu() * 4 // num_timesteps).clamp(0, 3)
        for k in range(4):
            sel = losses[q == k]
            self.q_sum[k] += float(sel.double().sum())
            self.q_count[k] += int(sel.numel())

    def summary(self) -> dict:
        n = max(self.steps, 1)
        out = {
            "loss": self.loss_sum / n,
            **{
                f"loss_q{k}": (self.q_sum[k] / self.q_count[k] if self.q_count[k] else None) for k in range(4)
            },
            "grad_norm": self.grad_norm_sum / n,
            "sam_e_norm": self.e_norm_sum / n,
            "steps_per_s": (self.steps / self.wall) if self.wall > 0 else None,
        }
        return out

    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "loss_sum": self.loss_sum,
            "grad_norm_sum": self.grad_norm_sum,
            "e_norm_sum": self.e_norm_sum,
            "q_sum": list(self.q_sum),
            "q_count": list(self.q_count),
            "wall": self.wall,
        }

    def load_state_dict(self, s: dict) -> None:
        self.steps = int(s["steps"])
        self.loss_sum = float(s["loss_sum"])
        self.grad_norm_sum = float(s["grad_norm_sum"])
        self.e_norm_sum = float(s["e_norm_sum"])
        self.q_sum = [float(v) for v in s["q_sum"]]
        self.q_count = [int(v) for v in s["q_count"]]
        self.wall = float(s["wall"])


def append_metrics(path: Path, record: dict) -> None:
    """Append one JSON line (NaN / inf written as null) and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the lines an uninterrupted run would hold at ``step``: no later and no partial lines."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if (
            isinstance(rec, dict)
            and isinstance(rec.get("step"), int)
            and rec["step"] <= step
            and not rec.get("partial")
        ):
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
