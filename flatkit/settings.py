"""Settings: one frozen dataclass per analysis owns every default (the CLI's options are generated from it).

Each field carries its command-line spelling in its metadata (:func:`setting`), so ``flatkit X --help``,
``help(flatkit.X)`` and the settings recorded in a result's ``meta`` cannot disagree. One concept has one name
and one default across all analyses; ``docs/cli.md`` holds the glossary. Shared groups are base classes:

- :class:`BankSettings`: the frozen evaluation bank of every loss-based measure (``data``, ``n_eval``, ``seed``,
  ``batch_size``, ``loss``);
- :class:`SamplerSettings`: how every sampling measure samples (``sampler``, ``sampling_steps`` T′,
  ``ddim_eta``, ``respacing``, ``clip``, ``n``).

This module imports neither torch nor click: ``--help`` stays instant and the report can read settings.
Library code raises :class:`~flatkit.errors.UsageError` naming the *parameter*; the command layer turns a
parameter name into its option with :func:`option_name`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from flatkit.errors import UsageError


@dataclass(frozen=True)
class OptionSpec:
    """How a settings field appears on the command line."""

    flag: str  # "--n-eval", or "--clip/--no-clip" for a boolean pair
    help: str
    metavar: str | None = None
    kind: str = "str"  # str | int | float | bool | choice | floats | ints | strs
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    default_help: str | None = None  # how to show a computed default (None defaults)


def setting(default: Any, flag: str, help: str, **spec: Any) -> Any:
    """A settings field with its command-line spelling (see :class:`OptionSpec`)."""
    return field(default=default, metadata={"option": OptionSpec(flag=flag, help=help, **spec)})


def option_spec(f: dataclasses.Field) -> OptionSpec | None:
    return f.metadata.get("option")


def primary_flag(spec: OptionSpec) -> str:
    """``--clip/--no-clip`` -> ``--no-clip`` when the default is on (the flag a user types), else the first."""
    return spec.flag.split("/")[0]


# ---------------------------------------------------------------------------------------------- validation
def check_value(name: str, value: Any, spec: OptionSpec) -> Any:
    """Validate (and normalise) one value; errors name the parameter, the command layer maps it to the option."""
    if value is None:
        return value
    if spec.kind in ("floats", "ints", "strs"):
        if isinstance(value, str):
            value = parse_list(value, spec.kind, name)
        value = tuple(value)
        item = "float" if spec.kind == "floats" else "int" if spec.kind == "ints" else "str"
        return tuple(check_value(name, v, dataclasses.replace(spec, kind=item)) for v in value)
    if spec.kind == "choice":
        if value not in spec.choices:
            raise UsageError(f"{name} {value!r}: expected one of {', '.join(spec.choices)}")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{name} {value!r}: expected True or False")
        return value
    if spec.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value) if spec.kind == "float" else int(value)
            except (TypeError, ValueError):
                raise UsageError(f"{name} {value!r}: expected a number") from None
        if spec.kind == "int" and int(value) != value:
            raise UsageError(f"{name} {value!r}: expected a whole number")
        value = int(value) if spec.kind == "int" else float(value)
        if spec.kind == "float" and not math.isfinite(value):
            raise UsageError(f"{name} {value!r}: expected a finite number")
        if spec.min is not None and (value < spec.min or (spec.min_open and value == spec.min)):
            raise UsageError(f"{name} {value!r}: must be {'>' if spec.min_open else '>='} {spec.min:g}")
        if spec.max is not None and value > spec.max:
            raise UsageError(f"{name} {value!r}: must be <= {spec.max:g}")
        return value
    return value


def parse_list(value: str, kind: str, name: str) -> tuple:
    """``"0,0.5,1"`` -> ``(0.0, 0.5, 1.0)``; an empty string is an empty tuple."""
    conv: Callable[[str], Any] = float if kind == "floats" else int if kind == "ints" else str
    parts = [v.strip() for v in str(value).split(",") if v.strip()]
    try:
        out = tuple(conv(v) for v in parts)
    except ValueError:
        what = "numbers" if kind == "floats" else "integers"
        raise UsageError(f"{name} {value!r}: expected comma-separated {what}") from None
    if kind == "floats" and not all(math.isfinite(v) for v in out):
        raise UsageError(f"{name} {value!r}: expected finite numbers")
    return out


@dataclass(frozen=True)
class Settings:
    """Base of every settings class: validates every field on construction (errors name the parameter)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            spec = option_spec(f)
            if spec is None:
                continue
            v = check_value(f.name, getattr(self, f.name), spec)
            object.__setattr__(self, f.name, v)
        self.validate()

    def validate(self) -> None:
        """Checks across fields (subclasses)."""

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        """Settings back from a result's ``meta`` (unknown keys are ignored, missing ones take defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make(cls: type, settings: Settings | None, values: dict) -> Any:
    """The settings an API function runs with: ``settings`` as given, or built from its keyword arguments.

    ``values`` are the function's keyword arguments named like the settings' fields; giving ``settings`` and a
    keyword that differs from the default is an error (which one would win is not obvious).
    """
    if settings is None:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
    if not isinstance(settings, cls):
        raise UsageError(f"settings: expected {cls.__name__}, got {type(settings).__name__}")
    defaults = cls()
    for k, v in values.items():
        if k in cls.__dataclass_fields__ and v != getattr(defaults, k):
            raise UsageError(f"{k}: pass it inside settings=, not beside it")
    return settings


def takes(cls: type, skip: Sequence[str] = ()) -> Callable:
    """Give an analysis function the keywords of its settings class ``cls``: the function is written as
    ``fn(obj, ..., settings)`` and is called as ``fn(obj, ..., field=value, ...)`` or ``fn(obj, settings=s)``.

    The keywords (every field of ``cls`` but ``skip``) are keyword-only, with the settings' defaults, and show in
    ``help(fn)`` through the generated signature; the function body always receives a validated ``settings``.
    Giving ``settings=`` together with a field keyword is an error (which one would win is not obvious).
    """
    names = [f.name for f in fields(cls) if f.name not in skip]

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "settings"]
        extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
                 for f in fields(cls) if f.name in names]
        head = [p for p in own if p.kind != inspect.Parameter.KEYWORD_ONLY]
        tail = [p for p in own if p.kind == inspect.Parameter.KEYWORD_ONLY]
        settings_param = inspect.Parameter("settings", inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=f"{cls.__name__} | None")

        @functools.wraps(fn)
        def wrapper(*args: Any, settings: Any = None, **kw: Any) -> Any:
            given = {k: kw.pop(k) for k in list(kw) if k in names}
            if settings is None:
                settings = cls(**given)
            elif not isinstance(settings, cls):
                raise UsageError(f"settings: expected {cls.__name__}, got {type(settings).__name__}")
            elif given:
                raise UsageError(f"{next(iter(given))}: pass it inside settings=, not beside it")
            if getattr(settings, "repeats", 1) > 1 and not getattr(cls, "REPEATS_INSIDE", False):
                # --repeats: every random draw R times (flatkit.repeats)
                from flatkit.repeats import run_repeated

                return run_repeated(fn, args, kw, settings)
            return fn(*args, settings=settings, **kw)

        wrapper.__signature__ = sig.replace(parameters=[*head, *extra, *tail, settings_param])  # type: ignore
        wrapper.settings_class = cls  # type: ignore[attr-defined]
        return wrapper

    return deco


#: the bank fields an objective-based analysis records but does not take (the objective owns its bank)
BANK_FIELDS = ("data", "n_eval", "batch_size", "loss", "bank")


# --------------------------------------------------------------------------------------------- shared groups
#: The one bank size of every loss-based measure (hessian, sharpness, landscape, perturb, prior, quantize).
N_EVAL = 128
#: The one sampler and T' of every sampling measure (sample, prior, exposure, quantize): ADM's ancestral
#: sampler over T' = 20 evenly respaced steps, the paper's first column.
SAMPLER, SAMPLING_STEPS = "ddpm", 20


def _repeats_setting() -> Any:
    """``--repeats R``: one name, one default and one meaning wherever a measure has something random to redraw."""
    return setting(1, "--repeats", "Redraw everything random (the evaluation bank and, where used, directions, "
                   "probes, restarts, sample seeds) R times with derived seeds (repeat r uses seed + 1000003·r; "
                   "r = 0 is --seed itself) and report mean, standard error and a 95 % interval of every scalar. "
                   "R = 1: one run, today's numbers.", metavar="R", kind="int", min=1)


@dataclass(frozen=True)
class CommonSettings(Settings):
    """What every measure takes: the seed of everything random and the micro-batch size."""

    seed: int = setting(0, "--seed", "Random seed: bank, directions, probes, restarts, samples.",
                        metavar="INT", kind="int", min=0)
    batch_size: int = setting(64, "--batch-size", "Micro-batch size of every model evaluation.",
                              metavar="N", kind="int", min=1)


@dataclass(frozen=True)
class DataSettings(CommonSettings):
    """Measures that read data."""

    data: str | None = setting(None, "--data", "Data spec: builtin:NAME, cifar10:PATH, folder:PATH, npz:PATH.",
                               metavar="SPEC", default_help="the data recorded in the checkpoint")


@dataclass(frozen=True)
class BankSettings(DataSettings):
    """The frozen evaluation bank of (x0, t, ε) every loss-based measure is computed on."""

    n_eval: int = setting(N_EVAL, "--n-eval", "Size of the frozen evaluation bank of (x0, t, ε).",
                          metavar="N", kind="int", min=1)
    loss: str = setting("auto", "--loss", "The loss analysed: the ε-MSE term alone (mse), the hybrid loss of "
                        "learned-σ models (hybrid: values and curvature of the same function), ADM's training "
                        "surrogate of it (hybrid-surrogate: the mean detached in the VLB term), or what the "
                        "diffusion trains with, hybrid for learned σ (auto).", kind="choice",
                        choices=("auto", "mse", "hybrid", "hybrid-surrogate"))
    bank: str = setting("train", "--bank", "Which items of the data the bank is drawn from, for a model trained with "
                        "flatkit train --holdout on this data: the items training saw (train) or the held-out ones "
                        "(holdout). Without a held-out split, train is the whole data.", kind="choice",
                        choices=("train", "holdout"))
    repeats: int = _repeats_setting()


@dataclass(frozen=True)
class SamplerSettings(Settings):
    """How every sampling measure draws its chains (sample i depends only on (seed, i))."""

    n: int = setting(64, "--n", "Number of samples.", metavar="N", kind="int", min=1)
    sampler: str = setting(SAMPLER, "--sampler", "Ancestral DDPM or DDIM.", kind="choice", choices=("ddpm", "ddim"))
    sampling_steps: int = setting(SAMPLING_STEPS, "--sampling-steps", "Number of sampling steps T' (respaced).",
                                  metavar="T'", kind="int", min=1)
    ddim_eta: float = setting(0.0, "--ddim-eta", "DDIM's η (0: deterministic; only with --sampler ddim).",
                              metavar="η", kind="float", min=0)
    respacing: str | None = setting(None, "--respacing", "ADM timestep_respacing (e.g. ddim20, 20, 10,5,5).",
                                    metavar="SPEC", default_help="ddim<T'> for DDIM, <T'> for DDPM")
    clip: bool = setting(True, "--clip/--no-clip", "Clip the x_0 prediction to [-1, 1] at every step.",
                         kind="bool")

    def validate(self) -> None:
        if self.sampler == "ddpm" and self.ddim_eta != 0:
            raise UsageError("ddim_eta: only meaningful with sampler ddim")


# ------------------------------------------------------------------------------------------------ analyses
@dataclass(frozen=True)
class HessianSettings(BankSettings):
    """``flatkit hessian`` / :func:`flatkit.hessian`: top eigenvalues, trace, density, per-timestep curvature."""

    top_k: int = setting(1, "--top-k", "Number of top (largest algebraic) eigenvalues by Lanczos; 0 skips them.",
                         metavar="K", kind="int", min=0)
    tol: float = setting(1e-3, "--tol", "Relative eigenvalue error Lanczos certifies before it stops (Ritz "
                         "residual and gap bounds).", metavar="TOL", kind="float", min=0, min_open=True)
    max_iter: int | None = setting(None, "--max-iter", "Most Lanczos HVPs.", metavar="N", kind="int",
                                   min=1, default_help="min(N, max(100, 20 K) × B)")
    block_size: int = setting(1, "--block-size", "Block Lanczos with B vectors per step: finds an eigenvalue "
                              "repeated up to B times (1 sees each distinct eigenvalue once).", metavar="B",
                              kind="int", min=1)
    trace: bool = setting(False, "--trace", "Estimate the Hessian trace.", kind="bool")
    trace_method: str = setting("hutch++", "--trace-method", "Trace estimator.", kind="choice",
                                choices=("hutch++", "hutchinson"))
    trace_rtol: float = setting(1e-2, "--trace-rtol", "Stop the trace when its standard error is below "
                                "R × |estimate|.", metavar="R", kind="float", min=0, min_open=True)
    trace_max_hvps: int = setting(100, "--trace-max-hvps", "HVP budget of the trace.", metavar="N", kind="int",
                                  min=2)
    density: bool = setting(False, "--density", "Spectral density by stochastic Lanczos quadrature.", kind="bool")
    density_runs: int = setting(2, "--density-runs", "Random starting vectors of SLQ.", metavar="N", kind="int",
                                min=1)
    density_steps: int = setting(40, "--density-steps", "Lanczos steps per SLQ run.", metavar="M", kind="int",
                                 min=2)
    per_timestep: int | None = setting(None, "--per-timestep", "Also measure the top eigenvalue (and the trace "
                                       "with --trace) of the loss restricted to BINS equal t-bins; the bank is "
                                       "then stratified over the same bins.", metavar="BINS", kind="int", min=1)
    include: tuple[str, ...] = setting((), "--include", "Analyse only parameters whose name matches (glob or "
                                       "regex; comma-separated).", metavar="PATTERN[,...]", kind="strs")
    exclude: tuple[str, ...] = setting((), "--exclude", "Leave out parameters whose name matches (glob or regex; "
                                       "comma-separated).", metavar="PATTERN[,...]", kind="strs")
    hvp_mode: str = setting("auto", "--hvp-mode", "HVP: auto = double backward through each micro-batch's kept "
                            "gradient graph; double_backward rebuilds it per product (less memory); fwd_rev = "
                            "forward-over-reverse.", kind="choice",
                            choices=("auto", "double_backward_cached", "double_backward", "fwd_rev"))
    basis_device: str = setting("same", "--basis-device", "Where Lanczos keeps its basis (cpu saves GPU memory).",
                                kind="choice", choices=("same", "cpu"))
    probe_batch: str = setting("auto", "--probe-batch", "Trace probes and SLQ runs: loop = one HVP per pass; vmap = "
                               "several per vmapped pass; auto = times both once and keeps the faster (the loop's "
                               "numbers bit for bit when it keeps the loop).", kind="choice",
                               choices=("auto", "loop", "vmap"))

    def validate(self) -> None:
        if self.top_k == 0 and not (self.trace or self.density or self.per_timestep):
            raise UsageError("top_k 0: nothing to compute (ask for trace, density or per_timestep)")


@dataclass(frozen=True)
class SharpnessSettings(BankSettings):
    """``flatkit sharpness`` / :func:`flatkit.sharpness`."""

    kind: str = setting("keskar", "--kind", "Keskar ε-sharpness, L2-ball (SAM) worst case, Gaussian average, or "
                        "adaptive (ASAM) worst case.", kind="choice", choices=("keskar", "l2", "average", "adaptive"))
    eps: float | None = setting(None, "--eps", "Keskar ε, ball radius ρ, or noise σ.", metavar="E", kind="float",
                                min=0, min_open=True,
                                default_help="keskar 1e-3, l2 0.05, average 0.01, adaptive 0.05")
    restarts: int = setting(3, "--restarts", "Restarts of the ascent (worst-case kinds).", metavar="N",
                            kind="int", min=1)
    ascent_steps: int = setting(20, "--ascent-steps", "Gradient-ascent steps per restart (worst-case kinds).",
                                metavar="N", kind="int", min=0)
    lr: float | None = setting(None, "--lr", "Ascent step, in box half-widths (keskar) or radii (l2/adaptive).",
                               metavar="A", kind="float", min=0, min_open=True, default_help="keskar 0.25, else 1")
    samples: int = setting(32, "--samples", "Gaussian draws (average).", metavar="N", kind="int", min=2)
    confidence: float = setting(0.95, "--confidence", "Confidence level of the interval (average).", metavar="C",
                                kind="float", min=0, min_open=True, max=1)
    asam_eta: float = setting(0.0, "--asam-eta", "Adaptive: c = |θ| + η.", metavar="η", kind="float", min=0)
    solver: str = setting("auto", "--solver", "Worst-case maximiser: ascent = projected (sign) gradient ascent; "
                          "krylov (l2/adaptive) = the trust-region subproblem of the quadratic model in a Krylov "
                          "subspace of HVPs (--restarts Lanczos blocks of --ascent-steps), refined by the ascent; "
                          "lbfgsb (keskar; needs scipy) = L-BFGS-B over the box.", kind="choice",
                          choices=("auto", "ascent", "krylov", "lbfgsb"),
                          default_help="auto: krylov for l2/adaptive, ascent for keskar")

    def validate(self) -> None:
        if self.confidence >= 1:
            raise UsageError(f"confidence {self.confidence}: must be < 1")
        if self.solver == "krylov" and self.kind not in ("l2", "adaptive"):
            raise UsageError(f"solver krylov: only for kind l2 or adaptive, not {self.kind}")
        if self.solver == "lbfgsb" and self.kind != "keskar":
            raise UsageError(f"solver lbfgsb: only for kind keskar, not {self.kind}")
        if self.solver != "auto" and self.kind == "average":
            raise UsageError(f"solver {self.solver}: kind average has no maximiser")


NORM_HELP = ("How a direction is scaled: per filter to the weights' filter norms (Li et al. 2018), per tensor "
             "(layer), to ‖θ‖ as a whole (model), to ‖d‖ = 1 (unit, an absolute L2 radius), or as drawn (none).")
NORMS = ("filter", "layer", "model", "unit", "none")
BIAS_HELP = "1-D tensors (biases, norm scales) under --norm filter: zeroed or normalised as one filter."


@dataclass(frozen=True)
class LandscapeSettings(BankSettings):
    """``flatkit landscape`` / :func:`flatkit.landscape`: L(θ + a d1 + b d2) on a grid."""

    dims: int = setting(2, "--dims", "1-D or 2-D slice.", kind="int", min=1, max=2)
    points: int = setting(21, "--points", "Grid points per axis (odd: the centre is on the grid).", metavar="N",
                          kind="int", min=2)
    span: str | None = setting(None, "--span", "Coordinates in [-R, R] or [MIN, MAX].", metavar="R|MIN,MAX",
                               default_help="1; -0.5,1.5 for interp; PCA: from the trajectory")
    directions: str = setting("random", "--directions", "Random Gaussian, Hessian top eigenvectors, checkpoint "
                              "interpolation, or PCA of --trajectory.", kind="choice",
                              choices=("random", "eigen", "interp", "pca"))
    norm: str = setting("filter", "--norm", NORM_HELP, kind="choice", choices=NORMS)
    bias: str = setting("zero", "--bias", BIAS_HELP, kind="choice", choices=("zero", "normalise"))
    mode: str = setting("auto", "--mode", "Several grid points per forward (vmap), one at a time, or whichever "
                        "one block times faster.", kind="choice", choices=("auto", "vmap", "sequential"))
    batch_points: int | None = setting(None, "--batch-points", "Grid points per vmapped forward (and per saved "
                                       "block).", metavar="N", kind="int", min=1, default_help="8 on CPU, 32 on GPU")


@dataclass(frozen=True)
class PerturbSettings(BankSettings):
    """``flatkit perturb`` / :func:`flatkit.perturb`: ΔL(r) = L(θ + r d) − L(θ) for random and worst-case d."""

    radii: tuple[float, ...] = setting((0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1), "--radii", "Perturbation radii r "
                                       "(in the units --norm sets).", metavar="R1,R2,..", kind="floats", min=0)
    norm: str = setting("filter", "--norm", NORM_HELP, kind="choice", choices=NORMS)
    bias: str = setting("zero", "--bias", BIAS_HELP, kind="choice", choices=("zero", "normalise"))
    n_directions: int = setting(8, "--n-directions", "Number of random Gaussian directions.", metavar="N",
                                kind="int", min=1)
    worst: bool = setting(True, "--worst/--no-worst", "Also the worst-case (SAM) direction.", kind="bool")
    worst_steps: int = setting(3, "--worst-steps", "Normalised-gradient ascent steps refining the worst-case "
                               "direction.", metavar="N", kind="int", min=0)
    mode: str = setting("auto", "--mode", "Radii of one direction in one vmapped forward, one at a time, or the "
                        "faster.", kind="choice", choices=("auto", "vmap", "sequential"))
    batch_points: int | None = setting(None, "--batch-points", "Radii per vmapped forward.", metavar="N",
                                       kind="int", min=1, default_help="all radii of a direction")

    def validate(self) -> None:
        if not self.radii:
            raise UsageError("radii: expected at least one radius")


@dataclass(frozen=True)
class SampleSettings(SamplerSettings, CommonSettings):
    """``flatkit sample`` / :func:`flatkit.sample`."""


@dataclass(frozen=True)
class ExposureSettings(SamplerSettings, DataSettings):
    """``flatkit exposure`` / :func:`flatkit.exposure`: ‖ε_θ‖ along the chain vs on forward-noised data."""

    eps_norm: str = setting("l2", "--eps-norm", "Per-image ‖ε_θ‖₂ or ‖ε_θ‖₂².", kind="choice",
                            choices=("l2", "squared"))
    delta: bool = setting(True, "--delta/--no-delta", "Also δ_t (one more sampling chain per checkpoint).",
                          kind="bool")
    repeats: int = _repeats_setting()

    def validate(self) -> None:
        SamplerSettings.validate(self)
        if not self.clip:
            raise UsageError("clip: exposure samples the chain as ADM does, clipped")


@dataclass(frozen=True)
class PriorSettings(SamplerSettings, BankSettings):
    """``flatkit prior`` / :func:`flatkit.prior`: samples from N(μ1, s²I) (and z + η z') paired by seed."""

    shifts: tuple[float, ...] = setting((0.0, 0.5, 1.0), "--shift", "Prior means μ (x_T = μ·1 + s·z).",
                                        metavar="MU[,...]", kind="floats")
    scales: tuple[float, ...] = setting((1.0, 1.2), "--scale", "Prior scales s > 0.", metavar="S[,...]",
                                        kind="floats", min=0, min_open=True)
    noise_etas: tuple[float, ...] = setting((), "--noise-eta", "Additive perturbations x_T = z + η·z' (prior "
                                            "N(0, (1+η²)I)); empty for none.", metavar="ETA[,...]", kind="floats",
                                            min=0)
    n_ref: int = setting(512, "--n-ref", "Data items for the distance to the data.", metavar="N", kind="int", min=2)
    projections: int = setting(256, "--projections", "Random directions of the sliced Wasserstein distance.",
                               metavar="L", kind="int", min=1)

    def validate(self) -> None:
        SamplerSettings.validate(self)
        if not self.shifts or not self.scales:
            raise UsageError("shifts/scales: expected at least one value each")
        if not self.clip:
            raise UsageError("clip: prior compares clipped samples")


@dataclass(frozen=True)
class QuantizeSettings(SamplerSettings, BankSettings):
    """``flatkit quantize`` / :func:`flatkit.quantize`: symmetric round-to-nearest weight quantization."""

    bits: tuple[int, ...] = setting((8, 6, 4), "--bits", "Bit widths, each in 2..16.", metavar="B[,...]",
                                    kind="ints", min=2, max=16)
    granularity: str = setting("per-tensor", "--granularity", "One step per tensor or per output channel.",
                               kind="choice", choices=("per-tensor", "per-channel"))
    skip: tuple[str, ...] = setting((), "--skip", "Module names (glob or regex) kept in full precision.",
                                    metavar="PATTERN[,...]", kind="strs")
    skip_first_last: bool = setting(False, "--skip-first-last", "Keep the first and last conv/linear layers in "
                                    "full precision.", kind="bool")
    n_ref: int = setting(512, "--n-ref", "Data items for the distance to the data.", metavar="N", kind="int", min=2)
    projections: int = setting(256, "--projections", "Random directions of the sliced Wasserstein distance.",
                               metavar="L", kind="int", min=1)

    def validate(self) -> None:
        SamplerSettings.validate(self)
        if not self.bits:
            raise UsageError("bits: expected at least one bit width")
        if not self.clip:
            raise UsageError("clip: quantize compares clipped samples")


@dataclass(frozen=True)
class FidSettings(CommonSettings):
    """``flatkit fid`` / :func:`flatkit.fid`."""

    detector: str | None = setting(None, "--detector", "Feature detector: pytorch-fid, clean-fid or "
                                   "torch-fidelity (that library's Inception, from its local cache), a "
                                   "torch.export program (.pt2), a TorchScript file or MODULE:FACTORY. Without it "
                                   "only weight-free distances are reported.",
                                   metavar="NAME|PATH|MODULE:FACTORY")
    ref_cache: str | None = setting(None, "--ref-cache", "Reference statistics file: read when it exists, else "
                                    "written (.npz: mu/sigma/features as pytorch-fid and clean-fid write them; "
                                    ".pt: torch-fidelity's format).", metavar="FILE")
    save_stats: str | None = setting(None, "--save-stats", "Also write the samples' statistics to FILE (.npz: "
                                     "mu/sigma/features as pytorch-fid and clean-fid read them; .pt: "
                                     "torch-fidelity's format).", metavar="FILE")
    max_ref: int | None = setting(None, "--max-ref", "Use only the first N reference images.", metavar="N",
                                  kind="int", min=2, default_help="all")
    kid_subsets: int = setting(100, "--kid-subsets", "KID subsets.", metavar="K", kind="int", min=1)
    kid_subset_size: int = setting(1000, "--kid-subset-size", "KID subset size.", metavar="M", kind="int", min=2)
    projections: int = setting(256, "--projections", "Random directions of the sliced Wasserstein distance.",
                               metavar="L", kind="int", min=1)


#: the measures ``flatkit track`` takes at every checkpoint (each with its own command's settings)
TRACK_MEASURES = ("hessian", "sharpness", "landscape", "perturb", "quantize")


@dataclass(frozen=True)
class TrackSettings(BankSettings):
    """``flatkit track`` / :func:`flatkit.analyses.track.track`: measures at every saved checkpoint of training runs,
    on one bank (and the same seeds: directions, probes) for every checkpoint and run."""

    measures: tuple[str, ...] = setting(("hessian", "sharpness", "quantize"), "--measures", "Measures taken at "
                                        "every checkpoint: hessian, sharpness, landscape, perturb, quantize (each "
                                        "with its own command's options).", metavar="NAME[,...]", kind="strs")
    weights: tuple[str, ...] = setting(("raw",), "--weights", "Weights of every checkpoint measured: raw, ema "
                                       "(first rate), ema_<rate>, swa; a comma-separated list measures each.",
                                       metavar="raw|ema|swa[,...]", kind="strs")

    #: ``repeats`` is passed to every measure at every checkpoint (each result carries its intervals), not a
    #: repeat of the whole track
    REPEATS_INSIDE = True

    def validate(self) -> None:
        bad = [m for m in self.measures if m not in TRACK_MEASURES]
        if bad:
            raise UsageError(f"measures {bad[0]!r}: unknown measure (expected some of {', '.join(TRACK_MEASURES)})")
        if not self.measures:
            raise UsageError("measures: expected at least one measure")
        if len(set(self.measures)) != len(self.measures):
            raise UsageError(f"measures {','.join(self.measures)}: a measure is named twice")
        if not self.weights:
            raise UsageError("weights: expected at least one weights name")
        if len(set(self.weights)) != len(self.weights):
            raise UsageError(f"weights {','.join(self.weights)}: a weights name is given twice")


#: every analysis: command name -> its settings class
ANALYSES: dict[str, type[Settings]] = {
    "hessian": HessianSettings,
    "sharpness": SharpnessSettings,
    "landscape": LandscapeSettings,
    "perturb": PerturbSettings,
    "sample": SampleSettings,
    "exposure": ExposureSettings,
    "prior": PriorSettings,
    "quantize": QuantizeSettings,
    "fid": FidSettings,
    "track": TrackSettings,
}


def option_name(param: str) -> str | None:
    """The command-line option of a settings parameter (one name, one meaning across every analysis)."""
    for cls in ANALYSES.values():
        f = cls.__dataclass_fields__.get(param)
        if f is not None and option_spec(f) is not None:
            return primary_flag(option_spec(f))
    return None


def glossary() -> list[tuple[str, str, str, str]]:
    """(option, parameter, default, commands) for every setting: the table in ``docs/cli.md``."""
    rows: dict[str, list] = {}
    for cmd, cls in ANALYSES.items():
        for f in fields(cls):
            spec = option_spec(f)
            if spec is None:
                continue
            key = spec.flag
            if key not in rows:
                rows[key] = [f.name, format_default(f.default, spec), []]
            rows[key][2].append(cmd)
    return [(flag, name, default, ", ".join(cmds)) for flag, (name, default, cmds) in rows.items()]


def format_default(value: Any, spec: OptionSpec) -> str:
    """A default as the command line writes it."""
    if value is None:
        return spec.default_help or ""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def glossary_table() -> str:
    """The glossary as the markdown table ``docs/cli.md`` holds (``python -m flatkit.settings`` prints it)."""
    helps = {option_spec(f).flag: option_spec(f).help for cls in ANALYSES.values() for f in fields(cls)
             if option_spec(f) is not None}
    rows = ["| option | parameter | default | commands | meaning |", "| --- | --- | --- | --- | --- |"]
    for flag, param, default, cmds in glossary():
        rows.append(f"| `{flag}` | `{param}` | {default.replace('|', chr(92) + '|')} | {cmds} | "
                    f"{helps[flag].replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    print(glossary_table())
