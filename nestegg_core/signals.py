"""SIGTERM as Ctrl-C: what a process does when it is told to stop, it does when it is killed.

A server, a CI run or an export stopped with ``kill`` (a service manager, a CI job's time-out)
ends as it does on Ctrl-C: what it started is stopped, what it records is recorded, what it
writes is left whole. Python's default for SIGTERM ends the process where it stands. The
exception raised is :class:`Terminated`, a :class:`KeyboardInterrupt` that says which signal it
was: ``main()`` returns 143 (128 + SIGTERM) for it rather than Ctrl-C's 130, and the process
(:func:`end_process`) then ends killed by SIGTERM, which service managers count a clean stop
(systemd counts an exit status of 130 or 143 a failure).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

__all__ = ["Terminated", "end_process", "exit_code", "stop_on_signals"]


class Terminated(KeyboardInterrupt):
    """The process was told to stop by ``signum`` (SIGTERM): handled as Ctrl-C, told apart."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_code(interrupted: KeyboardInterrupt) -> int:
    """The exit code of a command stopped by ``interrupted``: 128 + its signal, as a shell says it
    (130 for Ctrl-C, 143 for SIGTERM)."""
    signum = interrupted.signum if isinstance(interrupted, Terminated) else signal.SIGINT
    return 128 + int(signum)


def end_process(code: int) -> NoReturn:
    """Exit with ``code``; with SIGTERM's (143), the interpreter's exit is ended by SIGTERM itself,
    its default action restored, once the threads are joined."""
    if code == 128 + signal.SIGTERM:
        atexit.register(_die_of, signal.SIGTERM)  # the last registered runs first
    sys.exit(code)


def _die_of(signum: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


class stop_on_signals:  # noqa: N801 - used like a function
    """Turn SIGTERM into :class:`Terminated`, a :class:`KeyboardInterrupt`, within the ``with``
    block (in the main thread only: signals are handled there); the handler before it is put back
    after."""

    def __enter__(self) -> None:
        self._previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
