"""Coordinated downloads into the cache: one upstream download per file, streamed to every reader.

The first request for an uncached file starts a :class:`Download` in a worker thread that writes a
partial file; every request for the same file (the first included) reads that partial file as it
grows. When the upstream is done the size and hash are checked against the index page; only a match
is renamed into place. Across processes a file lock makes one process download while the others wait
and then read the finished file.

A process runs a bounded number of downloads at once (:class:`DownloadSlots`); a download that no
client has waited for for a while, and that is not near its end, is abandoned.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import BinaryIO

from packaging.utils import NormalizedName

from nestegg_core.config.config import MAX_FILE_SIZE, MAX_METADATA_SIZE
from nestegg_core.config.sizes import format_size
from nestegg_core.errors import (
    ArchiveError,
    InsufficientStorage,
    IntegrityError,
    NesteggError,
    Unavailable,
    UnsafePath,
    UpstreamError,
    UpstreamTimeout,
    disk_full,
    no_files_left,
    out_of_files,
)
from nestegg_core.simple.clients import pip_lists_metadata
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import NO_HASHES, DistFile, can_check, mismatch
from nestegg_core.storage.fs import is_regular, read_at_most, unlink_below, write_atomic
from nestegg_core.storage.locks import FileLock, LockTimeout
from nestegg_core.storage.store import CacheStore
from nestegg_core.urls import mask_url
from nestegg_core.waits import blocking, serving

from .upstream import Fetcher, FileStream, in_background

logger = logging.getLogger(__name__)

#: a reader's piece of a file still downloading: 16 readers of one cold 32 MB wheel peaked 7-8 MB
#: higher with 256 KiB (each piece is copied into the server's buffer for its connection)
READ_CHUNK = 128 * 1024
#: how long a process waits for another process's download of the same file
LOCK_WAIT = 600.0
#: a download that gets fewer bytes a second than this over a window of RATE_WINDOW seconds fails:
#: an upstream that drips (each piece within the timeout) would hold a thread and a part file
MIN_RATE = 1024
RATE_WINDOW = 60.0
#: seconds between looks, while a reader waits, at whether its client is still there
GONE_POLL = 0.5
#: the most downloads a process runs at once (fewer under a low limit of open files): each holds
#: a thread, an upstream connection, a part file and a lock file, and each reader a file more
MAX_DOWNLOADS = 64
#: how long a request for a file not being downloaded waits for a download to end when as many
#: run as may, before it is answered 503
SLOT_WAIT = 5.0
#: a download that no client has waited for for this long is abandoned (its part file removed),
#: unless it is near its end: this many bytes from it, or this many seconds at its rate so far
ABANDON_AFTER = 5.0
NEAR_BYTES = 1024 * 1024
NEAR_SECONDS = 5.0
#: a file whose bytes failed their hash check is not downloaded again from the same URL for the same
#: hashes for this many seconds (each request for it is answered 502 at once); at most this many
#: such files are remembered
FAILED_CHECK_FOR = 60.0
MAX_FAILED_CHECKS = 1024
#: downloads a process runs ahead of their clients at once (``Downloads.ahead``), and the share of
#: its download slots they may take: a client's own request never waits behind them
AHEAD_AT_ONCE = 2
AHEAD_SHARE = 0.5
#: seconds a download ahead waits before it starts: a resolver that rejects the file (pip
#: backtracking) asks for another of the project within them, which drops it (``passed_over``)
AHEAD_AFTER = 0.5
#: projects with a download ahead waiting at once; past it the one due first is dropped
MAX_PENDING = 64

#: threads that make downloads' partial files while the downloads take their locks (``_EarlyPart``)
PART_MAKERS = 2

#: at most how long a page waits for a file a client already has to be put in place (an fsync)
SETTLE_WAIT = 5.0


def download_limit() -> int:
    """How many downloads a process runs at once: ``MAX_DOWNLOADS``, or a sixteenth of its limit
    of open files if that is less (at least 4)."""
    try:
        import resource  # noqa: PLC0415 - not on every system

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return MAX_DOWNLOADS
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return MAX_DOWNLOADS
    return max(4, min(MAX_DOWNLOADS, soft // 16))


class DownloadSlots:
    """How many downloads run at once, at most ``limit``: one set for a process, shared by the
    downloads of every upstream it mirrors."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._cond = threading.Condition()

    def take(self) -> bool:
        """One slot, if one is free now."""
        with self._cond:
            if self.running >= self.limit:
                return False
            self.running += 1
            return True

    def give(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify()

    def wait(self, timeout: float) -> bool:
        """Wait (a declared wait) up to ``timeout`` seconds for a free slot; whether one is."""
        with self._cond:
            if self.running < self.limit:
                return True
            with blocking():
                return self._cond.wait_for(lambda: self.running < self.limit, timeout)


class _HashMismatch(IntegrityError):
    """The bytes of a whole download do not match a hash its index gives."""


class _Abandoned(Exception):
    """A download was given up: no client waited for it, or the server stops."""


class ClientGone(Exception):
    """The client of a reader went away while it waited for bytes."""


#: a download's states: ``_VERIFIED`` is whole and checked, but not yet durable nor in place
_WAITING, _STREAMING, _VERIFIED, _DONE, _FAILED = range(5)


class Download:
    """One file being fetched; readers follow it with :meth:`read`."""

    def __init__(self, name: NormalizedName, dist: DistFile, store: CacheStore | None = None) -> None:
        self.name = name
        self.dist = dist
        #: how its files are opened and renamed: by the store, which follows no link in the cache
        self._opener: Callable[[Path], BinaryIO] = _open_plain if store is None else store.open_read
        self._rename: Callable[[Path, Path], None] = os.replace if store is None else store.place
        self.size: int | None = dist.size
        self.path: Path | None = None  # the partial file while streaming, the final one when done
        self.written = 0
        self.error: NesteggError | None = None
        self._state = _WAITING
        #: every byte was checked (it reached ``_VERIFIED``): kept when the cache then fails, for
        #: an early reader who woke only after that failure and holds the file open
        self._checked = False
        self._cond = threading.Condition()
        #: the requests reading it (see :meth:`attach`), and when the last of them left
        self._readers = 0
        self._left: float | None = None
        #: its worker is failing (see :meth:`_failing`): it takes no new reader
        self._doomed = False
        #: the server stops: given up at its next piece unless whole (see :meth:`Downloads.stop`)
        self._stopping = False
        #: the thread that runs it
        self._thread: threading.Thread | None = None

    @property
    def readers(self) -> int:
        """How many requests read it now (see :meth:`attach`)."""
        return self._readers

    def attach(self) -> bool:
        """Count one more reader, who calls :meth:`leave` when done; False (and not counted) if
        the download failed, is failing or was abandoned."""
        with self._cond:
            if self._state == _FAILED or self._doomed:
                return False
            self._readers += 1
            return True

    def leave(self) -> None:
        """A reader is done with it (see :meth:`attach`)."""
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._left = time.monotonic()

    def _abandon(self, now: float, after: float, *, near: bool) -> bool:
        """Fail the download, if no reader has been there for ``after`` seconds and it is not
        ``near`` its end; whether it was."""
        with self._cond:
            if self._readers or self._left is None or now - self._left < after or near:
                return False
            if self._state not in (_WAITING, _STREAMING):
                return False  # a verified one is only being put in place
            self.error = UpstreamError(
                f"the download of {self.dist.filename!r} was abandoned: no client waited for it"
            )
            self._state = _FAILED
            self._cond.notify_all()
            return True

    # worker side -------------------------------------------------------------------------

    def _stream(self, path: Path, size: int | None) -> None:
        with self._cond:
            self.path, self._state = path, _STREAMING
            if size is not None:
                self.size = size
            self._cond.notify_all()

    def _progress(self, written: int) -> None:
        with self._cond:
            self.written = written
            self._cond.notify_all()

    def _verified(self) -> None:
        """Every byte is written and checked (size, hash, still listed): an early reader
        (:meth:`read`) may have the last one while the file is made durable and put in place."""
        with self._cond:
            if self._state == _STREAMING:
                self._state, self._checked = _VERIFIED, True
                self._cond.notify_all()

    def _place(self, final: Path, part: Path) -> None:
        """The checked file renamed into place; its readers still wait for :meth:`_finish`."""
        with self._cond:
            # renamed under the lock readers open the file under: none finds it missing
            self._rename(part, final)
            self.path = final

    def _finish(self, final: Path) -> None:
        with self._cond:
            self.path, self._state = final, _DONE
            self.size = self.written = final.stat().st_size
            self._cond.notify_all()

    def _failing(self) -> None:
        """The worker gives up and removes its partial file; :meth:`_fail` says why once the
        error is told. A request in between starts afresh instead of sharing that failure."""
        with self._cond:
            self._doomed = True

    def _fail(self, error: NesteggError) -> None:
        with self._cond:
            if self._state == _FAILED:
                return  # abandoned: its error stays
            self.error, self._state = error, _FAILED
            self._cond.notify_all()

    # reader side -------------------------------------------------------------------------

    def wait_started(self, timeout: float = LOCK_WAIT, *, gone: Callable[[], bool] | None = None) -> None:
        """Block until bytes flow (or the file is done); raise the download's error if it failed,
        :class:`ClientGone` once ``gone()`` says the client went away."""
        with self._cond:
            self._wait(lambda: self._state != _WAITING, timeout, gone)
            if self._state == _FAILED:
                assert self.error is not None
                raise self.error
            if self._state == _WAITING:
                raise UpstreamError(f"timed out waiting for {self.dist.filename!r}")

    def _wait(self, ready: Callable[[], bool], timeout: float, gone: Callable[[], bool] | None) -> None:
        """Wait (holding ``_cond``) until ``ready()`` or ``timeout`` seconds passed; a declared
        wait that looks at ``gone()`` every ``GONE_POLL`` seconds."""
        if ready():
            return
        deadline = time.monotonic() + timeout
        with blocking():
            while not ready():
                if gone is not None and gone():
                    raise ClientGone
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left if gone is None else min(left, GONE_POLL))

    def _settled(self, early: bool = False) -> bool:
        """Whether the download is over for a reader: failed or done, or for an ``early`` one verified."""
        return self._state in (_DONE, _FAILED) or (early and self._state == _VERIFIED)

    def _whole(self, early: bool) -> bool:
        """Whether a reader may have every byte: the file is done, or for an ``early`` one checked
        (if the cache failed since, the reader's open file still has them)."""
        return self._state == _DONE or (early and self._checked)

    def wait_done(self, timeout: float | None = None, *, gone: Callable[[], bool] | None = None) -> Path:
        """Block until the file is whole, verified and in place (its path), or raise the
        download's error (:class:`ClientGone` once ``gone()`` says the client went away), an
        :class:`UpstreamError` after ``timeout`` seconds if given: without one, the download's
        own bounds (its lock's wait, its rate, its size) end the wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._state in (_WAITING, _STREAMING, _VERIFIED):
                left = 60.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise UpstreamError(f"timed out waiting for {self.dist.filename!r}")
                self._wait(lambda: self._state in (_DONE, _FAILED), min(left, 60.0), gone)
            if self._state == _FAILED:
                assert self.error is not None
                raise self.error
            assert self.path is not None
            return self.path

    def _available(self, early: bool = False) -> int:
        """How many bytes of the file a reader may have now: all of it once it is verified and in
        place (an ``early`` reader: once verified); before that never its last byte (with no size
        known, the last byte written), so that a client whose file then fails sees a response
        broken off, never a complete wrong file."""
        if self._whole(early):
            return self.written
        if self.size is None:
            return self.written - 1
        return min(self.written, self.size - 1)

    def _beyond(self, position: int, early: bool) -> bool:
        return self._available(early) > position or self._settled(early)

    @property
    def failed(self) -> bool:
        return self._state == _FAILED

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def _open(self) -> BinaryIO:
        with self._cond:
            # opened under the lock: the worker renames the file under the same lock
            assert self.path is not None
            try:
                return self._opener(self.path)  # the reader closes it
            except FileNotFoundError:
                # a failing worker removes its partial file just before it says so: wait for that
                with blocking():
                    self._cond.wait_for(lambda: self._state in (_DONE, _FAILED), timeout=60)
                if self._state == _FAILED:
                    assert self.error is not None
                    raise self.error from None
                if self._state == _DONE:
                    return self._opener(self.path)
                raise UpstreamError(f"the download of {self.dist.filename!r} lost its file") from None

    def peek(self, start: int, end: int) -> bytes | None:
        """Bytes ``start`` to ``end`` (exclusive) if the download has written them already, else
        None: no wait. They are as the upstream sent them, not yet checked against the page's
        hash, as a range passed through from the upstream is not."""
        with self._cond:
            if self._state not in (_STREAMING, _VERIFIED, _DONE) or self.written < end:
                return None
        try:
            handle = self._open()
        except NesteggError:
            return None
        with handle:
            handle.seek(start)
            data = handle.read(end - start)
        return data if len(data) == end - start else None

    def read(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        gone: Callable[[], bool] | None = None,
        early: bool = False,
    ) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; None: to the end), waiting for them as needed.

        Raises the download's error if it fails midway: the server then aborts the response, so a
        client never takes a truncated or corrupt file for a whole one. A range that ends before
        the last byte would be complete before the hash check: it waits for the whole file.
        Raises :class:`ClientGone` if ``gone()`` says, while it waits, that the client went away.
        An ``early`` reader has the last byte once the file is checked, not once it is durable and
        in place: a client that does not look at the cache (an installer) goes on meanwhile.
        """
        self.wait_started(gone=gone)
        verified_only = end is not None and (self.size is None or end < self.size)
        handle = self._open()
        try:
            position = start
            handle.seek(start)
            settled = partial(self._settled, early)
            whole = False
            while end is None or position < end:
                with self._cond:
                    ready = settled if verified_only else partial(self._beyond, position, early)
                    self._wait(ready, 60, gone)
                    whole = self._whole(early)
                    if self._state == _FAILED and not whole:
                        assert self.error is not None
                        raise self.error
                    # a range short of the end gets nothing before the check
                    available = position if verified_only and not whole else self._available(early)
                if available <= position:
                    if whole:
                        return
                    continue
                limit = available if end is None else min(available, end)
                while position < limit:
                    chunk = handle.read(min(READ_CHUNK, limit - position))
                    if not chunk:
                        break
                    position += len(chunk)
                    yield chunk
                if whole:
                    # every byte is checked: what the cache then does (a full disk) is no matter here
                    return
            if not whole:
                # all that was asked for (an empty file, an empty range) is no answer before the check
                with self._cond:
                    self._wait(settled, 60, gone)
                    whole = self._whole(early)
                if self._state == _FAILED and not whole:
                    assert self.error is not None
                    raise self.error
                if not whole:
                    raise UpstreamError(f"timed out waiting for the check of {self.dist.filename!r}")
        finally:
            handle.close()


class _EarlyPart:
    """The partial file of a download, made by another thread while the download takes its lock
    and asks the upstream: a new file is an inode to allocate, 0.1-0.8 ms on a busy disk, that
    the client's first byte would wait for otherwise.

    Made before the lock is held, it may be swept meanwhile (``CacheStore.sweep_parts``, or
    ``remove_parts`` by the process whose download holds the lock): :meth:`take` makes another
    then, as it does when none was made (the makers shut down, busy, or failing).
    """

    def __init__(self, future: Future[tuple[Path, BinaryIO]] | None) -> None:
        self._future = future
        self._made: tuple[Path, BinaryIO] | None = None
        self._taken = False

    def wait(self) -> None:
        """Wait for the part file's maker if it is at work; one that had not begun never will."""
        future, self._future = self._future, None
        if future is None or future.cancel():
            return
        try:
            with blocking():
                self._made = future.result()
        except Exception:  # made again by the download, which says why if it fails again
            logger.debug("no partial file made ahead", exc_info=True)

    def take(self, store: CacheStore, name: NormalizedName, filename: str) -> tuple[Path, BinaryIO]:
        """The part file, open for writing (the caller holds the file's lock and removes it)."""
        self.wait()
        self._taken = True
        made, self._made = self._made, None
        if made is not None:
            if os.fstat(made[1].fileno()).st_nlink:
                return made
            made[1].close()  # swept before the lock was ours
        return store.create_part(name, filename)

    def discard(self) -> None:
        """Close and remove the part file unless :meth:`take` took it."""
        if self._taken:
            return
        self.wait()
        self._taken = True
        made, self._made = self._made, None
        if made is not None:
            path, handle = made
            handle.close()
            with contextlib.suppress(OSError):
                os.unlink(path)


class Downloads:
    """Downloads in progress in this process, keyed by file."""

    def __init__(
        self,
        store: CacheStore,
        fetcher: Fetcher,
        on_cached: Callable[[NormalizedName, DistFile, bool], None] | None = None,
        *,
        max_file_size: int = MAX_FILE_SIZE,
        slots: DownloadSlots | None = None,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.on_cached = on_cached
        self.max_file_size = max_file_size
        #: the downloads this process may run at once (shared with the mounted upstreams')
        self.slots = slots or DownloadSlots(download_limit())
        #: the least rate of a download, in bytes a second over ``rate_window`` seconds
        self.min_rate = MIN_RATE
        self.rate_window = RATE_WINDOW
        self.slot_wait = SLOT_WAIT
        self.abandon_after = ABANDON_AFTER
        self.failed_check_for = FAILED_CHECK_FOR
        #: the files whose check failed lately, oldest first: when, and the error
        self._failed_checks: dict[_Key, tuple[float, _HashMismatch]] = {}
        #: whether the page still lists a file as a download fetched it (not re-published since)
        self.current: Callable[[NormalizedName, DistFile], bool] | None = None
        self._lock = threading.Lock()
        self._running: dict[_Key, Download] = {}
        #: upstream downloads started by this process (for metrics and tests)
        self.count = 0
        #: downloads started ahead of their clients (:meth:`ahead`): how many, and those running
        self.ahead_count = 0
        self.ahead_after = AHEAD_AFTER
        self._ahead: set[_Key] = set()
        #: the downloads ahead waiting to start, one a project: the file, and when it is due
        self._pending: dict[NormalizedName, tuple[DistFile, float]] = {}
        self._pending_cond = threading.Condition()
        self._pending_thread: threading.Thread | None = None
        #: the last download failed on a full disk: said once, until a file is cached again
        self._disk_full = False
        #: the threads that make partial files (``_EarlyPart``), started with the first download
        self._part_makers: ThreadPoolExecutor | None = None
        #: lock files made ahead by the part makers: a cold file's lock is then a name to give
        self._blanks = store.blanks()
        self._stopped = False

    def get(self, name: NormalizedName, dist: DistFile) -> Download:
        """The download of ``dist``, with one more reader (the caller calls its ``leave()``):
        the one a thread of this process runs, or a new one. With as many downloads running as
        may, a new one waits ``slot_wait`` seconds for one to end, then raises
        :class:`Unavailable`."""
        key = _key(name, dist)
        deadline = time.monotonic() + self.slot_wait
        while True:
            with self._lock:
                self._unless_failed_lately(key)
                download = self._running.get(key)
                # one that failed may linger a moment before its thread drops it: start afresh
                if download is not None and download.attach():
                    return download
                if self.slots.take():
                    return self._start(key, name, dist)
            left = deadline - time.monotonic()
            if left <= 0 or not self.slots.wait(left):
                raise Unavailable(
                    f"{dist.filename!r} is not cached, and {self.slots.limit} downloads are running, "
                    "the most this server runs at once; try again shortly"
                )

    def settle(self, name: NormalizedName | None, timeout: float = SETTLE_WAIT) -> None:
        """Wait, up to ``timeout`` seconds, for the files of ``name`` (None: every project) that an
        early reader has whole to be in place: a page asked for once a client has a file lists what
        was learned, and a server that stops keeps the files its clients have."""
        if not self._running:  # every warm page asks: no lock taken when nothing downloads
            return
        with self._lock:
            verified = [d for d in self._running.values() if d._state == _VERIFIED and name in (None, d.name)]
        deadline = time.monotonic() + timeout
        for download in verified:
            with contextlib.suppress(NesteggError):  # the page is answered all the same
                download.wait_done(max(0.0, deadline - time.monotonic()))

    def ahead(self, name: NormalizedName, dist: DistFile, *, after: float | None = None) -> None:
        """Download ``dist`` ahead of its request, ``after`` seconds from now (``ahead_after``
        unless given) unless :meth:`passed_over` drops it first (see :meth:`_start_ahead`); it
        replaces one of the same project waiting (the client moved on to this file). Never waits."""
        delay = self.ahead_after if after is None else after
        if delay <= 0:  # in this thread: a wake of the pending thread's would come later
            self.passed_over(name, dist.filename)
            try:
                self._start_ahead(name, dist)
            except Exception:  # a download ahead is a guess: none started is no failure
                logger.debug("no download ahead of %s", dist.filename, exc_info=True)
            return
        with self._pending_cond:
            self._pending.pop(name, None)
            self._pending[name] = (dist, time.monotonic() + delay)
            while len(self._pending) > MAX_PENDING:
                del self._pending[next(iter(self._pending))]
            if self._pending_thread is None:
                thread = threading.Thread(target=self._run_pending, name="nestegg-ahead", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread can be started now: nothing is ahead
                    self._pending.clear()
                    return
                self._pending_thread = thread
            self._pending_cond.notify()

    def passed_over(self, name: NormalizedName, filename: str) -> None:
        """The client asked for ``filename`` of ``name``: a download ahead of another file of it,
        still waiting, is dropped (the client rejected that one)."""
        with self._pending_cond:
            waiting = self._pending.get(name)
            if waiting is not None and waiting[0].filename != filename:
                del self._pending[name]

    def drop_pending(self) -> None:
        """Start none of the downloads ahead still waiting (the server stops)."""
        with self._pending_cond:
            self._pending.clear()
            self._pending_cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Give up the downloads still running, but those already whole (see :meth:`settle`), and
        wait up to ``timeout`` seconds for the threads of those under way to remove their partial
        files: no client of a stopped server waits for them, and the nest is left as it is once
        the stop returns. One still waiting for the upstream's answer (or another process's
        download) is not waited for: it ends without writing anything."""
        deadline = time.monotonic() + timeout
        with self._lock:
            running = list(self._running.values())
            makers, self._part_makers, self._stopped = self._part_makers, None, True
        if makers is not None:  # a part not begun yet is made by its download, if it goes on
            makers.shutdown(wait=False, cancel_futures=True)
        self._blanks.close()
        under_way = []
        for download in running:
            with download._cond:
                download._stopping = True
                if download._state != _WAITING:
                    under_way.append(download)
        for download in under_way:
            thread = download._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _run_pending(self) -> None:
        """The thread that starts downloads ahead when due; it ends when none waits."""
        while True:
            with self._pending_cond:
                while True:
                    if not self._pending:
                        self._pending_thread = None
                        return
                    name, (dist, due) = min(self._pending.items(), key=lambda item: item[1][1])
                    wait = due - time.monotonic()
                    if wait <= 0:
                        del self._pending[name]
                        break
                    self._pending_cond.wait(wait)
            try:
                self._start_ahead(name, dist)
            except Exception:  # a download ahead is a guess: none started is no failure
                logger.debug("no download ahead of %s", dist.filename, exc_info=True)

    def _start_ahead(self, name: NormalizedName, dist: DistFile) -> bool:
        """Start the download of ``dist`` with no reader, if none runs, it did not fail its check
        lately, fewer than ``AHEAD_AT_ONCE`` run ahead and a slot is free within ``AHEAD_SHARE`` of
        them. Whether it started. Nobody waiting for it, it is abandoned as any other download is
        (``abandon_after``), unless near its end; a request for it reads it as it grows."""
        if is_regular(self.store.file_path(name, dist.filename)):
            return False  # the client's own request came first
        key = _key(name, dist)
        with self._lock:
            if key in self._running or len(self._ahead) >= AHEAD_AT_ONCE:
                return False
            if self.slots.running >= self.slots.limit * AHEAD_SHARE:
                return False
            try:
                self._unless_failed_lately(key)
            except IntegrityError:
                return False
            if not self.slots.take():
                return False
            try:
                download = self._start(key, name, dist, ahead=True)
            except Unavailable:
                return False
            self._ahead.add(key)
            self.ahead_count += 1
        download.leave()  # from now on nobody waits for it
        return True

    def serving(self) -> bool:
        """Whether a download that a client reads runs now (one made ahead for nobody does not count)."""
        if not self._running:
            return False
        with self._lock:
            return any(download.readers for download in self._running.values())

    def running(self, name: NormalizedName, dist: DistFile) -> Download | None:
        """The download of ``dist`` this process runs now, if any (no reader is counted)."""
        with self._lock:
            download = self._running.get(_key(name, dist))
        return None if download is None or download.failed or download._doomed else download

    def _start(self, key: _Key, name: NormalizedName, dist: DistFile, *, ahead: bool = False) -> Download:
        """A new download with its first reader, in a thread of its own (under ``_lock``, with a
        slot); one ``ahead`` of its client on connections of its own (``upstream.in_background``)."""
        download = Download(name, dist, self.store)
        download.attach()
        # its upstream requests say which mirrors the request that started it passed (Via)
        context = contextvars.copy_context()
        run = partial(self._run_ahead, download) if ahead else partial(self._run_for_client, download)
        thread = threading.Thread(target=context.run, args=(run,), name=f"nestegg-download-{dist.filename}")
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError:  # no thread can be started now
            self.slots.give()
            raise Unavailable(
                f"cannot start the download of {dist.filename!r} now; try again shortly"
            ) from None
        download._thread = thread
        self._running[key] = download
        return download

    def _run_ahead(self, download: Download) -> None:
        with in_background():
            self._run(download)

    def _run_for_client(self, download: Download) -> None:
        with serving():  # its client waits for it: work in the background gives way
            self._run(download)

    def _run(self, download: Download) -> None:
        name, dist = download.name, download.dist
        final = self.store.file_path(name, dist.filename)
        part = self._early_part(download)
        try:
            try:
                self._locked(download, final, part)
            finally:
                part.discard()  # before a failure is told: its readers find no part file left
        except _Abandoned:
            if download._stopping:
                why = "the server stops"
                download._fail(UpstreamError(f"the download of {dist.filename!r} stopped with the server"))
            else:  # failed already, with its own error (``Download._abandon``)
                why = f"no client waited for it for {self.abandon_after:g}s"
            logger.info(
                "abandoned the download of %s/%s: %s (%d bytes of %s)",
                name, dist.filename, why, download.written, download.size or "?",
            )  # fmt: skip
        except NesteggError as exc:
            # an upstream not reached: its circuit says so once per outage, not once per file
            unreached = isinstance(exc, UpstreamError) and exc.unreachable is not None
            logger.log(logging.DEBUG if unreached else logging.WARNING, "%s", exc)
            if isinstance(exc, _HashMismatch):  # not a break-off, which may be gone next time
                self._failed_check(_key(name, dist), exc)
            download._fail(exc)
        except LockTimeout:
            download._fail(UpstreamError(f"timed out waiting for another download of {dist.filename!r}"))
        except Exception as exc:
            if disk_full(exc):  # its part file is gone, nothing is cached: the client gets a 507
                download._fail(self._full(name, dist, exc))
            elif out_of_files(exc):  # a 503: the same request may work in a moment
                logger.warning("cannot download %s/%s: %s", name, dist.filename, exc)
                download._fail(no_files_left(f"download {dist.filename!r}"))
            else:
                logger.exception("download of %s failed", dist.filename)
                download._fail(UpstreamError(f"download of {dist.filename!r} failed: {exc}"))
        finally:
            self.slots.give()
            key = _key(name, dist)
            with self._lock:
                if self._running.get(key) is download:
                    del self._running[key]
                    self._ahead.discard(key)

    def _locked(self, download: Download, final: Path, part: _EarlyPart) -> None:
        """Download the file under its lock, unless another process cached it meanwhile."""
        lock = self.store.lock(download.name, download.dist.filename, blanks=self._blanks)
        self._acquire(lock, download)
        try:
            if is_regular(final):  # another process finished it while we waited
                self._check_cached(download)
                download._finish(final)
            else:
                self._fetch(download, final, part)
                self._disk_full = False
        finally:
            lock.release()

    def _early_part(self, download: Download) -> _EarlyPart:
        """The partial file of ``download``, made meanwhile by another thread (``_EarlyPart``)."""
        with self._lock:
            if self._part_makers is None and not self._stopped:
                self._part_makers = ThreadPoolExecutor(PART_MAKERS, thread_name_prefix="nestegg-part")
            makers = self._part_makers
        if makers is None:
            return _EarlyPart(None)
        try:
            part = _EarlyPart(makers.submit(self.store.create_part, download.name, download.dist.filename))
            if self._blanks.wanted():  # for the next downloads' locks, once this part is made
                makers.submit(self._blanks.fill)
        except RuntimeError:  # shut down meanwhile (the server stops)
            return _EarlyPart(None)
        return part

    def _unless_failed_lately(self, key: _Key) -> None:
        """Raise the error of ``key``'s check if it failed within ``failed_check_for`` seconds
        (under ``_lock``)."""
        failed = self._failed_checks.get(key)
        if failed is None:
            return
        when, error = failed
        ago = time.monotonic() - when
        if ago >= self.failed_check_for:
            del self._failed_checks[key]
            return
        raise IntegrityError(f"{error} ({ago:.0f}s ago; not downloaded again for {self.failed_check_for:g}s)")

    def _failed_check(self, key: _Key, error: _HashMismatch) -> None:
        with self._lock:
            self._failed_checks.pop(key, None)
            self._failed_checks[key] = (time.monotonic(), error)
            while len(self._failed_checks) > MAX_FAILED_CHECKS:
                del self._failed_checks[next(iter(self._failed_checks))]

    def _acquire(self, lock: FileLock, download: Download) -> None:
        """Take the file's lock, held by another download of it (in this process or another) for
        as long as that runs: up to ``LOCK_WAIT`` seconds, unless nobody waits for this one."""
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                lock.acquire(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except LockTimeout:
                now = time.monotonic()
                if download._stopping or download._abandon(now, self.abandon_after, near=False):
                    raise _Abandoned from None
                if now >= deadline:
                    raise
            else:
                return

    def _full(self, name: NormalizedName, dist: DistFile, exc: Exception) -> InsufficientStorage:
        error = InsufficientStorage(f"the disk is full: {name}/{dist.filename} was not cached ({exc})")
        # once while it lasts: every download would say it again
        logger.log(logging.DEBUG if self._disk_full else logging.WARNING, "%s", error)
        self._disk_full = True
        return error

    def _fetch(self, download: Download, final: Path, early: _EarlyPart) -> None:
        name, dist = download.name, download.dist
        started = time.monotonic()
        self.count += 1
        stream, expected, part, handle = self._begin(download, early)
        limit = self.max_file_size if expected is None else expected
        digests = _Digests(dist.hashes)
        update = digests.update
        written = 0
        # the bytes of the current window of the rate check, and when it ends
        window_written, window_end = 0, started + self.rate_window
        try:
            with handle:
                for chunk in stream.chunks():
                    if written + len(chunk) > limit:
                        raise self._too_long(dist, expected, stream.size)
                    handle.write(chunk)
                    # flushed before readers are told: they read the file, not our buffer
                    handle.flush()
                    update(chunk)
                    written += len(chunk)
                    download._progress(written)
                    now = time.monotonic()
                    if now >= window_end:
                        self._check_rate(dist, written - window_written, now - window_end + self.rate_window)
                        window_written, window_end = written, now + self.rate_window
                    self._unless_unwanted(download, written, expected, now - started)
                sha256, vouched = self._check(download, digests, written, expected)
                download._verified()
                os.fsync(handle.fileno())
            # nestegg's own sha256 is listed only beside a digest of the index it checked
            hashes = {**dist.hashes, "sha256": sha256} if vouched else dist.hashes
            record = dist.with_changes(hashes=hashes, size=written, own_sha256=sha256)
            record = self._with_metadata(name, record, part, vouched=vouched)
            # the record first: a file on disk without one is ignored as unfinished
            self.store.write_record(name, record)
            download._place(final, part)
        except BaseException:
            download._failing()
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        finally:
            stream.close()
        logger.info(
            "cached %s/%s (%d bytes, %.2fs)", name, dist.filename, written, time.monotonic() - started
        )
        self._announce(download, record, final)

    def _begin(self, download: Download, early: _EarlyPart) -> tuple[FileStream, int | None, Path, BinaryIO]:
        """The upstream's answer for the file of ``download``, its expected size, and the partial
        file made for it (``early``), open for writing (its readers told to follow it)."""
        name, filename = download.name, download.dist.filename
        stream = self.fetcher.open(download.dist.url)
        try:
            early.wait()  # not under the lock its readers take
            expected = _expected_size(download.dist, stream.size)
            # under the lock the server's stop reads (Downloads.stop): it waits for the downloads
            # under way, with their part files, and none is begun once it stops
            with download._cond:
                if download._stopping:
                    raise _Abandoned
                # no link followed on the way
                part, handle = early.take(self.store, name, filename)
                try:
                    # those a process that died while it held the lock left
                    self.store.remove_parts(name, filename, spare=part.name)
                    download._stream(part, expected)
                except BaseException:
                    handle.close()
                    with contextlib.suppress(OSError):
                        os.unlink(part)
                    raise
        except BaseException:
            stream.close()
            raise
        return stream, expected, part, handle

    def _check(
        self, download: Download, digests: _Digests, written: int, expected: int | None
    ) -> tuple[str, bool]:
        """Check a whole download against its page (size, hashes, still listed): its sha256, and
        whether a digest of the index vouched for it."""
        _check_size(download.dist, written, expected)
        vouched = digests.verify(download.dist)
        if self.current is not None and not self.current(download.name, download.dist):
            raise self._republished(download.dist)  # its readers break off: the file is not this one
        return digests.sha256.hexdigest(), vouched

    def _check_cached(self, download: Download) -> None:
        """Fail ``download`` if the file another download cached meanwhile is not the one it
        was for (its hashes differ): the upstream re-published it, and the client is not handed the
        other bytes."""
        record = self.store.read_record(download.name, download.dist.filename)
        if record is not None and _conflict(record.hashes, download.dist.hashes):
            raise self._republished(download.dist)

    @staticmethod
    def _republished(dist: DistFile) -> UpstreamError:
        return UpstreamError(
            f"{dist.filename!r} was re-published by the upstream (another hash) while it was "
            "downloaded; ask again"
        )

    def _unless_unwanted(self, download: Download, written: int, size: int | None, seconds: float) -> None:
        """Raise :class:`_Abandoned` if the server stops, or nobody has waited for ``download`` for
        ``abandon_after`` seconds and it is not near its end."""
        if download._stopping:
            raise _Abandoned
        if not download._readers and download._abandon(
            time.monotonic(), self.abandon_after, near=_near_end(written, size, seconds)
        ):
            raise _Abandoned

    def _too_long(self, dist: DistFile, expected: int | None, length: int | None) -> UpstreamError:
        where = f"{dist.filename!r} from {mask_url(dist.url)}"
        if expected is None:
            return UpstreamError(
                f"{where}: the upstream sent more than max_file_size ({format_size(self.max_file_size)}) "
                "of a file whose size neither the index nor the answer gives; raise nestegg.max_file_size"
            )
        said = "the index says" if dist.size is not None else "its Content-Length says"
        if dist.size is not None and length is not None:
            said = "the index and its Content-Length say"
        return IntegrityError(f"{where}: the upstream sent more than the {expected} bytes {said}")

    def _check_rate(self, dist: DistFile, received: int, seconds: float) -> None:
        """Fail a download that drips: every piece within the timeout, far too few in all."""
        if received < self.min_rate * seconds:
            raise UpstreamTimeout(
                f"download of {mask_url(dist.url)} dripped: {received / seconds:.0f} bytes/s over "
                f"{seconds:.0f}s, under the {self.min_rate} bytes/s a download must keep"
            )

    def _announce(self, download: Download, record: DistFile, final: Path) -> None:
        """Tell the page about the file now in place, then give its readers the last byte: a client
        that asks for the page once it has the file sees what was learned, in any process."""
        try:
            changed = record != download.dist
            if changed:
                # the page lists what was learned (size, hash, metadata): its renderings are stale.
                # A file that is just as the index lists it leaves them be, in every process, and
                # one that only brought metadata leaves pip's (which list none for it) be
                try:
                    self.store.page_changed(
                        download.name, metadata_only=_metadata_only(download.dist, record)
                    )
                except OSError as exc:
                    logger.warning("cannot mark the page of %r changed: %s", download.name, exc)
            if self.on_cached is not None:
                self.on_cached(download.name, record, changed)
        finally:
            download._finish(final)

    def _with_metadata(
        self, name: NormalizedName, record: DistFile, path: Path, *, vouched: bool
    ) -> DistFile:
        """The record with PEP 658 metadata taken from a wheel the upstream offered none for; its
        hash is listed only if the wheel's bytes were vouched for. Metadata kept from before that
        does not match what the page says now (the upstream published other bytes under the same
        name since) is replaced by the wheel's, if that matches, or removed."""
        if not record.filename.endswith(".whl"):
            return record
        if record.core_metadata is not None:
            self._renew_metadata(name, record, path)
            return record
        try:
            metadata = wheel_metadata(path, record.filename)
        except (ArchiveError, OSError) as exc:  # the wheel is served all the same, as the index has it
            logger.warning("no PEP 658 metadata for %s/%s: %s", name, record.filename, exc)
            return record
        self._check_ranged(name, record.filename, metadata)
        if metadata is None:
            return record
        self._keep_metadata(name, record.filename, metadata)
        hashes = {"sha256": hashlib.sha256(metadata).hexdigest()} if vouched else NO_HASHES
        return record.with_changes(core_metadata=hashes)

    def _check_ranged(self, name: NormalizedName, filename: str, metadata: bytes | None) -> None:
        """Forget that the metadata of ``filename`` kept was read by ranges, now that the wheel is
        here: the wheel's own replaces it (its bytes are the ones the page vouches for), and a
        difference is said."""
        note = self.store.metadata_ranged_path(name, filename)
        if not is_regular(note):
            return
        kept_path = self.store.metadata_path(name, filename)
        try:
            with self.store.open_read(kept_path) as handle:
                kept = read_at_most(handle, MAX_METADATA_SIZE + 1)
        except (OSError, UnsafePath):
            kept = None
        if kept != metadata:
            logger.warning(
                "the metadata of %s/%s read by ranges was not the wheel's: replaced", name, filename
            )
            if metadata is None:
                with contextlib.suppress(OSError, UnsafePath):
                    unlink_below(self.store.root, kept_path)
        with contextlib.suppress(OSError, UnsafePath):
            unlink_below(self.store.root, note)

    def _keep_metadata(self, name: NormalizedName, filename: str, metadata: bytes) -> None:
        """Write the metadata of the wheel ``filename``, as what the page lists of it: the wheel's
        record lists it with this metadata's hash, on the page made from any state."""
        written = write_atomic(self.store.metadata_path(name, filename), metadata, root=self.store.root)
        state = self.store.page_stamp(name)
        if state is not None:
            with contextlib.suppress(OSError, UnsafePath):  # only a head start for its requests
                self.store.note_metadata_checked(name, filename, state, written)

    def _renew_metadata(self, name: NormalizedName, record: DistFile, path: Path) -> None:
        """Keep the metadata file of ``record`` only if it matches ``record.core_metadata``."""
        target = self.store.metadata_path(name, record.filename)
        hashes = record.core_metadata or {}
        try:
            with self.store.open_read(target) as handle:
                kept: bytes | None = read_at_most(handle, MAX_METADATA_SIZE + 1)
        except FileNotFoundError:
            return  # taken from the wheel (or fetched) when asked for: ``Repository.open_metadata``
        except UnsafePath as exc:  # a link: never served nor followed, and left to its owner
            logger.warning("%s", exc)
            return
        except OSError:
            kept = None
        if kept is not None and len(kept) <= MAX_METADATA_SIZE and mismatch(kept, hashes) is None:
            return
        # what it was found to match first: it names a file that is no more
        with contextlib.suppress(OSError, UnsafePath):
            unlink_below(self.store.root, self.store.metadata_check_path(name, record.filename))
        metadata = wheel_metadata(path)
        if metadata is not None and mismatch(metadata, hashes) is None:
            self._keep_metadata(name, record.filename, metadata)
            return
        try:
            unlink_below(self.store.root, target)
        except (OSError, UnsafePath) as exc:  # a link: never served (``open_served``), left alone
            logger.warning("cannot remove the stale metadata of %s: %s", record.filename, exc)


def _near_end(written: int, size: int | None, seconds: float) -> bool:
    """Whether a download is near its end: ``NEAR_BYTES`` from it, or ``NEAR_SECONDS`` at its
    rate so far. One of unknown size never is."""
    if size is None:
        return False
    left = size - written
    return left <= NEAR_BYTES or (written > 0 and left * seconds <= NEAR_SECONDS * written)


#: what a running download is found by: a request joins it only for the same URL and hashes
_Key = tuple[str, str, str, tuple[tuple[str, str], ...]]


def _key(name: NormalizedName, dist: DistFile) -> _Key:
    return (name, dist.filename, dist.url, tuple(sorted(dist.hashes.items())))


def _conflict(ours: Mapping[str, str], theirs: Mapping[str, str]) -> bool:
    """Whether two sets of hashes tell different files: one algorithm, two digests."""
    return any(theirs.get(algorithm, digest) != digest for algorithm, digest in ours.items())


def _open_plain(path: Path) -> BinaryIO:
    return open(path, "rb")  # the reader closes it


def _check_size(dist: DistFile, written: int, expected: int | None) -> None:
    if expected is not None and written != expected:
        raise IntegrityError(
            f"{dist.filename!r} from {mask_url(dist.url)}: got {written} bytes, "
            f"{'the index' if dist.size is not None else 'its Content-Length'} says {expected}"
        )


def _expected_size(dist: DistFile, length: int | None) -> int | None:
    """The size a download must have: the index's, else the answer's Content-Length; an answer
    whose length is not the index's fails before a byte is read."""
    if dist.size is not None and length is not None and length != dist.size:
        raise IntegrityError(
            f"{dist.filename!r} from {mask_url(dist.url)}: the answer's Content-Length is {length}, "
            f"the index says {dist.size}"
        )
    return dist.size if dist.size is not None else length


def _metadata_only(listed: DistFile, record: DistFile) -> bool:
    """Whether the ``record`` of a file cached tells no more than the page's entry ``listed`` but
    its metadata, and pip's pages listed none for it before (``pip_lists_metadata``) nor do after
    (a cached wheel's): a change that pip's renderings of the page do not show."""
    return not pip_lists_metadata(listed) and record.with_changes(core_metadata=None) == listed.with_changes(
        core_metadata=None
    )


class _Digests:
    """The digests of one download, taken in one pass: nestegg's own sha256, and every other the
    index gives that can be checked (see ``models.can_check``)."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self.sha256 = hashlib.sha256()
        self.others = [
            (algorithm, hashlib.new(algorithm), digest)
            for algorithm, digest in hashes.items()
            if algorithm != "sha256" and can_check(algorithm)
        ]
        updates = [self.sha256.update] + [hasher.update for _, hasher, _ in self.others]
        # nearly every page gives only a sha256: then a chunk costs one call, as before
        self.update: Callable[[bytes], None] = updates[0] if len(updates) == 1 else partial(_update, updates)

    def verify(self, dist: DistFile) -> bool:
        """Raise IntegrityError if a digest the index gives does not match; whether one was checked."""
        checked = [("sha256", self.sha256, dist.sha256)] if dist.sha256 is not None else []
        for algorithm, hasher, expected in checked + self.others:
            actual = hasher.hexdigest()
            # a digest of another length or form than the algorithm's is a mismatch like any other
            if actual != expected:
                raise _HashMismatch(
                    f"{dist.filename!r} from {mask_url(dist.url)}: {algorithm} {actual} does not "
                    f"match the index's {_shortened(expected)}"
                )
        return bool(checked or self.others)


def _update(updates: Sequence[Callable[[bytes], None]], chunk: bytes) -> None:
    for update in updates:
        update(chunk)


def _shortened(text: str, limit: int = 160) -> str:
    # a hostile page's "digest" may be megabytes: a message stays one short line
    return text if len(text) <= limit else text[:limit] + "..."
