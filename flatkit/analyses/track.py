"""Measures along training: every saved checkpoint of one or more training runs, on one bank.

``flatkit train --keep-checkpoints`` leaves ``DIR/ckpt_<step>.pt`` at every save (and ``DIR/ckpt.pt``, the final
one). :func:`track` measures each of them (each ``weights`` choice of each) with the chosen measures (hessian,
sharpness, landscape, perturb, quantize), every one with the SAME frozen bank of (x0, t, ε), the same seed (so
the same random directions, probes and samples) across checkpoints and runs, and writes one ordinary result per
(run, weights, step, measure)::

    OUT/track.json                                   the index (TrackResult): every point and its scalars
    OUT/<run>/<weights>/step_<N>/<measure>.json      (+ .npz): the measure's own result, read by XResult.load
    OUT/track.png, track.pdf                         each scalar against the training step (flatkit.plots.track)

A rerun (or a run after an interruption) skips every point whose result files are there with the same settings
and checkpoint bytes (sha256) and computes only the rest: the numbers do not depend on what ran before, since
each point is computed from the frozen bank and the seed alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.errors import UsageError
from flatkit.results import Result, file_sha256, jsonable
from flatkit.settings import (
    ANALYSES,
    TRACK_MEASURES,
    BankSettings,
    TrackSettings,
    takes,
)

#: the bank fields every measure shares with the track settings (one bank, one seed)
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(BankSettings))

_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


@dataclass
class TrackResult(Result):
    """The index of a ``track`` folder: one entry per (run, weights, step) with the files of its results and the
    scalars read from them (``lambda_max``, ``trace``, ``sharpness``, ``quantize_drift_<b>bit``, ``loss``, ...).

    ``points[i]``: ``run`` (the run's label), ``run_dir``, ``weights``, ``step``, ``checkpoint``,
    ``checkpoint_sha256``, ``folder`` (relative to the track folder), ``files`` (measure -> json file, relative),
    ``bank_sha256`` (the frozen bank each measure ran on: one value for the whole folder) and ``scalars`` (each
    measure's own numbers: with ``--repeats``, repeat 0's); with ``--repeats R > 1`` also ``intervals`` (per
    scalar: ``mean``, ``se``, ``lo``, ``hi`` of the 95 % interval and ``n`` over the R repeats).
    """

    name = "track"

    measures: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    runs: list = field(default_factory=list)  # [{"label", "dir", "folder"}], in the order given
    points: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # measure -> its settings (as recorded in its result)
    bank_sha256: str | None = None
    complete: bool = False
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)

    def series(self, key: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(run, weights) -> (steps, values) of one scalar, in step order (NaN where not recorded)."""
        out: dict[tuple[str, str], list] = {}
        for p in self.points:
            v = (p.get("scalars") or {}).get(key)
            out.setdefault((p["run"], p["weights"]), []).append((p["step"], np.nan if v is None else float(v)))
        return {k: (np.array([s for s, _ in sorted(v)], dtype=float), np.array([x for _, x in sorted(v)]))
                for k, v in out.items()}

    def bands(self, key: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """With ``--repeats``: (run, weights) -> (steps, mean, lo, hi) of one scalar's 95 % interval over the
        repeats, in step order (NaN where not recorded); empty when no point has an interval of it."""
        out: dict[tuple[str, str], list] = {}
        for p in self.points:
            iv = (p.get("intervals") or {}).get(key) or {}
            row = [np.nan if iv.get(k) is None else float(iv[k]) for k in ("mean", "lo", "hi")]
            out.setdefault((p["run"], p["weights"]), []).append((p["step"], *row))
        if not any(np.isfinite(r[2]) for v in out.values() for r in v):
            return {}
        return {k: tuple(np.array(c, dtype=float) for c in zip(*sorted(v), strict=True))  # type: ignore[misc]
                for k, v in out.items()}

    @property
    def n_repeats(self) -> int:
        """R of ``--repeats`` (1 without)."""
        return int(((self.meta or {}).get("config") or {}).get("track", {}).get("repeats", 1) or 1)


# ------------------------------------------------------------------------------------------------ checkpoints
@dataclass
class Checkpoint:
    """One saved checkpoint of a run: its step and file."""

    step: int
    path: Path


def run_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Every checkpoint of a training folder in step order: ``ckpt_<step>.pt`` (``--keep-checkpoints``) and the
    final ``ckpt.pt`` when no ``ckpt_<step>.pt`` has its step. A folder with none is a usage error."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UsageError(f"RUN_DIR {run_dir}: not a directory (a training folder of flatkit train)")
    out = {int(m.group(1)): p for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and p.is_file()}
    final = d / "ckpt.pt"
    if final.is_file():
        step = checkpoint_step(final)
        if step is None:
            raise UsageError(f"RUN_DIR {run_dir}: {final} records no training step (not a flatkit training "
                             "checkpoint)")
        out.setdefault(step, final)
    if not out:
        raise UsageError(f"RUN_DIR {run_dir}: no checkpoints (ckpt_<step>.pt from flatkit train "
                         "--keep-checkpoints, or ckpt.pt)")
    return [Checkpoint(s, out[s]) for s in sorted(out)]


def checkpoint_step(path: Path) -> int | None:
    """The training step a flatkit checkpoint records (None when it records none)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - an unreadable file is a usage error naming it
        raise UsageError(f"RUN_DIR {path.parent}: {path.name} is not a readable checkpoint ({type(e).__name__})"
                         ) from None
    step = obj.get("step") if isinstance(obj, dict) else None
    return int(step) if step is not None else None


def run_labels(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[str]:
    """The label of each run: ``labels`` as given, else the paper's arm from its training configuration (ADM, +IP,
    +SAM, ...), else the folder name; repeats get ``#2``, ``#3``."""
    from flatkit.labels import unique

    if labels is not None:
        labels = [str(x).strip() for x in labels]
        if len(labels) != len(run_dirs):
            raise UsageError(f"labels: {len(labels)} label(s) for {len(run_dirs)} run(s)")
        if any(not x for x in labels):
            raise UsageError("labels: an empty label")
        return unique(labels)
    out = []
    for d in run_dirs:
        cfg = None
        tj = Path(d) / "train.json"
        if tj.is_file():
            try:
                cfg = json.loads(tj.read_text()).get("config")
            except (OSError, ValueError, AttributeError):
                cfg = None
        if isinstance(cfg, dict):
            from flatkit.report.collect import arm_label

            out.append(arm_label(cfg, "raw"))
        else:
            out.append(Path(d).resolve().name)
    return unique(out)


def _folder_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """A folder name per run under the track folder: the run folder's name, made unique and safe."""
    from flatkit.labels import unique

    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(d).resolve().name) or "run" for d in run_dirs]
    return [n.replace("#", "-") for n in unique(names)]


# ------------------------------------------------------------------------------------------------ settings
def resolve_measure_settings(settings: TrackSettings, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each measure's settings: ``given[name]`` (or the measure's defaults), with the track's bank fields (one
    bank, one seed for every measure); a given measure's bank field that differs is an error."""
    given = dict(given or {})
    extra = [k for k in given if k not in settings.measures]
    if extra:
        raise UsageError(f"measure_settings: {extra[0]} is not one of measures ({','.join(settings.measures)})")
    out = {}
    bank = {k: getattr(settings, k) for k in SHARED_FIELDS}
    for name in settings.measures:
        cls = ANALYSES[name]
        s = given.get(name)
        if s is None:
            s = cls(**bank)
        elif not isinstance(s, cls):
            raise UsageError(f"measure_settings: {name} needs {cls.__name__}, got {type(s).__name__}")
        else:
            defaults = cls()
            for k, v in bank.items():
                mine = getattr(s, k)
                if mine != getattr(defaults, k) and mine != v:
                    why = "one R for every measure" if k == "repeats" else "one bank for every measure"
                    raise UsageError(f"{k}: {name} gives {mine!r} but the track {v!r}: {why}")
            s = dataclasses.replace(s, **bank)
        if name == "hessian" and (s.include or s.exclude or s.per_timestep):
            raise UsageError("per_timestep/include/exclude: not available in track (one bank and one parameter "
                             "set for every measure)")
        if name == "landscape" and s.directions not in ("random", "eigen"):
            raise UsageError(f"directions {s.directions}: track draws random or eigen directions at each "
                             "checkpoint (interp and pca need other checkpoints)")
        out[name] = s
    return out


# ------------------------------------------------------------------------------------------------ scalars
def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _first_row(v: Any) -> Any:
    a = np.asarray(v, dtype=float) if v is not None else np.zeros(0)
    return a[0] if a.ndim >= 2 and a.shape[0] else a


def point_scalars(name: str, res: Any) -> dict[str, float | None]:
    """The scalars of one measure's result of one model (what the track figure draws)."""
    if name == "hessian":
        ev = res.eigenvalues[0] if res.eigenvalues else []
        return {"loss": _f(res.loss[0]) if res.loss else None, "lambda_max": _f(ev[0]) if ev else None,
                "trace": _f(res.trace[0]) if res.trace else None,
                "trace_stderr": _f(res.trace_stderr[0]) if res.trace_stderr else None}
    if name == "sharpness":
        return {"sharpness": _f(res.value[0]), "loss": _f(res.loss0[0])}
    if name == "perturb":
        mean, worst = _first_row(res.mean), _first_row(res.worst)
        return {"perturb_random": _f(mean[-1]) if mean.size else None,
                "perturb_worst": _f(worst[-1]) if worst.size else None, "loss": _f(res.loss0[0])}
    if name == "landscape":
        vals = np.asarray(res.values, dtype=float)
        vals = vals[0] if vals.ndim == int(res.dims) + 1 else vals
        centre = _f(res.loss_centre[0]) if res.loss_centre else None
        mean = float(np.nanmean(vals)) - centre if centre is not None and np.isfinite(vals).any() else None
        return {"landscape_mean_dl": _f(mean), "loss": centre}
    if name == "quantize":
        out: dict[str, float | None] = {"loss": _f(res.loss_fp[0])}
        for i, b in enumerate(res.bits):
            out[f"quantize_drift_{b}bit"] = _f(res.drift_mse[0][i])
            out[f"quantize_loss_change_{b}bit"] = _f(res.loss_change[0][i])
        return out
    raise UsageError(f"measures {name!r}: unknown measure")


def point_intervals(name: str, res: Any) -> dict[str, dict]:
    """With ``--repeats R``: per scalar of :func:`point_scalars`, the mean, standard error and 95 % interval over
    the R repeats (from the result's ``intervals``); empty without repeats."""
    from flatkit.repeats import interval_at, track_source

    ivs = getattr(res, "intervals", None) or {}
    if not ivs:
        return {}
    out = {}
    for key in point_scalars(name, res):
        src = track_source(key, name, getattr(res, "bits", None) or ())
        iv = interval_at(ivs, src[1], 0, *src[2:]) if src is not None and src[0] == name else None
        if iv is not None:
            out[key] = {"mean": iv.mean, "se": _f(iv.se), "lo": _f(iv.lo), "hi": _f(iv.hi), "n": iv.n}
    return out


# ------------------------------------------------------------------------------------------------ one point
def _same(a: Any, b: Any) -> bool:
    return json.dumps(jsonable(a), sort_keys=True) == json.dumps(jsonable(b), sort_keys=True)


def _existing(folder: Path, name: str, s: Any, sha: str, weights: str, overwrite: bool) -> Any:
    """The result of measure ``name`` already in ``folder`` for these settings and checkpoint bytes (else None;
    a result of other settings or another checkpoint is refused unless ``overwrite``)."""
    from flatkit.report.collect import load_result

    if overwrite or not (folder / f"{name}.json").is_file():
        return None
    try:
        res = load_result(folder, name)
    except UsageError:
        res = None
    meta = getattr(res, "meta", None) or {}
    if res is not None and _same(meta.get("config"), s.to_dict()) and meta.get("checkpoint_sha256") == sha \
            and meta.get("weights") == weights and getattr(res, "complete", True) is not False:
        return res
    raise UsageError(f"out {folder}: holds a {name} result of other settings or another checkpoint "
                     f"({folder / (name + '.json')}); pass overwrite to replace it, or another out")


def _measure(name: str, s: Any, run: Any, obj: Any, label: str, device: Any, progress: bool) -> Any:
    """Run one measure on one model (its objective ``obj`` on the shared bank) and return its result with the
    command's meta (settings, checkpoint, step, versions)."""
    from flatkit.results import make_meta

    t0 = time.perf_counter()
    if name == "quantize":
        from flatkit.analyses.robustness.quantize import quantize

        return quantize(run, labels=[label], settings=s, device=device, progress=progress)
    if name == "hessian":
        from flatkit.analyses.hessian import hessian

        res = hessian(obj, labels=[label], settings=s)
    elif name == "sharpness":
        from flatkit.analyses.sharpness import sharpness

        res = sharpness(obj, labels=[label], settings=s)
    elif name == "perturb":
        from flatkit.analyses.perturb import perturb

        res = perturb(obj, labels=[label], settings=s)
    else:
        from flatkit.analyses.landscape import landscape

        res = landscape(obj, directions=s.directions, labels=[label], settings=s)
    meta = dict(res.meta or {})
    meta.update(make_meta(config=s, runs=[run], labels=[label], device=obj.device,
                          wall_time_s=time.perf_counter() - t0,
                          data_fingerprint=getattr(obj.config, "data_fingerprint", None)))
    res.meta = meta
    return res


def _objective(run: Any, hs: Any, obj0: Any) -> Any:
    """The objective of ``run`` on the shared bank: ``obj0``'s bank (built from the first checkpoint measured),
    or a new one of the track's bank settings ``hs``."""
    if obj0 is not None:
        return obj0.for_run(run)
    import inspect

    from flatkit.objective import Objective

    kw = {"bank": hs.bank} if "bank" in inspect.signature(Objective).parameters and hasattr(hs, "bank") else {}
    return Objective(run, data=hs.data, n=hs.n_eval, seed=hs.seed, loss=hs.loss, batch_size=hs.batch_size, **kw)


# ------------------------------------------------------------------------------------------------ the track
@dataclass
class _Point:
    run: int
    label: str
    run_dir: str
    weights: str
    ckpt: Checkpoint
    sha256: str
    folder: Path


def plan(run_dirs: Sequence[str | Path], out: str | Path, settings: TrackSettings,
         labels: Sequence[str] | None = None) -> tuple[list[_Point], list[dict]]:
    """Every (run, weights, step) point of the track (runs in the order given, then weights, then steps) and the
    runs' records; checkpoints are found and hashed, nothing is loaded."""
    if not run_dirs:
        raise UsageError("RUN_DIR: at least one training folder is required")
    out = Path(out)
    labs, names = run_labels(run_dirs, labels), _folder_names(run_dirs)
    points, runs = [], []
    for r, d in enumerate(run_dirs):
        cks = run_checkpoints(d)
        runs.append({"label": labs[r], "dir": str(d), "folder": names[r], "steps": [c.step for c in cks]})
        for w in settings.weights:
            for c in cks:
                points.append(_Point(r, labs[r], str(d), w, c, file_sha256(c.path),
                                     out / names[r] / w / f"step_{c.step}"))
    return points, runs


def identity(points: Sequence[_Point]) -> list:
    """What the index's ``meta.checkpoints`` records of the inputs: [sha256, weights] of every point."""
    return [[p.sha256, p.weights] for p in points]


def track_config(settings: TrackSettings, ms: dict[str, Any]) -> dict:
    """The configuration the index records (and the output policy compares): the track's and each measure's."""
    return {"track": settings.to_dict(), **{k: v.to_dict() for k, v in ms.items()}}


@takes(TrackSettings)
def track(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    measure_settings: dict[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    device: Any = None,
    overwrite: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    *,
    settings: TrackSettings,
) -> TrackResult:
    """Measure every checkpoint of each training folder in ``run_dirs`` (see the module docstring) into ``out``
    and return the index (also saved as ``out/track.json``).

    ``measure_settings``: measure name -> its settings (e.g. ``{"hessian": HessianSettings(trace=True)}``);
    missing measures take their defaults; the bank fields (data, n_eval, seed, batch_size, loss) are the
    track's. ``labels``: one per run (default: the arm of its training configuration). A point whose result is
    in ``out`` with the same settings and checkpoint bytes is read back, not recomputed (``overwrite``:
    recompute every point). ``echo``: called with one progress line per point. ``progress``: the measures'
    progress bars (off by default in Python; the command turns them on unless ``--no-progress``).
    """
    from flatkit import outputs
    from flatkit.results import make_meta

    t0 = time.perf_counter()
    s = settings
    out = Path(out)
    points, runs = plan(run_dirs, out, s, labels)
    if s.data is None:  # one bank for every run: the data the first checkpoint records, stated explicitly
        s = dataclasses.replace(s, data=_recorded_data(points[0].ckpt.path))
    ms = resolve_measure_settings(s, measure_settings)
    cfg = track_config(s, ms)
    state = outputs.decide(out, "track", config=cfg, identity=identity(points), overwrite=overwrite,
                           option="out", one_checkpoint=False)
    outputs.lock_out(out, "out")
    dev = _device(device)
    res = TrackResult(measures=list(s.measures), weights=list(s.weights), runs=runs,
                      settings={k: v.to_dict() for k, v in ms.items()})
    res.meta = make_meta(config=cfg, device=dev)
    res.meta["checkpoints"] = [{"label": p.label, "checkpoint": str(p.ckpt.path), "checkpoint_sha256": p.sha256,
                                "weights": p.weights, "step": p.ckpt.step, "run_dir": p.run_dir} for p in points]
    res.save(out)  # the unfinished index: a rerun of the same settings resumes
    obj0 = None
    from flatkit import progress as progress_state

    was = progress_state.enabled()
    progress_state.configure(was and progress)  # progress=False: no measure draws a bar either
    try:
        for i, p in enumerate(points):
            t1 = time.perf_counter()
            entry, obj0, computed = _track_point(p, s, ms, obj0, dev, overwrite or state.state == "overwrite",
                                                 progress, out)
            res.points.append(entry)
            res.bank_sha256 = res.bank_sha256 or entry["bank_sha256"]
            if entry["bank_sha256"] not in (None, res.bank_sha256):
                raise UsageError(f"out {p.folder}: measured on another bank ({entry['bank_sha256']} vs "
                                 f"{res.bank_sha256}): one bank for every point")
            res.wall_time_s = time.perf_counter() - t0
            res.save(out)
            if echo is not None:
                echo(_line(i, len(points), entry, computed, time.perf_counter() - t1))
    finally:
        progress_state.configure(was)
    res.complete = True
    res.wall_time_s = time.perf_counter() - t0
    res.save(out)
    return res


def _device(device: Any) -> Any:
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _recorded_data(path: Path) -> str | None:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    cfg = obj.get("config") if isinstance(obj, dict) else None
    return cfg.get("data") if isinstance(cfg, dict) else None


def _track_point(p: _Point, s: TrackSettings, ms: dict[str, Any], obj0: Any, dev: Any, overwrite: bool,
                 progress: bool, out: Path) -> tuple[dict, Any, list[str]]:
    """Measure one (run, weights, step) point (or read its results back): its index entry, the shared-bank
    objective and the measures computed."""
    from flatkit.run import load

    done = {name: _existing(p.folder, name, ms[name], p.sha256, p.weights, overwrite) for name in s.measures}
    todo = [name for name in s.measures if done[name] is None]
    bank = None
    if todo:
        try:
            run = load(str(p.ckpt.path), weights=p.weights, device=dev)
        except UsageError as e:
            if "has no such weights" not in str(e):
                raise
            return _missing_entry(p, out, s, str(e).split(": ", 1)[-1]), obj0, []  # e.g. swa before --swa-start
        if run.step is not None and int(run.step) != p.ckpt.step:
            raise UsageError(f"RUN_DIR {p.run_dir}: {p.ckpt.path.name} records step {run.step}")
        label = f"{p.label}:{p.weights}@{p.ckpt.step}"
        obj = _objective(run, next(iter(ms.values())), obj0)
        obj0 = obj0 if obj0 is not None else obj
        bank = obj.config.bank_sha256
        for name in todo:
            res = _measure(name, ms[name], run, obj, label, dev, progress)
            res.meta["track"] = {"run": p.label, "run_dir": p.run_dir, "step": p.ckpt.step,
                                 "bank_sha256": bank}
            res.save(p.folder)
            done[name] = res
    scalars: dict[str, float | None] = {}
    intervals: dict[str, dict] = {}
    for name in s.measures:
        for k, v in point_scalars(name, done[name]).items():
            scalars.setdefault(k, v)
        for k, v in point_intervals(name, done[name]).items():
            intervals.setdefault(k, v)
        bank = bank or ((done[name].meta or {}).get("track") or {}).get("bank_sha256")
    entry = {"run": p.label, "run_dir": p.run_dir, "weights": p.weights, "step": p.ckpt.step,
             "checkpoint": str(p.ckpt.path), "checkpoint_sha256": p.sha256,
             "folder": str(p.folder.relative_to(out)),
             "files": {n: str((p.folder / f"{n}.json").relative_to(out)) for n in s.measures},
             "bank_sha256": bank, "scalars": scalars}
    if intervals:  # --repeats R > 1: mean, se and 95 % interval of each scalar over the repeats
        entry["intervals"] = intervals
    return entry, obj0, todo


def _missing_entry(p: _Point, out: Path, s: TrackSettings, why: str) -> dict:
    """The index entry of a checkpoint without the weights asked for (SWA before --swa-start): no scalars."""
    return {"run": p.label, "run_dir": p.run_dir, "weights": p.weights, "step": p.ckpt.step,
            "checkpoint": str(p.ckpt.path), "checkpoint_sha256": p.sha256, "folder": str(p.folder.relative_to(out)),
            "files": {}, "bank_sha256": None, "scalars": {}, "missing": why}


def _line(i: int, n: int, e: dict, computed: list[str], wall: float) -> str:
    if e.get("missing"):
        return f"track [{i + 1}/{n}] {e['run']}:{e['weights']} step {e['step']}: skipped ({e['missing']})"
    sc, ivs = e["scalars"], e.get("intervals") or {}

    def num(key: str) -> str:
        iv = ivs.get(key)
        if iv and iv.get("se") is not None:
            return f"{iv['mean']:.4g} ± {iv['se']:.2g}"
        return f"{sc[key]:.4g}"

    bits = []
    for key, word in (("lambda_max", "λ_max"), ("trace", "trace"), ("sharpness", "sharpness"),
                      ("perturb_random", "ΔL perturb"), ("landscape_mean_dl", "ΔL landscape")):
        if sc.get(key) is not None:
            bits.append(f"{word} {num(key)}")
    drift = sorted((int(k.split("_")[2][:-3]), k) for k in sc if k.startswith("quantize_drift_"))
    if drift and sc.get(drift[0][1]) is not None:
        bits.append(f"drift {drift[0][0]}-bit {num(drift[0][1])}")
    if sc.get("loss") is not None:
        bits.append(f"L(θ) {num('loss')}")
    if ivs:
        bits.append(f"mean ± se over {max(int(v.get('n') or 0) for v in ivs.values())} repeats")
    how = f"{wall:.1f} s" if computed else "reused"
    return f"track [{i + 1}/{n}] {e['run']}:{e['weights']} step {e['step']}: {', '.join(bits)} ({how})"


def load_track(folder: str | Path) -> TrackResult:
    """The index of a track folder (``track.json``)."""
    return TrackResult.load(folder)


__all__ = ["TRACK_MEASURES", "TrackResult", "TrackSettings", "load_track", "point_scalars", "resolve_measure_settings",
           "run_checkpoints", "track"]
