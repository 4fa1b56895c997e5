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
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nestegg_core.errors import UnsafePath

from .fs import make_folder, open_read, write_atomic
from .locks import FileLock, LockTimeout

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


class Counters:
    """Counts of one process, added to the totals of the nest (``root``; None keeps them in memory)."""

    def __init__(self, root: Path | None, *, flush_after: float = FLUSH_AFTER) -> None:
        self.path = None if root is None else root / "metrics.json"
        self._file_lock = None if root is None else root / "locks" / "metrics.lock"
        self.flush_after = flush_after
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        #: held for a whole flush: one that returns has seen every other one end
        self._flushing = threading.Lock()
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
                self._timer.name = "nestegg-metrics"
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add this process's counts to the shared totals (kept for later if that fails)."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, Counter()
                timer, self._timer = self._timer, None
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()  # its counts are these: a timer left waiting would write after close()
            self._write(pending)

    def _write(self, pending: Counter[str]) -> None:
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

    def close(self) -> None:
        """Add this process's counts to the totals now, once any flush under way has ended, and
        stop the timer: a stopped server writes nothing more in the nest, which its user may
        remove at once. A later count starts a timer again."""
        self.flush()

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
