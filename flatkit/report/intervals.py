"""The summary table's error bars: where a result was measured with ``--repeats R`` (R > 1), its ``intervals``
give each cell ``mean ± se`` (± one standard error over the R repeats) and a 95 % Student-t interval, and every
pair of arms is said to separate (the two 95 % intervals do not overlap) or not (:mod:`flatkit.repeats`).

Read only through the typed results of :mod:`flatkit.report.collect`; nothing is recomputed."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from flatkit.repeats import Interval, fmt_interval, interval_at, separate
from flatkit.report import collect as C

#: where L(θ) came from (collect.bank_loss) -> the scalar of that result's intervals
LOSS_SCALAR = {"hessian": "loss", "sharpness": "loss0", "perturb": "loss0", "landscape": "loss_centre",
               "quantize": "loss_fp"}


def _iv(run: Any, name: str, scalar: str, *index: int) -> Interval | None:
    res = run.results.get(name)
    return None if res is None else interval_at(getattr(res, "intervals", None), scalar, run.model, *index)


def _index(values: Any, target: Any) -> int | None:
    try:
        i = np.flatnonzero(np.isclose(np.asarray(values, dtype=float), float(target), rtol=1e-9, atol=0))
    except (TypeError, ValueError):
        return None
    return int(i[0]) if i.size else None


def cell_intervals(run: Any, row: dict, keys: list[str], landscape_radius: float | None = None,
                   perturb_radius: float | None = None, prior_point: tuple | None = None) -> dict[str, Interval]:
    """Column key -> the :class:`~flatkit.repeats.Interval` of the arm's number in that column (where its result
    holds repeats)."""
    out: dict[str, Interval | None] = {}
    if row.get("loss_source") in LOSS_SCALAR:
        out["loss"] = _iv(run, row["loss_source"], LOSS_SCALAR[row["loss_source"]])
    out["lambda_max"] = _iv(run, "hessian", "lambda_max")
    out["trace"] = _iv(run, "hessian", "trace")
    out["sharpness"] = _iv(run, "sharpness", "value")
    if landscape_radius is None:  # the flatness number at the largest disc inside the grid (repeats record it)
        out["landscape"] = _iv(run, "landscape", "flatness")
    if perturb_radius is not None and run.has("perturb"):
        i = _index(run.results["perturb"].radii, perturb_radius)
        out["perturb"] = _iv(run, "perturb", "mean", i) if i is not None else None
    out["exposure_gap"] = _iv(run, "exposure", "gap_mean")
    if prior_point is not None and run.has("prior"):
        pts = C.prior_points(run)["points"]
        if prior_point in pts:
            out["prior_drift"] = _iv(run, "prior", "drift_mse", pts.index(prior_point))
    if run.has("quantize"):
        bits = [int(b) for b in run.results["quantize"].bits]
        for k in keys:
            for pre, scalar in (("quant_loss_", "loss_change"), ("quant_drift_", "drift_mse")):
                if k.startswith(pre) and int(k[len(pre):]) in bits:
                    out[k] = _iv(run, "quantize", scalar, bits.index(int(k[len(pre):])))
    return {k: v for k, v in out.items() if v is not None and k in keys}


def attach(runs: list, rows: list[dict], keys: list[str], **where: Any) -> None:
    """Give each row ``<key>_interval`` for its cells with repeats; the cell's number becomes the mean over the
    repeats (so the table, the CSV and the interval agree)."""
    for run, row in zip(runs, rows, strict=True):
        for k, iv in cell_intervals(run, row, keys, **where).items():
            row[f"{k}_interval"] = iv
            row[k] = iv.mean


def cell(row: dict, key: str) -> str | None:
    """``mean ± se`` of a cell with repeats (None: print the plain number)."""
    iv = row.get(f"{key}_interval")
    return fmt_interval(iv) if isinstance(iv, Interval) else None


def separation_lines(columns: list, rows: list[dict]) -> list[str]:
    """For every column with intervals and every pair of arms that both have one: whether their 95 % intervals
    separate."""
    out = []
    for c in columns:
        have = [(r["label"], r[f"{c.key}_interval"]) for r in rows if isinstance(r.get(f"{c.key}_interval"), Interval)]
        for (la, a), (lb, b) in itertools.combinations(have, 2):
            sep = separate(a, b)
            verdict = ("the 95 % intervals separate" if sep else "the 95 % intervals overlap: no difference shown"
                       if sep is False else "no interval (fewer than 2 finite repeats)")
            out.append(f"{c.header}: {la} {fmt_interval(a)} [{a.lo:.4g}, {a.hi:.4g}] vs {lb} {fmt_interval(b)} "
                       f"[{b.lo:.4g}, {b.hi:.4g}] (R = {a.n}, {b.n}): {verdict}")
    return out


def markdown(columns: list, rows: list[dict]) -> list[str]:
    """The report's "Error bars" section (empty when no result has repeats)."""
    lines = separation_lines(columns, rows)
    if not lines:
        return []
    return ["### Error bars", "",
            "Cells measured with `--repeats R` show the mean over the R repeats ± one standard error (s/√R); the "
            "95 % interval is mean ± t(0.975, R − 1)·se. A repeat redraws the evaluation bank and the measure's "
            "own random choices (directions, probes, restarts, sample seeds) at the same weights: the interval "
            "is the uncertainty of the measurement, not seed-to-seed training variance (docs/methods.md, "
            "\"Error bars\").", ""] + [f"- {x}" for x in lines] + [""]
