"""The types of the WSGI layer, defined once: PEP 3333's callables, and what the app is made of."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from nestegg_core.errors import NesteggError

__all__ = ["Admission", "BodyGate", "Environ", "Headers", "ReadGuard", "Service", "StartResponse", "WSGIApp"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]
#: a WSGI application (PEP 3333), and every handler the app routes to
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Admission:
    """What a server that asks before it reads a request's body (``nestegg serve``'s) does with it."""

    #: the most bytes of body it may read
    limit: int
    #: the answer to give at once, without reading the body (the connection is closed after it)
    refusal: NesteggError | None = None
    #: a check too slow for the server's event loop (a password's): run on a worker first; it
    #: returns the refusal, or None to read the body
    check: Callable[[], NesteggError | None] | None = None


#: asked once a request's headers are in, before a byte of its body is read (``environ`` has no
#: ``wsgi.input`` yet)
BodyGate = Callable[[Environ], Admission]


class ReadGuard(Protocol):
    """Called before every GET and HEAD: answers the requests it refuses (401), None lets them on."""

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes] | None: ...

    def allows(self, environ: Environ) -> bool:
        """Whether the request carries valid credentials."""
        ...

    def visible(self, environ: Environ) -> Callable[[str], bool]:
        """Which project names the request may see listed (the root index, the web UI)."""
        ...


class Service(Protocol):
    """Background work of the app (page refreshes, CI polling and runs); must never block serving."""

    def start(self) -> None: ...

    def stop(self) -> None: ...
