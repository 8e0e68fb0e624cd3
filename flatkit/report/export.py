"""The summary table as CSV (full-precision numbers, for a spreadsheet) and as a LaTeX booktabs table (for a
paper): :func:`summary_csv`, :func:`summary_tex`, and :func:`latex_escape` (text with ``_ % & # $ { } ~ ^ \\``
escaped and Greek letters, arrows, sub/superscripts … set as math)."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from typing import Any

#: characters LaTeX treats specially in text mode
_TEXT = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
         ">": r"\textgreater{}", "|": r"\textbar{}", "—": "---", "–": "--"}

#: characters set in math mode
_MATH = {"α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "Δ": r"\Delta", "ε": r"\varepsilon",
         "η": r"\eta", "θ": r"\theta", "λ": r"\lambda", "μ": r"\mu", "ρ": r"\rho", "σ": r"\sigma", "Σ": r"\Sigma",
         "∇": r"\nabla", "↓": r"\downarrow", "↑": r"\uparrow", "≤": r"\leq", "≥": r"\geq", "≈": r"\approx",
         "±": r"\pm", "×": r"\times", "−": "-", "‖": r"\|", "√": r"\surd", "∞": r"\infty", "·": r"\cdot",
         "†": r"^{\dagger}", "′": "'", "²": "^{2}", "³": "^{3}", "₀": "_{0}", "₁": "_{1}", "₂": "_{2}",
         "ᵢ": "_{i}", "∈": r"\in", "→": r"\to", **{c: f"^{{{i + 1}}}" for i, c in enumerate("¹²³⁴⁵⁶⁷⁸⁹")}}

#: whole words set as one math expression
_WORDS = [("λ_max", r"\lambda_{\max}"), ("L(θ)", r"L(\theta)"), ("ε_θ", r"\varepsilon_\theta"),
          ("δ_t", r"\delta_t"), ("T'", "T'")]


def latex_escape(text: str) -> str:
    """Plain text as LaTeX: special characters escaped, mathematical symbols in (merged) ``$…$``."""
    segs: list[tuple[bool, str]] = []  # (math, text)
    i = 0
    while i < len(text):
        for word, tex in _WORDS:
            if text.startswith(word, i):
                segs.append((True, tex) if word != "T'" else (True, "T'"))
                i += len(word)
                break
        else:
            ch = text[i]
            if ch in _MATH:
                segs.append((True, _MATH[ch]))
            else:
                segs.append((False, _TEXT.get(ch, ch)))
            i += 1
    out: list[str] = []
    math_buf: list[str] = []
    for is_math, s in segs:
        if is_math:
            math_buf.append(s)
            continue
        if math_buf:
            out.append("$" + _join_math(math_buf) + "$")
            math_buf = []
        out.append(s)
    if math_buf:
        out.append("$" + _join_math(math_buf) + "$")
    return "".join(out)


def _join_math(parts: list[str]) -> str:
    # a control word followed by a letter would merge into another control word: separate them
    s = ""
    for p in parts:
        if s and re.search(r"\\[A-Za-z]+$", s) and re.match(r"[A-Za-z]", p):
            s += " "
        s += p
    return s


def _number(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def summary_csv(columns: Sequence[Any], rows: Sequence[dict]) -> str:
    """One line per arm: ``arm``, ``dir``, then each column's key with the full-precision number (empty when
    missing), then where L(θ) came from and the metric of the quality column. Headers are the column keys;
    ``report.json`` holds their titles and definitions."""
    keys = [c.key for c in columns]
    extra = [k for k in ("loss_source", "loss_n_eval", "quality_metric") if any(r.get(k) is not None for r in rows)]
    ivs = [k for k in keys if any(r.get(f"{k}_interval") is not None for r in rows)]  # --repeats
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arm", "dir", *keys, *extra, *(f"{k}_{q}" for k in ivs for q in ("se", "lo", "hi", "n"))])
    for r in rows:
        w.writerow([r["label"], r.get("dir", ""), *(_number(r.get(k)) for k in keys),
                    *("" if r.get(k) is None else str(r[k]) for k in extra),
                    *(_number(getattr(r.get(f"{k}_interval"), q, None)) for k in ivs for q in ("se", "lo", "hi", "n"))])
    return buf.getvalue()


def summary_tex(columns: Sequence[Any], rows: Sequence[dict], cells: Sequence[Sequence[str]],
                caption: str = "", label: str = "tab:flatkit-summary") -> str:
    """A booktabs ``table`` of the summary: ``cells`` are the display strings (first the arm) as the markdown
    shows them; missing numbers print as ``--``."""
    n = len(columns)
    head = " & ".join([latex_escape("arm"), *(latex_escape(c.header) for c in columns)]) + r" \\"
    body = []
    for r in cells:
        body.append(" & ".join(latex_escape(c) if c != "—" else "--" for c in r) + r" \\")
    lines = [
        "% flatkit report: the summary table (requires \\usepackage{booktabs})",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * n + "}",
        r"\toprule",
        head,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [r"\label{" + label + "}", r"\end{table}", ""]
    return "\n".join(lines)
