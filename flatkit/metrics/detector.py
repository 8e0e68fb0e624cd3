"""Feature detectors for FID / KID: the libraries people use, or a detector the user brings. Nothing is
downloaded unless the user asks (``--download`` / ``download=True``).

``--detector`` takes (:func:`load_detector`):

- ``pytorch-fid``, ``clean-fid``, ``torch-fidelity``: that library's Inception, when the library is installed
  and its weights are already in its own cache; features are computed exactly as the library computes them (its
  preprocessing, its network), so the FID equals the library's own. Otherwise one line names the expected file
  and ``--download`` (which lets the library fetch its weights itself);
- ``PATH.pt2``: a ``torch.export`` program (``torch.export.save``), called as ``program(images)``;
- ``PATH`` (any other file): a TorchScript module, called as StyleGAN2-ADA's / clean-fid's
  ``inception-2015-12-05.pt`` is: ``detector(images, return_features=True)`` (TorchScript is deprecated by
  PyTorch; the format is still read);
- ``MODULE:FACTORY``: ``FACTORY()`` from a dotted module or a ``.py`` file returns the detector (an
  ``nn.Module`` or any callable), called as ``detector(images)``, with ``return_features=True`` when its
  signature takes it.

For the last three, ``images`` are float32 NCHW with values in [0, 255], grayscale repeated to three channels,
and the result is (N, D) features.
"""

from __future__ import annotations

import inspect
import os
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatkit.errors import UsageError

NAMED = ("pytorch-fid", "clean-fid", "torch-fidelity")
# each library's Inception weights, the file name it caches them under, and the package that brings it
PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # torch.hub checkpoints dir (load_state_dict_from_url)
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # same dir
CLEAN_FID_WEIGHTS = "inception-2015-12-05.pt"  # clean-fid's folder: /tmp ("./" on Windows)
PACKAGES = {"pytorch-fid": ("pytorch_fid", "pytorch-fid"), "clean-fid": ("cleanfid", "clean-fid"),
            "torch-fidelity": ("torch_fidelity", "torch-fidelity")}
CONVENTION = "float32 NCHW in [0, 255], gray repeated to 3 channels"


@dataclass
class Detector:
    """A loaded detector: ``fn(uint8 NHWC batch) -> (N, D) tensor``, what it is and what identifies it."""

    spec: str
    kind: str  # pytorch-fid | clean-fid | torch-fidelity | export | torchscript | factory
    fn: Callable[[np.ndarray], torch.Tensor]
    convention: str = CONVENTION
    sha256: str | None = None
    files: list[str] = field(default_factory=list)
    module: Any = None  # the underlying module (TorchScript, exported program's module, factory object)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        return self.fn(images)


def uint8_nhwc_to_float_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float32 NCHW in [0, 255], gray repeated to 3 channels."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x


def _rgb(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC with 3 channels (gray repeated, as PIL's convert("RGB") does for the libraries' loaders)."""
    return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:160]


# ----------------------------------------------------------------------------------------------------------
# files and factories


def _float_caller(module: Any, device: Any, features_kw: bool, fixed_batch: int | None = None) -> Callable:
    """``fn(uint8 NHWC) -> features`` calling ``module`` on float32 NCHW [0, 255]; ``fixed_batch``: an exported
    program specialised to one batch size is fed batches padded to it (the padding's rows dropped)."""

    def fn(images: np.ndarray) -> torch.Tensor:
        x = uint8_nhwc_to_float_nchw(images).to(device)
        n = x.shape[0]
        if fixed_batch is not None and n != fixed_batch:
            outs = []
            for i in range(0, n, fixed_batch):
                part = x[i:i + fixed_batch]
                k = part.shape[0]
                if k < fixed_batch:
                    part = torch.cat([part, part[-1:].expand(fixed_batch - k, *part.shape[1:])])
                outs.append(module(part)[:k])
            return torch.cat(outs)
        return module(x, return_features=True) if features_kw else module(x)

    return fn


def _takes_return_features(obj: Any) -> bool:
    target = obj.forward if isinstance(obj, torch.nn.Module) else obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "return_features" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _exported_batch(program: Any) -> int | None:
    """The batch size an exported program was specialised to (None when its first input's batch is dynamic)."""
    try:
        users = set(program.graph_signature.user_inputs)
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in users:
                b = node.meta["val"].shape[0]
                return int(b) if isinstance(b, int) else None
    except Exception:  # noqa: BLE001 - an unfamiliar program layout: call it as it is
        return None
    return None


def load_export(path: Path, spec: str, device: Any) -> Detector:
    """A ``torch.export`` program saved with ``torch.export.save`` (``.pt2``)."""
    from flatkit.results import file_sha256

    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - foreign or damaged archives raise many types
        raise UsageError(f"--detector {spec}: not a torch.export program ({_first_line(e)})") from None
    module = program.module()
    try:
        module.to(device)
    except Exception:  # noqa: BLE001 - some exported modules stay on the device they were exported on
        pass
    fn = _float_caller(module, device, False, _exported_batch(program))
    return Detector(spec, "export", fn, CONVENTION + ", program(x)", file_sha256(path), [str(path)], module)


def load_torchscript(path: Path, spec: str, device: Any) -> Detector:
    from flatkit.results import file_sha256

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated, still a format
            det = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a foreign file
        raise UsageError(f"--detector {spec}: neither a torch.export program (.pt2) nor a TorchScript module "
                         f"({_first_line(e)[:120]})") from None
    det.eval()
    try:  # StyleGAN's / clean-fid's Inception takes return_features; a plain traced module does not
        kw = "return_features" in [a.name for a in det.forward.schema.arguments]
    except (AttributeError, RuntimeError):
        kw = True
    call = ", detector(x, return_features=True)" if kw else ", detector(x)"
    return Detector(spec, "torchscript", _float_caller(det, device, kw), CONVENTION + call, file_sha256(path),
                    [str(path)], det)


def load_factory(spec: str, device: Any) -> Detector:
    """``MODULE:FACTORY``: the object ``FACTORY()`` returns."""
    from flatkit.interop.custom import OPTION, resolve_factory

    try:
        factory = resolve_factory(spec)
    except UsageError as e:  # its messages name --model: the option here is --detector
        msg = str(e).removeprefix(f"{OPTION} ").split(" (a factory returning")[0]
        raise UsageError(f"--detector {msg}") from None
    try:
        det = factory()
    except Exception as e:  # noqa: BLE001 - the user's code: one line
        raise UsageError(f"--detector {spec}: calling the factory failed ({type(e).__name__}: {_first_line(e)})") \
            from None
    if not callable(det):
        raise UsageError(f"--detector {spec}: the factory returned {type(det).__name__}, not a callable detector")
    if isinstance(det, torch.nn.Module):
        det = det.to(device).eval()
    kw = _takes_return_features(det)
    conv = CONVENTION + (", detector(x, return_features=True)" if kw else ", detector(x)")
    return Detector(spec, "factory", _float_caller(det, device, kw), conv, None, [], det)


# ----------------------------------------------------------------------------------------------------------
# the libraries


def torch_hub_checkpoints() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches files (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def clean_fid_dir() -> Path:
    return Path("./" if platform.system() == "Windows" else "/tmp")


def expected_weights(name: str) -> Path:
    """The file a named library reads its Inception weights from."""
    if name == "clean-fid":
        return clean_fid_dir() / CLEAN_FID_WEIGHTS
    return torch_hub_checkpoints() / (PYTORCH_FID_WEIGHTS if name == "pytorch-fid" else TORCH_FIDELITY_WEIGHTS)


def _check_library(name: str, download: bool) -> Path:
    import importlib.util

    module, package = PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"--detector {name}: the {package} package is not installed (pip install {package}); "
                         "or pass a detector file (.pt2 / TorchScript) or MODULE:FACTORY")
    weights = expected_weights(name)
    if not weights.is_file() and not download:
        raise UsageError(f"--detector {name}: its Inception weights are not in {package}'s cache (expected "
                         f"{weights}); pass --download to let {package} fetch them")
    return weights


def _library_call(name: str, what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - the library's own failure, one line
        raise UsageError(f"--detector {name}: {what} failed ({type(e).__name__}: {_first_line(e)})") from None


def _pytorch_fid(device: Any) -> tuple[Callable, str]:
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()

    def fn(images: np.ndarray) -> torch.Tensor:
        # pytorch-fid's get_activations: ToTensor() in [0, 1], the 2048-d pool_3 block, pooled to 1x1
        x = torch.from_numpy(np.ascontiguousarray(_rgb(images))).permute(0, 3, 1, 2).to(device, torch.float32)
        pred = model(x / 255.0)[0]
        if pred.shape[2] != 1 or pred.shape[3] != 1:
            pred = torch.nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
        return pred.squeeze(3).squeeze(2)

    return fn, "pytorch-fid: uint8/255 NCHW into pytorch_fid.inception.InceptionV3([3]) (its resize, 2048-d pool_3)"


def _clean_fid(device: Any) -> tuple[Callable, str]:
    from cleanfid.features import build_feature_extractor
    from cleanfid.resize import build_resizer

    try:
        model = build_feature_extractor("clean", torch.device(device), use_dataparallel=False)
    except TypeError:  # older clean-fid: no use_dataparallel
        model = build_feature_extractor("clean", torch.device(device))
    resize = build_resizer("clean")

    def fn(images: np.ndarray) -> torch.Tensor:
        # clean-fid's ResizeDataset + get_batch_features: PIL bicubic resize to 299 in float, then the network
        batch = np.stack([np.asarray(resize(im), dtype=np.float32) for im in _rgb(images)])
        x = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).to(device)
        out = model(x)
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))

    return fn, "clean-fid: mode clean (PIL bicubic resize to 299 in float32, then its TorchScript Inception)"


def _torch_fidelity(device: Any) -> tuple[Callable, str]:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).to(device).eval()

    def fn(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(_rgb(images))).permute(0, 3, 1, 2).to(device)  # uint8 NCHW
        return model(x)[0]

    return fn, "torch-fidelity: uint8 NCHW into its inception-v3-compat, feature 2048"


def load_library(name: str, device: Any, download: bool = False) -> Detector:
    """``pytorch-fid`` / ``clean-fid`` / ``torch-fidelity``: the library's own feature extractor."""
    from flatkit.results import file_sha256

    weights = _check_library(name, download)
    build = {"pytorch-fid": _pytorch_fid, "clean-fid": _clean_fid, "torch-fidelity": _torch_fidelity}[name]
    fn, conv = _library_call(name, "building its Inception", lambda: build(device))
    sha = file_sha256(weights) if weights.is_file() else None
    return Detector(name, name, fn, conv, sha, [str(weights)])


# ----------------------------------------------------------------------------------------------------------


def load_detector(spec: str | os.PathLike | Any, device: torch.device | str = "cpu",
                  download: bool = False) -> Detector:
    """``--detector``: a library name, a ``.pt2`` program, a TorchScript file or ``MODULE:FACTORY`` (module
    docstring); an already loaded callable is wrapped as a factory's result would be."""
    if isinstance(spec, Detector):
        return spec
    if callable(spec) and not isinstance(spec, str | os.PathLike):
        det = spec.to(device).eval() if isinstance(spec, torch.nn.Module) else spec
        kw = _takes_return_features(det)
        return Detector(type(det).__name__, "object", _float_caller(det, device, kw), CONVENTION, None, [], det)
    s = os.fspath(spec)
    if s in NAMED:
        return load_library(s, device, download)
    p = Path(s).expanduser()
    if p.is_file():
        if p.suffix == ".pt2":
            return load_export(p, s, device)
        import zipfile

        if zipfile.is_zipfile(p):  # an exported program under another name
            with zipfile.ZipFile(p) as z:
                if any(n.endswith(("archive_format", "serialized_exported_program.json")) or "/models/" in n
                       for n in z.namelist()):
                    return load_export(p, s, device)
        return load_torchscript(p, s, device)
    if ":" in s and not p.exists():
        return load_factory(s, device)
    if p.is_dir():
        raise UsageError(f"--detector {s}: is a directory, expected a detector file (.pt2 / TorchScript)")
    raise UsageError(f"--detector {s}: no such file (expected {', '.join(NAMED)}, a .pt2 / TorchScript file or "
                     "MODULE:FACTORY)")


def detector_features(
    detector: Any,
    images: np.ndarray,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    name: str = "--detector",
    progress: bool = False,
) -> np.ndarray:
    """(N, D) float64 features of uint8 NHWC ``images``; a failing call or a wrong output shape is a usage error
    naming ``name``."""
    det = load_detector(detector, device) if not isinstance(detector, Detector) else detector
    n = images.shape[0]
    feats = []
    it = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="features", unit="batch")
    with torch.no_grad():
        for i in it:
            batch = images[i : i + batch_size]
            try:
                f = det(batch)
            except UsageError:
                raise
            except Exception as e:  # noqa: BLE001
                raise UsageError(f"{name}: calling the detector ({det.convention}) failed ({_first_line(e)})") \
                    from None
            if isinstance(f, tuple | list) and len(f) == 1:
                f = f[0]
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != batch.shape[0]:
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise UsageError(
                    f"{name}: returned {shape} for a batch of {batch.shape[0]}, expected (N, D) features"
                )
            feats.append(f.detach().to("cpu", torch.float64).numpy())
    return np.concatenate(feats, axis=0)
