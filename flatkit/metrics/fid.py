"""``flatkit fid``: FID and KID of samples against a reference, with the detector of a FID library or one the
user brings (:mod:`flatkit.metrics.detector`).

FID = d²_F(N(μ_s, Σ_s), N(μ_r, Σ_r)) on detector features (Heusel et al. 2017), KID as in
:mod:`flatkit.metrics.kid`. SAMPLES and REF are images in the layouts the libraries read: an ``npz`` whose
``arr_0`` is uint8 NHWC (ADM's sample and reference-batch files; a reference batch's own ``mu`` / ``sigma``, from
ADM's TensorFlow evaluator, are not used: both sides go through the same detector) or a folder of image files
(PNG, JPEG; pytorch-fid's, clean-fid's and torch-fidelity's input). REF may also be a data spec (``cifar10:PATH``
…) or a statistics file in any format of :mod:`flatkit.metrics.frechet` (pytorch-fid / clean-fid npz with
``mu`` / ``sigma``, clean-fid's ``feats`` file, torch-fidelity's ``.pt``; with statistics only, KID is null).
Reference statistics computed from images are cached to ``--ref-cache`` (``.npz``: ``mu``, ``sigma``,
``features``; ``.pt``: torch-fidelity's format) and read from there next time.

Without a detector only the weight-free distances of :mod:`flatkit.metrics.distances` are computed,
labelled as
such (``fid`` and ``kid`` are null).
"""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flatkit.errors import UsageError
from flatkit.results import Result, file_sha256, make_meta
from flatkit.settings import FidSettings, takes


def load_samples(path: str | os.PathLike, what: str = "SAMPLES") -> np.ndarray:
    """``arr_0`` of an npz, or the images of a folder (RGB), as uint8 NHWC (1 or 3 channels); anything else is a
    usage error naming the file."""
    p = Path(path)
    if p.is_dir():
        from flatkit.data.folder import load_folder

        try:
            arr = load_folder(str(p), channels=3)
        except UsageError as e:
            raise UsageError(f"{what} {e}") from None
        if arr.shape[0] < 2:
            raise UsageError(f"{what} {path}: need at least 2 images, got {arr.shape[0]}")
        return arr
    if not p.is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise UsageError(f"{what} {path}: expected an .npz with arr_0")
            if "arr_0" not in z.files:
                raise UsageError(f"{what} {path}: no arr_0 array (keys: {', '.join(z.files) or 'none'})")
            arr = z["arr_0"]
    except UsageError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f"{what} {path}: not a readable .npz ({type(e).__name__})") from None
    if arr.dtype != np.uint8:
        raise UsageError(f"{what} {path}: arr_0 must be uint8 images, got dtype {arr.dtype}")
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or min(arr.shape) == 0:
        raise UsageError(
            f"{what} {path}: arr_0 must be NHWC with 1 or 3 channels, got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] < 2:
        raise UsageError(f"{what} {path}: need at least 2 images, got {arr.shape[0]}")
    return arr


def samples_sha256(path: str | os.PathLike) -> str:
    """sha256 of a samples file, or of a folder's image files (their relative paths and contents, in order)."""
    import hashlib

    p = Path(path)
    if not p.is_dir():
        return file_sha256(p)
    from flatkit.data.folder import list_images

    h = hashlib.sha256()
    for f in list_images(str(p)):
        h.update(os.path.relpath(f, p).encode() + b"\0" + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def _is_stats_file(path: str) -> bool:
    """A statistics file rather than images: torch-fidelity's ``.pt``, or an npz with ``mu`` / ``sigma`` (or
    clean-fid's ``feats``) and no ``arr_0`` (an ADM reference batch holds both: its images are used)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".pt":
        return True
    if not (p.is_file() and p.suffix == ".npz"):
        return False
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(getattr(z, "files", ()))
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    return "arr_0" not in files and ({"mu", "sigma"} <= files or "feats" in files)


def write_png_folder(images: np.ndarray | str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Write uint8 NHWC images (or an npz's ``arr_0``) as ``000000.png``, ``000001.png``, ... in ``folder``: the
    layout pytorch-fid, clean-fid and torch-fidelity read (``python -m pytorch_fid FOLDER REF``)."""
    from PIL import Image

    arr = images if isinstance(images, np.ndarray) else load_samples(images)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(arr):
        Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(out / f"{i:06d}.png")
    return out


def load_reference_images(ref: str, n: int | None = None) -> np.ndarray:
    """Reference images from an npz path, a folder of images or a data spec (uint8 NHWC)."""
    if ":" in ref and not Path(ref).exists():
        from flatkit.data import load_dataset

        ds = load_dataset(ref)
        if ds.kind != "image":
            raise UsageError(f"REF {ref}: FID needs images, this data set holds points")
        m = len(ds) if n is None else min(n, len(ds))
        return ds.uint8(np.arange(m))
    arr = load_samples(ref, "REF")
    return arr if n is None else arr[:n]


@dataclass
class FidResult(Result):
    """``fid.json``."""

    name = "fid"
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    kid_note: str | None = None
    n_samples: int = 0
    n_ref: int | None = None
    feature_dim: int | None = None
    detector: str | None = None
    detector_kind: str | None = None
    detector_sha256: str | None = None
    weight_free: dict = field(default_factory=dict)
    weight_free_names: dict = field(default_factory=dict)
    ref_cache: str | None = None
    samples_stats: str | None = None
    meta: dict = field(default_factory=dict)


@takes(FidSettings)
def fid(
    samples: str,
    ref: str,
    device: Any = "cpu",
    weight_free: bool = True,
    pool: int = 8,
    progress: bool = False,
    download: bool = False,
    *,
    settings: FidSettings,
) -> FidResult:
    """FID / KID of ``samples`` (npz or folder of images) against ``ref`` (npz images, folder, data spec or a
    statistics file); ``max_ref``: use only the first N reference images. ``detector``: a library name
    (``pytorch-fid``, ``clean-fid``, ``torch-fidelity``), a ``.pt2`` / TorchScript file, ``MODULE:FACTORY`` or a
    callable; ``download=True`` lets a named library fetch its weights when they are not in its cache."""
    import torch

    from flatkit.metrics.detector import detector_features, load_detector
    from flatkit.metrics.distances import distance_names, weight_free_distances
    from flatkit.metrics.frechet import feature_statistics, frechet_distance, load_statistics, save_statistics
    from flatkit.metrics.kid import kernel_inception_distance

    s = settings
    detector, ref_cache, seed, batch_size = s.detector, s.ref_cache, s.seed, s.batch_size
    t0 = time.perf_counter()
    imgs = load_samples(samples)
    res = FidResult(n_samples=int(imgs.shape[0]))
    ref_is_stats = _is_stats_file(ref)
    ref_imgs = None
    if not ref_is_stats:
        ref_imgs = load_reference_images(ref, s.max_ref)
        if ref_imgs.shape[1:3] != imgs.shape[1:3] or ref_imgs.shape[3] != imgs.shape[3]:
            raise UsageError(
                f"REF {ref}: images of shape {ref_imgs.shape[1:]} differ from the samples' {imgs.shape[1:]}"
            )
        res.n_ref = int(ref_imgs.shape[0])

    convention = None
    if detector is not None:
        det = load_detector(detector, device, download=download)
        res.detector, res.detector_kind, res.detector_sha256 = det.spec, det.kind, det.sha256
        convention = det.convention
        fs = detector_features(det, imgs, batch_size, device, progress=progress)
        mu_s, sig_s = feature_statistics(fs)
        if s.save_stats is not None:  # the samples' statistics, in the format of the file's suffix
            save_statistics(s.save_stats, mu_s, sig_s, fs)
            res.samples_stats = str(s.save_stats)
        feats_r = None
        if ref_is_stats:
            mu_r, sig_r, feats_r = load_statistics(ref)
        elif ref_cache is not None and Path(ref_cache).is_file():
            mu_r, sig_r, feats_r = load_statistics(ref_cache)
            res.ref_cache = str(ref_cache)
        else:
            feats_r = detector_features(det, ref_imgs, batch_size, device, progress=progress)
            mu_r, sig_r = feature_statistics(feats_r)
            if ref_cache is not None:
                save_statistics(ref_cache, mu_r, sig_r, feats_r)
                res.ref_cache = str(ref_cache)
        if mu_r.shape[0] != fs.shape[1]:
            raise UsageError(
                f"REF {ref}: reference statistics have dimension {mu_r.shape[0]}, the detector gives "
                f"{fs.shape[1]}"
            )
        res.feature_dim = int(fs.shape[1])
        res.fid = frechet_distance(mu_s, sig_s, mu_r, sig_r)
        if feats_r is not None:
            res.kid, res.kid_std = kernel_inception_distance(fs, feats_r, s.kid_subsets, s.kid_subset_size, seed)
        else:
            res.kid_note = "reference given as mu/sigma statistics only: KID needs reference features"
    if weight_free and ref_imgs is not None:
        to_f = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1  # noqa: E731
        res.weight_free = weight_free_distances(
            to_f(imgs), to_f(ref_imgs), n_projections=s.projections, seed=seed, pool=pool
        )
        res.weight_free_names = distance_names(pool)
    res.meta = make_meta(
        config=s,
        samples=str(samples),
        ref=str(ref),
        ref_kind="statistics" if ref_is_stats else "images",
        pool=pool,
        input_convention=convention,
        device=device,
        wall_time_s=time.perf_counter() - t0,
        samples_sha256=samples_sha256(samples),
    )
    return res
