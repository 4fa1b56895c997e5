""" "This thread is about to wait": a hook that code which waits (on the network, on another
thread's download) calls, and that a server's worker threads may listen to.

The index layer declares its waits with :func:`blocking`; what a wait means to the server (another
worker may run meanwhile, see :mod:`nestegg_core.serve.pacing`) is the server's business: its
worker threads :func:`register` a :class:`Waiter`. Outside such a thread a wait declares nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Waiter", "blocking", "register"]

_local = threading.local()


class Waiter(Protocol):
    """Told when the thread it was registered for begins and ends a wait."""

    def block(self) -> None: ...

    def unblock(self) -> None: ...


def register(waiter: Waiter | None) -> None:
    """Make ``waiter`` the one told of this thread's waits (None: nobody)."""
    _local.waiter = waiter


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Mark a wait: while it lasts, this thread's :class:`Waiter` (if any) counts it as waiting.
    Nested, it does nothing."""
    waiter: Waiter | None = getattr(_local, "waiter", None)
    if waiter is None or getattr(_local, "blocked", False):
        yield
        return
    _local.blocked = True
    waiter.block()
    try:
        yield
    finally:
        waiter.unblock()
        _local.blocked = False
