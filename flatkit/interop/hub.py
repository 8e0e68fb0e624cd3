"""Hugging Face repo ids as checkpoints: ``flatkit.load("google/ddpm-cifar10-32")``, offline by default.

A CKPT that is **not an existing local path** and reads ``[hf://]OWNER/NAME[@REVISION][/SUBFOLDER]`` is a
Hugging Face Hub repo id. It is resolved in huggingface_hub's local cache (``HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) with ``local_files_only=True``: nothing is downloaded unless
the user asks (``--download``, ``download=True``). The snapshot found is then read like any diffusers folder
(:mod:`flatkit.interop.diffusers`): a pipeline holding ``unet/`` + ``scheduler/``, or a bare ``UNet2DModel`` repo
(``config.json`` + ``diffusion_pytorch_model.safetensors``, safetensors preferred over ``.bin``).

Precedence: a local path that exists always wins (``./google/ddpm-cifar10-32`` or an existing folder of that
name is a folder); ``hf://`` forces the hub reading. A string ending in a checkpoint suffix (``.pt``, ``.pth``,
``.bin``, ``.safetensors``, ``.ckpt``, ``.pt2``, ``.json``, ``.npz``) or starting with ``/``, ``.`` or ``~`` is a
path, never a repo id.

The run's ``hub`` entry (recorded in every result's ``meta.checkpoints``) names the repo id, the revision asked
for, the commit it resolved to, the subfolder and the sha256 of every file read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flatkit.errors import UsageError

INSTALL_HINT = "pip install 'flatkit[hub]'"
PATH_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".pt2", ".json", ".npz", ".tar", ".gz", ".zip")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
REPO_ID_RE = re.compile(
    rf"(?P<repo>{_NAME}/{_NAME})(?:@(?P<rev>[A-Za-z0-9._-]+))?(?:/(?P<sub>{_NAME}(?:/{_NAME})*))?/?"
)
# what a model needs from a repo: configs and weights (safetensors first; .bin only when no safetensors)
ALLOW_SAFETENSORS = ["*.json", "*.safetensors"]
ALLOW_BIN = ["*.json", "*.bin"]


@dataclass(frozen=True)
class RepoRef:
    """A parsed repo id: ``repo_id`` (owner/name), ``revision`` (None: main) and ``subfolder`` (None: the root)."""

    repo_id: str
    revision: str | None = None
    subfolder: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "") + \
            (f"/{self.subfolder}" if self.subfolder else "")


def parse_repo_id(spec: Any) -> RepoRef | None:
    """The :class:`RepoRef` of ``spec`` when it reads as a hub repo id and is not an existing local path, else
    None (see the module docstring for the precedence)."""
    if not isinstance(spec, str | os.PathLike):
        return None
    s = os.fspath(spec)
    forced = s.startswith("hf://")
    if forced:
        s = s[len("hf://"):]
    elif not s or Path(s).expanduser().exists() or s.startswith(("/", ".", "~")) or "\\" in s:
        return None
    elif s.rstrip("/").lower().endswith(PATH_SUFFIXES):
        return None
    m = REPO_ID_RE.fullmatch(s)
    if m is None:
        if forced:
            raise UsageError(f"hf://{s}: not a repo id (expected hf://OWNER/NAME[@REVISION][/SUBFOLDER])")
        return None
    return RepoRef(m["repo"], m["rev"], m["sub"])


def hub_cache_dir() -> Path:
    """The folder huggingface_hub caches repos in, read from the environment now (as huggingface_hub does at
    import): ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``,
    ``~/.cache/huggingface/hub``."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def repo_folder(ref: RepoRef, cache: Path | None = None) -> Path:
    """``<cache>/models--OWNER--NAME``, where huggingface_hub keeps a model repo."""
    return (cache or hub_cache_dir()) / ("models--" + ref.repo_id.replace("/", "--"))


def _import_hub(spec: str) -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise UsageError(f"{spec}: no such file or directory (read as a Hugging Face repo id, it needs the "
                         f"optional huggingface_hub package: {INSTALL_HINT})") from None
    return huggingface_hub


def _absent(spec: str, ref: RepoRef, cache: Path, why: str = "") -> UsageError:
    where = repo_folder(ref, cache)
    return UsageError(
        f"{spec}: not a local path, and Hugging Face repo {ref.repo_id} (revision {ref.revision or 'main'}) is not "
        f"in the local cache (looked in {where}{'; ' + why if why else ''}); pass --download to fetch it "
        f"(download=True from Python), or set HF_HUB_CACHE to the cache that holds it")


def _snapshot(hub: Any, ref: RepoRef, cache: Path, download: bool, patterns: list[str]) -> str:
    return hub.snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=str(cache),
                                 local_files_only=not download, allow_patterns=patterns)


def resolve(spec: str, ref: RepoRef, download: bool = False) -> tuple[Path, Path]:
    """(the folder to load, the snapshot folder, named after its commit): the repo's snapshot in the local cache
    (or fetched, with ``download``), and its subfolder when one is named. Every failure is one
    :class:`UsageError` naming ``spec`` and the cache folder searched."""
    hub = _import_hub(spec)
    cache = hub_cache_dir()
    try:
        snap = _snapshot(hub, ref, cache, download, ALLOW_SAFETENSORS)
        if download and not any(Path(snap).rglob("diffusion_pytorch_model*.safetensors")):
            snap = _snapshot(hub, ref, cache, download, ALLOW_BIN)  # no safetensors in the repo: its .bin
    except Exception as e:  # noqa: BLE001 - LocalEntryNotFoundError, RepositoryNotFoundError, HTTP, OS errors
        name = type(e).__name__
        if not download and name in ("LocalEntryNotFoundError", "FileNotFoundError", "IncompleteSnapshotError"):
            why = "the cached snapshot is incomplete" if name == "IncompleteSnapshotError" else ""
            raise _absent(spec, ref, cache, why) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else name
        raise UsageError(f"{spec}: could not {'fetch' if download else 'resolve'} Hugging Face repo {ref.repo_id} "
                         f"({name}: {first[:200]})") from None
    snap_path = Path(snap)
    folder = snap_path / ref.subfolder if ref.subfolder else snap_path
    if not folder.is_dir():
        raise UsageError(f"{spec}: repo {ref.repo_id} has no subfolder {ref.subfolder!r} (snapshot {snap_path})")
    return folder, snap_path


def hub_meta(ref: RepoRef, snap: Path, files: list[Path]) -> dict:
    """What a result records of a hub model: repo id, revision asked for, commit, subfolder, sha256 per file
    (paths relative to the snapshot)."""
    from flatkit.results import file_sha256

    hashes = {}
    for f in files:
        try:
            rel = f.relative_to(snap).as_posix()
        except ValueError:
            rel = f.name
        hashes[rel] = file_sha256(f)
    return {"repo_id": ref.repo_id, "revision": ref.revision or "main", "commit": snap.name,
            "subfolder": ref.subfolder, "files": hashes}


def load_hub(spec: str, ref: RepoRef, weights: str = "raw", trust: bool = False, device: Any = None,
             download: bool = False) -> Any:
    """A hub repo id as a :class:`~flatkit.run.Run` (a diffusers UNet2DModel, bare or in a pipeline)."""
    from flatkit.interop.diffusers import is_diffusers_dir, load_diffusers, read_files

    folder, snap = resolve(spec, ref, download)
    if not is_diffusers_dir(folder):
        raise UsageError(f"{spec}: the snapshot of {ref.repo_id} ({folder}) is neither a diffusers pipeline "
                         "(unet/ + scheduler/) nor a UNet2DModel folder (config.json + weights)")
    run = load_diffusers(folder, weights=weights, trust=trust, device=device)
    run.hub = hub_meta(ref, snap, read_files(folder, weights))
    run.path = str(spec)
    return run
