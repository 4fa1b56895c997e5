"""A fetcher that counts the upstream's downloads and failures into the nest's counters."""

from __future__ import annotations

from collections.abc import Iterator

from nestegg_core.errors import UpstreamError
from nestegg_core.storage.counters import Counters

from .upstream import Fetched, Fetcher, FileStream, RangeFetcher


class CountingFetcher:
    """A :class:`Fetcher` that counts downloads and failures of the fetcher it wraps."""

    def __init__(self, fetcher: Fetcher, counters: Counters) -> None:
        self.fetcher = fetcher
        self.counters = counters

    def project(
        self, name: str, *, etag: str | None, last_modified: str | None, digest: str | None = None
    ) -> Fetched:
        try:
            return self.fetcher.project(name, etag=etag, last_modified=last_modified, digest=digest)
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

    def read_range(self, url: str, start: int, end: int, total: int) -> bytes | None:
        """See :class:`RangeFetcher`; None also when the fetcher it wraps asks for no ranges."""
        if not isinstance(self.fetcher, RangeFetcher):
            return None
        try:
            return self.fetcher.read_range(url, start, end, total)
        except UpstreamError:
            self.counters.add("upstream_errors")
            raise


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
