"""Exceptions that the CLI turns into one clear line and an exit code: 1 for a failure while running
(:class:`FlatkitError`), 2 for bad usage or input (:class:`UsageError`); see docs/cli.md, "Exit codes"."""


class FlatkitError(Exception):
    """A failure while running (exit code 1)."""

    exit_code = 1


class UsageError(FlatkitError):
    """Bad usage or bad input: a wrong option, a missing or foreign file (exit code 2).

    The message must name the option or the file.
    """

    exit_code = 2
