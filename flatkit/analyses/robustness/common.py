"""Shared pieces of the robustness analyses: reference data, paired drift, the (x0, t, ε) bank, weights
lists."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from flatkit.errors import UsageError
from flatkit.results import Result


def data_spec(run: Any, data: str | None) -> str:
    """``--data`` or the spec recorded in the checkpoint; a usage error when neither exists."""
    spec = data if data is not None else getattr(run.config, "data", None)
    if spec is None:
        raise UsageError("data: the checkpoint records no data spec; pass one")
    return spec


def reference_samples(spec: str, n: int, seed: int, shape: Sequence[int] | None = None,
                      ckpt: Any = None) -> torch.Tensor:
    """``n`` distinct data items (float32, images in [-1, 1]) drawn with ``seed``; checked against
    ``shape``, what the model of ``ckpt`` takes (:func:`flatkit.data.fit.check_fits`)."""
    from flatkit.data import load_dataset
    from flatkit.data.fit import check_fits

    ds = load_dataset(spec)
    if n > len(ds):
        n = len(ds)
    check_fits(ds.sample_shape, shape, spec, ckpt)
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(ds), generator=g)[:n]
    return ds.get(idx.numpy())


def paired_drift(x: torch.Tensor, y: torch.Tensor) -> dict[str, float | None]:
    """Drift between paired samples: MSE = mean (x − y)² over samples and pixels (on the [-1, 1] scale), and
    PSNR = 10 log10(peak² / MSE) with peak = 2, the range of [-1, 1] (the same as on [0, 1] images with
    peak 1);
    PSNR is None (JSON null) for MSE = 0. Per-sample MSEs give ``mse_std``."""
    if x.shape != y.shape:
        raise UsageError(f"samples: paired sets differ in shape {tuple(x.shape)} vs {tuple(y.shape)}")
    d = (x.to(torch.float64) - y.to(torch.float64)).reshape(x.shape[0], -1)
    per = (d**2).mean(dim=1)
    mse = float(per.mean())
    psnr = 10.0 * math.log10(4.0 / mse) if mse > 0 else None
    return {"mse": mse, "psnr": psnr, "mse_std": float(per.std()) if per.numel() > 1 else 0.0}


def diffusion_bank(
    spec: str, n: int, seed: int, num_timesteps: int, shape: Sequence[int] | None = None, ckpt: Any = None,
    run: Any = None, bank: str = "train",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The frozen bank (x0, t, ε) of :class:`flatkit.objective.Objective` with the same (spec, n, seed).

    Drawn in the Objective's order from one generator: items (randperm), t (stratified over [0, T)), then
    ε, so
    the unperturbed loss on it equals ``Objective(run, data=spec, n=n, seed=seed).loss()`` (tested). With ``run``,
    ``bank`` picks a side of its held-out split (:func:`flatkit.data.holdout.bank_data`).
    """
    from flatkit import budget
    from flatkit.data import load_dataset
    from flatkit.data.fit import check_fits
    from flatkit.data.holdout import bank_data
    from flatkit.objective import stratified_timesteps

    ds = bank_data(run, spec, bank) if run is not None else spec
    ds = load_dataset(ds) if isinstance(ds, str) else ds
    if n > len(ds):
        raise UsageError(f"n_eval {n}: exceeds the {len(ds)} items of {spec}")
    check_fits(ds.sample_shape, shape, spec, ckpt)
    budget.check_bank(n, ds.sample_shape)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    index = torch.randperm(len(ds), generator=g)[:n]
    x0 = torch.as_tensor(ds.get(index.numpy()), dtype=torch.float32)
    t = stratified_timesteps(n, 0, int(num_timesteps), g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float32)
    return x0, t, eps


def model_list(run: Any, compare: Sequence[Any] = ()) -> list:
    """``run`` (a Run, or a list of them) followed by ``compare``: the models of one result, in order."""
    runs = list(run) if isinstance(run, (list, tuple)) else [run]
    runs += list(compare or ())
    if not runs:
        raise UsageError("run: at least one model is needed")
    return runs


def model_labels(runs: Sequence[Any], labels: Sequence[str] | None = None) -> list[str]:
    """``labels`` as given (one per model), else the one labelling rule of :mod:`flatkit.labels`."""
    from flatkit.labels import default_label, unique

    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != len(runs):
            raise UsageError(f"labels: {len(labels)} label(s) for {len(runs)} model(s)")
        return unique(labels)
    return unique([default_label(getattr(r, "path", None), getattr(r, "weights", None)) for r in runs])


def run_label(run: Any) -> str:
    """``NAME:WEIGHTS`` of one run (:func:`flatkit.labels.default_label`)."""
    from flatkit.labels import default_label

    return default_label(getattr(run, "path", None), getattr(run, "weights", None))


def robustness_meta(s: Any, runs: Sequence[Any], labels: Sequence[str], device: Any, t0: float,
                    specs: Sequence[str], **extra: Any) -> dict:
    """``meta`` of a sampling analysis: settings, every model (checkpoint, sha256, weights, step, label), the
    data of each model and its fingerprint, the respacing, device and wall time."""
    import time

    from flatkit.results import make_meta
    from flatkit.sampling import data_fingerprint, respacing_spec

    return make_meta(config=s, runs=runs, labels=labels, device=device, wall_time_s=time.perf_counter() - t0,
                     respacing=respacing_spec(int(runs[0].diffusion.original_num_steps), s), data=list(specs),
                     data_fingerprint=[data_fingerprint(sp) for sp in specs], **extra)


def model_device(run: Any) -> torch.device:
    try:
        return next(run.model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


class PreviewsResult(Result):
    """Base of the sampling results whose ``previews`` (uint8 NHWC sample grids) go to the ``.npz`` only; the
    subclass declares the ``previews`` field."""

    previews: Any

    def _fields(self) -> dict[str, Any]:
        out = super()._fields()
        out.pop("previews", None)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.previews is None else {"previews": np.asarray(self.previews)}


def start_models(run: Any, compare: Sequence[Any], labels: Sequence[str] | None, settings: Any
                 ) -> tuple[list, list[str], Any]:
    """The models of one sampling analysis (:func:`model_list`), their labels (:func:`model_labels`) and the
    sampler configuration of ``settings``."""
    from flatkit.sampling import sampler_config

    runs = model_list(run, compare)
    return runs, model_labels(runs, labels), sampler_config(settings)


def check_sample_shape(run: Any, shape: Sequence[int], label: str) -> None:
    """A usage error when ``run`` draws samples of another shape than the first model's ``shape``."""
    from flatkit.sampling import sample_shape

    if sample_shape(run.config.model) != shape:
        raise UsageError(f"run {label}: sample shape differs from the first model's")


def append_model(res: Any, entry: dict[str, Any], keys: Sequence[str], previews: list | None = None,
                 rows: Sequence[np.ndarray] = ()) -> None:
    """Append one model's ``entry[k]`` to the per-model list ``res.k`` for every key, and its preview ``rows``
    (if any) stacked to ``previews``."""
    for k in keys:
        getattr(res, k).append(entry[k])
    if rows:
        assert previews is not None
        previews.append(np.stack(rows))


def stack_previews(previews: Sequence[np.ndarray]) -> np.ndarray | None:
    """The models' preview grids as one (M, ...) array, None when no model had any."""
    return np.stack(previews) if previews else None
