"""Pages fetched ahead (``index/ahead.py``): the queue on its own, then a mirror with real clients."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror, waits
from nestegg_core.index import ahead as ahead_module
from nestegg_core.index import later, repository
from nestegg_core.index import upstream as upstream_module
from nestegg_core.index.ahead import PageRequest, PagesAhead
from nestegg_core.simple import clients
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.requires import MAX_NAMES, required_names
from nestegg_core.testing import installer_env, make_venv
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory, pip_download
from .loopback import install_command, wait_until

JSON = "application/vnd.pypi.simple.v1+json"
PIP = (
    'pip/26.3 {"installer":{"name":"pip","version":"26.3"},"python":"3.11.7",'
    '"implementation":{"name":"CPython","version":"3.11.7"},"system":{"name":"Linux","release":"6.1"},'
    '"cpu":"x86_64"}'
)
UV = 'uv/0.9.0 {"installer":{"name":"uv","version":"0.9.0"},"python":"3.12.1","system":{"name":"Windows"}}'
ENVIRONMENT = dict(clients.marker_environment(PIP))


def metadata(*requires: str) -> bytes:
    return "".join(
        ["Metadata-Version: 2.1\nName: top\nVersion: 1.0\n"] + [f"Requires-Dist: {r}\n" for r in requires]
    ).encode()


class Recorder:
    """The callables of a PagesAhead: which pages it asked about and made, in order."""

    def __init__(self, fresh: frozenset[str] = frozenset(), fail: frozenset[str] = frozenset()) -> None:
        self.fresh = fresh
        self.fail = fail
        self.made: list[tuple[str, PageRequest | None]] = []
        self.gate = threading.Event()
        self.gate.set()

    def needed(self, name: NormalizedName) -> bool:
        return name not in self.fresh

    def make(self, name: NormalizedName, request: PageRequest | None) -> None:
        self.gate.wait(10)
        if name in self.fail:
            raise ValueError(f"cannot make {name}")
        self.made.append((name, request))


def idle(ahead: PagesAhead) -> Callable[[], bool]:
    return lambda: ahead._thread is None


# --- the queue ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requires", "fresh", "fail", "made"),
    [
        (("a", "b>=2"), (), (), ["a", "b"]),
        (("a", "b"), ("a",), (), ["b"]),  # fresh in the cache: not fetched again
        (("a", "b"), (), ("a",), ["b"]),  # a page that fails is left to its request
        (("top", "a"), (), (), ["a"]),  # the wheel's own project
        (('a; sys_platform == "win32"', 'b; python_version >= "3"'), (), (), ["b"]),
        (('a; extra == "x"', "b[x]"), (), (), ["b"]),  # extras are not guessed
        (("A_B", "a-b", "a.b"), (), (), ["a-b"]),  # each project once
    ],
)
def test_the_pages_a_wheel_requires_are_made_in_order(
    requires: tuple[str, ...], fresh: tuple[str, ...], fail: tuple[str, ...], made: list[str]
) -> None:
    recorder = Recorder(frozenset(fresh), frozenset(fail))
    ahead = PagesAhead(recorder.needed, recorder.make)
    request = PageRequest(content_type=JSON, base="http://127.0.0.1:1")
    ahead.wheel(
        "w", lambda: metadata(*requires), of=NormalizedName("top"), environment=ENVIRONMENT, request=request
    )
    wait_until(idle(ahead), "the pages made")
    assert recorder.made == [(name, request) for name in made]
    assert ahead.made == len(made)


@pytest.mark.parametrize(
    "read",
    [
        lambda: None,  # no metadata (the wheel has none, or is gone)
        lambda: b"\xff\xfe not metadata",
        lambda: (_ for _ in ()).throw(OSError("gone")),  # cannot be read
    ],
)
def test_a_wheel_whose_requirements_cannot_be_read_makes_nothing(read: Callable[[], bytes | None]) -> None:
    recorder = Recorder()
    ahead = PagesAhead(recorder.needed, recorder.make)
    ahead.wheel("w", read, of=NormalizedName("top"), environment=ENVIRONMENT, request=None)
    wait_until(idle(ahead), "the wheel read")
    assert recorder.made == []


def test_a_wheel_given_again_is_not_read_again() -> None:
    reads = []
    recorder = Recorder()
    ahead = PagesAhead(recorder.needed, recorder.make)

    def read() -> bytes:
        reads.append(1)
        return metadata("a")

    for _ in range(3):
        ahead.wheel("w", read, of=NormalizedName("top"), environment=ENVIRONMENT, request=None)
        wait_until(idle(ahead), "the wheel read")
    assert len(reads) == 1
    assert [name for name, _ in recorder.made] == ["a"]


def test_a_request_takes_a_waiting_page_and_waits_for_the_one_being_made() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the first page is held while being made
    ahead = PagesAhead(recorder.needed, recorder.make)
    ahead.wheel(
        "w", lambda: metadata("a", "b", "c"), of=NormalizedName("top"), environment=ENVIRONMENT, request=None
    )
    wait_until(lambda: ahead._making == "a", "a being made")
    ahead.wait(NormalizedName("b"), 5)  # waiting: the request makes it itself
    waited = threading.Event()

    def request() -> None:
        ahead.wait(NormalizedName("a"), 10)
        waited.set()

    waiter = threading.Thread(target=request)
    waiter.start()
    time.sleep(0.2)
    assert not waited.is_set()  # a request for "a" waits for the page being made
    recorder.gate.set()
    waiter.join(10)
    assert waited.is_set()
    wait_until(idle(ahead), "the pages made")
    assert [name for name, _ in recorder.made] == ["a", "c"]


def test_a_request_waits_no_longer_than_its_timeout() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    ahead = PagesAhead(recorder.needed, recorder.make)
    ahead.wheel("w", lambda: metadata("a"), of=NormalizedName("top"), environment=ENVIRONMENT, request=None)
    wait_until(lambda: ahead._making == "a", "a being made")
    start = time.monotonic()
    ahead.wait(NormalizedName("a"), 0.2)
    assert 0.15 < time.monotonic() - start < 2
    recorder.gate.set()
    ahead.stop()


def test_the_pages_waiting_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead_module, "MAX_WAITING", 3)
    recorder = Recorder()
    ahead = PagesAhead(recorder.needed, recorder.make)
    many = [f"p{i}" for i in range(10)]
    ahead.wheel("w", lambda: metadata(*many), of=NormalizedName("top"), environment=ENVIRONMENT, request=None)
    wait_until(idle(ahead), "the pages made")
    assert [name for name, _ in recorder.made] == ["p0", "p1", "p2"]


@pytest.mark.parametrize(
    ("served", "awaited", "gives_way"),
    [
        (False, False, False),  # no request worked on
        (True, False, True),  # a request worked on: the page waits between two pieces
        (True, True, False),  # and another waits for this very page: it goes on
    ],
    ids=["idle", "served", "awaited"],
)
def test_a_page_made_ahead_gives_way_to_the_requests_worked_on(
    monkeypatch: pytest.MonkeyPatch, served: bool, awaited: bool, gives_way: bool
) -> None:
    monkeypatch.setattr(ahead_module, "PIECE_WAIT", 0.4)
    ready, paused, written = threading.Event(), [], []

    class Pausing(Recorder):
        def make(self, name: NormalizedName, request: PageRequest | None) -> None:
            ready.wait(10)
            start = time.monotonic()
            upstream_module.pause_in_background()  # as between two pieces, and before a rendering
            paused.append(time.monotonic() - start)
            super().make(name, request)
            made = time.monotonic()
            later.defer(lambda: written.append(time.monotonic() - made))  # the state, written later

    recorder = Pausing()
    ahead = PagesAhead(recorder.needed, recorder.make)
    leave = threading.Event()
    threads = []

    def request(wait_for: str | None) -> None:
        with waits.serving():
            if wait_for is not None:
                ahead.wait(NormalizedName(wait_for), 10)
            leave.wait(10)

    ahead.wheel("w", lambda: metadata("a"), of=NormalizedName("top"), environment=ENVIRONMENT, request=None)
    wait_until(lambda: ahead._making == "a", "a being made")
    for wait_for in ([None] if served else []) + (["a"] if awaited else []):
        threads.append(threading.Thread(target=request, args=(wait_for,)))
        threads[-1].start()
    wait_until(waits.busy if served else lambda: True, "a request worked on")
    if awaited:
        wait_until(ahead._awaited, "a request waiting for a")
    ready.set()
    try:
        wait_until(lambda: bool(written), "the page made, and what it left for later done")
    finally:
        leave.set()
        for thread in threads:
            thread.join(10)
    assert (0.3 < paused[0] < 5) if gives_way else paused[0] < 0.2, paused
    wait_until(idle(ahead), "the pages made")
    # what it left for later gives way too, once the page is made (its waiters have it)
    assert (0.3 < written[0] < 5) if served else written[0] < 0.2, written


def give(ahead: PagesAhead, key: str, *requires: str) -> None:
    ahead.wheel(
        key, lambda: metadata(*requires), of=NormalizedName("top"), environment=ENVIRONMENT, request=None
    )


def test_stop_drops_what_waits_and_waits_for_the_page_being_made() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    ahead = PagesAhead(recorder.needed, recorder.make)
    give(ahead, "w", "a", "b")
    wait_until(lambda: ahead._making == "a", "a being made")
    threading.Timer(0.2, recorder.gate.set).start()
    ahead.stop(timeout=5)
    assert idle(ahead)()
    assert [name for name, _ in recorder.made] == ["a"]
    give(ahead, "w2", "c")
    assert ahead._thread is None  # stopped: nothing more is taken
    ahead.start()  # a server started again
    give(ahead, "w3", "d")
    wait_until(idle(ahead), "the page made")
    assert [name for name, _ in recorder.made] == ["a", "d"]


def test_the_wheels_waiting_are_bounded_the_latest_kept() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the worker is held making a page: wheels pile up
    ahead = PagesAhead(recorder.needed, recorder.make)
    give(ahead, "first", "a")
    wait_until(lambda: ahead._making == "a", "a being made")
    for i in range(ahead_module.MAX_WHEELS * 10):
        give(ahead, f"w{i}", f"p{i}")
    assert len(ahead._wheels) == ahead_module.MAX_WHEELS
    recorder.gate.set()
    wait_until(idle(ahead), "the pages made")
    last = [f"p{i}" for i in range(ahead_module.MAX_WHEELS * 9, ahead_module.MAX_WHEELS * 10)]
    assert [name for name, _ in recorder.made] == ["a", *last]


def test_a_wheel_given_as_the_thread_finds_nothing_more_to_do_is_read() -> None:
    """A wheel given between the thread's last look at the queue and its end was left in the
    queue, no thread to read it (seen once in a full run, as the test below)."""
    recorder = Recorder()

    class Racing(PagesAhead):
        given = False

        def _next(self) -> bool:
            found = super()._next()
            if not found and not self.given:  # another request's wheel, at that very moment
                self.given = True
                give(self, "late", "b")
            return found

    ahead = Racing(recorder.needed, recorder.make)
    give(ahead, "w1", "a")
    wait_until(lambda: ahead.given and idle(ahead)(), "the pages made")
    assert [name for name, _ in recorder.made] == ["a", "b"]


def test_a_wheel_that_fails_to_read_leaves_the_thread_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    original = required_names

    def failing(metadata: bytes, *args: Any, **kwargs: Any) -> tuple[NormalizedName, ...]:
        if b"boom" in metadata:
            raise MemoryError("boom")
        return original(metadata, *args, **kwargs)

    monkeypatch.setattr(ahead_module, "required_names", failing)
    recorder = Recorder()
    ahead = PagesAhead(recorder.needed, recorder.make)
    give(ahead, "w1", "boom")
    give(ahead, "w2", "a")
    wait_until(idle(ahead), "the pages made")
    assert [name for name, _ in recorder.made] == ["a"]


# --- a mirror -----------------------------------------------------------------------------


def count_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the pages the repository renders from now on."""
    renders: list[str] = []
    for function in ("render_project", "project_pieces"):
        original = getattr(repository, function)

        def counting(page: ProjectPage, *args: Any, original: Any = original) -> Any:
            renders.append(page.name)
            return original(page, *args)

        monkeypatch.setattr(repository, function, counting)
    return renders


def read_metadata(http: requests.Session, mirror: Mirror, wheel: DistFile, agent: str = PIP) -> None:
    """A client's read of the page of the wheel's project, then of the wheel's metadata."""
    assert http.get(mirror.index_url + "top/", headers={"Accept": JSON, "User-Agent": agent}).ok
    assert http.get(f"{mirror.url}/files/top/{wheel.filename}.metadata", headers={"User-Agent": agent}).ok


def count_wheel_reads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The wheels whose requirements the repository reads from the wheel itself from now on."""
    reads: list[str | None] = []
    original = wheel_metadata

    def counting(path: Any, filename: str | None = None) -> bytes | None:
        reads.append(filename)
        return original(path, filename)

    monkeypatch.setattr(repository, "wheel_metadata", counting)
    return reads


def page_asked(faults: Faults, name: str) -> Callable[[], bool]:
    return lambda: faults.count(f"/simple/{name}/") > 0


@pytest.mark.parametrize(
    ("agent", "fetched", "left"),
    [
        (PIP, ["dep", "linux-only"], ["win-only", "extra-only"]),
        (UV, ["dep", "win-only"], ["linux-only", "extra-only"]),  # uv's User-Agent says Windows
    ],
)
def test_a_read_of_a_wheels_metadata_fetches_the_pages_it_requires(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    agent: str,
    fetched: list[str],
    left: list[str],
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)  # pip is shown the metadata too
    requires = ["dep>=1", 'linux-only; sys_platform == "linux"', 'win-only; sys_platform == "win32"',
                'extra-only; extra == "x"']  # fmt: skip
    [wheel] = upstream.add("top", "1.0", sdist=False, requires_dist=requires, extras={"x": ["extra-only"]})
    for name in ("dep", "linux-only", "win-only", "extra-only"):
        upstream.add(name, "1.0", sdist=False)
    mirror = make_mirror(fetch_ahead=0)
    read_metadata(http, mirror, wheel, agent)
    for name in fetched:
        wait_until(page_asked(faults, name), f"the page of {name} fetched ahead")
    ahead = mirror.repository.ahead
    assert ahead is not None
    wait_until(idle(ahead), "the pages made ahead")
    assert ahead.made == len(fetched)
    assert not [name for name in left if faults.count(f"/simple/{name}/")]
    # asked for now, each is answered as made ahead: neither the upstream asked nor a page rendered
    renders = count_renders(monkeypatch)
    for name in fetched:
        answer = http.get(mirror.index_url + f"{name}/", headers={"Accept": JSON, "User-Agent": agent})
        assert answer.json()["name"] == name
        assert faults.count(f"/simple/{name}/") == 1
    assert renders == []


@pytest.mark.parametrize(
    ("changes", "listed", "made"),
    [
        ({}, True, 2),  # the requirements read from the cached wheel
        ({}, False, 2),  # from the metadata kept of it (the upstream lists none)
        ({"pages_ahead": False}, True, 0),
    ],
)
def test_pip_download_without_deps_gets_the_pages_of_what_it_downloaded_made_ahead(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    changes: dict[str, object],
    listed: bool,
    made: int,
) -> None:
    # no metadata read (a small wheel): the wheel's own requirements, once it is cached
    faults.no_metadata = not listed
    reads = count_wheel_reads(monkeypatch)
    upstream.add("top", "1.0", sdist=False, requires_dist=["dep-a", "dep-b"])
    upstream.add("dep-a", "1.0", sdist=False)
    upstream.add("dep-b", "1.0", sdist=False)
    mirror = make_mirror(**changes)
    pip_download(mirror.index_url, tmp_path, "top==1.0")
    if made:
        wait_until(lambda: page_asked(faults, "dep-a")() and page_asked(faults, "dep-b")(), "the pages ahead")
        ahead = mirror.repository.ahead
        assert ahead is not None
        wait_until(lambda: ahead.made == made, "the pages made ahead")
    else:
        assert mirror.repository.ahead is None
        time.sleep(0.5)
    assert faults.count("/simple/dep-a/") == faults.count("/simple/dep-b/") == (1 if made else 0)
    assert reads == (["top-1.0-py3-none-any.whl"] if made and listed else [])
    pip_download(mirror.index_url, tmp_path, "dep-a==1.0", "dep-b==1.0")
    assert faults.count("/simple/dep-a/") == faults.count("/simple/dep-b/") == 1


def test_a_page_made_ahead_gives_way_before_it_is_rendered(
    upstream: PrivateIndex, make_mirror: MirrorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.add("top", "1.0", sdist=False, requires_dist=["dep"])
    upstream.add("dep", "1.0", sdist=False)
    mirror = make_mirror()
    rendered: list[bool] = []  # for each rendering made: whether it was made ahead, and gave way

    def pausing() -> None:
        rendered.append(upstream_module._pause.get() is not None)

    monkeypatch.setattr(repository, "pause_in_background", pausing)
    pip_download(mirror.index_url, tmp_path, "top==1.0")
    ahead = mirror.repository.ahead
    assert ahead is not None
    wait_until(lambda: ahead.made == 1, "the page of dep made ahead")
    assert rendered.count(True) == 1  # dep's page, ahead of pip; the others for pip


@pytest.mark.parametrize("made_ahead", [False, True], ids=["made-for-pip", "made-ahead-for-pip"])
def test_a_page_made_ahead_between_pips_page_and_its_file_leaves_the_page_pip_asked_for(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    made_ahead: bool,
) -> None:
    """pip asks for a page, then its file. A page made ahead in between (for a wheel got before)
    does not drop the first from memory, however large: the file is served without reading the
    page again (pydantic-core's 15,000 files took 0.1 s to read)."""
    upstream.add("top", "1.0", sdist=False, requires_dist=["big"])
    for version in ("1.0", "1.1", "1.2"):
        upstream.add("big", version, sdist=False)
    upstream.add("other", "1.0", sdist=False)
    mirror = make_mirror()
    repo = mirror.repository
    repo.mirror.max_files = 1  # every page is past the budget of the pages in memory
    if made_ahead:  # answered from the rendering made ahead: its page is not looked at
        pip_download(mirror.index_url, tmp_path / "top", "top==1.0")
        ahead = repo.ahead
        assert ahead is not None
        wait_until(lambda: ahead.made == 1, "the page of big made ahead")
    rendered, read_page = repo.rendered, repo.store.read_page
    reads: list[str] = []
    made: list[str] = []

    def then_ahead(name: NormalizedName, *args: Any, **kwargs: Any) -> Any:
        answer = rendered(name, *args, **kwargs)
        if name == "big":  # as the thread of the pages ahead would, before pip's next request
            with upstream_module.in_background():
                made.append(repo.project(NormalizedName("other")).name)
        return answer

    def reading(name: NormalizedName) -> Any:
        reads.append(name)
        return read_page(name)

    monkeypatch.setattr(repo, "rendered", then_ahead)
    monkeypatch.setattr(repo.store, "read_page", reading)
    pip_download(mirror.index_url, tmp_path / "big", "big==1.1")
    assert (tmp_path / "big" / "big-1.1-py3-none-any.whl").is_file()
    assert made == ["other"]
    assert "big" not in reads


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_an_install_with_dependencies_asks_the_upstream_once_a_page(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    installer: str,
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)  # pip reads every wheel's metadata
    upstream.add("top", "1.0", sdist=False, requires_dist=["mid-a", "mid-b"])
    upstream.add("mid-a", "1.0", sdist=False, requires_dist=["leaf"])
    upstream.add("mid-b", "1.0", sdist=False, requires_dist=["leaf>=1"])
    upstream.add("leaf", "1.0", sdist=False)
    mirror = make_mirror()
    python = make_venv(tmp_path / "venv")
    command = install_command(installer, python, "top")
    result = subprocess.run(
        command, env=installer_env(mirror.index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run(
        [str(python), "-c", "import top, mid_a, mid_b, leaf"], capture_output=True, check=False
    )
    assert check.returncode == 0, check.stderr
    ahead = mirror.repository.ahead
    assert ahead is not None
    assert ahead.made >= 1  # some pages were made before the installer asked
    for name in ("top", "mid-a", "mid-b", "leaf"):
        assert faults.count(f"/simple/{name}/") == 1, name


@pytest.mark.parametrize(
    ("requires", "changes", "asked"),
    [
        # a private name is never asked of the upstream
        (["secret-lib", "dep"], {"private_names": ("secret-*",)}, {"dep/": 1, "secret-": 0}),
        # a hostile wheel costs a bounded number of pages (each a 404, asked once)
        ([f"name-{i}" for i in range(2000)], {}, {"name-": MAX_NAMES}),
    ],
)
def test_what_a_wheel_requires_is_fetched_within_bounds(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    requires: list[str],
    changes: dict[str, object],
    asked: dict[str, int],
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)
    [wheel] = upstream.add("top", "1.0", sdist=False, requires_dist=requires)
    upstream.add("dep", "1.0", sdist=False)
    mirror = make_mirror(**changes)
    read_metadata(http, mirror, wheel)
    ahead = mirror.repository.ahead
    assert ahead is not None
    wait_until(lambda: faults.count(prefix="/simple/") > 1, "pages fetched ahead")
    wait_until(idle(ahead), "the pages made ahead", timeout=30)
    assert {prefix: faults.count(prefix=f"/simple/{prefix}") for prefix in asked} == asked


def test_a_stopping_mirror_drops_the_pages_waiting(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)
    [wheel] = upstream.add("top", "1.0", sdist=False, requires_dist=[f"dep-{i}" for i in range(20)])
    mirror = make_mirror()
    assert http.get(mirror.index_url + "top/", headers={"Accept": JSON, "User-Agent": PIP}).ok
    metadata = f"{mirror.url}/files/top/{wheel.filename}.metadata"
    assert http.head(metadata, headers={"User-Agent": PIP}).ok
    ahead = mirror.repository.ahead
    assert ahead is not None
    assert not ahead._read  # a HEAD makes nothing ahead
    gate = threading.Event()
    faults.gate = gate  # the upstream holds every request from now on
    try:
        assert http.get(metadata, headers={"User-Agent": PIP}).ok  # fetched before: no upstream
        wait_until(lambda: faults.count(prefix="/simple/dep-") == 1, "the first page asked")
        start = time.monotonic()
        mirror.stop()
        assert time.monotonic() - start < 8  # the page being made waited for 5 s at most
    finally:
        gate.set()
    wait_until(idle(ahead), "the page being made ended")
    assert faults.count(prefix="/simple/dep-") == 1  # the 19 waiting were dropped
    assert ahead._stopped
    mirror.start()  # started again, it makes pages ahead again (a service of the server)
    assert not ahead._stopped


# --- the pages a run asked, past their TTL ---------------------------------------------------


@pytest.mark.parametrize(
    ("times", "checked", "most", "together"),
    [
        # those checked after it, in order, then those before it, the latest first
        ({"a": 100, "b": 101, "c": 102, "d": 103}, 101.5, 128, ["c", "d", "b", "a"]),
        # a gap of a minute or more parts two runs
        ({"a": 0, "b": 10, "c": 200, "d": 210}, 5, 128, ["b", "a"]),
        ({"a": 0, "b": 10, "c": 200, "d": 210}, 205, 128, ["d", "c"]),
        ({"a": 0, "b": 59.9, "c": 119.8}, 0, 128, ["a", "b", "c"]),  # step by step, not from the first
        ({"a": 0, "b": 200}, 100, 128, []),  # checked in a run of its own
        ({f"p{i}": i for i in range(10)}, 4.5, 3, ["p5", "p6", "p7"]),  # at most ``most``, after first
        ({f"p{i}": i for i in range(10)}, 8.5, 3, ["p9", "p8", "p7"]),
        ({}, 1.0, 128, []),
    ],
)
def test_the_pages_checked_together_are_those_of_the_same_run(
    times: dict[str, float], checked: float, most: int, together: list[str]
) -> None:
    ordered = sorted(((NormalizedName(name), when) for name, when in times.items()), key=lambda item: item[1])
    assert ahead_module.checked_together(ordered, checked, gap=60.0, most=most) == together
    if together and most >= len(times):  # the page asked is left out, wherever it was checked
        asked = NormalizedName(together[0])
        assert ahead_module.checked_together(ordered, checked, but=asked, gap=60.0) == together[1:]


def test_the_pages_of_a_run_are_made_unless_fresh_and_its_key_taken_once() -> None:
    recorder = Recorder(fresh=frozenset({"b"}))
    ahead = PagesAhead(recorder.needed, recorder.make)
    request = PageRequest(content_type=JSON, base="http://127.0.0.1:1")
    looked_up: list[int] = []

    def names() -> list[NormalizedName]:
        looked_up.append(1)
        return [NormalizedName(name) for name in ("a", "b", "c")]

    for _ in range(2):
        ahead.together("run", names, request=request)
        wait_until(idle(ahead), "the pages made")
    assert recorder.made == [("a", request), ("c", request)]
    assert looked_up == [1]  # given again lately: not looked up again
    ahead.together("run", lambda: (_ for _ in ()).throw(OSError("no scan")), request=request)
    ahead.together("other", lambda: (_ for _ in ()).throw(OSError("no scan")), request=request)
    wait_until(idle(ahead), "the failed look-up passed over")
    assert len(recorder.made) == 2


def _pip_page(mirror: Mirror, name: str) -> None:
    headers = {"User-Agent": PIP, "Accept": JSON}
    assert requests.get(f"{mirror.index_url}{name}/", headers=headers, timeout=30).ok


@pytest.mark.parametrize(
    ("case", "ahead_of_pip"),
    [
        ("past-ttl", ["b", "c"]),  # the run's other pages, asked again before pip asks them
        ("another-run", ["b"]),  # c was checked in a run of its own: not guessed
        ("ttl-too-short", []),  # made ahead, they would be stale again when asked
        ("pages-ahead-off", []),
    ],
)
def test_past_their_ttl_the_pages_asked_together_are_asked_again_together(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    ahead_of_pip: list[str],
) -> None:
    """A fresh mirror past the TTL (the next tox run): the first page a client asks again has the
    pages checked with it revalidated ahead of their requests, each asked of the upstream once."""
    for name in ("a", "b", "c"):
        upstream.add(name, "1.0", sdist=False)
    # long enough for a slow machine's pip to ask every page still fresh, once they are made
    ttl = 3.0
    monkeypatch.setattr(ahead_module, "TOGETHER_MIN_TTL", 5.0 if case == "ttl-too-short" else 0.5)
    monkeypatch.setattr(ahead_module, "TOGETHER_GAP", 1.0)
    changes: dict[str, Any] = {"ttl": ttl, "pages_ahead": case != "pages-ahead-off"}
    first = make_mirror(**changes)
    same_run = ["a==1.0", "b==1.0"] + ([] if case == "another-run" else ["c==1.0"])
    pip_download(first.index_url, tmp_path / "one", *same_run)
    if case == "another-run":
        time.sleep(1.5)  # more than the gap: a run of its own
        pip_download(first.index_url, tmp_path / "one", "c==1.0")
    first.stop()
    time.sleep(ttl + 0.2)
    mirror = make_mirror(**changes)
    _pip_page(mirror, "a")
    wait_until(lambda: all(faults.count(f"/simple/{n}/") == 2 for n in ahead_of_pip), "the pages ahead")
    time.sleep(0.3)
    asked = {name: faults.count(f"/simple/{name}/") for name in ("a", "b", "c")}
    assert asked == {"a": 2, **{name: 2 if name in ahead_of_pip else 1 for name in ("b", "c")}}
    pip_download(mirror.index_url, tmp_path / "two", "a==1.0", "b==1.0", "c==1.0")
    assert {name: faults.count(f"/simple/{name}/") for name in ("a", "b", "c")} == {"a": 2, "b": 2, "c": 2}
    if ahead_of_pip:
        assert mirror.repository.ahead is not None
        assert mirror.repository.ahead.made == len(ahead_of_pip)
