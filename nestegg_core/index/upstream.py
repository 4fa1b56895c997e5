"""The client of the upstream index: project pages with revalidation, and file downloads."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import select
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit

import requests
import urllib3

from nestegg_core._version import __version__
from nestegg_core.config.config import DEFAULT_CONNECT_TIMEOUT, MAX_PAGE_SIZE, PAGE_DEADLINE
from nestegg_core.config.sizes import format_size
from nestegg_core.errors import (
    CONNECTION_FAILED,
    NOT_RESOLVED,
    REFUSED,
    TIMED_OUT,
    NesteggError,
    NotCached,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    no_files_left,
    out_of_files,
    unreachable,
)
from nestegg_core.simple.models import ProjectPage
from nestegg_core.simple.parse import PageTooLarge, parse_project_stream
from nestegg_core.urls import mask_url, without_credentials
from nestegg_core.waits import blocking

from .logins import keyring_login, known_credentials

if TYPE_CHECKING:  # the stubs name what a session merges from the environment
    from requests.sessions import _Settings

logger = logging.getLogger(__name__)

ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
CHUNK = 256 * 1024
#: a file's body is handed on in pieces of up to ``CHUNK`` joined from the reads that find their
#: bytes received within this many seconds: one read of a TLS socket gives one record (16 KiB),
#: and each piece costs the download a write, a hash update and a wake-up of its readers, each of
#: them a send (a cold 13.6 MB wheel from a fast upstream reached its reader in 119 ms, 83 ms
#: gathered; 38 ms direct)
GATHER = 0.002
#: decoded bytes of a page (about 700 files) past which a client's page is parsed on only while
#: no other is: uv asks for every page at once, and each page's model grows as it is parsed
#: (about 650 bytes a file), so that a cold uv install held a dozen large ones at a time
LARGE_PAGE_BYTES = 256 * 1024
#: seconds such a page waits for another to be parsed before it goes on beside it: one that drips
#: from a slow upstream holds the others back no longer than this
LARGE_PAGE_WAIT = 2.0
#: the pieces in which a project page is read and parsed
PAGE_CHUNK = 64 * 1024
#: the most of a page read before its digest is known (``digest=``) that is held in memory; the
#: rest waits in a temporary file, so that a page of megabytes is not held whole
_SPOOL_IN_MEMORY = 1024 * 1024
#: the most of an answer without a page (an error page) read to keep its connection
_DRAIN_LIMIT = 1024 * 1024
#: what reading an answer's body can raise (requests wraps most of urllib3's)
_READ_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)

#: a page may list a file for every this many bytes of max_page_size, and hold no value (a file
#: entry, the versions, a tag) over a this-th of it: a page's model costs far more than its text
#: when it is made of tiny entries (an HTML link of 15 bytes is a DistFile of hundreds)
_BYTES_PER_FILE = 256
_VALUE_SHARE = 64
#: a Content-Length of more digits is no file's (an exabyte has 19), and no int() of it is made
_MAX_LENGTH_DIGITS = 18


#: what nestegg names itself in the Via header of every upstream request (RFC 9110, 7.6.3),
#: followed by a token random to each mirror (two in one process, as a mirror and the index it
#: mirrors in tests, are two): a request that arrives with the mirror's own token came round a
#: loop (a file URL pointing back at the mirror, or at a mirror of it), and one with more than
#: ``MAX_HOPS`` nestegg tokens went round a loop of mirrors whose tokens changed
VIA_PREFIX = "nestegg-"
MAX_HOPS = 8
#: the nestegg hops of the request being answered, passed on in the requests made for it
_hops: ContextVar[tuple[str, ...]] = ContextVar("nestegg_hops", default=())
#: seconds the upstream has to start answering for a page the mirror holds (if less than its
#: ``timeout``): past them the held page is served stale, so a hanging network costs a run this
#: once, after which the upstream's circuit answers at once (``circuit``)
REVALIDATE_TIMEOUT = 5.0
#: the page being fetched is one the mirror holds (see :func:`holding`)
_holding: ContextVar[bool] = ContextVar("nestegg_holding", default=False)
#: the requests being made are for work no client waits on (see :func:`in_background`)
_background: ContextVar[bool] = ContextVar("nestegg_background", default=False)
#: called between the pieces of a page read in the background (see :func:`in_background`)
_pause: ContextVar[Callable[[], None] | None] = ContextVar("nestegg_pause", default=None)
_PORTS = {"http": 80, "https": 443}
#: origins whose environment settings a session keeps (see _Session)
_MAX_ORIGINS = 64


def new_via_token() -> str:
    """A mirror's name in Via headers, random."""
    return VIA_PREFIX + secrets.token_hex(8)


def nestegg_hops(via: str | None) -> tuple[str, ...]:
    """The nestegg tokens of a Via header, in order (the received-by of each entry that has one)."""
    if not via:
        return ()
    hops = []
    for entry in via.split(","):
        fields = entry.split(None, 2)
        if len(fields) >= 2 and fields[1].startswith(VIA_PREFIX):
            hops.append(fields[1][:64])
    return tuple(hops)


def loop_in(via: str | None, token: str) -> str | None:
    """Why a request whose Via header is ``via`` came round a loop to the mirror whose token is
    ``token``, or None if it did not."""
    hops = nestegg_hops(via)
    if token in hops:
        return f"this request came round a loop: its Via header names this server ({token})"
    if len(hops) > MAX_HOPS:
        return f"this request passed more than {MAX_HOPS} nestegg mirrors (its Via header): a loop of mirrors"
    return None


@contextlib.contextmanager
def hops_of(via: str | None) -> Iterator[None]:
    """While it lasts, the upstream requests of this thread (and of the downloads it starts) pass
    on the nestegg hops of ``via``, the Via header of the request being answered."""
    token = _hops.set(nestegg_hops(via)[:MAX_HOPS])
    try:
        yield
    finally:
        _hops.reset(token)


@contextlib.contextmanager
def in_background(pause: Callable[[], None] | None = None) -> Iterator[None]:
    """While it lasts, this thread's upstream requests go through connections of their own (a
    download started ahead of its client): a client's next request then finds the connection it
    would have taken idle, and waits for no new one (three round trips with TLS). ``pause`` is
    called between the pieces of each page read, as they come (``waits.give_way``)."""
    token = _background.set(True)
    paused = _pause.set(pause)
    try:
        yield
    finally:
        _pause.reset(paused)
        _background.reset(token)


def pause_in_background() -> None:
    """Between two steps of work in the background: the pause :func:`in_background` was given."""
    given = _pause.get()
    if given is not None:
        given()


def background() -> bool:
    """Whether this thread works for no client now (within :func:`in_background`)."""
    return _background.get()


@contextlib.contextmanager
def holding() -> Iterator[None]:
    """While it lasts, the pages this thread fetches are pages the mirror holds and can serve
    stale: the upstream has ``REVALIDATE_TIMEOUT`` seconds to answer each read."""
    token = _holding.set(True)
    try:
        yield
    finally:
        _holding.reset(token)


def _via(token: str) -> str:
    return ", ".join(f"1.1 {hop}" for hop in (*_hops.get(), token))


def _internal(address: str) -> bool:
    """Whether an IP address is not one of the public internet's: loopback, private, link-local,
    unspecified (``0.0.0.0`` reaches this host), shared or reserved."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


def _literal_address(host: str) -> str | None:
    """The address a URL's host names without a lookup (an IP literal in any form the resolver
    takes, such as ``127.1`` or ``2130706433``, or a ``localhost`` name), else None."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "127.0.0.1"
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host.partition("%")[0]))
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def _pieces(
    raw: urllib3.BaseHTTPResponse, size: int, *, decode: bool, gather: float = 0.0
) -> Iterator[bytes]:
    """An answer's body as it arrives: each piece is what one read of the socket gave (at most
    ``size`` bytes, decoded if ``decode``), so that its reader sees it at once and can tell a body
    that drips from one that comes. (``stream()`` waits for ``size`` bytes, however slowly they come.)

    With ``gather``, a piece also takes the reads that find their bytes already received
    (:func:`_at_hand`) within that many seconds of its first, up to ``size`` bytes: a fast body
    comes in fewer, larger pieces, and no byte waits in a piece for the upstream's next ones.
    """
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 before 2.2
        yield from raw.stream(size, decode_content=decode)
        return
    while piece := read1(size, decode_content=decode):
        if gather and len(piece) < size:
            parts, held, until = [piece], len(piece), time.monotonic() + gather
            while held < size and time.monotonic() < until and _at_hand(raw):
                more = read1(size - held, decode_content=decode)
                if not more:
                    break  # the end: the next read says so again
                parts.append(more)
                held += len(more)
            piece = b"".join(parts)
        yield piece


def _at_hand(raw: urllib3.BaseHTTPResponse) -> bool:
    """Whether the next read of ``raw`` finds bytes already received: decrypted and not yet read,
    or on its socket (where a TLS record may still lack its end: that read waits for it, as any
    read would). False when that cannot be told (no socket, no ``poll``)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    poll = getattr(select, "poll", None)
    if sock is None or poll is None:
        return False
    pending = getattr(sock, "pending", None)  # an SSLSocket's
    if pending is not None and pending():
        return True
    try:
        watch = poll()  # not select(): a descriptor past 1023 is fine
        watch.register(sock, select.POLLIN)
        return bool(watch.poll(0))
    except (OSError, ValueError):  # closed meanwhile
        return False


def page_digest(content_type: str, base_url: str) -> hashlib._Hash:
    """The digest a page's body is added to (``Fetched.digest``): a page read by another release
    of nestegg, or of another type or URL, is another page, whatever its bytes."""
    return hashlib.sha256(f"nestegg {__version__}\n{content_type}\n{base_url}\n".encode())


def _spooled(pieces: Iterator[bytes], url: str) -> tempfile.SpooledTemporaryFile[bytes]:
    """``pieces`` written to a temporary file, in memory up to ``_SPOOL_IN_MEMORY``, read from its
    start. A file that cannot be written is an :class:`UpstreamError` that says where, not a
    failure to read the upstream."""
    # returned open: the caller closes it
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    try:
        for piece in pieces:
            try:
                spool.write(piece)
            except OSError as exc:
                raise UpstreamError(
                    f"cannot hold upstream page {mask_url(url)} in a temporary file in "
                    f"{tempfile.gettempdir()} ({exc.strerror or exc}); free space there or set TMPDIR"
                ) from None
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _hashed(pieces: Iterator[bytes], digest: hashlib._Hash) -> Iterator[bytes]:
    for piece in pieces:
        digest.update(piece)
        yield piece


@dataclass(frozen=True, kw_only=True)
class Fetched:
    """An upstream answer for a project page: a new page, or ``page=None`` for 304 Not Modified."""

    page: ProjectPage | None
    etag: str | None = None
    last_modified: str | None = None
    #: what the page was read from (the body, its content type and base URL, the reader's
    #: release), as a hex digest: the same digest, the same page (``page_digest``); None if unknown
    digest: str | None = None


class FileStream(Protocol):
    """An open upstream file download."""

    size: int | None

    def chunks(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Fetcher(Protocol):
    """The seam between the mirror and the network; tests and the offline mode swap it."""

    def project(
        self, name: str, *, etag: str | None, last_modified: str | None, digest: str | None = None
    ) -> Fetched:
        """The page of ``name``, asked with the validators held; ``page=None`` when the upstream
        says it is the one held: a 304, or, with ``digest`` (what the page held was read from,
        ``Fetched.digest``), the same validators and a body of that digest, which is not parsed."""
        ...

    def open(self, url: str) -> FileStream: ...


@runtime_checkable
class Prober(Protocol):
    """A fetcher that can tell whether a host answers, whatever it answers."""

    def answers(self, url: str) -> None:
        """Returns once ``url`` got an HTTP answer of any status (a redirect not followed: its
        target may be a host that is down while this one is up); :class:`UpstreamError` if none."""
        ...


@runtime_checkable
class RangeFetcher(Protocol):
    """A fetcher that can also ask for a byte range of a file (a fetcher without it never does)."""

    def read_range(self, url: str, start: int, end: int, total: int) -> bytes | None:
        """Bytes ``start`` to ``end`` (exclusive) of the file at ``url`` of ``total`` bytes, as the
        upstream's 206 gave them after its Content-Range was checked; None if the upstream
        answered with the whole file (it does not serve ranges)."""
        ...


#: a Content-Range of one satisfied range (RFC 9110, 14.4), in ASCII digits
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})")


def content_length(value: str | None, url: str) -> int | None:
    """The length an answer's ``Content-Length`` field gives (None without one): ASCII digits, or
    the same number repeated in a list (RFC 9110, 8.6). Any other value, or one longer than any
    file, is an :class:`UpstreamError`: such an answer cannot be framed, nor its size checked."""
    if value is None:
        return None
    numbers = {part.strip(" \t") for part in value.split(",")}
    number = numbers.pop() if len(numbers) == 1 else ""
    if not (number.isascii() and number.isdigit()):  # "²".isdigit() too, and int() refuses it
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise UpstreamError(f"upstream answered {mask_url(url)} with an invalid Content-Length {shown!r}")
    if len(number.lstrip("0")) > _MAX_LENGTH_DIGITS:
        raise UpstreamError(
            f"upstream answered {mask_url(url)} with a Content-Length of {len(number)} digits, "
            "larger than any file"
        )
    return int(number)


class _ResponseStream:
    def __init__(self, response: requests.Response, url: str, timeout: float) -> None:
        self._response = response
        self._url = url
        self._timeout = timeout
        try:
            self.size = content_length(response.headers.get("Content-Length"), url)
        except UpstreamError:
            response.close()
            raise

    def chunks(self) -> Iterator[bytes]:
        try:
            # decode_content=False: a file is stored byte for byte as the index hashed it
            yield from _pieces(self._response.raw, CHUNK, decode=False, gather=GATHER)
        except urllib3.exceptions.ReadTimeoutError:
            raise UpstreamTimeout(
                f"download of {mask_url(self._url)} stalled for {self._timeout:g}s"
            ) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise UpstreamError(f"download of {mask_url(self._url)} broke off: {exc}") from None

    def close(self) -> None:
        self._response.close()


def _without_redirect_body(response: requests.Response, **_: object) -> requests.Response:
    """A redirect's connection closed unread: requests reads a redirect's body whole before it
    follows it (``resolve_redirects``), however long it is, and at whatever pace it comes."""
    if response.is_redirect:
        response.close()
    return response


class _NoAuth(requests.auth.AuthBase):
    """No credentials, said so: requests reads none from .netrc for the request."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


_NO_AUTH = _NoAuth()


class _Session(requests.Session):
    """A session that never reads ``.netrc`` for the host a redirect leads to: requests does,
    after it took the index's ``Authorization`` off a redirect to another host. It reads the
    environment's proxies and CA bundle once for each origin, not for every request."""

    def __init__(self, environment: dict[tuple[str, str], _Settings] | None = None) -> None:
        super().__init__()
        #: what the environment gave for the requests to an origin (scheme and netloc, as requests
        #: matches NO_PROXY), shared by the sessions of a fetcher (a download's thread is new)
        self._environment: dict[tuple[str, str], _Settings] = {} if environment is None else environment

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        # requests goes through the whole environment twice for each request's proxies (0.1 ms,
        # an eighth of a request's time here); a server's environment is the one it started with,
        # but macOS's and Windows' own proxy settings, which requests reads too, may change
        if (
            proxies
            or verify is not None
            or cert is not None
            or not isinstance(url, str)
            or sys.platform in ("darwin", "win32")
        ):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        origin = urlsplit(url)[:2]
        found = self._environment.get(origin)
        if found is None:
            found = super().merge_environment_settings(url, {}, None, None, None)
            if len(self._environment) >= _MAX_ORIGINS:  # redirects to ever new hosts
                self._environment.clear()
            self._environment[origin] = found
        settings: _Settings = {
            "proxies": dict(found["proxies"]),  # requests may change the one it is given
            "stream": stream,
            "verify": found["verify"],
            "cert": found["cert"],
        }
        return settings

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        url = prepared_request.url or ""
        previous = response.request.url or ""
        if "Authorization" in prepared_request.headers and self.should_strip_auth(previous, url):  # type: ignore[no-untyped-call]
            del prepared_request.headers["Authorization"]


def _origin(url: str) -> tuple[str, str, int]:
    """A URL's scheme, host and port (the default one if it names none)."""
    parts = urlsplit(url)
    return (parts.scheme, parts.hostname or "", parts.port or _PORTS.get(parts.scheme, 0))


#: TLS contexts with a CA bundle loaded, by the bundle's path and what its stat says
_CONTEXTS: dict[tuple[str, int, int, int], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()
#: the attribute of such a context that gives its bundle's path
_BUNDLE = "nestegg_bundle"


def bundle_context(path: str) -> ssl.SSLContext | None:
    """A TLS context that verifies with the CA bundle file at ``path``, loaded once for as long as
    the file is the same (its inode, size and time); None if it cannot be read as one (requests
    then says why, as it would have)."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    key = (path, found.st_ino, found.st_size, found.st_mtime_ns)
    with _CONTEXTS_LOCK:
        context = _CONTEXTS.get(key)
        if context is None:
            context = urllib3.util.create_urllib3_context()
            try:
                context.load_verify_locations(cafile=path)
            except (OSError, ValueError, ssl.SSLError):
                return None
            setattr(context, _BUNDLE, path)
            if len(_CONTEXTS) >= 8:  # a bundle rewritten again and again keeps only the last few
                _CONTEXTS.pop(next(iter(_CONTEXTS)))
            _CONTEXTS[key] = context
        return context


class _LateHeads:
    """The answers whose head is awaited, and one thread that cuts off those past their deadline
    while there are any: a timer thread a request was a thread started for each, and thousands
    outlived their requests on a loaded machine."""

    #: seconds between two looks (a head is cut off at most this late)
    PERIOD = 0.25

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._awaited: dict[int, tuple[float, Callable[[], None]]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, cut: Callable[[], None]) -> int:
        with self._lock:
            key = self._next
            self._next += 1
            self._awaited[key] = (deadline, cut)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nestegg-late-heads", daemon=True)
                self._thread.start()
            return key

    def remove(self, key: int) -> None:
        with self._lock:
            self._awaited.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.PERIOD)
            now = time.monotonic()
            with self._lock:
                cuts = [self._awaited.pop(key)[1] for key, (deadline, _) in list(self._awaited.items())
                        if deadline <= now]  # fmt: skip
                if not self._awaited and not cuts:
                    self._thread = None  # the next add starts another
                    return
            for cut in cuts:
                cut()


_LATE_HEADS = _LateHeads()


def head_within_timeout(connection: Any, read_head: Callable[[], Any]) -> Any:
    """``read_head()`` (an answer's status line and header fields) within the read timeout of
    ``connection`` in all, not only between two reads of its socket: an upstream that sends its
    head a byte a second would hold the request, its thread and its download slot for good. Past
    it, the socket is shut down and ``TimeoutError`` raised (urllib3 makes it a read timeout)."""
    limit = connection.timeout  # urllib3 sets the read timeout on the connection before the read
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
        return read_head()
    lock = threading.Lock()
    state = {"read": False, "cut": False}

    def cut() -> None:
        with lock:
            if state["read"]:
                return
            state["cut"] = True
        with contextlib.suppress(OSError, AttributeError):
            connection.sock.shutdown(socket.SHUT_RDWR)

    key = _LATE_HEADS.add(time.monotonic() + limit, cut)
    late = TimeoutError(f"the answer's head took more than {limit:g}s")
    try:
        head = read_head()
    except Exception:
        if state["cut"]:
            raise late from None
        raise
    finally:
        with lock:
            state["read"] = True
        _LATE_HEADS.remove(key)
    if state["cut"]:  # http.client takes a head cut short for a whole one: it is not
        with contextlib.suppress(Exception):
            head.close()
        raise late
    return head


class _CheckedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, whose connections (made without a proxy) are shown to ``check`` once
    made, before a byte is sent on them: the address a name resolved to, at the moment it is
    used, is the one checked (a name that resolves to another address later changes nothing)."""

    def __init__(self, check: Callable[[str, socket.socket], None], **kwargs: Any) -> None:
        self._check = check
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        check = self._check

        class Http(urllib3.connection.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                check(self.host, self.sock)

            def getresponse(self) -> Any:
                return head_within_timeout(self, super().getresponse)

        class Https(urllib3.connection.HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                check(self.host, self.sock)

            def getresponse(self) -> Any:
                return head_within_timeout(self, super().getresponse)

        class HttpPool(urllib3.HTTPConnectionPool):
            ConnectionCls = Http

        class HttpsPool(urllib3.HTTPSConnectionPool):
            ConnectionCls = Https

        self.poolmanager.pool_classes_by_scheme = {"http": HttpPool, "https": HttpsPool}

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> Any:
        # requests names the CA bundle (its own, or REQUESTS_CA_BUNDLE's) to every new connection,
        # and urllib3 loads it again each time: 24 ms of CPU for a system's bundle, on the path of
        # the request that opens it. One context a bundle, loaded once, serves them all.
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        # not with a client certificate: urllib3 would load it into the context all share
        if verify and not cert and pool.get("cert_reqs") == "CERT_REQUIRED" and "ca_cert_dir" not in pool:
            path = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
            context = bundle_context(path)
            if context is not None:
                pool.pop("ca_certs", None)
                pool["ssl_context"] = context
        return host, pool

    def cert_verify(
        self, conn: Any, url: str, verify: bool | str, cert: str | tuple[str, str] | None
    ) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]  # untyped stub
        # the bundle requests names here is the one the pool's context holds already (a urllib3
        # without conn_kw leaves it named: loaded again, as before; tests/test_upstream.py says so)
        context = getattr(conn, "conn_kw", {}).get("ssl_context")
        if context is not None and getattr(conn, "ca_certs", None) == getattr(context, _BUNDLE, None):
            conn.ca_certs = None


class HttpFetcher:
    """The upstream over HTTP(S): a session per thread (requests is not thread-safe) over one shared
    connection pool, so that connections are reused whichever thread asks (downloads each get a thread
    of their own): a new HTTPS connection costs round trips and loading the CA bundle again. Work no
    client waits on has a pool of its own (:func:`in_background`)."""

    def __init__(
        self,
        index_url: str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_page_size: int = MAX_PAGE_SIZE,
        page_deadline: float = PAGE_DEADLINE,
        via_token: str | None = None,
    ) -> None:
        self.index_url = index_url.rstrip("/") + "/"
        #: the name of the mirror in the Via header of its requests (see ``VIA_PREFIX``)
        self.via_token = via_token or new_via_token()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_page_size = max_page_size
        self.page_deadline = page_deadline
        self._local = threading.local()
        #: what the environment gives for the requests to each origin (see _Session)
        self._environment: dict[tuple[str, str], _Settings] = {}
        # urllib3's pools are thread-safe; sized for the server's threads plus downloads
        self._adapter = _CheckedAdapter(self._check_peer, pool_connections=8, pool_maxsize=32)
        # and those of work no client waits on (in_background): a few downloads ahead at once
        self._background_adapter = _CheckedAdapter(self._check_peer, pool_connections=4, pool_maxsize=4)
        self._origin = _origin(self.index_url)
        # pages and files at the index's own origin get the index's credentials, as pip gives
        # them: from its URL or .netrc, and from the keyring once the index asks for them (a 401)
        self._auth = known_credentials(self.index_url)
        self._keyring_asked = False
        self._keyring_lock = threading.Lock()
        #: whether the index itself is on an internal address (see _index_internal)
        self._internal: bool | None = None
        #: held while a large page is parsed for a client (``LARGE_PAGE_BYTES``)
        self._large_pages = threading.Lock()

    def close(self) -> None:
        """Close the connections kept open to the upstream (a later request opens new ones)."""
        self._adapter.close()
        self._background_adapter.close()

    def prepare(self) -> None:
        """Load the CA bundle the first connection to the upstream would load, as requests would
        name it for the index (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or its own): 20-70 ms
        that ``ssl`` spends with the GIL let go. A mirror calls this in the background as it
        starts; its first cold request then waits for no bundle. Nothing is sent upstream."""
        verify = self.session.merge_environment_settings(self.index_url, {}, None, None, None)["verify"]
        if not verify:
            return
        path = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
        if not os.path.isdir(path):  # a folder of CAs is read by OpenSSL as it needs them
            bundle_context(path)

    @property
    def session(self) -> requests.Session:
        background = _background.get()
        name = "background_session" if background else "session"
        session: requests.Session | None = getattr(self._local, name, None)
        if session is None:
            session = _Session(self._environment)
            session.headers["User-Agent"] = f"nestegg/{__version__}"
            # proxies from the environment; .netrc is read for the index's host only (logins)
            session.trust_env = True
            adapter = self._background_adapter if background else self._adapter
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.hooks["response"].append(_without_redirect_body)
            setattr(self._local, name, session)
        return session

    def project(
        self, name: str, *, etag: str | None, last_modified: str | None, digest: str | None = None
    ) -> Fetched:
        url = f"{self.index_url}{quote(name)}/"
        headers = {"Accept": ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        with blocking(working=True):  # it parses the page as it comes
            return self._project(url, name, headers, etag=etag, last_modified=last_modified, known=digest)

    def _project(
        self,
        url: str,
        name: str,
        headers: dict[str, str],
        *,
        etag: str | None,
        last_modified: str | None,
        known: str | None,
    ) -> Fetched:
        deadline = time.monotonic() + self.page_deadline
        wait = min(self.timeout, REVALIDATE_TIMEOUT) if _holding.get() else self.timeout
        response = self._get(url, headers=headers, stream=True, auth=self._auth_for(url), timeout=wait)
        with response:
            if response.status_code != 200:
                self._drain(url, response, deadline)
                if response.status_code == 304:
                    return Fetched(page=None, etag=etag, last_modified=last_modified)
                if response.status_code in (404, 410):
                    raise NotFound(f"project {name!r} is not on the upstream index")
                raise UpstreamError(f"upstream answered {mask_url(url)} with HTTP {response.status_code}")
            # file URLs and messages without the index's credentials: it gets them back in open()
            base = without_credentials(response.url)
            content_type = response.headers.get("Content-Type", "")
            new_etag = response.headers.get("ETag")
            new_last_modified = response.headers.get("Last-Modified")
            digest = page_digest(content_type, base)
            spooled = known is not None and (new_etag, new_last_modified) == (etag, last_modified)
            # a page read whole into its spool is no model yet: it waits for no other
            pieces = self._page_body(url, response, deadline, gated=not spooled)
            body = _hashed(pieces, digest)
            spool = None
            try:
                if spooled:
                    # read whole before a byte is parsed: the page held stands if its digest is
                    # the same, and parsing it again would cost more than reading its state
                    spool = held = _spooled(body, url)
                    if digest.hexdigest() == known:
                        return Fetched(page=None, etag=etag, last_modified=last_modified, digest=known)
                    body = iter(lambda: held.read(PAGE_CHUNK), b"")
                # parsed as it arrives (content-encoding undone): a page of megabytes is never held
                # whole, as bytes or as text, next to the model it becomes
                page = parse_project_stream(
                    name,
                    body,
                    content_type,
                    base,
                    max_files=self.max_page_size // _BYTES_PER_FILE,
                    max_value=self.max_page_size // _VALUE_SHARE,
                )
            except _READ_ERRORS as exc:
                raise self._failure(url, exc, timeout=wait) from None
            except PageTooLarge as exc:
                raise UpstreamError(
                    f"upstream page {mask_url(url)} {exc}, over what max_page_size "
                    f"({format_size(self.max_page_size)}) allows; raise nestegg.max_page_size"
                ) from None
            finally:
                # now, not once nothing refers to it: an error kept (its traceback holds this
                # frame) would keep the reader, and the large page's gate with it
                pieces.close()
                if spool is not None:
                    spool.close()
        return Fetched(
            page=page,
            etag=new_etag,
            last_modified=new_last_modified,
            digest=digest.hexdigest(),
        )

    def open(self, url: str) -> FileStream:
        self._check_url(url)
        with blocking():
            response = self._get(
                url, headers={"Accept-Encoding": "identity"}, stream=True, auth=self._auth_for(url)
            )
        if response.status_code != 200:
            response.close()
            if response.status_code in (404, 410):
                raise NotFound(f"upstream has no file at {mask_url(url)}")
            raise UpstreamError(f"upstream answered {mask_url(url)} with HTTP {response.status_code}")
        return _ResponseStream(response, url, self.timeout)

    def answers(self, url: str) -> None:
        """See :class:`Prober`: the headers of ``url`` read, its body never (an index's root may
        list every project), no redirect followed, no login sent (a 401 is an answer)."""
        self._check_url(url)
        with blocking():
            try:
                response = self.session.get(
                    url,
                    headers={"Via": _via(self.via_token)},
                    timeout=(self.connect_timeout, self.timeout),
                    stream=True,
                    auth=_NO_AUTH,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise self._failure(url, exc) from None
        response.close()

    def read_range(self, url: str, start: int, end: int, total: int) -> bytes | None:
        """See :class:`RangeFetcher`: the same checks of the URL and of the address reached as
        :meth:`open`, and its credentials; the answer read whole (``end - start`` bytes, which
        the caller bounds) within the timeout and ``page_deadline``, so that nothing of a range
        goes to a client before all of it is here and checked."""
        self._check_url(url)
        deadline = time.monotonic() + self.page_deadline
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}"}
        with blocking():
            response = self._get(url, headers=headers, stream=True, auth=self._auth_for(url))
            with response:
                if response.status_code == 200:
                    return None  # closed unread: the connection goes, not the whole file
                if response.status_code in (404, 410):
                    raise NotFound(f"upstream has no file at {mask_url(url)}")
                if response.status_code != 206:
                    raise UpstreamError(
                        f"upstream answered the range {start}-{end - 1} of {mask_url(url)} with "
                        f"HTTP {response.status_code}"
                    )
                self._check_partial(response, url, start, end, total)
                return self._range_body(response, url, end - start, deadline)

    @staticmethod
    def _check_partial(response: requests.Response, url: str, start: int, end: int, total: int) -> None:
        """Refuse a 206 that is not exactly the range asked for of a file of ``total`` bytes:
        another range, another file (size), several ranges, or bytes encoded on the way."""
        said = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(said.strip())
        wanted = f"{start}-{end - 1}/{total}"
        if match is None or tuple(int(group) for group in match.groups()) != (start, end - 1, total):
            shown = said if len(said) <= 80 else said[:80] + "..."
            raise UpstreamError(
                f"upstream answered the range {wanted} of {mask_url(url)} with Content-Range {shown!r}"
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UpstreamError(
                f"upstream answered the range {wanted} of {mask_url(url)} encoded ({encoding[:40]!r})"
            )
        length = content_length(response.headers.get("Content-Length"), url)
        if length is not None and length != end - start:
            raise UpstreamError(
                f"upstream answered the range {wanted} of {mask_url(url)} with a Content-Length of {length}"
            )

    def _range_body(self, response: requests.Response, url: str, length: int, deadline: float) -> bytes:
        data = bytearray()
        try:
            for piece in _pieces(response.raw, CHUNK, decode=False):
                data += piece
                if len(data) > length:
                    break
                if time.monotonic() > deadline:
                    raise self._late(url, "range")
        except _READ_ERRORS as exc:
            raise self._failure(url, exc) from None
        if len(data) != length:
            raise UpstreamError(f"upstream sent {len(data)} bytes for a range of {length} of {mask_url(url)}")
        return bytes(data)

    def _keyring(self) -> tuple[str, str] | None:
        """The keyring's credentials for the index, asked once (after its first 401)."""
        with self._keyring_lock:
            if not self._keyring_asked:
                self._keyring_asked = True
                host = urlsplit(self.index_url).hostname
                if host and self._auth is None:
                    self._auth = keyring_login(without_credentials(self.index_url), host)
            return self._auth

    def _auth_for(self, url: str) -> tuple[str, str] | None:
        parts = urlsplit(url)
        if parts.username is not None:
            # a URL's own, as pip sends them: requests sends none for a user name without a
            # password (a token: https://TOKEN@example.com), and reads .netrc instead
            return unquote(parts.username), unquote(parts.password or "")
        # the index's origin only: an http:// URL on the host of an https:// index would send
        # them in the clear
        if self._auth is None or _origin(url) != self._origin:
            return None
        return self._auth

    def _check_url(self, url: str) -> None:
        """Refuse a file URL that is not http(s), or whose host names an internal address that
        the index may not send nestegg to (see :meth:`_check_peer`, which checks the address
        reached, whatever the name: this is for the connections a proxy makes)."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise UpstreamError(f"cannot read the file URL {mask_url(url)!r}") from None
        if parts.scheme not in _PORTS or not host:
            raise UpstreamError(f"refused to fetch {mask_url(url)!r}: a file URL must be http:// or https://")
        address = _literal_address(host)
        if address is not None:
            self._check_address(repr(mask_url(url)), address)

    def _check_peer(self, host: str, sock: socket.socket) -> None:
        """Refuse a connection, once made and before a byte is sent on it, to an address the index
        may not send nestegg to: an index on a public address may not point it at a loopback,
        private or link-local one (an internal service, the mirror itself); one on an internal
        address may (a company's index and file server)."""
        try:
            address, port = sock.getpeername()[:2]
        except OSError:
            return  # no peer: the request fails on its own
        try:
            self._check_address(f"{host}:{port}", str(address))
        except UpstreamError:
            sock.close()
            raise

    def _check_address(self, what: str, address: str) -> None:
        if _internal(address) and not self._index_internal():
            raise UpstreamError(
                f"refused to fetch from {what}: it is at the internal address {address}, and the "
                f"index {mask_url(self.index_url)} is not"
            )

    def _index_internal(self) -> bool:
        """Whether the index is on an internal address (any it resolves to), looked up once; one
        that cannot be looked up counts as public (the stricter) until it can."""
        if self._internal is None:
            parts = urlsplit(self.index_url)
            host = parts.hostname or ""
            address = _literal_address(host)
            if address is not None:
                self._internal = _internal(address)
            else:
                try:
                    found = socket.getaddrinfo(host, parts.port or _PORTS.get(parts.scheme, 443))
                except OSError:
                    return False
                self._internal = any(_internal(str(info[4][0])) for info in found)
        return self._internal

    def _get(
        self,
        url: str,
        *,
        headers: dict[str, str],
        stream: bool = False,
        auth: tuple[str, str] | requests.auth.AuthBase | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        headers = {**headers, "Via": _via(self.via_token)}
        wait = self.timeout if timeout is None else timeout
        if auth is None:
            auth = _NO_AUTH  # else requests reads .netrc for whatever host this is
        try:
            response = self.session.get(
                url, headers=headers, timeout=(self.connect_timeout, wait), stream=stream, auth=auth
            )
            if response.status_code == 401 and auth is _NO_AUTH and _origin(url) == self._origin:
                login = self._keyring()
                if login is not None:  # asked again once, with what the keyring gave
                    response.close()
                    response = self.session.get(
                        url, headers=headers, timeout=(self.connect_timeout, wait), stream=stream, auth=login
                    )
            return response
        except requests.RequestException as exc:
            raise self._failure(url, exc, timeout=wait) from None
        except ValueError as exc:  # a redirect to a URL urllib3 cannot read ("http://[::1")
            raise UpstreamError(
                f"upstream {mask_url(url)} redirected to a URL that cannot be read: {exc}"
            ) from None

    def _page_body(
        self, url: str, response: requests.Response, deadline: float, *, gated: bool
    ) -> Generator[bytes, None, None]:
        """The page's body, decoded, in pieces of at least ``PAGE_CHUNK`` bytes (the last may be
        less): :class:`UpstreamError` past ``max_page_size`` (a gzip bomb counts as what it
        expands to), :class:`UpstreamTimeout` past the deadline, however steadily it comes. Past
        ``LARGE_PAGE_BYTES``, a client's page is read on once no other large one is being read, or
        ``LARGE_PAGE_WAIT`` seconds later (a time not counted against its deadline), if ``gated``."""
        read = 0
        held: list[bytes] = []
        held_size = 0
        pause = _pause.get()
        # the background's pages are few at once, and keep no client's waiting
        to_gate = gated and pause is None and not _background.get()
        in_gate = False
        try:
            for piece in _pieces(response.raw, PAGE_CHUNK, decode=True):
                if pause is not None:  # the time it gives way is not the upstream's
                    paused = time.monotonic()
                    pause()
                    deadline += time.monotonic() - paused
                read += len(piece)
                if to_gate and read > LARGE_PAGE_BYTES:
                    to_gate = False
                    waited = time.monotonic()
                    in_gate = self._large_pages.acquire(timeout=LARGE_PAGE_WAIT)
                    deadline += time.monotonic() - waited
                if read > self.max_page_size:
                    raise UpstreamError(
                        f"upstream page {mask_url(url)} is larger than max_page_size "
                        f"({format_size(self.max_page_size)}); raise nestegg.max_page_size"
                    )
                if time.monotonic() > deadline:
                    raise self._late(url, "page")
                held.append(piece)
                held_size += len(piece)
                # whole pieces for the parser: an HTML tag not yet closed is looked through again
                # with each piece it is given, however small
                if held_size >= PAGE_CHUNK:
                    yield b"".join(held)
                    held.clear()
                    held_size = 0
        except urllib3.exceptions.ProtocolError as exc:  # as requests words them (iter_content)
            raise requests.exceptions.ChunkedEncodingError(exc) from None
        except urllib3.exceptions.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from None
        finally:
            if in_gate:
                self._large_pages.release()
        if held:
            yield b"".join(held)

    def _late(self, url: str, what: str) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"upstream {mask_url(url)} took longer than page_deadline ({self.page_deadline:g}s) to send "
            f"its {what}; raise nestegg.page_deadline"
        )

    def _drain(self, url: str, response: requests.Response, deadline: float) -> None:
        """Reads the body of an answer without a page: a connection read to the end goes back to
        the pool (closed half-read, the next request would pay for a new one). Past
        ``_DRAIN_LIMIT`` or the deadline the connection is closed instead: an error page is not
        worth megabytes, nor minutes."""
        try:
            read = 0
            for piece in _pieces(response.raw, CHUNK, decode=False):
                read += len(piece)
                if read > _DRAIN_LIMIT or time.monotonic() > deadline:
                    break
        except _READ_ERRORS as exc:
            raise self._failure(url, exc) from None

    def _failure(self, url: str, exc: Exception, *, timeout: float | None = None) -> NesteggError:
        """Ours for a failure of requests (or urllib3 under it) to get an answer or read its body;
        one that never reached the upstream, or that waited for it in vain, says why
        (:attr:`UpstreamError.unreachable`)."""
        if out_of_files(exc):
            return no_files_left("reach the upstream")
        error = self._unreached(url, exc, timeout=timeout)
        asked = getattr(getattr(exc, "request", None), "url", None)
        if isinstance(asked, str) and asked != url:  # a redirect's target failed, not the URL asked
            error.failed_url = asked
        return error

    def _unreached(self, url: str, exc: Exception, *, timeout: float | None) -> UpstreamError:
        if isinstance(exc, requests.ConnectTimeout):
            error: UpstreamError = UpstreamTimeout(
                f"upstream {mask_url(url)} did not connect in {self.connect_timeout:g}s"
            )
            return unreachable(error, TIMED_OUT)
        if isinstance(exc, requests.Timeout):
            waited = self.timeout if timeout is None else timeout
            error = UpstreamTimeout(f"upstream {mask_url(url)} did not answer in {waited:g}s")
            return unreachable(error, TIMED_OUT)
        # a body that stops coming is a timeout too; requests reports it as a ConnectionError
        if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) or (
            isinstance(exc, requests.ConnectionError)
            and any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)
        ):
            waited = self.timeout if timeout is None else timeout
            error = UpstreamTimeout(f"upstream {mask_url(url)} stalled for {waited:g}s")
            return unreachable(error, TIMED_OUT)
        if isinstance(exc, requests.ConnectionError):
            reason = _connection_failure(exc)
            if reason is not None:
                return unreachable(UpstreamError(f"cannot reach upstream {mask_url(url)} ({reason})"), reason)
            return UpstreamError(f"cannot reach upstream {mask_url(url)} (ConnectionError)")
        return UpstreamError(f"cannot reach upstream {mask_url(url)} ({type(exc).__name__})")


def _connection_failure(exc: requests.ConnectionError) -> str | None:
    """Why a connection to the upstream was never made (None: it was, and broke off later)."""
    causes = [arg.reason if isinstance(arg, urllib3.exceptions.MaxRetryError) else arg for arg in exc.args]
    for cause in causes:
        if isinstance(cause, urllib3.exceptions.NameResolutionError):
            return NOT_RESOLVED
        if isinstance(cause, urllib3.exceptions.NewConnectionError):
            seen: BaseException | None = cause
            for _ in range(8):  # the OS error is a few causes down
                if seen is None:
                    break
                if isinstance(seen, ConnectionRefusedError):
                    return REFUSED
                seen = seen.__cause__ or seen.__context__
            return REFUSED if "refused" in str(cause).lower() else CONNECTION_FAILED
    return None


class OfflineFetcher:
    """The fetcher of an offline mirror: every upstream question fails at once."""

    def project(
        self,
        name: str,
        *,
        etag: str | None,  # noqa: ARG002
        last_modified: str | None,  # noqa: ARG002
        digest: str | None = None,  # noqa: ARG002
    ) -> Fetched:
        raise NotCached(f"the cache has nothing for {name!r} and nestegg is offline: no upstream is asked")

    def open(self, url: str) -> FileStream:
        raise NotFound(f"offline: {mask_url(url)} is not in the cache")
