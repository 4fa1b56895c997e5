"""Work an answer leaves for after it is sent.

A sequential installer (pip) asks for its next file only once it has read an answer. What the
mirror must still do for a page it fetched just now, but that the client does not wait on
(writing its state and its rendering, for the next request and other processes), is done once
the answer is handed to the server, while the installer reads it. The HTTP layer collects that
work for a request (:func:`collecting`) and runs it once the answer is closed (:func:`run`);
outside a request (a background thread, a command) :func:`defer` does it at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar

__all__ = ["MAX_FILES", "Closing", "active", "after", "collecting", "defer", "deferring", "run"]

logger = logging.getLogger(__name__)

#: a page fetched just now with at most this many files (a rendering of about 2 MB for pip) is
#: answered from memory; a larger one from a temporary file it is rendered into as it is made
#: (never whole in memory), kept once its state is written. Either way its state is written once
#: the answer is sent (a larger page made in the background, before it is made). 6,000 (3,000
#: before) took a cold run of 34 mixed projects, 6 of them between the two, from 3.45 to 3.25 s
#: near the upstream; held in memory up to 16,000, a cold run's peak RSS was 67-77 MB against 56-68
MAX_FILES = 6000

Work = list[Callable[[], None]]

_pending: ContextVar[Work | None] = ContextVar("nestegg_later", default=None)


@contextlib.contextmanager
def collecting(active: bool = True) -> Iterator[Work]:
    """Within the block, :func:`defer` collects work in the list given, for :func:`run` (unless
    not ``active``: then it does it at once, and the list stays empty)."""
    work: Work = []
    # not active, it does the work at once within a block that collects too (a thread of the
    # background running in a copy of a request's context)
    token = _pending.set(work if active else None)
    try:
        yield work
    finally:
        _pending.reset(token)


def active() -> bool:
    """Whether work deferred now is left for after an answer (a request collects it)."""
    return _pending.get() is not None


def deferring(files: int) -> bool:
    """Whether a page of ``files`` files fetched just now is answered from memory, its writing
    left for after the answer: a request collects such work, and the page is no larger than
    ``MAX_FILES``."""
    return files <= MAX_FILES and active()


def defer(action: Callable[[], None]) -> None:
    """Do ``action`` once the answer of the request being made is sent (in the order deferred),
    or now outside a request."""
    work = _pending.get()
    if work is None:
        action()
    else:
        work.append(action)


def run(work: Work, pause: Callable[[], None] | None = None) -> None:
    """Do the work collected, in order, calling ``pause`` before each piece (if given); a failure
    is logged, never raised: the answer is out."""
    while work:
        if pause is not None:
            pause()
        action = work.pop(0)
        try:
            action()
        except Exception:
            logger.exception("work left for after an answer failed")


class Closing:
    """An answer's body that calls ``then`` once the server closes it, after closing the body
    itself, and once only: the server closes a body it never read too (a generator's own code
    would not run then)."""

    def __init__(self, body: Iterable[bytes], then: Callable[[], None]) -> None:
        self.body = body
        self._then: Callable[[], None] | None = then

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            then, self._then = self._then, None
            if then is not None:
                then()


def after(body: Iterable[bytes], work: Work) -> Iterable[bytes]:
    """``body``, with ``work`` done once the server closes it (``body`` itself without work)."""
    return Closing(body, functools.partial(run, work)) if work else body
