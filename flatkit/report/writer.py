"""``write_report(rows, out_dir)``: one summary table of every measure per arm, as ``report.md``, a
self-contained ``report.html`` (the markdown rendered, figures as base64 PNG, the 2-D landscapes as an offline
plotly figure), ``report.json`` (the numbers), ``summary.csv`` and ``summary.tex`` (LaTeX booktabs), all read
from result files through their typed results (:mod:`flatkit.report.collect`). L(θ) on the bank stands beside
the flatness numbers so that a fit cost is never hidden."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flatkit.report import collect as C
from flatkit.report.collect import RunDir
from flatkit.report.export import summary_csv, summary_tex
from flatkit.report.figures import FIGURE_NAMES, Table, figures, fmt, md_table
from flatkit.report.markdown import to_html

FIGURE_CAPTIONS = {
    "flatness": "Top Hessian eigenvalue, Hessian trace and sharpness per arm.",
    "trajectory": "Each measure against the training step, one line per training run (checkpoints of one run at "
                  "several steps, e.g. a flatkit track folder); with --repeats, the mean and a 95 % band.",
    "landscape": "2-D loss slices per arm on one colour scale; the dotted circle is the disc of the landscape "
                 "flatness number.",
    "perturb": "Loss increase under random and worst-case weight perturbation against the radius.",
    "exposure": "‖ε_θ‖ along the sampling chain (solid) and on forward-noised training data (dashed), and the "
                "exposure-bias gap.",
    "quantize": "Loss change and paired sample drift against the weight bit width.",
    "prior": "Paired sample drift and training-loss change per perturbed prior (in order of KL), per arm.",
    "curvature": "Hessian spectral density (SLQ) and λ_max of the loss per timestep bin, per arm.",
    "samples": "Full-precision samples per arm.",
    "samples_quantized": "Samples at full precision and after weight quantization, same seeds per column.",
    "training": "Training curves of the runs behind the arms (metrics.jsonl): loss (faint: each logged window, "
                "solid: smoothed), gradient norm, learning rate, and for SAM runs ρ (dashed) and ‖e‖ (solid).",
}


@dataclass
class Column:
    key: str
    header: str
    explanation: str


@dataclass
class Report:
    """What :func:`write_report` wrote and the numbers of its summary table."""

    out_dir: Path
    markdown: Path
    html: Path
    json: Path
    figures_dir: Path
    columns: list[Column]
    rows: list[dict]  # per arm: "label", "dir", and one value (or None) per column key
    notes: list[str]
    csv: Path | None = None
    tex: Path | None = None


def _choose_prior_point(runs: list[RunDir], prior_point: tuple[float, float] | None) -> tuple | None:
    pts = [C.prior_points(r) for r in runs if r.has("prior")]
    if not pts:
        return None
    if prior_point is not None:
        mu, s = map(float, prior_point)
        return ("shift_scale", mu, s, 0.0)
    from flatkit.report.figures import common_prior_points

    common = [p for p in common_prior_points(runs) if not (p[0] == "shift_scale" and p[1] == 0 and p[2] == 1)]
    if not common:
        return None
    first = pts[0]
    return max(common, key=lambda p: first["kl"][first["points"].index(p)] or 0.0)


def _quality_column(table: Table | None) -> tuple[str | None, dict]:
    """The sample-quality column most arms have (FID columns first, then the larger T')."""
    if table is None:
        return None, {}
    keys = table.headers[1:]

    def score(k: str) -> tuple:
        cells = [n.get(k) for n in table.numbers]
        have = [c for c in cells if c]
        steps = k.split("=")[1].split(" ")[0]
        return (sum(c["metric"] == "FID" for c in have), len(have), int(steps) if steps.isdigit() else -1)

    best = max(keys, key=score)
    return best, {n["label"]: n.get(best) for n in table.numbers}


def summary(runs: list[RunDir], landscape_radius: float | None = None, perturb_radius: float | None = None,
            prior_point: tuple[float, float] | None = None, quant_bits: Sequence[int] = (8, 4),
            quality: Table | None = None) -> tuple[list[Column], list[dict], list[str]]:
    """The summary table: columns (key, header, explanation) and one dict of numbers per arm."""
    from flatkit.report.figures import common_perturb_radius, perturb_at

    notes: list[str] = []
    fl = {r.label: C.flatness_numbers(r) for r in runs}
    land = {r.label: C.landscape_flatness(r, landscape_radius) for r in runs}
    pr_r = perturb_radius if perturb_radius is not None else common_perturb_radius(runs)
    point = _choose_prior_point(runs, prior_point)
    qcol, qcells = _quality_column(quality)

    sharp = sorted({f"{f['sharpness_kind']}, ε = {fmt(f['sharpness_eps'])}" for f in fl.values()
                    if f.get("sharpness") is not None})
    if len(sharp) > 1:
        notes.append(f"sharpness was measured with different settings ({'; '.join(sharp)}): not comparable")
    lradii = sorted({d["radius"] for d in land.values() if d is not None})
    norms = sorted({C.exposure_curves(r)["norm"] for r in runs if r.has("exposure")})
    pt_kl = None
    if point is not None:
        p0 = next(C.prior_points(r) for r in runs if r.has("prior"))
        pt_kl = p0["kl"][p0["points"].index(point)] if point in p0["points"] else None

    banks = sorted({n for n in (C.bank_loss(r)[2] for r in runs) if n is not None})
    cols = [
        Column("loss", f"L(θ) on the bank (n = {', '.join(map(str, banks)) or '?'})",
               "The training loss at the model's weights on the frozen evaluation bank of the flatness measures "
               "(`hessian.json`, else `sharpness.json`, `perturb.json`, `landscape.json`, `quantize.json`): how "
               "well each arm fits. Flatness is only comparable between arms that fit about equally well; a flat "
               "but badly fitted model is no win."),
        Column("train_loss", "final training loss",
               "The loss the trainer logged (`metrics.jsonl` of the run that wrote the checkpoint): the mean of the "
               f"logged minibatch losses over the last {C.FINAL_FRACTION:.0%} of the training steps, weighted by the "
               "steps each logged window covers. It is the loss of the raw weights on the training minibatches as "
               "training went (with SAM at w, before the ascent step; with input perturbation on perturbed inputs), "
               "so a run's raw, EMA and SWA rows share it and it is not the same number as L(θ) on the bank: it "
               "shows how well each run fitted its data."),
        Column("holdout_loss", "held-out L(θ)",
               "L(θ) on a bank drawn, like the bank of L(θ), from the items `flatkit train --holdout` reserved and "
               "training never saw (same seed, loss and size, or all held-out items when fewer; "
               "`meta.holdout` of the loss-based results, or their L(θ) when measured with `--bank holdout`). "
               "Held-out minus bank L(θ) is the generalisation gap: flatness that costs held-out fit is no win."),
        Column("lambda_max", "λ_max ↓",
               "Largest eigenvalue of the Hessian of the training loss at θ (Lanczos on Hessian-vector products, "
               "`hessian.json`): the curvature along the sharpest direction. Lower is flatter. Lanczos stops "
               "when its error bound |λ − θ| is certified below the tolerance; the bounds are under Notes, and a "
               "value whose bound was not certified says so in its cell."),
        Column("trace", "trace ↓",
               "Trace of the Hessian (Hutch++ / Hutchinson estimate, `hessian.json`): the summed curvature over "
               "all directions. Lower is flatter."),
        Column("sharpness", f"ε-sharpness ↓ ({'; '.join(sharp) or 'n/a'})",
               "Sharpness from `sharpness.json`: for the Keskar kind, the largest loss increase found in the "
               "box |δᵢ| ≤ ε(|θᵢ| + 1) relative to 1 + L(θ), in percent (Keskar et al. 2017); for the l2 / "
               "adaptive kinds the largest loss increase in the (adaptive) ball of radius ρ; for average, the "
               "mean increase under Gaussian noise. Lower is flatter."),
        Column("landscape", f"landscape ΔL(r ≤ {', '.join(f'{x:g}' for x in lradii) or 'r'}) ↓",
               "Landscape flatness number, defined here: the mean of L(θ + α d₁ + β d₂) − L(θ) over the grid "
               "points of the 2-D slice of `landscape.json` with 0 < √(α² + β²) ≤ r, where d₁, d₂ are the "
               "slice's (filter-normalised random) directions and r is by default the largest disc inside the "
               "grid (the span). Lower is flatter."),
        Column("perturb", f"ΔL perturb, r = {pr_r:g} ↓" if pr_r else "ΔL perturb ↓",
               "Loss increase L(θ + r d) − L(θ) under random Gaussian weight perturbations d (mean over the K "
               "directions of `perturb.json`) at radius r (by default the largest radius every arm evaluated; "
               "the radius convention, e.g. relative to each filter's norm, is the result's `norm`). Lower "
               "is more robust."),
        Column("prior_drift",
               (f"prior drift {C.prior_point_name(point)} (KL {fmt(pt_kl, 3)}) ↓" if point else "prior drift ↓"),
               "Mean squared difference (pixels on [−1, 1]) between samples drawn from the perturbed prior "
               "N(μ1, s²I) and from N(0, I) with the same seeds (`prior.json`), at the perturbed prior with the "
               "largest KL(prior ‖ N(0, I)) every arm measured. Lower is more robust to a perturbed prior."),
        Column("exposure_gap", f"exposure gap ({', '.join(norms) or 'l2'}) ↓",
               "Exposure bias (`exposure.json`, ADM-ES protocol): the mean per-image norm of the predicted noise "
               "ε_θ along the real sampling chain minus the same norm on forward-noised training images at the "
               "same timesteps, averaged over the T' steps. Closer to 0 is less exposure bias."),
    ]
    for b in quant_bits:
        cols.append(Column(f"quant_loss_{b}", f"ΔL {b}-bit ↓",
                           f"Loss change when every convolution / linear weight is rounded to {b} bits "
                           "(symmetric round-to-nearest, `quantize.json`), same bank. Lower is more robust."))
        cols.append(Column(f"quant_drift_{b}", f"drift {b}-bit ↓",
                           f"Mean squared difference between samples of the {b}-bit and the full-precision model "
                           "from the same seeds (pixels on [−1, 1], `quantize.json`). Lower is more robust."))
    qmetric = "FID"
    if qcol is not None:
        mets = {c["metric"] for c in qcells.values() if c}
        qmetric = "FID" if mets == {"FID"} else ("SW₂ †" if mets == {"SW2"} else "FID / SW₂ †")
    cols.append(Column("quality", f"sample quality ({qmetric}, {qcol}) ↓" if qcol else "sample quality ↓",
                       "FID of the samples (`fid.json` with a detector) at the sampling budget T' most arms were "
                       "measured with; without a detector, † the weight-free sliced Wasserstein-2 distance between "
                       "samples and data on pixels (not FID; from `fid.json`, else `quantize.json` at full "
                       "precision, else `prior.json` at N(0, I)). Lower is better."))

    rows = []
    for r in runs:
        f, ld = fl[r.label], land[r.label]
        row: dict[str, Any] = {"label": r.label, "dir": str(r.path)}
        row["loss"], row["loss_source"], row["loss_n_eval"] = C.bank_loss(r)
        row["train_loss"], row["train_loss_note"] = C.train_loss(r)
        row["holdout_loss"], row["holdout_source"], row["holdout_loss_note"] = C.holdout_loss(r)
        row["lambda_max"] = f.get("lambda_max")
        row["lambda_max_bound"], row["lambda_max_certified"] = f.get("lambda_max_bound"), f.get("lambda_max_certified")
        row["trace"] = f.get("trace")
        row["sharpness"] = f.get("sharpness")
        row["landscape"] = ld["value"] if ld else None
        row["perturb"] = perturb_at(C.perturb_curves(r), pr_r)[0] if r.has("perturb") else None
        row["prior_drift"] = None
        if point is not None and r.has("prior"):
            p = C.prior_points(r)
            row["prior_drift"] = p["drift_mse"][p["points"].index(point)] if point in p["points"] else None
        row["exposure_gap"] = C.exposure_curves(r)["gap_mean"] if r.has("exposure") else None
        q = C.quantize_table(r)
        for b in quant_bits:
            i = q["bits"].index(b) if q is not None and b in q["bits"] else None
            row[f"quant_loss_{b}"] = q["loss_change"][i] if i is not None else None
            row[f"quant_drift_{b}"] = q["drift_mse"][i] if i is not None else None
        cell = qcells.get(r.label)
        row["quality"] = cell["value"] if cell else None
        row["quality_metric"] = cell["metric"] if cell else None
        rows.append(row)
    from flatkit.report import intervals as IV  # --repeats: mean ± se and 95 % intervals where recorded

    IV.attach(runs, rows, [c.key for c in cols], landscape_radius=landscape_radius, perturb_radius=pr_r,
              prior_point=point)
    bounds = [(row["label"], row["lambda_max_bound"], row["lambda_max_certified"]) for row in rows
              if row.get("lambda_max") is not None and row.get("lambda_max_bound") is not None]
    if bounds:
        notes.append("λ_max error bounds (Lanczos, certified |λ_max − θ|; docs/curvature.md): " + ", ".join(
            f"{lab} ± {b:.2g}" + ("" if ok else " (NOT certified: the tolerance was not reached)")
            for lab, b, ok in bounds))
    # drop columns no arm has (the cost in fit stays beside L(θ), with a footnote where it is missing)
    fit = any(row.get("loss") is not None for row in rows)
    cols = [c for c in cols if any(row.get(c.key) is not None for row in rows) or (fit and c.key in FIT_COLUMNS)]
    return cols, rows, notes


#: the fit columns shown beside L(θ) even when no arm has them (each missing cell footnoted with the reason)
FIT_COLUMNS = ("train_loss", "holdout_loss")
_SUP = "¹²³⁴⁵⁶⁷⁸⁹"


def fit_footnotes(cols: list[Column], rows: list[dict], trows: list[list[str]]) -> list[str]:
    """Mark the missing cells of the fit columns in ``trows`` (the display rows) with a footnote number, one per
    distinct reason; the footnote lines (``¹ held-out L(θ) — for ADM, +EMA: the model was trained without …``)."""
    keys = [c.key for c in cols]
    notes: dict[tuple[str, str], list[str]] = {}
    for i, row in enumerate(rows):
        for key in FIT_COLUMNS:
            why = row.get(f"{key}_note")
            if key in keys and row.get(key) is None and why:
                notes.setdefault((key, why), []).append(row["label"])
                j = list(notes).index((key, why))
                trows[i][1 + keys.index(key)] = "—" + (_SUP[j] if j < len(_SUP) else f"[{j + 1}]")
    head = {c.key: c.header for c in cols}
    return [f"{_SUP[j] if j < len(_SUP) else f'[{j + 1}]'} {head[key]} — for {', '.join(labs)}: {why}."
            for j, ((key, why), labs) in enumerate(notes.items())]


def _cell(row: dict, key: str) -> str:
    from flatkit.report.intervals import cell

    s = cell(row, key) or fmt(row.get(key))
    if key == "lambda_max" and row.get(key) is not None and row.get("lambda_max_certified") is False:
        s += " (not certified)"
    return s + " †" if key == "quality" and row.get("quality_metric") == "SW2" and s != "—" else s


#: figures embedded in report.html are at most this wide (the page is 1200 px; the PNG files keep 200 dpi)
EMBED_MAX_WIDTH = 1300


def _img_b64(path: Path) -> str:
    """A figure for the page: halved while wider than :data:`EMBED_MAX_WIDTH` (the page shows it at most 1200 px
    wide) and re-encoded with 256 colours, optimised: about 5× smaller; the PNG file itself is left as written."""
    import io

    from PIL import Image

    im = Image.open(path)
    im.load()
    while im.width > EMBED_MAX_WIDTH:
        im = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.LANCZOS)
    buf = io.BytesIO()  # 256 colours by octree: the arm colours and the colour maps survive (checked by eye)
    im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        buf, format="PNG", optimize=True)
    data = buf.getvalue() if buf.tell() < path.stat().st_size else path.read_bytes()
    return base64.b64encode(data).decode("ascii")


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{
text-align:left;font-weight:600}figure{margin:1.5em 0}figure img,p img{max-width:100%}figcaption{color:#555;
font-size:0.9em}dt{font-weight:600;margin-top:0.6em}.note{color:#555;font-size:0.9em}code{background:#f4f4f4;
padding:0 3px}"""


def write_report(rows: Sequence[tuple[str | None, str | Path]] | Sequence[str | Path], out_dir: str | Path,
                 title: str = "flatkit report", *, intro: str | None = None, landscape_radius: float | None = None,
                 perturb_radius: float | None = None, prior_point: tuple[float, float] | None = None,
                 quant_bits: Sequence[int] = (8, 4)) -> Report:
    """Write ``report.md``, ``report.html``, ``report.json``, ``summary.csv``, ``summary.tex`` and ``figures/``
    (PNG + PDF, ``tables.md``, ``figures.json``) into ``out_dir`` from the result folders in ``rows``.

    ``rows``: ``(label, result_dir)`` pairs (label None: derived from the checkpoint's training configuration
    and weights) or bare folders; each folder holds the result files of one checkpoint + weights choice
    (``hessian.json``, ``sharpness.json``, ``landscape.json``/``.npz``, ``perturb.json``/``.npz``,
    ``prior.json``/``.npz``, ``exposure.json``, ``quantize.json``/``.npz``, ``fid*.json``; any subset).
    Arms are ordered as in the paper. ``landscape_radius`` / ``perturb_radius`` / ``prior_point`` (μ, s) /
    ``quant_bits``: where the summary reads its numbers (defaults: the span of the slice, the largest radius
    every arm evaluated, the largest-KL prior every arm measured, 8 and 4 bits). A folder without any result
    file raises :class:`flatkit.errors.UsageError`.
    """
    from flatkit.plots.paper import landscape_plotly_html
    from flatkit.results import atomic_write_text, jsonable

    pairs: list[tuple[str | None, Path]] = []
    for item in rows:
        if isinstance(item, (tuple, list)):
            lab, d = item
            pairs.append((lab, Path(d)))
        else:
            pairs.append((None, Path(item)))
    labels = {str(d): lab for lab, d in pairs if lab}
    runs = C.read_run_dirs([str(d) for _, d in pairs], labels)
    out = Path(out_dir)
    figdir = out / "figures"
    fig = figures(runs, figdir, landscape_radius=landscape_radius, perturb_radius=perturb_radius)
    tables: list[Table] = fig["_tables"]
    quality = next((t for t in tables if t.name == "sample_quality"), None)
    cols, summ, notes = summary(runs, landscape_radius, perturb_radius, prior_point, quant_bits, quality)
    notes += fig["notes"]

    headers = ["arm"] + [c.header for c in cols]
    trows = [[row["label"]] + [_cell(row, c.key) for c in cols] for row in summ]
    footnotes = fit_footnotes(cols, summ, trows)
    fig_files = [(n, figdir / f"{n}.png") for n in FIGURE_NAMES if n in fig["figures"]]

    # ---- markdown
    md = [f"# {title}", ""]
    if intro:
        md += [intro, ""]
    md += ["Every number below is read from the result files of these folders (nothing is recomputed):", ""]
    md += [f"- **{r.label}**: `{r.path}`" + (f" (model {r.model})" if r.model else "")
           + f" (label from {r.label_source})" for r in runs]
    md += ["", "## Summary (↓: lower is better)", "", md_table(headers, trows), ""]
    md += [x for f in footnotes for x in (f, "")]
    md += ["The same table is in `summary.csv` (full-precision numbers) and `summary.tex` (LaTeX, booktabs).", ""]
    md += ["### What each column measures", ""]
    md += [f"- **{c.header}**: {c.explanation}" for c in cols]
    from flatkit.report.intervals import markdown as intervals_markdown

    md += [""] + intervals_markdown(cols, summ)
    md += ["", "## Figures", ""]
    md += [f"![{n}](figures/{n}.png)\n\n{FIGURE_CAPTIONS.get(n, '')}\n" for n, _ in fig_files]
    land = [(r.label, C.landscape_flatness(r, landscape_radius)) for r in runs if r.has("landscape")]
    land = [(lab, d) for lab, d in land if d is not None and d["dims"] == 2]
    if land:
        md += ["The interactive 2-D landscapes are in `report.html`.", ""]
    head_md = list(md)
    tail_md = ["## Detailed tables", ""] + [t.markdown() for t in tables]
    if fig["skipped"]:
        tail_md += ["## Not shown", ""] + [f"- {k}: {v}" for k, v in fig["skipped"].items()] + [""]
    plotly_js, plotly_div = "", ""
    if land:
        try:
            from flatkit.plots.landscape import plotly_js_script

            plotly_div = landscape_plotly_html(land, title="2-D loss landscapes (drag to rotate)")
            plotly_js = plotly_js_script()  # once per page, gzip + base64: 2 MB instead of 4.8 MB'
        except ImportError:
            notes.append("plotly is not installed: the interactive landscapes are left out of report.html")
    if notes:
        tail_md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_text(out / "report.md", "\n".join(head_md + tail_md))

    # ---- csv / tex
    atomic_write_text(out / "summary.csv", summary_csv(cols, summ))
    caption = "Summary of the flatkit measures per arm (lower is better where marked)."
    if any(row.get("quality_metric") == "SW2" for row in summ):
        caption += " † sliced Wasserstein-2 distance to the data on pixels (weight-free, not FID)."
    caption += "".join(f" {f}" for f in footnotes)
    atomic_write_text(out / "summary.tex", summary_tex(cols, summ, trows, caption=caption))

    # ---- html (self-contained: the markdown rendered, figures as data URIs, plotly inlined)
    def image(src: str) -> str:
        p = out / src
        return f"data:image/png;base64,{_img_b64(p)}" if p.is_file() else src

    body = to_html("\n".join(head_md), image)
    if plotly_div:
        body += "\n<h2>Interactive loss landscapes</h2>\n" + plotly_div
    body += "\n" + to_html("\n".join(tail_md), image)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style>{plotly_js}</head><body>\n{body}\n</body></html>\n")
    atomic_write_text(out / "report.html", page)

    # ---- json
    doc = {"title": title, "columns": [vars(c) for c in cols], "rows": summ,
           "runs": [r.describe() for r in runs], "figures": {n: f"figures/{n}.png" for n, _ in fig_files},
           "skipped": fig["skipped"], "notes": notes,
           "settings": {"landscape_radius": landscape_radius, "perturb_radius": perturb_radius,
                        "prior_point": list(prior_point) if prior_point else None, "quant_bits": list(quant_bits)}}
    atomic_write_text(out / "report.json", json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n")
    return Report(out_dir=out, markdown=out / "report.md", html=out / "report.html", json=out / "report.json",
                  figures_dir=figdir, columns=cols, rows=summ, notes=notes, csv=out / "summary.csv",
                  tex=out / "summary.tex")


__all__ = ["Report", "write_report", "summary"]
