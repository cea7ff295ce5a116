"""Errors a user can act on. The CLI prints them as one line; tracebacks only with --debug."""

from __future__ import annotations

import os


class RealtalkError(Exception):
    """A failure caused by input, environment or data (exit code 1)."""

    exit_code = 1

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class UsageError(RealtalkError):
    """The command line itself is wrong (exit code 2)."""

    exit_code = 2


class NotImplementedYet(RealtalkError):
    """A subcommand whose implementation has not landed yet."""

    def __init__(self, what: str):
        super().__init__(f"{what} is not implemented yet in this version of realtalk")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a KeyboardInterrupt so every Ctrl-C cleanup (temp files, a last training
    checkpoint) runs for it too."""

    received = False  # typer reports any interrupt as exit code 130; this tells the two apart


def raise_on_sigterm() -> None:
    """Turn SIGTERM into Terminated in this process; child processes that inherit the handler
    terminate as usual (their parent does the cleanup)."""
    import signal

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        Terminated.received = True
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
