"""One progress helper for every command: a tqdm bar on a terminal, plain lines in a log.

``bar(total, desc, unit)`` returns a :class:`Bar` with tqdm's small API (``update``, ``set``, ``set_postfix``,
``set_postfix_str``, ``write``, ``close``). When stderr is a terminal it draws a tqdm bar; when it is not (a
redirected log, a pipe, CI) it prints one plain line every few seconds (``FLATKIT_PROGRESS_EVERY`` seconds, 10 by
default) and one when the work ends, never bar frames. ``--no-progress`` / ``--quiet`` turn it off for the
command (:func:`configure`), and under torchrun only rank 0 shows progress. ``finish()`` closes a bar whose work
stopped before its budget (an estimator that converged) at 100 %, saying so.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

_STATE = {"enabled": True}


def configure(enabled: bool) -> None:
    """Turn progress on or off for the rest of the command (``--no-progress``)."""
    _STATE["enabled"] = bool(enabled)


def enabled() -> bool:
    return bool(_STATE["enabled"])


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("FLATKIT_PROGRESS_EVERY", "10")))
    except ValueError:
        return 10.0


def _is_main() -> bool:
    if "torch.distributed" not in sys.modules:  # no process group can exist without it
        return True
    from flatkit import distributed as dist

    return dist.is_main()


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Bar:
    """Progress of one piece of work (see the module docstring); disabled, every method does nothing."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 enabled: bool = True, leave: bool = False, stream: Any = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(enabled)
        self.postfix = ""
        self._tqdm: Any = None
        self._closed = False
        self._t0 = self._last = time.monotonic()
        self._n0 = self.n
        self._first = True  # a plain line at the first update, then one every few seconds
        if self.enabled and _isatty(self.stream):
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=self.stream,
                              dynamic_ncols=True)

    # ---------------------------------------------------------------------------------------------- tqdm's API
    def update(self, n: int = 1) -> None:
        self.set(self.n + int(n))

    def set(self, n: int) -> None:
        """Set the count (no-op when unchanged)."""
        n = int(n)
        if n == self.n or not self.enabled:
            self.n = n
            return
        if self._tqdm is not None:
            self._tqdm.update(n - self.n)
        self.n = n
        self._maybe_line()

    def set_postfix(self, refresh: bool = False, **kw: Any) -> None:
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in kw.items()), refresh=refresh)

    def set_postfix_str(self, s: str = "", refresh: bool = False) -> None:
        self.postfix = str(s)
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(self.postfix, refresh=refresh)

    def write(self, msg: str) -> None:
        """A message on stderr that does not break the bar."""
        if self._tqdm is not None:
            self._tqdm.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def finish(self, note: str = "done") -> None:
        """Close at 100 % when the work ended before ``total`` (e.g. converged), saying ``note``."""
        if self.enabled and self.total is not None and self.n < self.total:
            self.total = self.n
            if self._tqdm is not None:
                self._tqdm.total = self.n
                self._tqdm.set_postfix_str(note, refresh=True)
            self._end(note)
        else:
            self.close()

    def close(self) -> None:
        self._end(None)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ internal
    def _line(self, note: str | None = None) -> str:
        el = time.monotonic() - self._t0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            pct = 100.0 * self.n / self.total
            s = f"{head}{self.n}/{self.total} {self.unit} ({pct:.0f}%), {_fmt_time(el)} elapsed"
            rate = (self.n - self._n0) / el if el > 0 else 0.0
            if rate > 0 and self.n < self.total:
                s += f", ~{_fmt_time((self.total - self.n) / rate)} left"
        else:
            s = f"{head}{self.n} {self.unit}, {_fmt_time(el)} elapsed"
        if self.postfix:
            s += f" [{self.postfix}]"
        return s + (f" - {note}" if note else "")

    def _maybe_line(self) -> None:
        if self._tqdm is not None or self._closed:
            return
        now = time.monotonic()
        if self._first or now - self._last >= _interval():
            self._first, self._last = False, now
            print(self._line(), file=self.stream, flush=True)

    def _end(self, note: str | None) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.n > self._n0 or note:
            print(self._line(note or "done"), file=self.stream, flush=True)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bar(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool = True,
        leave: bool = False) -> Bar:
    """A progress bar (see :class:`Bar`): off when ``enabled`` is false, after ``configure(False)``, or on a
    rank other than 0."""
    return Bar(total, desc, unit, initial=initial, enabled=enabled and _STATE["enabled"] and _is_main(),
               leave=leave)


def callback(desc: str, unit: str = "it", enabled: bool = True) -> Any:
    """A ``progress(done, total)`` callback (what the landscape grid calls) drawing one bar; ``.close()`` ends it."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = bar(total=total, desc=desc, unit=unit, enabled=enabled)
        b = state["bar"]
        b.total = total
        b.set(done)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    update.close = close  # type: ignore[attr-defined]
    return update
