"""The file a client takes next, guessed, and how the guesses fared per client: whether to act on
the next.

A page answered to pip makes two guesses of the file pip takes from it (``simple.picks.Picks``):
as for the project's name alone (``newest``), and as for a pin made when the newest release was
the newest uploaded by the latest upload time of the files the client took lately (``dated``: a
lock file's pins are mostly the releases newest on the day it was made). The mirror downloads
the guess of the way whose guesses for that client were right more often lately, while no more
than ``MAX_MISSES`` of that way's last ``OUTCOMES`` were wrong: an unpinned install is guessed
right the newest way, a pinned one mostly the dated way, and one neither guesses costs no more
downloads past a few. A guess is right when the client's next request for a file of the project
(or its metadata) names it; wrong when it names another, or none comes within ``GUESS_FOR``
seconds (pip had what it needed). Guesses are made, and judged, also while none is acted on: a
client whose guesses turn right again gets its downloads back.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime

from nestegg_core.simple.clients import ClientProfile
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.picks import Picks, likely_picks, uploaded_at

__all__ = ["GUESS_FOR", "LARGE", "MAX_MISSES", "OUTCOMES", "WAYS", "Guesses"]

#: seconds a guess waits for its client's request for a file of the project: pip asks within
#: milliseconds of the page (a wheel without metadata) or of its metadata
GUESS_FOR = 5.0
#: the guesses judged per client, and the wrong ones among them past which none is acted on
OUTCOMES = 8
MAX_MISSES = 1
#: clients (User-Agents) remembered, and guesses (and files taken) kept per client
_MAX_CLIENTS = 64
_MAX_OPEN = 128
#: guesses remembered, one per page in memory and client: a page's is made once
_MAX_PICKS = 256
#: the upload times of the files a client took that date its pins (see ``Guesses.horizon``)
_MAX_UPLOADS = 64
#: bytes of a wheel past which a guess is acted on only after its way's last ``OUTCOMES`` guesses were
#: all right: a wrong one costs its size in bandwidth pip's own downloads share, a right one saves a
#: round trip or two (a pinned install's wrong guess of numpy cost 16 MB; a lock file's pins are dated
#: wrong at first, the first files it takes telling only the lower bound of its day)
LARGE = 1024**2
#: the ways a guess is made, in the order a tie between them is settled (``Picks``' fields)
WAYS = tuple(way.name for way in fields(Picks))


@dataclass
class _Client:
    #: whether its last guesses were right, each way
    outcomes: dict[str, deque[bool]] = field(
        default_factory=lambda: {way: deque(maxlen=OUTCOMES) for way in WAYS}
    )
    #: the guesses not judged yet, by project: the file each way guessed, the way acted on
    #: (or that would have been), and when
    open: OrderedDict[str, tuple[dict[str, str], str, float]] = field(default_factory=OrderedDict)
    #: the files the client asked for lately, by project: the file, and when
    taken: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)
    #: when the files it took lately were uploaded, those its pages date
    uploads: deque[datetime] = field(default_factory=lambda: deque(maxlen=_MAX_UPLOADS))


class Guesses:
    """The guesses made for each client and how they fared (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._clients: OrderedDict[str | None, _Client] = OrderedDict()
        self._lock = threading.Lock()
        #: guesses judged right and wrong (for metrics and tests)
        self.right = 0
        self.wrong = 0
        self._picks: OrderedDict[
            tuple[str, ClientProfile], tuple[weakref.ref[ProjectPage], datetime | None, Picks]
        ] = OrderedDict()

    def horizon(self, agent: str | None) -> datetime | None:
        """The latest upload time of the files the client of ``agent`` took lately that their
        pages date: its pins were made then or later (``Picks.dated``); None before any."""
        with self._lock:
            client = self._clients.get(agent)
            return max(client.uploads) if client is not None and client.uploads else None

    def pick(
        self, name: str, profile: ClientProfile, page: ProjectPage, *, uploaded_by: datetime | None = None
    ) -> Picks:
        """The files pip installing for ``profile`` most likely takes from ``page``, the page of
        ``name`` (``likely_picks``), worked out once per page, profile and time."""
        key = (name, profile)
        with self._lock:
            known = self._picks.get(key)
        if known is not None and known[0]() is page and known[1] == uploaded_by:
            return known[2]
        picks = likely_picks(page, profile, uploaded_by=uploaded_by)
        with self._lock:
            self._picks[key] = (weakref.ref(page), uploaded_by, picks)
            self._picks.move_to_end(key)
            while len(self._picks) > _MAX_PICKS:
                self._picks.popitem(last=False)
        return picks

    def guessed(self, agent: str | None, name: str, picks: Picks, *, since: float) -> DistFile | None:
        """Note the guesses that the client of ``agent`` takes one of ``picks`` of ``name`` next,
        made of the page it asked for at ``since`` (this clock's); the one to act on, if any: of
        the way with the fewest wrong guesses lately, if no more than ``MAX_MISSES`` of its last
        guesses were wrong, and the client did not already ask for a file of the project since
        (then the guesses are judged at once); a wheel over ``LARGE`` bytes (or of no size
        known) only if that way's last ``OUTCOMES`` guesses were all right."""
        dists: dict[str, DistFile] = {way: dist for way in WAYS if (dist := getattr(picks, way)) is not None}
        if not dists:
            return None
        files = {way: dist.filename for way, dist in dists.items()}
        with self._lock:
            client = self._client(agent)
            now = self.clock()
            self._expire(client, now)
            way = min(files, key=lambda way: (self._misses(client, way), WAYS.index(way)))
            taken = client.taken.get(name)
            if taken is not None and taken[1] >= since:
                self._judge(client, files, way, taken[0])
                return None
            client.open.pop(name, None)  # a guess of an earlier page of it: this one is newer
            client.open[name] = (files, way, now)
            while len(client.open) > _MAX_OPEN:
                client.open.popitem(last=False)
            acted = dists[way]
            if self._misses(client, way) > MAX_MISSES:
                return None
            if (acted.size is None or acted.size > LARGE) and not self._proven(client, way):
                return None
            return acted

    def taken(self, agent: str | None, name: str, filename: str, dist: DistFile | None = None) -> None:
        """The client of ``agent`` asks for ``filename`` of ``name`` (or for its metadata); ``dist``,
        the page's entry of it, tells when it was uploaded."""
        uploaded = None if dist is None else uploaded_at(dist)
        with self._lock:
            client = self._clients.get(agent)
            if client is None:
                client = self._client(agent)
            now = self.clock()
            self._expire(client, now)
            client.taken.pop(name, None)
            client.taken[name] = (filename, now)
            while len(client.taken) > _MAX_OPEN:
                client.taken.popitem(last=False)
            if uploaded is not None:
                client.uploads.append(uploaded)
            guess = client.open.pop(name, None)
            if guess is not None:
                self._judge(client, guess[0], guess[1], filename)

    def _client(self, agent: str | None) -> _Client:
        client = self._clients.get(agent)
        if client is None:
            client = self._clients[agent] = _Client()
            while len(self._clients) > _MAX_CLIENTS:
                self._clients.popitem(last=False)
        self._clients.move_to_end(agent)
        return client

    @staticmethod
    def _misses(client: _Client, way: str) -> int:
        return sum(not right for right in client.outcomes[way])

    @staticmethod
    def _proven(client: _Client, way: str) -> bool:
        outcomes = client.outcomes[way]
        return len(outcomes) == OUTCOMES and all(outcomes)

    def _expire(self, client: _Client, now: float) -> None:
        """Judge wrong the guesses no request came for within ``GUESS_FOR`` seconds."""
        while client.open:
            name, (files, way, when) = next(iter(client.open.items()))
            if now - when < GUESS_FOR:
                break
            del client.open[name]
            self._judge(client, files, way, None)
        while client.taken and now - next(iter(client.taken.values()))[1] >= GUESS_FOR:
            client.taken.popitem(last=False)

    def _judge(self, client: _Client, files: dict[str, str], acted: str, taken: str | None) -> None:
        """Judge each way's guess of ``files`` by the file the client took (None: none); the
        counts are of the way ``acted`` on."""
        for way, filename in files.items():
            client.outcomes[way].append(filename == taken)
        if files[acted] == taken:
            self.right += 1
        else:
            self.wrong += 1
