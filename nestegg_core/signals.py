"""SIGTERM as Ctrl-C: what a process does when it is told to stop, it does when it is killed.

A server, a CI run or an export stopped with ``kill`` (a service manager, a CI job's time-out)
ends as it does on Ctrl-C: what it started is stopped, what it records is recorded, what it
writes is left whole. Python's default for SIGTERM ends the process where it stands.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["stop_on_signals"]


class stop_on_signals:  # noqa: N801 - used like a function
    """Turn SIGTERM into :class:`KeyboardInterrupt` within the ``with`` block (in the main thread
    only: signals are handled there); the handler before it is put back after."""

    def __enter__(self) -> None:
        self._previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
