"""The fence around ``threading._register_atexit``: the one private API of the threading module
nestegg calls (CPython 3.9 and later; tested in tests/test_fences.py).

It registers a function that interpreter exit calls before it joins the threads that are not
daemons, the last registered first. ``concurrent.futures`` registers its own there, which waits
for the pools' threads: a request of gunicorn's gthread workers (a pool thread) that waits on a
source build would hold the exit until the build ended, and :mod:`atexit` functions run only
after that join.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["before_threads_are_joined"]


def before_threads_are_joined(function: Callable[[], None]) -> bool:
    """Have ``function`` called at interpreter exit before the threads are joined; whether it
    will be (not when the interpreter has none of this, or is exiting already)."""
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        return False
    try:
        register(function)
    except RuntimeError:  # "can't register atexit after shutdown"
        return False
    return True
