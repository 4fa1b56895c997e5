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
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO

from filelock import Timeout as LockTimeout
from packaging.utils import NormalizedName

from nestegg_core.config.config import MAX_FILE_SIZE, MAX_METADATA_SIZE
from nestegg_core.config.sizes import format_size
from nestegg_core.errors import (
    ArchiveError,
    InsufficientStorage,
    IntegrityError,
    NesteggError,
    UnsafePath,
    UpstreamError,
    UpstreamTimeout,
    disk_full,
)
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import NO_HASHES, DistFile, can_check, mismatch
from nestegg_core.storage.fs import is_regular, unlink_below, write_atomic
from nestegg_core.storage.store import CacheStore
from nestegg_core.urls import mask_url
from nestegg_core.waits import blocking

from .upstream import Fetcher

logger = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
#: how long a process waits for another process's download of the same file
LOCK_WAIT = 600.0
#: a download that gets fewer bytes a second than this over a window of RATE_WINDOW seconds fails:
#: an upstream that drips (each piece within the timeout) would hold a thread and a part file
MIN_RATE = 1024
RATE_WINDOW = 60.0
#: seconds between looks, while a reader waits, at whether its client is still there
GONE_POLL = 0.5


class ClientGone(Exception):
    """The client of a reader went away while it waited for bytes."""


_WAITING, _STREAMING, _DONE, _FAILED = range(4)


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
            self._rename(part, final)
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

    def _available(self) -> int:
        """How many bytes of the file a reader may have now: all of it once it is verified and in
        place; before that never its last byte (with no size known, the last byte written), so that
        a client whose file then fails sees a response broken off, never a complete wrong file."""
        if self._state == _DONE:
            return self.written
        if self.size is None:
            return self.written - 1
        return min(self.written, self.size - 1)

    def _beyond(self, position: int) -> bool:
        return self._available() > position or self._state != _STREAMING

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
                    self._cond.wait_for(lambda: self._state != _STREAMING, timeout=60)
                if self._state == _FAILED:
                    assert self.error is not None
                    raise self.error from None
                if self._state == _DONE:
                    return self._opener(self.path)
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
                    # a range short of the end gets nothing before the check
                    available = position if verified_only and not finished else self._available()
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
            if self._state != _DONE:
                # all that was asked for (an empty file, an empty range) is no answer before the check
                with self._cond:
                    self._wait(self._settled, 60, gone)
                if self._state == _FAILED:
                    assert self.error is not None
                    raise self.error
                if self._state != _DONE:
                    raise UpstreamError(f"timed out waiting for the check of {self.dist.filename!r}")
        finally:
            handle.close()


class Downloads:
    """Downloads in progress in this process, keyed by file."""

    def __init__(
        self,
        store: CacheStore,
        fetcher: Fetcher,
        on_cached: Callable[[NormalizedName, DistFile, bool], None] | None = None,
        *,
        max_file_size: int = MAX_FILE_SIZE,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.on_cached = on_cached
        self.max_file_size = max_file_size
        #: the least rate of a download, in bytes a second over ``rate_window`` seconds
        self.min_rate = MIN_RATE
        self.rate_window = RATE_WINDOW
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], Download] = {}
        #: upstream downloads started by this process (for metrics and tests)
        self.count = 0
        #: the last download failed on a full disk: said once, until a file is cached again
        self._disk_full = False

    def get(self, name: NormalizedName, dist: DistFile) -> Download:
        """The download of ``dist``, started if no thread of this process is fetching it yet."""
        key = (name, dist.filename)
        with self._lock:
            download = self._running.get(key)
            # a failed one may linger a moment before its thread drops it: start afresh
            if download is None or download.failed:
                download = Download(name, dist, self.store)
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
                if is_regular(final):  # another process finished it while we waited
                    download._finish(final)
                else:
                    self.store.remove_parts(name, dist.filename)
                    self._fetch(download, final)
                    self._disk_full = False
        except NesteggError as exc:
            logger.warning("%s", exc)
            download._fail(exc)
        except LockTimeout:
            download._fail(UpstreamError(f"timed out waiting for another download of {dist.filename!r}"))
        except Exception as exc:
            if disk_full(exc):  # its part file is gone, nothing is cached: the client gets a 507
                download._fail(self._full(name, dist, exc))
            else:
                logger.exception("download of %s failed", dist.filename)
                download._fail(UpstreamError(f"download of {dist.filename!r} failed: {exc}"))
        finally:
            with self._lock:
                if self._running.get((name, dist.filename)) is download:
                    del self._running[(name, dist.filename)]

    def _full(self, name: NormalizedName, dist: DistFile, exc: Exception) -> InsufficientStorage:
        error = InsufficientStorage(f"the disk is full: {name}/{dist.filename} was not cached ({exc})")
        # once while it lasts: every download would say it again
        logger.log(logging.DEBUG if self._disk_full else logging.WARNING, "%s", error)
        self._disk_full = True
        return error

    def _fetch(self, download: Download, final: Path) -> None:
        name, dist = download.name, download.dist
        started = time.monotonic()
        self.count += 1
        stream = self.fetcher.open(dist.url)
        try:
            expected = _expected_size(dist, stream.size)
            part, handle = self.store.create_part(name, dist.filename)  # no link followed on the way
        except BaseException:
            stream.close()
            raise
        limit = self.max_file_size if expected is None else expected
        digests = _Digests(dist.hashes)
        update = digests.update
        written = 0
        # the bytes of the current window of the rate check, and when it ends
        window_written, window_end = 0, started + self.rate_window
        try:
            with handle:
                download._stream(part, expected)
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
                os.fsync(handle.fileno())
            if expected is not None and written != expected:
                raise IntegrityError(
                    f"{dist.filename!r} from {mask_url(dist.url)}: got {written} bytes, "
                    f"{'the index' if dist.size is not None else 'its Content-Length'} says {expected}"
                )
            sha256 = digests.sha256.hexdigest()
            vouched = digests.verify(dist)
            # nestegg's own sha256 is listed only beside a digest of the index it checked
            hashes = {**dist.hashes, "sha256": sha256} if vouched else dist.hashes
            record = dist.with_changes(hashes=hashes, size=written, own_sha256=sha256)
            record = self._with_metadata(name, record, part, vouched=vouched)
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
                # A file that is just as the index lists it leaves them be, in every process
                try:
                    self.store.page_changed(download.name)
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
        if metadata is None:
            return record
        self._keep_metadata(name, record.filename, metadata)
        hashes = {"sha256": hashlib.sha256(metadata).hexdigest()} if vouched else NO_HASHES
        return record.with_changes(core_metadata=hashes)

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
                kept: bytes | None = handle.read(MAX_METADATA_SIZE + 1)
        except FileNotFoundError:
            return  # fetched when asked for
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


def _open_plain(path: Path) -> BinaryIO:
    return open(path, "rb")  # the reader closes it


def _expected_size(dist: DistFile, length: int | None) -> int | None:
    """The size a download must have: the index's, else the answer's Content-Length; an answer
    whose length is not the index's fails before a byte is read."""
    if dist.size is not None and length is not None and length != dist.size:
        raise IntegrityError(
            f"{dist.filename!r} from {mask_url(dist.url)}: the answer's Content-Length is {length}, "
            f"the index says {dist.size}"
        )
    return dist.size if dist.size is not None else length


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
                raise IntegrityError(
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
