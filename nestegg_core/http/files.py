"""Files: cached ones sent whole or by byte range (or handed to a front server), downloads as
they stream; the server's ``wsgi.file_wrapper`` where it has one."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from packaging.utils import NormalizedName

from nestegg_core.errors import NesteggError, NotFound, no_files_left, out_of_files
from nestegg_core.index.ahead import PageRequest
from nestegg_core.index.downloads import Download
from nestegg_core.index.later import Closing
from nestegg_core.index.repository import Repository
from nestegg_core.simple.clients import answered_before_writing, downloads_after_metadata, marker_environment
from nestegg_core.simple.models import DistFile, is_normalized, is_valid_name

from .answers import etag_matches, failed, http_date, status_line
from .types import Environ, Headers, StartResponse

# ASCII digits, and few: int() refuses over 4300 digits, and no file is that large anyway
_RANGE = re.compile(r"^bytes=([0-9]{0,30})-([0-9]{0,30})$")

_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._+!~=/-]+$")

FILE_CACHE_CONTROL = "max-age=31536000, immutable"

BLOCK = 256 * 1024
#: User-Agents whose way of asking for pages is kept (a machine's installers: a few)
_AGENTS = 16


class Files:
    """``/files/<project>/<filename>`` of a repository."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        #: how each User-Agent last asked for a page: the pages made ahead for it are made so
        self._requests: OrderedDict[str | None, PageRequest] = OrderedDict()
        self._requests_lock = threading.Lock()

    def page_asked(self, agent: str | None, request: PageRequest) -> None:
        """Note how the client of ``agent`` asks for pages (see ``Repository.ahead_of``)."""
        with self._requests_lock:
            self._requests[agent] = request
            self._requests.move_to_end(agent)  # the least recently asking go first
            while len(self._requests) > _AGENTS:
                self._requests.popitem(last=False)

    def __call__(
        self, environ: Environ, start_response: StartResponse, raw: str, filename: str
    ) -> Iterable[bytes]:
        if not is_normalized(raw) or not is_valid_name(raw):  # the latter bounds the length
            raise NotFound(f"no project {raw!r}")
        name = NormalizedName(raw)
        # a HEAD starts no download: it is answered from the page
        head = environ["REQUEST_METHOD"] == "HEAD"
        if not head and environ.get("HTTP_RANGE") and not filename.endswith(".metadata"):
            ranged = self._range(environ, start_response, name, filename)
            if ranged is not None:
                return ranged
        target, metadata = self.repository.open_any(name, filename, fetch=not head)
        agent = environ.get("HTTP_USER_AGENT")
        wheel = filename.removesuffix(".metadata")
        if not head and downloads_after_metadata(agent):
            self.repository.file_taken(name, wheel, agent)
            self.repository.passed_over(name, wheel)
            if metadata:
                self.repository.fetch_ahead(name, wheel)
        if not head and (metadata or isinstance(target, Download)) and wheel.endswith(".whl"):
            # the client asks next for the pages of the projects the wheel requires
            self.repository.ahead_of(
                name,
                wheel,
                environment=marker_environment(agent),
                request=self._requests.get(agent),
                metadata=target if metadata and isinstance(target, Path) else None,
            )
        content_type = "text/plain; charset=utf-8" if metadata else "application/octet-stream"
        if isinstance(target, DistFile):
            return self._describe(environ, start_response, target)
        if isinstance(target, Download):
            try:
                body = self.stream(environ, start_response, target)
            except BaseException:
                target.leave()
                raise
            if isinstance(body, list):
                target.leave()  # answered
                return body
            # the reader leaves the download when the server closes it: one nobody reads is abandoned
            return Closing(body, target.leave)
        return self.send_file(environ, start_response, target, content_type)

    def send_file(
        self, environ: Environ, start_response: StartResponse, path: Path, content_type: str
    ) -> Iterable[bytes]:
        if self.repository.config.sendfile is not None:
            handed = self._hand_over(start_response, path, content_type)
            if handed is not None:
                return handed
        try:
            handle = self.repository.open_served(path)  # handed to the server, which closes it
        except FileNotFoundError:
            raise NotFound(f"file {path.name!r} was removed") from None
        try:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            etag = f'"{int(stat.st_mtime_ns):x}-{size:x}"'
            headers = [
                ("Content-Type", content_type),
                ("Accept-Ranges", "bytes"),
                ("ETag", etag),
                ("Last-Modified", http_date(stat.st_mtime)),
                ("Cache-Control", FILE_CACHE_CONTROL),
            ]
            if etag_matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
                handle.close()
                start_response(status_line(304), headers)
                return []
            try:
                wanted = parse_range(environ, size, etag)
            except _Unsatisfiable:
                handle.close()
                return unsatisfiable(start_response, headers, size)
            if environ["REQUEST_METHOD"] == "HEAD":
                handle.close()
                start, end = wanted or (0, size)
                start_file(start_response, headers, start, end, size, partial=wanted is not None)
                return []
            if wanted is None:
                start_file(start_response, headers, 0, size, size, partial=False)
                wrapper = environ.get("wsgi.file_wrapper")
                if wrapper is not None:
                    return wrapper(handle, BLOCK)  # type: ignore[no-any-return]
                return FileRange(handle, 0, size)
            start, end = wanted
            start_file(start_response, headers, start, end, size, partial=True)
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None:
                # sent by the server as a whole file is: waitress from its event loop, without a
                # worker waiting on a client that reads slowly or not at all
                return wrapper(_Slice(handle, start, end), BLOCK)  # type: ignore[no-any-return]
            return FileRange(handle, start, end)
        except BaseException:
            handle.close()
            raise

    def _hand_over(
        self, start_response: StartResponse, path: Path, content_type: str
    ) -> Iterable[bytes] | None:
        """Let the front server send a complete file (config ``sendfile``); None: send it ourselves.

        The front server then answers conditional and range requests itself, from the file.
        """
        config = self.repository.config
        try:
            with self.repository.open_served(path) as handle:  # never a link in the nest
                size = os.fstat(handle.fileno()).st_size
            absolute = path.resolve()
            relative = absolute.relative_to(config.nestegg_dir.resolve()).as_posix()
        except FileNotFoundError:
            raise NotFound(f"file {path.name!r} was removed") from None
        except ValueError:
            return None  # not under the nest, so not under the front server's alias either
        if config.sendfile == "x-sendfile":
            header = ("X-Sendfile", str(absolute))
        else:
            header = ("X-Accel-Redirect", config.sendfile_prefix + relative)
        # the servers differ in whether they unescape the value: send only what needs no escaping
        if not _PLAIN_PATH.match(header[1]):
            return None
        self.repository.counters.add("bytes_offloaded", size)
        start_response(
            status_line(200),
            [header, ("Content-Type", content_type), ("Cache-Control", FILE_CACHE_CONTROL),
             ("Content-Length", "0")],
        )  # fmt: skip
        return []

    def _range(
        self, environ: Environ, start_response: StartResponse, name: NormalizedName, filename: str
    ) -> Iterable[bytes] | None:
        """The answer to a range of a file: from the cache, or for a file not cached, from its
        download if it has the bytes, else from the upstream; None if it is to wait for the
        whole file (see ``Repository.read_range``)."""
        target = self.repository.open_file(name, filename, fetch=False)
        if isinstance(target, Path):
            return self.send_file(environ, start_response, target, "application/octet-stream")
        if not isinstance(target, DistFile) or target.size is None:
            return None
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Cache-Control", FILE_CACHE_CONTROL),
            ("Accept-Ranges", "bytes"),
        ]
        try:
            wanted = parse_range(environ, target.size, None)
        except _Unsatisfiable:
            return unsatisfiable(start_response, headers, target.size)
        if wanted is None:
            return None
        data = self.repository.read_range(name, target, *wanted)
        if data is None:
            return None
        start_file(start_response, headers, *wanted, target.size, partial=True)
        return [data]

    def stream(self, environ: Environ, start_response: StartResponse, download: Download) -> Iterable[bytes]:
        # waitress says whether the client is still there: its reader stops waiting once it is not
        gone = environ.get("waitress.client_disconnected")
        download.wait_started(gone=gone)
        if download.size is None and environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
            # HTTP/1.0 has no chunks: a body of unknown length ends with the connection, so a
            # response broken off would look whole to the client. It gets the file once verified.
            path = download.wait_done(gone=gone)
            return self.send_file(environ, start_response, path, "application/octet-stream")
        wanted = self._start_download(environ, start_response, download.size)
        if isinstance(wanted, list):
            return wanted
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        # an installer has the last byte once the file is checked, before it is durable in the cache
        early = answered_before_writing(environ.get("HTTP_USER_AGENT"))
        body = download.read(*wanted, gone=gone, early=early)
        return self._until_first_byte(environ, start_response, body)

    def _describe(self, environ: Environ, start_response: StartResponse, dist: DistFile) -> Iterable[bytes]:
        """The answer to a HEAD of a file not cached, from its page: no download is started."""
        answer = self._start_download(environ, start_response, dist.size)
        return answer if isinstance(answer, list) else []

    def _start_download(
        self, environ: Environ, start_response: StartResponse, size: int | None
    ) -> tuple[int, int | None] | list[bytes]:
        """Start the answer of a file being downloaded whose size is ``size``: the bytes to send
        (start, end), or a whole answer (416)."""
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Cache-Control", FILE_CACHE_CONTROL),
        ]
        if size is None:  # the upstream sent no length: no ranges until the file is whole
            start_response(status_line(200), headers)
            return (0, None)
        headers.append(("Accept-Ranges", "bytes"))
        try:
            wanted = parse_range(environ, size, None)
        except _Unsatisfiable:
            return unsatisfiable(start_response, headers, size)
        start, end = wanted or (0, size)
        start_file(start_response, headers, start, end, size, partial=wanted is not None)
        return (start, end)

    def _until_first_byte(
        self, environ: Environ, start_response: StartResponse, body: Iterator[bytes]
    ) -> Iterator[bytes]:
        """``body``; a download that fails before its first byte is answered with the error's status.

        Until a byte is written the server may still replace status and headers (PEP 3333's
        ``exc_info``); without this waitress answers its own 500 when the upstream breaks off
        early. Once bytes flow, an error breaks the response off instead.
        """
        try:
            first = next(body, b"")
        except NesteggError as exc:
            yield from failed(environ, start_response, exc, exc_info=sys.exc_info())
            return
        except OSError as exc:
            if not out_of_files(exc):
                raise
            yield from failed(environ, start_response, no_files_left("answer"), exc_info=sys.exc_info())
            return
        if first:
            yield first
            yield from body


def start_file(
    start_response: StartResponse, headers: Headers, start: int, end: int, size: int, *, partial: bool
) -> None:
    headers = [*headers, ("Content-Length", str(end - start))]
    if partial:
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
    start_response(status_line(206 if partial else 200), headers)


def unsatisfiable(start_response: StartResponse, headers: Headers, size: int) -> list[bytes]:
    body = b"range not satisfiable\n"
    start_response(
        status_line(416),
        [
            *[h for h in headers if h[0] != "Content-Type"],
            ("Content-Range", f"bytes */{size}"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


class _Unsatisfiable(Exception):
    """The range asked for lies wholly past the end of the file (416)."""


def parse_range(environ: Environ, size: int, etag: str | None) -> tuple[int, int] | None:
    """The one byte range asked for as (start, end-exclusive), None for the whole file.

    Several ranges, or a header we do not understand, are answered with the whole file, which
    RFC 9110 allows; a range wholly past the end raises :class:`_Unsatisfiable` (416).
    """
    header = environ.get("HTTP_RANGE")
    if not header:
        return None
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range and if_range != etag:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        length = int(last)
        if length == 0:
            raise _Unsatisfiable
        return (max(size - length, 0), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return (start, end)


class FileRange:
    """Bytes ``start`` to ``end`` of an open file, a block at a time; closing it closes the file,
    also when the server closes the response before reading any of it (a generator would not)."""

    def __init__(self, handle: Any, start: int, end: int) -> None:
        self.handle, self.start, self.end = handle, start, end

    def __iter__(self) -> Iterator[bytes]:
        try:
            self.handle.seek(self.start)
            remaining = self.end - self.start
            while remaining > 0:
                chunk = self.handle.read(min(BLOCK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            self.handle.close()

    def close(self) -> None:
        self.handle.close()


class _Slice:
    """Bytes ``start`` to ``end`` of an open file as a file of their own, for ``wsgi.file_wrapper``.

    Without a ``fileno()``: a server that would send the file itself (sendfile) reads it instead,
    and none can send past ``end``, whether or not it heeds Content-Length.
    """

    def __init__(self, handle: Any, start: int, end: int) -> None:
        self.handle, self.start, self.end = handle, start, end
        self.position = start

    def read(self, size: int = -1) -> bytes:
        left = self.end - self.position
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self.handle.seek(self.position)
        data: bytes = self.handle.read(size)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: self.start, os.SEEK_CUR: self.position, os.SEEK_END: self.end}[whence]
        self.position = min(max(base + offset, self.start), self.end)
        return self.position - self.start

    def tell(self) -> int:
        return self.position - self.start

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.handle.close()
