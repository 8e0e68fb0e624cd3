"""A user-supplied TorchScript feature detector (nothing is downloaded).

The convention is StyleGAN2-ADA's / clean-fid's ``inception-2015-12-05.pt``: ``detector(images,
return_features=True)``
on float32 NCHW images with values in [0, 255] (3 channels) returns (N, D) features (D = 2048 for Inception).
Grayscale images are repeated to three channels, as clean-fid does.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from flatkit.errors import UsageError


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript detector; anything else is a usage error naming ``--detector``."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--detector {path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated, still the format
            det = torch.jit.load(str(p), map_location=device)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--detector {path}: not a TorchScript module ({first[:120]})") from None
    det.eval()
    return det


def uint8_nhwc_to_float_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float32 NCHW in [0, 255], gray repeated to 3 channels."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x


def detector_features(
    detector: torch.jit.ScriptModule,
    images: np.ndarray,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    name: str = "--detector",
    progress: bool = False,
) -> np.ndarray:
    """(N, D) float64 features of uint8 NHWC ``images``; a wrong output shape is a usage error naming
    ``name``."""
    n = images.shape[0]
    feats = []
    it = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="features", unit="batch")
    with torch.no_grad():
        for i in it:
            x = uint8_nhwc_to_float_nchw(images[i : i + batch_size]).to(device)
            try:
                f = detector(x, return_features=True)
            except Exception as e:  # noqa: BLE001
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UsageError(
                    f"{name}: calling detector(images, return_features=True) failed ({first[:160]})"
                ) from None
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise UsageError(
                    f"{name}: returned {shape} for a batch of {x.shape[0]}, expected (N, D) features"
                )
            feats.append(f.detach().to("cpu", torch.float64).numpy())
    return np.concatenate(feats, axis=0)
