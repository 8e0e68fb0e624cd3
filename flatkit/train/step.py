"""One optimisation step of the diffusion loss: plain, or SAM / ASAM, with optional mixed precision.

The step is free of single-process assumptions: it works on whatever module it is given (a DDP wrapper
all-reduces gradients inside ``backward``), takes a ready batch (x0, t, importance weights, eps, IP noise,
dropout seed) drawn by the caller, and returns per-sample losses for the caller to gather.  Under DDP a SAM
first pass is per-rank (unsynchronised perturbation) when ``first_pass_context`` is ``model.no_sync``, or
synchronised when it is left as the default no-op context: an explicit choice for the caller.

Both SAM passes see exactly the same (x0, t, eps, IP noise) and the same dropout masks: the dropout RNG (the
default CPU generator and, on CUDA, the device's default generator) is seeded from ``batch.dropout_seed``
for each pass and restored afterwards, so the caller's global RNG state is left as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from flatkit.train.sam import SAM, global_norm

AMP_MODES = ("off", "bf16", "fp16")


@dataclass
class Batch:
    """Everything random about one step, drawn by the caller from explicit generators."""

    x0: torch.Tensor  # data, on the model's device
    t: torch.Tensor  # int64 timesteps (original, un-respaced)
    weights: torch.Tensor  # importance weights 1 / (T p_t), float32
    noise: torch.Tensor  # eps
    ip_noise: torch.Tensor | None  # xi of input perturbation (None when gamma = 0)
    dropout_seed: int


@dataclass
class StepResult:
    loss: float  # importance-weighted mean loss at w (first pass)
    losses: torch.Tensor  # per-sample (unweighted) losses at w, detached, on the CPU
    grad_norm: float  # 2-norm of the (unscaled, pre-clipping) gradient handed to the optimizer
    e_norm: float  # ||e||_2 of the SAM perturbation (0 without SAM)
    skipped: bool  # the GradScaler skipped the update (inf / NaN gradients under fp16)


@contextlib.contextmanager
def dropout_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the generators that dropout draws from, restore them on exit (the global state is unchanged)."""
    gens = [torch.default_generator]
    if device.type == "cuda":
        torch.cuda.init()
        gens.append(
            torch.cuda.default_generators[
                device.index if device.index is not None else torch.cuda.current_device()
            ]
        )
    states = [g.get_state() for g in gens]
    for g in gens:
        g.manual_seed(int(seed))
    try:
        yield
    finally:
        for g, s in zip(gens, states, strict=True):
            g.set_state(s)


def autocast_context(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16`` / ``fp16``; a no-op for ``off``."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def batch_loss(
    model: nn.Module, diffusion, batch: Batch, ip_gamma: float, amp: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_i w_i L_i / B, L)``: the importance-weighted loss and the per-sample losses at the weights.

    IP (Ning et al. 2023): x_t = q_sample(x0, t, eps + gamma xi), target eps (inside ``training_losses``).
    """
    with dropout_rng(batch.dropout_seed, device), autocast_context(amp, device):
        terms = diffusion.training_losses(
            model, batch.x0, batch.t, batch.noise, ip_gamma=ip_gamma, ip_noise=batch.ip_noise
        )
    per_sample = terms["loss"].float()
    return (per_sample * batch.weights).mean(), per_sample


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def train_step(
    model: nn.Module,
    diffusion,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    ip_gamma: float = 0.0,
    sam: SAM | None = None,
    rho: float = 0.0,
    grad_clip: float = 0.0,
    amp: str = "off",
    scaler: torch.amp.GradScaler | None = None,
    first_pass_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> StepResult:
    """One update of ``optimizer`` (its lr already set by the caller).

    Plain: ``g = grad L(w)``, clip, step.  SAM (Foret et al. 2021): ``g = grad L(w)`` (first pass, under
    ``first_pass_context``), ``w <- w + e(w)`` (from unscaled gradients under AMP), ``g' = grad L(w + e)``
    (second pass, same batch, noise and dropout masks), restore ``w`` exactly, clip ``g'``, step with ``g'``.
    """
    device = batch.x0.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    e_norm = 0.0
    if sam is not None:
        with first_pass_context():
            loss, per_sample = batch_loss(model, diffusion, batch, ip_gamma, amp, device)
            _backward(loss, scaler)
        grad_scale = float(scaler.get_scale()) if scaler is not None else 1.0
        e_norm = sam.perturb(rho, grad_scale=grad_scale)
        optimizer.zero_grad(set_to_none=True)
        try:
            loss2, _ = batch_loss(model, diffusion, batch, ip_gamma, amp, device)
            _backward(loss2, scaler)
        finally:
            sam.restore()
    else:
        loss, per_sample = batch_loss(model, diffusion, batch, ip_gamma, amp, device)
        _backward(loss, scaler)

    if scaler is not None:
        scaler.unscale_(optimizer)  # clipping and the logged norm see unscaled gradients
    if grad_clip > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    else:
        grad_norm = float(global_norm([p.grad for p in params if p.grad is not None]))
    skipped = False
    if scaler is not None:
        scale_before = float(scaler.get_scale())
        scaler.step(optimizer)
        scaler.update()
        skipped = float(scaler.get_scale()) < scale_before
    else:
        optimizer.step()
    return StepResult(float(loss.detach()), per_sample.detach().cpu(), grad_norm, e_norm, skipped)
