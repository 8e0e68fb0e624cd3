"""Options and helpers shared by the subcommands (EDM-style click options: metavar, ranges, show_default)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass as dataclasses_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flatkit.errors import UsageError

if TYPE_CHECKING:  # torch is imported where it is used: `flatkit CMD --help` stays instant
    import torch


def weights_option(f: Callable) -> Callable:
    return click.option("--weights", metavar="raw|ema|swa[,...]", default="raw", show_default=True,
                        help="Which weights of each checkpoint: raw, ema (first rate), ema_<rate>, swa (a "
                             "diffusers directory: raw or a variant name); a comma-separated list measures each.")(f)


def device_option(f: Callable) -> Callable:
    return click.option("--device", metavar="DEV", default="auto", show_default=True,
                        help="cpu, cuda, cuda:N or auto (cuda when available).")(f)


def overwrite_option(f: Callable) -> Callable:
    return click.option("--overwrite", is_flag=True,
                        help="Replace a result already in --out (without it an occupied --out is reused when it "
                             "holds this result of the same settings and checkpoint, else refused).")(f)


def out_option(f: Callable) -> Callable:
    return click.option("--out", metavar="DIR", type=str, default=None,
                        help="Output folder (default: a new folder under runs/).")(f)


def checkpoint_options(f: Callable) -> Callable:
    """``--adm-flags FILE`` and ``--trust-checkpoint`` for commands that load a checkpoint."""
    f = click.option("--trust-checkpoint", is_flag=True,
                     help="Allow a full unpickle of a checkpoint that weights_only=True refuses "
                          "(runs code from the file: only for files you trust).")(f)
    f = click.option("--adm-flags", metavar="FILE", default=None,
                     help="JSON file of ADM flags for a plain guided-diffusion / DDPM-IP state dict.")(f)
    f = click.option("--download", is_flag=True,
                     help="Fetch a Hugging Face repo id (CKPT OWNER/NAME[@REV][/SUBFOLDER]) that is not in the "
                          "local cache (HF_HUB_CACHE). Without it nothing is downloaded.")(f)
    return f


def model_options(f: Callable) -> Callable:
    """``--model MODULE:FACTORY`` (any torch model instead of CKPT), ``--diffusion-steps``, ``--noise-schedule``.

    Wraps the command so that, with ``--model``, CKPT becomes a :class:`~flatkit.interop.custom.ModelSpec` (a
    string carrying the diffusion options) that :func:`load_run` and :func:`make_objective` recognise.
    """
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, model: str | None = None, diffusion_steps: int | None = None,
                noise_schedule: str | None = None, **kwargs: Any) -> Any:
        if model is None:
            for name, value in (("--diffusion-steps", diffusion_steps), ("--noise-schedule", noise_schedule)):
                if value is not None:
                    raise UsageError(f"{name}: only with --model (a checkpoint records its own diffusion)")
            if "ckpt" in kwargs and kwargs["ckpt"] is None and not kwargs.get("replot"):
                raise UsageError("CKPT: a checkpoint is required (or --model MODULE:FACTORY)")
            if "ckpts" in kwargs and not kwargs["ckpts"] and not kwargs.get("replot"):
                raise UsageError("CKPT: a checkpoint is required (or --model MODULE:FACTORY)")
            return f(*args, **kwargs)
        from flatkit.interop.custom import ModelSpec

        given = kwargs.get("ckpt") or (kwargs.get("ckpts") or [None])[0]
        if given is not None:
            raise UsageError(f"--model: pass either CKPT ({given}) or --model {model}, not both")
        for name, key in (("--compare", "compare"), ("--trajectory", "trajectory"), ("--adm-flags", "adm_flags"),
                          ("--replot", "replot")):
            if kwargs.get(key):
                raise UsageError(f"{name}: not available with --model")
        spec = ModelSpec(model, diffusion_steps if diffusion_steps is not None else 1000,
                         noise_schedule if noise_schedule is not None else "linear")
        kwargs["ckpts" if "ckpts" in kwargs else "ckpt"] = (spec,) if "ckpts" in kwargs else spec
        return f(*args, **kwargs)

    g: Callable = wrapper
    g = click.option("--noise-schedule", type=click.Choice(["linear", "cosine"]), default=None,
                     help="With --model: the beta schedule of the diffusion.  [default: linear]")(g)
    g = click.option("--diffusion-steps", metavar="T", type=click.IntRange(min=1), default=None,
                     help="With --model: the number of diffusion steps.  [default: 1000]")(g)
    g = click.option("--model", metavar="MODULE:FACTORY", default=None,
                     help="Analyse any torch model instead of CKPT: FACTORY() in MODULE (a dotted name found from "
                          "the current directory and sys.path, or a .py file) returns a denoiser nn.Module "
                          "model(x_t, t) -> eps (needs --data) or a flatkit.Task; --weights FILE then names a "
                          "state-dict file (.pt or .safetensors) loaded into it (default: the factory's own "
                          "initialisation).")(g)
    return g


def precision_options(hessian: bool = False) -> Callable:
    """``--precision fp32|bf16|fp16`` (autocast of the model's forward) and ``--channels-last`` (see
    :mod:`flatkit.precision`); ``hessian``: the help says what reduced precision costs the curvature numerics."""
    help_precision = ("Model forward under autocast: fp32 (as is), bf16 or fp16 (CUDA; bf16/fp16 also on the "
                      "CPU). Losses are still accumulated in float64.")
    if hessian:
        help_precision += (" Only when asked: Lanczos, trace and density on 16-bit HVPs lose accuracy "
                           "(small eigenvalues, orthogonality).")

    def deco(f: Callable) -> Callable:
        f = click.option("--channels-last", is_flag=True,
                         help="Channels-last memory format for 4-D inputs and weights (conv models on CUDA; "
                              "ignored on the CPU).")(f)
        return click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
                            show_default=True, help=help_precision)(f)
    return deco


def apply_precision(objs: list, precision: str, channels_last: bool) -> dict:
    """Set ``--precision`` / ``--channels-last`` on the objectives; returns what the result's meta records."""
    import torch

    from flatkit.precision import check_precision, precision_meta

    dev = objs[0].device if objs else torch.device("cpu")
    check_precision(precision, dev)
    for o in objs:
        if precision != "fp32" or channels_last:
            o.set_precision(precision, channels_last)
    return precision_meta(precision, channels_last, dev)


def sampling_precision_for(runs: list, precision: str, channels_last: bool, device: Any) -> tuple[Any, dict]:
    """``--precision`` / ``--channels-last`` of a sampling command: the context to sample in and what the result's
    meta records. On CUDA, channels-last converts the command's own models (loaded for it) in place."""
    import torch

    from flatkit.precision import check_precision, precision_meta, sampling_precision

    dev = torch.device(device)
    check_precision(precision, dev)
    if channels_last and dev.type == "cuda":
        for r in runs:
            r.model.to(memory_format=torch.channels_last)
    return sampling_precision(precision, channels_last), precision_meta(precision, channels_last, dev)


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available else cpu; an unavailable device is a usage error naming --device."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device}: not a device name (cpu, cuda, cuda:N, auto)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if d.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device}: unsupported device type")
    return d


def resolve_out_dir(out: str | None, name: str) -> Path:
    """``--out`` or a new folder ``runs/<name>-<timestamp>`` (never an existing one)."""
    if out is not None:
        p = Path(out)
        if p.exists() and not p.is_dir():
            raise UsageError(f"--out {out}: exists and is not a directory")
        return p
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    p = Path("runs") / f"{name}-{stamp}"
    i = 1
    while p.exists():
        p = Path("runs") / f"{name}-{stamp}-{i}"
        i += 1
    return p


def claim_out(params: dict, name: str, config: Any = None, runs: Any = (), identity: list | None = None,
              prefixes: tuple[str, ...] = (), finished: Callable[[Path], bool] | None = None,
              one_checkpoint: bool = True) -> Any:
    """The output-folder policy of every writing command (:mod:`flatkit.outputs`, docs/cli.md "Outputs"):
    ``--out`` (or a new folder under runs/) checked against ``<name>.json`` of the same ``config`` and inputs
    (``runs``' sha256 and weights, or ``identity``), refused with exit 2 naming ``--out`` unless ``--overwrite``,
    then created and locked for the life of the command; ``finished(folder)`` false: the result there is
    unfinished, and the state is ``resume``. Also applies ``--no-progress``. Returns the
    :class:`~flatkit.outputs.OutState` (``.reused``: the result is there, compute nothing)."""
    from flatkit import outputs, progress

    progress.configure(not params.get("no_progress", False))
    out_dir = resolve_out_dir(params.get("out"), name)
    if identity is None:
        identity = [[getattr(r, "sha256", None), getattr(r, "weights", None)] for r in runs]
    cfg = config.to_dict() if hasattr(config, "to_dict") else config
    if params.get("resume"):  # the command's own --resume checks the folder (landscape, train)
        state = outputs.OutState(out_dir, "resume")
    else:
        state = outputs.decide(out_dir, name, config=cfg, identity=identity,
                               overwrite=bool(params.get("overwrite")), prefixes=prefixes,
                               one_checkpoint=one_checkpoint)
        if state.reused and finished is not None and not finished(out_dir):
            state.state = "resume"
        if state.state == "resume":
            click.echo(f"resuming the unfinished {name} result in {out_dir} (same settings)", err=True)
    outputs.lock_out(out_dir)
    if state.reused:
        click.echo(f"reusing {state.result} (same settings and checkpoint; --overwrite recomputes)", err=True)
    elif state.state == "overwrite":
        click.echo(f"note: --overwrite: replacing the {name} result in {out_dir}", err=True)
        outputs.clear_owned(state, name, prefixes)
    return state


def load_run(ckpt: str, weights: str = "raw", adm_flags: str | None = None, trust: bool = False,
             device: str | torch.device | None = None, download: bool = False):
    """Load a checkpoint for a command (or, for a ``--model`` spec, build the model); assumptions go to stderr."""
    from flatkit.interop.custom import ModelSpec, load_custom
    from flatkit.run import load

    dev = resolve_device(device) if isinstance(device, str) else device
    if isinstance(ckpt, ModelSpec):
        return load_custom(ckpt, weights=None if weights == "raw" else weights, diffusion_steps=ckpt.diffusion_steps,
                           noise_schedule=ckpt.noise_schedule, trust=trust, device=dev)
    run = load(ckpt, weights=weights, adm_flags=adm_flags, trust=trust, device=dev, download=download)
    if run.assumed and run.config.source == "adm":
        click.echo(f"note: {ckpt}: assumed ADM defaults for {', '.join(run.assumed)} "
                   "(not determined by the state dict; pass --adm-flags to set them)", err=True)
    elif run.assumed:
        click.echo(f"note: {ckpt}: assumed {'; '.join(run.assumed)}", err=True)
    return run


def make_objective(run: Any, **kwargs: Any) -> Any:
    """``Objective(run, **kwargs)``, or the objective of a ``--model`` factory's :class:`flatkit.Task`."""
    from flatkit.interop.custom import TaskRun, task_objective
    from flatkit.objective import Objective

    if isinstance(run, TaskRun):
        return task_objective(run, **kwargs)
    if run.config.source == "custom" and kwargs.get("data") is None:
        raise UsageError("--data: required with --model (a denoiser factory records no data)")
    return Objective(run, **kwargs)


def echo_written(paths: list) -> None:
    for p in paths:
        if p is not None:
            click.echo(f"wrote {p}")


# ------------------------------------------------------------------------------------------------------------
# Settings -> click options (the settings dataclass owns every default; see flatkit.settings)
def _click_type(spec: Any) -> Any:
    if spec.kind == "choice":
        return click.Choice(list(spec.choices))
    # numbers: plain types; the settings check the range, so a bad value is one line naming the option
    # ("--points 0: must be >= 2") like every other usage error, not click's three-line usage message
    if spec.kind == "int":
        return click.INT
    if spec.kind == "float":
        return click.FLOAT
    return str


def _list_callback(name: str, spec: Any) -> Callable:
    from flatkit.settings import check_value as check
    from flatkit.settings import primary_flag

    def cb(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        return check(primary_flag(spec), value, spec)

    return cb


def settings_options(cls: type, skip: tuple[str, ...] = ()) -> Callable:
    """Click options for every field of the settings class ``cls`` (same names, defaults, ranges and help)."""
    import dataclasses

    from flatkit.settings import format_default, option_spec

    def deco(f: Callable) -> Callable:
        for fld in reversed(dataclasses.fields(cls)):
            spec = option_spec(fld)
            if spec is None or fld.name in skip:
                continue
            help_ = spec.help
            kw: dict[str, Any] = {"help": help_}
            if spec.kind == "bool":
                kw.update(is_flag=True, default=fld.default, show_default=False)
                if "/" in spec.flag:
                    kw["help"] = f"{help_}  [default: {'on' if fld.default else 'off'}]"
            else:
                kw.update(metavar=spec.metavar, type=_click_type(spec))
                if spec.kind in ("floats", "ints", "strs"):
                    kw.update(default=format_default(fld.default, spec), callback=_list_callback(fld.name, spec),
                              show_default=True)
                elif fld.default is None:
                    kw["default"] = None
                    if spec.default_help:
                        kw["help"] = f"{help_}  [default: {spec.default_help}]"
                else:
                    kw.update(default=fld.default, show_default=True)
            f = click.option(spec.flag, fld.name, **kw)(f)
        return f

    return deco


def settings_from(cls: type, params: dict) -> Any:
    """The settings of a command from its parsed options (removed from ``params``); errors name the option."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls) if f.name in params]
    values = {n: params.pop(n) for n in names}
    try:
        return cls(**values)
    except UsageError as e:
        raise UsageError(option_message(str(e))) from None


def option_message(msg: str, command: click.Command | None = None) -> str:
    """A library message that starts with a parameter name (``n_eval 0: ...``) rewritten with its option
    (``--n-eval 0: ...``): the option of that name on ``command`` (the running subcommand), else the settings'
    option of that parameter. Only this layer speaks in option names."""
    from flatkit.settings import option_name

    head = msg.partition(" ")[0].rstrip(":")
    if not head.isidentifier() or not head.islower():
        return msg
    opt = None
    if command is not None:
        for p in command.params:
            if p.name == head and isinstance(p, click.Option):
                opt = max(p.opts, key=len) if len(p.opts) > 1 and p.opts[0] == f"-{head[:1]}" else p.opts[0]
                break
    opt = opt or option_name(head)
    # "...; lower points" (flatkit.budget) names the same parameter again
    return f"{opt}{msg[len(head):].replace(f'; lower {head}', f'; lower {opt}')}" if opt else msg


# ------------------------------------------------------------------------------------------------------------
# Models: CKPT..., --compare, --labels, --weights (one loader, one labelling rule)
def models_options(f: Callable) -> Callable:
    """``CKPT...`` plus ``--compare`` and ``--labels``, shared by every analysis command."""
    f = click.option("--labels", metavar="A,B,..", default=None,
                     help="Labels of the models, in order (default: run folder name:weights).")(f)
    f = click.option("--compare", metavar="CKPT2", multiple=True,
                     help="More models on the same bank, directions and seeds (repeat, or comma-separated): "
                          "a checkpoint, or raw/ema/ema_<rate>/swa for other weights of the first CKPT.")(f)
    return click.argument("ckpts", metavar="CKPT...", nargs=-1)(f)


def split_list(values: Any) -> list[str]:
    """``--x a --x b,c`` → ``["a", "b", "c"]``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


def is_weights_name(s: str) -> bool:
    """A ``--compare`` entry naming other weights of CKPT (raw, ema, ema_<rate>, swa) rather than a file."""
    return (s in ("raw", "ema", "swa") or s.startswith("ema_")) and not Path(s).exists()


@dataclasses_dataclass
class Models:
    """The models of one command, in result order: ``runs[m]`` labelled ``labels[m]``."""

    runs: list
    labels: list
    paths: list


def load_models(ckpts: Any, compare: Any = (), labels: str | None = None, weights: str = "raw",
                device: Any = "auto", adm_flags: str | None = None, trust: bool = False,
                download: bool = False) -> Models:
    """Every model a command analyses: each CKPT under each ``--weights`` choice, then each ``--compare`` entry
    (another checkpoint under the first weights choice, or a weights name of the first CKPT)."""
    from flatkit.interop.custom import ModelSpec
    from flatkit.labels import default_label, unique

    dev = resolve_device(device) if isinstance(device, str) else device
    ckpt_list = [ckpts] if isinstance(ckpts, (str, ModelSpec)) else list(ckpts or [])
    if not ckpt_list:
        raise UsageError("CKPT: a checkpoint is required")
    wlist = split_list(weights) or ["raw"]
    entries: list[tuple[Any, str]] = [(c, w) for c in ckpt_list for w in wlist]
    for c in split_list(compare):
        entries.append((ckpt_list[0], c) if is_weights_name(c) else (c, wlist[0]))
    runs, paths = [], []
    for c, w in entries:
        try:
            runs.append(load_run(c, w, adm_flags, trust, dev, download))
        except UsageError as e:
            if is_weights_name(w) and w not in wlist and "weights" in str(e):
                msg = str(e).removeprefix(f"--weights {w}: ")  # the option given was --compare, not --weights
                raise UsageError(f"--compare {w}: {msg}") from None
            raise
        paths.append(str(c))
    if labels:
        lab = [s.strip() for s in labels.split(",")]
        if len(lab) != len(runs):
            raise UsageError(f"--labels: {len(lab)} label(s) for {len(runs)} model(s)")
    else:
        lab = [default_label(r.path if r.path else p, r.weights) for r, p in zip(runs, paths, strict=True)]
    return Models(runs=runs, labels=unique(lab), paths=paths)


def objectives_for(models: Models, s: Any) -> list:
    """One objective per model on ONE frozen bank (the first model's data unless ``--data``), from the bank
    settings ``s`` (data, n_eval, seed, batch_size, loss)."""
    from flatkit.data.holdout import bank_data

    data = bank_data(models.runs[0], s.data, getattr(s, "bank", "train"))  # --bank: a side of a held-out split
    obj = make_objective(models.runs[0], data=data, n=s.n_eval, seed=s.seed, loss=s.loss,
                         batch_size=s.batch_size, **({"include": list(s.include) or None,
                                                      "exclude": list(s.exclude) or None,
                                                      "t_bins": s.per_timestep}
                                                     if hasattr(s, "include") else {}))
    return [obj] + [obj.for_run(r) for r in models.runs[1:]]


def run_options(f: Callable) -> Callable:
    """What every analysis command takes beyond its settings: weights, device, output folder, checkpoint
    loading, ``--model`` (any torch model) and ``--no-progress``."""
    f = click.option("--no-progress", is_flag=True, help="No progress output.")(f)
    f = overwrite_option(f)
    for option in (model_options, checkpoint_options, out_option, device_option, weights_option):
        f = option(f)
    return f


# ------------------------------------------------------------------------------------------------------------
# Sampling analyses (prior, exposure, quantize): models, device, output folder and --precision in one place
@dataclasses_dataclass
class SamplingSetup:
    """What a sampling analysis command runs with: its models, device, output folder, the precision context to
    sample in and what the result's meta records of it."""

    models: Models
    device: Any
    out_dir: Path
    context: Any
    precision: dict
    settings: Any = None
    out_state: Any = None  # the output policy's decision (flatkit.outputs.OutState); .reused: compute nothing


def sampling_setup(params: dict, name: str, settings_cls: type | None = None) -> SamplingSetup:
    """Settings from the options (when ``settings_cls`` is given); load CKPT... / --compare / --labels / --weights,
    resolve --device and --out, set up --precision."""
    s = settings_from(settings_cls, params) if settings_cls is not None else None
    dev = resolve_device(params["device"])
    models = load_models(params["ckpts"], params.get("compare", ()), params.get("labels"), params["weights"], dev,
                         params.get("adm_flags"), params.get("trust_checkpoint", False), params.get("download", False))
    state = claim_out(params, name, s, models.runs, prefixes=("quantized", *(f"{m}_quantized" for m in range(10)))
                      if name == "quantize" else ())
    ctx, prec = sampling_precision_for(models.runs, params.get("precision", "fp32"),
                                       params.get("channels_last", False), dev)
    return SamplingSetup(models, dev, state.path, ctx, prec, s, state)


def sampling_result(params: dict, name: str, settings_cls: type, analysis: Callable,
                    extra: Callable[[SamplingSetup], dict] | None = None) -> tuple[Any, SamplingSetup, list]:
    """Run a sampling analysis (prior, exposure, quantize) on the command's models and save its result:
    (result, setup, the paths written). ``extra(setup)`` gives more keywords for ``analysis``. When --out holds
    this result already (same settings and checkpoints), nothing is computed: (None, setup, [])."""
    run = sampling_setup(params, name, settings_cls)
    if run.out_state is not None and run.out_state.reused:
        return None, run, []
    runs = run.models.runs
    with run.context:
        res = analysis(runs[0], compare=runs[1:], labels=run.models.labels, settings=run.settings,
                       device=run.device, progress=not params["no_progress"], **(extra(run) if extra else {}))
    res.meta["precision"] = run.precision
    return res, run, list(res.save(run.out_dir))


class option_errors:  # noqa: N801 - used as a context manager: ``with option_errors(): ...``
    """Library errors naming a settings parameter (``sampling_steps 5000: ...``) re-raised naming its option."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, UsageError):
            raise UsageError(option_message(str(exc))) from None
        return False


def analysis_command(name: str, settings_cls: type, *extra: Callable, precision: bool = True,
                     hessian: bool = False) -> Callable:
    """The click command of an analysis: ``CKPT...`` / ``--compare`` / ``--labels``, the options of
    ``settings_cls``, the command's ``extra`` options, ``--precision`` / ``--channels-last`` (unless
    ``precision=False``) and the run options (weights, device, output, checkpoint loading, ``--model``)."""
    def deco(f: Callable) -> Callable:
        f = run_options(f)
        if precision:
            f = precision_options(hessian=hessian)(f)
        for option in reversed(extra):
            f = option(f)
        f = settings_options(settings_cls)(f)
        f = models_options(f)
        return click.command(name)(f)

    return deco


@dataclasses_dataclass
class AnalysisSetup:
    """What an objective-based analysis command runs with: its settings, models, objectives on one bank, output
    folder and the precision applied."""

    name: str
    settings: Any
    models: Models
    objectives: list
    out_dir: Path
    precision: dict | None
    t0: float
    out_state: Any = None  # the output policy's decision (flatkit.outputs.OutState); .reused: compute nothing

    def meta(self, analysis_meta: dict | None = None) -> dict:
        """The result's meta: the analysis' own entries, then settings, checkpoints, versions, wall time."""
        import time

        from flatkit.results import make_meta

        meta = dict(analysis_meta or {})
        meta.update(make_meta(config=self.settings, runs=self.models.runs, labels=self.models.labels,
                              device=self.objectives[0].device, wall_time_s=time.perf_counter() - self.t0,
                              data_fingerprint=getattr(self.objectives[0].config, "data_fingerprint", None)))
        if self.precision is not None:
            meta["precision"] = self.precision
        if hasattr(self.settings, "bank") and self.objectives:  # L(θ) on the held-out items beside L(θ) on the bank
            from flatkit.data.holdout import holdout_meta

            meta["holdout"] = holdout_meta(self.models.runs, self.settings)
        return meta


def analysis_setup(params: dict, name: str, settings_cls: type,
                   finished: Callable[[Path], bool] | None = None) -> AnalysisSetup:
    """Settings from the options, the models (``CKPT...`` / ``--compare`` / ``--labels`` / ``--weights``), their
    objectives on one bank, ``--precision`` applied, the output folder resolved."""
    import time

    t0 = time.perf_counter()
    s = settings_from(settings_cls, params)
    models = load_models(params["ckpts"], params.get("compare", ()), params.get("labels"), params["weights"],
                         params["device"], params.get("adm_flags"), params.get("trust_checkpoint", False),
                         params.get("download", False))
    state = claim_out(params, name, s, models.runs, finished=finished)
    if state.reused:
        return AnalysisSetup(name, s, models, [], state.path, None, t0, state)
    objs = objectives_for(models, s)
    prec = None
    if "precision" in params:
        prec = apply_precision(objs, params["precision"], params["channels_last"])
    return AnalysisSetup(name, s, models, objs, state.path, prec, t0, state)


# ------------------------------------------------------------------------------------------------------------
# Commands that read result folders (figures, report)
def parse_labels(values: tuple[str, ...], dirs: tuple[str, ...]) -> dict[str, str]:
    """``--label DIR=NAME`` (repeatable); DIR must be one of the DIRs (as given, or the same folder)."""
    known = {str(Path(d).resolve()): d for d in dirs}
    out: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise UsageError(f"--label {v}: expected DIR=NAME")
        d, name = v.rsplit("=", 1)
        if not name.strip():
            raise UsageError(f"--label {v}: empty NAME")
        if d not in dirs and str(Path(d).resolve()) not in known:
            raise UsageError(f"--label {v}: {d} is not one of the DIRs")
        out[known.get(str(Path(d).resolve()), d)] = name.strip()
    return out


def results_reader_options(f: Callable) -> Callable:
    """``--label DIR=NAME``, ``--landscape-radius``, ``--perturb-radius``: how figures and report read folders."""
    f = click.option("--perturb-radius", metavar="R", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Radius at which the tables read ΔL under perturbation  [default: the largest radius "
                          "every perturb result evaluated]")(f)
    f = click.option("--landscape-radius", metavar="R", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Radius r of the landscape flatness number (mean ΔL over the slice's points with "
                          "‖(α, β)‖ ≤ r)  [default: the largest disc inside the grid]")(f)
    return click.option("--label", "label", metavar="DIR=NAME", multiple=True,
                        help="Arm label of a DIR (repeatable), instead of the one derived from its checkpoint's "
                             "training configuration and weights (e.g. --label runs/a=+SAM+EMA).")(f)
