"""The fence around ``threading._register_atexit``: the one private API of the threading module
nestegg calls (CPython added it in 3.9). Tested on CPython 3.11 (:data:`TESTED_UP_TO`); on any
other, tests/test_fences.py checks what nestegg relies on (called before the threads are joined,
and before ``concurrent.futures``' exit function) and fails naming the change, where a bound on the
interpreter's version would fail an install that works.

It registers a function that interpreter exit calls before it joins the threads that are not
daemons, the last registered first: before ``concurrent.futures``' own, registered when that is
imported, which waits for the pools' threads. A request of gunicorn's gthread workers (a pool
thread) that waits on a source build would otherwise hold the exit until the build ended, and
:mod:`atexit` functions run only after that join.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

__all__ = ["TESTED_UP_TO", "before_threads_are_joined"]

logger = logging.getLogger(__name__)

#: the newest CPython (major, minor) this fence was tested on
TESTED_UP_TO = (3, 11)

#: why it could not be done, each said once in a process
_said: set[str] = set()


def before_threads_are_joined(function: Callable[[], None]) -> bool:
    """Have ``function`` called at interpreter exit before the threads are joined; whether it
    will be (not when the interpreter has none of this, or is exiting already: a warning says so,
    once a process)."""
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        python = sys.version.split()[0]
        return _cannot(f"Python {python} has no threading._register_atexit")
    try:
        register(function)
    except RuntimeError:  # "can't register atexit after shutdown"
        return _cannot("the interpreter is exiting already")
    return True


def _cannot(why: str) -> bool:
    if why not in _said:
        _said.add(why)
        logger.warning(
            "%s: what nestegg runs is stopped at exit only after the threads are joined (a request"
            " that waits on a source build holds the exit until the build ends)",
            why,
        )
    return False
