"""Out of memory on a device: halve the micro-batch and retry, and say so (docs/cli.md, "Out of memory").

One mechanism for every loop over micro-batches (the objective's loss, gradient and HVPs, the landscape's vmapped
grid blocks, sampling batches): :func:`retry_on_oom` runs a whole pass ``fn()``; when it raises
``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class) it frees the allocator's cache,
halves the first :class:`Knob` that is still above 1 (for a vmapped grid block: the grid points per forward,
then the micro-batch), prints one ``note:`` line on stderr and runs the pass again from its start. The bank
and its order are fixed, so a retried pass computes what a run started with the smaller size computes; at 1
it fails with one line naming ``--batch-size``.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from flatkit.errors import FlatkitError

T = TypeVar("T")


def _oom_types() -> tuple[type, ...]:
    types = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple({t for t in types if isinstance(t, type)})


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure: ``torch.OutOfMemoryError``, or a RuntimeError saying "out of memory"
    (older builds, MPS)."""
    if isinstance(exc, _oom_types()):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory(_hint: Any = None) -> None:
    """Collect garbage and return the CUDA allocator's cached blocks (a no-op on the CPU)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Knob:
    """A size that may be halved: ``label`` formats it for the note (``"micro-batch {}"``)."""

    label: str
    get: Callable[[], int]
    set: Callable[[int], None]


def _several_ranks() -> bool:
    try:
        import torch.distributed as td

        return td.is_available() and td.is_initialized() and td.get_world_size() > 1
    except (RuntimeError, ValueError):  # pragma: no cover - a half-initialised group
        return False


def retry_on_oom(fn: Callable[[], T], knobs: Sequence[Knob], what: str = "evaluation") -> T:
    """``fn()``, rerun from its start with the first knob above 1 halved whenever it runs out of memory.

    Every halving prints ``note: out of memory at micro-batch 64; retrying with 32`` (once: the new size stays
    for the calls that follow). Nothing left to halve, or several ranks (torchrun, where the ranks must keep
    the same micro-batches): a :class:`FlatkitError` naming ``--batch-size``.
    """
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not is_out_of_memory(e):
                raise
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        # outside the except clause: the traceback (and the tensors its frames hold) is gone
        free_memory()
        sizes = [(k, int(k.get())) for k in knobs]
        if _several_ranks():
            raise FlatkitError(f"out of memory during the {what} at {sizes[-1][0].label.format(sizes[-1][1])} "
                               f"under several ranks: rerun with a smaller --batch-size ({first_line})")
        for k, size in sizes:
            if size > 1:
                new = size // 2
                note(f"note: out of memory at {k.label.format(size)}; retrying with {new}")
                k.set(new)
                break
        else:
            raise FlatkitError(f"out of memory during the {what} even at micro-batch 1: --batch-size cannot go "
                               "lower (free the device, use one with more memory or analyse fewer parameters)")


def micro_batch_knob(obj: Any) -> Knob | None:
    """The objective's micro-batch size as a knob (None when it cannot be halved, e.g. user batches)."""
    if not callable(getattr(obj, "set_batch_size", None)) or int(getattr(obj, "batch_size", 0) or 0) < 1:
        return None
    return Knob("micro-batch {}", lambda: int(obj.batch_size), obj.set_batch_size)


def retry_micro_batches(obj: Any, fn: Callable[[], T], extra: Sequence[Knob] = (),
                        what: str = "evaluation") -> T:
    """:func:`retry_on_oom` with the ``extra`` knobs first, then ``obj``'s micro-batch."""
    mb = micro_batch_knob(obj)
    return retry_on_oom(fn, [*extra, *([mb] if mb is not None else [])], what=what)
