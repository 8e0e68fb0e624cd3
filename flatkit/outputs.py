"""The output-folder policy of every command that writes (``--out``), and its lock.

One rule (docs/cli.md, "Outputs"):

- a missing or empty ``--out`` is created and written;
- a folder holding this command's result of the **same settings and the same inputs** (the checkpoints' sha256 and
  weights, recorded in ``meta.checkpoints``; for ``fid`` the samples' sha256 and the reference) is reused: the
  command says ``reusing <path>`` and computes nothing (``landscape`` resumes an unfinished grid);
- anything else is refused with exit 2 naming ``--out``: this command's result of other settings or inputs, a
  corrupt one, files this command would write, or results of another checkpoint; ``--overwrite`` replaces;
- other files (a training run's ``ckpt.pt``, results of other analyses of the same checkpoint) are left alone, so
  one folder can hold every analysis of one checkpoint + weights choice.

While a command writes, ``--out/.flatkit.lock`` (created with ``O_EXCL``) holds its pid; a second writer gets
exit 2 "in use by pid N"; a lock whose process is gone (same host) is stale and taken over. Under torchrun only
rank 0 holds the lock. Kept free of torch so the checks run before anything heavy is imported.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flatkit.errors import UsageError

LOCK_NAME = ".flatkit.lock"


# ----------------------------------------------------------------------------------------------------- the lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class OutLock:
    """An ``O_EXCL`` lock file holding ``pid host`` in a folder, for the life of the command (re-entrant within
    one process: a command that runs another in-process, like ``demo`` running ``train``, shares it)."""

    _held: dict[str, int] = {}  # resolved folder -> nesting depth in this process

    def __init__(self, folder: str | os.PathLike, option: str = "--out", created: bool = False) -> None:
        self.created = created  # made by this command: removed again at release when nothing was written
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.option = option
        self.key = str(self.folder.resolve())
        self.acquired = False

    def acquire(self) -> OutLock:
        if self.key in OutLock._held:
            OutLock._held[self.key] += 1
            self.acquired = True
            return self
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._holder_alive()  # raises when its holder lives; removes a stale lock
                continue
            except OSError as e:
                raise UsageError(f"{self.option} {self.folder}: cannot write here ({e.strerror})") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            OutLock._held[self.key] = 1
            self.acquired = True
            atexit.register(self.release)
            return self
        pid, _ = self._holder()
        raise UsageError(f"{self.option} {self.folder}: in use by pid {pid if pid is not None else '?'} "
                         f"(another flatkit command writes there; wait for it, or remove {self.path} if it is "
                         "gone)")

    def _holder(self) -> tuple[int | None, str | None]:
        try:
            parts = self.path.read_text().split()
            return int(parts[0]), (parts[1] if len(parts) > 1 else None)
        except (OSError, ValueError, IndexError):
            return None, None

    def _holder_alive(self) -> bool:
        """True when the lock's holder lives (then this writer is refused); a stale lock is removed."""
        pid, host = self._holder()
        if pid is None:
            if not self.path.exists():
                return False  # released meanwhile: try again
            import time

            time.sleep(0.05)  # written between O_EXCL and its first write: read once more
            pid, host = self._holder()
            if pid is None:
                return True
        if (host is not None and host != socket.gethostname()) or _pid_alive(pid):
            raise UsageError(f"{self.option} {self.folder}: in use by pid {pid}"
                             f"{f' on {host}' if host and host != socket.gethostname() else ''} (another flatkit "
                             "command writes there; wait for it or choose another folder)")
        try:  # stale: its process is gone
            self.path.unlink()
        except FileNotFoundError:
            pass
        return False

    def release(self) -> None:
        if not self.acquired:
            return
        self.acquired = False
        depth = OutLock._held.get(self.key, 0) - 1
        if depth > 0:
            OutLock._held[self.key] = depth
            return
        OutLock._held.pop(self.key, None)
        try:
            pid, _ = self._holder()
            if pid == os.getpid():
                self.path.unlink()
            if self.created:
                self.folder.rmdir()  # only when empty: a command that failed before writing leaves no folder
        except OSError:
            pass

    def __enter__(self) -> OutLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_out(folder: str | os.PathLike, option: str = "--out") -> OutLock | None:
    """Create ``folder`` (an unwritable one is exit 2 naming ``option``) and lock it until the command ends; under
    torchrun only rank 0 locks (None elsewhere)."""
    existed = Path(folder).exists()
    make_out_dir(folder, option)
    import sys

    if "torch.distributed" in sys.modules:
        from flatkit import distributed as dist

        if not dist.is_main():
            return None
    lock = OutLock(folder, option, created=not existed).acquire()
    try:
        import click

        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.call_on_close(lock.release)
    except ImportError:  # pragma: no cover
        pass
    return lock


def make_out_dir(folder: str | os.PathLike, option: str = "--out") -> Path:
    """``mkdir -p`` the output folder; a file in the way, no permission or an impossible path is exit 2 naming
    ``option``."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {folder}: exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno in (errno.ENOTDIR, errno.EEXIST):
            why = "a parent is not a directory"
        raise UsageError(f"{option} {folder}: cannot create this folder ({why})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {folder}: not writable (permission denied)")
    return p


# ------------------------------------------------------------------------------------------------ file modes
def umask_mode(mode: int = 0o666) -> int:
    """``mode`` under the process's umask: what ``open()`` would give a new file (0644 under umask 022)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return mode & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(old)
    return mode & ~old


def fix_mode(fd: int) -> None:
    """Give a ``mkstemp`` file (0600) the mode a plainly created file would have."""
    try:
        os.fchmod(fd, umask_mode())
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------- the policy
def checkpoints_identity(meta: dict) -> list:
    """What a result's ``meta`` says of its inputs: [(sha256, weights), ...] of its checkpoints, or for results
    of files (fid) the samples' sha256 and the reference."""
    cks = meta.get("checkpoints")
    if isinstance(cks, list) and cks:
        return [[c.get("checkpoint_sha256"), c.get("weights")] for c in cks if isinstance(c, dict)]
    if meta.get("samples_sha256") is not None:
        return [[meta.get("samples_sha256"), meta.get("ref")]]
    return []


def _canon(x: Any) -> str:
    from flatkit.results import jsonable

    return json.dumps(jsonable(x), sort_keys=True, default=str)


@dataclass
class OutState:
    """The decision on one ``--out``: ``new`` (write), ``reuse`` (this result is there already: compute nothing),
    ``resume`` (an unfinished result of the same settings), ``overwrite`` (--overwrite over an occupied folder)."""

    path: Path
    state: str
    result: Path | None = None
    notes: list = field(default_factory=list)

    @property
    def reused(self) -> bool:
        return self.state == "reuse"


def _read_meta(path: Path) -> dict | None:
    """A result's ``meta`` (None when the file is not a result); raises ValueError when unreadable."""
    js = json.loads(path.read_text())
    if isinstance(js, dict) and isinstance(js.get("meta"), dict):
        return js["meta"]
    return None


def _owned(d: Path, name: str, prefixes: tuple[str, ...]) -> list[str]:
    """The files in ``d`` that the command ``name`` writes (its result and figures)."""
    pre = (name, *prefixes)
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and p.name.startswith(pre))


#: settings added after results were first written, with the value that reproduces a result recorded without
#: them (``--repeats 1`` is the run without repeats): a result lacking the key holds that value
LATER_SETTINGS: dict[str, Any] = {"repeats": 1}


def _later_defaults(recorded: Any, config: Any) -> Any:
    """The recorded settings with the :data:`LATER_SETTINGS` they predate filled in (where ``config`` has them)."""
    if not isinstance(recorded, dict) or not isinstance(config, dict):
        return recorded
    return {**{k: v for k, v in LATER_SETTINGS.items() if k in config and k not in recorded}, **recorded}


def decide(out: str | os.PathLike, name: str, *, config: Any, identity: list, overwrite: bool = False,
           prefixes: tuple[str, ...] = (), option: str = "--out", one_checkpoint: bool = True) -> OutState:
    """The policy (module docstring) for the command ``name`` writing ``<name>.json`` into ``out``: ``config`` the
    settings recorded in ``meta.config``, ``identity`` what :func:`checkpoints_identity` gives for this run;
    ``prefixes``: other file names the command writes (``samples`` for ``sample``); ``one_checkpoint``: refuse a
    folder holding results of another checkpoint (false for results of files, like fid). Refusals are exit 2
    naming ``option``."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise UsageError(f"{option} {out}: exists and is not a directory")
    if not d.is_dir():
        return OutState(d, "new")
    try:
        held = _owned(d, name, prefixes)
    except OSError as e:
        raise UsageError(f"{option} {out}: cannot read this folder ({e.strerror})") from None
    mine = d / f"{name}.json"
    tail = "; pass --overwrite to replace it, or another --out"
    if mine.is_file():
        try:
            meta = _read_meta(mine)
        except (OSError, ValueError):
            meta = None
        if meta is None:
            if overwrite:
                return OutState(d, "overwrite", mine)
            raise UsageError(f"{option} {out}: holds a corrupt or foreign {name}.json{tail}")
        recorded = checkpoints_identity(meta)
        same_inputs = _canon(recorded) == _canon(identity)
        same_config = _canon(_later_defaults(meta.get("config"), config)) == _canon(config)
        if overwrite:
            return OutState(d, "overwrite", mine)
        if same_config and not recorded and identity:  # an unfinished result (a landscape grid saved block by
            return OutState(d, "resume", mine)  # block): the command's resume checks its inputs' hash
        if same_inputs and same_config:
            return OutState(d, "reuse", mine)
        what = "other settings" if same_inputs else "another checkpoint" if identity else "other inputs"
        raise UsageError(f"{option} {out}: holds a {name} result of {what} ({mine}){tail}")
    if held and not overwrite:
        raise UsageError(f"{option} {out}: holds files {name} would replace ({', '.join(held[:3])}){tail}")
    if one_checkpoint and identity and not overwrite:
        _check_one_checkpoint(d, identity, f"{option} {out}", tail)
    return OutState(d, "overwrite" if held else "new")


def _check_one_checkpoint(d: Path, identity: list, where: str, tail: str) -> None:
    """Refuse a folder holding results of another checkpoint (+ weights) than ``identity``'s first."""
    for p in sorted(d.glob("*.json")):
        if p.name.startswith("."):
            continue
        try:
            meta = _read_meta(p)
        except (OSError, ValueError):
            continue
        other = checkpoints_identity(meta) if meta is not None and meta.get("checkpoints") else []
        if other and _canon(other[0]) != _canon(identity[0]):
            raise UsageError(f"{where}: holds results of another checkpoint ({p.name}: {meta.get('checkpoint')}, "
                             f"weights {meta.get('weights')}); one folder holds the results of one checkpoint"
                             f"{tail}")


def clear_owned(state: OutState, name: str, prefixes: tuple[str, ...] = ()) -> None:
    """With ``--overwrite``: remove the command's earlier files (so no stale ``.npz`` or figure outlives them)."""
    if state.state != "overwrite":
        return
    for n in _owned(state.path, name, prefixes):
        p = state.path / n
        if p.is_file():
            p.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` (with the umask's mode) to write; renamed onto ``path`` when the block
    ends normally, removed when it raises: a reader never sees half a file, a kill leaves only a ``.*.tmp``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    fix_mode(fd)  # the umask's mode (0644 under 022), not mkstemp's 0600
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
