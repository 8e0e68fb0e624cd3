"""Samplers: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021, eq. 12).

Both loop over the (respaced) indices T'-1..0 of the given diffusion. Randomness comes only from the
explicit generator: one ``torch.Generator`` for the whole batch, or a list of per-sample generators, in which
case each sample's noise is drawn from its own generator, so a sample does not depend on the batch it is in.

A ``callback(i, t_original, x_t, model_output)`` is called at every step with the respaced index i, the
original timesteps (B,), the current x_t and the raw model output at (x_t, t) (e.g. to record ||eps_theta||
along the sampling chain for exposure-bias analyses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from flatkit.diffusion.gaussian import GaussianDiffusion, ModelFn, _extract
from flatkit.errors import UsageError

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def gaussian_noise(
    shape: Sequence[int], generator: GeneratorArg, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise of ``shape`` from ``generator`` (one generator, or one per sample).

    The noise is drawn on the generator's own device and then moved to ``device``, so a CPU generator gives
    the same numbers whatever device the samples live on.
    """
    if generator is None:
        raise UsageError("generator: a torch.Generator (or one per sample) is required to draw noise")
    shape = tuple(shape)
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise UsageError(f"generator: got {len(gens)} per-sample generators for a batch of {shape[0]}")
    return torch.stack(
        [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype).to(device) for g in gens]
    )


def _nonzero_mask(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """1 where t != 0, else 0, shaped (B, 1, ..., 1): no noise is added on the last step."""
    return (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def p_sample(
    diffusion: GaussianDiffusion,
    model: ModelFn,
    x: torch.Tensor,
    t: torch.Tensor,
    generator: GeneratorArg,
    clip_denoised: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One ancestral step x_{t-1} = mu_theta(x_t, t) + exp(log sigma_t^2 / 2) z (Ho et al. Algorithm 2)."""
    out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip_denoised)
    if bool((t != 0).any()):
        z = gaussian_noise(x.shape, generator, x.device, x.dtype)
        sample = out["mean"] + _nonzero_mask(t, x) * torch.exp(0.5 * out["log_variance"]) * z
    else:
        sample = out["mean"]  # t == 0: return the mean, draw nothing
    return sample, out


def ddim_step(
    diffusion: GaussianDiffusion,
    model: ModelFn,
    x: torch.Tensor,
    t: torch.Tensor,
    generator: GeneratorArg = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One DDIM step (Song et al. 2021, eq. 12), with sigma_t(eta) of eq. 16 as ADM's ``ddim_sample``.

    x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat + sigma_t z,
    sigma_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}),
    where eps_hat is recomputed from the (possibly clipped) x0_hat.
    """
    out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip_denoised)
    eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
    alpha_bar = _extract(diffusion.alphas_cumprod, t, x)
    alpha_bar_prev = _extract(diffusion.alphas_cumprod_prev, t, x)
    sigma = (
        eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    )
    mean_pred = (
        out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    )
    if eta > 0 and bool((t != 0).any()):
        z = gaussian_noise(x.shape, generator, x.device, x.dtype)
        sample = mean_pred + _nonzero_mask(t, x) * sigma * z
    else:
        sample = mean_pred
    return sample, out


def _sample_loop(
    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    diffusion: GaussianDiffusion,
    x_T: torch.Tensor,
    progress: bool,
    return_trajectory: bool,
    callback: StepCallback | None,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    indices = list(range(diffusion.num_timesteps))[::-1]
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="sampling")
    x = x_T
    trajectory = [x_T] if return_trajectory else []
    with torch.no_grad():
        for i in indices:
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            x_next, out = step(x, t)
            if callback is not None:
                callback(i, diffusion.original_timesteps(t), x, out["model_output"])
            x = x_next
            if return_trajectory:
                trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


def ddpm_sample(
    diffusion: GaussianDiffusion,
    model: ModelFn,
    x_T: torch.Tensor,
    generator: GeneratorArg,
    clip_denoised: bool = True,
    progress: bool = False,
    return_trajectory: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Ancestral sampling from x_T over all (respaced) steps of ``diffusion`` (Ho et al. 2020, Algorithm 2).

    Returns x_0, or (x_0, [x_T, x_{T'-1}, ..., x_0]) with ``return_trajectory``. Runs under ``torch.no_grad``.
    """
    if generator is None and diffusion.num_timesteps > 1:
        raise UsageError("generator: ddpm_sample needs a torch.Generator (or one per sample)")

    def step(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return p_sample(diffusion, model, x, t, generator, clip_denoised=clip_denoised)

    return _sample_loop(step, diffusion, x_T, progress, return_trajectory, callback)


def ddim_sample(
    diffusion: GaussianDiffusion,
    model: ModelFn,
    x_T: torch.Tensor,
    generator: GeneratorArg = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    progress: bool = False,
    return_trajectory: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM sampling from x_T over all (respaced) steps of ``diffusion`` (Song et al. 2021, eq. 12).

    ``eta = 0`` is deterministic (no generator needed); ``eta > 0`` needs ``generator``.
    Returns x_0, or (x_0, [x_T, ..., x_0]) with ``return_trajectory``. Runs under ``torch.no_grad``.
    """
    if eta < 0:
        raise UsageError(f"eta: must be >= 0, got {eta}")
    if eta > 0 and generator is None and diffusion.num_timesteps > 1:
        raise UsageError("generator: ddim_sample with eta > 0 needs a torch.Generator (or one per sample)")

    def step(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return ddim_step(diffusion, model, x, t, generator, eta=eta, clip_denoised=clip_denoised)

    return _sample_loop(step, diffusion, x_T, progress, return_trajectory, callback)
