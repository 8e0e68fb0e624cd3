"""Figures, tables and the report, rebuilt from result files only (never recomputed).

- :func:`figures` (``flatkit figures``): the paper's figures (PNG + PDF), ``tables.md`` and ``figures.json``;
- :func:`write_report` (called by ``flatkit demo``): ``report.md``, a self-contained ``report.html`` and
  ``report.json`` with one summary table of every measure per arm;
- :mod:`flatkit.report.collect`: reading a result folder and deriving its arm label.
"""

from flatkit.report.collect import RunDir, arm_label, read_run_dir, read_run_dirs
from flatkit.report.figures import figures
from flatkit.report.writer import Report, write_report

__all__ = ["Report", "RunDir", "arm_label", "figures", "read_run_dir", "read_run_dirs", "write_report"]
