"""``figures(run_dirs, out)``: the paper's figures and tables rebuilt from result files (never recomputed).

Writes into ``out``: one PNG + PDF per figure that the results allow, ``tables.md`` (markdown tables) and
``figures.json`` (every number the figures and tables show, where it came from, and what was skipped and why).
Figures (each skipped, with a note, when no folder holds its results):

========================  ==============================================================================
``sample_quality``        table only: FID per arm and T' (``fid.json``), else a weight-free distance
``training.png``          loss, grad norm, lr (and ρ, ‖e‖ for SAM) per training run (``metrics.jsonl``)
``flatness.png``          λ_max, trace, sharpness per arm (``hessian.json``, ``sharpness.json``)
``landscape.png``         2-D loss slices per arm, shared colour scale (``landscape.json``)
``perturb.png``           loss under weight perturbation per arm (``perturb.json``)
``exposure.png``          ‖ε_θ‖ sampling vs training, and the gap, per arm (``exposure.json``)
``prior.png``             paired sample drift and loss change per prior point and arm (``prior.json``)
``curvature.png``         spectral density and λ_max per t-bin per arm (``hessian.json`` with them)
``quantize.png``          loss change and sample drift against bits per arm (``quantize.json``)
``samples.png``           samples per arm (``samples.npz``, else the quantize / prior previews)
``samples_quantized.png`` samples at full precision and each bit width, per arm (``quantize.npz`` previews)
========================  ==============================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.report import collect as C
from flatkit.report.collect import RunDir

FIGURE_NAMES = ("training", "flatness", "curvature", "landscape", "perturb", "exposure", "prior", "quantize", "samples",
                "samples_quantized", "trajectory")


def fmt(v: Any, digits: int = 4) -> str:
    """A number as the tables print it (``digits`` significant digits); missing → ``—``."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{float(v):.{digits}g}"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [headers, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


@dataclass
class Table:
    """A table: its title, column headers, rows of display strings, the numbers behind them and a note."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    numbers: list[dict] = field(default_factory=list)  # per row: {"label": ..., column key: value or cell dict}
    note: str = ""

    def markdown(self) -> str:
        out = f"### {self.title}\n\n{md_table(self.headers, self.rows)}\n"
        return out + (f"\n{self.note}\n" if self.note else "")

    def to_json(self) -> dict:
        return {"title": self.title, "headers": self.headers, "rows": self.rows, "numbers": self.numbers,
                "note": self.note}


# ------------------------------------------------------------------------------------------------ tables
def _col_name(steps: int | None, sampler: str | None) -> str:
    return f"T'={steps if steps is not None else '?'}" + (f" ({sampler})" if sampler else "")


def sample_quality_table(runs: list[RunDir]) -> Table | None:
    """Rows = arms, columns = the (T', sampler) budgets found; FID where measured, else the weight-free
    sliced Wasserstein-2 distance (marked †)."""
    per_run = {r.label: C.quality_cells(r) for r in runs}
    keys = sorted({(c["steps"] if c["steps"] is not None else 10**9, c["sampler"] or "")
                   for cs in per_run.values() for c in cs})
    if not keys:
        return None
    rows, numbers, metrics = [], [], set()
    for r in runs:
        row, num = [r.label], {"label": r.label}
        for steps, sampler in keys:
            cands = [c for c in per_run[r.label]
                     if (c["steps"] if c["steps"] is not None else 10**9) == steps and (c["sampler"] or "") == sampler]
            if not cands:
                row.append("—")
                num[_col_name(None if steps == 10**9 else steps, sampler or None)] = None
                continue
            best = min(cands, key=lambda c: c["rank"])
            metrics.add(best["metric"])
            row.append(fmt(best["value"]) + ("" if best["metric"] == "FID" else " †"))
            num[_col_name(None if steps == 10**9 else steps, sampler or None)] = {
                k: best[k] for k in ("value", "metric", "source", "n")}
        rows.append(row)
        numbers.append(num)
    headers = ["arm"] + [_col_name(None if s == 10**9 else s, p or None) for s, p in keys]
    if metrics == {"FID"}:
        title, note = "Sample quality: FID ↓", ""
    else:
        title = "Sample quality: FID ↓ where measured, else † sliced Wasserstein-2 to the data ↓"
        note = ("† sliced Wasserstein-2 distance between samples and data on pixels (weight-free, **not FID**; "
                "from fid.json without a detector, else quantize.json at full precision, else prior.json at "
                "N(0, I)); biased at small sample counts: compare equal sample counts only.")
    return Table("sample_quality", title, headers, rows, numbers, note)


def common_perturb_radius(runs: list[RunDir]) -> float | None:
    """The largest radius every folder's perturb.json evaluated (None when they share none but 0)."""
    rs = [C.perturb_curves(r)["radii"] for r in runs if r.has("perturb")]
    if not rs:
        return None
    common = [x for x in rs[0] if x > 0 and all(np.isclose(rr, x, rtol=1e-9, atol=0).any() for rr in rs[1:])]
    return float(max(common)) if common else None


def perturb_at(curves: dict, radius: float | None) -> tuple[float | None, float | None]:
    """(random mean, worst case) ΔL at ``radius`` (an evaluated radius, else None)."""
    if radius is None:
        return None, None
    i = np.flatnonzero(np.isclose(curves["radii"], radius, rtol=1e-9, atol=0))
    if not i.size:
        return None, None
    m = curves["mean"][i[0]]
    w = curves["worst"][i[0]] if curves.get("worst") is not None else np.nan
    return (float(m) if np.isfinite(m) else None), (float(w) if np.isfinite(w) else None)


def flatness_table(runs: list[RunDir], landscape_radius: float | None = None,
                   perturb_radius: float | None = None) -> Table | None:
    have = [r for r in runs if r.has("hessian") or r.has("sharpness") or r.has("landscape") or r.has("perturb")]
    if not have:
        return None
    if perturb_radius is None:
        perturb_radius = common_perturb_radius(runs)
    land = {r.label: C.landscape_flatness(r, landscape_radius) for r in runs}
    radii = sorted({d["radius"] for d in land.values() if d is not None})
    fl = {r.label: C.flatness_numbers(r) for r in runs}
    sharp = sorted({f"{f['sharpness_kind']}, ε={fmt(f['sharpness_eps'])}" for f in fl.values() if "sharpness" in f})
    headers = ["arm", "λ_max ↓", "trace ↓", f"sharpness ↓ ({'; '.join(sharp)})" if sharp else "sharpness ↓",
               f"landscape mean ΔL, r ≤ {', '.join(f'{x:g}' for x in radii)} ↓" if radii else "landscape ΔL ↓",
               f"perturb ΔL random, r = {perturb_radius:g} ↓" if perturb_radius else "perturb ΔL ↓",
               f"perturb ΔL worst, r = {perturb_radius:g} ↓" if perturb_radius else "perturb ΔL worst ↓"]
    rows, numbers = [], []
    for r in runs:
        f = fl[r.label]
        ld = land[r.label]
        pm = pw = None
        if r.has("perturb"):
            pm, pw = perturb_at(C.perturb_curves(r), perturb_radius)
        tr = fmt(f.get("trace"))
        if f.get("trace") is not None and f.get("trace_stderr") is not None:
            tr += f" ± {fmt(f['trace_stderr'], 2)}"
        cert = f.get("lambda_max_certified")  # results before the certified stop: the convergence flag
        lam = fmt(f.get("lambda_max")) + (" (not certified)" if cert is False else
                                          " (not converged)" if cert is None and f.get("lambda_max_converged") is False
                                          else "")
        rows.append([r.label, lam, tr, fmt(f.get("sharpness")), fmt(ld["value"] if ld else None), fmt(pm),
                     fmt(pw)])
        numbers.append({"label": r.label, "lambda_max": f.get("lambda_max"), "trace": f.get("trace"),
                        "trace_stderr": f.get("trace_stderr"), "sharpness": f.get("sharpness"),
                        "sharpness_kind": f.get("sharpness_kind"), "sharpness_eps": f.get("sharpness_eps"),
                        "landscape_flatness": ld["value"] if ld else None,
                        "landscape_radius": ld["radius"] if ld else None,
                        "perturb_random": pm, "perturb_worst": pw, "perturb_radius": perturb_radius})
    note = ("λ_max: largest Hessian eigenvalue (Lanczos); trace: Hutch++/Hutchinson estimate ± standard error; "
            "landscape mean ΔL: mean of L(θ + αd₁ + βd₂) − L(θ) over the grid points of the 2-D slice with "
            "0 < √(α² + β²) ≤ r; perturb ΔL: L(θ + r d) − L(θ) for random directions (mean over K) and the "
            "worst-case direction. All on each result's frozen evaluation bank.")
    return Table("flatness", "Flatness of the loss at θ (lower = flatter)", headers, rows, numbers, note)


def quantize_table(runs: list[RunDir]) -> Table | None:
    qs = {r.label: C.quantize_table(r) for r in runs if r.has("quantize")}
    if not qs:
        return None
    bits = sorted({b for q in qs.values() for b in q["bits"]}, reverse=True)
    headers = ["arm", "L(θ) full precision"]
    for b in bits:
        headers += [f"ΔL {b}-bit ↓", f"drift {b}-bit ↓", f"SW₂ {b}-bit ↓"]
    headers.append("SW₂ full precision")
    rows, numbers = [], []
    for r in runs:
        q = qs.get(r.label)
        if q is None:
            continue
        row, num = [r.label, fmt(q["loss_fp"])], {"label": r.label, "loss_fp": q["loss_fp"]}
        for b in bits:
            if b in q["bits"]:
                i = q["bits"].index(b)
                vals = (q["loss_change"][i], q["drift_mse"][i], q["distance"][i] if i < len(q["distance"]) else None)
            else:
                vals = (None, None, None)
            row += [fmt(v) for v in vals]
            num.update({f"loss_change_{b}": vals[0], f"drift_mse_{b}": vals[1], f"distance_{b}": vals[2]})
        row.append(fmt(q["distance_fp"]))
        num["distance_fp"] = q["distance_fp"]
        rows.append(row)
        numbers.append(num)
    gran = sorted({str(q["granularity"]) for q in qs.values()})
    note = (f"Symmetric round-to-nearest weight quantization ({', '.join(gran)}). ΔL: loss at the quantized "
            "weights minus at full precision (same bank); drift: mean squared difference between samples of the "
            "quantized and the full-precision model from the same seeds (pixels on [−1, 1]); SW₂: sliced "
            "Wasserstein-2 of the samples to the data (weight-free, not FID).")
    return Table("quantize", "Weight quantization", headers, rows, numbers, note)


def exposure_table(runs: list[RunDir]) -> Table | None:
    ex = {r.label: C.exposure_curves(r) for r in runs if r.has("exposure")}
    if not ex:
        return None
    norms = sorted({"‖ε_θ‖₂²" if e["norm"] == "squared" else "‖ε_θ‖₂" for e in ex.values()})
    headers = ["arm", "T'", "gap mean over steps ↓", "gap at the last step ↓", "δ_t mean ↓"]
    rows, numbers = [], []
    for r in runs:
        e = ex.get(r.label)
        if e is None:
            continue
        rows.append([r.label, f"{e['steps']} ({e['sampler']})", fmt(e["gap_mean"]), fmt(e["gap_last"]),
                     fmt(e["delta_mean"])])
        numbers.append({"label": r.label, "gap_mean": e["gap_mean"], "gap_last": e["gap_last"],
                        "delta_mean": e["delta_mean"], "steps": e["steps"], "norm": e["norm"]})
    note = (f"Gap = mean per-image {', '.join(norms)} of the prediction along the sampling chain minus on "
            "forward-noised training images at the same t (ADM-ES protocol); δ_t = (std(x̂_t − √ᾱ_t x₀) − "
            "√(1 − ᾱ_t))². Closer to 0 is less exposure bias.")
    return Table("exposure", "Exposure bias", headers, rows, numbers, note)


def common_prior_points(runs: list[RunDir]) -> list[tuple]:
    pts = [C.prior_points(r) for r in runs if r.has("prior")]
    if not pts:
        return []
    common = [p for p in pts[0]["points"] if all(p in q["points"] for q in pts[1:])]
    return common


def prior_table(runs: list[RunDir]) -> Table | None:
    pp = {r.label: C.prior_points(r) for r in runs if r.has("prior")}
    if not pp:
        return None
    common = [p for p in common_prior_points(runs) if not (p[0] == "shift_scale" and p[1] == 0 and p[2] == 1)]
    if not common:
        common = sorted({p for q in pp.values() for p in q["points"]})
    first = next(iter(pp.values()))
    headers = ["arm"]
    for p in common:
        kl = first["kl"][first["points"].index(p)] if p in first["points"] else None
        headers.append(f"drift {C.prior_point_name(p)} (KL {fmt(kl, 3)}) ↓")
    rows, numbers = [], []
    for r in runs:
        q = pp.get(r.label)
        if q is None:
            continue
        row, num = [r.label], {"label": r.label}
        for p in common:
            v = q["drift_mse"][q["points"].index(p)] if p in q["points"] else None
            row.append(fmt(v))
            num[C.prior_point_name(p)] = v
        rows.append(row)
        numbers.append(num)
    note = ("Drift: mean squared difference (pixels on [−1, 1]) between samples from the perturbed prior "
            "N(μ1, s²I) (or x_T + ηz′) and from N(0, I), same seeds; KL(perturbed prior ‖ N(0, I)) in nats.")
    return Table("prior", "Robustness to a perturbed prior", headers, rows, numbers, note)


# ------------------------------------------------------------------------------------------------ figures
def _quantized_cells(runs: list[RunDir]) -> tuple[list[str], list[str], dict] | None:
    have = [(r, C.quantize_previews(r)) for r in runs if r.has("quantize")]
    have = [(r, p) for r, p in have if p is not None]
    if not have:
        return None
    bits = sorted({b for r, _ in have for b in C.quantize_table(r)["bits"]}, reverse=True)
    cols = ["full precision"] + [f"{b}-bit" for b in bits]
    cells = {}
    for i, (r, p) in enumerate(have):
        qb = C.quantize_table(r)["bits"]
        cells[(i, 0)] = p[0]
        for j, b in enumerate(bits):
            if b in qb and qb.index(b) + 1 < p.shape[0]:
                cells[(i, j + 1)] = p[qb.index(b) + 1]
    return [r.label for r, _ in have], cols, cells


def figures(run_dirs: list[str | Path] | list[RunDir], out: str | Path, labels: dict[str, str] | None = None,
            landscape_radius: float | None = None, perturb_radius: float | None = None,
            echo: Any = None) -> dict:
    """Rebuild the figures and tables from the result files of ``run_dirs`` into ``out``.

    ``labels``: folder → arm label overrides. Returns the content of ``figures.json`` (also written):
    ``runs``, ``tables``, ``figures`` (files and the numbers drawn), ``skipped`` (figure → why) and ``notes``.
    """
    from flatkit.plots import paper as P
    from flatkit.results import atomic_write_text, jsonable

    runs = (list(run_dirs) if run_dirs and isinstance(run_dirs[0], RunDir)
            else C.read_run_dirs(list(run_dirs), labels))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, dict] = {}
    skipped: dict[str, str] = {}

    def draw(name: str, fn: Any, items: list, data: dict, missing: str) -> None:
        if not items:
            if missing:  # "": drawn only where it applies, no "skipped" entry
                skipped[name] = missing
            return
        try:
            paths = fn(items, out / name)
        except Exception as e:  # noqa: BLE001 - one bad figure must not stop the others
            skipped[name] = f"failed: {type(e).__name__}: {e}"
            return
        figs[name] = {"files": [p.name for p in paths], "data": data}

    # training curves of the runs behind the models (metrics.jsonl beside their checkpoints)
    from flatkit.plots.training import plot_training_curves

    trs = C.training_runs(runs)
    draw("training", plot_training_curves, [(lab, rec) for lab, _, rec in trs],
         {lab: {"folder": str(f), "lines": len(rec)} for lab, f, rec in trs},
         "no metrics.jsonl beside any result's checkpoint (flatkit train runs)")
    # flatness bars
    items = [(r.label, C.flatness_numbers(r)) for r in runs if r.has("hessian") or r.has("sharpness")]
    items = [(lab, f) for lab, f in items if any(f.get(k) is not None for k in ("lambda_max", "trace", "sharpness"))]
    draw("flatness", P.plot_flatness_arms, items, dict(items), "no hessian.json or sharpness.json in any folder")
    # landscapes
    land = [(r.label, C.landscape_flatness(r, landscape_radius)) for r in runs if r.has("landscape")]
    land = [(lab, d) for lab, d in land if d is not None and d["dims"] == 2]
    draw("landscape", P.plot_landscape_arms, land,
         {lab: {"flatness": d["value"], "radius": d["radius"], "loss_centre": d["loss_centre"]} for lab, d in land},
         "no 2-D landscape.json in any folder")
    # perturbation
    pert = [(r.label, C.perturb_curves(r)) for r in runs if r.has("perturb")]
    draw("perturb", P.plot_perturb_arms, pert,
         {lab: {k: c[k] for k in ("radii", "mean", "std", "worst", "loss0", "relative", "k")} for lab, c in pert},
         "no perturb.json in any folder")
    # exposure
    ex = [(r.label, C.exposure_curves(r)) for r in runs if r.has("exposure")]
    draw("exposure", P.plot_exposure_arms, ex,
         {lab: {k: c[k] for k in ("t", "sampling", "training", "gap", "gap_mean", "gap_last", "norm", "steps")}
          for lab, c in ex}, "no exposure.json in any folder")
    # perturbed prior
    pr = [(r.label, C.prior_points(r)) for r in runs if r.has("prior")]
    pr = [(lab, p) for lab, p in pr if p is not None]
    draw("prior", P.plot_prior_arms, pr,
         {lab: {k: p[k] for k in ("points", "kl", "drift_mse", "loss_change", "steps")} for lab, p in pr},
         "no prior.json in any folder")
    # curvature beyond lambda_max
    cv = [(r.label, C.curvature_curves(r)) for r in runs if r.has("hessian")]
    cv = [(lab, c) for lab, c in cv if c is not None]
    draw("curvature", P.plot_curvature_arms, cv, {lab: sorted(c) for lab, c in cv}, "")  # only where measured
    # one run at several steps: each measure against the step
    from flatkit.report.trajectory import plot_trajectory, trajectory_series

    traj = trajectory_series(runs)  # drawn only where it applies: no "skipped" entry for folders of one step
    draw("trajectory", plot_trajectory, traj,
         {k: {lab: {"steps": xy[0], "values": xy[1], **({"lo": xy[2], "hi": xy[3]} if len(xy) == 4 else {})}
              for lab, xy in ser.items()} for k, _, _, ser in traj}, "")
    # quantization
    qz = [(r.label, C.quantize_table(r)) for r in runs if r.has("quantize")]
    draw("quantize", P.plot_quantize_arms, qz, dict(qz), "no quantize.json in any folder")
    # samples per arm
    prev = C.sample_previews(runs)
    if prev:
        draw("samples", lambda it, stem: P.plot_sample_table([lab for lab, _ in it], ["full-precision samples"],
                                                             {(i, 0): x for i, (_, x) in enumerate(it)}, stem,
                                                             "Samples per arm", ncol=8),
             [(lab, x) for lab, x, _ in prev], {lab: {"source": src, "shape": list(x.shape)} for lab, x, src in prev},
             "")
    else:
        skipped["samples"] = ("no image samples in any folder (samples.npz from flatkit sample, or the previews "
                              "quantize.npz / prior.npz store for image models)")
    qc = _quantized_cells(runs)
    if qc is not None:
        rows, cols, cells = qc
        draw("samples_quantized",
             lambda it, stem: P.plot_sample_table(rows, cols, cells, stem,
                                                  "Samples with and without weight quantization (same seeds)"),
             [1], {"rows": rows, "columns": cols}, "")
    else:
        skipped["samples_quantized"] = ("no quantize.npz previews in any folder (quantize.json present only for "
                                        "2-D point models, or no quantize run)")

    tables = [t for t in (sample_quality_table(runs), flatness_table(runs, landscape_radius, perturb_radius),
                          quantize_table(runs), exposure_table(runs), prior_table(runs)) if t is not None]
    if not any(t.name == "sample_quality" for t in tables):
        skipped["sample_quality (table)"] = ("no fid.json, quantize.json or prior.json in any folder: no sample "
                                             "quality number")
    notes = [f"{r.label} ({r.path}): {n}" for r in runs for n in r.notes]
    md = ["# Figures and tables", "", "Rebuilt by `flatkit figures` from the result files of:", ""]
    md += [f"- **{r.label}**: `{r.path}` (label from {r.label_source}; results: "
           f"{', '.join(sorted(r.results) + (['fid'] if r.fids else []))})" for r in runs]
    md.append("")
    md += [t.markdown() for t in tables]
    if skipped:
        md += ["### Skipped", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    if notes:
        md += ["### Notes", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_text(out / "tables.md", "\n".join(md))
    report = {"runs": [r.describe() for r in runs], "tables": {t.name: t.to_json() for t in tables},
              "figures": figs, "skipped": skipped, "notes": notes}
    atomic_write_text(out / "figures.json", json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    if echo is not None:
        for f in figs.values():
            for fn in f["files"]:
                echo(f"wrote {out / fn}")
        echo(f"wrote {out / 'tables.md'}")
        echo(f"wrote {out / 'figures.json'}")
        for k, v in skipped.items():
            echo(f"skipped {k}: {v}")
        for n in notes:
            echo(f"note: {n}")
    report["_runs"] = runs
    report["_tables"] = tables
    return report
