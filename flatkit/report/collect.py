"""Reading result folders: which arm of the paper a folder is, and the numbers each figure and table uses.

A *run folder* holds any subset of the result files of ONE checkpoint and weights choice: ``hessian.json``,
``sharpness.json``, ``perturb.json``, ``landscape.json``, ``exposure.json``, ``prior.json``, ``quantize.json``
(each with its ``.npz``), ``sample.json`` + ``samples.npz``, and ``fid*.json`` (also ``*/fid.json`` one level
down, one per sampling budget T'). Nothing is recomputed: every number comes from those files.

The arm label comes from the checkpoint's training configuration (``sam_rho > 0`` → SAM, ``ip_gamma > 0`` → IP,
otherwise ADM) and the weights (``ema*`` → +EMA, ``swa`` → +SWA), read from the checkpoint whose path the
results' ``meta`` records (or the ``train.json`` beside it); an explicit label overrides it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.errors import UsageError
from flatkit.plots.style import arm_sort_key, canonical_arm

RESULT_NAMES = ("hessian", "sharpness", "perturb", "landscape", "exposure", "prior", "quantize", "sample")


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
    return np.array([np.nan if x is None else x for x in np.ravel(np.asarray(v, dtype=object))],
                    dtype=np.float64).reshape(np.shape(v))


@dataclass
class RunDir:
    """One run folder: its results (JSON dicts), where its arm label came from, and notes on what was odd."""

    path: Path
    label: str
    arm: str | None  # the paper's spelling when the label is one of its arms
    label_source: str  # "given" (--label or the caller), "train config (<file>)", "folder name"
    checkpoint: str | None = None
    sha256: str | None = None
    weights: str | None = None
    train_config: dict | None = None
    results: dict[str, dict] = field(default_factory=dict)
    fids: list[dict] = field(default_factory=list)  # each: the fid.json dict plus "_file", "_steps", "_sampler"
    notes: list[str] = field(default_factory=list)
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)

    def has(self, name: str) -> bool:
        return name in self.results

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """``<name>.npz`` of this folder (empty when absent or unreadable)."""
        if name not in self._arrays:
            p = self.path / f"{name}.npz"
            try:
                with np.load(p) as z:
                    self._arrays[name] = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                self._arrays[name] = {}
        return self._arrays[name]

    def describe(self) -> dict:
        return {"label": self.label, "arm": self.arm, "dir": str(self.path), "label_source": self.label_source,
                "checkpoint": self.checkpoint, "checkpoint_sha256": self.sha256, "weights": self.weights,
                "results": sorted(self.results) + (["fid"] if self.fids else []), "notes": list(self.notes)}


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


# ------------------------------------------------------------------------------------------------ reading
def _read_json(p: Path, notes: list[str]) -> dict | None:
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{p.name}: unreadable ({type(e).__name__}), ignored")
        return None
    if not isinstance(d, dict):
        notes.append(f"{p.name}: not a result object, ignored")
        return None
    return d


def _sample_info(fid: dict, folder: Path) -> tuple[int | None, str | None, dict | None]:
    """T' and sampler of the samples a fid.json measured: from the sample.json beside the samples file."""
    samples = ((fid.get("meta") or {}).get("config") or {}).get("samples")
    places = []
    if samples:
        places += [c.parent / "sample.json" for c in _candidates(samples, folder)]
    places.append(folder / "sample.json")
    for sj in places:
        if sj.is_file():
            try:
                s = json.loads(sj.read_text())
            except (OSError, ValueError):
                continue
            sampler = s.get("sampler") or {}
            steps = sampler.get("steps")
            return (int(steps) if steps is not None else None), sampler.get("sampler"), s.get("meta")
    return None, None, None


def read_run_dir(path: str | Path, label: str | None = None) -> RunDir:
    """Read every result file of one run folder; a folder with none is a usage error (exit 2)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{path}: not a directory")
    notes: list[str] = []
    results: dict[str, dict] = {}
    for name in RESULT_NAMES:
        p = folder / f"{name}.json"
        if p.is_file():
            d = _read_json(p, notes)
            if d is not None:
                results[name] = d
    fid_files = sorted(folder.glob("fid*.json")) + sorted(folder.glob("*/fid.json"))
    fids = []
    for p in fid_files:
        d = _read_json(p, notes)
        if d is None:
            continue
        steps, sampler, smeta = _sample_info(d, p.parent)
        d["_file"] = str(p.relative_to(folder))
        d["_steps"], d["_sampler"], d["_sample_meta"] = steps, sampler, smeta
        fids.append(d)
    if not results and not fids:
        raise UsageError(f"{path}: no flatkit result files here (expected any of "
                         f"{', '.join(n + '.json' for n in RESULT_NAMES)}, fid.json)")

    # identity: the checkpoint and weights every result's meta records (they should agree)
    idents = []
    for name, d in results.items():
        m = d.get("meta") or {}
        if m.get("checkpoint") or m.get("checkpoint_sha256"):
            idents.append((name, m.get("checkpoint"), m.get("checkpoint_sha256"), m.get("weights")))
    for d in fids:
        sm = d.get("_sample_meta") or {}
        if sm.get("checkpoint"):
            idents.append((d["_file"], sm.get("checkpoint"), sm.get("checkpoint_sha256"), sm.get("weights")))
    ckpt = sha = weights = None
    if idents:
        _, ckpt, sha, weights = idents[0]
        odd = [f"{n} ({Path(c or '?').name}:{w})" for n, c, s, w in idents[1:]
               if (s and sha and s != sha) or (w and weights and w != weights)]
        if odd:
            notes.append(f"results from another checkpoint or weights than {idents[0][0]} "
                         f"({Path(ckpt or '?').name}:{weights}): {', '.join(odd)}; the folder is labelled by "
                         f"{idents[0][0]}")
    for name in ("perturb", "landscape"):
        if name in results and len(results[name].get("labels") or []) > 1:
            notes.append(f"{name}.json holds {len(results[name]['labels'])} models; the first (the folder's "
                         "checkpoint) is used")
    for name in ("prior", "exposure"):
        if name in results and len(results[name].get("checkpoints") or []) > 1:
            notes.append(f"{name}.json holds {len(results[name]['checkpoints'])} checkpoints; the first is used")

    train_cfg, found = read_train_config(ckpt, folder)
    if label is not None:
        lab, source = label, "given"
    elif train_cfg is not None:
        lab, source = arm_label(train_cfg, weights), f"train config ({found})"
    else:
        lab, source = folder.resolve().name, "folder name"
        why = (f"checkpoint {ckpt} not found" if ckpt and found is None
               else f"{found} records no training configuration" if found else "no checkpoint recorded")
        notes.append(f"arm unknown ({why}): labelled by the folder name; pass --label {path}=NAME")
    return RunDir(path=folder, label=lab, arm=canonical_arm(lab), label_source=source, checkpoint=ckpt,
                  sha256=sha, weights=weights, train_config=train_cfg, results=results, fids=fids, notes=notes)


def read_run_dirs(dirs: list[str | Path], labels: dict[str, str] | None = None) -> list[RunDir]:
    """Read each folder (``labels`` maps a folder, as given or resolved, to a label), in the paper's arm order;
    repeated labels get ``#2``, ``#3`` … so each curve stays distinguishable."""
    labels = dict(labels or {})
    lab_by_res = {str(Path(k).resolve()): v for k, v in labels.items()}
    runs = []
    for d in dirs:
        lab = labels.get(str(d), lab_by_res.get(str(Path(d).resolve())))
        runs.append(read_run_dir(d, lab))
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.notes.append(f"label {r.label} already used by another folder: shown as {r.label}#{seen[r.label]}")
            r.label = f"{r.label}#{seen[r.label]}"
            r.arm = None
    return sorted(runs, key=lambda r: arm_sort_key(r.label))


# ------------------------------------------------------------------------------------------------ measures
def sampler_of(result: dict) -> tuple[int | None, str | None]:
    s = ((result.get("meta") or {}).get("config") or {}).get("sampler") or {}
    steps = s.get("steps")
    return (int(steps) if steps is not None else None), s.get("sampler")


def perturb_curves(run: RunDir) -> dict | None:
    """ΔL(r) of the folder's model: radii, random mean and std over K directions, worst case, L(θ)."""
    d = run.results.get("perturb")
    if d is None:
        return None
    radii = np.asarray(d["radii"], dtype=np.float64)
    mean = _nan_array(d["mean"])
    std = _nan_array(d["std"])
    worst = _nan_array(d.get("worst") or [])
    return {"radii": radii, "mean": mean[0], "std": std[0], "worst": worst[0] if worst.size else None,
            "loss0": _num((d.get("loss0") or [None])[0]), "relative": d.get("relative"), "k": d.get("k"),
            "worst_steps": d.get("worst_steps")}


def landscape_flatness(run: RunDir, radius: float | None = None) -> dict | None:
    """The landscape flatness number: mean of L(θ + α d₁ + β d₂) − L(θ) over the grid points of the slice with
    0 < ‖(α, β)‖₂ ≤ r (|α| ≤ r in 1-D), NaN points left out. ``radius`` None: the largest disc inside the
    grid, r = min(|α_min|, α_max, |β_min|, β_max)."""
    d = run.results.get("landscape")
    if d is None:
        return None
    arrs = run.arrays("landscape")
    vals = arrs.get("values")
    if vals is None:
        vals = d.get("values")
        if not isinstance(vals, list):
            return None
    vals = _nan_array(vals)[0]
    a = np.asarray(arrs.get("coords_a", d.get("coords_a")), dtype=np.float64)
    dims = int(d.get("dims", vals.ndim))
    centre = _num((d.get("loss_centre") or [None])[0])
    if dims == 2:
        b = np.asarray(arrs.get("coords_b", d.get("coords_b")), dtype=np.float64)
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
            "loss_centre": centre, "dims": dims, "directions": d.get("directions"), "norm": d.get("norm"),
            "values": vals, "coords_a": a, "coords_b": b if dims == 2 else None}


def exposure_curves(run: RunDir) -> dict | None:
    d = run.results.get("exposure")
    if d is None:
        return None
    e = (d.get("checkpoints") or [d])[0]
    steps, sampler = sampler_of(d)
    return {"t": np.asarray(e["t"], dtype=np.float64), "sampling": _nan_array(e["sampling_norm"]),
            "training": _nan_array(e["training_norm"]), "gap": _nan_array(e["gap"]),
            "gap_last": _num(e.get("gap_last")), "gap_mean": _num(e.get("gap_mean")),
            "delta_mean": _num(e.get("delta_mean")), "norm": d.get("norm", "l2"), "steps": steps,
            "sampler": sampler}


def prior_points(run: RunDir) -> dict | None:
    d = run.results.get("prior")
    if d is None:
        return None
    e = (d.get("checkpoints") or [d])[0]
    steps, sampler = sampler_of(d)
    keys = [(k, float(m), float(s), float(eta)) for k, m, s, eta in zip(d["kind"], d["mu"], d["s"], d["eta"],
                                                                       strict=True)]
    return {"points": keys, "kl": [_num(x) for x in d["kl"]], "drift_mse": [_num(x) for x in e["drift_mse"]],
            "loss_change": [_num(x) for x in e.get("loss_change", [])],
            "distance": [_num(x) for x in e.get("distance", [])], "distance_name": d.get("distance_name", ""),
            "steps": steps, "sampler": sampler}


def prior_point_name(key: tuple) -> str:
    kind, mu, s, eta = key
    return f"μ={mu:g}, s={s:g}" if kind == "shift_scale" else f"η={eta:g}"


def quantize_table(run: RunDir) -> dict | None:
    d = run.results.get("quantize")
    if d is None:
        return None
    steps, sampler = sampler_of(d)
    return {"bits": [int(b) for b in d["bits"]], "loss_fp": _num(d.get("loss_fp")),
            "loss_change": [_num(x) for x in d["loss_change"]], "drift_mse": [_num(x) for x in d["drift_mse"]],
            "distance": [_num(x) for x in d.get("distance", [])], "distance_fp": _num(d.get("distance_fp")),
            "weight_rel_error": [_num(x) for x in d.get("weight_rel_error", [])],
            "granularity": d.get("granularity"), "distance_name": d.get("distance_name", ""), "steps": steps,
            "sampler": sampler}


def flatness_numbers(run: RunDir) -> dict:
    """λ_max, trace (± standard error) and sharpness of the folder's model, where recorded."""
    out: dict[str, Any] = {}
    h = run.results.get("hessian")
    if h is not None:
        te = h.get("top_eigenvalues") or {}
        ev = te.get("eigenvalues") or []
        if ev:
            out["lambda_max"] = _num(ev[0])
            out["lambda_max_converged"] = te.get("converged")
        tr = h.get("trace") or {}
        if tr:
            out["trace"] = _num(tr.get("estimate"))
            out["trace_stderr"] = _num(tr.get("stderr"))
            out["trace_method"] = tr.get("method")
        out["loss"] = _num(h.get("loss"))
    s = run.results.get("sharpness")
    if s is not None:
        out["sharpness"] = _num(s.get("value"))
        out["sharpness_kind"] = s.get("kind")
        out["sharpness_eps"] = _num(s.get("eps"))
    return out


def quality_cells(run: RunDir) -> list[dict]:
    """Every sample-quality number the folder holds: FID (fid.json with a detector), else the weight-free
    sliced Wasserstein-2 distance (fid.json without a detector, quantize at full precision, prior at N(0, I)).
    Each: value, metric ("FID" or "SW2"), T', sampler, source file, n samples."""
    cells = []
    for f in run.fids:
        if _num(f.get("fid")) is not None:
            cells.append({"value": _num(f["fid"]), "metric": "FID", "steps": f["_steps"], "sampler": f["_sampler"],
                          "source": f["_file"], "n": f.get("n_samples"), "rank": 0})
        elif _num((f.get("weight_free") or {}).get("sw2")) is not None:
            cells.append({"value": _num(f["weight_free"]["sw2"]), "metric": "SW2", "steps": f["_steps"],
                          "sampler": f["_sampler"], "source": f["_file"], "n": f.get("n_samples"), "rank": 1})
    q = run.results.get("quantize")
    if q is not None and _num(q.get("distance_fp")) is not None:
        steps, sampler = sampler_of(q)
        cells.append({"value": _num(q["distance_fp"]), "metric": "SW2", "steps": steps, "sampler": sampler,
                      "source": "quantize.json (full precision)",
                      "n": ((q.get("meta") or {}).get("config") or {}).get("sampler", {}).get("n"), "rank": 2})
    p = run.results.get("prior")
    if p is not None:
        e = (p.get("checkpoints") or [p])[0]
        for i, (k, mu, s) in enumerate(zip(p["kind"], p["mu"], p["s"], strict=True)):
            if k == "shift_scale" and float(mu) == 0.0 and float(s) == 1.0 and i < len(e.get("distance", [])):
                v = _num(e["distance"][i])
                if v is not None:
                    steps, sampler = sampler_of(p)
                    cells.append({"value": v, "metric": "SW2", "steps": steps, "sampler": sampler,
                                  "source": "prior.json (unperturbed prior)",
                                  "n": ((p.get("meta") or {}).get("config") or {}).get("sampler", {}).get("n"),
                                  "rank": 3})
                break
    return cells


def sample_sources(run: RunDir) -> dict[str, np.ndarray]:
    """Full-precision image samples of the folder's model (uint8 NHWC) by source: ``samples.npz`` (flatkit
    sample), ``quantize.npz`` (its full-precision row), ``prior.npz`` (the row of the prior N(0, I))."""
    out: dict[str, np.ndarray] = {}
    if run.has("sample") and (run.path / "samples.npz").is_file():
        try:
            with np.load(run.path / "samples.npz") as z:
                x = z["arr_0"]
            if x.ndim == 4 and x.dtype == np.uint8:
                out["samples.npz"] = x
        except (OSError, ValueError, KeyError):
            pass
    q = run.arrays("quantize").get("previews")
    if q is not None and q.ndim == 5:
        out["quantize.npz"] = q[0]
    p = run.arrays("prior").get("previews")
    pr = run.results.get("prior")
    if p is not None and p.ndim == 5 and pr is not None:
        for i, (k, mu, s) in enumerate(zip(pr["kind"], pr["mu"], pr["s"], strict=True)):
            if k == "shift_scale" and float(mu) == 0.0 and float(s) == 1.0 and i < p.shape[0]:
                out["prior.npz"] = p[i]
                break
    return out


SAMPLE_SOURCES = ("samples.npz", "quantize.npz", "prior.npz")


def sample_previews(runs: list[RunDir]) -> list[tuple[str, np.ndarray, str]]:
    """(label, samples, source) per folder with image samples; the source most folders share is used where a
    folder has it (so columns are paired by seed across arms when their seeds agree)."""
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
