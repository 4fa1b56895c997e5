"""Pages fetched ahead of an installer's request: those of the projects a wheel requires.

An installer that read a wheel's metadata (pip and uv resolving, before any download), or got a
wheel, asks next for the pages of the projects it requires, one after another, each a round trip
to the upstream through a cold mirror. :class:`PagesAhead` fetches those pages in a thread of its
own as soon as the wheel's requirements are known, while the installer is still busy: its request
then finds the page made, or joins the fetch under way.

Past their TTL, the pages a run asked are asked again, each a round trip to the upstream on the
installer's way. The pages checked together are asked together (the same requirements, a tox
run after another): the first page asked past its TTL has those checked with it last time
(:func:`checked_together`) revalidated the same way (:meth:`PagesAhead.together`).

It is a guess, and bounded: the requirements are read for the installer's environment (its
User-Agent), without extras; at most ``MAX_WAITING`` pages wait, one is made at a time, a page
fresh in the cache is not fetched again, and a request for a page that waits makes it itself.
While a client's request is worked on, the thread gives way to it (``waits.give_way``), unless
that request waits for the page being made.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter

from packaging.utils import NormalizedName

from nestegg_core.errors import NesteggError
from nestegg_core.simple.clients import ClientProfile
from nestegg_core.simple.requires import required_names
from nestegg_core.waits import blocking, give_way

from . import later
from .upstream import in_background

__all__ = [
    "MAX_WAITING",
    "MAX_WHEELS",
    "TOGETHER_GAP",
    "TOGETHER_MIN_TTL",
    "PageRequest",
    "PagesAhead",
    "checked_together",
]

logger = logging.getLogger(__name__)

#: pages waiting to be made ahead; past it, a new one is not taken (the installer is far behind)
MAX_WAITING = 128
#: wheels whose requirements were taken lately, not read again (a warm run asks for each again)
MAX_READ = 1024
#: wheels waiting to be read; past it, the oldest are dropped (the installer has moved on)
MAX_WHEELS = 64
#: seconds a page made ahead waits at most, between two pieces of the upstream's answer, while
#: clients' requests are worked on: its request is sent at once (the round trip is what it saves),
#: its parse waits. Bounded: a server never idle still makes its pages ahead, slowly
PIECE_WAIT = 0.02
#: seconds between two pages' checks that part two runs (a run asks its next page within it)
TOGETHER_GAP = 60.0
#: the least TTL with which pages are revalidated together: a page made ahead must still be fresh
#: when its request comes (with a TTL of 0 every request asks the upstream again, as configured)
TOGETHER_MIN_TTL = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class PageRequest:
    """How a client asks for pages: the rendering a page made ahead of its request is made in."""

    content_type: str
    client: ClientProfile | None = None
    gzip: bool = False
    base: str = ""
    cached_metadata: bool = True


#: reads a wheel's metadata; None when it has none (or it is gone)
Reader = Callable[[], bytes | None]
#: gives the names of the pages to make, in the order they are wanted (read in the thread)
Names = Callable[[], Iterable[NormalizedName]]
#: ``needed(name)``: whether the page of ``name`` is to be fetched (not fresh, not private)
Needed = Callable[[NormalizedName], bool]
#: ``make(name, request)``: fetch the page, and make the rendering ``request`` asks for (if any)
Make = Callable[[NormalizedName, PageRequest | None], None]


def checked_together(
    ordered: Sequence[tuple[NormalizedName, float]],
    checked: float,
    *,
    but: NormalizedName | None = None,
    gap: float = TOGETHER_GAP,
    most: int = MAX_WAITING,
) -> list[NormalizedName]:
    """The names of ``ordered`` (when each page was last checked, the earliest first) checked in
    the same run as a page checked at ``checked`` (``but`` itself left out): the run being the
    checks with less than ``gap`` seconds between one and the next. Those after ``checked``
    first, in the order they were checked (a run asks again in the order it asked), then those
    before it, the latest first; at most ``most``."""
    at = bisect_left(ordered, checked, key=itemgetter(1))
    after: list[NormalizedName] = []
    last = checked
    for index in range(at, len(ordered)):
        name, when = ordered[index]
        if when - last >= gap or len(after) >= most:
            break
        if name != but:
            after.append(name)
        last = when
    before: list[NormalizedName] = []
    last = checked
    for index in range(at - 1, -1, -1):
        name, when = ordered[index]
        if last - when >= gap or len(after) + len(before) >= most:
            break
        if name != but:
            before.append(name)
        last = when
    return after + before


def _requirements(
    read: Reader, environment: Mapping[str, str], of: NormalizedName
) -> Iterable[NormalizedName]:
    metadata = read()
    return () if metadata is None else required_names(metadata, environment, of=of)


@dataclass(frozen=True, slots=True)
class _Source:
    """Where names of pages to make come from: a wheel's requirements, or a run's pages."""

    key: Hashable
    names: Names
    request: PageRequest | None
    context: contextvars.Context


@dataclass(frozen=True, slots=True)
class _Page:
    request: PageRequest | None
    context: contextvars.Context


class PagesAhead:
    """Makes, in a thread of its own, the pages the wheels it is given require (see the module).

    The thread runs while there is work and ends when there is none. :meth:`wait` is what a request
    for a page calls first. A service of the server: :meth:`stop` drops what waits and waits for
    the page being made, :meth:`start` takes wheels again.
    """

    def __init__(self, needed: Needed, make: Make) -> None:
        self._needed = needed
        self._make = make
        self._cond = threading.Condition()
        #: the wheels to read (and runs to look up), the latest last; past ``MAX_WHEELS``, the
        #: oldest are dropped
        self._wheels: deque[_Source] = deque(maxlen=MAX_WHEELS)
        self._pages: OrderedDict[NormalizedName, _Page] = OrderedDict()
        self._read: OrderedDict[Hashable, None] = OrderedDict()
        #: the page being made, the requests waiting for it, and the thread making it
        self._making: NormalizedName | None = None
        self._waiting = 0
        self._thread: threading.Thread | None = None
        self._stopped = False
        #: pages made ahead
        self.made = 0

    def wheel(
        self,
        key: Hashable,
        read: Reader,
        *,
        of: NormalizedName,
        environment: Mapping[str, str],
        request: PageRequest | None,
    ) -> None:
        """Make the pages the wheel ``key`` (of the project ``of``) requires in ``environment``,
        its metadata read by ``read`` in the thread; ``request`` says how they are asked for. A
        wheel given lately is not read again. Never waits."""
        self._add(key, partial(_requirements, read, environment, of), request)

    def together(self, key: Hashable, names: Names, *, request: PageRequest | None) -> None:
        """Make the pages ``names()`` gives, called in the thread (the pages asked with one asked
        past its TTL, :func:`checked_together`); ``request`` says how they are asked for. A
        ``key`` given lately is not taken again. Never waits."""
        self._add(key, names, request)

    def _add(self, key: Hashable, names: Names, request: PageRequest | None) -> None:
        with self._cond:
            if self._stopped or key in self._read:
                return
            self._read[key] = None
            while len(self._read) > MAX_READ:
                self._read.popitem(last=False)
            self._wheels.append(_Source(key, names, request, contextvars.copy_context()))
            self._wake()

    def wait(self, name: NormalizedName, timeout: float) -> None:
        """Called before a request makes the page of ``name``: one waiting to be made ahead is
        left to the request; one being made is waited for, up to ``timeout`` seconds (then the
        request joins it, or finds it made)."""
        with self._cond:
            self._pages.pop(name, None)
            if self._making != name or threading.current_thread() is self._thread:
                return
            self._waiting += 1
            try:
                with blocking():
                    self._cond.wait_for(lambda: self._making != name, timeout)
            finally:
                self._waiting -= 1

    def start(self) -> None:
        """Take wheels again after :meth:`stop`."""
        with self._cond:
            self._stopped = False

    def stop(self, timeout: float = 5.0) -> None:
        """Take no more wheels, drop those and the pages waiting, and wait up to ``timeout`` for
        the page being made."""
        with self._cond:
            if self._stopped:
                return  # stopped before: waited for already
            self._stopped = True
            self._wheels.clear()
            self._pages.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _wake(self) -> None:
        """Under the condition: start the thread unless it runs."""
        if self._thread is not None:
            self._cond.notify_all()
            return
        thread = threading.Thread(target=self._run, name="nestegg-pages-ahead", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread can be started now: nothing is made ahead
            self._wheels.clear()
            self._pages.clear()
            return
        self._thread = thread

    def _run(self) -> None:
        try:
            while self._next():
                pass
        finally:
            with self._cond:
                if self._thread is threading.current_thread():  # ended by an error
                    self._thread = None
                    self._making = None
                    self._cond.notify_all()

    def _next(self) -> bool:
        """Read the next wheel, else make the next page; False when there is nothing to do, the
        thread then let go of under the same lock as :meth:`_wake` looks at it: a wheel added
        once it found nothing starts another (it was added to a thread about to end, and left)."""
        with self._cond:
            if self._stopped or not (self._wheels or self._pages):
                self._thread = None
                self._making = None
                self._cond.notify_all()
                return False
            # a wheel's requirements first: the pages it adds may be the next asked for
            wheel = self._wheels.popleft() if self._wheels else None
            if wheel is None:
                name, page = self._pages.popitem(last=False)
                self._making = name
        if wheel is not None:
            wheel.context.run(self._take, wheel)
            return True
        work: later.Work = []
        try:
            work = page.context.run(self._page, name, page.request)
        finally:
            with self._cond:
                self._making = None
                self._cond.notify_all()
        # what the page leaves for later (its state and rendering written), once its waiters
        # have it: work for nobody now, as its parse was
        later.run(work, pause=partial(give_way, PIECE_WAIT))
        return True

    def _awaited(self) -> bool:
        """Whether a request waits for the page being made (it no longer gives way)."""
        return self._waiting > 0

    def _take(self, wheel: _Source) -> None:
        """Queue the pages ``wheel`` gives (a wheel's requirements, a run's pages) that are to be
        fetched."""
        try:
            names = list(wheel.names())
        except Exception:  # a guess: a wheel unread is no failure
            logger.debug("no pages read of %r", wheel.key, exc_info=True)
            return
        for name in names:
            with self._cond:
                if self._stopped or len(self._pages) >= MAX_WAITING:
                    return
                if name in self._pages or name == self._making:
                    continue
            try:
                needed = self._needed(name)
            except Exception:
                logger.debug("cannot tell whether the page of %r is needed", name, exc_info=True)
                continue
            if needed:
                with self._cond:
                    self._pages[name] = _Page(wheel.request, wheel.context)

    def _page(self, name: NormalizedName, request: PageRequest | None) -> later.Work:
        """Make the page of ``name``; the work it leaves for after its answer."""
        with later.collecting() as work:
            try:
                if not self._needed(name):  # made by a request since it was queued
                    return work
                with in_background(pause=partial(give_way, PIECE_WAIT, self._awaited)):
                    self._make(name, request)
            except NesteggError as exc:  # the request for it will say what is wrong
                logger.debug("page of %r not made ahead: %s", name, exc)
                return work
            except Exception:
                logger.debug("page of %r not made ahead", name, exc_info=True)
                return work
        self.made += 1
        return work
