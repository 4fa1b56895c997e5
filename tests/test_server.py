"""The waitress server a mirror runs on: how it sends what it answers."""

from __future__ import annotations

import hashlib
import os
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


def test_a_file_is_sent_a_block_at_a_time(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [wheel] = upstream.add("big", "1.0", sdist=False, payload_size=3_000_000)
    mirror = make_mirror()
    url = f"{mirror.url}/files/big/{wheel.filename}"
    http.get(url).raise_for_status()  # cached: sent from disk from now on
    reads = _record_reads(monkeypatch)
    response = http.get(url)
    response.raise_for_status()
    assert hashlib.sha256(response.content).hexdigest() == wheel.sha256
    assert sum(reads) == len(response.content) > 8 * _waitress.SEND_BLOCK
    # not in blocks of the socket's send buffer (4 MiB on Linux's loopback)
    assert max(reads) <= _waitress.SEND_BLOCK


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
    pokes: list[int] = []
    monkeypatch.setattr(Refresher, "poke", lambda self: pokes.append(1))  # noqa: ARG005
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
    assert len(pokes) == gone.count(True)
    # a new connection: not gone any more
    with requests.Session() as session:
        session.trust_env = False
        session.get(f"{mirror.url}/health", timeout=10)
        assert not clients.gone
    mirror.stop()
    assert mirror.repository.clients_gone is None
