"""The waitress server a mirror runs on: how it sends what it answers."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel

from nestegg_core import Config, Mirror
from nestegg_core.index.refresh import Refresher
from nestegg_core.serve import _waitress
from nestegg_core.serve._waitress import PacedDispatcher
from nestegg_core.serve.server import make_server
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import MirrorFactory

waitress_version = version("waitress")


def _record_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes waitress reads from the files it sends, as they happen."""
    reads: list[int] = []
    original = ReadOnlyFileBasedBuffer.get

    def get(self: ReadOnlyFileBasedBuffer, numbytes: int = -1, skip: bool = False) -> Any:
        data = original(self, numbytes, skip)
        reads.append(len(data))
        return data

    monkeypatch.setattr(ReadOnlyFileBasedBuffer, "get", get)
    return reads


def _record_sendfile(monkeypatch: pytest.MonkeyPatch, fails: int | None) -> list[int]:
    """The bytes each ``os.sendfile`` call sent, as they happen; with ``fails``, every call raises
    that errno instead, as for a file on a file system the kernel cannot send from."""
    sent: list[int] = []
    original = os.sendfile

    def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        if fails is not None:
            raise OSError(fails, os.strerror(fails))
        done = original(out_fd, in_fd, offset, count)
        sent.append(done)
        return done

    monkeypatch.setattr(os, "sendfile", sendfile)
    return sent


@pytest.mark.parametrize(
    ("kernel", "fails", "read"),
    [
        (True, None, False),  # from the page cache to the socket: waitress reads none of it
        (True, errno.EINVAL, True),  # a file the kernel cannot send: read and sent, as without
        (False, None, True),  # no sendfile (not Linux): read a block at a time
    ],
    ids=["sendfile", "sendfile-refused", "read"],
)
def test_a_file_is_sent_by_the_kernel_else_a_block_at_a_time(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    kernel: bool,
    fails: int | None,
    read: bool,
) -> None:
    if kernel and not _waitress.SENDFILE:
        pytest.skip("sendfile is used on Linux only")
    monkeypatch.setattr(_waitress, "SENDFILE", kernel)
    [wheel] = upstream.add("big", "1.0", sdist=False, payload_size=3_000_000)
    mirror = make_mirror()
    url = f"{mirror.url}/files/big/{wheel.filename}"
    http.get(url).raise_for_status()  # cached: sent from disk from now on
    reads = _record_reads(monkeypatch)
    sent = _record_sendfile(monkeypatch, fails)
    response = http.get(url)
    response.raise_for_status()
    assert hashlib.sha256(response.content).hexdigest() == wheel.sha256
    if read:
        assert not sent
        assert sum(reads) == len(response.content) > 8 * _waitress.SEND_BLOCK
        # not in blocks of the socket's send buffer (4 MiB on Linux's loopback)
        assert max(reads) <= _waitress.SEND_BLOCK
    else:
        assert not reads
        assert sum(sent) == len(response.content)


@pytest.mark.parametrize("kernel", [True, False], ids=["sendfile", "read"])
def test_a_file_that_shrinks_while_it_is_sent_breaks_its_answer_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: bool
) -> None:
    """The client is told the size the file had; the file then ends sooner. The connection is
    closed: the client sees a short body, never an answer that looks whole (waitress alone would
    wait on, and its client with it)."""
    if kernel and not _waitress.SENDFILE:
        pytest.skip("sendfile is used on Linux only")
    monkeypatch.setattr(_waitress, "SENDFILE", kernel)
    data = os.urandom(1_500_000)
    path = tmp_path / "file"
    path.write_bytes(data)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)

    original = ReadOnlyFileBasedBuffer.prepare

    def prepare(self: ReadOnlyFileBasedBuffer, size: int | None = None) -> Any:
        remain = original(self, size)
        os.truncate(path, len(data) // 3)  # after waitress took its size
        return remain

    monkeypatch.setattr(ReadOnlyFileBasedBuffer, "prepare", prepare)
    server = make_server(app, Config(port=0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        response = requests.get(f"http://127.0.0.1:{server.effective_port}/", stream=True, timeout=10)
        assert response.headers["Content-Length"] == str(len(data))
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            response.content  # noqa: B018 - read to the end
    finally:
        _waitress.shut_down(server, thread, 5)


def test_the_server_tells_while_an_answer_is_still_sent(tmp_path: Path) -> None:
    """What the background waits for besides a request (``Clients.sending``): uv asks for every
    wheel at once, then reads them for seconds while it unpacks them."""
    data = b"\0" * 40_000_000  # more than loopback's socket buffers take
    path = tmp_path / "file"
    path.write_bytes(data)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)

    server = make_server(app, Config(port=0))
    clients = _waitress.clients_of(server)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert not clients.sending()
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(f"http://127.0.0.1:{server.effective_port}/", stream=True, timeout=10)
            time.sleep(0.2)  # the request served, its answer waits for the client
            assert clients.sending()
            assert len(response.content) == len(data)
            deadline = time.monotonic() + 10
            while clients.sending() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not clients.sending()  # its connection still open, idle
            assert server.active_channels
    finally:
        _waitress.shut_down(server, thread, 5)


def test_the_server_paces_its_workers_and_marks_slow_clients_as_waits(make_mirror: MirrorFactory) -> None:
    mirror = make_mirror()
    waitress_server: Any = mirror._server
    assert isinstance(waitress_server.task_dispatcher, PacedDispatcher)
    assert waitress_server.channel_class.func is _waitress._Channel
    # the method the channel wraps is waitress's own: a waitress that renamed it would leave a
    # slow client's wait undeclared (the watchdog would still let another task run)
    assert "_flush_outbufs_below_high_watermark" in vars(HTTPChannel)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts this process's descriptors in /proc")
def test_a_stopped_mirror_holds_no_file_or_connection_open(upstream: PrivateIndex, tmp_path: Path) -> None:
    """A test run or a program that starts mirrors one after another would run out of descriptors:
    each kept its nest's generation files and its connections to the upstream open."""
    (wheel,) = upstream.add("pkg", "1.0", sdist=False)

    def one_mirror(nest: Path) -> None:
        with (
            Mirror(Config(nestegg_dir=nest, port=0, index_url=upstream.index_url)) as mirror,
            requests.Session() as http,
        ):
            http.get(mirror.index_url + "pkg/").raise_for_status()
            http.get(f"{mirror.url}/files/pkg/{wheel.filename}").raise_for_status()

    one_mirror(tmp_path / "first")  # what is made once a process (imports, the upstream's own)
    before = len(os.listdir("/proc/self/fd"))
    for number in range(5):
        one_mirror(tmp_path / f"nest-{number}")
    assert len(os.listdir("/proc/self/fd")) - before <= 2  # 6 a mirror before


@pytest.mark.parametrize(
    ("requests_each", "gone"),
    [
        ((2, 3), [False, True]),  # installers' connections, kept alive: gone once both close
        ((1, 1), [False, False]),  # a connection for each request (a proxy's): never counts as gone
        ((3, 1), [False, False]),  # the last to close served one request: not said (the idle rule)
    ],
    ids=["kept-alive", "one-request-each", "last-one-request"],
)
def test_the_background_is_told_when_the_clients_are_gone(
    make_mirror: MirrorFactory,
    monkeypatch: pytest.MonkeyPatch,
    requests_each: tuple[int, int],
    gone: list[bool],
) -> None:
    pokes: list[Refresher] = []
    monkeypatch.setattr(Refresher, "poke", lambda self: pokes.append(self))  # noqa: PLW0108  # a method: a bound append is no descriptor
    mirror = make_mirror()
    clients = _waitress.clients_of(mirror._server)
    assert mirror.repository.clients_gone is not None
    sessions = []
    for count in requests_each:
        session = requests.Session()
        session.trust_env = False
        for _ in range(count):
            assert session.get(f"{mirror.url}/health", timeout=10).status_code == 200
        sessions.append(session)
    seen = []
    for session in sessions:
        before = len(mirror._server.active_channels)
        session.close()
        deadline = time.monotonic() + 10
        while len(mirror._server.active_channels) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # told in the same turn of the event loop
        seen.append(mirror.repository.clients_gone())
    assert seen == gone
    # both the pages made again and those kept start
    background = [mirror.repository.refresher, mirror.repository.keeper]
    assert pokes == background * gone.count(True)
    # a new connection: not gone any more
    with requests.Session() as session:
        session.trust_env = False
        session.get(f"{mirror.url}/health", timeout=10)
        assert not clients.gone
    mirror.stop()
    assert mirror.repository.clients_gone is None


@pytest.mark.parametrize(
    ("request_bytes", "logged"),
    [
        (b"GET /simple/ HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", '"GET /simple/" 413 '),
        (b"GET /simple/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", '"GET /simple/" 501 '),
        (b"NOT A REQUEST\r\n\r\n", '"- -" 400 '),
    ],
    ids=["too-large", "unknown-coding", "unparsable"],
)
def test_what_the_server_answers_itself_has_its_access_log_line(
    make_mirror: MirrorFactory, caplog: pytest.LogCaptureFixture, request_bytes: bytes, logged: str
) -> None:
    mirror = make_mirror()
    with caplog.at_level(logging.INFO, logger="nestegg_core.access"):
        with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as client:
            client.sendall(request_bytes)
            answer = client.recv(65536)
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "nestegg_core.access"]
    assert len(lines) == 1, (lines, answer)
    assert logged in lines[0], (lines, answer)
