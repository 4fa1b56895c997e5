"""Misbehaving upstreams on 127.0.0.1 for the fault, race and hostile-input tests.

- :func:`refused_url`: an index URL where nothing listens (connection refused);
- :func:`unconnectable_url`: an index URL whose connections are never made (dropped SYNs);
- :class:`RawUpstream`: a hand-written HTTP/1.1 server whose answers a test scripts byte for byte,
  including never answering (a timeout), stopping halfway through a body, bodies without end or
  that drip, and framing of its own (``Content-Length: 10`` with a longer chunked body);
- :class:`Trickle`: WSGI middleware that sends the first bytes of a file, then holds the rest
  back until released, so that a download is reliably in flight;
- :func:`verify_cache`: every cached file checked against its record and the expected hashes;
- :func:`health_ms`, :func:`never_reading`, :func:`busy_workers`: what a server does beside
  clients that never read or that went away.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestegg_core.http.types import WSGIApp
from nestegg_core.testing import find_uv


def refused_url() -> str:
    """An index URL on a loopback port with nothing listening: every connection is refused.

    The port comes from a socket bound to port 0 and closed, so the kernel does not hand it out
    again at once; nothing is ever bound to it again here.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/simple/"


@contextlib.contextmanager
def unconnectable_url() -> Iterator[str]:
    """An index URL on a loopback port where a connection is never made: the socket listens with
    a backlog of 0 and never accepts, and one connection fills its queue, so the kernel drops the
    SYN of every other one (as a black-holed route does) and the client waits for its deadline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            yield f"http://127.0.0.1:{port}/simple/"


@dataclass
class Answer:
    """One scripted answer of :class:`RawUpstream`."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    #: send no answer at all and keep the connection open (the client times out)
    hang: bool = False
    #: send only this many bytes of the body, then keep the connection open without a word
    stall_after: int | None = None
    #: a Content-Length other than the body's (a lying upstream)
    length: int | None = None
    #: the body in pieces, each sent as it comes (bodies without end, bodies that drip):
    #: delimited by closing the connection, or chunked if ``chunked``; a Content-Length is sent
    #: only if ``length`` gives one
    pieces: Callable[[], Iterable[bytes]] | None = None
    chunked: bool = False
    #: after the last of ``pieces``, keep the connection open without a word (see ``stall_after``)
    hold: bool = False
    #: sent as they are after the status line (headers, blank line, body), then the connection closed
    raw: bytes | None = None


Script = Callable[[str, str], Answer]


class RawUpstream:
    """A tiny threaded HTTP server on ``127.0.0.1:0`` answering what ``script(method, path)`` says."""

    def __init__(self, script: Script, *, port: int = 0) -> None:
        """``port``: the port of a server just stopped, to stand in for it at the same URL."""
        self.script = script
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._sock = socket.socket()
        if port:  # its connections may linger in TIME_WAIT
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="raw-upstream", daemon=True)

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            for client in self._clients:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
        self._thread.join(5)

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for _, p, _ in self.seen if p == path)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # a client closed by __exit__ before this thread ran is done with too
        with contextlib.suppress(OSError), client:
            client.settimeout(30)
            self._exchange(client)

    def _exchange(self, client: socket.socket) -> None:
        buffer = b""
        while not self._stop.is_set():
            while b"\r\n\r\n" not in buffer:
                chunk = client.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            with self._lock:
                self.seen.append((method, path, headers))
            answer = self.script(method, path)
            if answer.hang:
                self._stop.wait(60)
                return
            if answer.raw is not None:
                client.sendall(f"HTTP/1.1 {answer.status} Scripted\r\n".encode("latin-1") + answer.raw)
                return
            if answer.pieces is not None:
                self._send_pieces(client, answer, method)
                return
            body = answer.body
            length = len(body) if answer.length is None else answer.length
            out = [f"HTTP/1.1 {answer.status} Scripted", f"Content-Length: {length}"]
            out += [f"{k}: {v}" for k, v in answer.headers.items()]
            client.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            if method == "HEAD":
                continue
            if answer.stall_after is not None:
                client.sendall(body[: answer.stall_after])
                self._stop.wait(60)
                return
            client.sendall(body)
            if answer.length is not None and answer.length != len(body):
                return  # closed: the connection cannot be reused after a lying length

    def _send_pieces(self, client: socket.socket, answer: Answer, method: str) -> None:
        assert answer.pieces is not None
        out = [f"HTTP/1.1 {answer.status} Scripted", "Connection: close"]
        if answer.length is not None:
            out.append(f"Content-Length: {answer.length}")
        if answer.chunked:
            out.append("Transfer-Encoding: chunked")
        out += [f"{k}: {v}" for k, v in answer.headers.items()]
        client.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if method == "HEAD":
            return
        for piece in answer.pieces():
            if self._stop.is_set():
                return
            client.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if answer.chunked else piece)
        if answer.hold:
            self._stop.wait(60)
            return
        if answer.chunked:
            client.sendall(b"0\r\n\r\n")


class Trickle:
    """WSGI middleware: file bodies of ``paths`` send ``first`` bytes, then wait for :attr:`release`."""

    def __init__(self, paths: Iterable[str] = (), *, first: int = 64 * 1024) -> None:
        self.paths = set(paths)
        self.first = first
        self.release = threading.Event()
        #: set once a held-back body has sent its first bytes
        self.holding = threading.Event()

    def __call__(self, app: WSGIApp) -> WSGIApp:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            result = app(environ, start_response)
            if environ.get("PATH_INFO") not in self.paths:
                return result
            return self._trickle(result)

        return wrapped

    def _trickle(self, result: Iterable[bytes]) -> Iterator[bytes]:
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        yield body[: self.first]
        self.holding.set()
        self.release.wait(60)
        yield body[self.first :]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_cache(files: Path, expected: Mapping[str, str] | None = None) -> int:
    """Check every file of a mirror cache's ``files`` dir; returns how many were checked.

    Each cached distribution must have a record whose sha256 and size it matches (and, when
    ``expected`` maps its filename, that hash too); no partial download may be left over.
    """
    checked = 0
    if not files.is_dir():
        return 0
    for project in files.iterdir():
        for path in project.iterdir():
            name = path.name
            assert not name.endswith(".part"), f"partial download left over: {path}"
            if name.startswith(".") or name.endswith((".json", ".metadata", ".metadata.checked")):
                continue
            record = json.loads((project / f"{name}.json").read_text())
            digest = sha256_file(path)
            # nestegg's own sha256, kept apart from the listed hashes when the upstream vouched for none
            own = record.get("own_sha256", record["hashes"].get("sha256"))
            assert digest == own, f"{path} does not match its record"
            assert path.stat().st_size == record["size"], f"{path} has the wrong size"
            if expected is not None and name in expected:
                assert digest == expected[name], f"{path} is not the upstream's file"
            checked += 1
    return checked


def health_ms(port: int, timeout: float = 10.0) -> float:
    """Milliseconds until ``/health`` on ``port`` is answered whole, on a new connection."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    return (time.perf_counter() - started) * 1000


def never_reading(port: int, request: bytes, count: int) -> list[socket.socket]:
    """``count`` connections that send ``request`` and never read a byte of the answer (their
    receive buffers small); the caller closes them."""
    clients = []
    try:
        for _ in range(count):
            client = socket.socket()
            clients.append(client)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.settimeout(10)
            client.connect(("127.0.0.1", port))
            client.sendall(request)
    except BaseException:
        for client in clients:
            client.close()
        raise
    return clients


def busy_workers(server: Any) -> int:
    """The worker threads of a mirror's waitress ``server`` running a task (waiting ones too)."""
    dispatcher = server.task_dispatcher
    with dispatcher.lock:
        return int(dispatcher.active_count) + len(dispatcher.queue)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def install_command(installer: str, python: Path, *requirements: str) -> list[str]:
    """The command that installs ``requirements`` into the venv of ``python`` with ``installer``
    ("pip" or "uv"), neither keeping a cache."""
    if installer == "pip":
        return [str(python), "-m", "pip", "install", "--no-cache-dir", *requirements]
    uv = find_uv()
    assert uv is not None
    return [uv, "pip", "install", "--no-cache", "--python", str(python), *requirements]
