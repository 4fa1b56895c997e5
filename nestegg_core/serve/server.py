"""Running a mirror: waitress in a background thread (:class:`Mirror`) or in the foreground."""

from __future__ import annotations

import errno
import ipaddress
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from nestegg_core.config.config import Config
from nestegg_core.errors import NesteggError
from nestegg_core.http.app import NesteggApp
from nestegg_core.http.types import BodyGate, WSGIApp
from nestegg_core.http.uploads import FIELDS_ALLOWANCE
from nestegg_core.index.refresh import Refresher
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import Fetcher
from nestegg_core.signals import stop_on_signals
from nestegg_core.urls import mask_url

from . import _waitress
from .compose import compose

logger = logging.getLogger(__name__)

#: the most connections open at once; each may hold a thread while it waits (``pacing``), at
#: some tens of KiB each, less than the 128 KiB a connection may have queued to send
CONNECTION_LIMIT = 1000
#: seconds a connection may wait with no request before it is closed (pip and uv open another);
#: 1000 connections that send nothing held every other client out for waitress's 300 before
IDLE_TIMEOUT = 60
#: seconds between looks at the connections (in the event loop, a look at each): past 90% of
#: the limit open, those with no request are closed, longest idle first, down to 80%, so that a
#: client finds a place within seconds, not ``IDLE_TIMEOUT``
CLEANUP_INTERVAL = 2
#: seconds a request's head may take to come whole (from its first byte): a client that sends it
#: a byte at a time is never idle, and would hold its connection for ever
HEAD_TIMEOUT = 30.0


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
            server = make_server(self.served, self.config, gate=self._gate, on_quiet=self._quiet)
            self._server = server
            clients = _waitress.clients_of(server)
            self.repository.serve_clients(lambda: clients.gone, clients.sending)
            self.repository.index_url = self.index_url
            self.nest.start_services()
            self.repository.prepare()
        return self

    def _quiet(self) -> None:
        """The clients are gone (an install is over): the background may start at once."""
        for service in self.nest.services:
            if isinstance(service, Refresher):
                service.poke()

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
        with stop_on_signals():
            try:
                self._server.run()
            finally:
                self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: finish running requests, close every connection (idle keep-alive ones
        too) and join the threads; returns within about ``2 * timeout``, and the page being made
        in the background, if one is, and running source builds, which are ended (TERM, then KILL
        5 s later: ``builds.vcs.KILL_GRACE``)."""
        server, self._server = self._server, None
        if server is None:
            return
        self.nest.stop_services()
        _waitress.shut_down(server, self._thread, timeout)
        self.repository.serve_clients(None)
        self._thread = None
        # a process may end once stopped: the files its clients have are put in the cache first
        for repository in (self.repository, *(routed for _, routed in self.repository.routes.items())):
            repository.close(timeout)

    def __enter__(self) -> Mirror:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def make_server(
    app: WSGIApp, config: Config, *, gate: BodyGate | None = None, on_quiet: Callable[[], None] | None = None
) -> Any:
    """A waitress server bound to the configured address; warns when that is not loopback.

    ``gate`` is asked before the body of each request is read: whether to read it, and how much;
    ``on_quiet`` is called whenever the clients are gone (see ``_waitress.Clients``).
    """
    # waitress starts its workers before it binds: made here, so that a failed bind can stop them
    # a thread for every connection at most, should each wait on a slow client or upstream
    dispatcher = _waitress.PacedDispatcher(extra=max(0, CONNECTION_LIMIT - config.threads))
    dispatcher.set_thread_count(config.threads)
    try:
        server = _waitress.create(
            app,
            dispatcher=dispatcher,
            gate=gate,
            head_timeout=HEAD_TIMEOUT,
            on_quiet=on_quiet,
            host=config.host,
            port=config.port,
            threads=config.threads,
            ident="nestegg",
            asyncore_use_poll=True,
            outbuf_overflow=8 * 1024 * 1024,
            # a streamed body (a file still downloading) waits once 128 KiB are queued for a slow
            # reader, instead of piling up waitress's default 16 MiB per connection in memory:
            # 16 readers of one cold 32 MB wheel peaked at 310 MB RSS with the default, 78 MB with
            # 1 MiB, 57 MB with 256 KiB and 50 MB with this (and 128 KiB pieces), all in the same
            # 0.7 s from an upstream at 50 MB/s. Pages are sent from their files.
            outbuf_high_watermark=128 * 1024,
            channel_timeout=IDLE_TIMEOUT,
            cleanup_interval=CLEANUP_INTERVAL,
            connection_limit=CONNECTION_LIMIT,
            # a backstop: ``gate`` bounds each body by its route; an upload's is the largest
            max_request_body_size=config.max_upload_size + FIELDS_ALLOWANCE + 1,
            clear_untrusted_proxy_headers=True,
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
    if not is_loopback(config.host):  # once it listens: a host it cannot listen on is only an error
        logger.warning(
            "listening on %s: every machine that reaches it can use this mirror%s",
            config.host,
            "" if config.credentials_file else " (and uploads are off without a credentials file)",
        )
    return server


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe(mirror: Mirror) -> str:
    """One line saying where the mirror is and what it mirrors."""
    config = mirror.config
    upstream = "offline" if config.offline else f"upstream {mask_url(config.upstream_url)}"
    return f"nestegg serving {mirror.index_url} ({upstream}; cache {config.nestegg_dir})"
