"""Checkpoints of one training run at several steps, in ``flatkit report`` / ``flatkit figures``: a ``flatkit
track`` folder stands for its step folders, models that are the same run and weights at different steps are
labelled by their step (with a note, never silently merged), and ``trajectory.png`` draws each measure against
the training step, one line per run and weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.errors import UsageError


def track_folders(folder: Path) -> list[Path] | None:
    """The result folders a ``flatkit track`` folder lists in its ``track.json`` (None when ``folder`` is not
    one); a listed folder that is missing is a usage error naming it."""
    index = folder / "track.json"
    if not index.is_file():
        return None
    try:
        points = json.loads(index.read_text())["points"]
        subs = [folder / p["folder"] for p in points if not p.get("missing")]  # missing: weights not saved yet
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{index}: corrupt track index (rerun flatkit track to finish it)") from None
    missing = [s for s in subs if not s.is_dir()]
    if missing:
        raise UsageError(f"{folder}: the track lists {missing[0]}, which is missing (rerun flatkit track to resume)")
    if not subs:
        raise UsageError(f"{folder}: the track holds no finished point yet (rerun flatkit track to resume)")
    return subs


def step_of(run: Any) -> int | None:
    """The training step of a report model, as its results' meta records it."""
    for res in run.results.values():
        cks = (getattr(res, "meta", None) or {}).get("checkpoints")
        if isinstance(cks, list) and run.model < len(cks) and isinstance(cks[run.model], dict):
            step = cks[run.model].get("step")
            if step is not None:
                return int(step)
    return None


def _run_key(run: Any) -> tuple[str, str] | None:
    """(training folder, weights) of a model: checkpoints of one run share their folder."""
    if not run.checkpoint:
        return None
    return str(Path(run.checkpoint).parent), str(run.weights or "raw")


def group_steps(runs: list) -> dict[tuple[str, str], list]:
    """The models that are one run and weights at two or more steps: (folder, weights) -> models by step."""
    groups: dict[tuple[str, str], list] = {}
    for r in runs:
        key, step = _run_key(r), step_of(r)
        if key is not None and step is not None:
            groups.setdefault(key, []).append(r)
    return {k: sorted(v, key=step_of) for k, v in groups.items() if len({step_of(r) for r in v}) > 1}


def label_steps(runs: list) -> None:
    """Label the models of a run at several steps ``<label> step <N>`` (each row stays one checkpoint) and note
    it once per run; remember the run's label for the trajectory figure (``run.trajectory``)."""
    from flatkit.plots.track import line_label

    for (folder, weights), members in group_steps(runs).items():
        labels = {r.label for r in members}
        base = labels.pop() if len(labels) == 1 else line_label(Path(folder).name, weights)
        steps = [step_of(r) for r in members]
        for r in members:
            r.trajectory = base
            r.label = f"{base} step {step_of(r)}"
        members[0].notes.append(f"{len(members)} checkpoints of one run ({folder}, weights {weights}) at steps "
                                f"{', '.join(map(str, steps))}: one row per step, and trajectory.png draws each "
                                "measure against the step")


def _source(r: Any, key: str) -> tuple | None:
    """(result name, scalar, index after the model) of a trajectory scalar of model ``r`` (flatkit.repeats'
    table, shared with ``flatkit track``): L(θ) is read where flatness_numbers / bank_loss read it."""
    from flatkit.repeats import track_source
    from flatkit.report import collect as C

    loss_from = ("hessian" if r.has("hessian") else C.bank_loss(r)[1]) if key == "loss" else None
    bits = r.results["quantize"].bits if r.has("quantize") else ()
    src = track_source(key, loss_from, bits)
    return src if src is not None and r.has(src[0]) else None


def _interval(r: Any, key: str) -> Any:
    """The 95 % interval over ``--repeats`` of a trajectory scalar of model ``r`` (None without repeats)."""
    from flatkit.report.intervals import interval_of

    src = _source(r, key)
    return interval_of(r, src[0], src[1], *src[2:]) if src is not None else None


def _perturb_landscape(r: Any) -> dict[str, float]:
    """The perturbation ΔL at the largest radius (random directions' mean, worst case) and the landscape's mean
    ΔL over its grid of model ``r``: the numbers ``flatkit track`` draws, as flatkit.repeats computes them."""
    from flatkit.repeats import scalars

    out: dict[str, float] = {}
    for key in ("perturb_random", "perturb_worst", "landscape_mean_dl"):
        src = _source(r, key)
        if src is None:
            continue
        a = scalars(r.results[src[0]]).get(src[1])
        try:
            v = float(a[(r.model, *src[2:])])
        except (IndexError, TypeError):
            continue
        if np.isfinite(v):
            out[key] = v
    return out


def trajectory_series(runs: list) -> list[tuple[str, str, str, dict]]:
    """(key, panel title, y label, {run label: (steps, values)}) of every scalar the runs at several steps hold;
    with ``--repeats``, (steps, means, lo, hi) of the 95 % intervals instead (a band in the figure)."""
    from flatkit.plots.style import arm_sort_key
    from flatkit.plots.track import default_keys, scalar_label, short_label
    from flatkit.report import collect as C

    lines: dict[str, dict[str, list]] = {}
    settings: dict = {}
    for r in runs:
        base = getattr(r, "trajectory", None)
        if base is None:
            continue
        vals = dict(C.flatness_numbers(r))
        if vals.get("loss") is None:
            vals["loss"] = C.bank_loss(r)[0]
        vals.update(_perturb_landscape(r))
        q = C.quantize_table(r)
        if q is not None:
            for b, d in zip(q["bits"], q["drift_mse"], strict=False):
                vals[f"quantize_drift_{b}bit"] = d
        if r.has("sharpness"):
            settings["sharpness"] = {"kind": vals.get("sharpness_kind"), "eps": vals.get("sharpness_eps")}
        if r.has("perturb"):  # the panel says the radius
            settings["perturb"] = {"radii": [float(x) for x in np.asarray(r.results["perturb"].radii).ravel()]}
        for k, v in vals.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                iv = _interval(r, k)
                lo, hi = (iv.lo, iv.hi) if iv is not None else (np.nan, np.nan)
                lines.setdefault(k, {}).setdefault(base, []).append(
                    (step_of(r), iv.mean if iv is not None else float(v), lo, hi))
    out = []
    for k in default_keys(list(lines)):
        series = {}
        for lab, pts in sorted(lines[k].items(), key=lambda kv: arm_sort_key(kv[0])):
            cols = [np.array(c, dtype=float) for c in zip(*sorted(pts), strict=True)]
            series[lab] = tuple(cols) if np.isfinite(cols[2]).any() else tuple(cols[:2])
        out.append((k, scalar_label(k, settings), short_label(k, settings), series))
    return out


def plot_trajectory(items: list, stem: Path) -> list[Path]:
    """The trajectory figure of :func:`trajectory_series`' items."""
    from flatkit.plots.track import plot_series

    banded = any(len(xy) == 4 for *_, series in items for xy in series.values())
    return plot_series([(title, ylabel, series) for _, title, ylabel, series in items], stem,
                       "Measures against the training step" + ("; lines: mean, bands: 95 % interval over the "
                                                               "repeats" if banded else ""))


def track_label(folder: Path) -> str | None:
    """The label of a ``flatkit track`` point folder: its run's label and weights (``+SAM`` with ``ema`` ->
    ``+SAM+EMA``), as its results record them; None for any other folder."""
    from flatkit.plots.track import line_label

    for p in sorted(Path(folder).glob("*.json")):
        try:
            meta = json.loads(p.read_text()).get("meta") or {}
        except (OSError, ValueError, AttributeError):
            continue
        tr = meta.get("track")
        if isinstance(tr, dict) and tr.get("run"):
            return line_label(str(tr["run"]), str(meta.get("weights") or "raw"))
    return None
