"""The loss as a pure function of a parameter dict, over a frozen evaluation bank.

Every analysis (Hessian spectrum, trace, density, sharpness, landscapes) consumes the same small protocol,
:class:`LossObjective`:

- ``obj.params``: dict of detached copies of the analysed parameters (a subset chosen by name patterns);
- ``obj.n_batches`` and ``obj.batch_loss(params, i)``: micro-batch ``i``'s contribution, weighted so that the
  sum over ``i`` is the full loss (so HVPs and gradients can be summed over micro-batches);
- ``obj.loss(params=None)``: the full loss, accumulated in float64; ``obj.gradient(params=None)``: its gradient;
- ``obj.check_determinism()``: two evaluations agree bit for bit, else :class:`FlatkitError`;
- ``obj.num_params``, ``obj.device``, ``obj.dtype``;
- ``obj.config``: an :class:`ObjectiveConfig` (``kind`` ``"diffusion"`` or ``"function"``), stored in results;
- ``obj.set_precision(precision, channels_last)``: reduced-precision evaluation where supported.

Two classes implement it, sharing the loss / gradient / determinism code of :class:`BatchSumLoss`:

- :class:`Objective` builds it for a diffusion :class:`~flatkit.run.Run`: a frozen bank of ``(x0, t, ε)``
  drawn once from a seed, the loss ``L(θ) = 1/n Σ_j ℓ(θ; x0_j, t_j, ε_j)`` with ``ℓ`` the ε-MSE
  ``1/D ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖²``, the mean over the D pixel values as ADM computes it (Ho et al.
  2020, eq. 14, up to that constant) or ADM's hybrid ``L_simple + λ L_vlb`` (Nichol & Dhariwal 2021, eq. 16),
  evaluated with the model in eval mode through
  ``torch.func.functional_call``, so the caller's module is never touched (docs/curvature.md, "The
  objective"). It adds what only a bank of timesteps has: ``per_timestep``, ``restrict``, ``for_run``,
  ``set_batch_size`` (the out-of-memory retry halves the micro-batch).
- :class:`FunctionObjective` (from :meth:`Objective.from_function`) wraps any model and loss; the diffusion
  extras raise :class:`UsageError` on it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from flatkit.errors import FlatkitError, UsageError
from flatkit.memory import retry_micro_batches
from flatkit.patterns import select_names

ParamDict = dict[str, Tensor]

#: The analysed loss (``--loss``): "mse" the ε-MSE term alone; "hybrid" the true hybrid loss L_simple + λ L_vlb
#: (learned σ; its VLB term differentiated through the mean too, so values and curvature are of one function);
#: "hybrid-surrogate" ADM's training surrogate (the same values, the mean detached inside the VLB term, so
#: gradients and Hessians are those of another function); "auto" what the diffusion trains with, with the
#: true hybrid loss for a learned-σ MSE-type model and the VLB for a KL-type one.
LOSS_KINDS = ("auto", "mse", "hybrid", "hybrid-surrogate")


@dataclass
class ObjectiveConfig:
    """What defines an objective; stored in every result's ``meta`` (JSON-able)."""

    kind: str = "diffusion"  # "diffusion" | "function"
    data: str | None = None
    n: int = 0
    seed: int = 0
    timesteps: list[int] | None = None  # [lo, hi) range of t in the bank
    t_bins: list[int] | None = None  # bin edges the bank was stratified over (None = n strata)
    loss: str = "auto"
    loss_resolved: str = "mse"  # what was analysed: mse | hybrid | hybrid-surrogate | vlb (see LOSS_KINDS)
    include: list[str] | None = None
    exclude: list[str] | None = None
    batch_size: int = 64
    n_batches: int = 1
    num_params: int = 0
    num_params_total: int = 0
    param_names: list[str] = field(default_factory=list)
    bank_sha256: str | None = None
    data_fingerprint: str | None = None
    restricted_to: list[int] | None = None  # [lo, hi) after .restrict()
    dtype: str = "float32"
    device: str = "cpu"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------------------
# timesteps


def stratified_timesteps(n: int, lo: int, hi: int, generator: torch.Generator) -> Tensor:
    """n timesteps in [lo, hi): one uniform draw per equal-width stratum, then shuffled (int64)."""
    width = (hi - lo) / n
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    t = torch.floor(lo + (torch.arange(n, dtype=torch.float64) + u) * width).long().clamp_(lo, hi - 1)
    return t[torch.randperm(n, generator=generator)]


def binned_timesteps(n: int, edges: Sequence[int], generator: torch.Generator) -> Tensor:
    """n timesteps shared as evenly as possible among the bins ``[edges[b], edges[b+1])``, stratified in
    each."""
    n_bins = len(edges) - 1
    counts = [n // n_bins + (1 if b < n % n_bins else 0) for b in range(n_bins)]
    parts = [
        stratified_timesteps(c, int(edges[b]), int(edges[b + 1]), generator)
        for b, c in enumerate(counts)
        if c > 0
    ]
    t = torch.cat(parts)
    return t[torch.randperm(n, generator=generator)]


def bin_edges(bins: int | Sequence[int], lo: int, hi: int, option: str = "bins") -> list[int]:
    """Integer bin edges: ``bins`` equal-width bins over [lo, hi), or explicit increasing edges."""
    if isinstance(bins, int | np.integer):
        if bins < 1 or bins > hi - lo:
            raise UsageError(f"{option}: need 1 to {hi - lo} bins, got {bins}")
        return [int(round(lo + b * (hi - lo) / bins)) for b in range(bins + 1)]
    edges = [int(e) for e in bins]
    if (
        len(edges) < 2
        or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
        or edges[0] < lo
        or edges[-1] > hi
    ):
        raise UsageError(f"{option}: edges must increase within [{lo}, {hi}], got {edges}")
    return edges


def draw_bank(dataset: Any, spec: str, n: int, seed: int, lo: int, hi: int,
              t_bins: int | Sequence[int] | None) -> tuple[Tensor, Tensor, Tensor, list[int] | None]:
    """The frozen bank (x0, t, ε) and the t-bin edges: one explicit generator seeded with ``seed`` draws
    everything, in a fixed order: n distinct items, then t, then ε."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    index = torch.randperm(len(dataset), generator=g)[:n]
    x0 = torch.as_tensor(dataset.get(index), dtype=torch.float32)  # Dataset.get: a batch of the indices
    if x0.shape[0] != n:
        raise FlatkitError(f"--data {spec}: get() returned {x0.shape[0]} items for {n} indices")
    if t_bins is None:
        edges = None
        t = stratified_timesteps(n, lo, hi, g)
    else:
        edges = bin_edges(t_bins, lo, hi, "--t-bins")
        t = binned_timesteps(n, edges, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float32)
    return x0, t, eps, edges


# ----------------------------------------------------------------------------------------------------------
# the protocol, and the code its implementations share


@runtime_checkable
class LossObjective(Protocol):
    """What the analyses need of an objective (see the module docstring); :class:`Objective` and
    :class:`FunctionObjective` implement it, and so may any user class."""

    params: ParamDict
    config: ObjectiveConfig

    @property
    def n_batches(self) -> int: ...

    @property
    def num_params(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def batch_loss(self, params: ParamDict, i: int) -> Tensor: ...

    def loss(self, params: ParamDict | None = None) -> Tensor: ...

    def gradient(self, params: ParamDict | None = None) -> ParamDict: ...

    def check_determinism(self) -> Tensor: ...

    def set_precision(self, precision: str = "fp32", channels_last: bool = False) -> LossObjective: ...


def value_and_grad(fn: Callable[[ParamDict], Tensor], params: ParamDict) -> tuple[Tensor, ParamDict]:
    """``fn(params)`` (detached) and its gradient by ``torch.autograd.grad`` on leaf copies of the parameters.

    The same maths as ``torch.func.grad_and_value`` but measured 0.8x its time on a UNet (no functorch
    wrapping of every op); ``params`` is not modified and parameters ``fn`` does not use get zero gradients,
    as with ``torch.func.grad``."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        val = fn(leaves)
        grads = torch.autograd.grad(val, list(leaves.values()), allow_unused=True)
    out = {k: (g if g is not None else torch.zeros_like(v)) for (k, v), g in zip(leaves.items(), grads, strict=True)}
    return val.detach(), out


class BatchSumLoss:
    """The parts of :class:`LossObjective` that follow from ``params``, ``n_batches`` and ``batch_loss``: the full
    loss and gradient as float64 sums over micro-batches (with the out-of-memory retry), the determinism check,
    the parameter count, device and dtype. A subclass sets ``params`` and ``_dtype`` and defines ``n_batches``,
    ``batch_loss`` and ``_where_not_finite`` (the message when the loss is not finite)."""

    params: ParamDict
    _dtype: torch.dtype

    @property
    def n_batches(self) -> int:
        raise NotImplementedError

    def batch_loss(self, params: ParamDict, i: int) -> Tensor:
        raise NotImplementedError

    def _where_not_finite(self, params: ParamDict, total: Tensor) -> str:
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        """N, the number of analysed scalar parameters."""
        return sum(p.numel() for p in self.params.values())

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def loss(self, params: ParamDict | None = None) -> Tensor:
        """The full loss ``Σ_i batch_loss(params, i)``, accumulated in float64 over micro-batches (0-d float64
        tensor)."""
        p = self.params if params is None else params

        def run() -> Tensor:
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            with torch.no_grad():
                for i in range(self.n_batches):
                    total = total + self.batch_loss(p, i).to(torch.float64)
            return total

        total = retry_micro_batches(self, run, what="loss")
        if not torch.isfinite(total):
            from flatkit.finite import warn_non_finite

            if warn_non_finite(self) is None:  # non-finite weights: the loss is recorded as null
                raise FlatkitError(self._where_not_finite(p, total))
        return total

    def gradient(self, params: ParamDict | None = None) -> ParamDict:
        """∇L as a parameter dict (summed over micro-batches in float64, returned in the model dtype)."""
        p = self.params if params is None else params

        def run() -> ParamDict:
            acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in p.items()}
            for i in range(self.n_batches):
                _, g = value_and_grad(lambda q, i=i: self.batch_loss(q, i), p)
                for k in acc:
                    acc[k] += g[k].to(torch.float64)
            return acc

        acc = retry_micro_batches(self, run, what="gradient")
        return {k: acc[k].to(p[k].dtype) for k in acc}

    def check_determinism(self) -> Tensor:
        """Evaluate the loss twice; they must agree bit for bit. Returns the loss."""
        a = self.loss()
        b = self.loss()
        if not (torch.equal(a, b) or bool(torch.isnan(a) & torch.isnan(b))):
            raise FlatkitError(
                f"objective is not deterministic: two evaluations gave {a.item()!r} and {b.item()!r} "
                "(nondeterministic kernels? set torch.use_deterministic_algorithms(True) or use the CPU)"
            )
        return a


# ----------------------------------------------------------------------------------------------------------
# the objective


class Objective(BatchSumLoss):
    """A diffusion model's training loss over a frozen bank of ``(x0, t, ε)``, as a pure function of
    parameters.

    Parameters
    ----------
    run: a :class:`flatkit.run.Run` (``.model``, ``.diffusion``, ``.config``).
    data: data spec for x0 (default: the one recorded in the run's config), or a Dataset object.
    n: bank size; ``n`` distinct items of the dataset drawn with ``seed``.
    seed: seeds the one generator that draws the items, t and ε.
    timesteps: ``(lo, hi)`` to keep t in ``[lo, hi)`` (default the whole schedule ``[0, T)``).
    loss: ``"mse"`` (ε-MSE), ``"hybrid"`` (L_simple + λ L_vlb for learned-σ models, the VLB term a function of
        the mean too: values and curvature of one function), ``"hybrid-surrogate"`` (as ADM trains: the same
        values, the mean detached inside the VLB term, so HVPs differentiate a surrogate) or ``"auto"`` (the
        diffusion's own loss: the true hybrid when σ is learned, the VLB for ``use_kl``, else ε-MSE).
    include, exclude: parameter-name patterns (glob on the whole name, or regex searched in it).
    batch_size: micro-batch size; results do not depend on it beyond float rounding.
    t_bins: number of bins or bin edges: the bank gets an equal share of t in each bin (default one stratum
        per sample over the range).
    """

    def __init__(
        self,
        run: Any,
        data: Any = None,
        n: int = 256,
        seed: int = 0,
        timesteps: tuple[int, int] | None = None,
        loss: str = "auto",
        include: Sequence[str] | str | None = None,
        exclude: Sequence[str] | str | None = None,
        batch_size: int = 64,
        t_bins: int | Sequence[int] | None = None,
    ) -> None:
        module = run.model
        diffusion = run.diffusion
        if loss not in LOSS_KINDS:
            raise UsageError(f"--loss: {loss!r} is not one of {', '.join(LOSS_KINDS)}")
        if n < 1:
            raise UsageError(f"--n-eval: must be at least 1, got {n}")
        if batch_size < 1:
            raise UsageError(f"--batch-size: must be at least 1, got {batch_size}")
        T = int(diffusion.num_timesteps)
        lo, hi = (0, T) if timesteps is None else (int(timesteps[0]), int(timesteps[1]))
        if not 0 <= lo < hi <= T:
            raise UsageError(f"--timesteps: need 0 <= lo < hi <= {T}, got [{lo}, {hi})")
        learn_sigma = bool(getattr(diffusion, "learn_sigma", False))
        if loss.startswith("hybrid") and not learn_sigma:
            raise UsageError(f"--loss: {loss} needs a model that learns sigma (this one does not)")
        if loss == "mse":
            resolved = "mse"
        else:  # what the diffusion trains with: its "loss" term
            kl = str(getattr(diffusion, "loss_type", "mse")).endswith("kl")
            resolved = "vlb" if kl else ("hybrid" if learn_sigma else "mse")
            if resolved == "hybrid" and loss == "hybrid-surrogate":
                resolved = "hybrid-surrogate"

        if data is not None and not isinstance(data, str):  # a Dataset object (len() and .get(i))
            dataset, spec = data, str(getattr(data, "spec", type(data).__name__))
        else:
            spec = data if data is not None else getattr(run.config, "data", None)
            if spec is None:
                raise UsageError("--data: the checkpoint records no data spec; pass one")
            from flatkit.data import load_dataset

            dataset = load_dataset(spec)
        if hasattr(dataset, "sample_shape"):  # data and model fit; the bank (x0, t, ε) is drawn on the CPU
            from flatkit import budget
            from flatkit.data.fit import check_fits, model_sample_shape

            check_fits(dataset.sample_shape, model_sample_shape(run), spec, getattr(run, "path", None))
            budget.check_bank(n, dataset.sample_shape)
        if n > len(dataset):
            raise UsageError(f"--n-eval: {n} exceeds the {len(dataset)} items of {spec}")

        x0, t, eps, edges = draw_bank(dataset, spec, n, seed, lo, hi, t_bins)
        # what reseeded() redraws the bank from (--repeats): the very items this bank was drawn from
        self._dataset, self._t_bins_arg, self._full_n = dataset, t_bins, n

        self._setup_params(module, include, exclude)
        self.source_path, self.source_weights = getattr(run, "path", None), getattr(run, "weights", None)
        device = next(iter(self.params.values())).device
        self._diffusion = diffusion
        self._x0 = x0.to(device)
        self._t = t.to(device)
        self._eps = eps.to(device)
        self._loss_key = "mse" if loss == "mse" else "loss"
        self._detach_mean = resolved == "hybrid-surrogate"  # only ADM's training surrogate freezes the mean
        self.batch_size = int(batch_size)
        self.precision = "fp32"  # see set_precision
        self.channels_last = False
        self.num_timesteps = T
        self.t_range = (lo, hi)
        self.config = ObjectiveConfig(
            kind="diffusion",
            data=spec,
            n=n,
            seed=int(seed),
            timesteps=[lo, hi],
            t_bins=edges,
            loss=loss,
            loss_resolved=resolved,
            include=None if include is None else list([include] if isinstance(include, str) else include),
            exclude=None if exclude is None else list([exclude] if isinstance(exclude, str) else exclude),
            batch_size=int(batch_size),
            n_batches=self.n_batches,
            num_params=self.num_params,
            num_params_total=self._num_params_total,
            param_names=list(self.params),
            bank_sha256=self._bank_sha256(),
            data_fingerprint=(dataset.fingerprint() if hasattr(dataset, "fingerprint") else None),
            dtype=str(self._dtype).replace("torch.", ""),
            device=str(device),
        )

    # --- construction helpers -----------------------------------------------------------------------------

    def _setup_params(self, module: torch.nn.Module, include: Any, exclude: Any) -> None:
        """Detached copies of the parameters; an eval-mode shell of the module sharing no training flag."""
        named = dict(module.named_parameters())
        if not named:
            raise UsageError("model: it has no parameters")
        names = select_names(list(named), include, exclude)
        self.params: ParamDict = {k: named[k].detach().clone() for k in names}
        self._fixed: ParamDict = {k: p.detach().clone() for k, p in named.items() if k not in self.params}
        self._buffers: ParamDict = {k: b.detach().clone() for k, b in module.named_buffers()}
        # A structural copy whose tensors are shared with the original (memo), so .eval() flips only the
        # copy's flags: the caller's module keeps its mode and its values.
        memo = {id(t): t for t in list(module.parameters()) + list(module.buffers())}
        self._module = copy.deepcopy(module, memo).eval()
        self._num_params_total = sum(p.numel() for p in named.values())
        self._dtype = next(iter(self.params.values())).dtype
        # functional_call's untying pass (a walk over every submodule per call) is only needed when one
        # tensor is registered under several names; the state dict passed below names every other one.
        n_all = len(list(module.named_parameters(remove_duplicate=False))) + len(
            list(module.named_buffers(remove_duplicate=False)))
        self._tied = n_all != len(named) + len(self._buffers)

    def _bank_sha256(self) -> str:
        h = hashlib.sha256()
        for a in (self._x0, self._t, self._eps):
            h.update(a.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _subset(self, keep: Tensor, restricted_to: list[int] | None) -> Objective:
        """A new objective over the bank entries ``keep`` (same parameters, same model)."""
        if int(keep.sum()) == 0:
            raise UsageError(f"--per-timestep: no bank entry has t in {restricted_to}; use a larger --n-eval")
        new = copy.copy(self)
        new._x0, new._t, new._eps = self._x0[keep], self._t[keep], self._eps[keep]
        new.config = dataclasses.replace(self.config, n=int(keep.sum()), restricted_to=restricted_to)
        new.config.n_batches = new.n_batches
        new.config.bank_sha256 = new._bank_sha256()
        return new

    # --- the protocol -------------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return int(self._t.shape[0])

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def set_batch_size(self, batch_size: int) -> None:
        """Change the micro-batch size (what an out-of-memory retry does; ``config.batch_size`` keeps the size
        asked for). The loss is the same sum over the same bank, up to float rounding."""
        if int(batch_size) < 1:
            raise UsageError(f"--batch-size: must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def set_precision(self, precision: str = "fp32", channels_last: bool = False) -> Objective:
        """Evaluate the model under autocast (``"bf16"`` / ``"fp16"``; ``"fp32"``: as it is) and, on CUDA, with
        4-D inputs and weights in channels-last memory format. The model output is cast back to the parameters'
        dtype and the losses are still accumulated in float64. Reduced precision is for loss values
        (landscapes, perturbation); curvature (HVPs, Lanczos) degrades under it. Returns ``self``."""
        from flatkit.precision import check_precision

        check_precision(precision, self.device)
        self.precision = precision
        self.channels_last = bool(channels_last)
        return self

    def _slice(self, i: int) -> slice:
        if not 0 <= i < self.n_batches:
            raise IndexError(f"micro-batch {i} out of range({self.n_batches})")
        return slice(i * self.batch_size, min(self.n, (i + 1) * self.batch_size))

    def model_fn(self, params: ParamDict | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """``model(x, t)`` evaluated at ``params`` (the analysed ones; the rest fixed), eval mode."""
        p = self.params if params is None else params
        state = {**self._fixed, **self._buffers, **p}
        tied = getattr(self, "_tied", True)
        precision = getattr(self, "precision", "fp32")
        channels_last = getattr(self, "channels_last", False) and self.device.type == "cuda"
        if precision == "fp32" and not channels_last:
            return lambda x, t: torch.func.functional_call(self._module, state, (x, t), tie_weights=tied)
        from flatkit.precision import autocast, to_channels_last

        if channels_last:
            state = {k: to_channels_last(v) for k, v in state.items()}

        def call(x: Tensor, t: Tensor) -> Tensor:
            with autocast(precision, x.device):
                out = torch.func.functional_call(
                    self._module, state, (to_channels_last(x) if channels_last else x, t), tie_weights=tied)
            return out.to(self._dtype).contiguous()

        return call

    def per_sample_losses(self, params: ParamDict | None, i: int) -> Tensor:
        """ℓ_j for the samples of micro-batch ``i`` (ε-MSE, hybrid or its surrogate, per the config)."""
        s = self._slice(i)
        terms = self._diffusion.training_losses(self.model_fn(params), self._x0[s], self._t[s], self._eps[s],
                                                detach_mean=getattr(self, "_detach_mean", False))
        return terms[self._loss_key]

    def batch_loss(self, params: ParamDict, i: int) -> Tensor:
        """Micro-batch ``i``'s share of the mean loss, ``Σ_{j∈B_i} ℓ_j / n`` (0-d, model dtype)."""
        return self.per_sample_losses(params, i).sum() / self.n

    def _where_not_finite(self, params: ParamDict, total: Tensor) -> str:
        """Name the t-bin (of 10 over the schedule) where the first non-finite per-sample loss appears."""
        what = "nan" if torch.isnan(total) else "inf"
        edges = bin_edges(min(10, self.num_timesteps), 0, self.num_timesteps)
        with torch.no_grad():
            for i in range(self.n_batches):
                ls = self.per_sample_losses(params, i)
                bad = ~torch.isfinite(ls)
                if bad.any():
                    t = int(self._t[self._slice(i)][bad][0])
                    b = int(np.searchsorted(edges, t, side="right") - 1)
                    return (
                        f"loss is {what} at t={t}, in t-bin {b} [{edges[b]}, {edges[b + 1]}) "
                        f"of {len(edges) - 1} (micro-batch {i})"
                    )
        return f"loss is {what} (accumulated over micro-batches)"

    # --- diffusion-specific ------------------------------------------------------------------------------

    @property
    def timesteps(self) -> Tensor:
        """The bank's t (int64)."""
        return self._t

    def per_timestep(
        self, params: ParamDict | None = None, bins: int | Sequence[int] = 10
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean loss per t-bin: ``(means, edges, counts)``; a bin without bank entries has mean NaN.

        Non-finite per-sample losses are kept (they show as NaN / inf in their bin), not raised.
        """
        edges = np.asarray(bin_edges(bins, 0, self.num_timesteps, "--per-timestep"))
        p = self.params if params is None else params

        def run() -> Tensor:
            with torch.no_grad():
                return torch.cat([self.per_sample_losses(p, i).to(torch.float64) for i in range(self.n_batches)])

        ls = retry_micro_batches(self, run, what="per-timestep loss")
        which = np.searchsorted(edges, self._t.cpu().numpy(), side="right") - 1
        ls_np = ls.cpu().numpy()
        sums = np.bincount(which, weights=ls_np, minlength=len(edges) - 1)[: len(edges) - 1]
        counts = np.bincount(which, minlength=len(edges) - 1)[: len(edges) - 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return means, edges, counts

    def restrict(self, bins: tuple[int, int] | Sequence[int] | int) -> Objective | list[Objective]:
        """Objective(s) over the bank entries with t in a range.

        ``restrict((lo, hi))`` gives one objective over ``t ∈ [lo, hi)``; ``restrict(B)`` (an int) or
        ``restrict([e0, e1, ..., eB])`` gives a list, one per bin.
        """
        if isinstance(bins, int | np.integer):
            edges = bin_edges(bins, 0, self.num_timesteps, "--per-timestep")
            return [self.restrict((a, b)) for a, b in zip(edges, edges[1:], strict=False)]
        bins = [int(b) for b in bins]
        if len(bins) > 2:
            edges = bin_edges(bins, 0, self.num_timesteps, "--per-timestep")
            return [self.restrict((a, b)) for a, b in zip(edges, edges[1:], strict=False)]
        lo, hi = bins
        if not 0 <= lo < hi <= self.num_timesteps:
            raise UsageError(f"--per-timestep: need 0 <= lo < hi <= {self.num_timesteps}, got [{lo}, {hi})")
        keep = (self._t >= lo) & (self._t < hi)
        return self._subset(keep, [lo, hi])

    def reseeded(self, seed: int, like: Objective | None = None) -> Objective:
        """The same objective (model, parameters, loss, data, n, t range and bins, micro-batch, precision) on the
        bank drawn with another ``seed``: exactly the bank ``Objective(run, ..., seed=seed)`` draws (``--repeats``
        redraws the bank this way; a restricted objective is restricted again to the same t range). ``like``: an
        objective already reseeded with this seed on the same data, whose bank is taken instead of drawn again."""
        if (like is not None and like.config.seed == int(seed) and like.config.data == self.config.data
                and like._full_n == self._full_n and like.t_range == self.t_range
                and like._t_bins_arg == self._t_bins_arg and like.config.restricted_to is None):
            x0, t, eps = like._x0, like._t, like._eps
        else:
            x0, t, eps, _ = draw_bank(self._dataset, str(self.config.data), self._full_n, seed, *self.t_range,
                                      self._t_bins_arg)
        new = copy.copy(self)
        dev = self._x0.device
        new._x0, new._t, new._eps = x0.to(dev), t.to(dev), eps.to(dev)
        new.config = dataclasses.replace(self.config, seed=int(seed), n=int(t.shape[0]), restricted_to=None)
        new.config.n_batches = new.n_batches
        new.config.bank_sha256 = new._bank_sha256()
        if self.config.restricted_to is not None:
            return new.restrict(tuple(self.config.restricted_to))
        return new

    def for_run(self, run: Any) -> Objective:
        """The same bank, parameter selection and loss for another run (``--compare``)."""
        new = copy.copy(self)
        new._setup_params(run.model, self.config.include, self.config.exclude)
        if list(new.params) != list(self.params) or any(
            new.params[k].shape != self.params[k].shape for k in self.params
        ):
            raise UsageError("--compare: the checkpoints' analysed parameters differ in names or shapes")
        new._diffusion = run.diffusion
        if int(run.diffusion.num_timesteps) != self.num_timesteps:
            raise UsageError("--compare: the checkpoints' diffusions have different numbers of timesteps")
        return new

    # --- any model and loss --------------------------------------------------------------------------------

    @staticmethod
    def from_function(
        fn: Callable[..., Tensor], params: ParamDict, batches: Sequence[Any] | None = None
    ) -> FunctionObjective:
        """Wrap ``fn(params) -> scalar`` (or ``fn(params, batch)`` summed over ``batches``) as an objective.

        ``fn`` must be a pure function of the parameter dict (use ``torch.func.functional_call`` for a
        module); with ``batches`` the full loss is the SUM of ``fn(params, batch)`` over the batches.
        """
        return FunctionObjective(fn, params, batches)


class FunctionObjective(BatchSumLoss):
    """An objective defined by a user function (see :meth:`Objective.from_function`).

    It implements :class:`LossObjective` (no micro-batch knob: the batches are the user's); the diffusion
    extras of :class:`Objective` (``per_timestep``, ``restrict``, ``for_run``) raise :class:`UsageError`.
    """

    def __init__(
        self, fn: Callable[..., Tensor], params: ParamDict, batches: Sequence[Any] | None = None
    ) -> None:
        if not isinstance(params, dict) or not params:
            raise UsageError("params: need a non-empty dict of tensors")
        self._fn = fn
        self._batches = None if batches is None else list(batches)
        if self._batches is not None and not self._batches:
            raise UsageError("batches: need at least one batch")
        self.params = {k: torch.as_tensor(v).detach().clone() for k, v in params.items()}
        self._dtype = next(iter(self.params.values())).dtype
        self.config = ObjectiveConfig(
            kind="function",
            n=len(self._batches or [None]),
            n_batches=self.n_batches,
            num_params=self.num_params,
            num_params_total=self.num_params,
            param_names=list(self.params),
            loss="function",
            loss_resolved="function",
            batch_size=0,
            dtype=str(self._dtype).replace("torch.", ""),
            device=str(self.device),
        )

    @property
    def n(self) -> int:
        return len(self._batches) if self._batches is not None else 1

    @property
    def n_batches(self) -> int:
        return self.n

    def batch_loss(self, params: ParamDict, i: int) -> Tensor:
        if not 0 <= i < self.n_batches:
            raise IndexError(f"micro-batch {i} out of range({self.n_batches})")
        out = self._fn(params) if self._batches is None else self._fn(params, self._batches[i])
        out = torch.as_tensor(out)
        if out.numel() != 1:
            raise UsageError(f"fn: must return a scalar, got shape {tuple(out.shape)}")
        return out.reshape(())

    def _where_not_finite(self, params: ParamDict, total: Tensor) -> str:
        what = "nan" if torch.isnan(total) else "inf"
        with torch.no_grad():
            for i in range(self.n_batches):
                if not torch.isfinite(self.batch_loss(params, i)):
                    return f"loss is {what} in batch {i}"
        return f"loss is {what}"

    def set_precision(self, precision: str = "fp32", channels_last: bool = False) -> FunctionObjective:
        if precision != "fp32" or channels_last:
            raise UsageError("--precision/--channels-last: only for a diffusion objective (a function objective "
                             "runs fn as given: use torch.autocast inside it)")
        return self

    def per_timestep(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError("--per-timestep: only a diffusion Objective has timesteps")

    def restrict(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError("--per-timestep: only a diffusion Objective has timesteps")

    def for_run(self, run: Any) -> Any:
        raise UsageError("--compare: only a diffusion Objective can be rebuilt for another run")
