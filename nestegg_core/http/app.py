"""The WSGI application: routing, HTTP semantics of the Simple API and of files, errors to statuses."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from packaging.utils import NormalizedName, canonicalize_name

from nestegg_core.config import credentials as auth
from nestegg_core.config.config import Config
from nestegg_core.errors import BodyTooLarge, BuildError, NesteggError, NotFound
from nestegg_core.index.downloads import ClientGone, Download
from nestegg_core.index.repository import Repository
from nestegg_core.simple.clients import profile_from_user_agent
from nestegg_core.simple.models import is_normalized, is_valid_name
from nestegg_core.simple.render import accepts_gzip, negotiate
from nestegg_core.storage import counters as metrics
from nestegg_core.storage.pagefiles import PageFile

from . import uploads

logger = logging.getLogger(__name__)
access_log = logging.getLogger("nestegg_core.access")

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
Headers = list[tuple[str, str]]
Handler = Callable[[Environ, StartResponse], Iterable[bytes]]

_REASONS = {
    200: "OK", 206: "Partial Content", 301: "Moved Permanently", 304: "Not Modified",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 413: "Content Too Large", 416: "Range Not Satisfiable",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 507: "Insufficient Storage",
}  # fmt: skip
# ASCII digits, and few: int() refuses over 4300 digits, and no file is that large anyway
_RANGE = re.compile(r"^bytes=([0-9]{0,30})-([0-9]{0,30})$")
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._+!~=/-]+$")
FILE_CACHE_CONTROL = "max-age=31536000, immutable"
PAGE_CACHE_CONTROL = "max-age=0, must-revalidate"
BLOCK = 256 * 1024
#: the most bytes of body a request other than an upload may send (the CI trigger sends none)
SMALL_BODY = 64 * 1024
_UPLOAD_PATHS = ("/", "/legacy", "/legacy/")
#: rendered pages up to this size are read whole; larger ones are sent a block at a time
_READ_WHOLE = 64 * 1024


def status_line(code: int, reason: str | None = None) -> str:
    if reason:  # one line of visible ASCII, short enough for any client
        reason = " ".join(reason.split()).encode("ascii", "replace").decode("ascii")
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
    return f"{code} {reason or _REASONS.get(code, 'Unknown')}"


class Service(Protocol):
    """Background work of the app (CI polling and runs); must never block serving."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class NesteggApp:
    """Routes requests to the :class:`Repository`; the only place errors become statuses."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        #: POST handler for uploads (``/``, ``/legacy``, ``/legacy/``), set by the uploads module
        self.upload: Handler | None = None
        #: extra GET routes by first path segment (web pages, CI), set by their modules
        self.routes: dict[str, Handler] = {}
        #: extra POST routes by first path segment (the CI trigger), set by their modules
        self.post_routes: dict[str, Handler] = {}
        #: background work (CI polling), started once the server listens and stopped with it
        self.services: list[Service] = []
        #: called before every GET/HEAD; answers the requests it refuses (401), None lets them on
        self.guard: Callable[[Environ, StartResponse], Iterable[bytes] | None] | None = None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except ClientGone:
            raise  # nobody to answer: the server ends the request
        except NesteggError as exc:
            # pip shows the reason phrase of a failed page, not the body: put a build's log path there
            reason = str(exc) if isinstance(exc, BuildError) else None
            return self._error(environ, start_response, exc.status, str(exc), reason)
        except Exception:
            logger.exception("error answering %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return self._error(environ, start_response, 500, "internal error; see the server log")

    def admit(self, environ: Environ) -> uploads.Admission:
        """Whether to read the body of a request whose headers are all in (``environ`` has no
        ``wsgi.input`` yet): for the server to ask before it reads, or spools, a byte of it."""
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        if method == "POST" and path in _UPLOAD_PATHS and isinstance(self.upload, uploads.UploadHandler):
            return self.upload.admit(environ)
        length = str(environ.get("CONTENT_LENGTH") or "0")
        if length.isdigit() and int(length) > SMALL_BODY:
            return uploads.Admission(
                SMALL_BODY,
                refusal=BodyTooLarge(
                    f"a request body of {int(length)} bytes is over the limit of {SMALL_BODY} bytes "
                    f"for {method} {path!r}"
                ),
            )
        return uploads.Admission(SMALL_BODY)

    def start_services(self) -> None:
        """Start the background services (the server calls this once it listens)."""
        for service in self.services:
            service.start()

    def stop_services(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def _route(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = _path_info(environ)
        parts = path.split("/")
        if method == "POST":
            if path in _UPLOAD_PATHS and self.upload is not None:
                return self.upload(environ, start_response)
            post_handler = self.post_routes.get(parts[1] if len(parts) > 1 else "")
            if post_handler is not None:
                return post_handler(environ, start_response)
            return self._error(environ, start_response, 405, "only uploads are accepted by POST")
        if method not in ("GET", "HEAD"):
            return self._error(environ, start_response, 405, f"method {method!r} is not allowed")
        if ".." in parts or "" in parts[1:-1]:
            raise NotFound(f"no such path {path!r}")
        if self.guard is not None:
            refused = self.guard(environ, start_response)
            if refused is not None:
                return refused
        head = parts[1] if len(parts) > 1 else ""
        if head == "simple":
            if len(parts) == 2:  # /simple
                return self._redirect(environ, start_response, "/simple/")
            if len(parts) == 3 and parts[2] == "":
                return self._index(environ, start_response)
            if len(parts) in (3, 4) and (len(parts) == 3 or parts[3] == ""):
                return self._project(environ, start_response, parts[2], trailing=len(parts) == 4)
        elif head == "files" and len(parts) == 4:
            return self._file(environ, start_response, parts[2], parts[3])
        elif head == "health" and len(parts) == 2:
            return self._json(environ, start_response, {"status": "ok"})
        elif head == "metrics" and len(parts) == 2:
            return metrics.answer(environ, start_response, self.repository.counters)
        elif head == "" and len(parts) == 2 and "" not in self.routes:
            return self._home(environ, start_response)
        handler = self.routes.get(head)
        if handler is not None:
            return handler(environ, start_response)
        raise NotFound(f"no such path {path!r}")

    # pages -------------------------------------------------------------------------------

    def _index(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        content_type = negotiate(environ.get("HTTP_ACCEPT"))
        if content_type is None:
            return self._error(environ, start_response, 406, _NOT_ACCEPTABLE)
        # with private_read_auth, the names of private projects are private too
        guard = self.guard
        visible = guard.visible(environ) if isinstance(guard, auth.ReadGuard) else None
        rendered = self.repository.index(content_type, visible=visible)
        return self._page(environ, start_response, content_type, rendered.body, rendered.etag)

    def _project(
        self, environ: Environ, start_response: StartResponse, raw: str, *, trailing: bool
    ) -> Iterable[bytes]:
        if not is_valid_name(raw):
            raise NotFound(f"{raw!r} is not a valid project name")
        name = canonicalize_name(raw)
        if raw != name or not trailing:
            return self._redirect(environ, start_response, f"/simple/{name}/")
        content_type = negotiate(environ.get("HTTP_ACCEPT"))
        if content_type is None:
            return self._error(environ, start_response, 406, _NOT_ACCEPTABLE)
        vary, client = "Accept, Accept-Encoding", None
        if self.repository.config.compatible_only:
            vary += ", User-Agent"
            client = profile_from_user_agent(environ.get("HTTP_USER_AGENT"))
        gzip = accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING"))
        rendered = self.repository.rendered(name, content_type, client, gzip=gzip)
        body = rendered.body if rendered.file is None else rendered.file
        try:
            return self._page(
                environ, start_response, content_type, body, rendered.etag, vary=vary, gzip=rendered.gzip
            )
        except BaseException:
            if rendered.file is not None:
                rendered.file.close()
            raise

    def _page(
        self,
        environ: Environ,
        start_response: StartResponse,
        content_type: str,
        body: bytes | PageFile,
        etag: str,
        *,
        vary: str = "Accept",
        gzip: bool = False,
    ) -> Iterable[bytes]:
        """A page's answer; a body that is a rendered file is closed, or handed to the server.
        A ``gzip`` body is sent with that ``Content-Encoding``."""
        headers = [
            ("Vary", vary),
            ("ETag", etag),
            ("Cache-Control", PAGE_CACHE_CONTROL),
        ]
        if gzip:
            headers.append(("Content-Encoding", "gzip"))
        if _etag_matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
            if isinstance(body, PageFile):
                body.close()
            start_response(status_line(304), headers)
            return []
        media = content_type if content_type.endswith("json") else f"{content_type}; charset=utf-8"
        size = body.size if isinstance(body, PageFile) else len(body)
        headers += [("Content-Type", media), ("Content-Length", str(size))]
        start_response(status_line(200), headers)
        if not isinstance(body, PageFile):
            return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]
        if environ["REQUEST_METHOD"] == "HEAD" or size <= _READ_WHOLE:
            data = b"" if environ["REQUEST_METHOD"] == "HEAD" else body.handle.readall()
            body.close()
            return [data] if data else []
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(body.handle, BLOCK)  # type: ignore[no-any-return]
        return _FileRange(body.handle, body.handle.tell(), body.handle.tell() + size)

    def _home(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = (
            b"<!DOCTYPE html><html><head><title>nestegg</title></head><body>"
            b'<h1>nestegg</h1><p>Use <a href="simple/">simple/</a> as the index URL.</p>'
            b"</body></html>"
        )
        start_response(
            status_line(200),
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    # files -------------------------------------------------------------------------------

    def _file(
        self, environ: Environ, start_response: StartResponse, raw: str, filename: str
    ) -> Iterable[bytes]:
        if not is_normalized(raw) or not is_valid_name(raw):  # the latter bounds the length
            raise NotFound(f"no project {raw!r}")
        name = NormalizedName(raw)
        target, metadata = self.repository.open_any(name, filename)
        content_type = "text/plain; charset=utf-8" if metadata else "application/octet-stream"
        if isinstance(target, Download):
            return self._stream(environ, start_response, target)
        return self._send_file(environ, start_response, target, content_type)

    def _send_file(
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
                ("Last-Modified", _http_date(stat.st_mtime)),
                ("Cache-Control", FILE_CACHE_CONTROL),
            ]
            if _etag_matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
                handle.close()
                start_response(status_line(304), headers)
                return []
            try:
                wanted = _range(environ, size, etag)
            except _Unsatisfiable:
                handle.close()
                return self._unsatisfiable(start_response, headers, size)
            if environ["REQUEST_METHOD"] == "HEAD":
                handle.close()
                start, end = wanted or (0, size)
                self._start_file(start_response, headers, start, end, size, partial=wanted is not None)
                return []
            if wanted is None:
                self._start_file(start_response, headers, 0, size, size, partial=False)
                wrapper = environ.get("wsgi.file_wrapper")
                if wrapper is not None:
                    return wrapper(handle, BLOCK)  # type: ignore[no-any-return]
                return _FileRange(handle, 0, size)
            start, end = wanted
            self._start_file(start_response, headers, start, end, size, partial=True)
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None:
                # sent by the server as a whole file is: waitress from its event loop, without a
                # worker waiting on a client that reads slowly or not at all
                return wrapper(_Slice(handle, start, end), BLOCK)  # type: ignore[no-any-return]
            return _FileRange(handle, start, end)
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

    def _stream(self, environ: Environ, start_response: StartResponse, download: Download) -> Iterable[bytes]:
        # waitress says whether the client is still there: its reader stops waiting once it is not
        gone = environ.get("waitress.client_disconnected")
        download.wait_started(gone=gone)
        size = download.size
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Cache-Control", FILE_CACHE_CONTROL),
        ]
        if size is None:  # the upstream sent no length: no ranges until the file is whole
            start_response(status_line(200), headers)
            if environ["REQUEST_METHOD"] == "HEAD":
                return []
            return self._until_first_byte(environ, start_response, download.read(gone=gone))
        headers.append(("Accept-Ranges", "bytes"))
        try:
            wanted = _range(environ, size, None)
        except _Unsatisfiable:
            return self._unsatisfiable(start_response, headers, size)
        start, end = wanted or (0, size)
        self._start_file(start_response, headers, start, end, size, partial=wanted is not None)
        if environ["REQUEST_METHOD"] == "HEAD":
            return []
        return self._until_first_byte(environ, start_response, download.read(start, end, gone=gone))

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
            yield from self._error(environ, start_response, exc.status, str(exc), exc_info=sys.exc_info())
            return
        if first:
            yield first
            yield from body

    @staticmethod
    def _start_file(
        start_response: StartResponse, headers: Headers, start: int, end: int, size: int, *, partial: bool
    ) -> None:
        headers = [*headers, ("Content-Length", str(end - start))]
        if partial:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        start_response(status_line(206 if partial else 200), headers)

    @staticmethod
    def _unsatisfiable(start_response: StartResponse, headers: Headers, size: int) -> Iterable[bytes]:
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

    # small answers -----------------------------------------------------------------------

    def _redirect(self, environ: Environ, start_response: StartResponse, path: str) -> Iterable[bytes]:
        location = quote(environ.get("SCRIPT_NAME", "").rstrip("/") + path)
        body = f"moved to {location}\n".encode()
        start_response(
            status_line(301),
            [
                ("Location", location),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _json(self, environ: Environ, start_response: StartResponse, data: object) -> Iterable[bytes]:
        body = json.dumps(data).encode()
        start_response(
            status_line(200),
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    @staticmethod
    def _error(
        environ: Environ,
        start_response: StartResponse,
        status: int,
        message: str,
        reason: str | None = None,
        *,
        exc_info: Any = None,
    ) -> Iterable[bytes]:
        body = (message.replace("\n", " ") + "\n").encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        if exc_info is None:
            start_response(status_line(status, reason), headers)
        else:  # replacing the headers of a response whose body has not started
            start_response(status_line(status, reason), headers, exc_info)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


_NOT_ACCEPTABLE = (
    "none of the accepted types is served; ask for application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html or text/html"
)


def _path_info(environ: Environ) -> str:
    # PEP 3333 hands PATH_INFO over as latin-1; undo that to get the UTF-8 the client sent
    raw = environ.get("PATH_INFO", "") or "/"
    try:
        return str(raw.encode("latin-1").decode("utf-8"))
    except UnicodeError:
        raise NotFound("path is not valid UTF-8") from None


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


class _Unsatisfiable(Exception):
    """The range asked for lies wholly past the end of the file (416)."""


def _range(environ: Environ, size: int, etag: str | None) -> tuple[int, int] | None:
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


class _FileRange:
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


def _http_date(timestamp: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(timestamp))


class AccessLog:
    """WSGI middleware that logs one line per request (status, bytes, time)."""

    def __init__(self, app: Handler) -> None:
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
            _log(environ, seen, started)
            return result
        return _Logged(result, environ, seen, started)


class _Logged:
    """Wraps a streamed body so that its request is logged when the server closes it."""

    def __init__(self, result: Iterable[bytes], environ: Environ, seen: list[str], started: float) -> None:
        self.result = result
        self.environ = environ
        self.seen = seen
        self.started = started

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            _log(self.environ, self.seen, self.started)


def _log(env: Environ, seen: list[str], started: float) -> None:
    query = env.get("QUERY_STRING")
    access_log.info(
        '%s "%s %s%s" %s %s %.1fms',
        _loggable(env.get("REMOTE_ADDR", "-")),
        _loggable(env.get("REQUEST_METHOD")),
        _loggable(env.get("PATH_INFO")),
        f"?{_loggable(query)}" if query else "",
        seen[0],
        seen[1],
        (time.perf_counter() - started) * 1000,
    )


# what a client sent, as the access log shows it: printable ASCII, the rest escaped as nginx does,
# so that no request starts a line of its own (%0a) or drives the terminal (\x1b), nor ends the
# quoted request early
_UNLOGGABLE = re.compile(r'[^\x20-\x7e]|["\\]')


def _loggable(value: object) -> str:
    return _UNLOGGABLE.sub(_escaped, str(value))


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return "\\" + char
    code = ord(char)  # PATH_INFO holds the bytes sent, one latin-1 character each
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def create_app(config: Config, *, repository: Repository | None = None) -> Callable[..., Iterable[bytes]]:
    """The WSGI application of a mirror for ``config``; nothing global, so many can coexist."""
    repository = repository or Repository(config)
    app = NesteggApp(repository)
    app.services.append(repository.refresher)
    uploads.install(app, config)
    auth.install(app, config)
    if config.source_builds:
        # imported only when needed: a mirror without source builds never loads them (nor git, CI
        # and their sqlite run store), which keeps a serving process smaller
        from nestegg_core.builds import ci  # noqa: PLC0415
        from nestegg_core.builds import sources as builds  # noqa: PLC0415

        builds.install(repository, config)
        ci.install(app, config)
    ui = _WebUI(app, config)
    app.routes[_WEB_PREFIX] = ui
    app.routes[""] = ui.root
    return AccessLog(metrics.CountBytes(app, repository.counters))


_WEB_PREFIX = "ui"  # web.PREFIX, without importing the module


class _WebUI:
    """The web interface (``nestegg_core.ui.web``), imported on its first request.

    A mirror that only installers talk to never loads its pages, templates and run history.
    """

    def __init__(self, app: NesteggApp, config: Config) -> None:
        self._app = app
        self._config = config
        self._ui: Handler | None = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._ui is None:
                from nestegg_core.ui import web  # noqa: PLC0415 - see the class docstring

                self._ui = web.WebUI(self._app, self._config)
            return self._ui

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self._load()(environ, start_response)  # type: ignore[no-any-return]

    def root(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """``/``: to the project list."""
        return self._load().root(environ, start_response)  # type: ignore[no-any-return]
