"""The summary table's error bars: where a result was measured with ``--repeats R`` (R > 1), its ``intervals``
give each cell ``mean ± se`` (± one standard error over the R repeats) and a 95 % Student-t interval, and every
pair of arms is said to separate (the two 95 % intervals do not overlap) or not (:mod:`flatkit.repeats`).

Read only through the typed results of :mod:`flatkit.report.collect`; nothing is recomputed."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from flatkit.repeats import LOSS_SCALAR, Interval, fmt_interval, interval_at, separate, summarise
from flatkit.report import collect as C


def _iv(run: Any, name: str, scalar: str, *index: int) -> tuple | None:
    """(interval, per-repeat record) of entry ``index`` of model ``run.model``'s scalar in result ``name``."""
    res = run.results.get(name)
    if res is None:
        return None
    iv = interval_at(getattr(res, "intervals", None), scalar, run.model, *index)
    if iv is None:
        return None
    per = []
    for rec in getattr(res, "repeats", None) or []:
        v = rec.get(scalar)
        try:
            for i in (run.model, *index):
                v = v[i]
            per.append(None if v is None else float(v))
        except (IndexError, TypeError, ValueError):
            per.append(None)
    return iv, {"values": per, "seeds": [rec.get("seed") for rec in res.repeats or []],
                "banks": [rec.get("bank_sha256") for rec in res.repeats or []]}


def interval_of(run: Any, name: str, scalar: str, *index: int) -> Interval | None:
    """The 95 % interval over the repeats of model ``run.model``'s scalar in result ``name`` (None without)."""
    got = _iv(run, name, scalar, *index)
    return got[0] if got is not None else None


def _index(values: Any, target: Any) -> int | None:
    try:
        i = np.flatnonzero(np.isclose(np.asarray(values, dtype=float), float(target), rtol=1e-9, atol=0))
    except (TypeError, ValueError):
        return None
    return int(i[0]) if i.size else None


def cell_intervals(run: Any, row: dict, keys: list[str], landscape_radius: float | None = None,
                   perturb_radius: float | None = None, prior_point: tuple | None = None) -> dict[str, tuple]:
    """Column key -> (the :class:`~flatkit.repeats.Interval` of the arm's number in that column, its per-repeat
    values, seeds and bank hashes), where its result holds repeats."""
    out: dict[str, tuple | None] = {}
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
        for k, (iv, per) in cell_intervals(run, row, keys, **where).items():
            row[f"{k}_interval"] = iv
            row[f"{k}_repeats"] = per
            row[k] = iv.mean


def paired(ra: dict, rb: dict, key: str) -> Interval | None:
    """The interval of the per-repeat difference a − b when both arms were measured on the same repeats (the
    same seeds and the same banks, so each repeat's bank and directions are shared: a paired comparison)."""
    pa, pb = ra.get(f"{key}_repeats"), rb.get(f"{key}_repeats")
    if not pa or not pb or pa["seeds"] != pb["seeds"] or pa["banks"] != pb["banks"] or len(pa["values"]) < 2:
        return None
    d = [a - b if a is not None and b is not None else None for a, b in zip(pa["values"], pb["values"], strict=True)]
    iv = summarise(d)
    return iv if iv.n >= 2 else None


def cell(row: dict, key: str) -> str | None:
    """``mean ± se`` of a cell with repeats (None: print the plain number)."""
    iv = row.get(f"{key}_interval")
    return fmt_interval(iv) if isinstance(iv, Interval) else None


def separation_lines(columns: list, rows: list[dict]) -> list[str]:
    """For every column with intervals: whether the 95 % intervals of two arms separate (two arms: that pair;
    more: each arm against the first, the paper's reference arm in the report's order)."""
    out = []
    for c in columns:
        have = [r for r in rows if isinstance(r.get(f"{c.key}_interval"), Interval)]
        pairs = itertools.combinations(have, 2) if len(have) <= 2 else [(have[0], r) for r in have[1:]]
        for ra, rb in pairs:
            a, b = ra[f"{c.key}_interval"], rb[f"{c.key}_interval"]
            sep = separate(a, b)
            verdict = ("the 95 % intervals separate" if sep else "the 95 % intervals overlap"
                       if sep is False else "no interval (fewer than 2 finite repeats)")
            line = (f"{c.header}: {ra['label']} {fmt_interval(a)} [{a.lo:.4g}, {a.hi:.4g}] vs {rb['label']} "
                    f"{fmt_interval(b)} [{b.lo:.4g}, {b.hi:.4g}] (R = {a.n}, {b.n}): {verdict}")
            d = paired(ra, rb, c.key)
            if d is not None:
                zero = "excludes 0" if d.lo > 0 or d.hi < 0 else "includes 0"
                line += (f"; paired by repeat (same banks and seeds), {ra['label']} − {rb['label']} = "
                         f"{fmt_interval(d)} [{d.lo:.4g}, {d.hi:.4g}]: the interval {zero}")
            out.append(line)
    return out


def markdown(columns: list, rows: list[dict]) -> list[str]:
    """The report's "Error bars" section (empty when no result has repeats)."""
    lines = separation_lines(columns, rows)
    if not lines:
        return []
    return ["### Error bars", "",
            "Cells measured with `--repeats R` show the mean over the R repeats ± one standard error (s/√R); the "
            "95 % interval is mean ± t(0.975, R − 1)·se. Below, two arms are compared (of more, each with the "
            "first). A repeat redraws the evaluation bank and the measure's own random choices (directions, "
            "probes, restarts, sample seeds) at the same weights: the interval "
            "is the uncertainty of the measurement, not seed-to-seed training variance (docs/methods.md, "
            "\"Error bars\"). Arms measured on the same repeats (same seeds, hence the same banks and directions) "
            "are also compared repeat by repeat: the interval of the paired difference is narrower, because the "
            "bank's shared part cancels.", ""] + [f"- {x}" for x in lines] + [""]
