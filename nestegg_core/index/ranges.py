"""Byte ranges of files not cached yet, without their whole download.

A range of a file being downloaded is read from its partial file once written; any other is asked
of the upstream (``RangeFetcher.read_range``, whose 206 is checked to be exactly that range of a
file of the page's size), at most ``MAX_RANGE`` bytes a request. An upstream that answers a range
with the whole file is not asked for ranges again for ``REFUSED_FOR`` seconds: its files are
downloaded whole, as before.

A wheel's METADATA is read by ranges as from a file (:func:`simple.distmeta.wheel_metadata`, with
its bounds): the end of the zip (its last ``TAIL`` bytes), then what the central directory has
before that, if anything, then the member's local header and data, in one request (the reader
says what it reads next). Each request is a round trip to an upstream that may be far away, and
a client waits on all of them: few larger requests beat many small ones.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import BinaryIO, cast

from packaging.utils import NormalizedName

from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import DistFile
from nestegg_core.urls import mask_url

from .circuit import origin
from .downloads import Downloads
from .upstream import Fetcher, RangeFetcher

logger = logging.getLogger(__name__)

#: the most bytes one request passes through from the upstream (a larger range waits for the
#: whole file): lazy-wheel clients ask for tens of KiB; the whole range is held until checked
MAX_RANGE = 4 * 1024 * 1024
#: seconds an upstream that answered a range with its whole file is not asked for ranges again
REFUSED_FOR = 600.0
#: the least bytes a read of a wheel's metadata by ranges asks for (a member's local header with
#: its data come in one request when small)
READ_AHEAD = 16 * 1024
#: the bytes at the end of a wheel asked for by its first read: its central directory and, where
#: the wheel puts its .dist-info last (as the wheel spec asks), its METADATA, in one request
TAIL = 64 * 1024


class RangesRefused(Exception):
    """The upstream does not serve ranges of this file (or cannot be asked for them)."""


class Ranges:
    """Ranges of the files of one upstream, for requests that do not want the whole file."""

    def __init__(
        self, fetcher: Fetcher, downloads: Downloads, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fetcher = fetcher
        self.downloads = downloads
        self.clock = clock
        #: the origins that answered a range with the whole file, and when
        self._refused: dict[str, float] = {}
        self._lock = threading.Lock()

    def read(self, name: NormalizedName, dist: DistFile, start: int, end: int) -> bytes | None:
        """Bytes ``start`` to ``end`` (exclusive) of ``dist``; None when they are to come from its
        whole download: its size unknown, over ``MAX_RANGE`` bytes, or no ranges upstream."""
        if dist.size is None or end - start > MAX_RANGE or not 0 <= start < end <= dist.size:
            return None
        download = self.downloads.running(name, dist)
        if download is not None:
            data = download.peek(start, end)
            if data is not None:
                return data
        try:
            return self.fetch(dist, start, end)
        except RangesRefused:
            return None

    def fetch(self, dist: DistFile, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of ``dist`` (whose size is known) from the upstream;
        :class:`RangesRefused` if it serves none."""
        assert dist.size is not None
        key = origin(dist.url)
        with self._lock:
            refused = self._refused.get(key)
            if refused is not None and self.clock() - refused < REFUSED_FOR:
                raise RangesRefused
        if not isinstance(self.fetcher, RangeFetcher):
            raise RangesRefused
        data = self.fetcher.read_range(dist.url, start, end, dist.size)
        if data is None:
            logger.info("%s answered a range with the whole file: its files are downloaded whole", key)
            with self._lock:
                self._refused[key] = self.clock()
            raise RangesRefused
        return data

    def wheel_metadata(self, dist: DistFile) -> bytes | None:
        """The METADATA of the wheel ``dist`` read by ranges (None: the wheel has none);
        :class:`RangesRefused` if it cannot be, :class:`ArchiveError` past a bound of
        :mod:`distmeta` or if it is no zip nestegg reads."""
        if dist.size is None:
            raise RangesRefused
        remote = _RemoteFile(self, dist, dist.size)
        # read and seek only, as distmeta's zip reader does
        metadata = wheel_metadata(cast("BinaryIO", remote), dist.filename)
        logger.info(
            "read the metadata of %s by ranges (%d bytes in %d request%s) from %s",
            dist.filename, remote.fetched, remote.requests, "" if remote.requests == 1 else "s",
            mask_url(dist.url),
        )  # fmt: skip
        return metadata


class _RemoteFile:
    """An upstream file of ``size`` bytes, read (and sought) as an open file: what a read finds in
    no range fetched before is fetched, ``READ_AHEAD`` bytes at least."""

    def __init__(self, ranges: Ranges, dist: DistFile, size: int) -> None:
        self.ranges, self.dist, self.size = ranges, dist, size
        self.position = 0
        self._spans: list[tuple[int, bytes]] = []
        #: ranges asked of the upstream, and their bytes
        self.requests = 0
        self.fetched = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = min(max(base + offset, 0), self.size)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        data = self._bytes(self.position, end)
        self.position = end
        return data

    def expect(self, start: int, size: int) -> None:
        """The reader reads ``size`` bytes from ``start`` next (a member's header and data):
        fetched at once if not held, up to ``MAX_RANGE``."""
        end = min(self.size, start + size)
        if 0 <= start < end and end - start <= MAX_RANGE:
            self._bytes(start, end)

    def _bytes(self, start: int, end: int) -> bytes:
        for at, data in self._spans:
            if at <= start and end <= at + len(data):
                return data[start - at : end - at]
        first = start
        stop = min(self.size, max(end, start + READ_AHEAD))
        if stop == self.size:  # the end of the wheel: its last TAIL bytes at least
            first = max(0, min(start, self.size - TAIL))
        # bytes held from an earlier request that end this read (the end of the central directory,
        # in the tail) are not asked for again
        held = next((span for span in self._spans if first < span[0] < end <= span[0] + len(span[1])), None)
        if held is not None:
            stop = held[0]
        if stop - first > MAX_RANGE:  # distmeta reads 1 MiB at most at a time
            raise RangesRefused
        data = self.ranges.fetch(self.dist, first, stop)
        self.requests += 1
        self.fetched += len(data)
        if held is not None:
            data += held[1]
        self._spans.append((first, data))
        del self._spans[:-4]  # the zip is read forwards, but for one jump to the member
        return data[start - first : end - first]
