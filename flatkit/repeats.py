"""``--repeats R``: every random draw of a measure made R times, and a 95 % interval for each of its scalars.

Repeat r (r = 0 .. R−1) runs the measure unchanged but for its seeds: the evaluation bank is drawn with
``derived_seed(bank seed, r)`` and everything else random (directions, Lanczos / Hutchinson / SLQ probes,
sharpness restarts, sample seeds, reference items) with ``derived_seed(--seed, r)``, where

    derived_seed(seed, r) = seed + 1000003 · r          (1000003 is prime and larger than any offset flatkit
                                                        adds to a seed inside one measure, e.g. seed + 104729)

so repeat 0 is the run without ``--repeats`` bit for bit, and the result's own numbers stay those of repeat 0.
The result gains ``repeats`` (each repeat's seeds, bank hash and scalars) and ``intervals`` (per scalar, per
model: mean, standard error, 95 % Student-t interval and n over the R repeats). With R = 1 neither is written.

What the interval covers: the spread of the measure over redraws of the bank and of its own random choices at
FIXED weights. It is not seed-to-seed training variance (another training run of the same arm moves θ); an
interval that separates two checkpoints says the difference is not an artefact of the bank or the probes, not
that the training recipes differ (docs/methods.md, "Error bars").

This module imports neither torch nor matplotlib (numpy only): the report and the settings use it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: repeat r's seed is seed + SEED_STRIDE · r
SEED_STRIDE = 1_000_003
#: the confidence level of every reported interval
LEVEL = 0.95
#: keyword arguments naming side outputs: only repeat 0 writes them (quantize's saved checkpoints)
SIDE_OUTPUTS = ("save_dir",)
#: keyword arguments naming a folder of partial results (landscape's blocks): no repeat writes there, the caller
#: saves the combined result (a partial grid of one repeat would hold other settings than the whole call)
PARTIAL_OUTPUTS = ("out",)


def derived_seed(seed: int, r: int) -> int:
    """The seed of repeat ``r`` (``r = 0``: ``seed`` itself)."""
    return int(seed) + SEED_STRIDE * int(r)


# ------------------------------------------------------------------------------------------ Student t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (Numerical Recipes, 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """P(T ≤ x) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x > 0 else tail


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (bisection on :func:`t_cdf`, to
    about 1e-12; no scipy)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p {p}: must be in (0, 1)")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------------------------------ intervals
@dataclasses.dataclass(frozen=True)
class Interval:
    """Mean, standard error s/√n and the ``level`` Student-t interval mean ± t_{(1+level)/2, n−1} · se of n
    values (se and the interval NaN for n < 2)."""

    mean: float
    se: float
    lo: float
    hi: float
    n: int
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return 0.5 * (self.hi - self.lo)


def summarise(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The :class:`Interval` of the finite entries of ``values`` (NaN / None left out; n counts the rest)."""
    v = np.asarray([np.nan if x is None else float(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0, level)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, math.nan, n, level)
    se = float(v.std(ddof=1) / math.sqrt(n))
    h = t_quantile(0.5 + level / 2.0, n - 1) * se
    return Interval(mean, se, mean - h, mean + h, n, level)


def summarise_stack(stack: np.ndarray, level: float = LEVEL) -> dict:
    """Elementwise :func:`summarise` over the first axis of ``stack`` (R, ...): a dict of nested lists
    ``mean``, ``se``, ``lo``, ``hi``, ``n`` shaped like one repeat's values (what a result's ``intervals``
    holds per scalar)."""
    a = np.asarray(stack, dtype=np.float64)
    flat = a.reshape(a.shape[0], -1)
    ivs = [summarise(flat[:, j], level) for j in range(flat.shape[1])]
    shape = a.shape[1:]
    out = {k: np.asarray([getattr(iv, k) for iv in ivs], dtype=np.float64).reshape(shape).tolist()
           for k in ("mean", "se", "lo", "hi")}
    out["n"] = np.asarray([iv.n for iv in ivs], dtype=np.int64).reshape(shape).tolist()
    out["level"] = level
    return out


def interval_at(intervals: dict | None, name: str, *index: int) -> Interval | None:
    """The :class:`Interval` of entry ``index`` (model m, then e.g. the radius) of scalar ``name`` in a
    result's ``intervals``; None when absent or not finite."""
    d = (intervals or {}).get(name)
    if not isinstance(d, dict):
        return None
    try:
        vals = []
        for k in ("mean", "se", "lo", "hi", "n"):
            v = d[k]
            for i in index:
                v = v[i]
            vals.append(v)
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(vals[0], list) or vals[0] is None or not math.isfinite(float(vals[0])):
        return None
    f = [math.nan if x is None else float(x) for x in vals[:4]]
    return Interval(f[0], f[1], f[2], f[3], int(vals[4] or 0), float(d.get("level", LEVEL)))


def separate(a: Interval | None, b: Interval | None) -> bool | None:
    """Whether two intervals do not overlap (None when either is missing)."""
    if a is None or b is None or not (math.isfinite(a.lo) and math.isfinite(b.lo)):
        return None
    return a.hi < b.lo or b.hi < a.lo


def fmt_interval(iv: Interval | None, digits: int = 4) -> str:
    """``10.2 ± 0.3`` (± one standard error) or ``—``."""
    if iv is None:
        return "—"
    if not math.isfinite(iv.se):
        return f"{iv.mean:.{digits}g}"
    return f"{iv.mean:.{digits}g} ± {iv.se:.2g}"


# ------------------------------------------------------------------------------------------ scalars
def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _arr(v: Any) -> np.ndarray:
    """Per-model values as a float array (None → NaN); ragged lists are not summarised (empty)."""
    try:
        a = np.asarray(v, dtype=object)
        return np.vectorize(_num, otypes=[np.float64])(a) if a.size else np.zeros(a.shape)
    except ValueError:
        return np.zeros(0)


def _hessian(res: Any) -> dict:
    out = {"loss": _arr(res.loss)}
    if res.eigenvalues:
        out["lambda_max"] = _arr([e[0] if e else None for e in res.eigenvalues])
    if res.trace:
        out["trace"] = _arr(res.trace)
    return out


def _landscape(res: Any) -> dict:
    """L(θ) at the centre, the landscape flatness number at the largest disc inside the grid (the report's
    default: mean ΔL over the grid points with 0 < ‖(α, β)‖ ≤ r) and the mean ΔL over the whole grid."""
    a = np.asarray(res.coords_a, dtype=np.float64)
    vals = np.asarray(res.values, dtype=np.float64)
    if int(res.dims) == 2:
        A, B = np.meshgrid(a, a, indexing="ij")
        rr = np.sqrt(A**2 + B**2)
    else:
        rr = np.abs(a)
    r = float(min(abs(a.min()), a.max())) if a.size else 0.0
    inside = (rr > 0) & (rr <= r * (1 + 1e-9))
    centre = _arr(res.loss_centre)
    flat, grid = [], []
    for m in range(vals.shape[0]):
        ok = inside & np.isfinite(vals[m])
        flat.append(float(np.mean(vals[m][ok] - centre[m])) if ok.any() and m < centre.size else math.nan)
        fin = np.isfinite(vals[m])
        grid.append(float(np.mean(vals[m][fin])) - centre[m] if fin.any() and m < centre.size else math.nan)
    # flatness: the report's number (the largest disc); mean_dl: the mean ΔL over the whole grid (flatkit track's)
    return {"loss_centre": centre, "flatness": np.asarray(flat), "mean_dl": np.asarray(grid)}


def _fields(*names: str) -> Callable[[Any], dict]:
    def get(res: Any) -> dict:
        return {n: _arr(getattr(res, n)) for n in names if np.size(getattr(res, n, None)) > 0}
    return get


#: result name -> the scalars whose intervals ``--repeats`` reports (per model; arrays summarised elementwise)
SCALARS: dict[str, Callable[[Any], dict]] = {
    "hessian": _hessian,
    "sharpness": _fields("value", "loss0"),
    "perturb": _fields("loss0", "mean", "worst"),
    "landscape": _landscape,
    "exposure": _fields("gap_last", "gap_mean", "delta_mean"),
    "prior": _fields("loss", "loss_change", "drift_mse", "distance"),
    "quantize": _fields("loss_fp", "loss_change", "drift_mse", "distance_fp", "distance"),
}


#: where each loss-based result's L(θ) on its bank is among its scalars
LOSS_SCALAR = {"hessian": "loss", "sharpness": "loss0", "perturb": "loss0", "landscape": "loss_centre",
               "quantize": "loss_fp"}
#: a scalar ``flatkit track`` draws -> (the result it is read from, that result's scalar, index after the model)
TRACK_SCALARS: dict[str, tuple] = {
    "lambda_max": ("hessian", "lambda_max"), "trace": ("hessian", "trace"), "sharpness": ("sharpness", "value"),
    "perturb_random": ("perturb", "mean", -1), "perturb_worst": ("perturb", "worst", -1),  # the largest radius
    "landscape_mean_dl": ("landscape", "mean_dl"),
}


def track_source(key: str, loss_from: str | None = None, bits: Sequence[int] = ()) -> tuple | None:
    """(result name, scalar, index after the model) of a track scalar: :data:`TRACK_SCALARS`, ``loss`` from the
    result ``loss_from``, ``quantize_drift_<b>bit`` / ``quantize_loss_change_<b>bit`` at bit width b of ``bits``;
    None for any other key."""
    if key == "loss":
        return (loss_from, LOSS_SCALAR[loss_from]) if loss_from in LOSS_SCALAR else None
    if key in TRACK_SCALARS:
        return TRACK_SCALARS[key]
    bits = [int(b) for b in bits]
    for prefix, scalar in (("quantize_drift_", "drift_mse"), ("quantize_loss_change_", "loss_change")):
        if key.startswith(prefix) and key.endswith("bit") and key[len(prefix):-3].isdigit():
            b = int(key[len(prefix):-3])
            return ("quantize", scalar, bits.index(b)) if b in bits else None
    return None


def scalars(res: Any) -> dict[str, np.ndarray]:
    get = SCALARS.get(getattr(res, "name", ""))
    return {} if get is None else get(res)


# ------------------------------------------------------------------------------------------ the runner
def _reseed(x: Any, seed_of: Callable[[int], int], cache: dict) -> Any:
    """An objective (anything with ``reseeded``) on the bank of its derived seed; lists and tuples of them
    element by element; anything else as is. Objectives of one bank share one redrawn bank (``cache``)."""
    if isinstance(x, (list, tuple)):
        return type(x)(_reseed(v, seed_of, cache) for v in x)
    fn = getattr(x, "reseeded", None)
    cfg = getattr(x, "config", None)
    if not callable(fn) or cfg is None or getattr(cfg, "kind", None) != "diffusion":
        return x
    new_seed = seed_of(int(cfg.seed))
    key = (new_seed, str(cfg.data))
    new = fn(new_seed, like=cache.get(key))
    cache.setdefault(key, new)
    return new


def _note(text: str) -> None:
    from flatkit import progress

    if progress.enabled() and progress._is_main():
        print(text, file=sys.stderr, flush=True)


def run_repeated(fn: Callable, args: tuple, kwargs: dict, settings: Any) -> Any:
    """``fn(*args, settings=..., **kwargs)`` once per repeat (``settings.repeats`` of them) with the derived
    seeds of the module docstring; returns repeat 0's result with ``repeats`` and ``intervals`` attached."""
    R = int(settings.repeats)
    results, records = [], []
    for r in range(R):
        seed = derived_seed(settings.seed, r)
        s_r = dataclasses.replace(settings, seed=seed, repeats=1)
        if r == 0:
            a, kw = args, {k: (None if k in PARTIAL_OUTPUTS else v) for k, v in kwargs.items()}
        else:
            cache: dict = {}
            a = tuple(_reseed(x, lambda b, r=r: derived_seed(b, r), cache) for x in args)
            kw = {k: (None if k in SIDE_OUTPUTS + PARTIAL_OUTPUTS
                      else _reseed(v, lambda b, r=r: derived_seed(b, r), cache)) for k, v in kwargs.items()}
        _note(f"repeat {r + 1}/{R} (seed {seed})")
        res = fn(*a, settings=s_r, **kw)
        results.append(res)
        cfg = getattr(a[0], "config", None) if a else None
        own = getattr(cfg, "kind", None) == "diffusion"  # an objective: its bank; else the bank is drawn by seed
        records.append({"repeat": r, "seed": seed, "bank_seed": int(cfg.seed) if own else seed,
                        "bank_sha256": getattr(cfg, "bank_sha256", None) if own else None})
    return attach(results, settings, records)


def attach(results: list, settings: Any, records: list[dict] | None = None) -> Any:
    """Repeat 0's result with ``repeats`` (per repeat: seeds, bank hash, scalars) and ``intervals`` (per scalar:
    :func:`summarise_stack` over the repeats) attached, and its meta's settings those of the whole call."""
    res = results[0]
    per = [scalars(x) for x in results]
    names = [k for k in per[0] if all(k in p and np.shape(p[k]) == np.shape(per[0][k]) for p in per)]
    res.intervals = {k: summarise_stack(np.stack([p[k] for p in per])) for k in names if np.size(per[0][k])}
    records = records or [{"repeat": r} for r in range(len(results))]
    res.repeats = [{**rec, **{k: p[k].tolist() for k in names}} for rec, p in zip(records, per, strict=True)]
    meta = getattr(res, "meta", None)
    if isinstance(meta, dict):
        if "config" in meta and hasattr(settings, "to_dict"):
            meta["config"] = settings.to_dict()
        meta["repeats"] = {"R": len(results), "seeds": [rec.get("seed") for rec in records],
                           "seed_rule": f"seed + {SEED_STRIDE} * r (r = 0: the seed itself)", "level": LEVEL,
                           "covers": "redraws of the evaluation bank and of the measure's own random choices "
                                     "(directions, probes, restarts, sample seeds) at fixed weights; not "
                                     "seed-to-seed training variance"}
    return res


def interval_lines(res: Any, m: int, names: Sequence[str] | None = None) -> list[str]:
    """``name mean ± se (95 % CI lo .. hi, R = n)`` for model m's scalars (the commands print these)."""
    out = []
    for name in names or list(getattr(res, "intervals", None) or {}):
        iv = interval_at(getattr(res, "intervals", None), name, m)
        if iv is not None:
            out.append(f"{name} {fmt_interval(iv, 6)} (95 % CI {iv.lo:.6g} .. {iv.hi:.6g})")
    return out


def summary_lines(res: Any, extra: Sequence[tuple] = ()) -> list[str]:
    """One line per model with the intervals of its scalars (``extra``: (name, index, label) entries of array
    scalars, e.g. ``("mean", (-1,), "ΔL random at r = 0.1")`` for perturb); empty without repeats."""
    ivs = getattr(res, "intervals", None) or {}
    if not ivs:
        return []
    R = len(getattr(res, "repeats", None) or [])
    out = [f"over {R} repeats (mean ± standard error, 95 % interval; bank and random choices redrawn, weights fixed):"]
    for m, label in enumerate(getattr(res, "labels", None) or []):
        parts = interval_lines(res, m)
        for name, index, *label_ in extra:
            iv = interval_at(ivs, name, m, *index)
            if iv is not None:
                what = label_[0] if label_ else f"{name}{list(index)}"
                parts.append(f"{what} {fmt_interval(iv, 6)} (95 % CI {iv.lo:.6g} .. {iv.hi:.6g})")
        if parts:
            out.append(f"  {label}: " + "; ".join(parts))
    return out


def errorbars_along(ax: Any, xs: Sequence[float], res: Any, name: str, m: int, color: Any,
                    n_models: int = 1) -> bool:
    """Draw model ``m``'s 95 % interval over the repeats of array scalar ``name`` at each ``xs[i]`` (entry i:
    a bit width, a radius) as capped vertical bars in ``color``, models side by side (each shifted by 1.2 % of
    the x span); False when the result has no such intervals."""
    ivs = [interval_at(getattr(res, "intervals", None), name, m, i) for i in range(len(xs))]
    span = float(np.ptp(np.asarray(xs, dtype=float))) if len(xs) > 1 else 1.0
    dx = (m - (n_models - 1) / 2) * 0.012 * span
    pts = [(x + dx, iv) for x, iv in zip(xs, ivs, strict=True) if iv is not None and math.isfinite(iv.lo)]
    if not pts:
        return False
    ax.errorbar([x for x, _ in pts], [iv.mean for _, iv in pts],
                yerr=[[iv.mean - iv.lo for _, iv in pts], [iv.hi - iv.mean for _, iv in pts]], fmt="none",
                ecolor=color, capsize=3, lw=1.0, zorder=4)
    return True


def repeats_note(res: Any) -> str:
    """" (bars: 95 % interval over R repeats)" for a figure title when the result has intervals, else ""."""
    ns = [d.get("n") for d in (getattr(res, "intervals", None) or {}).values() if isinstance(d, dict)]
    flat = [int(v) for v in np.ravel(np.asarray(ns, dtype=object)) if isinstance(v, (int, float))] if ns else []
    return f" (bars: 95 % interval over {max(flat)} repeats)" if flat else ""


def errorbars(ax: Any, xs: Sequence[float], res: Any, name: str) -> bool:
    """Draw scalar ``name``'s mean and 95 % interval over the repeats at ``xs`` (one x per model) on a matplotlib
    axis (black diamonds with caps, labelled for the legend); False when the result has no such intervals."""
    ivs = [interval_at(getattr(res, "intervals", None), name, m) for m in range(len(xs))]
    pts = [(x, iv) for x, iv in zip(xs, ivs, strict=True) if iv is not None and math.isfinite(iv.lo)]
    if not pts:
        return False
    R = max(iv.n for _, iv in pts)
    ax.errorbar([x for x, _ in pts], [iv.mean for _, iv in pts],
                yerr=[[iv.mean - iv.lo for _, iv in pts], [iv.hi - iv.mean for _, iv in pts]], fmt="D", ms=3.5,
                color="black", ecolor="black", capsize=4, lw=1.2, zorder=5,
                label=f"mean and 95 % interval over {R} repeats")
    return True
