"""Cold resolutions against an upstream that offers no PEP 658 metadata, through nestegg and direct::

    python benchmarks/lazy.py [WHEEL_MB]

The upstream on 127.0.0.1 (a nestegg private index whose pages lose their metadata on the way)
serves ``lazy-app`` 1.0 to 4.0, each with wheels for five platforms of WHEEL_MB MB (default 4),
and ``lazy-other`` 1.0 and 2.0; ``lazy-app`` 2.0 and later need ``lazy-other>=2``. Resolving
``lazy-app`` with ``lazy-other==1.0`` reads the metadata of three versions it rejects. Each client
(``uv pip compile --universal``, ``pip install --dry-run --report``) runs once directly against
the upstream and once through a fresh nestegg with an empty cache. Prints JSON: per run, the
seconds, the bytes of files the upstream sent, and its file requests (whole and ranged).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from nestegg_core import Config, Mirror
from nestegg_core.testing import find_uv, installer_env
from nestegg_core.testing.pytest_plugin import PrivateIndex

TAGS = (
    "cp311-cp311-manylinux_2_17_x86_64",
    "cp311-cp311-musllinux_1_1_x86_64",
    "cp311-cp311-macosx_11_0_arm64",
    "cp311-cp311-win_amd64",
    "py3-none-any",
)


class Counting:
    """WSGI middleware: counts the bytes and requests of file answers, and strips PEP 658 metadata."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes = 0
        self.whole = 0
        self.ranged = 0

    def reset(self) -> dict[str, int]:
        with self.lock:
            counts = {"bytes": self.bytes, "whole_files": self.whole, "ranges": self.ranged}
            self.bytes = self.whole = self.ranged = 0
        return counts

    def __call__(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path.endswith(".metadata"):
                start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
                return []
            if path.startswith("/simple/"):
                environ["HTTP_ACCEPT_ENCODING"] = "identity"
                environ.pop("HTTP_IF_NONE_MATCH", None)
                started: list[Any] = []
                body = b"".join(app(environ, lambda s, h, _=None: started.append((s, h))))
                status, headers = started[0]
                body = _without_metadata(body)
                headers = [(k, v) for k, v in headers if k not in ("Content-Length", "ETag", "Last-Modified")]
                start_response(status, [*headers, ("Content-Length", str(len(body)))])
                return [body]
            if not path.startswith("/files/"):
                return app(environ, start_response)
            with self.lock:
                if environ.get("HTTP_RANGE"):
                    self.ranged += 1
                else:
                    self.whole += 1
            return self._counted(app(environ, start_response))

        return wrapped

    def _counted(self, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                with self.lock:
                    self.bytes += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def _without_metadata(page: bytes) -> bytes:
    if page.startswith(b"{"):
        data = json.loads(page)
        for entry in data.get("files", ()):
            entry.pop("core-metadata", None)
            entry.pop("dist-info-metadata", None)
        return json.dumps(data).encode()
    return re.sub(rb' data-(core|dist-info)-metadata="[^"]*"', b"", page)


def publish(index: PrivateIndex, wheel_mb: int) -> None:
    index.add("lazy-other", "1.0", sdist=False)
    index.add("lazy-other", "2.0", sdist=False)
    for version in ("1.0", "2.0", "3.0", "4.0"):
        needs = ["lazy-other<2"] if version == "1.0" else ["lazy-other>=2"]
        for tag in TAGS:
            index.add("lazy-app", version, sdist=False, requires_dist=needs, wheel_tag=tag,
                      payload_size=wheel_mb * 1024 * 1024)  # fmt: skip


def run(command: list[str], index_url: str, cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=installer_env(index_url), capture_output=True, text=True,
                          check=False, cwd=cwd, timeout=600)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-2000:]}")
    return round(time.perf_counter() - started, 2)


def main(argv: list[str]) -> int:
    wheel_mb = int(argv[0]) if argv else 4
    uv = find_uv()
    results: dict[str, Any] = {"wheel_mb": wheel_mb, "wheels": 4 * len(TAGS) + 2}
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        (work / "requirements.in").write_text("lazy-app\nlazy-other==1.0\n")
        counting = Counting()
        with PrivateIndex(work / "upstream", middleware=counting) as upstream:
            publish(upstream, wheel_mb)
            pip = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--no-cache-dir",
                "--ignore-installed",
            ]
            report = ["--report", str(work / "r.json")]
            clients = {"pip install --dry-run": [*pip, *report, "lazy-app", "lazy-other==1.0"]}
            if uv is not None:
                compile_ = [uv, "pip", "compile", "--no-cache", "--universal", "--python", sys.executable]
                clients["uv pip compile --universal"] = [*compile_, "requirements.in"]
            for name, command in clients.items():
                counting.reset()
                seconds = run(command, upstream.index_url, work)
                results[f"{name} direct"] = {"seconds": seconds, **counting.reset()}
                config = Config(
                    nestegg_dir=work / f"nest-{len(results)}", port=0, index_url=upstream.index_url
                )
                with Mirror(config) as mirror:
                    seconds = run(command, mirror.index_url, work)
                    results[f"{name} nestegg"] = {"seconds": seconds, **counting.reset()}
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
