"""A warm cache behind an upstream that hangs: N pages past their TTL asked one after another::

    python benchmarks/unreachable.py [PAGES] [TIMEOUT]

The upstream on 127.0.0.1 serves a page per name for one warm pass, then accepts connections
and never answers. Prints JSON: seconds for the whole pass, the slowest and the median page, and
how many requests reached the hanging upstream (each one a wait of TIMEOUT seconds).
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from nestegg_core import Config, Mirror


class Upstream:
    """Answers ``GET /simple/<name>/`` with a one-link page until ``hang`` is set; then never answers."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.hung = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(60)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                if self.hang.is_set():
                    self.hung += 1
                    self.held.append(client)  # kept open, never answered
                    return
                name = head.split(b" ")[1].strip(b"/").split(b"/")[-1].decode()
                body = f'<a href="/files/{name}-1.0.tar.gz">{name}-1.0.tar.gz</a>'.encode()
                client.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
        except OSError:
            client.close()


def main(argv: list[str]) -> int:
    pages = int(argv[0]) if argv else 10
    timeout = float(argv[1]) if len(argv) > 1 else 2.0
    upstream = Upstream()
    url = f"http://127.0.0.1:{upstream.port}/simple/"
    with tempfile.TemporaryDirectory() as nest:
        config = Config(nestegg_dir=Path(nest), port=0, index_url=url, ttl=0, timeout=timeout)
        mirror = Mirror(config).start()
        try:
            names = [f"p{i}" for i in range(pages)]
            for name in names:  # the warm pass
                urllib.request.urlopen(f"{mirror.index_url}{name}/", timeout=60).read()
            upstream.hang.set()
            times = []
            began = time.perf_counter()
            for name in names:  # every page past its TTL (ttl 0): revalidated, or served stale
                start = time.perf_counter()
                urllib.request.urlopen(f"{mirror.index_url}{name}/", timeout=120).read()
                times.append(time.perf_counter() - start)
            total = time.perf_counter() - began
        finally:
            mirror.stop()
    result = {
        "pages": pages,
        "timeout": timeout,
        "total": round(total, 3),
        "slowest": round(max(times), 3),
        "median": round(statistics.median(times), 3),
        "waits_at_the_upstream": upstream.hung,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
