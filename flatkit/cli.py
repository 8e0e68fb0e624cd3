"""The ``flatkit`` command line: a thin click layer over the Python API.

Each subcommand lives in ``flatkit/commands/<name>.py`` and exposes a click command named ``command``; this module
only lists them (one explicit registry) and turns flatkit's exceptions into one line and an exit code:
0 success, 1 failure while running, 2 bad usage or bad input. A message from the library that starts with a
settings parameter (``n_eval 0: ...``) is shown with the option's name (``--n-eval 0: ...``).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from flatkit import __version__
from flatkit.errors import FlatkitError

# name -> one-line help (the registry of subcommands, in the order --help lists them)
COMMANDS: dict[str, str] = {
    "train": "Train a DDPM (plain, SAM/ASAM, EMA, SWA, input perturbation).",
    "info": "Describe a checkpoint: architecture, parameters, weights, diffusion, data, step.",
    "sample": "Draw samples (DDPM / DDIM, respaced steps) from a checkpoint.",
    "hessian": "Hessian top eigenvalues, trace and spectral density of the diffusion loss.",
    "sharpness": "Keskar / L2 / average / adaptive sharpness.",
    "perturb": "Loss under random and worst-case weight perturbation.",
    "landscape": "1-D / 2-D loss-landscape slices with figures.",
    "prior": "Robustness to a perturbed noise prior.",
    "exposure": "Exposure bias: the norm of predicted noise along the sampling chain.",
    "quantize": "Weight quantization: loss change, sample drift, distribution distance.",
    "fid": "FID / KID of samples against a reference, with a user-supplied detector.",
    "track": "Measures at every saved checkpoint of training runs, against the training step.",
    "figures": "Rebuild the paper's figures and tables from result files.",
    "report": "Write report.md / report.html / summary.csv / summary.tex from result folders.",
    "demo": "Train small models and write a flatness report (the paper in a box).",
}


class FlatkitGroup(click.Group):
    """Lazy subcommands, and one clear line instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        cmd = importlib.import_module(f"flatkit.commands.{name}").command
        if cmd.help is None:
            cmd.help = COMMANDS[name]
        if cmd.callback is not None and not getattr(cmd.callback, "_sets_threads", False):
            cmd.callback = _with_cpu_threads(cmd.callback)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = list(COMMANDS.items())
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args=None, *a, **kw):  # type: ignore[override]
        """Record the command line (for every result's meta) before running."""
        from flatkit import context

        context.COMMAND_LINE = ["flatkit", *(sys.argv[1:] if args is None else [str(x) for x in args])]
        return super().main(args, *a, **kw)

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        """The group's own options (``--threads x``) fail in one line too."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            import os

            param = getattr(e, "param", None)
            env = os.environ.get("FLATKIT_THREADS")
            if param is not None and param.name == "threads" and env is not None and "--threads" not in args:
                e = click.UsageError(f"FLATKIT_THREADS={env!r}: expected a whole number of threads >= 1")
            usage_error_exit(e, None)

    def invoke(self, ctx: click.Context):
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except FlatkitError as e:
            if debug:
                raise
            from flatkit.commands._common import option_message

            name = ctx.invoked_subcommand or "flatkit"
            cmd = self.get_command(ctx, name) if ctx.invoked_subcommand else None
            click.echo(f"flatkit {name}: error: {option_message(str(e), cmd)}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("flatkit: interrupted (progress so far is saved where the command supports resuming)",
                       err=True)
            ctx.exit(130)
        except click.UsageError as e:  # a bad choice, int, option or command: one line, exit 2
            usage_error_exit(e, ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - an unexpected failure still gets one line
            if debug:
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"flatkit: error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


def usage_error_exit(e: click.UsageError, ctx: click.Context | None) -> None:
    """click's usage error (bad choice, bad int, unknown option) as one line ``flatkit CMD: error: ...``, exit 2
    (click's own form is three or four lines: Usage, Try, Error)."""
    where = e.ctx if e.ctx is not None else ctx
    name = where.info_name if where is not None and where.parent is not None else None
    if name is None and ctx is not None and ctx.invoked_subcommand:
        name = ctx.invoked_subcommand
    msg = " ".join(e.format_message().split())
    click.echo(f"flatkit{' ' + name if name else ''}: error: {msg}", err=True)
    raise click.exceptions.Exit(2)


@click.group(cls=FlatkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="flatkit")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.option("--threads", metavar="N", type=click.IntRange(min=1), default=None, envvar="FLATKIT_THREADS",
              help="CPU threads for torch (env FLATKIT_THREADS).  [default: 1 on machines with <= 2 cores, "
                   "else torch's]")
def main(debug: bool, threads: int | None) -> None:
    """flatkit: measure how flat a diffusion model's loss surface is, and what that flatness buys."""
    # --threads is applied when a subcommand runs (_with_cpu_threads), not here: click calls this before it
    # parses the subcommand's --help, and setting threads imports torch.


def _with_cpu_threads(callback: Callable) -> Callable:
    """``callback`` that first sets torch's CPU threads from the group's ``--threads`` (so torch is imported only
    when a command runs: ``flatkit CMD --help`` and shell completion stay light)."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        set_cpu_threads(ctx.find_root().params.get("threads") if ctx is not None else None)
        return callback(*args, **kwargs)

    run._sets_threads = True  # type: ignore[attr-defined]
    return run


def set_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: ``threads``, else 1 on machines with at most 2 cores.

    Measured on a 2-core machine: two intra-op threads made a conv 7x and a GroupNorm 27x slower than one, and
    an HVP of the tiny UNet 26x slower; small machines get one thread unless told otherwise.
    """
    import os

    import torch

    if threads is None and "OMP_NUM_THREADS" not in os.environ and (os.cpu_count() or 1) <= 2:
        threads = 1
    if threads is not None:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


if __name__ == "__main__":  # pragma: no cover
    main()
