"""Gaussian diffusion (Ho et al. 2020; Nichol & Dhariwal 2021) with ADM semantics.

Schedules and every precomputed coefficient are float64 numpy arrays; ``_extract`` gathers them at the
timesteps and casts to the dtype of the tensors they multiply, so model math stays in the model's dtype.

Notation (Ho et al. 2020): alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s,
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)                        (eq. 4)
q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)                                (eqs. 6-7)
x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)                          (eq. 4 inverted)

Timesteps ``t`` given to the methods are indices 0..num_timesteps-1 of *this* diffusion (respaced indices for
a ``SpacedDiffusion``); the model is always called with the original timesteps ``timestep_map[t]`` (as floats
times 1000 / original_num_steps when ``rescale_timesteps``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from flatkit.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from flatkit.diffusion.respace import respaced_betas, space_timesteps
from flatkit.errors import UsageError

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MEAN_TYPES = ("eps", "x0")
VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
LOSS_TYPES = ("mse", "rescaled_mse", "kl", "rescaled_kl")


def _extract(
    arr: np.ndarray,
    t: torch.Tensor,
    shape: torch.Size | Sequence[int] | torch.Tensor,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gather the float64 values ``arr[t]`` and shape them (B, 1, ..., 1) to broadcast against ``shape``.

    ``shape`` may be a tensor, whose shape and dtype are then used. The gather happens in float64 and the
    result is cast to ``dtype`` (default: the tensor's dtype, else float32), on the tensor's device (else
    on ``t``'s device).
    """
    device = t.device
    if isinstance(shape, torch.Tensor):
        dtype = dtype or shape.dtype
        device = shape.device
        shape = shape.shape
    dtype = dtype or torch.float32
    table = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    if device.type == "mps" or t.device.type == "mps":  # no float64 on MPS: gather on the CPU, cast, move
        vals = table[t.cpu()].to(dtype).to(device)
    else:
        vals = table.to(t.device)[t].to(dtype).to(device)
    return vals.reshape(vals.shape + (1,) * (len(shape) - vals.ndim))


extract = _extract


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion over ``len(betas)`` steps (ADM ``GaussianDiffusion``).

    Args:
        betas: beta_1..beta_T (any array-like; stored as float64 numpy).
        model_mean_type: what the model's first C output channels predict: "eps" (noise) or "x0".
        model_var_type: "fixed_small" (beta~_t), "fixed_large" (beta_t, with beta~_1 at t = 1) or
            "learned_range" (Nichol & Dhariwal 2021, eq. 15: the model's last C channels v interpolate
            log sigma^2 = (v+1)/2 log beta_t + (1-v)/2 log beta~_t).
        loss_type: "mse" / "rescaled_mse" (eps-MSE, plus the VLB term with learned sigma: the hybrid loss
            L_simple + L_vlb, Nichol & Dhariwal 2021, eq. 16) or "kl" / "rescaled_kl" (the VLB alone).
        rescale_timesteps: call the model with t * 1000 / original_num_steps as floats.
    """

    def __init__(
        self,
        betas: np.ndarray | Sequence[float],
        model_mean_type: str = "eps",
        model_var_type: str = "fixed_small",
        loss_type: str = "mse",
        rescale_timesteps: bool = False,
    ) -> None:
        if model_mean_type not in MEAN_TYPES:
            raise UsageError(
                f"model_mean_type: unknown {model_mean_type!r} (expected one of {', '.join(MEAN_TYPES)})"
            )
        if model_var_type not in VAR_TYPES:
            raise UsageError(
                f"model_var_type: unknown {model_var_type!r} (expected one of {', '.join(VAR_TYPES)})"
            )
        if loss_type not in LOSS_TYPES:
            raise UsageError(f"loss_type: unknown {loss_type!r} (expected one of {', '.join(LOSS_TYPES)})")
        betas = np.array(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise UsageError(f"betas: must be a non-empty 1-D array, got shape {betas.shape}")
        if not (np.all(betas > 0) and np.all(betas <= 1)):
            raise UsageError("betas: every beta must lie in (0, 1]")

        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.rescale_timesteps = bool(rescale_timesteps)

        self.betas = betas
        self.num_timesteps = int(betas.shape[0])
        # Respacing bookkeeping: the schedule this one was derived from, and respaced index -> original t.
        self.original_betas = betas.copy()
        self.original_num_steps = self.num_timesteps
        self.timestep_map = np.arange(self.num_timesteps, dtype=np.int64)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)  # alpha_bar_t
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])  # alpha_bar_{t-1}
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        # q(x_t | x_0), Ho et al. eq. 4
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)

        # q(x_{t-1} | x_t, x_0), Ho et al. eqs. 6-7:
        # beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
        # mu~_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
        #        + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0: the log is clipped by repeating beta~_1 at t = 0 (as ADM).
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )

        # sigma_t^2 = beta_t ("fixed_large", Ho et al. section 3.2), beta~_1 at t = 0 for a finite decoder.
        self.large_variance = np.append(self.posterior_variance[1], betas[1:])
        self.large_log_variance = np.log(self.large_variance)
        self.log_betas = np.log(betas)

    # ------------------------------------------------------------------ configuration
    @property
    def learn_sigma(self) -> bool:
        return self.model_var_type == "learned_range"

    def _config_kwargs(self) -> dict:
        return dict(
            model_mean_type=self.model_mean_type,
            model_var_type=self.model_var_type,
            loss_type=self.loss_type,
            rescale_timesteps=self.rescale_timesteps,
        )

    def respace(self, spec: str | Sequence[int]) -> GaussianDiffusion | SpacedDiffusion:
        """This diffusion's original schedule respaced by ``spec`` ("ddimN", "N", "a,b,c"; "" = all steps)."""
        if spec is None or (isinstance(spec, str) and spec.strip() == ""):
            return GaussianDiffusion(self.original_betas, **self._config_kwargs())
        use_timesteps = space_timesteps(self.original_num_steps, spec)
        return SpacedDiffusion(self.original_betas, use_timesteps, **self._config_kwargs())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_timesteps={self.num_timesteps}, "
            f"original_num_steps={self.original_num_steps}, "
            f"model_mean_type={self.model_mean_type!r}, model_var_type={self.model_var_type!r}, "
            f"loss_type={self.loss_type!r}, rescale_timesteps={self.rescale_timesteps})"
        )

    # ------------------------------------------------------------------ model calls
    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timesteps the model sees for indices ``t``: ``timestep_map[t]`` (rescaled if asked)."""
        t_orig = self.original_timesteps(t)
        if self.rescale_timesteps:
            return t_orig.float() * (1000.0 / self.original_num_steps)
        return t_orig

    def original_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original (un-respaced) integer timesteps of indices ``t``."""
        table = torch.from_numpy(self.timestep_map)
        return table[t.cpu()].to(t.device) if t.device.type == "mps" else table.to(t.device)[t]

    def call_model(self, model: ModelFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``model(x, original t)``, checking the number of output channels against the variance type."""
        out = model(x, self.model_timesteps(t.to(x.device)))
        want = x.shape[1] * (2 if self.learn_sigma else 1)
        if out.ndim < 2 or out.shape[1] != want or out.shape[0] != x.shape[0]:
            raise UsageError(
                f"model: output shape {tuple(out.shape)} does not fit input {tuple(x.shape)} "
                f"with model_var_type={self.model_var_type!r} (expected {want} channels)"
            )
        return out

    # ------------------------------------------------------------------ forward process q
    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mean, variance and log-variance of q(x_t | x_0) (Ho et al. eq. 4)."""
        mean = _extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = _extract(1.0 - self.alphas_cumprod, t, x_start)
        log_variance = _extract(self.log_one_minus_alphas_cumprod, t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4), ``noise`` explicit."""
        if noise is None:
            raise UsageError("noise: q_sample needs the noise explicitly (draw it from a torch.Generator)")
        if noise.shape != x_start.shape:
            raise UsageError(f"noise: shape {tuple(noise.shape)} differs from x_start {tuple(x_start.shape)}")
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mu~_t(x_t, x_0), beta~_t, clipped log beta~_t of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7)."""
        mean = (
            _extract(self.posterior_mean_coef1, t, x_t) * x_start
            + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = _extract(self.posterior_variance, t, x_t)
        log_variance_clipped = _extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance_clipped

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = sqrt(1/alpha_bar_t) x_t - sqrt(1/alpha_bar_t - 1) eps (Ho et al. eq. 4 inverted)."""
        return (
            _extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps_from_xstart(
        self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor
    ) -> torch.Tensor:
        """eps = (sqrt(1/alpha_bar_t) x_t - x_0) / sqrt(1/alpha_bar_t - 1)."""
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    # ------------------------------------------------------------------ reverse process p
    def p_mean_variance_from_output(
        self,
        model_output: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from a model output already computed at (x, t); see ``p_mean_variance``."""
        C = x.shape[1]
        if self.learn_sigma:
            # Nichol & Dhariwal 2021, eq. 15: log Sigma = v log beta_t + (1 - v) log beta~_t, v = (out+1)/2
            mean_output, var_values = torch.split(model_output, C, dim=1)
            min_log = _extract(self.posterior_log_variance_clipped, t, x)
            max_log = _extract(self.log_betas, t, x)
            frac = (var_values + 1) / 2
            model_log_variance = frac * max_log + (1 - frac) * min_log
            model_variance = torch.exp(model_log_variance)
        else:
            mean_output = model_output
            if self.model_var_type == "fixed_large":
                var_arr, log_var_arr = self.large_variance, self.large_log_variance
            else:
                var_arr, log_var_arr = self.posterior_variance, self.posterior_log_variance_clipped
            model_variance = _extract(var_arr, t, x) * torch.ones_like(x)
            model_log_variance = _extract(log_var_arr, t, x) * torch.ones_like(x)

        def process_xstart(x0: torch.Tensor) -> torch.Tensor:
            if denoised_fn is not None:
                x0 = denoised_fn(x0)
            return x0.clamp(-1, 1) if clip_denoised else x0

        if self.model_mean_type == "x0":
            pred_xstart = process_xstart(mean_output)
        else:
            pred_xstart = process_xstart(self.predict_xstart_from_eps(x, t, mean_output))
        # Ho et al. eq. 7 with x_0 replaced by its prediction (Nichol & Dhariwal 2021, eq. 13 and after)
        model_mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": model_mean,
            "variance": model_variance,
            "log_variance": model_log_variance,
            "pred_xstart": pred_xstart,
            "model_output": model_output,
        }

    def p_mean_variance(
        self,
        model: ModelFn,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mean, variance, log-variance of p_theta(x_{t-1} | x_t), the x_0 prediction, the raw model output.

        Returns a dict with keys ``mean``, ``variance``, ``log_variance``, ``pred_xstart``, ``model_output``.
        ``clip_denoised`` clamps the x_0 prediction to [-1, 1] before forming the mean (as ADM).
        """
        model_output = self.call_model(model, x, t)
        return self.p_mean_variance_from_output(
            model_output, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn
        )

    # ------------------------------------------------------------------ losses
    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
    ) -> torch.Tensor:
        """Per-sample VLB term in bits per dimension (Ho et al. eq. 5; Nichol & Dhariwal 2021, section 3.1).

        L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, and the discretised decoder NLL
        L_0 = -log p(x_0 | x_1) at t == 0, both averaged over the non-batch dimensions and divided by log 2.
        """
        true_mean, _, true_log_variance_clipped = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = normal_kl(true_mean, true_log_variance_clipped, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, decoder_nll, kl)

    def training_losses(
        self,
        model: ModelFn,
        x_start: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        ip_gamma: float = 0.0,
        ip_noise: torch.Tensor | None = None,
        detach_mean: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Per-sample training loss terms at (x_0, t, eps): a dict of (B,) tensors ``loss``, ``mse``, ``vb``.

        - ``mse``: mean over non-batch dims of (target - model mean output)^2, target eps or x_0 (Ho et al.
          eq. 14, L_simple).
        - ``vb``: the VLB term in bits (``vb_terms_bpd``). For "mse"/"rescaled_mse" with learned sigma it is
          computed with the mean output detached, so it trains only the variance (Nichol & Dhariwal 2021,
          section 3.1, hybrid loss), times num_timesteps / 1000 for "rescaled_mse". ``detach_mean=False``
          keeps the mean in it: the same values, but the gradient and Hessian of the true hybrid loss
          ``L_simple + λ L_vlb`` rather than of ADM's training surrogate (what an analysis of the loss surface
          differentiates; docs/curvature.md, "The objective"). For "kl"/"rescaled_kl" it
          is the raw VLB term (gradient through mean and variance). Zero when the loss holds no VLB term
          (fixed variance with an MSE loss).
        - ``loss``: mse + vb (MSE types), vb (kl) or vb * num_timesteps (rescaled_kl).

        Input perturbation (Ning et al. 2023, DDPM-IP): x_t = q_sample(x_0, t, eps + ip_gamma * xi) with
        ``ip_noise`` = xi given explicitly, while the target stays eps.
        """
        if noise is None:
            raise UsageError(
                "noise: training_losses needs the noise explicitly (draw it from a torch.Generator)"
            )
        if ip_gamma < 0:
            raise UsageError(f"ip_gamma: must be >= 0, got {ip_gamma}")
        if ip_gamma > 0:
            if ip_noise is None:
                raise UsageError("ip_noise: required when ip_gamma > 0 (draw it from a torch.Generator)")
            if ip_noise.shape != noise.shape:
                raise UsageError(
                    f"ip_noise: shape {tuple(ip_noise.shape)} differs from noise {tuple(noise.shape)}"
                )
            x_t = self.q_sample(x_start, t, noise + ip_gamma * ip_noise)
        else:
            x_t = self.q_sample(x_start, t, noise)

        model_output = self.call_model(model, x_t, t)
        C = x_t.shape[1]
        mean_output = model_output[:, :C] if self.learn_sigma else model_output
        target = x_start if self.model_mean_type == "x0" else noise
        mse = mean_flat((target - mean_output) ** 2)

        if self.loss_type in ("kl", "rescaled_kl"):
            vb = self.vb_terms_bpd(model_output, x_start, x_t, t, clip_denoised=False)
            loss = vb * self.num_timesteps if self.loss_type == "rescaled_kl" else vb
            return {"loss": loss, "mse": mse, "vb": vb}

        if self.learn_sigma:
            # Hybrid loss: the VLB trains only Sigma; the mean enters frozen (detached). detach_mean=False: the
            # true hybrid loss, its VLB term differentiated through the mean too (same value).
            vb_out = torch.cat([mean_output.detach(), model_output[:, C:]], dim=1) if detach_mean else model_output
            vb = self.vb_terms_bpd(vb_out, x_start, x_t, t, clip_denoised=False)
            if self.loss_type == "rescaled_mse":
                # ADM's rescale_learned_sigmas: T * L_t estimates L_vlb for a uniform t, weighted by
                # lambda = 0.001 (Nichol & Dhariwal 2021, eq. 16), hence the factor T / 1000.
                vb = vb * (self.num_timesteps / 1000.0)
            return {"loss": mse + vb, "mse": mse, "vb": vb}
        return {"loss": mse, "mse": mse, "vb": torch.zeros_like(mse)}


class SpacedDiffusion(GaussianDiffusion):
    """The diffusion over the kept timesteps ``use_timesteps`` of the schedule ``base_betas``.

    ``timestep_map[i]`` is the original timestep of respaced index i; the model is called with it.
    ``original_betas`` / ``original_num_steps`` keep the base schedule (so ``respace`` starts from it).
    The respaced betas are :func:`flatkit.diffusion.respace.respaced_betas` (Nichol & Dhariwal 2021, section 4).
    """

    def __init__(
        self, base_betas: np.ndarray | Sequence[float], use_timesteps: Iterable[int], **kwargs
    ) -> None:
        base = GaussianDiffusion(base_betas, **kwargs)
        keep = set(int(i) for i in use_timesteps)
        new_betas, timestep_map = respaced_betas(base.alphas_cumprod, keep)
        super().__init__(new_betas, **kwargs)
        self.original_betas = base.betas.copy()
        self.original_num_steps = base.num_timesteps
        self.timestep_map = timestep_map
        self.use_timesteps = keep
