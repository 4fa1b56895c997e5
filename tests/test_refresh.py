"""Renderings made again in the background once a cached file made them stale."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import NormalizedName

from nestegg_core import Config, Mirror
from nestegg_core.errors import NotFound
from nestegg_core.index import repository as repository_module
from nestegg_core.index.downloads import Download
from nestegg_core.index.refresh import MAX_KINDS, TRIES, Refresher
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import Fetched, FileStream
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.render import HTML_V1, JSON_V1
from nestegg_core.storage import store as store_module
from nestegg_core.testing.dists import PackageSpec, make_wheel

from .conftest import Served, idle, pip_download

NAME = NormalizedName("demo")
DELAY = 0.05


class _Log:
    """A render that notes what it was asked, answering from ``answers`` (then True)."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[NormalizedName, tuple[Hashable, ...]]] = []
        self.done = threading.Event()

    def __call__(self, name: NormalizedName, kinds: tuple[Hashable, ...]) -> bool:
        self.calls.append((name, kinds))
        answer = self.answers.pop(0) if self.answers else True
        if not self.answers:
            self.done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer


def downloaded() -> None:
    """Wait for the download threads: they note the change once all is written."""
    for thread in threading.enumerate():
        if thread.name.startswith("nestegg-download-"):
            thread.join(timeout=10)


@pytest.fixture
def log() -> _Log:
    return _Log()


@pytest.fixture
def refresher(log: _Log) -> Iterator[Refresher]:
    made = Refresher(log, delay=lambda: DELAY)
    yield made
    made.stop()


def test_a_changed_page_is_made_again_for_the_kinds_served_once_settled(log: _Log) -> None:
    refresher = Refresher(log, delay=lambda: 0.3)  # long enough for the three changes to be one
    refresher.served(NAME, "json")
    refresher.served(NAME, "html")
    refresher.served(NAME, "json")
    started = time.monotonic()
    for _ in range(3):  # changes close together: made once
        refresher.changed(NAME)
    assert log.done.wait(10)
    assert time.monotonic() - started >= 0.3
    idle(refresher)
    refresher.stop()
    assert len(log.calls) == 1
    name, kinds = log.calls[0]
    assert (name, sorted(map(str, kinds))) == (NAME, ["html", "json"])


def test_a_page_never_served_is_left_to_its_next_request(refresher: Refresher, log: _Log) -> None:
    refresher.served(NormalizedName("other"), "json")
    refresher.changed(NAME)
    idle(refresher)
    assert log.calls == []


def test_the_kinds_of_a_page_are_bounded_the_first_noted_forgotten_first(
    refresher: Refresher, log: _Log
) -> None:
    for i in range(3 * MAX_KINDS):  # a kind for each made-up installer
        refresher.served(NAME, f"json-{i}")
    refresher.changed(NAME)
    assert log.done.wait(10)
    idle(refresher)
    [(name, kinds)] = log.calls
    assert (name, kinds) == (NAME, tuple(f"json-{i}" for i in range(2 * MAX_KINDS, 3 * MAX_KINDS)))


@pytest.mark.parametrize(
    ("answers", "calls"),
    [
        ((False, True), 2),  # not settled yet: tried again
        ((False,) * (TRIES + 2), TRIES),  # never settles: given up
        ((RuntimeError("boom"), True), 1),  # an error: left to the next request, the thread lives on
    ],
    ids=["unsettled", "never-settled", "error"],
)
def test_tries(answers: tuple[bool | Exception, ...], calls: int) -> None:
    log = _Log(*answers)
    refresher = Refresher(log, delay=lambda: 0.01)
    refresher.served(NAME, "json")
    refresher.changed(NAME)
    idle(refresher)
    assert len(log.calls) == calls
    refresher.served(NormalizedName("other"), "json")
    refresher.changed(NormalizedName("other"))  # a new thread for new work
    idle(refresher)
    assert log.calls[-1][0] == "other"
    refresher.stop()


def test_nothing_is_made_while_the_server_is_busy(log: _Log) -> None:
    quiet = threading.Event()
    refresher = Refresher(log, delay=lambda: 0.01, busy=lambda: 0.0 if quiet.is_set() else 0.02)
    refresher.served(NAME, "json")
    refresher.changed(NAME)
    time.sleep(0.3)
    assert (log.calls, refresher.pending()) == ([], 1)
    quiet.set()
    idle(refresher)
    assert len(log.calls) == 1
    refresher.stop()


def test_stop_drops_what_is_pending(log: _Log) -> None:
    refresher = Refresher(log, delay=lambda: 30.0)
    refresher.served(NAME, "json")
    refresher.changed(NAME)
    assert refresher.pending() == 1
    refresher.stop()
    idle(refresher)
    refresher.changed(NAME)
    assert (refresher.pending(), log.calls) == (0, [])


class _Bare:
    """A fetcher whose page lists ``demo``'s sdist without its size, with an md5 only, as an old
    index may."""

    data = b"not really a tarball"

    def __init__(self) -> None:
        self.asked = 0

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        self.asked += 1
        md5 = {"md5": hashlib.md5(self.data).hexdigest()}  # noqa: S324 - an old index's hash
        files = [DistFile(filename="demo-1.0.tar.gz", url="https://example.com/demo-1.0.tar.gz", hashes=md5)]
        return Fetched(page=ProjectPage.build(name, files))

    def open(self, url: str) -> FileStream:  # noqa: ARG002
        return Served(self.data)


def body(repo: Repository, content_type: str) -> tuple[bool, bytes]:
    """Whether the page was made (not read back), and its body."""
    rendered = repo.rendered(NAME, content_type)
    if rendered.file is None:
        return rendered.page is not None, rendered.body
    try:
        return rendered.page is not None, rendered.file.handle.readall()
    finally:
        rendered.file.close()


@pytest.mark.parametrize(
    ("background", "ttl", "made_again"),
    [
        (True, 600.0, False),
        (False, 600.0, True),  # closed: the next request makes the page
        (True, 0.0, True),  # the upstream is due to be asked: left to the next request
    ],
    ids=["refreshed", "closed", "ttl-passed"],
)
def test_the_renderings_a_download_made_stale_are_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool, ttl: float, made_again: bool
) -> None:
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    monkeypatch.setattr(repository_module, "_IDLE", 0.05)
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/", ttl=ttl)
    fetcher = _Bare()
    repo = Repository(config, fetcher=fetcher)
    repo.mirror.max_files = 0  # no page is kept once its requests are answered
    if not background:
        repo.close()
    for content_type in (JSON_V1, HTML_V1):
        assert body(repo, content_type)[0]  # made, then saved
    download = repo.open_file(NAME, "demo-1.0.tar.gz")
    assert isinstance(download, Download)
    assert b"".join(download.read()) == _Bare.data
    downloaded()
    asked = fetcher.asked
    idle(repo.refresher)
    assert fetcher.asked == asked  # the background never asks the upstream
    # nor keeps a page it made in memory; one the requests made stays, the last they asked for
    assert (NAME in repo.mirror._loaded) == made_again
    repo.close()
    # another process: in the background, both renderings were made again with the file's hash
    later = Repository(config.with_changes(ttl=600.0), fetcher=_Bare())
    for content_type in (JSON_V1, HTML_V1):
        made, text = body(later, content_type)
        assert made == made_again
        assert b"sha256" in text
    later.close()


class _WheelsOnly:
    """A fetcher whose pages list wheels without hash, size or PEP 658 metadata (as the index pip
    uses on some machines does), and serves them from ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        files = [
            DistFile(filename=path.name, url=f"https://example.com/{path.name}")
            for path in sorted(self.folder.glob(f"{name.replace('-', '_')}-*.whl"))
        ]
        if not files:
            raise NotFound(f"no project {name!r}")
        return Fetched(page=ProjectPage.build(name, files))

    def open(self, url: str) -> FileStream:
        return Served((self.folder / url.rsplit("/", 1)[1]).read_bytes())


@pytest.mark.slow
def test_pip_finds_the_pages_made_again_on_its_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    wheels = tmp_path / "wheels"
    for name in ("alpha", "beta-two"):
        make_wheel(PackageSpec(name=name, version="1.0"), wheels)
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/", port=0)
    caplog.set_level(logging.INFO, logger="nestegg_core.access")

    def download(mirror: Mirror, dest: str) -> None:
        pip_download(mirror.index_url, tmp_path / dest, "alpha", "beta-two")

    with Mirror(config, fetcher=_WheelsOnly(wheels)) as first:
        download(first, "cold")  # the mirror learns each wheel's hash and metadata
        downloaded()
        idle(first.repository.refresher)
        port = first.port
    caplog.clear()
    # the same port on the next run, as the tox plugin keeps it: the same file URLs, the same renderings
    with Mirror(config.with_changes(port=port), fetcher=_WheelsOnly(wheels)) as second:
        second.repository.store.read_page = _refuse  # type: ignore[method-assign]
        download(second, "warm")
    access = "\n".join(record.getMessage() for record in caplog.records)
    # the pages pip got were made again once the wheels were cached: no metadata of a cached
    # wheel for pip, which takes the wheels at once (one request each, not two)
    assert access.count('.whl.metadata"') == 0, access
    assert access.count('.whl" 200') == 2, access


def _refuse(name: str) -> None:
    raise AssertionError(f"the state of {name!r} was read: its page was made again")


@pytest.mark.parametrize(
    ("gone", "waits"),
    [
        (None, True),  # a server that cannot tell (another WSGI server): a while after each request
        (False, True),  # a client's connection open: an install may go on
        (True, False),  # the clients gone: at once, however recent the last request
    ],
    ids=["unknown", "a-client", "gone"],
)
def test_the_repository_is_busy_for_a_while_after_each_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: bool | None, waits: bool
) -> None:
    monkeypatch.setattr(repository_module, "_IDLE", 0.5)
    repo = Repository(
        Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/"), fetcher=_Bare()
    )
    repo.close()
    repo.serve_clients(None if gone is None else lambda: gone, lambda: False)
    assert repo._busy() == 0.0
    started = time.monotonic()
    body(repo, JSON_V1)
    busy = repo._busy()
    if not waits:
        assert busy == 0.0
        return
    assert 0.5 - (time.monotonic() - started) <= busy <= 0.5
    time.sleep(busy + 0.05)
    assert repo._busy() == 0.0


def test_the_background_stops_and_starts_with_the_mirror(tmp_path: Path) -> None:
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/", port=0)
    mirror = Mirror(config, fetcher=_Bare())
    refresher = mirror.repository.refresher
    assert refresher in mirror.nest.services
    for _ in range(2):  # a mirror started again takes changes again
        with mirror:
            assert not refresher.stopped
        assert refresher.stopped


@pytest.mark.slow
def test_an_install_run_just_after_another_finds_its_pages_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the quiet between two pip runs back to back (tox's next environment, a script) is the
    # background's: the second run's requests make no page the first made stale
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    wheels = tmp_path / "wheels"
    for name in ("alpha", "beta-two"):
        make_wheel(PackageSpec(name=name, version="1.0"), wheels)
    run = ["first"]
    made: list[tuple[str, str, str]] = []  # (run, page, thread)
    render = Repository._render

    def noted(self: Repository, name: NormalizedName, *args: Any, **kwargs: Any) -> Any:
        made.append((run[0], name, threading.current_thread().name))
        return render(self, name, *args, **kwargs)

    monkeypatch.setattr(Repository, "_render", noted)
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/", port=0)
    with Mirror(config, fetcher=_WheelsOnly(wheels)) as mirror:
        pip_download(mirror.index_url, tmp_path / "first", "alpha", "beta-two")
        run[0] = "between"
        time.sleep(0.3)  # with pip's start-up, half a second from one run's end to the next's
        run[0] = "second"
        pip_download(mirror.index_url, tmp_path / "second", "alpha", "beta-two")
    by_requests = sorted((when, name) for when, name, thread in made if thread != "nestegg-refresh")
    in_background = sorted(name for _, name, thread in made if thread == "nestegg-refresh")
    assert by_requests == [("first", "alpha"), ("first", "beta-two")], made
    assert in_background == ["alpha", "beta-two"], made


def test_a_page_made_while_its_change_settled_is_saved_once_it_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the run right after a cold one makes a page whose cached wheel changed it (its size learned)
    # while that change settles: held in memory, it must still reach the disk once it
    # can, for the next process (a tox run's mirror) to read rather than make again
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    wheels = tmp_path / "wheels"
    [wheel] = [make_wheel(PackageSpec(name="alpha", version="1.0"), wheels)]
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/")
    repo = Repository(config, fetcher=_WheelsOnly(wheels))
    repo.close()  # no background: each rendering below is a request's
    alpha = NormalizedName("alpha")
    repo.rendered(alpha, JSON_V1)
    download = repo.open_file(alpha, wheel.name)
    assert isinstance(download, Download)
    b"".join(download.read())
    downloaded()
    monkeypatch.setattr(store_module, "SETTLE_NS", 60 * 10**9)  # the change is settling
    settling = repo.rendered(alpha, JSON_V1)
    assert settling.page is not None
    assert f'"size":{wheel.stat().st_size}'.encode() in settling.body
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)  # settled
    settled = repo.rendered(alpha, JSON_V1)
    assert settled.body == settling.body
    later = Repository(config, fetcher=_WheelsOnly(wheels))
    later.store.read_page = _refuse  # type: ignore[method-assign]
    again = later.rendered(alpha, JSON_V1)
    assert again.page is None  # read from its file, not made again
    assert again.body == settling.body
    later.close()


@pytest.mark.parametrize(
    ("sending", "downloading", "busy"),
    [
        (False, False, 0.0),
        (True, False, 0.5),  # an answer still sent (uv reads its wheels for seconds after asking)
        (False, True, 0.5),  # a download a client reads (under any WSGI server)
    ],
    ids=["quiet", "sending", "downloading"],
)
def test_the_repository_is_busy_while_a_client_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sending: bool, downloading: bool, busy: float
) -> None:
    """However long ago the last request came: the pages made again would take a core from a
    client on the same machine."""
    monkeypatch.setattr(repository_module, "_IDLE", 0.5)
    repo = Repository(
        Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/"), fetcher=_Bare()
    )
    repo.close()
    repo.serve_clients(lambda: False, lambda: sending)
    monkeypatch.setattr(repo.downloads, "serving", lambda: downloading)
    assert repo._busy() == busy
