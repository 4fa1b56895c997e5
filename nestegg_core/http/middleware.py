"""WSGI middleware: the access log, and the count of bytes served; each body the server
streams is wrapped once, to act when the server closes it."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nestegg_core.storage.counters import Counters

from .types import Environ, Headers, StartResponse, WSGIApp

access_log = logging.getLogger("nestegg_core.access")


class AccessLog:
    """WSGI middleware that logs one line per request (status, bytes, time)."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not access_log.isEnabledFor(logging.INFO):
            return self.app(environ, start_response)
        started = time.perf_counter()
        seen: list[str] = ["-", "0"]

        def recording(status: str, headers: Headers, exc_info: Any = None) -> Any:
            seen[0] = status.split(" ", 1)[0]
            seen[1] = next((v for k, v in headers if k.lower() == "content-length"), "-")
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        result = self.app(environ, recording)
        if isinstance(result, list) or type(result) is environ.get("wsgi.file_wrapper"):
            # a page, or a file the server sends itself (kept unwrapped for its fast path)
            log_access(environ, seen[0], seen[1], started)
            return result
        return _Closing(result, lambda _sent: log_access(environ, seen[0], seen[1], started))


class CountBytes:
    """WSGI middleware that adds the bytes of every response body to ``bytes_served``."""

    def __init__(self, app: WSGIApp, counters: Counters) -> None:
        self.app = app
        self.counters = counters

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        length: list[int] = [0]

        def recording(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            value = next((v for k, v in headers if k.lower() == "content-length"), "0")
            length[0] = int(value) if value.isdigit() else 0
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        result = self.app(environ, recording)
        if isinstance(result, list):
            self.counters.add("bytes_served", sum(len(chunk) for chunk in result))
            return result
        if type(result) is environ.get("wsgi.file_wrapper"):
            # left whole for the server's sendfile path; it sends what Content-Length says
            self.counters.add("bytes_served", length[0])
            return result
        return _Closing(result, lambda sent: self.counters.add("bytes_served", sent), count=True)


class _Closing:
    """A body the server streams, which calls ``done(bytes sent)`` once the server closes it
    (after closing the body itself). Counted as it goes only if ``count``."""

    def __init__(self, result: Iterable[bytes], done: Callable[[int], None], *, count: bool = False) -> None:
        self.result = result
        self.done = done
        self.count = count
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        return self._counted() if self.count else iter(self.result)

    def _counted(self) -> Iterator[bytes]:
        for chunk in self.result:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.done(self.sent)


def log_access(env: Environ, status: str, length: str, started: float) -> None:
    """The access log line of a request: its client, method, path, status (the code), length
    (``-`` if unknown) and time since ``started`` (``time.perf_counter``)."""
    query = env.get("QUERY_STRING")
    access_log.info(
        '%s "%s %s%s" %s %s %.1fms',
        loggable(env.get("REMOTE_ADDR", "-")),
        loggable(env.get("REQUEST_METHOD")),
        loggable(env.get("PATH_INFO")),
        f"?{loggable(query)}" if query else "",
        status,
        length,
        (time.perf_counter() - started) * 1000,
    )


# what a client sent, as the access log shows it: printable ASCII, the rest escaped as nginx does,
# so that no request starts a line of its own (%0a) or drives the terminal (\x1b), nor ends the
# quoted request early
_UNLOGGABLE = re.compile(r'[^\x20-\x7e]|["\\]')


def loggable(value: object) -> str:
    """``value`` as a log line may show it: printable ASCII, the rest escaped."""
    return _UNLOGGABLE.sub(_escaped, str(value))


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return "\\" + char
    code = ord(char)  # PATH_INFO holds the bytes sent, one latin-1 character each
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
