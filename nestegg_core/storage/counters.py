"""Counters of a mirror (cache hits, upstream traffic, bytes served), shared by every process of a nest.

Under gunicorn or mod_wsgi each worker process counts in memory and adds its counts to
``<nestegg dir>/metrics.json`` under a file lock, at most about once a second and whenever the
metrics are read, so ``/metrics`` asked of any worker answers for all of them. The totals run from
the nest's first use, like any Prometheus counter they only grow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

from nestegg_core.errors import UnsafePath, UpstreamError
from nestegg_core.index.upstream import Fetched, Fetcher, FileStream

from .store import make_folder, open_read, write_atomic

logger = logging.getLogger(__name__)

#: every counter, with the help text of its Prometheus metric
COUNTERS = {
    "cache_hits": "Requests for files answered from the cache.",
    "cache_misses": "Requests for files that were not cached yet.",
    "upstream_downloads": "Files and metadata files downloaded from the upstream.",
    "upstream_errors": "Upstream requests that failed: unreachable, timed out, error status, broken off.",
    "bytes_served": "Bytes of response bodies sent by nestegg itself (pages and files).",
    "bytes_offloaded": "Bytes of cached files handed to the front server (X-Accel-Redirect, X-Sendfile).",
}
#: seconds a process keeps counts in memory before adding them to the shared file
FLUSH_AFTER = 1.0
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class Counters:
    """Counts of one process, added to the totals of the nest (``root``; None keeps them in memory)."""

    def __init__(self, root: Path | None, *, flush_after: float = FLUSH_AFTER) -> None:
        self.path = None if root is None else root / "metrics.json"
        self._file_lock = None if root is None else root / "locks" / "metrics.lock"
        self.flush_after = flush_after
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._broken = False

    def add(self, name: str, amount: int = 1) -> None:
        if not amount:
            return
        with self._lock:
            self._pending[name] += amount
            if self._timer is None and self.path is not None:
                # a daemon timer: counts of a worker that gets no more requests still arrive
                self._timer = threading.Timer(self.flush_after, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add this process's counts to the shared totals (kept for later if that fails)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._timer = None
        # no nest yet (or no more: a test's temporary one), nothing to add to; never make one here
        if not pending or self.path is None or self._file_lock is None or not self.path.parent.is_dir():
            self._keep(pending)
            return
        try:
            make_folder(self.path.parent, self._file_lock.parent)  # no link followed
            with FileLock(self._file_lock, timeout=5):
                totals = self._read()
                for name, amount in pending.items():
                    totals["counters"][name] = totals["counters"].get(name, 0) + amount
                write_atomic(self.path, json.dumps(totals, separators=(",", ":")).encode())
            self._broken = False
        except (OSError, LockTimeout, UnsafePath) as exc:
            if not self._broken:  # once per outage, not once a second
                logger.warning("cannot write metrics to %s: %s", self.path, exc)
                self._broken = True
            self._keep(pending)

    def _keep(self, pending: Counter[str]) -> None:
        with self._lock:
            self._pending.update(pending)

    def totals(self) -> dict[str, Any]:
        """Every counter of the nest (this process's counts included) and since when they run."""
        self.flush()
        data = self._read()
        with self._lock:
            pending = dict(self._pending)  # what could not be written
        counters = {name: int(data["counters"].get(name, 0)) + pending.get(name, 0) for name in COUNTERS}
        return {**counters, "since": data["since"]}

    def _read(self) -> dict[str, Any]:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError, UnsafePath, ValueError, TypeError, KeyError):
                with open_read(self.path.parent, self.path) as handle:
                    data = json.loads(handle.read())
                if isinstance(data.get("counters"), dict) and isinstance(data.get("since"), (int, float)):
                    return dict(data)
        return {"since": time.time(), "counters": {}}


# the WSGI side --------------------------------------------------------------------------------

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def answer(environ: Environ, start_response: StartResponse, counters: Counters) -> Iterable[bytes]:
    """``/metrics``: JSON, or Prometheus' text format for ``?format=prometheus`` or a scraper."""
    totals = counters.totals()
    accept = environ.get("HTTP_ACCEPT", "")
    query = environ.get("QUERY_STRING", "")
    if "format=prometheus" in query.split("&") or "text/plain" in accept or "openmetrics" in accept:
        body, media = prometheus_text(totals).encode(), _PROMETHEUS
    else:
        body, media = json.dumps({**totals, "pid": os.getpid()}).encode(), "application/json"
    start_response(
        "200 OK", [("Content-Type", media), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def prometheus_text(totals: dict[str, Any]) -> str:
    """The counters in the Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for name, description in COUNTERS.items():
        metric = f"nestegg_{name}_total"
        lines += [f"# HELP {metric} {description}", f"# TYPE {metric} counter", f"{metric} {totals[name]}"]
    lines += [
        "# HELP nestegg_metrics_since_seconds When the counters of this cache started (Unix time).",
        "# TYPE nestegg_metrics_since_seconds gauge",
        f"nestegg_metrics_since_seconds {totals['since']:.3f}",
    ]
    return "\n".join(lines) + "\n"


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
        return _Counted(result, self.counters)


class _Counted:
    """A streamed body whose bytes are counted as they go and added when the server closes it."""

    def __init__(self, result: Iterable[bytes], counters: Counters) -> None:
        self.result = result
        self.counters = counters
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.result:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.counters.add("bytes_served", self.sent)


# the upstream side ----------------------------------------------------------------------------


class CountingFetcher:
    """A :class:`Fetcher` that counts downloads and failures of the fetcher it wraps."""

    def __init__(self, fetcher: Fetcher, counters: Counters) -> None:
        self.fetcher = fetcher
        self.counters = counters

    def project(self, name: str, *, etag: str | None, last_modified: str | None) -> Fetched:
        try:
            return self.fetcher.project(name, etag=etag, last_modified=last_modified)
        except UpstreamError:
            self.counters.add("upstream_errors")
            raise

    def open(self, url: str) -> FileStream:
        try:
            stream = self.fetcher.open(url)
        except UpstreamError:
            self.counters.add("upstream_errors")
            raise
        self.counters.add("upstream_downloads")
        return _CountingStream(stream, self.counters)


class _CountingStream:
    def __init__(self, stream: FileStream, counters: Counters) -> None:
        self.stream = stream
        self.size = stream.size
        self.counters = counters

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self.stream.chunks()
        except UpstreamError:
            self.counters.add("upstream_errors")
            raise

    def close(self) -> None:
        self.stream.close()
