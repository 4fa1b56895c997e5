""" "This thread is about to wait": a hook that code which waits (on the network, on another
thread's download) calls, and that a server's worker threads may listen to.

The index layer declares its waits with :func:`blocking`; what a wait means to the server (another
worker may run meanwhile, see :mod:`nestegg_core.serve.pacing`) is the server's business: its
worker threads :func:`register` a :class:`Waiter`. Outside such a thread a wait declares nothing.

The same declarations tell work done for nobody yet (a page made ahead of its request) when to
:func:`give_way`: while a thread works for a client (:func:`serving`, and not waiting on another
thread). Python runs one thread at a time: a page parsed ahead beside a client's own page took
that page twice as long, with nothing gained for the page made ahead.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

__all__ = ["Waiter", "blocking", "busy", "give_way", "register", "serving"]

_local = threading.local()
#: how long :func:`give_way` sleeps before it looks again
_PAUSE = 0.001


class Waiter(Protocol):
    """Told when the thread it was registered for begins and ends a wait."""

    def block(self) -> None: ...

    def unblock(self) -> None: ...


class _Working:
    """The threads that work for a client now."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, step: int) -> None:
        with self._lock:
            self.count += step


_working = _Working()


def register(waiter: Waiter | None) -> None:
    """Make ``waiter`` the one told of this thread's waits (None: nobody)."""
    _local.waiter = waiter


@contextlib.contextmanager
def serving() -> Iterator[None]:
    """While it lasts, this thread works for a client (a server's worker answering a request, a
    download a client reads as it comes), except while it waits in :func:`blocking`. Nested, it
    does nothing."""
    if getattr(_local, "serving", False):
        yield
        return
    _local.serving = True
    _working.add(1)
    try:
        yield
    finally:
        _working.add(-1)
        _local.serving = False


def busy() -> bool:
    """Whether a thread works for a client now (see :func:`serving`)."""
    return _working.count > 0


def give_way(limit: float, unless: Callable[[], bool] | None = None) -> None:
    """Wait while a thread works for a client, at most ``limit`` seconds, and not once ``unless()``
    is true (a client waits for this very work). Work in the background calls it between steps."""
    if not busy():
        return
    deadline = time.monotonic() + limit
    while busy() and not (unless is not None and unless()) and time.monotonic() < deadline:
        time.sleep(_PAUSE)


@contextlib.contextmanager
def blocking(*, working: bool = False) -> Iterator[None]:
    """Mark a wait: while it lasts, this thread's :class:`Waiter` (if any) counts it as waiting,
    and a thread :func:`serving` a client does not count as working for it, unless ``working``:
    the wait is for an upstream's answer that it reads and parses as it comes. Nested, it does
    nothing."""
    if getattr(_local, "blocked", False):
        yield
        return
    waiter: Waiter | None = getattr(_local, "waiter", None)
    idle = not working and getattr(_local, "serving", False)
    _local.blocked = True
    if idle:
        _working.add(-1)
    if waiter is not None:
        waiter.block()
    try:
        yield
    finally:
        if waiter is not None:
            waiter.unblock()
        if idle:
            _working.add(1)
        _local.blocked = False
