"""The paper in a box: train the tiny preset as plain (ADM), +SAM and +IP, measure every arm, write a report.

``demo(out, budget)`` runs three stages, each resumable:

1. train: ``flatkit train`` on ``builtin:shapes16`` for each arm (EMA and SWA tracked in each run, so three
   trainings give the paper's nine arms: ADM, +EMA, +SWA, +IP, +IP+EMA, +IP+SWA, +SAM, +SAM+EMA, +SAM+SWA);
2. measure: for each arm and weights choice, the flatness (top Hessian eigenvalues and trace, Keskar
   ε-sharpness, a 2-D loss landscape, loss under weight perturbation) and what it buys (prior perturbation,
   exposure bias, 8-bit / 4-bit quantization, and a weight-free sample-quality number from the quantization
   run's full-precision samples), each by the library call a user would make (``flatkit.load``,
   :class:`~flatkit.objective.Objective`, ``flatkit.hessian`` … with a settings object), saved as its result;
3. report: ``report.md`` and ``report.html`` from the result files (:mod:`flatkit.report`).

Work is spread over ``workers`` processes (one torch thread each on a small CPU: on a 2-core machine two
single-thread processes are much faster than one two-thread process). Every step writes its result files; a
rerun skips what is finished (a result is reused only if it was computed from the same checkpoint bytes) and a
killed training resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flatkit.errors import FlatkitError, UsageError

DATA = "builtin:shapes16"

#: the paper's arms: (training run, weights choice) -> row label, in the paper's order
ARMS: list[tuple[str, str, str]] = [
    ("plain", "raw", "ADM"), ("plain", "ema", "+EMA"), ("plain", "swa", "+SWA"),
    ("ip", "raw", "+IP"), ("ip", "ema", "+IP+EMA"), ("ip", "swa", "+IP+SWA"),
    ("sam", "raw", "+SAM"), ("sam", "ema", "+SAM+EMA"), ("sam", "swa", "+SAM+SWA"),
]

#: the fraction of the data every training run holds out (the same items for each run: the held-out loss)
HOLDOUT = 0.05

#: what each training run adds to the plain recipe (SAM's ρ ramps up over 300 steps, the tiny preset's default)
TRAIN_ARGS: dict[str, dict[str, float]] = {"plain": {}, "sam": {"sam_rho": 0.5}, "ip": {"ip_gamma": 0.1}}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Sizes of one demo: ``fast`` fits 10 minutes on a 2-core CPU, ``full`` is closer to converged, ``smoke``
    checks the pipeline in about a minute."""

    steps: int  # training steps per run
    ema: float  # EMA rate (with warm-up)
    n_eval: int  # frozen evaluation bank of the flatness measures
    top_k: int  # Hessian top eigenvalues
    trace_hvps: int  # HVP budget of Hutch++
    points: int  # landscape grid points per axis
    perturb_k: int  # random directions of the loss-under-perturbation curves
    n_samples: int  # samples of the prior / exposure / quantization measures
    sample_steps: int  # T' of those samples (DDIM for prior and quantization, DDPM for exposure)
    repeats: int = 1  # --repeats of the Hessian and the sharpness: their cells are mean ± se (docs/methods.md)
    ascent_steps: int = 10  # Keskar ε-sharpness: gradient-ascent steps per restart
    restarts: int = 3  # ... and its restarts
    perturb_radii: tuple[float, ...] | None = None  # the perturbation radii (None: PerturbSettings' default)
    worst_steps: int = 3  # ascent steps of the worst-case perturbation at each radius
    train_sample_steps: int = 100  # DDPM steps of the 16 samples each training draws at its end

    def train_config(self, arm: str, device: str = "auto") -> Any:
        """The :class:`~flatkit.train.trainer.TrainConfig` of one training run of this budget."""
        from flatkit.train.trainer import TrainConfig

        return TrainConfig(data=DATA, preset="tiny", steps=self.steps, ema=[self.ema], swa_start=self.steps // 3 + 1,
                           save_every=100, log_every=25, sample_count=16, sample_steps=self.train_sample_steps,
                           device=device, holdout=HOLDOUT,
                           **TRAIN_ARGS[arm])


BUDGETS: dict[str, Budget] = {
    # a smoke test of the whole pipeline in under 2 minutes on 2 CPU cores (the test suite's); its numbers mean nothing
    "smoke": Budget(steps=12, ema=0.9, n_eval=8, top_k=1, trace_hvps=4, points=3, perturb_k=2,
                    n_samples=4, sample_steps=4, repeats=2, ascent_steps=3, restarts=1,
                    perturb_radii=(0.0, 0.05, 0.1), worst_steps=1, train_sample_steps=10),
    "fast": Budget(steps=600, ema=0.999, n_eval=32, top_k=2, trace_hvps=24, points=9, perturb_k=4,
                   n_samples=32, sample_steps=20, repeats=3),
    "full": Budget(steps=3000, ema=0.999, n_eval=128, top_k=5, trace_hvps=100, points=21, perturb_k=8,
                   n_samples=256, sample_steps=50, repeats=5),
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One step of the demo run in a worker: a training (``name`` "train", ``config`` a TrainConfig) or an
    analysis ``name`` of ``ckpt`` under ``weights`` with its settings object, saved as ``<out>/<name>.json``."""

    label: str
    name: str
    out: str
    settings: Any = None  # the analysis's settings (flatkit.settings), or the TrainConfig of a training
    ckpt: str | None = None  # the checkpoint whose bytes the result must match to be reused
    weights: str = "raw"
    steps: int = 0  # training tasks: the step count to reach
    resume: bool = False  # training: continue from ckpt.pt; landscape: continue a partial grid
    overwrite: bool = False
    device: str = "auto"


def measure_settings(budget: Budget) -> dict[str, Any]:
    """The demo's measures as settings objects (analysis name -> settings), the same for every arm."""
    from flatkit import settings as S

    b = budget
    bank = dict(data=DATA, n_eval=b.n_eval)
    samp = dict(data=DATA, n=b.n_samples, sampling_steps=b.sample_steps)
    return {
        "hessian": S.HessianSettings(**bank, top_k=b.top_k, tol=1e-2, trace=True, trace_rtol=0.05,
                                     trace_max_hvps=b.trace_hvps, repeats=b.repeats),
        "sharpness": S.SharpnessSettings(**bank, kind="keskar", ascent_steps=b.ascent_steps, restarts=b.restarts,
                                         repeats=b.repeats),
        "landscape": S.LandscapeSettings(**bank, points=b.points),
        "perturb": S.PerturbSettings(**bank, n_directions=b.perturb_k, worst_steps=b.worst_steps,
                                     **({} if b.perturb_radii is None else {"radii": tuple(b.perturb_radii)})),
        "prior": S.PriorSettings(**samp, sampler="ddim", scales=(1.0, 1.2), n_eval=b.n_eval),
        "exposure": S.ExposureSettings(**samp, sampler="ddpm"),
        "quantize": S.QuantizeSettings(**samp, sampler="ddim", bits=(8, 4), n_eval=b.n_eval),
    }


def measure_tasks(budget: Budget, ckpt: str, weights: str, out: str, label: str,
                  device: str = "auto") -> list[Task]:
    """The demo's measures of one arm (the library calls a user would make, one result each)."""
    return [Task(label=label, name=k, out=out, settings=s, ckpt=ckpt, weights=weights, device=device,
                 resume=k == "landscape" and (Path(out) / "landscape.json").is_file())
            for k, s in measure_settings(budget).items()]


# ------------------------------------------------------------------------------------------------ resume
def _json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def result_done(task: Task) -> bool:
    """Whether ``task``'s result exists, is complete and was computed from the current checkpoint bytes."""
    from flatkit.report.collect import load_result
    from flatkit.results import file_sha256

    if not (Path(task.out) / f"{task.name}.json").is_file():
        return False
    try:
        res = load_result(task.out, task.name)
    except FlatkitError:
        return False
    meta = res.meta or {}
    if task.ckpt is not None:
        sha = meta.get("checkpoint_sha256") or next((c.get("checkpoint_sha256") for c in meta.get("checkpoints")
                                                     or [] if isinstance(c, dict)), None)
        if sha is None or sha != file_sha256(task.ckpt):
            return False
    if task.name == "landscape":  # a partial grid marks the points still to compute
        import numpy as np

        return bool(np.asarray(res.done, dtype=bool).all()) if np.size(res.done) else False
    return True


def trained_step(run_dir: Path) -> int:
    """The step of ``run_dir/ckpt.pt`` (0 if there is none), from the append-only metrics / train.json."""
    from flatkit.checkpoint import read_pt

    ck = run_dir / "ckpt.pt"
    if not ck.is_file():
        return 0
    obj = read_pt(ck)
    return int(obj.get("step") or 0)


# ------------------------------------------------------------------------------------------------ workers
def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _device(device: str) -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if device in (None, "auto") else device


def run_task(task: Task) -> Any:
    """Run one task through the Python API: train, or load the checkpoint, measure and save the result."""
    import flatkit
    from flatkit.results import make_meta

    if task.name == "train":
        from flatkit.train.trainer import train

        return train(task.settings, task.out, resume=task.resume, overwrite=task.overwrite, progress=False)
    from flatkit.analyses.robustness import exposure, prior, quantize

    dev = _device(task.device)
    run = flatkit.load(task.ckpt, weights=task.weights, device=dev)
    s = task.settings
    t0 = time.perf_counter()
    labels = [task.label]
    if task.name in ("prior", "exposure", "quantize"):
        fn = {"prior": prior.prior, "exposure": exposure.exposure, "quantize": quantize.quantize}[task.name]
        res = fn(run, labels=labels, settings=s, device=dev)
    else:
        from flatkit.analyses.hessian import hessian
        from flatkit.data.holdout import bank_data

        obj = flatkit.Objective(run, data=bank_data(run, s.data, s.bank), n=s.n_eval, seed=s.seed, loss=s.loss,
                                batch_size=s.batch_size)
        if task.name == "landscape":
            res = flatkit.landscape(obj, labels=labels, settings=s, out=task.out, resume=task.resume)
        else:
            fn = {"hessian": hessian, "sharpness": flatkit.sharpness, "perturb": flatkit.perturb}[task.name]
            res = fn(obj, labels=labels, settings=s)
    own = dict(res.meta or {})
    res.meta = make_meta(config=s, runs=[run], labels=labels, device=dev, wall_time_s=time.perf_counter() - t0)
    res.meta.update(own)
    if task.name not in ("prior", "exposure", "quantize"):  # L(θ) on the held-out items beside L(θ) on the bank
        from flatkit.data.holdout import holdout_meta

        res.meta["holdout"] = holdout_meta([run], s)
    res.save(task.out)
    return res


def _describe(task: Task) -> str:
    if task.name == "train":
        return f"flatkit.train.trainer.train({task.settings!r}, {task.out!r}, resume={task.resume})"
    return f"flatkit {task.name}({task.ckpt!r}, weights={task.weights!r}, settings={task.settings!r})"


def _execute(task: Task) -> tuple[Task, int, str, float]:
    """Run ``task`` in this process, its output appended to ``<out>/log.txt``; (task, exit code, last line, s)."""
    t0 = time.perf_counter()
    Path(task.out).mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            run_task(task)
        except Exception as e:  # noqa: BLE001 - reported as one line by the parent, the log keeps the rest
            import traceback

            traceback.print_exc()
            buf.write(f"flatkit: error: {type(e).__name__}: {e}\n")
            code = e.exit_code if isinstance(e, FlatkitError) else 1
    text = buf.getvalue()
    dt = time.perf_counter() - t0
    with open(Path(task.out) / "log.txt", "a") as f:
        f.write(f"$ {_describe(task)}\n{text}[exit {code}, {dt:.1f} s]\n\n")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return task, code, (lines[-1] if lines else ""), dt


def _pool_map(tasks: list[Task], workers: int, on_done: Callable[[Task, int, str, float], None],
              poll: Callable[[], None] | None = None) -> None:
    """Run ``tasks`` over ``workers`` processes (in this process when 1), calling ``on_done`` as each ends."""
    if not tasks:
        return
    if workers <= 1:
        for t in tasks:
            on_done(*_execute(t))
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked torch with live threads can deadlock; a worker that dies breaks the pool
    # (BrokenProcessPool) instead of hanging it
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        pending = {pool.submit(_execute, t) for t in tasks}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    on_done(*f.result())
                if poll is not None:
                    poll()
        except BrokenProcessPool:
            raise FlatkitError("a worker process died (out of memory?); rerun the same command to resume") from None
        finally:
            for f in pending:
                f.cancel()


# ------------------------------------------------------------------------------------------------ the demo
@dataclasses.dataclass
class DemoResult:
    out: Path
    report_md: Path
    report_html: Path
    rows: list[tuple[str, Path]]
    wall_time_s: float
    report_written: bool = True  # False: the report on disk was up to date and kept


def _demo_config(budget: str) -> dict:
    from flatkit import __version__

    return {"budget": budget, "sizes": dataclasses.asdict(BUDGETS[budget]), "data": DATA,
            "arms": [list(a) for a in ARMS], "train_args": TRAIN_ARGS, "flatkit": __version__}


def _same_sizes(prev: Any, sizes: dict) -> bool:
    """Whether a folder's recorded budget sizes are these: a size the folder's flatkit did not record yet counts
    as its default (that flatkit ran with it), so a demo folder stays resumable across versions."""
    if not isinstance(prev, dict):
        return False
    # as a JSON file holds them (tuples as lists)
    defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(Budget)
                                      if f.default is not dataclasses.MISSING}))
    want = json.loads(json.dumps(sizes))
    return set(prev) <= set(want) and all(prev.get(k, defaults.get(k)) == v for k, v in want.items())


def _check_out(out: Path, cfg: dict) -> None:
    """Refuse a folder that holds something else, or a demo of another configuration."""
    from flatkit.outputs import LOCK_NAME

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    marker = out / "demo.json"
    if marker.is_file():
        prev = _json(marker) or {}
        if prev.get("budget") != cfg["budget"] or not _same_sizes(prev.get("sizes"), cfg["sizes"]):
            raise UsageError(f"--out {out}: holds a demo with --budget {prev.get('budget')} (other sizes); "
                             "use another --out")
    elif out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):  # our own lock is not "other files"
        raise UsageError(f"--out {out}: exists and holds other files (not a flatkit demo); use another --out")


def demo(out: str | os.PathLike = "runs/demo", budget: str = "fast", workers: int | None = None,
         progress: bool = True, device: str = "auto") -> DemoResult:
    """Train plain / +SAM / +IP tiny models, measure every arm, write ``report.md`` and ``report.html``."""
    if budget not in BUDGETS:
        raise UsageError(f"--budget: {budget!r} is not one of {', '.join(BUDGETS)}")
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, 3))
    if workers < 1:
        raise UsageError(f"--workers: must be at least 1, got {workers}")
    b = BUDGETS[budget]
    out = Path(out)
    cfg = _demo_config(budget)
    _check_out(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    from flatkit.results import atomic_write_text

    report_inputs = (_json(out / "demo.json") or {}).get("report_inputs")  # kept until the report is redone
    atomic_write_text(out / "demo.json", json.dumps(
        {**cfg, **({"report_inputs": report_inputs} if report_inputs else {})}, indent=2) + "\n")
    t_start = time.perf_counter()
    say = _Say(progress)

    # 1. train (the longest run first, so two workers finish together)
    train_dir = out / "train"
    order = sorted(TRAIN_ARGS, key=lambda a: a != "sam")
    todo = []
    for arm in order:
        rd = train_dir / arm
        step = trained_step(rd)
        if step >= b.steps:
            continue
        resume = step > 0 or (rd / "ckpt.pt").exists()
        overwrite = not resume and rd.exists() and any(rd.iterdir())  # killed before its first checkpoint
        todo.append(Task(label=arm, name="train", out=str(rd), settings=b.train_config(arm, device), steps=b.steps,
                         resume=resume, overwrite=overwrite))
    if todo:
        say.stage(f"training {len(todo)} model(s) ({', '.join(t.label for t in todo)}; {b.steps} steps each, "
                  f"{workers} worker(s))", total=len(todo) * b.steps, unit="step")

        def poll_train() -> None:
            say.set(sum(_logged_step(Path(t.out)) for t in todo))

        def train_done(task: Task, code: int, last: str, dt: float) -> None:
            if code != 0:
                raise FlatkitError(f"training {task.label} failed: {last} (log: {task.out}/log.txt)")
            poll_train()
            say.note(f"trained {task.label} in {dt:.0f} s")

        _pool_map(todo, min(workers, len(todo)), train_done, poll_train)
        say.close()

    # 2. measure every arm
    rows = []
    tasks = []
    for arm, weights, label in ARMS:
        ck = str(train_dir / arm / "ckpt.pt")
        rdir = out / "results" / f"{arm}-{weights}"
        rows.append((label, rdir))
        tasks += [t for t in measure_tasks(b, ck, weights, str(rdir), label, device) if not result_done(t)]
    if tasks:
        say.stage(f"measuring {len({t.label for t in tasks})} arm(s): {len(tasks)} analyses, "
                  f"{workers} worker(s)", total=len(tasks), unit="analysis")

        def measured(task: Task, code: int, last: str, dt: float) -> None:
            if code != 0:
                raise FlatkitError(f"{task.name} of {task.label} failed: {last} (log: {task.out}/log.txt)")
            say.advance(f"{task.label} {task.name} {dt:.0f} s")

        _pool_map(tasks, workers, measured)
        say.close()

    # 3. report
    from flatkit.report import write_report

    title, intro = f"flatkit demo ({budget} budget)", _report_notes(b)
    inputs = _report_inputs(out, title, intro)
    if report_inputs == inputs and all(
            (out / f).is_file() for f in ("report.md", "report.html", "report.json")):
        say.note("the report is up to date (nothing it reads changed since it was written)")
        md, page, written = out / "report.md", out / "report.html", False
    else:
        say.note("writing the report")
        rep = write_report(rows, out, title=title, intro=intro)
        md, page, written = rep.markdown, rep.html, True
        atomic_write_text(out / "demo.json", json.dumps({**cfg, "report_inputs": inputs}, indent=2) + "\n")
    wall = time.perf_counter() - t_start
    say.note(f"done in {wall:.0f} s")
    return DemoResult(out=out, report_md=md, report_html=page, rows=rows, wall_time_s=wall, report_written=written)


#: the files the report is read from (results, training logs and configurations, checkpoints)
REPORT_INPUT_SUFFIXES = (".json", ".npz", ".jsonl", ".pt")


def _report_inputs(out: Path, title: str, intro: str) -> str:
    """A fingerprint of what the report is made from: flatkit's version, the title and notes, and the name, size
    and modification time of every result and training file. A rerun that recomputed nothing finds the same one
    and keeps the report; any changed, added or removed file (or another flatkit) writes it again."""
    import hashlib

    from flatkit import __version__

    h = hashlib.sha256("\0".join([__version__, title, intro]).encode())
    for sub in ("results", "train"):
        for p in sorted((out / sub).rglob("*")):
            if p.is_file() and p.suffix in REPORT_INPUT_SUFFIXES:
                st = p.stat()
                h.update(f"\0{p.relative_to(out).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


SMOKE_NOTE = ("**Smoke budget: this run only checks that the pipeline works end to end. Its numbers carry no "
              "meaning** (a few training steps, a bank of a few items, a handful of samples); run `--budget fast` "
              "or `--budget full` for numbers worth reading.\n\n")


def _report_notes(b: Budget) -> str:
    smoke = SMOKE_NOTE if b == BUDGETS["smoke"] else ""
    return smoke + (f"Tiny ADM UNet (318,691 parameters) on `{DATA}`, {b.steps} steps each, AdamW lr 1e-3, batch 32; "
            "+SAM: ρ = 0.5 (vanilla SAM, ρ ramped up linearly over the first 300 steps, the tiny preset's "
            f"default); +IP: γ = 0.1; +EMA: rate {b.ema:g} with warm-up; +SWA: uniform average from step "
            f"{b.steps // 3 + 1}; {HOLDOUT:.0%} of the data held out of training (the held-out L(θ)). "
            f"Flatness on a frozen bank of {b.n_eval} (x0, t, ε) of the training items; "
            f"samples: {b.n_samples} per arm, T' = {b.sample_steps}. "
            f"L(θ), λ_max, trace and ε-sharpness are the mean ± one standard error over {b.repeats} repeats "
            "(bank, probes and restarts redrawn with seeds seed + 1000003·r at the same weights: the uncertainty of "
            "the measurement, not of training; docs/methods.md, \"Error bars\").")


def _logged_step(run_dir: Path) -> int:
    """The last step written to ``run_dir/metrics.jsonl`` (cheap progress of a training in another process)."""
    p = run_dir / "metrics.jsonl"
    try:
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return int(json.loads(lines[-1]).get("step", 0)) if lines else 0
    except (OSError, ValueError, IndexError):
        return 0


class _Say:
    """Progress on stderr: a tqdm bar per stage and one-line notes."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def stage(self, text: str, total: int, unit: str) -> None:
        self.note(text)
        if self.enabled:
            from flatkit.progress import bar

            self.bar = bar(total=total, unit=unit, leave=True)  # plain lines when stderr is not a terminal

    def set(self, n: int) -> None:
        if self.bar is not None:
            self.bar.set(min(n, self.bar.total))

    def advance(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        import click

        if self.bar is not None:
            self.bar.write(f"[demo] {text}")
        else:
            click.echo(f"[demo] {text}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
