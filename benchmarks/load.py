"""A small HTTP/1.1 client and the bounded load loops the benchmarks drive servers with.

The client speaks just enough HTTP for index pages and files (keep-alive, Content-Length or
chunked bodies, redirects) with little per-request work, so that the numbers are the server's
rather than the client's: a generic client's header parsing costs more than a fast server's
answer. Every loop is bounded by a request count and a deadline, and talks to loopback only.
"""

from __future__ import annotations

import hashlib
import socket
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from nestegg_core.serve.server import is_loopback

HTML = "text/html"
JSON = "application/vnd.pypi.simple.v1+json"
#: what pip's (and uv's) requests for pages accept: a server may compress them
PAGE_ENCODING = "gzip, deflate"
#: what pip asks for: JSON preferred, HTML accepted
PIP_ACCEPT = f"{JSON}, application/vnd.pypi.simple.v1+html; q=0.1, {HTML}; q=0.01"
#: what pip's User-Agent starts with (its linehaul data follows): the mirror's pages for pip go by it
PIP_USER_AGENT = 'pip/23.2.1 {"installer":{"name":"pip","version":"23.2.1"}}'


class HttpError(Exception):
    """A response the benchmark cannot use (bad status, broken connection)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    size: int
    sha256: str | None = None


class Connection:
    """One keep-alive connection to an HTTP server (``http://127.0.0.1:PORT``)."""

    def __init__(self, url: str, timeout: float = 60.0, *, user_agent: str = "nestegg-bench") -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not is_loopback(parts.hostname or ""):
            raise ValueError(f"the benchmark only talks to loopback over http, not {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.user_agent = user_agent
        self._sock: socket.socket | None = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._buffer = sock, b""
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def get(
        self, path: str, accept: str = "*/*", *, digest: bool = False, encoding: str = PAGE_ENCODING
    ) -> Response:
        """GET ``path``; the body is read and dropped (hashed if ``digest``, as sent).

        Pages are asked for with the ``Accept-Encoding`` pip and uv send (``encoding``); files
        with ``identity``, as pip asks for them.
        """
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: {accept}\r\n"
            f"Accept-Encoding: {encoding}\r\nUser-Agent: {self.user_agent}\r\n\r\n"
        ).encode()
        for attempt in (0, 1):
            sock = self._connect()
            try:
                sock.sendall(request)
                return self._read_response(sock, digest)
            except (ConnectionError, HttpError) as exc:
                # a server may close an idle keep-alive connection; retry once on a new one
                self.close()
                if attempt or not isinstance(exc, ConnectionError):
                    raise HttpError(f"GET {path}: {exc}") from None
        raise AssertionError("unreachable")

    def _read_head(self, sock: socket.socket) -> bytes:
        while b"\r\n\r\n" not in self._buffer:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the response head")
            self._buffer += data
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        return head

    def _read_response(self, sock: socket.socket, digest: bool) -> Response:
        head = self._read_head(sock)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        hasher = hashlib.sha256() if digest else None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            size = self._read_chunked(sock, hasher)
        elif "content-length" in headers:
            size = self._read_exactly(sock, int(headers["content-length"]), hasher)
        elif status in (204, 304) or 100 <= status < 200:
            size = 0
        else:  # the body runs to the end of the connection
            size = self._read_to_close(sock, hasher)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, size, hasher.hexdigest() if hasher else None)

    def _read_exactly(self, sock: socket.socket, length: int, hasher: hashlib._Hash | None) -> int:
        remaining = length
        if self._buffer:
            piece, self._buffer = self._buffer[:remaining], self._buffer[remaining:]
            remaining -= len(piece)
            if hasher:
                hasher.update(piece)
        buffer = bytearray(1024 * 1024)
        view = memoryview(buffer)
        while remaining > 0:
            got = sock.recv_into(view, min(len(buffer), remaining))
            if not got:
                raise ConnectionError(f"connection closed {remaining} bytes before the end of the body")
            remaining -= got
            if hasher:
                hasher.update(view[:got])
        return length

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\r\n" not in self._buffer:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed inside a chunked body")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _read_chunked(self, sock: socket.socket, hasher: hashlib._Hash | None) -> int:
        total = 0
        while True:
            length = int(self._read_line(sock).split(b";", 1)[0], 16)
            if length == 0:
                while self._read_line(sock):  # trailers, then the empty line
                    pass
                return total
            total += self._read_exactly(sock, length, hasher)
            self._read_line(sock)

    def _read_to_close(self, sock: socket.socket, hasher: hashlib._Hash | None) -> int:
        total = len(self._buffer)
        if hasher:
            hasher.update(self._buffer)
        self._buffer = b""
        while data := sock.recv(1024 * 1024):
            total += len(data)
            if hasher:
                hasher.update(data)
        self.close()
        return total


def fetch(
    url: str,
    accept: str = "*/*",
    *,
    digest: bool = False,
    timeout: float = 120.0,
    encoding: str = PAGE_ENCODING,
) -> Response:
    """GET an absolute URL on a new connection, following up to five redirects (loopback only)."""
    for _ in range(6):
        parts = urlsplit(url)
        connection = Connection(f"{parts.scheme}://{parts.netloc}", timeout=timeout)
        try:
            response = connection.get(
                parts.path + (f"?{parts.query}" if parts.query else ""),
                accept,
                digest=digest,
                encoding=encoding,
            )
        finally:
            connection.close()
        if response.status in (301, 302, 303, 307, 308) and "location" in response.headers:
            url = urljoin(url, response.headers["location"])
            continue
        return response
    raise HttpError(f"too many redirects from {url!r}")


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(
    base_url: str,
    paths: Sequence[str],
    *,
    accept: str,
    clients: int,
    max_requests: int,
    max_seconds: float,
) -> LoadResult:
    """``clients`` threads, each on its own keep-alive connection, GET ``paths`` round-robin.

    Stops after ``max_requests`` in all or ``max_seconds``, whichever comes first.
    """
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors = 0
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(offset: int) -> None:
        nonlocal issued, errors
        connection = Connection(base_url)
        mine: list[float] = []
        failed = 0
        index = offset
        try:
            start_gate.wait(timeout=30)
            while time.perf_counter() < deadline[0]:
                with lock:
                    if issued >= max_requests:
                        break
                    issued += 1
                path = paths[index % len(paths)]
                index += 1
                started = time.perf_counter()
                try:
                    response = connection.get(path, accept)
                except HttpError:
                    failed += 1
                    continue
                if response.status != 200:
                    failed += 1
                    continue
                mine.append(time.perf_counter() - started)
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)
                errors += failed

    threads = [threading.Thread(target=client, args=(i * 7,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + max_seconds
    started = time.perf_counter()
    start_gate.wait(timeout=30)
    for thread in threads:
        thread.join(max_seconds + 60)
    elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), errors, elapsed, latencies)


@dataclass
class ConcurrentResult:
    seconds: float
    ok: int
    failed: int


def concurrent_get(url: str, clients: int, expected_size: int, *, timeout: float = 120.0) -> ConcurrentResult:
    """``clients`` simultaneous GETs of one file (redirects followed): time until the last ends."""
    gate = threading.Barrier(clients + 1)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def client() -> None:
        good = False
        try:
            gate.wait(timeout=30)
            response = fetch(url, timeout=timeout, encoding="identity")
            good = response.status == 200 and response.size == expected_size
        except (HttpError, OSError, threading.BrokenBarrierError):
            good = False
        with lock:
            outcomes.append(good)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    gate.wait(timeout=30)
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout + 30)
    elapsed = time.perf_counter() - started
    ok = sum(outcomes)
    return ConcurrentResult(elapsed, ok, clients - ok)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
