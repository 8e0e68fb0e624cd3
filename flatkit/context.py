"""What the running ``flatkit`` command tells the library (kept free of heavy imports)."""

from __future__ import annotations

#: the command line of the running ``flatkit`` command, recorded in every result's ``meta`` (None for API calls)
COMMAND_LINE: list[str] | None = None
