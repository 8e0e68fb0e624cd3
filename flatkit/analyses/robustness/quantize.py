"""Post-training weight quantization as a weight perturbation (the paper's second benefit).

Symmetric round-to-nearest fake quantization of the weights of convolution and linear layers (biases, norms
and
embeddings stay in full precision): with b bits, q_max = 2^{b−1} − 1, a step

    Δ = max |w| / q_max   over the tensor (per-tensor) or over each output channel (per-channel, axis 0),

and ŵ = Δ · clamp(round(w / Δ), −q_max, q_max). The error is at most Δ/2 per weight and roughly halves with
each added bit. ŵ = w + δ is a weight perturbation δ, so a flat minimum should lose little (Theorem 2 via
Corollary 1). All arithmetic in float64, cast back to the weight's dtype. The caller's model is never
modified.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from flatkit.analyses.robustness.common import (
    PreviewsResult,
    append_model,
    check_sample_shape,
    data_spec,
    paired_drift,
    reference_samples,
    robustness_meta,
    stack_previews,
    start_models,
)
from flatkit.errors import UsageError
from flatkit.patterns import check_patterns, matches_any
from flatkit.settings import QuantizeSettings, takes

GRANULARITIES = ("per-tensor", "per-channel")
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
MIN_BITS, MAX_BITS = 2, 16


def check_bits(bits: int) -> int:
    if int(bits) != bits or not MIN_BITS <= bits <= MAX_BITS:
        raise UsageError(f"bits {bits}: must be an integer in {MIN_BITS}..{MAX_BITS}")
    return int(bits)


def quant_step(w: torch.Tensor, bits: int, granularity: str = "per-tensor") -> torch.Tensor:
    """Δ = max|w| / (2^{b−1} − 1), a 0-d tensor (per-tensor) or shaped (C_out, 1, ...) (per-channel),
    float64."""
    check_bits(bits)
    if granularity not in GRANULARITIES:
        raise UsageError(f"granularity {granularity}: expected one of {', '.join(GRANULARITIES)}")
    qmax = 2 ** (bits - 1) - 1
    a = w.detach().to(torch.float64).abs()
    if granularity == "per-tensor" or a.ndim < 2:
        return a.max() / qmax
    return a.reshape(a.shape[0], -1).max(dim=1).values.reshape(-1, *([1] * (a.ndim - 1))) / qmax


def quantize_tensor(w: torch.Tensor, bits: int, granularity: str = "per-tensor") -> torch.Tensor:
    """ŵ = Δ · clamp(round(w/Δ), −q_max, q_max) (round half to even); a zero range stays zero."""
    delta = quant_step(w, bits, granularity)
    qmax = 2 ** (bits - 1) - 1
    w64 = w.detach().to(torch.float64)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    q = torch.clamp(torch.round(w64 / safe), -qmax, qmax) * safe
    q = torch.where(delta > 0, q, torch.zeros_like(q))
    return q.to(w.dtype)


def quantizable_layers(
    model: nn.Module, skip: Sequence[str] = (), skip_first_last: bool = False
) -> list[str]:
    """Names of the conv / linear modules whose weights get quantized (module order), after the skips.

    ``skip``: glob (whole name) or regex (searched) patterns on module names; a pattern that matches no
    quantizable layer is a usage error (a typo would silently quantize everything). ``skip_first_last``:
    keep the
    first and the last such layer in full precision (a common post-training-quantization choice).
    """
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, QUANTIZABLE) and getattr(m, "weight", None) is not None
    ]
    if not names:
        raise UsageError("model: it has no convolution or linear layer to quantize")
    check_patterns("skip", skip, names, "convolution or linear layer")
    kept = [n for n in names if not matches_any(skip, n)]
    if skip_first_last and len(names) >= 2:
        kept = [n for n in kept if n not in (names[0], names[-1])]
    if not kept:
        raise UsageError("skip: no layer left to quantize")
    return kept


@dataclass
class QuantizedWeights:
    """The quantized state dict and the weight error statistics of one bit width."""

    state_dict: dict[str, torch.Tensor]
    layers: list[str]
    rel_error: float  # ‖Ŵ − W‖ / ‖W‖ over the quantized tensors
    max_abs_error: float
    max_error_over_half_step: float  # max |ŵ − w| / (Δ/2), ≤ 1 by construction
    mse: float  # mean (ŵ − w)² over the quantized weights
    per_layer_rel_error: dict[str, float] = field(default_factory=dict)


def quantize_state_dict(
    model: nn.Module,
    bits: int,
    granularity: str = "per-tensor",
    skip: Sequence[str] = (),
    skip_first_last: bool = False,
) -> QuantizedWeights:
    """A new state dict with quantized conv / linear weights (the model is not touched)."""
    check_bits(bits)
    layers = quantizable_layers(model, skip, skip_first_last)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    num = den = sq = 0.0
    count = 0
    max_abs = 0.0
    max_ratio = 0.0
    per_layer = {}
    for name in layers:
        key = f"{name}.weight"
        w = sd[key]
        wq = quantize_tensor(w, bits, granularity)
        delta = quant_step(w, bits, granularity)
        err = wq.to(torch.float64) - w.to(torch.float64)
        e2 = float((err**2).sum())
        w2 = float((w.to(torch.float64) ** 2).sum())
        num += e2
        den += w2
        sq += e2
        count += w.numel()
        max_abs = max(max_abs, float(err.abs().max()))
        half = torch.where(delta > 0, delta / 2, torch.ones_like(delta))
        max_ratio = max(max_ratio, float((err.abs() / half).max()))
        per_layer[name] = float(np.sqrt(e2 / w2)) if w2 > 0 else 0.0
        sd[key] = wq
    return QuantizedWeights(
        state_dict=sd,
        layers=layers,
        rel_error=float(np.sqrt(num / den)) if den > 0 else 0.0,
        max_abs_error=max_abs,
        max_error_over_half_step=max_ratio,
        mse=sq / max(count, 1),
        per_layer_rel_error=per_layer,
    )


def quantized_model(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` holding ``state_dict`` (eval mode); the original is untouched."""
    m = copy.deepcopy(model)
    m.load_state_dict(state_dict, strict=True)
    return m.eval()


@dataclass
class QuantizeResult(PreviewsResult):
    """``quantize.json``: for each model m (``labels[m]``) one entry per bit width b (``loss[m][b]`` …, aligned
    with ``bits``) and its full-precision reference (``loss_fp[m]``, ``distance_fp[m]``, ``fd_pix_fp[m]``)."""

    name = "quantize"
    bits: list = field(default_factory=list)
    granularity: str = "per-tensor"
    labels: list = field(default_factory=list)
    data: str | None = None  # the bank's and the reference's data spec (shared by every model)
    layers: list = field(default_factory=list)  # layers[m]: the quantized layers
    skipped: list = field(default_factory=list)
    weight_rel_error: list = field(default_factory=list)
    weight_max_abs_error: list = field(default_factory=list)
    weight_max_error_over_half_step: list = field(default_factory=list)
    weight_mse: list = field(default_factory=list)
    loss_fp: list = field(default_factory=list)  # L(θ) on the shared bank
    loss: list = field(default_factory=list)
    loss_change: list = field(default_factory=list)
    drift_mse: list = field(default_factory=list)
    drift_psnr: list = field(default_factory=list)
    distance_fp: list = field(default_factory=list)
    distance: list = field(default_factory=list)
    fd_pix_fp: list = field(default_factory=list)
    fd_pix: list = field(default_factory=list)
    distance_name: str = ""
    saved: list = field(default_factory=list)  # saved[m]: the quantized checkpoints written (--save)
    previews: Any = None  # (M, 1 + len(bits), k, H, W, C) uint8: full precision then each bit width
    meta: dict = field(default_factory=dict)

    @property
    def L_theta(self) -> list:
        """L(θ_m) of each model on the result's bank, at full precision (the common name of ``loss_fp``)."""
        return list(self.loss_fp)


PER_BITS = ("weight_rel_error", "weight_max_abs_error", "weight_max_error_over_half_step", "weight_mse", "loss",
            "loss_change", "drift_mse", "drift_psnr", "distance", "fd_pix", "saved")


def save_quantized_checkpoint(run: Any, state_dict: dict[str, torch.Tensor], path: Any, info: dict) -> None:
    """Write a flatkit checkpoint holding the quantized weights as ``raw`` (atomic; never over the input)."""
    from pathlib import Path

    from flatkit.checkpoint import make_checkpoint, save_checkpoint

    p = Path(path)
    if run.path is not None and p.resolve() == Path(run.path).resolve():
        raise UsageError(f"save_dir {p}: refusing to overwrite the input checkpoint")
    ck = make_checkpoint(
        run.config,
        {"raw": state_dict},
        step=run.step or 0,
        train={
            "quantized_from": {"checkpoint": run.path, "sha256": run.sha256, "weights": run.weights, **info}
        },
    )
    save_checkpoint(ck, p)


@takes(QuantizeSettings)
def quantize(
    run: Any,
    compare: Sequence[Any] = (),
    labels: Sequence[str] | None = None,
    pool: int = 8,
    device: Any = None,
    save_dir: Any = None,
    progress: bool = False,
    n_preview: int = 16,
    *,
    settings: QuantizeSettings,
) -> QuantizeResult:
    """Quantize ``run`` and each of ``compare`` at each bit width and measure weight error, loss change (one
    bank for every model), paired drift and distance to the data; one result, per-model fields indexed by m."""
    from pathlib import Path

    from flatkit.metrics.distances import distance_names, weight_free_distances
    from flatkit.objective import Objective
    from flatkit.sampling import draw_samples, respaced, sample_shape, to_uint8

    s = settings
    t0 = time.perf_counter()
    runs, labels, cfg = start_models(run, compare, labels, s)
    spec = data_spec(runs[0], s.data)
    for r in runs:  # bad --skip patterns fail before any sampling
        quantizable_layers(r.model, s.skip, s.skip_first_last)
    shape = sample_shape(runs[0].config.model)
    ref = reference_samples(spec, s.n_ref, s.seed + 1, shape, getattr(runs[0], "path", None))
    from flatkit import budget

    budget.check_samples(s.n, shape, copies=len(s.bits) + 1)  # the samples of every bit width
    from flatkit.data.holdout import bank_data

    obj0 = Objective(runs[0], data=bank_data(runs[0], spec, s.bank), n=s.n_eval, seed=s.seed, batch_size=s.batch_size,
                     loss=s.loss)
    res = QuantizeResult(bits=list(s.bits), granularity=s.granularity, labels=labels, data=spec,
                         distance_name=distance_names(pool)["sw2"])
    previews = []
    dev = None
    for m, r in enumerate(runs):
        check_sample_shape(r, shape, labels[m])
        obj = obj0 if m == 0 else obj0.for_run(r)
        dev = device if device is not None else next(r.model.parameters()).device
        diff = respaced(r.diffusion, cfg)
        loss_fp = float(obj.loss())
        x_fp = draw_samples(r.model, diff, cfg, shape, device=dev, progress=progress,
                            desc=f"{labels[m]} full precision")
        dist_fp = weight_free_distances(x_fp, ref, n_projections=s.projections, seed=s.seed, pool=pool)
        all_layers = quantizable_layers(r.model)
        res.loss_fp.append(loss_fp)
        res.distance_fp.append(dist_fp["sw2"])
        res.fd_pix_fp.append(dist_fp["fd_pix"])
        entry: dict[str, list] = {k: [] for k in PER_BITS}
        rows = [to_uint8(x_fp[:n_preview])] if len(shape) == 3 else []
        layers: list = []
        for b in s.bits:
            qw = quantize_state_dict(r.model, b, s.granularity, s.skip, s.skip_first_last)
            layers = qw.layers
            qparams = {k: qw.state_dict[k].to(v.device, v.dtype) for k, v in obj.params.items()}
            lq = float(obj.loss(qparams))
            qm = quantized_model(r.model, qw.state_dict)
            xq = draw_samples(qm, diff, cfg, shape, device=dev, progress=progress, desc=f"{labels[m]} {b}-bit")
            dr = paired_drift(xq, x_fp)
            dist = weight_free_distances(xq, ref, n_projections=s.projections, seed=s.seed, pool=pool)
            entry["weight_rel_error"].append(qw.rel_error)
            entry["weight_max_abs_error"].append(qw.max_abs_error)
            entry["weight_max_error_over_half_step"].append(qw.max_error_over_half_step)
            entry["weight_mse"].append(qw.mse)
            entry["loss"].append(lq)
            entry["loss_change"].append(lq - loss_fp)
            entry["drift_mse"].append(dr["mse"])
            entry["drift_psnr"].append(dr["psnr"])
            entry["distance"].append(dist["sw2"])
            entry["fd_pix"].append(dist["fd_pix"])
            if len(shape) == 3:
                rows.append(to_uint8(xq[:n_preview]))
            if save_dir is not None:
                prefix = "" if len(runs) == 1 else f"{m}_"
                path = Path(save_dir) / f"{prefix}quantized_{b}bit_{s.granularity}.pt"
                save_quantized_checkpoint(r, qw.state_dict, path,
                                          {"bits": b, "granularity": s.granularity, "layers": qw.layers})
                entry["saved"].append(str(path))
        res.layers.append(layers)
        res.skipped.append([n_ for n_ in all_layers if n_ not in layers])
        append_model(res, entry, PER_BITS, previews, rows)
    res.previews = stack_previews(previews)
    res.meta = robustness_meta(s, runs, labels, dev, t0, [spec], pool=pool, ref_seed=s.seed + 1,
                               quantized="weights of Conv1d/2d/3d and Linear layers; symmetric round-to-nearest",
                               objective=obj0.config.to_dict())
    return res
