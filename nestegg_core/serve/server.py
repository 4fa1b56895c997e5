"""Running a mirror: waitress in a background thread (:class:`Mirror`) or in the foreground."""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError, TransferEncodingNotImplemented
from waitress.server import MultiSocketServer, create_server
from waitress.task import WSGITask
from waitress.utilities import Error, RequestEntityTooLarge

from nestegg_core.config.config import Config
from nestegg_core.errors import BodyTooLarge, NesteggError
from nestegg_core.http.answers import status_line
from nestegg_core.http.app import NesteggApp
from nestegg_core.http.types import BodyGate, WSGIApp
from nestegg_core.http.uploads import FIELDS_ALLOWANCE
from nestegg_core.index.downloads import ClientGone
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import Fetcher
from nestegg_core.urls import mask_url
from nestegg_core.waits import blocking

from .compose import compose
from .pacing import PacedDispatcher

logger = logging.getLogger(__name__)

#: the most waitress reads of a file (and sends) at a time, per connection
SEND_BLOCK = 256 * 1024
#: seconds a worker waits for a client that takes none of what it was sent before the connection
#: is closed: twice the upstream's default ``timeout``; pip and uv read as fast as they can
SEND_TIMEOUT = 60.0
#: the most connections open at once; each may hold a thread while it waits (``pacing``), at
#: some tens of KiB each, less than the 256 KiB a connection may have queued to send
CONNECTION_LIMIT = 1000


class Mirror:
    """A mirror served by waitress on ``config.host:config.port`` (port 0 picks a free one).

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with Mirror(Config(port=0)) as mirror:
            pip_install("--index-url", mirror.index_url, ...)
    """

    def __init__(
        self,
        config: Config,
        *,
        fetcher: Fetcher | None = None,
        middleware: Callable[[WSGIApp], WSGIApp] | None = None,
    ) -> None:
        self.config = config
        self.repository = Repository(config, fetcher=fetcher)
        composition = compose(config, repository=self.repository)
        #: the app under its middleware (access log, counters)
        self.app = composition.wsgi
        #: the app itself, to add routes and services to
        self.nest: NesteggApp = composition.app
        self._gate = composition.gate
        #: what waitress serves: the app, wrapped by ``middleware`` (tests inject faults there)
        self.served: WSGIApp = self.app if middleware is None else middleware(self.app)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise NesteggError("the mirror is not started")
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        """The root URL, like ``http://127.0.0.1:7654``."""
        host = self.config.host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - only naming what the user bound
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def index_url(self) -> str:
        """The URL to give pip and uv: ``<url>/simple/``."""
        return f"{self.url}/simple/"

    def bind(self) -> Mirror:
        """Open the listening socket (raises :class:`NesteggError` if it cannot) without serving."""
        if self._server is None:
            self.repository.store.prepare()
            self._server = make_server(self.served, self.config, gate=self._gate)
            self.repository.index_url = self.index_url
            self.nest.start_services()
        return self

    def start(self) -> Mirror:
        """Bind and serve in a daemon thread; returns once the socket accepts connections."""
        self.bind()
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.run, name="nestegg-server", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT or SIGTERM."""
        self.bind()
        with _stop_on_signals():
            try:
                self._server.run()
            finally:
                self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: finish running requests, close every connection (idle keep-alive ones
        too) and join the threads; returns within about ``2 * timeout`` (and the page being made
        in the background, if one is)."""
        server, self._server = self._server, None
        if server is None:
            return
        self.nest.stop_services()
        # the workers first: one that finishes a response pokes the event loop, which must
        # still be there
        server.task_dispatcher.shutdown(timeout=timeout)
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            # close from inside the event loop: its map empties and run() returns
            try:
                server.trigger.pull_trigger(lambda: _close_all(server))
            except OSError:
                # its wake-up pipe is gone already (seen once under load, cause unknown): close
                # from here; the loop sees an empty map at its next poll, within a second
                _close_all(server)
            thread.join(timeout)
        else:
            _close_all(server)

    def __enter__(self) -> Mirror:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _close_all(server: Any) -> None:
    for channel in list(server._map.values()):
        with contextlib.suppress(OSError):
            channel.close()


def make_server(app: WSGIApp, config: Config, *, gate: BodyGate | None = None) -> Any:
    """A waitress server bound to the configured address; warns when that is not loopback.

    ``gate`` is asked before the body of each request is read: whether to read it, and how much.
    """
    if not is_loopback(config.host):
        logger.warning(
            "listening on %s: every machine that reaches it can use this mirror%s",
            config.host,
            "" if config.credentials_file else " (and uploads are off without a credentials file)",
        )
    # waitress starts its workers before it binds: made here, so that a failed bind can stop them
    # a thread for every connection at most, should each wait on a slow client or upstream
    dispatcher = PacedDispatcher(extra=max(0, CONNECTION_LIMIT - config.threads))
    dispatcher.set_thread_count(config.threads)
    try:
        server = create_server(
            app,
            host=config.host,
            port=config.port,
            threads=config.threads,
            ident="nestegg",
            asyncore_use_poll=True,
            outbuf_overflow=8 * 1024 * 1024,
            # a streamed body (a file still downloading) waits once 256 KiB are queued for a slow
            # reader, instead of piling up waitress's default 16 MiB per connection in memory:
            # 16 readers of one cold 32 MB wheel peaked at 310 MB RSS with the default, 78 MB with
            # 1 MiB and 57 MB with this, in the same 0.7 s. Pages are sent from their files.
            outbuf_high_watermark=256 * 1024,
            channel_timeout=300,
            connection_limit=CONNECTION_LIMIT,
            # a backstop: ``gate`` bounds each body by its route; an upload's is the largest
            max_request_body_size=config.max_upload_size + FIELDS_ALLOWANCE + 1,
            clear_untrusted_proxy_headers=True,
            _dispatcher=dispatcher,
        )
    except ValueError as exc:  # waitress's word for a host it cannot resolve
        dispatcher.shutdown(timeout=1)
        raise NesteggError(f"cannot listen on {config.host}:{config.port}: {exc}") from None
    except OSError as exc:
        dispatcher.shutdown(timeout=1)
        where = f"{config.host}:{config.port}"
        if exc.errno == errno.EADDRINUSE:
            raise NesteggError(
                f"cannot listen on {where}: the port is in use (choose another with --port)"
            ) from None
        raise NesteggError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    for listener in server.map.values() if isinstance(server, MultiSocketServer) else [server]:
        listener.channel_class = functools.partial(_Channel, gate=gate)
    return server


class _Task(WSGITask):  # type: ignore[misc]  # waitress has no type hints
    """waitress's task, ending quietly when the app finds its client gone (as a write would)."""

    def execute(self) -> None:
        try:
            super().execute()
        except ClientGone:
            raise ClientDisconnected from None


class _Channel(HTTPChannel):  # type: ignore[misc]  # waitress has no type hints
    """waitress's connection, with deadlines and a gate.

    - It reads what it sends (a file) at most ``SEND_BLOCK`` at a time: waitress reads a file in
      blocks of the socket's send buffer, which Linux makes 4 MiB on loopback.
    - A worker waiting for the client to read (a response over the high watermark) declares the
      wait (``pacing``) and gives up after ``SEND_TIMEOUT`` seconds without a byte taken: the
      connection is closed and the task ends. waitress waits without end, and its idle
      connection clean-up spares a connection with a request.
    - Requests are parsed by :class:`_Parser`, which asks ``gate`` before reading a body; a
      check it must make off the event loop (a password) is run on a worker meanwhile, and the
      connection is not read until it is done.
    """

    task_class = _Task
    sendbuf_len: int
    connected: bool
    request: Any

    def __init__(self, *args: Any, gate: BodyGate | None = None, **kwargs: Any) -> None:
        self.parser_class = functools.partial(_Parser, gate=gate)
        #: a refusal is being answered: nothing more is read; the connection closes after it
        self.refusing = False
        super().__init__(*args, **kwargs)
        self.sendbuf_len = min(self.sendbuf_len, SEND_BLOCK)

    # event loop ----------------------------------------------------------------------------

    def readable(self) -> bool:
        request = self.request
        if self.refusing or (request is not None and request.checking is not None):
            return False
        return bool(super().readable())

    def received(self, data: bytes) -> bool:
        done = bool(super().received(data))
        # a refused request swallows what follows it: it is the last one (a slice: a worker may
        # empty the list meanwhile)
        if any(request.refused for request in self.requests[-1:]):
            self.refusing = True
        request = self.request
        if request is not None and request.checking is not None and not request.check_started:
            request.check_started = True
            self.server.add_task(_Check(self, request))
        return done

    def resume(self, request: _Parser, refusal: NesteggError | None) -> None:
        """Go on with ``request`` once its gate's check is done (in the event loop)."""
        if not self.connected or self.request is not request:
            return  # closed meanwhile
        held = request.resume(refusal)
        if request.completed:  # refused: answered as a request read whole would be
            self.refusing = True
            with self.requests_lock:
                self.requests.append(request)
                if len(self.requests) == 1:
                    self.server.add_task(self)
                self.request = None
            return
        if request.expect_continue and not self.requests and not self.sent_continue:
            self.send_continue()
        if held:
            self.received(held)

    # worker ----------------------------------------------------------------------------

    def check_client_disconnected(self) -> bool:
        # environ["waitress.client_disconnected"], which a reader of a download asks while it
        # waits: waitress sees a closed connection only if it reads on while a request runs
        # (channel_request_lookahead), which cost a warm page a fifth of its rate; a look at the
        # socket, without reading, tells as much when asked
        if not self.connected:
            return True
        try:
            return not self.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _flush_outbufs_below_high_watermark(self) -> None:
        # waitress's own, with the wait declared and a deadline on it
        high = self.adj.outbuf_high_watermark
        if self.total_outbufs_len <= high:
            return
        with blocking(), self.outbuf_lock:
            _, failed = self._flush_exception(self._flush_some, do_close=False)
            if failed:  # the event loop closes it: wait for that, as waitress does
                self.server.pull_trigger()
                self.outbuf_lock.wait(SEND_TIMEOUT)
                return
            # the event loop sends the rest as the client reads, and wakes us below the watermark
            self.server.pull_trigger()
            left, since = self.total_outbufs_len, time.monotonic()
            while self.connected and self.total_outbufs_len > high:
                if self.total_outbufs_len < left:
                    left, since = self.total_outbufs_len, time.monotonic()
                waited = time.monotonic() - since
                if waited >= SEND_TIMEOUT:
                    logger.info(
                        "closing the connection of %s:%s: it took nothing of its answer for %ds",
                        *self.addr[:2],
                        SEND_TIMEOUT,
                    )
                    # as waitress cancels a channel: the event loop closes it, writes raise
                    # ClientDisconnected, and the task ends
                    self.will_close = True
                    self.connected = False
                    self.server.pull_trigger()
                    return
                self.outbuf_lock.wait(min(1.0, SEND_TIMEOUT - waited))  # else look again in a second


class _Check:
    """A waitress task that runs a gate's check for a request, then lets its channel go on."""

    def __init__(self, channel: _Channel, request: _Parser) -> None:
        self.channel = channel
        self.request = request

    def service(self) -> None:
        check = self.request.checking
        assert check is not None
        try:
            refusal = check()
        except NesteggError as exc:
            refusal = exc
        except Exception:
            logger.exception("checking a request before its body failed")
            refusal = NesteggError("internal error; see the server log")
        with contextlib.suppress(OSError):  # the server stopped meanwhile
            self.channel.server.trigger.pull_trigger(
                functools.partial(self.channel.resume, self.request, refusal)
            )

    def cancel(self) -> None:
        self.channel.cancel()


class _Parser(HTTPRequestParser):  # type: ignore[misc]  # waitress has no type hints
    """waitress's request parser, asking a gate before it reads a body.

    It also refuses a request with both ``Content-Length`` and ``Transfer-Encoding`` (RFC 9112,
    section 6.3: a front server may frame it otherwise, smuggling a request past it) and a
    ``Content-Length`` too long to be a number, which waitress fails on.
    """

    completed: bool
    error: Any
    expect_continue: bool

    def __init__(self, adj: Any, gate: BodyGate | None = None) -> None:
        super().__init__(adj)
        self.gate = gate
        #: the most bytes of body to read
        self.limit: int | None = None
        #: refused before its body was read
        self.refused = False
        #: the gate's check to run before the body is read
        self.checking: Callable[[], NesteggError | None] | None = None
        self.check_started = False
        self._held = b""
        self._continue = False

    def parse_header(self, header_plus: bytes) -> None:
        both = b"transfer-encoding" in header_plus.lower() and _framed_twice(header_plus)
        try:
            super().parse_header(header_plus)
        except TransferEncodingNotImplemented:
            if not both:
                raise
        except ValueError:  # a number past Python's limit on digits
            raise ParsingError("Content-Length is invalid") from None
        if both:
            raise ParsingError("a request with both Content-Length and Transfer-Encoding is refused")

    def received(self, data: bytes) -> int:
        if self.checking is not None:  # kept until the check is done (a few KiB: one read)
            self._held += data
            return len(data)
        if self.refused:
            return len(data)  # the body of a refused request is never read
        in_headers = not self.headers_finished
        consumed: int = super().received(data)
        if in_headers and self.headers_finished:
            if (
                self.gate is not None
                and isinstance(self.error, RequestEntityTooLarge)
                and self.body_rcv is not None
            ):
                # over waitress's own limit: the gate answers instead, credentials first as the
                # app does (its limits are lower)
                self.error, self.completed = None, False
            if self.completed and self.error is not None:
                # refused on its headers (waitress's own refusals too): the rest is not read,
                # nor taken for another request
                self.refused = True
                return len(data)
            if not self.completed and self.gate is not None:
                self._admit()
                if self.refused or self.checking is not None:
                    self._held = data[consumed:]
                    return len(data)
        elif not in_headers and self.limit is not None and self.body_bytes_received > self.limit:
            self._refuse(BodyTooLarge(f"the request body is over the limit of {self.limit} bytes"))
            return len(data)
        return consumed

    def _admit(self) -> None:
        assert self.gate is not None
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "PATH_INFO": self.path,
            "QUERY_STRING": self.query,
        }
        for key, value in self.headers.items():
            environ[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else f"HTTP_{key}"] = value
        admission = self.gate(environ)
        self.limit = admission.limit
        if admission.refusal is not None:
            self._refuse(admission.refusal)
        elif admission.check is None and not self.chunked and self.content_length > admission.limit:
            self._refuse(BodyTooLarge(f"the request body is over the limit of {admission.limit} bytes"))
        elif admission.check is not None:
            self.checking = admission.check
            # no "100 Continue" before the check says yes
            self._continue, self.expect_continue = self.expect_continue, False

    def _refuse(self, refusal: NesteggError) -> None:
        self.error = _Refusal(refusal)
        self.completed = True
        self.refused = True
        self.expect_continue = False
        self.connection_close = True

    def resume(self, refusal: NesteggError | None) -> bytes:
        """The check is done: refused, or to read on; returns what was received meanwhile."""
        self.checking = None
        held, self._held = self._held, b""
        if refusal is not None:
            self._refuse(refusal)
            return b""
        self.expect_continue = self._continue
        return held


def _framed_twice(header_plus: bytes) -> bool:
    """Whether a request's head has both a Content-Length and a Transfer-Encoding field."""
    names = {
        line.partition(b":")[0].lower()
        for line in header_plus.split(b"\r\n")[1:]
        if line[:1] not in (b" ", b"\t")  # a folded line goes on the field before
    }
    return b"content-length" in names and b"transfer-encoding" in names


class _Refusal(Error):  # type: ignore[misc]  # waitress has no type hints
    """A gate's refusal, answered as the app would answer it (the message as reason and body)."""

    def __init__(self, error: NesteggError) -> None:
        super().__init__(str(error))
        self.code = error.status

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:  # noqa: ARG002
        body = (" ".join(self.body.split()) + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        return status_line(self.code, self.body), headers, body


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _stop_on_signals:  # noqa: N801 - used like a function
    """Turn SIGTERM into the KeyboardInterrupt that waitress stops cleanly on."""

    def __enter__(self) -> None:
        self._previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)


def describe(mirror: Mirror) -> str:
    """One line saying where the mirror is and what it mirrors."""
    config = mirror.config
    upstream = "offline" if config.offline else f"upstream {mask_url(config.upstream_url)}"
    return f"nestegg serving {mirror.index_url} ({upstream}; cache {config.nestegg_dir})"
