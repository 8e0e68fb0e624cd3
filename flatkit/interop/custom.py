"""Any torch model: ``--model module:factory [--weights FILE]`` and :class:`Task`.

The factory is a function taking no argument. It returns either

- an ``nn.Module`` used as a diffusion denoiser ``model(x_t, t) -> ε`` (t: int64 timesteps, ε of x_t's
  shape); flatkit adds a Gaussian diffusion (``--diffusion-steps``, ``--noise-schedule``) and the ε-MSE
  loss over a frozen bank drawn from ``--data``, exactly as for its own checkpoints; or
- a :class:`Task`: a model, a loss and a list of batches, for models that are not diffusion models. The
  analyses then run on ``L(θ) = 1/B Σ_b loss(model_θ(batch_b), batch_b)``
  (:meth:`Task.objective`, built on :meth:`flatkit.Objective.from_function`).

``--weights FILE`` loads a state dict into the factory's model (``.safetensors``, or a torch file read with
``torch.load(weights_only=True)``); without it the factory's own initialisation is analysed.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatkit.errors import UsageError

OPTION = "--model"


# ----------------------------------------------------------------------------------------------------------
# Task


def _to_device(batch: Any, device: torch.device) -> Any:
    """Tensors inside tuples / lists / dicts moved to ``device`` (other values kept)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, tuple):
        return tuple(_to_device(b, device) for b in batch)
    if isinstance(batch, list):
        return [_to_device(b, device) for b in batch]
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def default_forward(model: nn.Module, batch: Any) -> Any:
    """``model(batch[0])`` for a tuple / list batch ``(inputs, targets, ...)``, else ``model(batch)``."""
    if isinstance(batch, tuple | list):
        return model(batch[0])
    return model(batch)


class _Forward(nn.Module):
    """Holds the model so that ``functional_call`` can run a user forward ``forward(model, batch)``."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, batch: Any) -> Any:
        return self._forward(self.model, batch)


@dataclass
class Task:
    """A model, a loss and the batches it is evaluated on: what flatkit's analyses need of any model.

    ``model``: the ``nn.Module`` whose parameters are analysed (evaluated in eval mode, never modified).
    ``loss(output, batch) -> scalar tensor``: the loss of one batch given the model's output on it.
    ``batches``: a list of batches (tensors, or tuples / lists / dicts of tensors), frozen: the objective is
    ``L(θ) = 1/B Σ_b loss(forward(model_θ, batch_b), batch_b)``, the mean of the batch losses.
    ``forward(model, batch) -> output`` (optional): how the model is called on a batch; default
    ``model(batch[0])`` for a tuple / list batch ``(inputs, targets)`` and ``model(batch)`` otherwise.

    Example::

        task = flatkit.Task(model=mlp, loss=lambda out, b: F.cross_entropy(out, b[1]), batches=[(x, y)])
        obj = task.objective()
        flatkit.top_eigenvalues(obj, k=3)
    """

    model: nn.Module
    loss: Callable[[Any, Any], torch.Tensor]
    batches: Sequence[Any]
    forward: Callable[[nn.Module, Any], Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise UsageError(f"Task.model: expected an nn.Module, got {type(self.model).__name__}")
        if not callable(self.loss):
            raise UsageError("Task.loss: expected a function loss(output, batch) -> scalar tensor")
        if self.forward is not None and not callable(self.forward):
            raise UsageError("Task.forward: expected a function forward(model, batch) -> output")
        if isinstance(self.batches, torch.Tensor | dict) or not isinstance(self.batches, Sequence):
            raise UsageError("Task.batches: expected a list of batches (wrap a single batch as [batch])")
        if len(self.batches) == 0:
            raise UsageError("Task.batches: need at least one batch")

    def objective(self, include: Sequence[str] | str | None = None,
                  exclude: Sequence[str] | str | None = None) -> Any:
        """The mean batch loss as a pure function of the (selected) parameters: a flatkit objective.

        ``include`` / ``exclude``: parameter-name patterns as for :class:`flatkit.Objective`. The batches are
        moved to the parameters' device; the model runs in eval mode through ``torch.func.functional_call``
        on a structural copy, so the caller's module keeps its mode and values.
        """
        from flatkit.objective import Objective, select_names

        named = dict(self.model.named_parameters())
        if not named:
            raise UsageError("Task.model: it has no parameters")
        names = select_names(list(named), include, exclude)
        params = {k: named[k].detach() for k in names}
        fixed = {k: p.detach().clone() for k, p in named.items() if k not in params}
        buffers = {k: b.detach().clone() for k, b in self.model.named_buffers()}
        memo = {id(t): t for t in list(self.model.parameters()) + list(self.model.buffers())}
        shell = _Forward(copy.deepcopy(self.model, memo), self.forward or default_forward).eval()
        device = next(iter(params.values())).device
        batches = [_to_device(b, device) for b in self.batches]
        n = len(batches)
        loss = self.loss

        def fn(p: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
            state = {f"model.{k}": v for k, v in {**fixed, **buffers, **p}.items()}
            out = torch.func.functional_call(shell, state, (batch,))
            return loss(out, batch) / n

        obj = Objective.from_function(fn, params, batches)
        obj.config.include = None if include is None else list([include] if isinstance(include, str) else include)
        obj.config.exclude = None if exclude is None else list([exclude] if isinstance(exclude, str) else exclude)
        obj.config.num_params_total = sum(p.numel() for p in named.values())
        return obj


# ----------------------------------------------------------------------------------------------------------
# --model module:factory


class ModelSpec(str):
    """The ``--model`` value standing in for CKPT, carrying the diffusion options of a denoiser factory."""

    diffusion_steps: int
    noise_schedule: str

    def __new__(cls, spec: str, diffusion_steps: int = 1000, noise_schedule: str = "linear") -> ModelSpec:
        obj = super().__new__(cls, spec)
        obj.diffusion_steps = int(diffusion_steps)
        obj.noise_schedule = str(noise_schedule)
        return obj


def _import_module(modname: str, spec: str) -> Any:
    """``pkg.mod`` from the current directory and sys.path, or a ``path/to/file.py``."""
    if modname.endswith(".py") or os.sep in modname or "/" in modname:
        path = Path(modname)
        if not path.is_file():
            raise UsageError(f"{OPTION} {spec}: no such file {modname}")
        name = f"flatkit_user_{path.stem}"
        ispec = importlib.util.spec_from_file_location(name, path)
        if ispec is None or ispec.loader is None:
            raise UsageError(f"{OPTION} {spec}: {modname} is not an importable Python file")
        module = importlib.util.module_from_spec(ispec)
        sys.modules[name] = module
        try:
            ispec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's module failed: one line naming the option
            sys.modules.pop(name, None)
            raise UsageError(f"{OPTION} {spec}: importing {modname} raised {type(e).__name__}: {_first(e)}") \
                from None
        return module
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name is not None and (modname == e.name or modname.startswith(e.name + ".")):
            raise UsageError(f"{OPTION} {spec}: no module named {modname!r} (searched the current directory "
                             "and sys.path)") from None
        raise UsageError(f"{OPTION} {spec}: importing {modname} failed: {_first(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{OPTION} {spec}: importing {modname} raised {type(e).__name__}: {_first(e)}") from None


def _first(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def resolve_factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``module:factory`` (``module`` a dotted name or a ``.py`` path)."""
    modname, sep, attr = str(spec).rpartition(":")
    if not sep or not modname or not attr:
        raise UsageError(f"{OPTION} {spec}: expected MODULE:FACTORY (e.g. mypackage.models:make_model)")
    module = _import_module(modname, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{OPTION} {spec}: {modname} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{OPTION} {spec}: {attr} is not callable (a factory returning an nn.Module or a Task)")
    return obj


def build(spec: str) -> nn.Module | Task:
    """Call the factory; its result must be an ``nn.Module`` or a :class:`Task`."""
    factory = resolve_factory(spec)
    try:
        made = factory()
    except UsageError as e:
        raise UsageError(f"{OPTION} {spec}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's factory failed: one line naming the option
        raise UsageError(f"{OPTION} {spec}: the factory raised {type(e).__name__}: {_first(e)}") from None
    if not isinstance(made, nn.Module | Task):
        raise UsageError(f"{OPTION} {spec}: the factory returned {type(made).__name__}, expected an nn.Module "
                         "(a denoiser model(x_t, t) -> eps) or a flatkit.Task")
    return made


def load_weights(model: nn.Module, weights: str, trust: bool = False) -> None:
    """Load the state dict in ``weights`` into ``model`` (strict: names and shapes must match)."""
    from flatkit.interop.weights import load_state, read_state_dict, strip_prefixes

    name = f"--weights {weights}"
    sd = strip_prefixes(read_state_dict(weights, name, trust=trust))
    load_state(model, sd, name)


@dataclass
class TaskRun:
    """What ``load_custom`` returns for a factory that made a :class:`Task` (no diffusion)."""

    task: Task
    config: Any
    weights: str = "init"
    path: str | None = None
    sha256: str | None = None
    step: int | None = None
    available_weights: tuple[str, ...] = ()
    assumed: tuple[str, ...] = ()
    diffusion: Any = None

    @property
    def model(self) -> nn.Module:
        return self.task.model


def load_custom(
    spec: str,
    weights: str | None = None,
    diffusion_steps: int = 1000,
    noise_schedule: str = "linear",
    trust: bool = False,
    device: str | torch.device | None = None,
) -> Any:
    """A :class:`~flatkit.run.Run` (denoiser factory) or a :class:`TaskRun` (Task factory) for ``--model``.

    ``weights``: a state-dict file for the factory's model (None: the factory's initialisation).
    """
    from flatkit.checkpoint import Run
    from flatkit.config import DiffusionConfig, ModelConfig, RunConfig
    from flatkit.diffusion import create_diffusion, diffusion_config_from_adm_flags
    from flatkit.results import file_sha256

    made = build(spec)
    model = made.model if isinstance(made, Task) else made
    if weights is not None:
        load_weights(model, weights, trust=trust)
    model.eval()
    if device is not None:
        model.to(device)
    sha = file_sha256(weights) if weights is not None else None
    wname = str(weights) if weights is not None else "init"
    mcfg = ModelConfig(arch=f"custom:{spec}")
    if isinstance(made, Task):
        rc = RunConfig(model=mcfg, diffusion=DiffusionConfig(), data=None, source="custom-task")
        return TaskRun(task=made, config=rc, weights=wname, path=str(spec), sha256=sha,
                       available_weights=(wname,))
    try:
        dcfg: DiffusionConfig = diffusion_config_from_adm_flags(
            {"diffusion_steps": diffusion_steps, "noise_schedule": noise_schedule})
    except UsageError as e:
        raise UsageError(f"diffusion_steps/--noise-schedule: {e}") from None
    rc = RunConfig(model=mcfg, diffusion=dcfg, data=None, source="custom")
    return Run(model=model, diffusion=create_diffusion(dcfg), config=rc, weights=wname, path=str(spec),
               sha256=sha, available_weights=[wname])


def task_objective(run: TaskRun, data: Any = None, loss: str = "auto", t_bins: Any = None,
                   include: Any = None, exclude: Any = None, **_ignored: Any) -> Any:
    """The objective of a Task run, refusing the diffusion-only options by name."""
    if data is not None:
        raise UsageError("data: a Task brings its own batches (drop --data, or return an nn.Module denoiser)")
    if loss not in (None, "auto"):
        raise UsageError(f"loss {loss}: a Task defines its own loss")
    if t_bins is not None:
        raise UsageError("per_timestep: only a diffusion model has timesteps")
    return run.task.objective(include=include, exclude=exclude)
