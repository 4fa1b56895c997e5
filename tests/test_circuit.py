"""An upstream that cannot be reached is waited for once: then its circuit serves stale pages at once."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from nestegg_core import Mirror
from nestegg_core.config.config import Config
from nestegg_core.errors import NOT_RESOLVED, REFUSED, TIMED_OUT, NotFound, UpstreamDown, UpstreamError
from nestegg_core.index import upstream as upstream_module
from nestegg_core.index.circuit import Circuit, CircuitFetcher, Circuits
from nestegg_core.index.upstream import HttpFetcher
from nestegg_core.serve.mounts import UpstreamMounts
from nestegg_core.testing import installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_wheel

from .loopback import Answer, RawUpstream, install_command, refused_url, wait_until

NAMES = [f"p{i}" for i in range(6)]
TIMEOUT = 0.5


class Switch:
    """A scripted upstream that serves a page per name until it is told to hang or go away."""

    def __init__(self) -> None:
        self.hang = False
        self.server = RawUpstream(self.answer)

    def answer(self, _method: str, path: str) -> Answer:
        if self.hang:
            return Answer(hang=True)
        if path.startswith("/files/"):
            return Answer(body=b"a file", headers={"Content-Type": "application/octet-stream"})
        name = path.strip("/").split("/")[-1]
        if name not in NAMES:
            return Answer(status=404, body=b"no")
        link = f'<a href="/files/{name}-1.0.tar.gz">{name}-1.0.tar.gz</a>'
        return Answer(body=link.encode(), headers={"Content-Type": "text/html"})

    def asked(self) -> int:
        with self.server._lock:
            return len(self.server.seen)


@pytest.fixture
def switch() -> Iterator[Switch]:
    switch = Switch()
    with switch.server:
        yield switch


def warm_mirror(tmp_path: Path, url: str) -> Mirror:
    """A mirror whose pages are past their TTL on every request (ttl 0), after one warm pass."""
    config = Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url=url, ttl=0, timeout=TIMEOUT, connect_timeout=TIMEOUT
    )
    return Mirror(config).start()


def cache_file(mirror: Mirror, http: requests.Session, name: str) -> None:
    """Cache the one file of ``name``'s page: a page served in the upstream's place lists it."""
    assert http.get(f"{mirror.url}/files/{name}/{name}-1.0.tar.gz", timeout=10).status_code == 200


@pytest.mark.parametrize("down", ["hanging", "refused"])
def test_an_unreachable_upstream_is_waited_for_once_then_stale_pages_are_served_at_once(
    tmp_path: Path, switch: Switch, http: requests.Session, caplog: pytest.LogCaptureFixture, down: str
) -> None:
    mirror = warm_mirror(tmp_path, switch.server.index_url)
    kept, bare = NAMES[:3], NAMES[3:]
    try:
        for name in NAMES:
            assert http.get(f"{mirror.index_url}{name}/", timeout=10).status_code == 200
        for name in kept:
            cache_file(mirror, http, name)
        if down == "hanging":
            switch.hang = True
        else:
            switch.server.__exit__()  # the port is closed: every connection is refused
        before = switch.asked()
        caplog.set_level(logging.DEBUG)
        reason = TIMED_OUT if down == "hanging" else REFUSED
        for _ in range(2):
            for name in NAMES:
                answer = http.get(f"{mirror.index_url}{name}/", timeout=30)
                if name in kept:
                    assert answer.status_code == 200, answer.text
                    assert f"{name}-1.0.tar.gz" in answer.text
                else:  # nothing cached: said so, as of a name never cached (not an empty page)
                    assert answer.status_code == 410, answer.text
                    assert f"the cache has nothing for {name!r}" in answer.reason
                    assert f"is unreachable ({reason})" in answer.reason
        # the hanging socket saw one request of the whole pass: the upstream was waited for once
        assert switch.asked() - before == (1 if down == "hanging" else 0)
        # never cached: fails at once, saying which upstream and why
        new = http.get(f"{mirror.index_url}never-cached/", timeout=30)
        assert new.status_code == 410, new.text  # a 502 pip would retry six times, a 404 uv shows bare
        assert switch.server.index_url.rstrip("/") in new.text
        assert f"({reason})" in new.text
        assert new.text.count("\n") == 1
        # files not cached fail at once too, and the outage is still said once, not per download
        for name in bare:
            answer = http.get(f"{mirror.url}/files/{name}/{name}-1.0.tar.gz", timeout=30)
            assert answer.status_code == (504 if down == "hanging" else 502), answer.text
            assert f"({reason})" in answer.text
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert f"is unreachable ({reason})" in warnings[0]
        # and each page that lists its cached files alone says so once, not once per request
        assert len(warnings) == 1 + len(kept), warnings
        assert all("with its cached files only (1)" in line for line in warnings[1:])
    finally:
        mirror.stop()


def test_a_page_held_is_served_stale_once_a_hanging_upstream_is_slow_to_answer_for_it(
    tmp_path: Path, switch: Switch, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip gives up on a page after 15 s: a mirror that waited its whole ``timeout`` (30 s) for
    a hanging upstream before serving a page it holds made pip ask again, and wait again."""
    monkeypatch.setattr(upstream_module, "REVALIDATE_TIMEOUT", 1.0)
    config = Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url=switch.server.index_url, ttl=0, timeout=20.0
    )
    mirror = Mirror(config).start()
    try:
        for name in NAMES:
            assert http.get(f"{mirror.index_url}{name}/", timeout=10).status_code == 200
        cache_file(mirror, http, NAMES[0])
        switch.hang = True
        before = switch.asked()
        started = time.monotonic()
        for name in NAMES:
            answer = http.get(f"{mirror.index_url}{name}/", timeout=90)
            # served stale, its cached file alone; the others have nothing cached: said so
            assert answer.status_code == (200 if name == NAMES[0] else 410), answer.text
        assert time.monotonic() - started < 15  # one wait of about a second, not of 20 s
        assert switch.asked() - before == 1
    finally:
        mirror.stop()


def test_a_burst_of_held_pages_meets_a_hanging_upstream_once(
    tmp_path: Path, switch: Switch, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv asks for pages in parallel: each request of a run's first burst waited for the hanging
    upstream on a connection of its own (11 of 11 in a real tox-uv run)."""
    monkeypatch.setattr(upstream_module, "REVALIDATE_TIMEOUT", 1.0)
    config = Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url=switch.server.index_url, ttl=0, timeout=20.0
    )
    warm = Mirror(config).start()
    try:
        for name in NAMES:
            assert http.get(f"{warm.index_url}{name}/", timeout=10).status_code == 200
            cache_file(warm, http, name)
    finally:
        warm.stop()
    switch.hang = True
    before = switch.asked()
    mirror = Mirror(config).start()  # a new run: it has not heard from the upstream yet
    try:
        answers: dict[str, int] = {}

        def get(name: str) -> None:
            with requests.Session() as session:
                session.trust_env = False
                answers[name] = session.get(f"{mirror.index_url}{name}/", timeout=60).status_code

        threads = [threading.Thread(target=get, args=(name,)) for name in NAMES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == dict.fromkeys(NAMES, 200)
        assert switch.asked() - before == 1
    finally:
        mirror.stop()


def test_a_name_that_does_not_resolve_is_said_so_and_not_asked_again(
    tmp_path: Path, http: requests.Session
) -> None:
    mirror = warm_mirror(tmp_path, "http://nestegg-test.invalid/simple/")
    try:
        first = http.get(f"{mirror.index_url}one/", timeout=30)
        assert first.status_code == 410
        assert f"({NOT_RESOLVED})" in first.text
        second = http.get(f"{mirror.index_url}two/", timeout=30)
        assert second.status_code == 410
        assert "is unreachable (name not resolved)" in second.text
        assert mirror.repository.circuits.index.reason == NOT_RESOLVED
    finally:
        mirror.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def down(reason: str) -> UpstreamError:
    error = UpstreamError(f"cannot reach it ({reason})")
    error.unreachable = reason
    return error


def test_a_circuit_probes_once_in_the_background_after_its_window_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    circuit = Circuit("http://user:secret@example.invalid/simple/", window=30, clock=clock)
    circuit.check()  # closed: nothing raised
    probes: list[str] = []
    gate = threading.Event()

    def probe() -> None:
        probes.append("probe")
        gate.wait(10)

    caplog.set_level(logging.WARNING)
    circuit.failed(down(TIMED_OUT), probe)
    circuit.failed(down(TIMED_OUT), probe)  # a second failure meanwhile opens nothing more
    with pytest.raises(
        UpstreamDown, match=r"example\.invalid/simple/ is unreachable \(timed out\)"
    ) as raised:
        circuit.check()
    assert raised.value.status == 504
    assert "secret" not in str(raised.value)
    assert probes == []  # not before the window
    clock.now += 31
    for _ in range(3):  # one probe, however many requests come while it runs
        with pytest.raises(UpstreamDown):
            circuit.check()
    wait_until(lambda: probes, "the probe")
    assert probes == ["probe"]
    gate.set()
    wait_until(lambda: circuit.reason is None, "the circuit to close")
    circuit.check()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "unreachable (timed out)" in lines[0]
    assert "reachable again" in lines[1]


def test_a_failed_probe_keeps_the_circuit_open_twice_as_long() -> None:
    clock = Clock()
    circuit = Circuit("http://example.invalid/simple/", window=30, clock=clock)
    calls: list[int] = []

    def probe() -> None:
        calls.append(1)
        raise down(REFUSED)

    circuit.failed(down(REFUSED), probe)
    clock.now += 31
    with pytest.raises(UpstreamDown):
        circuit.check()
    wait_until(lambda: calls and not circuit._probing, "the probe")
    clock.now += 31  # within the doubled window: no probe
    with pytest.raises(UpstreamDown):
        circuit.check()
    assert len(calls) == 1
    clock.now += 30
    with pytest.raises(UpstreamDown):
        circuit.check()
    wait_until(lambda: len(calls) == 2, "the second probe")


@pytest.mark.parametrize(
    ("error", "opens"),
    [
        (down(TIMED_OUT), True),
        (UpstreamError("upstream answered with HTTP 503"), False),
        (NotFound("no such project"), False),
    ],
)
def test_only_a_failure_to_reach_the_upstream_opens_its_circuit(error: Exception, opens: bool) -> None:
    circuit = Circuit("http://example.invalid/simple/")
    if isinstance(error, UpstreamError):
        circuit.failed(error, lambda: None)
    assert (circuit.reason is not None) is opens


# negative answers kept ------------------------------------------------------------------------


@pytest.mark.parametrize("down", ["hanging", "refused"])
def test_a_404_is_kept_and_stays_a_404_while_the_upstream_is_down(
    tmp_path: Path, switch: Switch, http: requests.Session, down: str
) -> None:
    mirror = warm_mirror(tmp_path, switch.server.index_url)
    try:
        assert http.get(f"{mirror.index_url}absent/", timeout=10).status_code == 404
        assert http.get(f"{mirror.index_url}p0/", timeout=10).status_code == 200
        cache_file(mirror, http, "p0")
    finally:
        mirror.stop()
    if down == "hanging":
        switch.hang = True
    else:
        switch.server.__exit__()
    # the next run: a new process on the same cache, every page past its TTL
    again = warm_mirror(tmp_path, switch.server.index_url)
    try:
        assert http.get(f"{again.index_url}p0/", timeout=30).status_code == 200  # stale
        for _ in range(2):
            answer = http.get(f"{again.index_url}absent/", timeout=30)
            assert answer.status_code == 404, answer.text
            assert "absent" in answer.text
    finally:
        again.stop()


def test_a_kept_404_is_not_asked_again_within_the_ttl_by_the_next_run(
    tmp_path: Path, switch: Switch, http: requests.Session
) -> None:
    config = Config(nestegg_dir=tmp_path / "nest", port=0, index_url=switch.server.index_url, ttl=600)
    for _ in range(2):
        mirror = Mirror(config).start()
        try:
            assert http.get(f"{mirror.index_url}absent/", timeout=10).status_code == 404
        finally:
            mirror.stop()
    assert switch.server.count("/simple/absent/") == 1


# what pip shows: the reason phrase ------------------------------------------------------------


def test_an_empty_cache_offline_says_so_in_the_reason_phrase(tmp_path: Path, http: requests.Session) -> None:
    config = Config(nestegg_dir=tmp_path / "nest", port=0, index_url="http://example.invalid/simple/")
    mirror = Mirror(config.with_changes(offline=True)).start()
    try:
        answer = http.get(f"{mirror.index_url}never-cached/", timeout=10)
        assert answer.status_code == 410  # not a 404, which uv shows as 'not found' alone
        assert "the cache has nothing for 'never-cached'" in answer.reason
        assert "offline" in answer.reason
        assert answer.text.count("\n") == 1
    finally:
        mirror.stop()


def test_a_name_never_cached_behind_an_unreachable_upstream_says_so_in_the_reason_phrase(
    tmp_path: Path, switch: Switch, http: requests.Session
) -> None:
    mirror = warm_mirror(tmp_path, switch.server.index_url)
    try:
        switch.server.__exit__()
        for name in ("one", "two"):
            answer = http.get(f"{mirror.index_url}{name}/", timeout=30)
            assert answer.status_code == 410  # said in the reason phrase, which uv shows
            assert f"the cache has nothing for {name!r}" in answer.reason
            assert "is unreachable (connection refused)" in answer.reason
    finally:
        mirror.stop()


def test_an_extra_index_offline_answers_404_where_the_mirrors_own_answers_410(
    tmp_path: Path, switch: Switch, http: requests.Session
) -> None:
    """uv goes on to the next index after a 404 and stops at a 410: an extra index mounted under
    /upstreams/ answers 404 for what it has nothing of, so that uv reaches the mirror's own index,
    which answers 410 with a reason uv shows. Both say why in the reason phrase."""
    config = Config(nestegg_dir=tmp_path / "nest", port=0, index_url=switch.server.index_url, offline=True)
    with Mirror(config) as mirror:
        extra = UpstreamMounts(mirror).index_url("https://extra.example.invalid/simple/")
        for index, status in ((extra, 404), (mirror.index_url, 410)):
            answer = http.get(f"{index}never-cached/", timeout=30)
            assert answer.status_code == status, (index, answer.text)
            assert "the cache has nothing for 'never-cached'" in answer.reason


# a file's failure -------------------------------------------------------------------------------


class FilesFail:
    """Pages for every name; the file of ``hangs`` never answers, that of ``moved`` is redirected
    to a port nothing listens on; other files are served."""

    def __init__(self, gone: str) -> None:
        self.gone = gone
        self.server = RawUpstream(self.answer)

    def answer(self, _method: str, path: str) -> Answer:
        parts = path.strip("/").split("/")
        if parts[0] == "simple":
            name = parts[-1]
            link = f'<a href="/files/{name}-1.0.tar.gz">{name}-1.0.tar.gz</a>'
            return Answer(body=link.encode(), headers={"Content-Type": "text/html"})
        if parts[-1] == "hangs-1.0.tar.gz":
            return Answer(hang=True)
        if parts[-1] == "moved-1.0.tar.gz":
            return Answer(status=302, headers={"Location": self.gone})
        return Answer(body=b"a file", headers={"Content-Type": "application/octet-stream"})


@pytest.mark.parametrize("bad", ["hangs", "moved"])
def test_a_file_that_fails_leaves_the_pages_of_its_index_to_be_asked(
    tmp_path: Path, http: requests.Session, bad: str
) -> None:
    """One file (on the index's own host) that never answered opened the circuit of the whole
    index: every page not cached was a 410 at once for 30 s."""
    upstream = FilesFail(refused_url().removesuffix("simple/") + "elsewhere/moved-1.0.tar.gz")
    with upstream.server:
        config = Config(
            nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.server.index_url,
            timeout=TIMEOUT, connect_timeout=TIMEOUT,
        )  # fmt: skip
        with Mirror(config) as mirror:
            assert http.get(f"{mirror.url}/simple/{bad}/").status_code == 200
            assert http.get(f"{mirror.url}/files/{bad}/{bad}-1.0.tar.gz").status_code in (502, 504)
            assert http.get(f"{mirror.url}/simple/p1/").status_code == 200  # asked, not refused
            # the host the redirect went to is the one down: the index's files are still had; a
            # file that hung opened the circuit of the index's files, not of its pages
            served = http.get(f"{mirror.url}/files/p1/p1-1.0.tar.gz")
            assert served.status_code == (200 if bad == "moved" else 504), served.text  # its files wait


class OneHangs:
    """Real wheels of ``first``, ``second`` and ``third``; the file of ``hangs`` never answers."""

    def __init__(self, tmp: Path) -> None:
        made = (
            make_wheel(PackageSpec(name=name, version="1.0"), tmp) for name in ("first", "second", "third")
        )
        self.wheels = {path.name.split("-")[0]: (path.name, path.read_bytes()) for path in made}
        self.server = RawUpstream(self.answer)

    def answer(self, _method: str, path: str) -> Answer:
        parts = path.strip("/").split("/")
        if parts[0] == "simple":
            name = parts[-1]
            filename = self.wheels[name][0] if name in self.wheels else f"{name}-1.0.tar.gz"
            link = f'<a href="/files/{filename}">{filename}</a>'
            return Answer(body=link.encode(), headers={"Content-Type": "text/html"})
        if parts[-1] == "hangs-1.0.tar.gz":
            return Answer(hang=True)
        for filename, data in self.wheels.values():
            if parts[-1] == filename:
                return Answer(body=data, headers={"Content-Type": "application/octet-stream"})
        return Answer(status=404, body=b"not here\n")


def test_a_file_that_never_answers_leaves_pip_and_uv_the_other_files_of_its_host(
    tmp_path: Path, http: requests.Session
) -> None:
    """One file that never answered opened the circuit of its host's files, although the host
    answered another file meanwhile: every file not cached was a 504 for 30 s (pip and uv
    failed), then as long again after each probe, which asked that file again."""
    upstream = OneHangs(tmp_path / "made")
    with upstream.server:
        config = Config(
            nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.server.index_url,
            timeout=3.0, connect_timeout=3.0,
        )  # fmt: skip
        with Mirror(config) as mirror:
            assert http.get(f"{mirror.index_url}hangs/").status_code == 200
            answers: list[int] = []

            def hanging() -> None:
                with requests.Session() as session:
                    session.trust_env = False
                    answers.append(
                        session.get(f"{mirror.url}/files/hangs/hangs-1.0.tar.gz", timeout=30).status_code
                    )

            thread = threading.Thread(target=hanging)
            thread.start()
            wait_until(lambda: upstream.server.count("/files/hangs-1.0.tar.gz") == 1, "the hanging request")
            first = http.get(f"{mirror.index_url}first/").text.split('href="')[1].split('"')[0]
            assert http.get(requests.compat.urljoin(f"{mirror.index_url}first/", first)).status_code == 200
            thread.join(30)
            assert answers == [504]  # that file: the host answered another meanwhile
            for installer, name in (("pip", "second"), ("uv", "third")):
                python = make_venv(tmp_path / f"venv-{installer}")
                command = install_command(installer, python, name)
                env = installer_env(mirror.index_url)
                result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                assert result.returncode == 0, result.stdout + result.stderr


class _Opened:
    def close(self) -> None:
        pass


class Never:
    """A fake fetcher: every page and file fails as a time-out, but a probe of a host answers."""

    def __init__(self, *, prober: bool) -> None:
        self.asked: list[str] = []
        if prober:
            self.answers = self.asked.append

    def project(self, name: str, **_: object) -> object:
        self.asked.append(name)
        raise down(TIMED_OUT)  # that page, forever

    def open(self, url: str) -> _Opened:
        self.asked.append(url)
        if url.endswith(".tar.gz"):
            raise down(TIMED_OUT)  # that file, forever
        return _Opened()


def _page(fetcher: CircuitFetcher, name: str) -> object:
    return fetcher.project(name, etag=None, last_modified=None)


def _file(fetcher: CircuitFetcher, name: str) -> object:
    return fetcher.open(f"https://example.invalid/files/{name}-1.0.tar.gz")


@pytest.mark.parametrize("prober", [True, False], ids=["prober", "plain-fetcher"])
@pytest.mark.parametrize(
    ("ask", "circuit", "failed", "probed"),
    [
        # a page that never answered kept the index's circuit open: its probe asked it again
        (_page, "index", "x", "https://example.invalid/simple/-/"),
        (_file, "index_files", "https://example.invalid/files/x-1.0.tar.gz", "https://example.invalid/"),
    ],
    ids=["page", "file"],
)
def test_a_circuit_is_probed_at_its_index_or_root_not_at_what_failed(
    ask: Callable[[CircuitFetcher, str], object], circuit: str, failed: str, probed: str, prober: bool
) -> None:
    never = Never(prober=prober)
    circuits = Circuits("https://example.invalid/simple/", window=0.01)
    fetcher = CircuitFetcher(never, circuits)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError):
        ask(fetcher, "x")
    assert getattr(circuits, circuit).reason == TIMED_OUT  # nothing else of the host answered meanwhile
    time.sleep(0.02)
    with pytest.raises(UpstreamDown):
        ask(fetcher, "y")  # starts the probe
    wait_until(lambda: getattr(circuits, circuit).reason is None, "the circuit to close")
    assert never.asked == [failed, probed]


class Meanwhile:
    """A fake fetcher whose page or file ``hangs`` times out after the host answered ``answer``
    (a page or a file of it, 200 or 503) while it was asked."""

    def __init__(self, hangs: str, answer: str | None, status: int) -> None:
        self.hangs = hangs
        self.answer = answer
        self.status = status
        self.fetcher: CircuitFetcher | None = None

    def _asked(self, what: str) -> _Opened:
        if what == self.hangs:
            if self.answer is not None and self.fetcher is not None:
                with contextlib.suppress(UpstreamError):
                    (_page if self.answer.startswith("page") else _file)(self.fetcher, self.answer)
            raise down(TIMED_OUT)
        if self.status != 200:
            raise UpstreamError(f"upstream answered {what} with HTTP {self.status}")
        return _Opened()

    def project(self, name: str, **_: object) -> _Opened:
        return self._asked(name)

    def open(self, url: str) -> _Opened:
        return self._asked(url.rsplit("/", 1)[-1].removesuffix("-1.0.tar.gz"))


@pytest.mark.parametrize(
    ("hangs", "answer", "status", "opens"),
    [
        # a devpi or Artifactory serves its own files: a page answered says the host is up
        ("file", "page", 200, None),
        ("file", "page", 503, None),  # a 5xx is an answer too
        ("file", "file-other", 503, None),
        # one page slow to come (or that never comes) made every page cached-only, and every
        # page with nothing cached a 410, while the upstream answered them
        ("page", "page-other", 200, None),
        ("page", "page-other", 503, None),
        ("page", "file", 200, None),
        ("page", None, 200, TIMED_OUT),  # nothing answered meanwhile: the host is down
        ("file", None, 200, TIMED_OUT),
    ],
)
def test_what_fails_while_its_host_answers_something_else_fails_alone(
    hangs: str, answer: str | None, status: int, opens: str | None
) -> None:
    upstream = Meanwhile(hangs, answer, status)
    circuits = Circuits("https://example.invalid/simple/")
    fetcher = upstream.fetcher = CircuitFetcher(upstream, circuits)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError):
        (_page if hangs == "page" else _file)(fetcher, hangs)
    circuit = circuits.index if hangs == "page" else circuits.index_files
    assert circuit.reason == opens


@pytest.mark.parametrize(
    "root",
    [
        # a CDN's root that sends to a website nestegg cannot reach: followed, the probe failed
        # and the circuit of every file of the CDN never closed
        Answer(status=302, headers={"Location": "REFUSED"}),
        Answer(status=401, body=b"log in"),
        Answer(status=404, body=b"no"),
        Answer(status=503, body=b"busy"),
    ],
    ids=["redirect-elsewhere", "401", "404", "503"],
)
def test_any_http_answer_of_a_host_s_root_closes_its_circuit(root: Answer) -> None:
    elsewhere = refused_url()
    hangs = threading.Event()
    hangs.set()

    def answer(_method: str, path: str) -> Answer:
        if path == "/":
            location = root.headers.get("Location")
            return root if location is None else Answer(status=root.status, headers={"Location": elsewhere})
        if hangs.is_set():
            return Answer(hang=True)
        return Answer(body=b"a file", headers={"Content-Type": "application/octet-stream"})

    with RawUpstream(answer) as server:
        fetcher = HttpFetcher(server.index_url, timeout=TIMEOUT, connect_timeout=TIMEOUT)
        circuits = Circuits(server.index_url, window=0.05, max_window=0.1)
        files = CircuitFetcher(fetcher, circuits)
        url = server.index_url.split("/simple")[0] + "/files/x-1.0.tar.gz"
        with pytest.raises(UpstreamError):
            files.open(url)
        assert circuits.index_files.reason == TIMED_OUT
        hangs.clear()  # the host serves its files again
        time.sleep(0.06)
        with contextlib.suppress(UpstreamDown):
            files.open(url).close()  # starts the probe
        wait_until(lambda: circuits.index_files.reason is None, "the circuit to close", timeout=5)
        assert server.count("/") == 1


class SlowPage:
    """Real wheels 1.0 and 2.0 of ``slow``, ``other`` and ``third``; the page of ``slow`` never
    answers once ``hang`` is set."""

    def __init__(self, tmp: Path) -> None:
        made = [
            make_wheel(PackageSpec(name=name, version=version), tmp)
            for name in ("slow", "other", "third")
            for version in ("1.0", "2.0")
        ]
        self.wheels = {path.name: path.read_bytes() for path in made}
        self.hang = threading.Event()
        self.server = RawUpstream(self.answer)

    def answer(self, _method: str, path: str) -> Answer:
        name = path.strip("/").split("/")[-1]
        if path.startswith("/files/"):
            return Answer(body=self.wheels[name], headers={"Content-Type": "application/octet-stream"})
        if name == "slow" and self.hang.is_set():
            return Answer(hang=True)
        files = [file for file in self.wheels if file.startswith(f"{name}-")]
        links = "".join(f'<a href="/files/{file}">{file}</a>' for file in files)
        return Answer(body=links.encode(), headers={"Content-Type": "text/html"})


def test_one_page_that_never_answers_leaves_pip_and_uv_every_other_page_whole(
    tmp_path: Path, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page held that took ``REVALIDATE_TIMEOUT`` opened the index's circuit although the
    upstream answered another page meanwhile: every page was served with its cached files alone
    (an unpinned install got 1.0, not 2.0) and one with none cached was a 410, for 30 s, then as
    long again after each probe, which asked that page again."""
    monkeypatch.setattr(upstream_module, "REVALIDATE_TIMEOUT", TIMEOUT)
    upstream = SlowPage(tmp_path / "made")
    with upstream.server:
        config = Config(
            nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.server.index_url, ttl=0,
            timeout=10.0, connect_timeout=3.0,
        )  # fmt: skip
        with Mirror(config) as mirror:
            for name in ("slow", "other", "third"):
                assert http.get(f"{mirror.index_url}{name}/").status_code == 200
            assert http.get(f"{mirror.url}/files/other/other-1.0-py3-none-any.whl").status_code == 200
            upstream.hang.set()
            answers: list[int] = []
            thread = threading.Thread(
                target=lambda: answers.append(http_get(f"{mirror.index_url}slow/").status_code)
            )
            thread.start()
            wait_until(lambda: upstream.server.count("/simple/slow/") == 2, "the hanging request")
            assert "other-2.0" in http.get(f"{mirror.index_url}other/").text  # answered meanwhile
            thread.join(30)
            assert answers == [504]  # that page alone: it has nothing cached
            assert mirror.repository.circuits.index.reason is None
            for installer, name in (("pip", "other"), ("uv", "third")):
                python = make_venv(tmp_path / f"venv-{installer}")
                command = install_command(installer, python, name)
                env = installer_env(mirror.index_url)
                result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                assert result.returncode == 0, result.stdout + result.stderr
                said = result.stdout + result.stderr
                assert f"{name}-2.0" in said or f"{name}==2.0" in said, said  # pip's words, uv's


def http_get(url: str) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, timeout=30)
