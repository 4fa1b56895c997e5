"""The file a client takes next, guessed, and how the guesses fared per client: whether to act on
the next.

A page answered to pip makes a guess of the file pip takes from it (``simple.picks``); the mirror
downloads that file ahead of pip's request only while its guesses for that client were right: a
pinned install (its versions not the newest) is guessed wrong from its first pages on, and past
``MAX_MISSES`` wrong guesses costs no more downloads. A guess is right when the client's next
request for a file of the project (or its metadata) names it; wrong when it names another, or none
comes within ``GUESS_FOR`` seconds (pip had what it needed). Guesses are made, and judged, also
while none is acted on: a client whose guesses turn right again gets its downloads back.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nestegg_core.simple.clients import ClientProfile
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.picks import likely_pick

__all__ = ["GUESS_FOR", "MAX_MISSES", "OUTCOMES", "Guesses"]

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


@dataclass
class _Client:
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=OUTCOMES))
    #: the guesses not judged yet, by project: the file, and when
    open: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)
    #: the files the client asked for lately, by project: the file, and when
    taken: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)


class Guesses:
    """The guesses made for each client and how they fared (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._clients: OrderedDict[str | None, _Client] = OrderedDict()
        self._lock = threading.Lock()
        #: guesses judged right and wrong (for metrics and tests)
        self.right = 0
        self.wrong = 0
        self._picks: OrderedDict[tuple[str, ClientProfile], tuple[weakref.ref[ProjectPage], DistFile | None]]
        self._picks = OrderedDict()

    def pick(self, name: str, profile: ClientProfile, page: ProjectPage) -> DistFile | None:
        """The file pip installing for ``profile`` most likely takes from ``page``, the page of
        ``name`` (``likely_pick``), worked out once per page and profile."""
        key = (name, profile)
        with self._lock:
            known = self._picks.get(key)
        if known is not None and known[0]() is page:
            return known[1]
        dist = likely_pick(page, profile)
        with self._lock:
            self._picks[key] = (weakref.ref(page), dist)
            self._picks.move_to_end(key)
            while len(self._picks) > _MAX_PICKS:
                self._picks.popitem(last=False)
        return dist

    def guessed(self, agent: str | None, name: str, filename: str, *, since: float) -> bool:
        """Note the guess that the client of ``agent`` takes ``filename`` of ``name`` next, made of
        the page it asked for at ``since`` (this clock's); whether to act on it: no more than
        ``MAX_MISSES`` of its last guesses were wrong, and it did not already ask for a file of
        the project since (then the guess is judged at once)."""
        with self._lock:
            client = self._client(agent)
            now = self.clock()
            self._expire(client, now)
            taken = client.taken.get(name)
            if taken is not None and taken[1] >= since:
                self._judge(client, taken[0] == filename)
                return False
            client.open.pop(name, None)  # a guess of an earlier page of it: this one is newer
            client.open[name] = (filename, now)
            while len(client.open) > _MAX_OPEN:
                client.open.popitem(last=False)
            return self._trusted(client)

    def taken(self, agent: str | None, name: str, filename: str) -> None:
        """The client of ``agent`` asks for ``filename`` of ``name`` (or for its metadata)."""
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
            guess = client.open.pop(name, None)
            if guess is not None:
                self._judge(client, guess[0] == filename)

    def _client(self, agent: str | None) -> _Client:
        client = self._clients.get(agent)
        if client is None:
            client = self._clients[agent] = _Client()
            while len(self._clients) > _MAX_CLIENTS:
                self._clients.popitem(last=False)
        self._clients.move_to_end(agent)
        return client

    @staticmethod
    def _trusted(client: _Client) -> bool:
        return sum(not right for right in client.outcomes) <= MAX_MISSES

    def _expire(self, client: _Client, now: float) -> None:
        """Judge wrong the guesses no request came for within ``GUESS_FOR`` seconds."""
        while client.open:
            name, (_, when) = next(iter(client.open.items()))
            if now - when < GUESS_FOR:
                break
            del client.open[name]
            self._judge(client, False)
        while client.taken and now - next(iter(client.taken.values()))[1] >= GUESS_FOR:
            client.taken.popitem(last=False)

    def _judge(self, client: _Client, right: bool) -> None:
        client.outcomes.append(right)
        if right:
            self.right += 1
        else:
            self.wrong += 1
