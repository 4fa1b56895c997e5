"""A local fake upstream for the benchmarks: a nestegg PrivateIndex that counts and paces file downloads.

Run as a separate process (so its threads never share a GIL with the load generator)::

    python benchmarks/upstream.py DIR [--page-files 3000] [--wheel-mb 32] [--rate-mb 50]

It publishes three projects, prints one JSON line describing them and its URL, and serves until
its standard input closes (the parent dies or closes the pipe) or it gets SIGTERM:

* ``bench-probe``: one small wheel, the page every start-up is timed to;
* ``bench-bigpage``: thousands of wheels (three tags a version), the very large project page;
* ``bench-bigwheel``: one large wheel that sixteen clients ask a cold mirror for at once.

``GET /_bench/counts`` answers how many times each file was downloaded (GETs under ``/files/``),
``GET /_bench/reset`` zeroes them. File bodies are paced to ``--rate-mb`` MB/s per response, like
a real link, so that concurrent cold requests really overlap.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

PROBE = "bench-probe"
BIGPAGE = "bench-bigpage"
BIGWHEEL = "bench-bigwheel"
#: the tags every version of the big page is published with
BIGPAGE_TAGS = ("py3-none-any", "cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-win_amd64")

WSGIApp = Callable[..., Iterable[bytes]]


class CountingPacer:
    """WSGI middleware: counts file downloads and paces their bodies to ``rate`` bytes/s."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, app: WSGIApp) -> WSGIApp:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/_bench/counts":
                with self.lock:
                    return _json(start_response, dict(self.counts))
            if path == "/_bench/reset":
                with self.lock:
                    self.counts.clear()
                return _json(start_response, {})
            result = app(environ, start_response)
            if not path.startswith("/files/") or environ["REQUEST_METHOD"] != "GET":
                return result
            with self.lock:
                self.counts[path] += 1
            return _Paced(result, self.rate) if self.rate > 0 else result

        return wrapped


class _Paced:
    """A response body delivered no faster than ``rate`` bytes/s."""

    def __init__(self, result: Iterable[bytes], rate: float) -> None:
        self.result = result
        self.rate = rate

    def __iter__(self) -> Iterator[bytes]:
        started = time.monotonic()
        sent = 0
        for chunk in self.result:
            # split big blocks so the pace is smooth, not bursts of 256 KiB
            for start in range(0, len(chunk), 64 * 1024):
                piece = chunk[start : start + 64 * 1024]
                sent += len(piece)
                ahead = sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                yield piece

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def _json(start_response: Callable[..., Any], data: object) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def publish(index: PrivateIndex, root: Path, *, page_files: int, wheel_mb: int) -> dict[str, Any]:
    """Generate and publish the three projects; describe them for the benchmark."""
    index.add(PROBE, "1.0", sdist=False)
    versions = max(1, page_files // len(BIGPAGE_TAGS))
    for minor in range(versions):
        for tag in BIGPAGE_TAGS:
            index.add(BIGPAGE, f"1.{minor}", sdist=False, wheel_tag=tag)
    spec = PackageSpec(name=BIGWHEEL, version="1.0", payload_size=wheel_mb * 1024 * 1024)
    record = index.publish(make_wheel(spec, root / "generated"))
    return {
        "url": index.url,
        "index_url": index.index_url,
        "probe": PROBE,
        "bigpage": {"name": BIGPAGE, "files": versions * len(BIGPAGE_TAGS)},
        "bigwheel": {
            "name": BIGWHEEL,
            "filename": record.filename,
            "size": record.size,
            "sha256": record.sha256,
            "path": f"/files/{BIGWHEEL}/{record.filename}",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("root", type=Path, help="an empty directory for the index and its files")
    parser.add_argument("--page-files", type=int, default=3000, help="files on the big page")
    parser.add_argument("--wheel-mb", type=int, default=32, help="size of the big wheel in MiB")
    parser.add_argument("--rate-mb", type=float, default=50.0, help="MB/s per file download (0: no limit)")
    args = parser.parse_args(argv)
    pacer = CountingPacer(args.rate_mb * 1_000_000)
    index = PrivateIndex(args.root, middleware=pacer).start()
    try:
        described = publish(index, args.root, page_files=args.page_files, wheel_mb=args.wheel_mb)
        print(json.dumps(described), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # serve until the parent closes our stdin (or dies, which closes it too)
        while sys.stdin.read(1):
            pass
    finally:
        index.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
