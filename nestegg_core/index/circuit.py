"""Circuits: an upstream that could not be reached is not waited for again at once.

After a failure to reach an upstream (a time-out, a refused connection, a name that does not
resolve), its circuit opens: every request to it fails at once with :class:`UpstreamDown` (the
mirror serves its stale pages and answers what it never cached with one line), for ``window``
seconds. Then one probe in a thread of its own asks the upstream again: an answer of any kind
closes the circuit, another failure keeps it open twice as long (up to ``MAX_WINDOW``). So a
request never waits for an upstream that is down, and a dead network costs one wait per upstream
and run, not one per page. One line is logged when a circuit opens and one when it closes.
Until an upstream has answered once, one page request asks it and the others wait for that one
(:meth:`Circuit.first`): a burst of requests (uv asks for pages in parallel) meets a hanging
network once, not once per request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from nestegg_core.errors import NotFound, UpstreamDown, UpstreamError
from nestegg_core.urls import mask_url

from .upstream import REVALIDATE_TIMEOUT, Fetched, Fetcher, FileStream, Prober, RangeFetcher

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: seconds an upstream that could not be reached is not asked again, after its first failure
WINDOW = 30.0
#: the longest window, after failed probes have doubled it
MAX_WINDOW = 300.0
#: names kept of each kind in an outage's summary
_MAX_NAMES = 1000
#: seconds a request waits for the first request to an upstream not yet heard from: past the held
#: page's deadline of that first one, so that its failure (the circuit open) is seen
FIRST_WAIT = REVALIDATE_TIMEOUT + 1.0


@dataclass(frozen=True, kw_only=True)
class Outage:
    """What a run saw of an upstream that could not be reached (or cannot be now)."""

    upstream: str
    reason: str
    #: whether it is still down
    down: bool
    #: times a stale page was served in its place, and the names it was asked for and never cached
    stale: int
    missing: tuple[str, ...]

    def describe(self) -> str:
        """One line for the user: the upstream, why, and how the run went on without it."""
        state = "unreachable" if self.down else "was unreachable"
        missing = f"{len(self.missing)} names missing ({', '.join(self.missing[:5])}" + (
            ", ...)" if len(self.missing) > 5 else ")"
        )
        return (
            f"upstream {self.upstream} {state} ({self.reason}): {self.stale} cached pages served stale, "
            + (missing if self.missing else "no names missing")
        )


class Heard:
    """When a host last answered anything (``clock``): shared by the circuits of one host, its
    pages' and its files', so that a page answered tells a file's circuit the host is up."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = -math.inf


class Circuit:
    """The circuit of one upstream (an index, or a host its files are on)."""

    def __init__(
        self,
        upstream: str,
        *,
        window: float = WINDOW,
        max_window: float = MAX_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        heard: Heard | None = None,
    ) -> None:
        #: the upstream as messages name it (credentials masked)
        self.upstream = mask_url(upstream)
        self.window = window
        self.max_window = max_window
        self.clock = clock
        self._lock = threading.Lock()
        self._reason: str | None = None  # None: closed
        self._retry_at = 0.0
        self._wait = window
        self._probe: Callable[[], None] | None = None
        self._probing = False
        #: whether the upstream answered once (so requests to it need not wait for a first one)
        self._answered = False
        #: when its host last answered (``clock``), this circuit's requests or another's of it
        self._heard = Heard() if heard is None else heard
        self._first: threading.Event | None = None
        #: what the last outage saw (kept after it ends, for the run's summary)
        self._last_reason: str | None = None
        self._stale = 0
        self._missing: dict[str, None] = {}

    @property
    def reason(self) -> str | None:
        """Why the upstream cannot be reached, while its circuit is open; else None."""
        return self._reason

    def check(self) -> None:
        """:class:`UpstreamDown` at once while the circuit is open; starts the probe when it is due."""
        with self._lock:
            reason = self._reason
            if reason is None:
                return
            start = not self._probing and self._probe is not None and self.clock() >= self._retry_at
            if start:
                self._probing = True
            left = max(self._retry_at - self.clock(), 0.0)
        if start:
            threading.Thread(target=self._run_probe, name="nestegg-probe", daemon=True).start()
        ask = "asked again in the background" if start or left == 0 else f"asked again in {left:.0f}s"
        raise UpstreamDown(f"upstream {self.upstream} is unreachable ({reason}); {ask}", reason=reason)

    @contextlib.contextmanager
    def first(self, wait: float = FIRST_WAIT) -> Iterator[None]:
        """Around a request: until the upstream has answered once, only one request at a time asks
        it; the others wait for its outcome (up to ``wait`` seconds), then :meth:`check` again."""
        with self._lock:
            ahead = None if self._answered else self._first
            mine = threading.Event() if not self._answered and ahead is None else None
            if mine is not None:
                self._first = mine
        if ahead is not None:
            ahead.wait(wait)
            self.check()  # the first one failed to reach it: not asked again
        try:
            yield
        finally:
            if mine is not None:
                with self._lock:
                    self._first = None
                mine.set()

    def failed(self, error: UpstreamError, probe: Callable[[], None], *, since: float | None = None) -> None:
        """Note ``error``; if it is a failure to reach the upstream, open the circuit, and keep
        ``probe`` (a call that fails as the failed one did, or returns) to find it back with.
        With ``since`` (the ``clock`` when the failed request started), not if the upstream
        answered another request meanwhile: that request failed, not the upstream."""
        reason = error.unreachable
        if reason is None:
            self._answered = True  # badly (a 5xx), but it answered
            self._heard.at = self.clock()
        if reason is None or isinstance(error, UpstreamDown):
            return
        if since is not None and self._heard.at >= since:
            logger.debug("%s; upstream %s answered meanwhile: not taken for down", error, self.upstream)
            return
        with self._lock:
            opening = self._reason is None
            self._reason = self._last_reason = reason
            self._probe = probe
            if opening:
                self._wait = self.window
                self._stale = 0
                self._missing.clear()
            self._retry_at = self.clock() + self._wait
        if opening:
            logger.warning(
                "upstream %s is unreachable (%s): serving cached pages, not asking it again for %gs",
                self.upstream,
                reason,
                self._wait,
            )

    def reached(self) -> None:
        """The upstream answered: close the circuit."""
        self._answered = True
        self._heard.at = self.clock()
        if self._reason is None:
            return
        with self._lock:
            if self._reason is None:
                return
            self._reason = None
            self._probe = None
            stale, missing = self._stale, len(self._missing)
        logger.warning(
            "upstream %s is reachable again (%d cached pages served stale, %d names missing meanwhile)",
            self.upstream,
            stale,
            missing,
        )

    def served_stale(self) -> None:
        """A cached page was served because the upstream could not be reached."""
        with self._lock:
            self._stale += 1

    def missed(self, name: str) -> None:
        """``name`` was asked for, never cached, while the upstream could not be reached."""
        with self._lock:
            if len(self._missing) < _MAX_NAMES:
                self._missing[name] = None

    def outage(self) -> Outage | None:
        """What this run saw of the upstream's last outage; None if it never had one."""
        with self._lock:
            if self._last_reason is None:
                return None
            return Outage(
                upstream=self.upstream,
                reason=self._last_reason,
                down=self._reason is not None,
                stale=self._stale,
                missing=tuple(self._missing),
            )

    def _run_probe(self) -> None:
        with self._lock:
            probe = self._probe
        try:
            if probe is not None:
                probe()
        except NotFound:
            self.reached()
        except UpstreamError as exc:
            if exc.unreachable is None:
                self.reached()  # it answered, if badly: not down
            else:
                with self._lock:
                    self._wait = min(self._wait * 2, self.max_window)
                    self._retry_at = self.clock() + self._wait
                logger.debug("upstream %s still unreachable: %s", self.upstream, exc)
        except Exception:  # a bug: seen, and the next request after the window probes again
            logger.warning("probing upstream %s failed", self.upstream, exc_info=True)
        else:
            self.reached()
        finally:
            with self._lock:
                self._probing = False


def origin(url: str) -> str:
    """The scheme, host and port of ``url``: what one circuit stands for."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class Circuits:
    """The circuits of one index: its pages', its files', and one per other host its files are on.

    A file of the index's own host that cannot be had (one that never answers, one redirected to
    a host that is down) opens the circuit of its files, not of its pages: one bad file made every
    page not cached a 410 for 30 s. A file of that host is not asked for while its pages' circuit
    is open (the host is down: no second wait)."""

    def __init__(self, index_url: str, *, window: float = WINDOW, max_window: float = MAX_WINDOW) -> None:
        #: the index's URL: what finds it back once its circuit opened (not a page that failed)
        self.index_url = index_url
        self._origin = origin(index_url)
        self._window = window
        self._max_window = max_window
        heard = Heard()  # a page answered tells that the host of the index's own files is up, and back
        self.index = Circuit(index_url, window=window, max_window=max_window, heard=heard)
        self.index_files = Circuit(self._origin, window=window, max_window=max_window, heard=heard)
        self._others: dict[str, Circuit] = {}
        self._lock = threading.Lock()

    def for_file(self, url: str) -> Circuit:
        """The circuit of the file at ``url``, checked (:meth:`Circuit.check`); the index's pages'
        too when the file is on its host."""
        if origin(url) == self._origin:
            self.index.check()
        circuit = self.for_url(url)
        circuit.check()
        return circuit

    def for_url(self, url: str) -> Circuit:
        key = origin(url)
        if key == self._origin:
            return self.index_files
        with self._lock:
            circuit = self._others.get(key)
            if circuit is None:
                circuit = self._others[key] = Circuit(key, window=self._window, max_window=self._max_window)
            return circuit

    def reset(self) -> None:
        """Close every circuit: ask each upstream again with the next request (an operator who
        knows the network is back; tests)."""
        with self._lock:
            circuits = [self.index, self.index_files, *self._others.values()]
        for circuit in circuits:
            circuit.reached()

    def outages(self) -> list[Outage]:
        """What this run saw of each upstream that could not be reached."""
        with self._lock:
            circuits = [self.index, self.index_files, *self._others.values()]
        return [outage for circuit in circuits if (outage := circuit.outage()) is not None]


class CircuitFetcher:
    """A :class:`Fetcher` that does not wait for an upstream its circuit says is down."""

    def __init__(self, fetcher: Fetcher, circuits: Circuits) -> None:
        self.fetcher = fetcher
        self.circuits = circuits
        #: what asks a host whether it answers (a fetcher without it: a GET of that URL)
        self._answers = fetcher.answers if isinstance(fetcher, Prober) else self._opens
        # the page of a name no project can have: a quick 404 where the index's root page may
        # be a listing some servers take longer to start than the timeout
        nobody = circuits.index_url.rstrip("/") + "/-/"
        self._index_probe = lambda: self._answers(nobody)

    def project(
        self, name: str, *, etag: str | None, last_modified: str | None, digest: str | None = None
    ) -> Fetched:
        circuit = self.circuits.index
        circuit.check()
        with circuit.first():
            # a page that fails while its host answers another request fails alone (a page slow
            # to come); the index is probed at a page nobody has: the page that failed may never answer
            return _through(
                circuit,
                lambda: self.fetcher.project(name, etag=etag, last_modified=last_modified, digest=digest),
                self._index_probe,
                since=circuit.clock(),
            )

    def open(self, url: str) -> FileStream:
        return _file_through(self.circuits, url, lambda: self.fetcher.open(url), self._probe)

    def read_range(self, url: str, start: int, end: int, total: int) -> bytes | None:
        """See :class:`RangeFetcher`; None also when the fetcher it wraps asks for no ranges."""
        fetcher = self.fetcher
        if not isinstance(fetcher, RangeFetcher):
            return None
        return _file_through(
            self.circuits, url, lambda: fetcher.read_range(url, start, end, total), self._probe
        )

    def _probe(self, url: str) -> Callable[[], None]:
        """What finds the host of the file at ``url`` back: its root asked, any answer will do (a
        redirect not followed: a CDN's root may send to a website nestegg cannot reach). Not the
        file: one that never answers kept the circuit of a host that serves every other file
        open, twice as long after each probe."""
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}/"
        return lambda: self._answers(root)

    def _opens(self, url: str) -> None:
        self.fetcher.open(url).close()


def _through(
    circuit: Circuit,
    call: Callable[[], _T],
    probe: Callable[[], None],
    blamed: Callable[[UpstreamError], tuple[Circuit, Callable[[], None]]] | None = None,
    *,
    since: float | None = None,
) -> _T:
    """What ``call()`` gives, its outcome told to ``circuit``: a failure to reach the upstream
    opens it (or the circuit ``blamed`` names for the failure, with its probe; ``probe`` then
    finds the upstream back), any answer closes it. ``since``: see :meth:`Circuit.failed`."""
    try:
        result = call()
    except NotFound:
        circuit.reached()
        raise
    except UpstreamError as exc:
        failed, again = (circuit, probe) if blamed is None else blamed(exc)
        failed.failed(exc, again, since=since)
        raise
    circuit.reached()
    return result


def _file_through(
    circuits: Circuits, url: str, call: Callable[[], _T], probe: Callable[[str], Callable[[], None]]
) -> _T:
    """:func:`_through` for a file (its circuit: :meth:`Circuits.for_file`); a redirect's target
    that cannot be reached opens that host's circuit, not the one of the host asked. A file of a
    host that answered another request meanwhile (a file slow to answer, a host that is up) opens
    none: one that never answered made every file of its host a 504 for 30 s and more. ``probe``
    gives what finds the host of a URL back."""
    circuit = circuits.for_file(url)

    def blamed(exc: UpstreamError) -> tuple[Circuit, Callable[[], None]]:
        failed = url if exc.failed_url is None else exc.failed_url
        return circuits.for_url(failed), probe(failed)

    return _through(circuit, call, probe(url), blamed, since=circuit.clock())
