"""Small answers of the WSGI layer: status lines, errors, redirects, JSON, validators."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

from nestegg_core.errors import MAX_MESSAGE, NesteggError, Unavailable, cut

from .types import Environ, StartResponse

__all__ = [
    "MOUNT",
    "app_path",
    "error",
    "etag_matches",
    "http_date",
    "json_answer",
    "location",
    "redirect",
    "status_line",
]

#: the environ key of the path an app is mounted at below the mirror's root (``/upstreams/<key>``)
MOUNT = "nestegg.mount"
#: what a query keeps as it came in a Location: its escapes and delimiters (anything else is escaped)
_QUERY_SAFE = "=&;%+/?:@,!$'()*~"
#: what a path keeps as it came: its escapes, sub-delimiters and separators (RFC 3986, 3.3)
_PATH_SAFE = "/%!$&'()*+,;=:@~"

_REASONS = {
    200: "OK", 206: "Partial Content", 301: "Moved Permanently", 304: "Not Modified",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 410: "Gone", 413: "Content Too Large", 416: "Range Not Satisfiable",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 507: "Insufficient Storage", 508: "Loop Detected",
}  # fmt: skip


def status_line(code: int, reason: str | None = None) -> str:
    if reason:  # one line of visible ASCII, short enough for any client
        reason = " ".join(reason.split()).encode("ascii", "replace").decode("ascii")
        reason = cut(reason, 300)
    return f"{code} {reason or _REASONS.get(code, 'Unknown')}"


def app_path(environ: Environ, public_url: str | None) -> str:
    """The URL path of the app's root as the client asked for it, with no slash at its end: that
    of ``public_url`` (the mirror's root behind a proxy) with the app's mount, else SCRIPT_NAME
    (escaped as the bytes it is: PEP 3333 gives the path the client sent read as latin-1)."""
    if public_url is not None:
        # escaped as a URL's path, what escapes it has kept: a Location header is latin-1 (a
        # public_url at /日本 made every redirect a 500)
        return quote(urlsplit(public_url).path.rstrip("/"), safe=_PATH_SAFE) + str(environ.get(MOUNT, ""))
    return quote(str(environ.get("SCRIPT_NAME", "")).rstrip("/").encode("latin-1", "replace"))


def location(environ: Environ, path: str, public_url: str | None) -> str:
    """Where a redirect to ``path`` of the app sends the client: under the app's root as it reached
    it (see :func:`app_path`), with the request's query."""
    query = str(environ.get("QUERY_STRING", ""))
    return (
        app_path(environ, public_url) + quote(path) + (f"?{quote(query, safe=_QUERY_SAFE)}" if query else "")
    )


def redirect(
    environ: Environ, start_response: StartResponse, path: str, *, public_url: str | None
) -> Iterable[bytes]:
    """A 301 to ``path`` of the app (see :func:`location`)."""
    moved_to = location(environ, path, public_url)
    body = f"moved to {moved_to}\n".encode()
    start_response(
        status_line(301),
        [
            ("Location", moved_to),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def json_answer(environ: Environ, start_response: StartResponse, data: object) -> Iterable[bytes]:
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


def error(
    environ: Environ,
    start_response: StartResponse,
    status: int,
    message: str,
    reason: str | None = None,
    *,
    exc_info: Any = None,
    retry_after: int | None = None,
    allow: str | None = None,
) -> Iterable[bytes]:
    """A short plain-text answer of ``status``; a 503's ``Retry-After``, a 405's ``Allow``."""
    body = (cut(message.replace("\n", " "), MAX_MESSAGE) + "\n").encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),  # what a client sent, echoed, is never run as HTML
    ]
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    if allow is not None:
        headers.append(("Allow", allow))
    if exc_info is None:
        start_response(status_line(status, reason), headers)
    else:  # replacing the headers of a response whose body has not started
        start_response(status_line(status, reason), headers, exc_info)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def failed(
    environ: Environ, start_response: StartResponse, exc: NesteggError, *, exc_info: Any = None
) -> Iterable[bytes]:
    """The answer of an error of ours: its status, its message, a Retry-After for a 503."""
    # pip shows the reason phrase of a failed page, not the body: a build's log path, an outage
    reason = str(exc) if exc.in_reason else None
    retry = exc.retry_after if isinstance(exc, Unavailable) else None
    return error(environ, start_response, exc.status, str(exc), reason, retry_after=retry, exc_info=exc_info)


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def http_date(timestamp: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(timestamp))
