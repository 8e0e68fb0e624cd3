"""Sharpness-aware minimisation: SAM (Foret et al. 2021) and ASAM (Kwon et al. 2021).

SAM solves ``min_w max_{||e||_2 <= rho} L(w + e)`` with the first-order inner solution (Foret et al., eq. 2)::

    e(w) = rho * g / ||g||_2,            g = grad L(w), the norm taken over ALL parameters jointly.

ASAM (Kwon et al. 2021, eq. 11-12) makes the neighbourhood adaptive to the scale of each weight with the
normalisation operator ``T_w = diag(|w| + eta)``::

    e(w) = rho * T_w^2 g / ||T_w g||_2.

Variant implemented here (the variants in the wild differ; docs/methods.md, "SAM and ASAM"): **T_w = |w| + eta
applied to all parameters** (weights AND biases / norm gains), ``eta = 0.01`` by default.  (Kwon et al.'s own code
applies T_w to parameters named ``weight`` only; davda54/sam uses ``|w|^2`` without eta.)

A SAM step (:class:`SAM`) is: first pass ``g`` at ``w`` -> :meth:`SAM.perturb` (keeps an exact copy of ``w``,
then ``w <- w + e``) -> second pass at ``w + e`` -> :meth:`SAM.restore` (copies ``w`` back bit for bit, never
subtracts ``e``) -> the base optimizer steps with the second-pass gradient.  The caller is responsible for
using the same (x0, t, eps, IP noise) and dropout masks in both passes (see ``flatkit/train/step.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

# Guards the division by ||g|| (or ||T_w g||) when the gradient vanishes: e is then 0, not NaN.
_NORM_FLOOR = 1e-12


def T_w(w: torch.Tensor, eta: float) -> torch.Tensor:
    """ASAM's normalisation operator ``T_w = |w| + eta`` (diagonal, as a tensor shaped like ``w``)."""
    return w.detach().abs() + eta


def global_norm(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all tensors taken jointly (float64 accumulation, returned as a 0-d float64 tensor)."""
    norms = [t.detach().to(torch.float64).norm(2) for t in tensors]
    if not norms:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack([n.to(norms[0].device) for n in norms]).norm(2)


def sam_perturbation(
    w: Sequence[torch.Tensor],
    g: Sequence[torch.Tensor | None],
    rho: float,
    adaptive: bool = False,
    eta: float = 0.01,
    grad_scale: float = 1.0,
) -> tuple[list[torch.Tensor], float]:
    """The ascent step ``e(w)`` for each parameter, and ``||e||_2`` (over all parameters).

    ``g`` are the gradients as stored in ``.grad``; ``grad_scale`` divides them first (a GradScaler's scale,
    so the norm is taken on UNscaled gradients under mixed precision).  Parameters whose gradient is None get
    ``e = 0``.  Vanilla: ``e = rho g / ||g||`` (Foret et al. eq. 2).  Adaptive:
    ``e = rho T_w^2 g / ||T_w g||`` (Kwon et al. eq. 12) with ``T_w = |w| + eta`` on all parameters.
    """
    inv = 1.0 / float(grad_scale)
    grads = [None if gi is None else gi.detach() * inv for gi in g]
    if adaptive:
        tw = [T_w(wi, eta) for wi in w]
        scaled = [None if gi is None else ti * gi for gi, ti in zip(grads, tw, strict=True)]  # T_w g
        denom = global_norm([s for s in scaled if s is not None])
        num = [None if s is None else ti * s for s, ti in zip(scaled, tw, strict=True)]  # T_w^2 g
    else:
        denom = global_norm([gi for gi in grads if gi is not None])
        num = grads
    if not torch.isfinite(denom):
        # Overflowed (AMP) or NaN gradient: no perturbation this step; the GradScaler will skip the update.
        return [torch.zeros_like(wi) for wi in w], 0.0
    scale = float(rho) / max(float(denom), _NORM_FLOOR)
    e = [
        torch.zeros_like(wi) if ni is None else (ni * scale).to(wi.dtype)
        for wi, ni in zip(w, num, strict=True)
    ]
    return e, float(global_norm(e))


class SAM:
    """Perturb-and-restore around a set of parameters (the base optimizer is kept separate).

    Usage (one step)::

        loss(w).backward()                 # first pass, gradient g at w
        e_norm = sam.perturb(rho)          # w <- w + e(w), exact copy of w kept
        optimizer.zero_grad(); loss(w + e).backward()   # second pass, same batch / noise / dropout
        sam.restore()                      # w restored bit for bit
        optimizer.step()                   # base optimizer with the second-pass gradient
    """

    def __init__(self, params: Iterable[torch.Tensor], adaptive: bool = False, eta: float = 0.01) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.adaptive = bool(adaptive)
        self.eta = float(eta)
        self._saved: list[torch.Tensor] | None = None

    @torch.no_grad()
    def perturb(self, rho: float, grad_scale: float = 1.0) -> float:
        """Move the parameters to ``w + e(w)`` using their current ``.grad``; returns ``||e||_2``."""
        if self._saved is not None:
            raise RuntimeError("SAM.perturb called twice without restore")
        e, e_norm = sam_perturbation(
            self.params, [p.grad for p in self.params], rho, self.adaptive, self.eta, grad_scale
        )
        self._saved = [p.detach().clone() for p in self.params]
        for p, ei in zip(self.params, e, strict=True):
            p.add_(ei)
        return e_norm

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the saved ``w`` back (bit-exact; never ``w + e - e``)."""
        if self._saved is None:
            raise RuntimeError("SAM.restore called without perturb")
        for p, s in zip(self.params, self._saved, strict=True):
            p.copy_(s)
        self._saved = None
