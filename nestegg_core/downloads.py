"""Coordinated downloads into the cache: one upstream download per file, streamed to every reader.

The first request for an uncached file starts a :class:`Download` in a worker thread that writes a
partial file; every request for the same file (the first included) reads that partial file as it
grows. When the upstream is done the size and hash are checked against the index page; only a match
is renamed into place. Across processes a file lock makes one process download while the others wait
and then read the finished file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from filelock import Timeout as LockTimeout
from packaging.utils import NormalizedName

from .distmeta import wheel_metadata
from .errors import IntegrityError, NesteggError, UpstreamError
from .models import DistFile
from .pacing import blocking
from .store import CacheStore, write_atomic
from .upstream import Fetcher, mask_url

logger = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
#: how long a process waits for another process's download of the same file
LOCK_WAIT = 600.0
#: seconds between looks, while a reader waits, at whether its client is still there
GONE_POLL = 0.5


class ClientGone(Exception):
    """The client of a reader went away while it waited for bytes."""


_WAITING, _STREAMING, _DONE, _FAILED = range(4)


class Download:
    """One file being fetched; readers follow it with :meth:`read`."""

    def __init__(self, name: NormalizedName, dist: DistFile) -> None:
        self.name = name
        self.dist = dist
        self.size: int | None = dist.size
        self.path: Path | None = None  # the partial file while streaming, the final one when done
        self.written = 0
        self.error: NesteggError | None = None
        self._state = _WAITING
        self._cond = threading.Condition()

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

    def _place(self, final: Path, part: Path) -> None:
        """The checked file renamed into place; its readers still wait for :meth:`_finish`."""
        with self._cond:
            # renamed under the lock readers open the file under: none finds it missing
            os.replace(part, final)
            self.path = final

    def _finish(self, final: Path) -> None:
        with self._cond:
            self.path, self._state = final, _DONE
            self.size = self.written = final.stat().st_size
            self._cond.notify_all()

    def _fail(self, error: NesteggError) -> None:
        with self._cond:
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

    def _settled(self) -> bool:
        return self._state != _STREAMING

    def _beyond(self, position: int) -> bool:
        return self.written - 1 > position or self._state != _STREAMING

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
                return open(self.path, "rb")  # the reader closes it
            except FileNotFoundError:
                # a failing worker removes its partial file just before it says so: wait for that
                with blocking():
                    self._cond.wait_for(lambda: self._state != _STREAMING, timeout=60)
                if self._state == _FAILED:
                    assert self.error is not None
                    raise self.error from None
                if self._state == _DONE:
                    return open(self.path, "rb")
                raise UpstreamError(f"the download of {self.dist.filename!r} lost its file") from None

    def read(
        self, start: int = 0, end: int | None = None, *, gone: Callable[[], bool] | None = None
    ) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive; None: to the end), waiting for them as needed.

        Raises the download's error if it fails midway: the server then aborts the response, so a
        client never takes a truncated or corrupt file for a whole one. A range that ends before
        the last byte would be complete before the hash check: it waits for the whole file.
        Raises :class:`ClientGone` if ``gone()`` says, while it waits, that the client went away.
        """
        self.wait_started(gone=gone)
        verified_only = end is not None and (self.size is None or end < self.size)
        handle = self._open()
        try:
            position = start
            handle.seek(start)
            while end is None or position < end:
                with self._cond:
                    ready = self._settled if verified_only else partial(self._beyond, position)
                    self._wait(ready, 60, gone)
                    if self._state == _FAILED:
                        assert self.error is not None
                        raise self.error
                    finished = self._state == _DONE
                    if finished:
                        available = self.written
                    elif verified_only:
                        available = position  # nothing before the check
                    else:
                        # the last byte waits for the hash check: a client whose file turns out
                        # corrupt sees a broken-off response, never a complete wrong file
                        available = self.written - 1
                if available <= position:
                    if finished:
                        return
                    continue
                limit = available if end is None else min(available, end)
                while position < limit:
                    chunk = handle.read(min(READ_CHUNK, limit - position))
                    if not chunk:
                        break
                    position += len(chunk)
                    yield chunk
        finally:
            handle.close()


class Downloads:
    """Downloads in progress in this process, keyed by file."""

    def __init__(
        self,
        store: CacheStore,
        fetcher: Fetcher,
        on_cached: Callable[[NormalizedName, DistFile, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.on_cached = on_cached
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], Download] = {}
        #: upstream downloads started by this process (for metrics and tests)
        self.count = 0

    def get(self, name: NormalizedName, dist: DistFile) -> Download:
        """The download of ``dist``, started if no thread of this process is fetching it yet."""
        key = (name, dist.filename)
        with self._lock:
            download = self._running.get(key)
            # a failed one may linger a moment before its thread drops it: start afresh
            if download is None or download.failed:
                download = Download(name, dist)
                self._running[key] = download
                thread = threading.Thread(
                    target=self._run, args=(download,), name=f"nestegg-download-{dist.filename}"
                )
                thread.daemon = True
                thread.start()
        return download

    def _run(self, download: Download) -> None:
        name, dist = download.name, download.dist
        final = self.store.file_path(name, dist.filename)
        try:
            with self.store.lock(name, dist.filename, timeout=LOCK_WAIT):
                if final.is_file():  # another process finished it while we waited
                    download._finish(final)
                else:
                    self.store.remove_parts(name, dist.filename)
                    self._fetch(download, final)
        except NesteggError as exc:
            logger.warning("%s", exc)
            download._fail(exc)
        except LockTimeout:
            download._fail(UpstreamError(f"timed out waiting for another download of {dist.filename!r}"))
        except Exception as exc:
            logger.exception("download of %s failed", dist.filename)
            download._fail(UpstreamError(f"download of {dist.filename!r} failed: {exc}"))
        finally:
            with self._lock:
                if self._running.get((name, dist.filename)) is download:
                    del self._running[(name, dist.filename)]

    def _fetch(self, download: Download, final: Path) -> None:
        name, dist = download.name, download.dist
        started = time.monotonic()
        self.count += 1
        stream = self.fetcher.open(dist.url)
        part = self.store.part_path(name, dist.filename)
        part.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        check = _other_check(dist)
        written = 0
        try:
            with open(part, "wb") as handle:
                download._stream(part, dist.size if dist.size is not None else stream.size)
                for chunk in stream.chunks():
                    handle.write(chunk)
                    # flushed before readers are told: they read the file, not our buffer
                    handle.flush()
                    digest.update(chunk)
                    if check is not None:
                        check[1].update(chunk)
                    written += len(chunk)
                    download._progress(written)
                os.fsync(handle.fileno())
            sha256 = digest.hexdigest()
            expected_size = dist.size if dist.size is not None else stream.size
            if expected_size is not None and written != expected_size:
                raise IntegrityError(
                    f"{dist.filename!r} from {mask_url(dist.url)}: got {written} bytes, "
                    f"the index says {expected_size}"
                )
            if dist.sha256 and dist.sha256 != sha256:
                raise IntegrityError(
                    f"{dist.filename!r} from {mask_url(dist.url)}: sha256 {sha256} does not "
                    f"match the index's {dist.sha256}"
                )
            if check is not None and check[1].hexdigest() != check[2]:
                raise IntegrityError(
                    f"{dist.filename!r} from {mask_url(dist.url)}: {check[0]} does not match the index"
                )
            record = dist.with_changes(hashes={**dist.hashes, "sha256": sha256}, size=written)
            record = self._with_metadata(name, record, part)
            # the record first: a file on disk without one is ignored as unfinished
            self.store.write_record(name, record)
            download._place(final, part)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        finally:
            stream.close()
        logger.info(
            "cached %s/%s (%d bytes, %.2fs)", name, dist.filename, written, time.monotonic() - started
        )
        self._announce(download, record, final)

    def _announce(self, download: Download, record: DistFile, final: Path) -> None:
        """Tell the page about the file now in place, then give its readers the last byte: a client
        that asks for the page once it has the file sees what was learned, in any process."""
        try:
            changed = record != download.dist
            if changed:
                # the page lists what was learned (size, hash, metadata): its renderings are stale.
                # A file that is just as the index lists it leaves them be, in every process
                try:
                    self.store.page_changed(download.name)
                except OSError as exc:
                    logger.warning("cannot mark the page of %r changed: %s", download.name, exc)
            if self.on_cached is not None:
                self.on_cached(download.name, record, changed)
        finally:
            download._finish(final)

    def _with_metadata(self, name: NormalizedName, record: DistFile, path: Path) -> DistFile:
        """The record with PEP 658 metadata taken from a wheel the upstream offered none for."""
        if record.core_metadata is not None or not record.filename.endswith(".whl"):
            return record
        metadata = wheel_metadata(path)
        if metadata is None:
            return record
        write_atomic(self.store.metadata_path(name, record.filename), metadata)
        return record.with_changes(core_metadata={"sha256": hashlib.sha256(metadata).hexdigest()})


def _other_check(dist: DistFile) -> tuple[str, hashlib._Hash, str] | None:
    # an index that gives no sha256 may give another hash; check the strongest it gives
    if dist.sha256:
        return None
    for algorithm in ("sha512", "sha384", "sha224", "blake2b", "sha1", "md5"):
        if algorithm in dist.hashes:
            return algorithm, hashlib.new(algorithm), dist.hashes[algorithm]
    return None
