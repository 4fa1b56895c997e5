"""Renderings made again in the background, once a cached file has made them stale.

A file that teaches the mirror more than its index said (its PEP 658 metadata, above all) makes
its page's renderings stale. Left alone, the next request for the page makes them again on its
own critical path: the first warm run after a cold one made every page again. A :class:`Refresher`
makes them again soon after the change, for the kinds of rendering this process served for that
page, off any request's path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from packaging.utils import NormalizedName

from nestegg_core.errors import NesteggError

logger = logging.getLogger(__name__)

#: the pages whose served kinds are remembered; past it, those noted longest ago are forgotten
MAX_NAMES = 1024
#: the kinds remembered of one page (each kind of installer makes several: ``compatible_only``);
#: past it, those first noted are forgotten first
MAX_KINDS = 32
#: tries for a page whose change has not settled, before it is left to its next request
TRIES = 3

#: ``render(name, kinds)``: make the renderings of ``kinds`` again; False if it is too early
Render = Callable[[NormalizedName, tuple[Hashable, ...]], bool]


class Refresher:
    """Makes the renderings of changed pages again in a thread of its own, one page at a time.

    ``delay()`` is how long after a change its page is made again (a change must settle before a
    rendering can be saved under it); ``busy()`` how long to wait before any page is made (0 when
    the server is quiet). The thread runs while there is work and ends when there is none;
    :meth:`stop` drops what is pending and waits for the page being made.
    """

    def __init__(
        self, render: Render, *, delay: Callable[[], float], busy: Callable[[], float] = lambda: 0.0
    ) -> None:
        self._render = render
        self._delay = delay
        self._busy = busy
        #: the kinds served of each name, first noted first
        self._kinds: OrderedDict[NormalizedName, tuple[Hashable, ...]] = OrderedDict()
        self._due: dict[NormalizedName, tuple[float, int]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def served(self, name: NormalizedName, kind: Hashable) -> None:
        """Note a kind of rendering served for ``name`` (called for every page answered); past
        ``MAX_NAMES`` names, or ``MAX_KINDS`` kinds of a name, those first noted are forgotten first."""
        kinds = self._kinds.get(name)
        if kinds is not None and kind in kinds:
            return  # the usual case, without the lock
        with self._cond:
            kinds = self._kinds.get(name, ())
            if kind not in kinds:
                self._kinds[name] = (*kinds, kind)[-MAX_KINDS:]
            self._kinds.move_to_end(name)
            while len(self._kinds) > MAX_NAMES:
                self._kinds.popitem(last=False)

    def changed(self, name: NormalizedName) -> None:
        """Make the renderings of ``name`` again once the change settles (if any was served)."""
        with self._cond:
            if self._stopped or name not in self._kinds:
                return
            self._due[name] = (time.monotonic() + self._delay(), 0)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nestegg-refresh", daemon=True)
                self._thread.start()
            self._cond.notify()

    def poke(self) -> None:
        """Look again, now, whether the page due may be made (the server just went quiet)."""
        with self._cond:
            self._cond.notify()

    def pending(self) -> int:
        """How many pages wait to be made again."""
        with self._cond:
            return len(self._due)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def start(self) -> None:
        """Take changes again after :meth:`stop` (the thread starts with the first of them)."""
        with self._cond:
            self._stopped = False

    def stop(self, timeout: float = 5.0) -> None:
        """Drop what is pending and wait (up to ``timeout``) for the page being made."""
        with self._cond:
            self._stopped = True
            self._due.clear()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _next(self) -> tuple[NormalizedName, tuple[Hashable, ...], int] | None:
        """The next page due, waiting for it; None (and the thread ends) when there is none."""
        with self._cond:
            while not self._stopped and self._due:
                name, (when, tries) = min(self._due.items(), key=lambda item: item[1][0])
                wait = max(when - time.monotonic(), self._busy())
                if wait <= 0:
                    del self._due[name]
                    return name, tuple(self._kinds.get(name, ())), tries
                self._cond.wait(wait)
            self._thread = None
            return None

    def _run(self) -> None:
        while (due := self._next()) is not None:
            name, kinds, tries = due
            try:
                done = self._render(name, kinds)
            except NesteggError as exc:  # only a head start: the page's next request makes it
                logger.debug("cannot make the page of %r again: %s", name, exc)
                continue
            except Exception:  # a bug: seen, and the thread lives on
                logger.warning("cannot make the page of %r again", name, exc_info=True)
                continue
            if not done and tries + 1 < TRIES:
                with self._cond:
                    if not self._stopped:
                        self._due.setdefault(name, (time.monotonic() + self._delay(), tries + 1))
