"""The fence around waitress: every use of its internals (beyond ``create_server`` and the server's
``run``, ``effective_port`` and ``task_dispatcher.shutdown``) is in this module.

Tested with waitress 3.0 (``waitress>=3.0,<3.1`` in setup.cfg); ``tests/test_fences.py`` checks
each internal named below and fails saying which one moved. What is borrowed:

- ``create_server(_dispatcher=...)``, waitress's own "test shim", to run :class:`PacedDispatcher`,
  which overrides the dispatcher's ``add_task``, ``handler_thread`` (its loop, copied and paced)
  and ``shutdown`` on its state (``lock``, ``queue``, ``queue_cv``, ``threads``,
  ``active_count``, ``stop_count``, ``thread_exit_cv``);
- the listeners' ``channel_class``: :class:`_Channel` overrides ``HTTPChannel``'s
  ``_flush_some`` (its loop, copied, with files sent by ``sendfile``: the ``file`` and ``remain``
  of ``ReadOnlyFileBasedBuffer``, its ``outbufs`` and ``total_outbufs_len``),
  ``_flush_outbufs_below_high_watermark`` (a slow client's wait, declared and with a deadline),
  ``readable``, ``received``, ``check_client_disconnected`` (a peek at the socket) and
  ``del_channel`` (a connection closed: the listeners' ``active_channels`` tell how many are
  left; its ``_fileno``, None once closed, that it was open, and the task's ``channel`` how many
  requests it served; their ``requests`` and ``total_outbufs_len``, whether one is still served:
  :class:`Clients`), and sets
  ``sendbuf_len``, ``parser_class`` (:class:`_Parser`, over ``HTTPRequestParser``'s state) and
  ``task_class`` (:class:`_Task`, over ``WSGITask.execute``) and ``error_task_class``
  (:class:`_ErrorTask`, over ``ErrorTask.execute``, reading its ``request``'s ``command``,
  ``path`` and ``query``, its ``status`` and ``content_length``, its channel's ``addr``);
- ``utilities.Error.to_response`` for a refusal's answer, the server's ``_map`` and ``trigger``
  to close every connection at shutdown;
- the listeners' ``accept`` and ``readable`` (wasyncore's and waitress's, called as they are: a
  pause once no file descriptor is left), and their ``socket``;
- the listeners' ``maintenance`` (run every ``cleanup_interval``), over their ``active_channels``,
  ``_map`` and ``adj.connection_limit``, and the channels' ``request``, ``requests``,
  ``total_outbufs_len``, ``last_activity`` and ``will_close``, to close connections that hold a
  place without a request, and their ``connected`` and ``handle_close`` to close those whose
  client takes nothing of its answer.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError, TransferEncodingNotImplemented
from waitress.server import MultiSocketServer, create_server
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import Error, RequestEntityTooLarge

from nestegg_core import waits
from nestegg_core.errors import BodyTooLarge, NesteggError, Unavailable
from nestegg_core.http.answers import status_line
from nestegg_core.http.middleware import log_access
from nestegg_core.http.types import BodyGate, WSGIApp
from nestegg_core.index.downloads import ClientGone
from nestegg_core.waits import blocking

from .pacing import EXTRA_IDLE, RUNNING, STALL

logger = logging.getLogger(__name__)

#: the most waitress reads of a file (and sends) at a time, per connection, where the kernel
#: cannot send it (:data:`SENDFILE`)
SEND_BLOCK = 256 * 1024
#: whether a file answered (``wsgi.file_wrapper``) goes from the page cache to the socket with
#: ``os.sendfile``, not through two reads of each block into memory; Linux only, where it is tested
SENDFILE = hasattr(os, "sendfile") and sys.platform.startswith("linux")
#: errors of ``sendfile`` that say this file cannot be sent so: it is read and sent instead
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
#: errors of a socket whose client went away, as waitress's ``send`` tells them
_DISCONNECTED = frozenset(
    {errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE, errno.EBADF}
)
#: seconds a worker waits for a client that takes none of what it was sent before the connection
#: is closed: twice the upstream's default ``timeout``; pip and uv read as fast as they can
SEND_TIMEOUT = 60.0
#: bytes a second a request's body must come at, on average, once ``head_timeout`` seconds are
#: past its head (the upstream's bodies are held to the same): one sent a byte a second held its
#: connection, and its file descriptor, for as long as it liked
MIN_BODY_RATE = 1024
#: seconds the listeners stop accepting once the process has no file descriptor left for a new
#: connection; the kernel keeps those clients in its backlog meanwhile
ACCEPT_PAUSE = 0.5
#: seconds between two warnings that no file descriptor is left
ACCEPT_WARN_EVERY = 10.0


def create(
    app: WSGIApp,
    *,
    dispatcher: PacedDispatcher,
    gate: BodyGate | None,
    head_timeout: float,
    on_quiet: Callable[[], None] | None = None,
    **adjustments: Any,
) -> Any:
    """waitress's server of ``app`` with our dispatcher and channels (``adjustments`` are waitress's);
    a connection whose request's head has not come whole ``head_timeout`` seconds after its first
    byte is closed. ``on_quiet`` is called (in the event loop) whenever the clients are gone
    (:class:`Clients`)."""
    server = create_server(app, _dispatcher=dispatcher, **adjustments)
    listeners = list(server.map.values()) if isinstance(server, MultiSocketServer) else [server]
    server.nestegg_clients = clients = Clients(listeners, on_quiet)
    for listener in listeners:
        listener.channel_class = functools.partial(_Channel, gate=gate, clients=clients)
        listener.maintenance = functools.partial(_maintenance, listener, head_timeout=head_timeout)
        listener.nestegg_resume = 0.0  # when a listener that found no file descriptor accepts again
        listener.nestegg_warned = -ACCEPT_WARN_EVERY
        listener.accept = functools.partial(_accept, listener)
        listener.readable = functools.partial(_readable, listener)
    return server


def _accept(listener: Any) -> Any:
    """The listener's ``accept``; with no file descriptor left (EMFILE, ENFILE), None (what
    waitress takes for "nothing to accept") and no accepting for ``ACCEPT_PAUSE`` seconds. The
    listening socket stays readable, and waitress tried again at once: a core at 100% and a
    warning with its traceback each time (196 MB of log in 100 s), every client shut out."""
    try:
        return type(listener).accept(listener)
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        now = time.monotonic()
        listener.nestegg_resume = now + ACCEPT_PAUSE
        if now - listener.nestegg_warned >= ACCEPT_WARN_EVERY:
            listener.nestegg_warned = now
            logger.warning(
                "no file descriptor left for a new connection (%s): accepting again in %gs; "
                "raise the limit of open files (ulimit -n)",
                exc.strerror,
                ACCEPT_PAUSE,
            )
        return None


def _readable(listener: Any) -> bool:
    """The listener's ``readable`` (its clean-up, its connection limit), not while it pauses."""
    readable = bool(type(listener).readable(listener))
    return readable and time.monotonic() >= listener.nestegg_resume


def clients_of(server: Any) -> Clients:
    """The :class:`Clients` of a server made by :func:`create`."""
    clients: Clients = server.nestegg_clients
    return clients


class Clients:
    """A server's client connections as the background sees them: gone (:attr:`gone`) once the
    last one open closes after more than one request on it, until another opens.

    An installer keeps its connections over its whole install and closes them as it exits (pip,
    uv): then the install is over, however recent its last request. A connection that served one
    request (a proxy that opens one for each, a health check) says nothing of that.
    """

    def __init__(self, listeners: list[Any], on_quiet: Callable[[], None] | None) -> None:
        self._listeners = listeners
        self._on_quiet = on_quiet
        self.gone = False

    def opened(self) -> None:
        self.gone = False

    def sending(self) -> bool:
        """Whether a connection has a request in hand or an answer not all sent: a client on the
        same machine (uv reading dozens of wheels at once) still works, and the background would
        take a core from it."""
        for listener in self._listeners:
            # a copy made in one step: the event loop may add or drop a connection meanwhile
            for channel in list(listener.active_channels.values()):
                if channel.requests or channel.total_outbufs_len:
                    return True
        return False

    def closed(self, served: int) -> None:
        if served > 1 and not any(listener.active_channels for listener in self._listeners):
            self.gone = True
            if self._on_quiet is not None:
                self._on_quiet()


def _maintenance(listener: Any, now: float, *, head_timeout: float) -> None:
    """waitress's clean-up of a listener's connections (run every ``cleanup_interval`` seconds in
    the event loop): those idle for ``channel_timeout`` are closed; and more:

    - a connection whose request's head has not come whole within ``head_timeout`` is closed, and
      one whose body comes slower than ``MIN_BODY_RATE`` on average once ``head_timeout`` is past;
    - so is one whose client took nothing of its queued answer for ``SEND_TIMEOUT`` seconds, or
      that its worker gave up on for that;
    - past 90% of the connection limit open, those with no request in hand are closed, longest
      idle first, down to 80%: waitress stops accepting at the limit, and idle connections held
      every other client out until they timed out.
    """
    type(listener).maintenance(listener, now)
    started_before = time.monotonic() - head_timeout
    idle = []
    for channel in list(listener.active_channels.values()):
        request = channel.request
        if request is not None and not request.headers_finished and request.started < started_before:
            channel.will_close = True
        elif channel.connected and _taking_nothing(channel, now):
            logger.info(
                "closing the connection of %s: it took nothing of its answer for %ds",
                channel.addr[0] if channel.addr else "-",
                SEND_TIMEOUT,
            )
            channel.handle_close()
        elif not channel.connected and channel.will_close and channel.total_outbufs_len:
            # given up by its worker (``_flush_outbufs_below_high_watermark``): the event loop
            # would close it on its next write, which a client that reads nothing never allows
            channel.handle_close()
        elif request is not None and _body_too_slow(request, head_timeout):
            logger.warning(
                "closing the connection of %s: its request's body came at less than %d bytes a second",
                channel.addr[0] if channel.addr else "-",
                MIN_BODY_RATE,
            )
            channel.will_close = True
        elif request is None and not channel.requests and not channel.total_outbufs_len:
            idle.append(channel)
    crowd, limit = len(listener._map), listener.adj.connection_limit
    if crowd > limit * 9 // 10 and idle:
        idle.sort(key=lambda channel: channel.last_activity)
        closing = idle[: crowd - limit * 8 // 10]
        for channel in closing:
            channel.will_close = True
        logger.warning("%d connections open: closing %d that have no request", crowd, len(closing))


def _taking_nothing(channel: Any, now: float) -> bool:
    """Whether the connection has an answer queued (a file sent from the event loop: no worker
    waits on it) that its client took nothing of for ``SEND_TIMEOUT`` seconds. The event loop
    sends as the socket takes, and one that never does held the connection for good."""
    if channel.requests or not channel.total_outbufs_len:
        return False
    return bool(now - channel.last_activity > SEND_TIMEOUT)


def _body_too_slow(request: Any, head_timeout: float) -> bool:
    """Whether a request whose head has come is still reading a body that came at less than
    ``MIN_BODY_RATE`` on average since ``head_timeout`` seconds after its head."""
    done = getattr(request, "head_done", None)
    if done is None or request.completed or getattr(request, "checking", None) is not None:
        return False
    allowed = head_timeout + int(request.body_bytes_received) / MIN_BODY_RATE
    return time.monotonic() - float(done) > allowed


def shut_down(server: Any, thread: threading.Thread | None, timeout: float) -> None:
    """Finish running requests, close every connection (idle keep-alive ones too), join the threads."""
    # the workers first: one that finishes a response pokes the event loop, which must still be there
    server.task_dispatcher.shutdown(timeout=timeout)
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


def _close_all(server: Any) -> None:
    for channel in list(server._map.values()):
        with contextlib.suppress(OSError):
            channel.close()


# the workers --------------------------------------------------------------------------------------


class PacedDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]  # waitress has no type hints
    """A waitress task dispatcher that runs at most ``running`` tasks at a time while they make
    progress (see :mod:`nestegg_core.serve.pacing`)."""

    def __init__(
        self, *, running: int = RUNNING, stall: float = STALL, extra: int = 0, extra_idle: float = EXTRA_IDLE
    ) -> None:
        super().__init__()
        self.running = running
        self.stall = stall
        #: threads that may be started beyond :meth:`set_thread_count`'s while workers wait
        self.extra = extra
        self.extra_idle = extra_idle
        #: workers inside ``blocking()``
        self._blocked = 0
        #: extra threads alive
        self._extras = 0
        #: tasks being served by a worker and not waiting in ``blocking()``
        self._serving = 0
        #: workers the watchdog let loose beyond ``running``, not yet taken up
        self._allowance = 0
        self._progress_at = time.monotonic()
        self._watch_cv = threading.Condition(self.lock)
        self._watcher: threading.Thread | None = None
        #: the watchdog sleeps until a task is queued (not merely until its next look)
        self._watcher_idle = False
        #: workers woken for a task that have not taken one yet
        self._waking = 0
        self._closing = False

    # waitress's interface -----------------------------------------------------------------

    def add_task(self, task: Any) -> None:
        with self.lock:
            self.queue.append(task)
            if self._serving + self._waking < self.running:
                self._wake()
            else:
                self._watched()

    def handler_thread(self, thread_no: int, extra: bool = False) -> None:
        waits.register(self)  # told of its waits (waits.blocking): another task may run
        with self.lock:
            if extra:  # started for a queued task: it was counted as a worker woken for it
                self._waking = max(0, self._waking - 1)
        while True:
            with self.lock:
                while not self._may_take() and self.stop_count == 0:
                    if self.queue:
                        # a task this worker may not take yet (it was woken for it, and a task
                        # back from a wait took the place): the watchdog sees that it gets run
                        self._watched()
                    # idle while waiting, as waitress counts it
                    self.active_count -= 1
                    woken = self.queue_cv.wait(self.extra_idle if extra else None)
                    self.active_count += 1
                    if woken:
                        self._waking = max(0, self._waking - 1)
                    elif not self._may_take() and self.stop_count == 0:
                        self._retire(thread_no)
                        return
                if self.stop_count > 0:
                    self.active_count -= 1
                    self.stop_count -= 1
                    self.threads.discard(thread_no)
                    if extra:
                        self._extras -= 1
                    self.thread_exit_cv.notify()
                    break
                if self._serving >= self.running:
                    self._allowance -= 1
                task = self.queue.popleft()
                if not self.queue:
                    self._allowance = 0
                self._serving += 1
                self._progress_at = time.monotonic()
            try:
                with waits.serving():
                    task.service()
            except BaseException:
                self.logger.exception("Exception when servicing %r", task)
            finally:
                with self.lock:
                    self._serving -= 1
                    self._progress_at = time.monotonic()

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        with self.lock:
            self._closing = True
            self._watch_cv.notify()
        cancelled: bool = super().shutdown(cancel_pending=cancel_pending, timeout=timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)
        return cancelled

    # internals ----------------------------------------------------------------------------

    def _may_take(self) -> bool:
        return bool(self.queue) and (self._serving < self.running or self._allowance > 0)

    def _watched(self) -> None:
        """Make sure the watchdog looks at the queue: started, or woken if it sleeps until a task
        comes (call with the lock held)."""
        if self._watcher is None and not self._closing:
            self._watcher = threading.Thread(target=self._watch, name="nestegg-pacing", daemon=True)
            self._watcher.start()
        elif self._watcher_idle:
            self._watcher_idle = False
            self._watch_cv.notify()

    def _wake(self) -> None:
        """Wake an idle worker for a queued task, or start an extra thread when there is none and
        workers wait in ``blocking()`` (call with the lock held)."""
        if len(self.threads) - self.stop_count - self.active_count > self._waking:
            self._waking += 1
            self.queue_cv.notify()
        elif self._may_grow():
            self._waking += 1
            self._extras += 1
            thread_no = max(self.threads, default=-1) + 1
            self.threads.add(thread_no)
            self.active_count += 1
            thread = threading.Thread(
                target=self.handler_thread, args=(thread_no, True), name=f"waitress-{thread_no}", daemon=True
            )
            thread.start()

    def _may_grow(self) -> bool:
        return bool(self._blocked) and self._extras < self.extra and not self._closing and not self.stop_count

    def _retire(self, thread_no: int) -> None:
        """An extra thread idle for ``extra_idle`` ends (call with the lock held)."""
        self.active_count -= 1
        self._extras -= 1
        self.threads.discard(thread_no)
        self.thread_exit_cv.notify()

    # a wait begun or over is no progress: a reader of a download toggles them for every block it
    # sends, which would hide tasks stuck elsewhere from the watchdog
    def block(self) -> None:
        with self.lock:
            self._serving -= 1
            self._blocked += 1
            if self.queue and self._serving + self._waking < self.running:
                self._wake()

    def unblock(self) -> None:
        with self.lock:
            self._serving += 1
            self._blocked -= 1

    def _watch(self) -> None:
        """Let one more worker loose whenever tasks wait and none started or finished for
        ``stall`` seconds."""
        with self.lock:
            while not self._closing:
                if not self.queue:
                    self._watcher_idle = True
                    self._watch_cv.wait()  # until a task is queued that no worker takes at once
                    self._watcher_idle = False
                    continue
                late = self._progress_at + self.stall - time.monotonic()
                if late > 0:
                    self._watch_cv.wait(late)
                    continue
                idle = len(self.threads) - self.stop_count - self.active_count
                free = idle - self._waking
                if self._allowance < free or (free <= 0 and not self._waking and self._may_grow()):
                    # an idle worker, or else an extra thread beside the workers that wait
                    self._allowance += 1
                    self._wake()
                # counted as progress: the next worker is let loose a ``stall`` later
                self._progress_at = time.monotonic()
                self._watch_cv.wait(self.stall)


# the connections ----------------------------------------------------------------------------------


class _Task(WSGITask):  # type: ignore[misc]  # waitress has no type hints
    """waitress's task, ending quietly when the app finds its client gone (as a write would), and
    in one line when the app breaks a response off on purpose (a download that failed its check,
    after bytes went out): waitress logs any other error with its traceback, at ERROR."""

    request: Any
    channel: Any
    wrote_header: bool

    def execute(self) -> None:
        self.channel.served += 1
        try:
            super().execute()
        except ClientGone:
            raise ClientDisconnected from None
        except NesteggError as exc:
            if not self.wrote_header:
                raise  # the app answers its errors before the first byte: this is a bug, seen as one
            # the cause is the download's, which said it once (a warning); this is each client's
            logger.info("broke off the answer to %s %s: %s", self.request.command, self.request.path, exc)
            # ended as for a client gone: the connection closes without the response's end (no
            # last chunk, short of its Content-Length), so no client takes it for a whole one
            raise ClientDisconnected from None


class _ErrorTask(ErrorTask):  # type: ignore[misc]  # waitress has no type hints
    """waitress's answer to a request it answers itself (a gate's refusal, a request it cannot
    parse or that is over its limits), with the access log line the app's answers get: an
    upload refused for its credentials is a line like any other request's."""

    def execute(self) -> None:
        started = time.perf_counter()
        super().execute()
        request = self.request  # one whose head was never read whole has no command nor path
        environ = {
            "REMOTE_ADDR": (self.channel.addr or ("-",))[0],
            "REQUEST_METHOD": getattr(request, "command", None) or "-",
            "PATH_INFO": getattr(request, "path", None) or "-",
            "QUERY_STRING": getattr(request, "query", None) or "",
        }
        log_access(environ, str(self.status).split(" ", 1)[0], str(self.content_length), started)


class _Channel(HTTPChannel):  # type: ignore[misc]  # waitress has no type hints
    """waitress's connection, with deadlines and a gate.

    - A file it answers with (``wsgi.file_wrapper``) is sent by the kernel (``sendfile``) where
      it can be; else it reads it at most ``SEND_BLOCK`` at a time: waitress reads a file in
      blocks of the socket's send buffer, which Linux makes 4 MiB on loopback, each block twice.
    - A worker waiting for the client to read (a response over the high watermark) declares the
      wait (``pacing``) and gives up after ``SEND_TIMEOUT`` seconds without a byte taken: the
      connection is closed and the task ends. waitress waits without end, and its idle
      connection clean-up spares a connection with a request.
    - Requests are parsed by :class:`_Parser`, which asks ``gate`` before reading a body; a
      check it must make off the event loop (a password) is run on a worker meanwhile, and the
      connection is not read until it is done.
    - It tells the server's :class:`Clients` that it opened, and once closed how many requests
      it served.
    """

    task_class = _Task
    error_task_class = _ErrorTask
    sendbuf_len: int
    connected: bool
    request: Any

    def __init__(
        self,
        *args: Any,
        gate: BodyGate | None = None,
        clients: Clients | None = None,
        **kwargs: Any,
    ) -> None:
        self.parser_class = functools.partial(_Parser, gate=gate)
        self._clients = clients
        #: requests taken up on this connection (by ``_Task``)
        self.served = 0
        #: a refusal is being answered: nothing more is read; the connection closes after it
        self.refusing = False
        super().__init__(*args, **kwargs)
        self.sendbuf_len = min(self.sendbuf_len, SEND_BLOCK)
        if clients is not None:
            clients.opened()

    # event loop ----------------------------------------------------------------------------

    def del_channel(self, map: Any = None) -> None:
        had = self._fileno is not None  # once: a channel closed again is no other connection
        super().del_channel(map)
        if had and self._clients is not None:
            self._clients.closed(self.served)

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

    def _flush_some(self, do_close: bool = True) -> bool:
        # waitress's own loop (3.0), with a file sent by the kernel: its get() reads a block into
        # memory and its skip() reads it again to move on, on the event loop, under the GIL
        sent = 0
        while True:
            outbuf = self.outbufs[0]
            outbuflen = outbuf.__len__()
            kernel = SENDFILE and type(outbuf) is ReadOnlyFileBasedBuffer
            stop = False
            while outbuflen > 0:
                num_sent = self._send_file(outbuf, outbuflen, do_close) if kernel else None
                if num_sent is None:  # not a file the kernel can send: as waitress sends it
                    kernel = False
                    chunk = outbuf.get(self.sendbuf_len)
                    if not chunk:  # a file that ended before its size (waitress would wait on)
                        self._ended_early(outbuflen)
                        stop = True
                        break
                    num_sent = self.send(chunk, do_close=do_close)
                    if num_sent:
                        outbuf.skip(num_sent, True)
                if not num_sent:  # nothing taken: the client reads later, or is gone
                    stop = True
                    break
                outbuflen -= num_sent
                sent += num_sent
                self.total_outbufs_len -= num_sent
            else:
                if len(self.outbufs) > 1:
                    done = self.outbufs.pop(0)
                    try:
                        done.close()
                    except Exception:
                        logger.exception("closing a sent buffer failed")
                else:
                    stop = True  # all sent; self.outbufs[-1] stays, to be written to
            if stop:
                break
        if sent:
            self.last_activity = time.time()
            return True
        return False

    def _send_file(self, outbuf: Any, count: int, do_close: bool) -> int | None:
        """Up to ``count`` bytes of the file of ``outbuf`` sent from where it stands, as many as
        the socket takes; 0 for none now, or the client gone, or the file ended early (the
        connection then closes: its client gets fewer bytes than it was told); None if this file
        cannot be sent by the kernel."""
        file = outbuf.file
        try:
            source, offset = file.fileno(), file.tell()
        except (AttributeError, OSError, ValueError):
            return None
        try:
            num_sent = os.sendfile(self.socket.fileno(), source, offset, count)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in _NO_SENDFILE:
                return None
            if exc.errno in _DISCONNECTED:
                if do_close:
                    self.handle_close()
                return 0
            raise
        if num_sent == 0:
            self._ended_early(count)
            return 0
        file.seek(offset + num_sent)
        outbuf.remain -= num_sent
        return num_sent

    def _ended_early(self, missing: int) -> None:
        """A file answered ends ``missing`` bytes before the size its client was told: the answer
        cannot be whole, so the connection closes (the event loop does, once this flush returns)."""
        logger.warning("a file sent to %s:%s ended %d bytes early", *self.addr[:2], missing)
        self.will_close = True

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
    section 6.3: a front server may frame it otherwise, smuggling a request past it), with
    ``chunked`` twice, an HTTP/1.0 one with ``Transfer-Encoding`` (section 6.1), and a
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
        #: when its first byte came (see ``create``'s ``head_timeout``), when its head was whole
        self.started = time.monotonic()
        self.head_done: float | None = None

    def parse_header(self, header_plus: bytes) -> None:
        framing = _framing(header_plus) if b"transfer-encoding" in header_plus.lower() else _UNENCODED
        both = framing.encoded and framing.length
        try:
            super().parse_header(header_plus)
        except TransferEncodingNotImplemented:
            if not both:
                raise
        except ValueError:  # a number past Python's limit on digits
            raise ParsingError("Content-Length is invalid") from None
        if both:
            raise ParsingError("a request with both Content-Length and Transfer-Encoding is refused")
        if framing.codings.count(b"chunked") > 1:
            # RFC 9112, section 6.1: chunked is applied once; a server in front may read the
            # twice-chunked body otherwise (waitress took it as chunked once)
            raise ParsingError("a request with Transfer-Encoding chunked more than once is refused")
        if framing.encoded and self.version == "1.0":
            # RFC 9112, section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing
            # (waitress framed it by its Content-Length, none: what followed was another request)
            raise ParsingError("an HTTP/1.0 request with Transfer-Encoding is refused")

    def received(self, data: bytes) -> int:
        if self.checking is not None:  # kept until the check is done (a few KiB: one read)
            self._held += data
            return len(data)
        if self.refused:
            return len(data)  # the body of a refused request is never read
        in_headers = not self.headers_finished
        consumed: int = super().received(data)
        if in_headers and self.headers_finished:
            self.head_done = time.monotonic()
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


@dataclass(frozen=True)
class _Framing:
    #: the head has a Transfer-Encoding field
    encoded: bool
    #: the head has a Content-Length field
    length: bool
    #: the transfer codings its Transfer-Encoding fields name, in order, lower-cased
    codings: tuple[bytes, ...]


def _framing(header_plus: bytes) -> _Framing:
    """The framing fields of a request's head (one with a Transfer-Encoding field), read as
    waitress reads fields: a folded line goes on the field before, two fields of a name are one."""
    lines: list[bytes] = []
    for line in header_plus.split(b"\r\n")[1:]:
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += line
        elif line:
            lines.append(line)
    encoded = length = False
    codings: list[bytes] = []
    for line in lines:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = True
        elif name.lower() == b"transfer-encoding":
            encoded = True
            codings += [c.strip(b" \t").lower() for c in value.split(b",") if c.strip(b" \t")]
    return _Framing(encoded=encoded, length=length, codings=tuple(codings))


_UNENCODED = _Framing(encoded=False, length=False, codings=())


class _Refusal(Error):  # type: ignore[misc]  # waitress has no type hints
    """A gate's refusal, answered as the app would answer it (the message as reason and body)."""

    def __init__(self, error: NesteggError) -> None:
        super().__init__(str(error))
        self.code = error.status
        self.retry_after = error.retry_after if isinstance(error, Unavailable) else None

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:  # noqa: ARG002
        body = (" ".join(self.body.split()) + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return status_line(self.code, self.body), headers, body
