"""``flatkit track RUN_DIR... --measures hessian,sharpness,quantize``: measures at every saved checkpoint of
training runs (``flatkit train --keep-checkpoints``), on one bank, against the training step.

Writes ``OUT/<run>/<weights>/step_<N>/<measure>.json`` (each an ordinary result), the index ``OUT/track.json`` and
``OUT/track.png`` / ``track.pdf`` (each scalar against the step, one line per run and weights). A rerun of the
same command resumes: finished points are read back, not recomputed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from flatkit.commands._common import (
    device_option,
    echo_written,
    option_errors,
    option_message,
    out_option,
    overwrite_option,
    settings_options,
)
from flatkit.errors import UsageError
from flatkit.settings import ANALYSES, TRACK_MEASURES, TrackSettings


def _measure_options(f: Any) -> Any:
    """The options of every measure's settings (each name once: a shared one, like --norm, means one thing)."""
    seen = set(TrackSettings.__dataclass_fields__)
    groups = []
    for name in TRACK_MEASURES:
        cls = ANALYSES[name]
        names = [fl.name for fl in dataclasses.fields(cls) if fl.name not in seen]
        seen.update(names)
        groups.append((cls, names))
    for cls, names in reversed(groups):
        f = settings_options(cls, skip=tuple(n for n in cls.__dataclass_fields__ if n not in names))(f)
    return f


def _owners(param: str) -> list[str]:
    return [m for m in TRACK_MEASURES if param in ANALYSES[m].__dataclass_fields__]


def _check_given(ctx: click.Context, measures: tuple[str, ...]) -> None:
    """An option of a measure that --measures does not name is a mistake, not silently ignored."""
    track_fields = set(TrackSettings.__dataclass_fields__)
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or p.name in track_fields:
            continue
        src = ctx.get_parameter_source(p.name)
        if src is None or src.name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        owners = _owners(p.name)
        if owners and not set(owners) & set(measures):
            raise UsageError(f"{p.opts[0]}: an option of {' / '.join(owners)}, which --measures "
                             f"({','.join(measures)}) does not name")


def _settings(params: dict) -> tuple[TrackSettings, dict[str, Any]]:
    """The track's settings and each measure's, from the options; errors name the option."""
    try:
        s = TrackSettings(**{k: params[k] for k in TrackSettings.__dataclass_fields__ if k in params})
        ms = {}
        for name in s.measures:
            cls = ANALYSES[name]
            ms[name] = cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})
    except UsageError as e:
        raise UsageError(option_message(str(e))) from None
    return s, ms


@click.command("track")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1)
@settings_options(TrackSettings)
@_measure_options
@click.option("--labels", metavar="A,B,..", default=None,
              help="Labels of the runs, in order (default: the arm of each run's training configuration: ADM, "
                   "+IP, +SAM, ...).")
@device_option
@out_option
@overwrite_option
@click.option("--no-progress", is_flag=True, help="No progress output.")
def command(**params: Any) -> None:
    """Measure every saved checkpoint (ckpt_<step>.pt and the final ckpt.pt) of the training folders RUN_DIR...
    on one frozen bank with the same seeds, and plot each measure against the training step.

    Each measure takes its own command's options (--top-k, --trace, --kind, --eps, --bits, ...). Writes
    <run>/<weights>/step_<N>/<measure>.json per point, the index track.json and track.png / track.pdf into --out;
    a rerun resumes.
    """
    from flatkit.analyses.track import identity, plan, resolve_measure_settings, track, track_config
    from flatkit.commands._common import claim_out, resolve_device, resolve_out_dir
    from flatkit.plots.track import plot_track

    ctx = click.get_current_context()
    run_dirs = list(params.pop("run_dirs"))
    if not run_dirs:
        raise UsageError("RUN_DIR: at least one training folder (flatkit train --keep-checkpoints) is required")
    s, ms = _settings(params)
    _check_given(ctx, s.measures)
    labels = [x for x in params["labels"].split(",")] if params.get("labels") else None
    dev = resolve_device(params["device"])
    out = resolve_out_dir(params.get("out"), "track")
    points, _ = plan(run_dirs, out, s, labels)
    if s.data is None:
        from flatkit.analyses.track import _recorded_data

        s = dataclasses.replace(s, data=_recorded_data(points[0].ckpt.path))
    with option_errors():
        ms = resolve_measure_settings(s, ms)
    params["out"] = str(out)
    state = claim_out(params, "track", config=track_config(s, ms), identity=identity(points),
                      finished=_complete, one_checkpoint=False)
    if not state.reused:
        click.echo(f"track: {len(points)} point(s) ({len(run_dirs)} run(s) x {len(s.weights)} weights x their "
                   f"checkpoints), measures {', '.join(s.measures)}", err=True)
        res = track(run_dirs, out, measure_settings=ms, labels=labels, device=dev, overwrite=params["overwrite"],
                    progress=not params["no_progress"], echo=lambda line: click.echo(line, err=True), settings=s)
    else:
        from flatkit.analyses.track import TrackResult

        res = TrackResult.load(out)
    echo_written([out / "track.json", *plot_track(res, out / "track")])


def _complete(folder: Path) -> bool:
    """Whether the track in ``folder`` is finished: the index says so and every result it lists is there."""
    from flatkit.analyses.track import TrackResult

    try:
        res = TrackResult.load(folder)
        return bool(res.complete) and all((folder / f).is_file() for p in res.points for f in p["files"].values())
    except UsageError:
        return True  # unreadable: the policy's own checks decide
