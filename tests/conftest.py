"""Shared fixtures: a fake upstream index (a private nestegg index behind a fault injector) and mirrors."""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import requests

import nestegg_core
from nestegg_core import Config, Mirror
from nestegg_core.http.types import WSGIApp
from nestegg_core.index.refresh import Refresher
from nestegg_core.testing import installer_env
from nestegg_core.testing.pytest_plugin import PrivateIndex


def _import_every_module() -> None:
    """Import the project's modules now, in the main thread. pytest rewrites them as they are
    imported (the project is a pytest plugin's distribution), with ``ast``; CPython 3.11.7's AST
    conversion keeps its depth in a state the threads share (gh-106905), so a module first
    imported by a server's thread while a test parsed source failed one of them with "AST
    constructor recursion depth mismatch". The tox plugin's modules are left to the tests that use
    them: importing tox made a one-time allocation of 1.9 MB inside the window that
    test_names_asked_once_leave_memory_bounded_by_the_caps measures, after some other tests."""
    for package in (nestegg_core,):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            # __main__ runs the command line; toxrun imports tox
            if not module.name.endswith(".__main__") and not module.name.startswith("nestegg_core.toxrun"):
                importlib.import_module(module.name)


_import_every_module()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    #: the answer's status and Content-Length, once it started
    status: int = 0
    length: int = 0
    #: the client's port: which connection the request came on
    port: str = ""


@dataclass
class Faults:
    """A WSGI middleware in front of the fake upstream that records requests and injects faults."""

    seen: list[Seen] = field(default_factory=list)
    #: answer every request with this status (e.g. 503) instead of the real page or file
    status: int | None = None
    #: paths (exact) answered with this status, the rest served normally
    status_for: dict[str, int] = field(default_factory=dict)
    #: serve HTML only (an old index), whatever the client accepts
    html_only: bool = False
    #: drop ETag/Last-Modified and ignore If-None-Match (an index without validators)
    no_validators: bool = False
    #: file paths whose bytes are altered (same length) on the way out
    corrupt: set[str] = field(default_factory=set)
    #: file paths cut in half on the way out (Content-Length kept: a broken-off transfer)
    truncate: set[str] = field(default_factory=set)
    #: seconds to sleep before answering file requests (to make downloads overlap)
    file_delay: float = 0.0
    #: when set, requests block until it is set (to hold a download open)
    gate: threading.Event | None = None
    #: ignore Range headers: every file is answered whole (an upstream without ranges)
    no_ranges: bool = False
    #: offer no PEP 658 metadata: none on the pages, 404 for ``<file>.metadata``
    no_metadata: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str | None = None, *, prefix: str | None = None, method: str = "GET") -> int:
        with self.lock:
            return sum(
                1
                for s in self.seen
                if s.method == method
                and (path is None or s.path == path)
                and (prefix is None or s.path.startswith(prefix))
            )

    def files(self, *, whole: bool | None = None) -> list[Seen]:
        """The GETs of files (not metadata) answered: only those answered whole (200), or by
        ranges (206), if ``whole`` says."""
        with self.lock:
            found = [s for s in self.seen if s.method == "GET" and s.path.startswith("/files/")]
        found = [s for s in found if not s.path.endswith(".metadata")]
        if whole is not None:
            found = [s for s in found if s.status == (200 if whole else 206)]
        return found

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()

    def __call__(self, app: WSGIApp) -> WSGIApp:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            headers = {
                k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
            }
            seen = Seen(environ["REQUEST_METHOD"], path, headers, port=environ.get("REMOTE_PORT", ""))
            with self.lock:
                self.seen.append(seen)
            status = self.status_for.get(path, self.status)
            if self.no_metadata and path.endswith(".metadata"):
                status = 404
            if status is not None:
                seen.status = status
                start_response(
                    f"{status} Injected", [("Content-Type", "text/plain"), ("Content-Length", "9")]
                )
                return [b"injected\n"]
            if self.gate is not None:
                self.gate.wait(30)
            if self.html_only:
                environ["HTTP_ACCEPT"] = "text/html"
            if self.no_validators or (self.no_metadata and path.startswith("/simple/")):
                environ.pop("HTTP_IF_NONE_MATCH", None)
            if self.no_ranges:
                environ.pop("HTTP_RANGE", None)
            strip = self.no_metadata and path.startswith("/simple/")
            if strip:
                environ["HTTP_ACCEPT_ENCODING"] = "identity"
            if path.startswith("/files/") and self.file_delay:
                time.sleep(self.file_delay)
            mangle = path in self.corrupt or path in self.truncate

            def starting(status_: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                if self.no_validators or strip:
                    response_headers = [h for h in response_headers if h[0] not in ("ETag", "Last-Modified")]
                seen.status = int(status_.split(maxsplit=1)[0])
                seen.length = int(dict(response_headers).get("Content-Length", "0"))
                if strip:
                    response_headers = [h for h in response_headers if h[0] != "Content-Length"]
                return start_response(status_, response_headers)

            result = app(environ, starting)
            if strip:
                body = b"".join(result)
                with contextlib.suppress(Exception):
                    result.close()  # type: ignore[attr-defined]
                return [_without_metadata(body)]
            if not mangle:
                return result
            body = b"".join(result)
            with contextlib.suppress(Exception):
                result.close()  # type: ignore[attr-defined]
            if path in self.truncate:
                return [body[: len(body) // 2]]
            return [body[:-1] + bytes([body[-1] ^ 0xFF])]

        return wrapped


def _without_metadata(page: bytes) -> bytes:
    """A page (JSON or HTML) that offers no PEP 658 metadata."""
    if page.startswith(b"{"):
        data = json.loads(page)
        for entry in data.get("files", ()):
            entry.pop("core-metadata", None)
            entry.pop("dist-info-metadata", None)
        return json.dumps(data).encode()
    return re.sub(rb' data-(core|dist-info)-metadata="[^"]*"', b"", page)


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def upstream(tmp_path: Path, faults: Faults) -> Iterator[PrivateIndex]:
    """The fake upstream index: add packages with ``upstream.add(name, version, ...)``."""
    index = PrivateIndex(tmp_path / "upstream", middleware=faults).start()
    try:
        yield index
    finally:
        index.stop()


MirrorFactory = Callable[..., Mirror]


@pytest.fixture
def make_mirror(tmp_path: Path, upstream: PrivateIndex) -> Iterator[MirrorFactory]:
    """Starts mirrors of ``upstream`` (same cache dir unless told), all stopped after the test."""
    started: list[Mirror] = []

    def make(**changes: Any) -> Mirror:
        config = Config(nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.index_url)
        mirror = Mirror(config.with_changes(**changes)).start()
        started.append(mirror)
        return mirror

    yield make
    for mirror in started:
        mirror.stop()


@pytest.fixture
def mirror(make_mirror: MirrorFactory) -> Mirror:
    return make_mirror()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # no proxies from the machine's environment
        yield session


class Served:
    """An upstream file download (a ``FileStream``) of ``data``, for fetchers made up in tests."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size: int | None = len(data)

    def chunks(self) -> Iterator[bytes]:
        yield self.data

    def close(self) -> None:
        pass


class FullDisk:
    """A file open for writing whose disk is full (ENOSPC, as a write or flush fails when the file
    system has no block left) once ``room`` bytes were written: the next write fails, after it
    waits for ``hold`` if given (a client has its first bytes by then)."""

    def __init__(self, handle: IO[bytes], room: int, *, hold: threading.Event | None = None) -> None:
        self.handle = handle
        self.room = room
        self.hold = hold

    def write(self, data: bytes) -> int:
        if self.room <= 0:
            if self.hold is not None:
                self.hold.wait(30)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def idle(refresher: Refresher) -> None:
    """Wait until the refresher has nothing left and its thread has ended."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if refresher.pending() == 0 and refresher._thread is None:
            return
        time.sleep(0.01)
    raise AssertionError("the refresher did not finish")


def pip_download(index_url: str, dest: Path, *names: str) -> None:
    """``pip download --no-deps`` of ``names`` from ``index_url`` into ``dest``, isolated from this
    machine's pip settings; fails the test with pip's output if pip fails."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--dest", str(dest)]
    result = subprocess.run(
        [*command, *names], env=installer_env(index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
