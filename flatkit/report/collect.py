"""Reading result folders: which arm of the paper a folder's model is, and the numbers each figure and table uses.

A *result folder* holds any subset of the result files of one analysis call: ``hessian``, ``sharpness``,
``perturb``, ``landscape``, ``exposure``, ``prior``, ``quantize`` (each ``.json`` with its ``.npz``), ``sample``
(+ ``samples.npz``) and ``fid*.json`` (also ``*/fid.json`` one level down, one per sampling budget T'). Every
file is read through its typed result class (``XResult.load``), never through raw JSON keys; the numbers of
one result type are read in ONE adapter function below (``_hessian`` … ``_fid``), the only place that knows the
class's field names. Nothing is recomputed.

A result measured on several models (``--compare``) holds per-model fields indexed by the model m; such a folder
gives one :class:`RunDir` per model. A *demo folder* (``flatkit demo --out``) holds ``results/<arm>-<weights>/``
folders and is read as those. The arm label comes from the checkpoint's training configuration
(``sam_rho > 0`` → SAM, ``ip_gamma > 0`` → IP, otherwise ADM) and the weights (``ema*`` → +EMA, ``swa`` → +SWA),
read from the checkpoint whose path the results' ``meta`` records (or the ``train.json`` beside it); an explicit
label overrides it.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.errors import UsageError
from flatkit.plots.style import arm_sort_key, canonical_arm

RESULT_NAMES = ("hessian", "sharpness", "perturb", "landscape", "exposure", "prior", "quantize", "sample")

#: result name -> (module, class): every file the report reads, loaded with ``XResult.load``
RESULT_CLASSES: dict[str, tuple[str, str]] = {
    "hessian": ("flatkit.analyses.hessian", "HessianResult"),
    "sharpness": ("flatkit.analyses.sharpness", "SharpnessResult"),
    "perturb": ("flatkit.analyses.perturb", "PerturbResult"),
    "landscape": ("flatkit.analyses.landscape.core", "LandscapeResult"),
    "exposure": ("flatkit.analyses.robustness.exposure", "ExposureResult"),
    "prior": ("flatkit.analyses.robustness.prior", "PriorResult"),
    "quantize": ("flatkit.analyses.robustness.quantize", "QuantizeResult"),
    "sample": ("flatkit.sampling", "SampleResult"),
    "fid": ("flatkit.metrics.fid", "FidResult"),
}


def result_class(name: str) -> type:
    mod, cls = RESULT_CLASSES[name]
    return getattr(importlib.import_module(mod), cls)


def load_result(folder: str | Path, name: str, stem: str | None = None) -> Any:
    """``XResult.load(folder)`` of result ``name`` (file ``<stem>.json``, default ``<name>.json``); a file that
    does not parse as its result is a usage error naming it as corrupt."""
    p = Path(folder) / f"{stem or name}.json"
    try:
        return result_class(name).load(folder, name=stem or name)
    except UsageError as e:
        why = str(e).split(": ", 1)[-1]
        raise UsageError(f"{p}: corrupt {name} result ({why})") from None


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON null, NaN, missing)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _nan_array(v: Any) -> np.ndarray:
    if v is None:
        return np.zeros(0)
    return np.array([np.nan if x is None else x for x in np.ravel(np.asarray(v, dtype=object))],
                    dtype=np.float64).reshape(np.shape(v))


def _at(v: Any, m: int) -> Any:
    """Model m's entry of a per-model field (a plain value is the only model's)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return v[m] if m < len(v) else None
    return v if m == 0 else None


def _curve(v: Any, m: int, ndim: int = 1) -> np.ndarray:
    """Model m's curve of an (M, ...) field (an array of ``ndim`` dimensions is the only model's)."""
    a = _nan_array(v)
    if a.ndim > ndim:
        return a[m] if m < a.shape[0] else np.full(a.shape[1:], np.nan)
    return a


def _cfg(res: Any) -> dict:
    return ((getattr(res, "meta", None) or {}).get("config") or {})


def _first(*vals: Any) -> Any:
    return next((v for v in vals if v is not None), None)


# ------------------------------------------------------------------------------------------------ adapters
# One function per result type: the only code that reads a result class's fields.
def _hessian(res: Any, m: int) -> dict:
    ev = _at(res.eigenvalues, m) or []
    det = _at(res.details, m) or {}
    return {"loss": _num(_at(res.loss, m)), "lambda_max": _num(ev[0]) if len(ev) else None,
            "lambda_max_converged": _at(res.eigen_converged, m),
            "lambda_max_bound": _num((_at(res.eigen_bounds, m) or [None])[0]),
            "lambda_max_certified": _at(res.eigen_certified, m),
            "trace": _num(_at(res.trace, m)), "trace_stderr": _num(_at(res.trace_stderr, m)),
            "trace_method": (det.get("trace") or {}).get("method") or _cfg(res).get("trace_method")}


def _sharpness(res: Any, m: int) -> dict:
    return {"value": _num(_at(res.value, m)), "loss0": _num(_at(res.loss0, m)), "kind": res.kind,
            "eps": _num(res.eps)}


def _perturb(res: Any, m: int) -> dict:
    worst = _curve(res.worst, m)
    return {"radii": np.asarray(res.radii, dtype=np.float64), "mean": _curve(res.mean, m),
            "std": _curve(res.std, m), "worst": worst if worst.size else None, "loss0": _num(_at(res.loss0, m)),
            "relative": res.norm, "k": res.n_directions, "worst_steps": res.worst_steps}


def _landscape(res: Any, m: int) -> dict:
    dims = int(res.dims)
    return {"values": _curve(res.values, m, dims), "coords_a": np.asarray(res.coords_a, dtype=np.float64),
            "coords_b": np.asarray(res.coords_b, dtype=np.float64) if dims == 2 else None,
            "loss_centre": _num(_at(res.loss_centre, m)), "dims": dims, "directions": res.directions,
            "loss0": _first(_num(_at(res.loss0, m)), _num(_at(res.loss_centre, m))),
            "norm": res.norm}


def _exposure(res: Any, m: int) -> dict:
    return {"t": _nan_array(_at(res.t, m)), "sampling": _nan_array(_at(res.sampling_norm, m)),
            "training": _nan_array(_at(res.training_norm, m)), "gap": _nan_array(_at(res.gap, m)),
            "gap_last": _num(_at(res.gap_last, m)), "gap_mean": _num(_at(res.gap_mean, m)),
            "delta_mean": _num(_at(res.delta_mean, m)), "norm": res.eps_norm}


def _prior(res: Any, m: int) -> dict:
    pts = [(k, float(mu), float(s), float(eta)) for k, mu, s, eta in zip(res.kind, res.mu, res.s, res.eta,
                                                                       strict=True)]
    nums = {k: [_num(x) for x in (_at(getattr(res, k), m) or [])]
            for k in ("drift_mse", "loss", "loss_change", "distance")}
    prev = res.previews
    return {"points": pts, "kl": [_num(x) for x in res.kl], **nums, "distance_name": res.distance_name,
            "previews": prev[m] if prev is not None and np.ndim(prev) == 6 and m < len(prev) else None}


def _quantize(res: Any, m: int) -> dict:
    prev = res.previews
    return {"bits": [int(b) for b in res.bits], "loss_fp": _num(_at(res.loss_fp, m)),
            **{k: [_num(x) for x in (_at(getattr(res, k), m) or [])]
               for k in ("loss_change", "drift_mse", "distance", "weight_rel_error")},
            "distance_fp": _num(_at(res.distance_fp, m)), "granularity": res.granularity,
            "distance_name": res.distance_name,
            "previews": prev[m] if prev is not None and np.ndim(prev) == 6 and m < len(prev) else None}


def _fid(res: Any) -> dict:
    c = _cfg(res)
    return {"fid": _num(res.fid), "sw2": _num((res.weight_free or {}).get("sw2")), "n": res.n_samples,
            "samples": _first(c.get("samples"), (res.meta or {}).get("samples"))}


def _sample(res: Any) -> dict:
    s = res.sampler or {}
    steps = _first(s.get("sampling_steps"), s.get("steps"))
    return {"steps": int(steps) if steps is not None else None, "sampler": s.get("sampler"), "n": s.get("n")}


def sampler_of(res: Any) -> tuple[int | None, str | None]:
    """(T', sampler) a sampling result was measured with, from its recorded settings."""
    c = _cfg(res)
    s = c.get("sampler")
    if isinstance(s, dict):  # results written before the settings classes
        steps, name = s.get("steps"), s.get("sampler")
    else:
        steps, name = c.get("sampling_steps"), s
    return (int(steps) if steps is not None else None), name


def _sampler_n(res: Any) -> int | None:
    c = _cfg(res)
    return c["sampler"].get("n") if isinstance(c.get("sampler"), dict) else c.get("n")


# ------------------------------------------------------------------------------------------------ arm labels
def weights_suffix(weights: str | None) -> str:
    """``ema``/``ema_<rate>`` → ``+EMA``, ``swa`` → ``+SWA``, ``raw`` (or unknown) → ``""``."""
    w = (weights or "raw").lower()
    if w.startswith("ema"):
        return "+EMA"
    if w.startswith("swa"):
        return "+SWA"
    return ""


def arm_label(train_config: dict, weights: str | None) -> str:
    """The paper's arm: SAM when ``sam_rho > 0``, IP when ``ip_gamma > 0``, else ADM; then +EMA / +SWA."""
    sam = (_num(train_config.get("sam_rho")) or 0.0) > 0
    ip = (_num(train_config.get("ip_gamma")) or 0.0) > 0
    base = "+IP" * ip + "+SAM" * sam
    suffix = weights_suffix(weights)
    if not base:
        return suffix or "ADM"
    return base + suffix


def _candidates(ckpt: str, folder: Path) -> list[Path]:
    """Where a recorded checkpoint path may be: as written (absolute or from the working directory), then
    relative to the result folder and its ancestors (results record the path as the command was given)."""
    p = Path(ckpt)
    out = [p]
    if not p.is_absolute():
        base = folder.resolve()
        for anc in [base, *base.parents][:5]:
            out.append(anc / p)
    return out


def read_train_config(ckpt: str | None, folder: Path) -> tuple[dict | None, str | None]:
    """The trainer's configuration of ``ckpt`` (its ``train.config``, else ``train.json`` beside it)."""
    if not ckpt:
        return None, None
    for c in _candidates(ckpt, folder):
        if not c.is_file():
            continue
        cfg = None
        try:
            import torch

            obj = torch.load(c, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(obj, dict):
                tr = obj.get("train") or {}
                if isinstance(tr, dict) and isinstance(tr.get("config"), dict):
                    cfg = tr["config"]
                elif isinstance(tr, dict) and isinstance(tr.get("quantized_from"), dict):
                    src = tr["quantized_from"].get("checkpoint")
                    if src and src != ckpt:
                        return read_train_config(src, c.parent)
        except Exception:  # noqa: BLE001 - a foreign or unreadable file just has no train config
            cfg = None
        if cfg is None and (c.parent / "train.json").is_file():
            try:
                cfg = json.loads((c.parent / "train.json").read_text()).get("config")
            except (OSError, ValueError):
                cfg = None
        if isinstance(cfg, dict):
            return cfg, str(c)
        return None, str(c)
    return None, None


# ------------------------------------------------------------------------------------------------ folders
@dataclass
class FidEntry:
    """One ``fid.json`` of a folder and the sampling budget of the samples it measured."""

    result: Any  # FidResult
    file: str  # relative to the folder
    steps: int | None
    sampler: str | None
    sample_meta: dict | None


@dataclass
class RunDir:
    """One model of a result folder: its typed results, where its arm label came from, notes on what was odd.

    ``model`` is the index m of this model in the folder's per-model result fields."""

    path: Path
    label: str
    arm: str | None  # the paper's spelling when the label is one of its arms
    label_source: str  # "given" (--label or the caller), "train config (<file>)", "result labels", "folder name"
    checkpoint: str | None = None
    sha256: str | None = None
    weights: str | None = None
    train_config: dict | None = None
    results: dict[str, Any] = field(default_factory=dict)  # name -> XResult
    fids: list[FidEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: int = 0

    def has(self, name: str) -> bool:
        return name in self.results

    def describe(self) -> dict:
        return {"label": self.label, "arm": self.arm, "dir": str(self.path), "model": self.model,
                "label_source": self.label_source, "checkpoint": self.checkpoint, "checkpoint_sha256": self.sha256,
                "weights": self.weights, "results": sorted(self.results) + (["fid"] if self.fids else []),
                "notes": list(self.notes)}


def has_results(folder: Path) -> bool:
    return any((folder / f"{n}.json").is_file() for n in RESULT_NAMES) or bool(
        list(folder.glob("fid*.json")) + list(folder.glob("*/fid.json")))


def expand_dirs(path: str | Path) -> list[Path]:
    """The result folders of ``path``: itself when it holds result files, else its ``results/*`` (a demo
    folder) or its subfolders that hold results; a folder with none is a usage error."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{path}: not a directory")
    if has_results(folder):
        return [folder]
    from flatkit.report.trajectory import track_folders

    tracked = track_folders(folder)  # a flatkit track folder: its step folders
    if tracked is not None:
        return tracked
    base = folder / "results" if (folder / "results").is_dir() else folder
    subs = sorted(p for p in base.iterdir() if p.is_dir() and has_results(p))
    if not subs:
        raise UsageError(f"{path}: no flatkit result files here (expected any of "
                         f"{', '.join(n + '.json' for n in RESULT_NAMES)}, fid.json, or a demo's results/)")
    return subs


def _sample_info(fid: dict, folder: Path) -> tuple[int | None, str | None, dict | None]:
    """T' and sampler of the samples a fid.json measured: from the sample.json beside the samples file."""
    places = [c.parent for c in _candidates(fid["samples"], folder)] if fid["samples"] else []
    places.append(folder)
    for d in places:
        if (d / "sample.json").is_file():
            s = load_result(d, "sample")
            info = _sample(s)
            return info["steps"], info["sampler"], s.meta
    return None, None, None


def _read_results(folder: Path) -> dict[str, Any]:
    return {name: load_result(folder, name) for name in RESULT_NAMES if (folder / f"{name}.json").is_file()}


def _read_fids(folder: Path) -> list[FidEntry]:
    out = []
    for p in sorted(folder.glob("fid*.json")) + sorted(folder.glob("*/fid.json")):
        res = load_result(p.parent, "fid", stem=p.stem)
        steps, sampler, smeta = _sample_info(_fid(res), p.parent)
        out.append(FidEntry(res, str(p.relative_to(folder)), steps, sampler, smeta))
    return out


def _model_count(results: dict[str, Any]) -> int:
    """How many models the folder's results measured (``labels[m]`` of a comparison; 1 otherwise)."""
    return max([1] + [len(res.labels) for res in results.values() if isinstance(getattr(res, "labels", None),
                                                                                 list)])


def _identity(meta: dict, m: int) -> tuple[str | None, str | None, str | None, str | None]:
    """(checkpoint, sha256, weights, label) of model m as a result's meta records it."""
    cks = meta.get("checkpoints")
    if isinstance(cks, list) and m < len(cks) and isinstance(cks[m], dict):
        c = cks[m]
        return c.get("checkpoint"), c.get("checkpoint_sha256"), c.get("weights"), c.get("label")
    if m == 0:
        return meta.get("checkpoint"), meta.get("checkpoint_sha256"), meta.get("weights"), meta.get("label")
    return None, None, None, None


def _model_identity(results: dict[str, Any], fids: list[FidEntry], m: int,
                    notes: list[str]) -> tuple[str | None, str | None, str | None, str | None]:
    """The checkpoint and weights every result's meta records for model m (they should agree)."""
    idents = []
    for name, res in results.items():
        ck, sha, w, lab = _identity(res.meta or {}, m)
        labs = getattr(res, "labels", None)
        lab = _first(lab, _at(labs, m) if isinstance(labs, list) and labs else None)
        if ck or sha:
            idents.append((name, ck, sha, w, lab))
    for f in fids if m == 0 else []:
        ck, sha, w, lab = _identity(f.sample_meta or {}, 0)
        if ck:
            idents.append((f.file, ck, sha, w, lab))
    if not idents:
        return None, None, None, None
    first, ckpt, sha, weights, lab = idents[0]
    odd = [f"{n} ({Path(c or '?').name}:{w})" for n, c, s, w, _ in idents[1:]
           if (s and sha and s != sha) or (w and weights and w != weights)]
    if odd:
        notes.append(f"results from another checkpoint or weights than {first} ({Path(ckpt or '?').name}:"
                     f"{weights}): {', '.join(odd)}; the model is labelled by {first}")
    return ckpt, sha, weights, lab


def _label(folder: Path, given: str | None, ckpt: str | None, weights: str | None, rlabel: str | None,
           multi: bool, notes: list[str]) -> tuple[str, str, dict | None]:
    train_cfg, found = read_train_config(ckpt, folder)
    if given is not None:
        return given, "given", train_cfg
    if train_cfg is not None:
        return arm_label(train_cfg, weights), f"train config ({found})", train_cfg
    if multi and rlabel:
        return rlabel, "result labels", None
    why = (f"checkpoint {ckpt} not found" if ckpt and found is None
           else f"{found} records no training configuration" if found else "no checkpoint recorded")
    notes.append(f"arm unknown ({why}): labelled by the folder name; pass --label {folder}=NAME")
    return folder.resolve().name, "folder name", None


def read_folder(path: str | Path, label: str | None = None) -> list[RunDir]:
    """Every model of one result folder, one :class:`RunDir` each (a folder with no result is exit 2)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{path}: not a directory")
    if not has_results(folder):
        raise UsageError(f"{path}: no flatkit result files here (expected any of "
                         f"{', '.join(n + '.json' for n in RESULT_NAMES)}, fid.json)")
    results, fids = _read_results(folder), _read_fids(folder)
    n = _model_count(results)
    out = []
    for m in range(n):
        notes: list[str] = []
        ckpt, sha, weights, rlabel = _model_identity(results, fids, m, notes)
        given = label if n == 1 else (f"{label}:{rlabel or m}" if label else None)
        lab, source, cfg = _label(folder, given, ckpt, weights, rlabel, n > 1, notes)
        mine = {k: v for k, v in results.items() if _model_count({k: v}) > m}
        out.append(RunDir(path=folder, label=lab, arm=canonical_arm(lab), label_source=source, checkpoint=ckpt,
                          sha256=sha, weights=weights, train_config=cfg, results=mine,
                          fids=fids if m == 0 else [], notes=notes, model=m))
    return out


def read_run_dir(path: str | Path, label: str | None = None) -> RunDir:
    """The first model of one result folder (see :func:`read_folder` for all of them)."""
    return read_folder(path, label)[0]


def read_run_dirs(dirs: list[str | Path], labels: dict[str, str] | None = None) -> list[RunDir]:
    """Read each folder (``labels`` maps a folder, as given or resolved, to a label; a demo folder stands for
    its ``results/*``), one row per model, in the paper's arm order; repeated labels get ``#2``, ``#3`` … so
    each curve stays distinguishable."""
    labels = dict(labels or {})
    lab_by_res = {str(Path(k).resolve()): v for k, v in labels.items()}
    runs: list[RunDir] = []
    for d in dirs:
        for sub in expand_dirs(d):
            lab = labels.get(str(sub), lab_by_res.get(str(Path(sub).resolve())))
            if lab is None:  # a point of a flatkit track: its run and weights
                from flatkit.report.trajectory import track_label

                lab = track_label(sub)
            runs += read_folder(sub, lab)
    from flatkit.report.trajectory import label_steps

    label_steps(runs)  # one run at several steps: labelled by step, noted, drawn against the step
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.notes.append(f"label {r.label} already used by another model: shown as {r.label}#{seen[r.label]}")
            r.label = f"{r.label}#{seen[r.label]}"
            r.arm = None
    return sorted(runs, key=lambda r: arm_sort_key(r.label))


# ------------------------------------------------------------------------------------------------ measures
def perturb_curves(run: RunDir) -> dict | None:
    """ΔL(r) of the model: radii, random mean and std over K directions, worst case, L(θ)."""
    res = run.results.get("perturb")
    return None if res is None else _perturb(res, run.model)


def curvature_curves(run: RunDir) -> dict | None:
    """The model's Hessian spectrum beyond λ_max, where its ``hessian.json`` has it: the SLQ density on its grid
    (``density_grid``, ``density``) and λ_max of the loss restricted to each t-bin at the bins' centres (``t_mid``,
    ``per_timestep``); None when it has neither."""
    res = run.results.get("hessian")
    if res is None:
        return None
    m, out = run.model, {}
    grid, dens = _nan_array(res.density_grid), _nan_array(res.density)
    if dens.ndim == 2 and m < dens.shape[0] and dens.shape[1]:
        out["density_grid"] = grid[m] if grid.ndim == 2 else grid
        out["density"] = dens[m]
    top, edges = _nan_array(res.per_timestep_top_eigenvalues), _nan_array(res.per_timestep_edges)
    if top.ndim == 3 and m < top.shape[0] and top.shape[1] and top.shape[2] and edges.size > 1:
        out["t_mid"] = (edges[:-1] + edges[1:]) / 2
        out["per_timestep"] = top[m, :, 0]
    return out or None


def landscape_flatness(run: RunDir, radius: float | None = None) -> dict | None:
    """The landscape flatness number: mean of L(θ + α d₁ + β d₂) − L(θ) over the grid points of the slice with
    0 < ‖(α, β)‖₂ ≤ r (|α| ≤ r in 1-D), NaN points left out. ``radius`` None: the largest disc inside the
    grid, r = min(|α_min|, α_max, |β_min|, β_max)."""
    res = run.results.get("landscape")
    if res is None:
        return None
    d = _landscape(res, run.model)
    vals, a, dims, centre = d["values"], d["coords_a"], d["dims"], d["loss_centre"]
    if dims == 2:
        b = d["coords_b"]
        A, B = np.meshgrid(a, b, indexing="ij")
        rr = np.sqrt(A**2 + B**2)
        rmax = float(min(abs(a.min()), a.max(), abs(b.min()), b.max()))
    else:
        rr = np.abs(a)
        rmax = float(min(abs(a.min()), a.max()))
    if centre is None:
        i0 = np.unravel_index(np.argmin(rr), rr.shape)
        centre = _num(vals[i0]) if rr[i0] == 0 else None
    r = rmax if radius is None else float(radius)
    inside = (rr > 0) & (rr <= r * (1 + 1e-9))
    finite = inside & np.isfinite(vals)
    value = float(np.mean(vals[finite] - centre)) if centre is not None and finite.any() else None
    return {"value": value, "radius": r, "points": int(finite.sum()), "nan_points": int((inside & ~finite).sum()),
            "loss_centre": centre, "dims": dims, "directions": d["directions"], "norm": d["norm"],
            "values": vals, "coords_a": a, "coords_b": d["coords_b"]}


def _sampled(run: RunDir, name: str, adapter: Callable) -> dict | None:
    """A sampling measure's numbers for the run's model (without preview images), with its T' and sampler."""
    res = run.results.get(name)
    if res is None:
        return None
    steps, sampler = sampler_of(res)
    out = adapter(res, run.model)
    out.pop("previews", None)
    return {**out, "steps": steps, "sampler": sampler}


def exposure_curves(run: RunDir) -> dict | None:
    return _sampled(run, "exposure", _exposure)


def prior_points(run: RunDir) -> dict | None:
    return _sampled(run, "prior", _prior)


def prior_point_name(key: tuple) -> str:
    kind, mu, s, eta = key
    return f"μ={mu:g}, s={s:g}" if kind == "shift_scale" else f"η={eta:g}"


def quantize_table(run: RunDir) -> dict | None:
    return _sampled(run, "quantize", _quantize)


def quantize_previews(run: RunDir) -> np.ndarray | None:
    """(1 + bits, k, H, W, C) uint8 previews of the model: full precision, then each bit width."""
    res = run.results.get("quantize")
    p = _quantize(res, run.model)["previews"] if res is not None else None
    return np.asarray(p) if p is not None and np.ndim(p) == 5 else None


def flatness_numbers(run: RunDir) -> dict:
    """λ_max, trace (± standard error), sharpness and L(θ) on each result's bank, where recorded."""
    out: dict[str, Any] = {}
    h = run.results.get("hessian")
    if h is not None:
        d = _hessian(h, run.model)
        if d["lambda_max"] is not None:
            out["lambda_max"] = d["lambda_max"]
            out["lambda_max_converged"] = d["lambda_max_converged"]
            out["lambda_max_bound"] = d["lambda_max_bound"]  # certified |λ_max − θ_1| (results before it: None)
            out["lambda_max_certified"] = d["lambda_max_certified"]
        if d["trace"] is not None:
            out.update(trace=d["trace"], trace_stderr=d["trace_stderr"], trace_method=d["trace_method"])
        out["loss"] = d["loss"]
    s = run.results.get("sharpness")
    if s is not None:
        d = _sharpness(s, run.model)
        out.update(sharpness=d["value"], sharpness_kind=d["kind"], sharpness_eps=d["eps"],
                   sharpness_loss0=d["loss0"])
    return out


#: where L(θ) on the bank is read from, in order: result name -> (adapter, its key)
LOSS_SOURCES: dict[str, tuple[Any, str]] = {
    "hessian": (_hessian, "loss"), "sharpness": (_sharpness, "loss0"), "perturb": (_perturb, "loss0"),
    "landscape": (_landscape, "loss0"), "quantize": (_quantize, "loss_fp"),
}


def bank_loss(run: RunDir) -> tuple[float | None, str | None, int | None]:
    """L(θ) on the frozen bank, the result it came from and that result's bank size (n_eval)."""
    for name, (adapter, key) in LOSS_SOURCES.items():
        res = run.results.get(name)
        if res is None:
            continue
        v = adapter(res, run.model)[key]
        if v is not None:
            c = _cfg(res)
            obj = (res.meta or {}).get("objective")  # one objective, or a list of one per model
            obj = obj[0] if isinstance(obj, list) and obj else obj
            n = _first(c.get("n_eval"), obj.get("n") if isinstance(obj, dict) else None)
            return v, name, n
    return None, None, None


# ------------------------------------------------------------------------------------------------ the cost in fit
#: the final training loss is the logged loss over this last fraction of the run's steps
FINAL_FRACTION = 0.1


def holdout_loss(run: RunDir) -> tuple[float | None, str | None, str | None]:
    """L(θ) on held-out items (``flatkit train --holdout``): (value, the result it came from, why there is none).

    From the first loss-based result (in :data:`LOSS_SOURCES` order) whose bank was drawn from the held-out items
    (``--bank holdout``: its L(θ)) or that recorded a held-out bank beside its own (``meta.holdout.loss``)."""
    reasons = []
    for name, (adapter, key) in LOSS_SOURCES.items():
        res = run.results.get(name)
        if res is None:
            continue
        if _cfg(res).get("bank") == "holdout":
            v = adapter(res, run.model)[key]
            if v is not None:
                return v, f"{name} (--bank holdout)", None
        h = (res.meta or {}).get("holdout")
        if not isinstance(h, dict):
            reasons.append("its results were written before flatkit recorded held-out losses")
            continue
        v = _num(_at(h.get("loss"), run.model)) if h.get("loss") is not None else None
        if v is not None:
            return v, name, None
        reasons.append(h.get("reason") or "the model's run held other items out than the first model's")
    return None, None, reasons[0] if reasons else "no loss-based result (hessian, sharpness, perturb, landscape)"


def training_folder(run: RunDir) -> Path | None:
    """The folder of the training run that wrote the model's checkpoint (the one the results record), when it
    holds ``metrics.jsonl``."""
    if not run.checkpoint:
        return None
    for c in _candidates(run.checkpoint, run.path):
        if c.is_file() and (c.parent / "metrics.jsonl").is_file():
            return c.parent
    return None


def read_metrics(folder: str | Path) -> list[dict]:
    """The lines of ``folder/metrics.jsonl`` in step order (lines that do not parse are skipped)."""
    out = []
    try:
        text = (Path(folder) / "metrics.jsonl").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return sorted(out, key=lambda r: r["step"])


def final_train_loss(records: list[dict]) -> dict | None:
    """The final training loss of a run from its metrics lines: the mean of the logged window losses weighted by
    the steps each window covers, over the last :data:`FINAL_FRACTION` of the steps (at least the last window).
    None without a finite logged loss."""
    pts, prev = [], 0
    for r in records:
        pts.append((r["step"], r["step"] - prev, _num(r.get("loss"))))
        prev = r["step"]
    if not pts:
        return None
    last = pts[-1][0]
    cut = last - max(1, int(math.ceil(FINAL_FRACTION * last)))
    sel = [(s, w, v) for s, w, v in pts if (s > cut or s == last) and v is not None and w > 0]
    if not sel:
        return None
    wsum = sum(w for _, w, _ in sel)
    return {"value": sum(w * v for _, w, v in sel) / wsum, "from_step": sel[0][0] - sel[0][1], "to_step": last}


def train_loss(run: RunDir) -> tuple[float | None, str | None]:
    """(the final training loss of the run that wrote the model's checkpoint, why there is none)."""
    folder = training_folder(run)
    if folder is None:
        why = ("no checkpoint recorded" if not run.checkpoint else
               f"no metrics.jsonl beside {Path(run.checkpoint).name} (not a flatkit training run, or moved)")
        return None, why
    f = final_train_loss(read_metrics(folder))
    return (f["value"], None) if f is not None else (None, f"{folder / 'metrics.jsonl'} logs no finite loss")


def training_runs(runs: list[RunDir]) -> list[tuple[str, Path, list[dict]]]:
    """(label, folder, metrics lines) of every training run behind the models, once each, labelled by its arm
    without the weights (``+SAM`` for the run of +SAM, +SAM+EMA and +SAM+SWA) or by its folder name."""
    out: dict[Path, tuple[str, Path, list[dict]]] = {}
    for r in runs:
        folder = training_folder(r)
        if folder is None or folder.resolve() in out:
            continue
        lab = arm_label(r.train_config, "raw") if r.train_config else folder.name
        if any(lab == o[0] for o in out.values()):
            lab = f"{lab} ({folder.name})"
        out[folder.resolve()] = (lab, folder, read_metrics(folder))
    return [v for v in out.values() if v[2]]


def quality_cells(run: RunDir) -> list[dict]:
    """Every sample-quality number the model has: FID (fid.json with a detector), else the weight-free
    sliced Wasserstein-2 distance (fid.json without a detector, quantize at full precision, prior at N(0, I)).
    Each: value, metric ("FID" or "SW2"), T', sampler, source file, n samples."""
    cells = []
    for f in run.fids:
        d = _fid(f.result)
        if d["fid"] is not None:
            cells.append({"value": d["fid"], "metric": "FID", "steps": f.steps, "sampler": f.sampler,
                          "source": f.file, "n": d["n"], "rank": 0})
        elif d["sw2"] is not None:
            cells.append({"value": d["sw2"], "metric": "SW2", "steps": f.steps, "sampler": f.sampler,
                          "source": f.file, "n": d["n"], "rank": 1})
    q = run.results.get("quantize")
    if q is not None:
        d = _quantize(q, run.model)
        if d["distance_fp"] is not None:
            steps, sampler = sampler_of(q)
            cells.append({"value": d["distance_fp"], "metric": "SW2", "steps": steps, "sampler": sampler,
                          "source": "quantize.json (full precision)", "n": _sampler_n(q), "rank": 2})
    p = prior_points(run)
    if p is not None:
        for i, (k, mu, s, _) in enumerate(p["points"]):
            if k == "shift_scale" and mu == 0.0 and s == 1.0 and i < len(p["distance"]):
                if p["distance"][i] is not None:
                    cells.append({"value": p["distance"][i], "metric": "SW2", "steps": p["steps"],
                                  "sampler": p["sampler"], "source": "prior.json (unperturbed prior)",
                                  "n": _sampler_n(run.results["prior"]), "rank": 3})
                break
    return cells


def sample_sources(run: RunDir) -> dict[str, np.ndarray]:
    """Full-precision image samples of the model (uint8 NHWC) by source: ``samples.npz`` (flatkit sample),
    ``quantize.npz`` (its full-precision row), ``prior.npz`` (the row of the prior N(0, I))."""
    out: dict[str, np.ndarray] = {}
    if run.has("sample") and run.model == 0 and (run.path / "samples.npz").is_file():
        try:
            with np.load(run.path / "samples.npz") as z:
                x = z["arr_0"]
            if x.ndim == 4 and x.dtype == np.uint8:
                out["samples.npz"] = x
        except (OSError, ValueError, KeyError):
            pass
    q = quantize_previews(run)
    if q is not None:
        out["quantize.npz"] = q[0]
    pr = run.results.get("prior")
    if pr is not None:
        d = _prior(pr, run.model)
        p = d["previews"]
        if p is not None and np.ndim(p) == 5:
            for i, (k, mu, s, _) in enumerate(d["points"]):
                if k == "shift_scale" and mu == 0.0 and s == 1.0 and i < np.shape(p)[0]:
                    out["prior.npz"] = np.asarray(p[i])
                    break
    return out


SAMPLE_SOURCES = ("samples.npz", "quantize.npz", "prior.npz")


def sample_previews(runs: list[RunDir]) -> list[tuple[str, np.ndarray, str]]:
    """(label, samples, source) per model with image samples; the source most models share is used where a
    model has it (so columns are paired by seed across arms when their seeds agree)."""
    srcs = {r.label: sample_sources(r) for r in runs}
    counts = {s: sum(s in v for v in srcs.values()) for s in SAMPLE_SOURCES}
    order = sorted(SAMPLE_SOURCES, key=lambda s: (-counts[s], SAMPLE_SOURCES.index(s)))
    out = []
    for r in runs:
        for s in order:
            if s in srcs[r.label]:
                out.append((r.label, srcs[r.label][s], s))
                break
    return out
