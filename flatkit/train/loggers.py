"""Where a training run's metrics go: ``DIR/metrics.jsonl`` always, and with ``--log`` a CSV file and TensorBoard.

``--log`` takes one or more comma-separated names (``TrainConfig.log``); ``jsonl`` is always written, whether
named or not, and stays the source of truth (the other two are views of the same records)::

    --log jsonl              DIR/metrics.jsonl                     (the default)
    --log csv                + DIR/metrics.csv
    --log tensorboard        + DIR/tensorboard/events.out.tfevents.*  (pip install 'flatkit[tensorboard]')
    --log csv,tensorboard    all three

A logger (:class:`Logger`) receives every metrics record (a flat dict with ``step``; see
``flatkit/train/metrics.py``) and, with ``--sample-every``, the sample grid drawn at that step as an HWC uint8
array. Only the process that writes the run (rank 0 under torchrun) logs.

- :class:`JsonlLogger` appends one JSON line per record (the existing ``metrics.jsonl``; a resume first truncates
  it to the lines an uninterrupted run would hold at the checkpoint, see ``truncate_metrics``).
- :class:`CsvLogger` keeps ``metrics.csv`` equal to ``metrics.jsonl``: one row per line, the columns the keys in
  order of first appearance (``partial`` last). A record bringing a key the header lacks (e.g. ``partial`` at
  the end of a run off the ``--log-every`` grid) rewrites the file from ``metrics.jsonl`` with the wider header,
  so every row has every column; an empty cell is a null or absent value. A resume rewrites it the same way.
- :class:`TensorBoardLogger` writes scalars (grouped ``loss/``, ``optim/``, ``sam/``, ``averaging/``, ``speed/``)
  and images with ``torch.utils.tensorboard.SummaryWriter`` (imported only when asked for). A resume opens the
  writer with ``purge_step`` = the checkpoint's step + 1, so the events a killed run wrote after its last
  checkpoint are hidden and the resumed steps appear once.

Custom loggers (e.g. for an experiment tracker) subclass :class:`Logger` and are passed to
``flatkit.train.train(..., loggers=[...])``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flatkit.errors import UsageError

#: The ``--log`` names; ``jsonl`` is always on.
LOGGERS = ("jsonl", "csv", "tensorboard")

#: The line a missing TensorBoard install is refused with (exit 2, before training starts).
TENSORBOARD_HINT = "pip install 'flatkit[tensorboard]'"

#: Files and folders the loggers write inside the run folder.
CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"


def parse_log(values: str | Iterable[str] | None) -> list[str]:
    """``"csv,tensorboard"`` (or a list of such strings) -> ``["jsonl", "csv", "tensorboard"]``: jsonl first and
    always, then the others in the order of :data:`LOGGERS`; an unknown name raises ``UsageError`` naming ``log``."""
    if values is None:
        values = []
    elif isinstance(values, str):
        values = [values]
    names = set()
    for v in values:
        for part in str(v).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part not in LOGGERS:
                raise UsageError(f"log: unknown logger {part!r} (choose from {', '.join(LOGGERS)}; comma-separated)")
            names.add(part)
    return ["jsonl", *[n for n in LOGGERS[1:] if n in names]]


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def check_log(names: str | Sequence[str]) -> list[str]:
    """The normalised ``--log`` list; refuses (``UsageError`` naming ``log``) a tensorboard without the package."""
    names = parse_log(names)
    if "tensorboard" in names and not tensorboard_available():
        raise UsageError(f"log tensorboard: the tensorboard package is not installed ({TENSORBOARD_HINT})")
    return names


# ----------------------------------------------------------------------------------------------- loggers
class Logger:
    """A place training records go. Override what you need; every method is called on the writing rank only."""

    def open(self, out: Path, resume_step: int | None) -> None:
        """Called once before the first step; ``resume_step`` is the checkpoint's step of a resumed run."""

    def log_metrics(self, record: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` record (already written there): ``step``, ``loss``, ... (nulls as None)."""

    def log_image(self, step: int, tag: str, image) -> None:
        """An HWC (or HW) uint8 numpy array drawn at ``step`` (the sample grid of ``--sample-every``)."""

    def close(self) -> None:
        """Called once at the end (also when training fails)."""


class JsonlLogger(Logger):
    """``DIR/metrics.jsonl``: one JSON line per record, flushed and fsynced (NaN / inf as null)."""

    def open(self, out: Path, resume_step: int | None) -> None:
        self.path = Path(out) / "metrics.jsonl"

    def log_metrics(self, record: dict[str, Any]) -> None:
        from flatkit.train.metrics import append_metrics

        append_metrics(self.path, record)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)  # floats: repr, so the CSV holds the JSON line's number exactly


def _columns(records: Iterable[dict], start: Sequence[str] = ()) -> list[str]:
    cols = list(start)
    for rec in records:
        cols.extend(k for k in rec if k not in cols)
    if "partial" in cols:
        cols.remove("partial")
        cols.append("partial")
    return cols


class CsvLogger(Logger):
    """``DIR/metrics.csv``, a row per ``metrics.jsonl`` line (see the module docstring for the header rule)."""

    def open(self, out: Path, resume_step: int | None) -> None:
        self.path = Path(out) / CSV_NAME
        self.jsonl = Path(out) / "metrics.jsonl"
        self.header: list[str] = []
        self._rewrite()  # from metrics.jsonl: empty for a new run, the kept lines for a resumed one

    def _records(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        out = []
        for line in self.jsonl.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def _rewrite(self) -> None:
        from flatkit.outputs import atomic_path

        records = self._records()
        self.header = _columns(records, ["step"])
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.header)
            for rec in records:
                w.writerow([_csv_cell(rec.get(k)) for k in self.header])

    def log_metrics(self, record: dict[str, Any]) -> None:
        if any(k not in self.header for k in record):
            self._rewrite()  # metrics.jsonl already holds this record
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_csv_cell(record.get(k)) for k in self.header])
            f.flush()
            os.fsync(f.fileno())


#: TensorBoard tag groups: metrics.jsonl key -> tag (keys not listed go under ``metrics/``).
_TAGS = {
    "loss": "loss/mean",
    **{f"loss_q{k}": f"loss/q{k}" for k in range(4)},  # t in [kT/4, (k+1)T/4)
    "grad_norm": "optim/grad_norm",
    "lr": "optim/lr",
    "rho": "sam/rho",
    "sam_e_norm": "sam/e_norm",
    "steps_per_s": "speed/steps_per_s",
    "wall_time": "speed/wall_time_s",
    "swa_n": "averaging/swa_n",
    "swa_dist": "averaging/swa_dist",
}


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a ``metrics.jsonl`` key."""
    if key in _TAGS:
        return _TAGS[key]
    if key.startswith("ema_"):
        return f"averaging/{key}"
    if "loss" in key:
        return f"loss/{key}"
    if key.startswith("sam_"):
        return f"sam/{key[4:]}"
    return f"metrics/{key}"


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter`` (imported on first use; tests replace this function)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class TensorBoardLogger(Logger):
    """``DIR/tensorboard/``: every numeric record value as a scalar, sample grids as images."""

    def open(self, out: Path, resume_step: int | None) -> None:
        try:
            writer_class = summary_writer_class()
        except ImportError:
            raise UsageError(
                f"log tensorboard: the tensorboard package is not installed ({TENSORBOARD_HINT})"
            ) from None
        purge = None if resume_step is None else int(resume_step) + 1
        (Path(out) / TENSORBOARD_DIR).mkdir(parents=True, exist_ok=True)
        self.writer = writer_class(log_dir=str(Path(out) / TENSORBOARD_DIR), purge_step=purge)

    def log_metrics(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for k, v in record.items():
            if k in ("step", "partial") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            self.writer.add_scalar(tensorboard_tag(k), float(v), step)
        self.writer.flush()

    def log_image(self, step: int, tag: str, image) -> None:
        fmt = "HWC" if getattr(image, "ndim", 3) == 3 else "HW"
        self.writer.add_image(tag, image, int(step), dataformats=fmt)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


_CLASSES = {"jsonl": JsonlLogger, "csv": CsvLogger, "tensorboard": TensorBoardLogger}


class Loggers:
    """The run's loggers together (jsonl first): what the trainer calls."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    @classmethod
    def open(cls, names: Sequence[str], out: Path, resume_step: int | None, extra: Sequence[Logger] = ()) -> Loggers:
        """The loggers ``names`` (see :func:`parse_log`) plus ``extra`` custom ones, opened on ``out``."""
        made = [_CLASSES[n]() for n in parse_log(list(names))] + list(extra)
        opened: list[Logger] = []
        try:
            for lg in made:
                lg.open(Path(out), resume_step)
                opened.append(lg)
        except BaseException:
            cls(opened).close()
            raise
        return cls(opened)

    def log_metrics(self, record: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_metrics(record)

    def log_image(self, step: int, tag: str, image) -> None:
        for lg in self.loggers:
            lg.log_image(step, tag, image)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def read_png(path: Path):
    """A PNG as an HWC uint8 RGB array (for :meth:`Logger.log_image`)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
