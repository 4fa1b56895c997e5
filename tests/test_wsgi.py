"""The WSGI entry point, files handed to a front server, the config keys of both, and the metrics."""

from __future__ import annotations

import gc
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from packaging.utils import NormalizedName

from nestegg_core import Config, Mirror, wsgi
from nestegg_core.config.config import parse_config
from nestegg_core.errors import ConfigError
from nestegg_core.http.metrics import prometheus_text
from nestegg_core.http.types import Environ
from nestegg_core.index import repository
from nestegg_core.storage.counters import Counters
from nestegg_core.storage.store import CacheStore
from nestegg_core.testing import installer_env
from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex
from nestegg_core.wsgi import LazyApplication, config_from_environ, make_application

from .conftest import Faults, MirrorFactory
from .test_builds import GitRepo, group_members, hung_group, hung_repo, needs_proc  # noqa: F401 - a fixture

#: the address of workers that serve one mirror together
PUBLIC = "http://mirror.example.com"


def call(app: Any, path: str = "/health", **environ: Any) -> tuple[str, dict[str, str], bytes]:
    """One request straight into a WSGI application: status, headers, body."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    env: Environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "test", **environ}
    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return seen["status"], seen["headers"], body


# the entry point -----------------------------------------------------------------------------------


def test_importing_the_entry_point_does_no_work(tmp_path: Path) -> None:
    # a config that does not exist: reading it at import would fail the import
    code = "import nestegg_core.wsgi as w; print(w.application._app is None)"
    env = {"NESTEGG_CONFIG": str(tmp_path / "missing.yml"), "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "True"), result.stderr
    assert not (tmp_path / "missing.yml").exists()


def test_the_application_is_built_once_by_concurrent_first_requests() -> None:
    built: list[Mapping[str, str]] = []

    def hello(environ: Environ, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    def factory(env: Mapping[str, str]) -> Any:
        time.sleep(0.1)  # long enough for every thread to arrive while it is being built
        built.append(env)
        return hello

    app = LazyApplication(factory)
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(call(app)[2])) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [b"hello"] * 16
    assert len(built) == 1


def test_setenv_values_of_the_first_request_configure_it(tmp_path: Path) -> None:
    (tmp_path / "nest").mkdir()
    app = LazyApplication()
    try:
        _setenv_values_configure(app, tmp_path)
        assert app._built is not None
        built = weakref.ref(app._built.composition)
    finally:
        app.stop()
    # what it built is let go of, by the process's exit hooks too: one built again leaks none
    gc.collect()
    assert (app._app, built()) == (None, None)


def _setenv_values_configure(app: LazyApplication, tmp_path: Path) -> None:
    status, _, body = call(
        app, NESTEGG_CACHE_DIR=str(tmp_path / "nest"), NESTEGG_OFFLINE="yes",
        NESTEGG_CONFIG=str(tmp_path / "none.yml"),
    )  # fmt: skip
    # the named config does not exist: a 500 that says so, and the next request tries again
    assert status.startswith("500")
    assert b"none.yml" in body
    (tmp_path / "none.yml").write_text("nestegg:\n  ttl: 5\n")
    status, _, body = call(
        app, "/metrics", NESTEGG_CACHE_DIR=str(tmp_path / "nest"), NESTEGG_OFFLINE="yes",
        NESTEGG_CONFIG=str(tmp_path / "none.yml"),
    )  # fmt: skip
    assert status.startswith("200")
    assert json.loads(body)["bytes_served"] == 0
    call(app, "/metrics")  # adds the bytes of the first answer to the totals in the nest
    assert json.loads((tmp_path / "nest" / "metrics.json").read_bytes())["counters"]["bytes_served"] > 0
    # later requests are served by the same application, whatever they carry
    assert call(app, NESTEGG_CACHE_DIR="/elsewhere")[0].startswith("200")
    assert not Path("/elsewhere").exists()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, {"offline": False}),
        ({"NESTEGG_OFFLINE": "1"}, {"offline": True}),
        ({"NESTEGG_OFFLINE": " Yes "}, {"offline": True}),
        ({"NESTEGG_OFFLINE": "off"}, {"offline": False}),
        ({"NESTEGG_CACHE_DIR": "/srv/nest"}, {"nestegg_dir": Path("/srv/nest")}),
        ({"NESTEGG_INDEX_URL": "http://127.0.0.1:9/simple"}, {"index_url": "http://127.0.0.1:9/simple"}),
    ],
)
def test_config_from_environ(tmp_path: Path, variables: dict[str, str], expected: dict[str, Any]) -> None:
    config_file = tmp_path / "nestegg.yml"
    config_file.write_text("nestegg:\n  ttl: 42\n")
    config = config_from_environ({"NESTEGG_CONFIG": str(config_file), **variables})
    assert config.ttl == 42
    assert config.source == config_file
    for key, value in expected.items():
        assert getattr(config, key) == value


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"NESTEGG_OFFLINE": "maybe"}, "$NESTEGG_OFFLINE: expected yes or no (1 or 0), got 'maybe'"),
        ({"NESTEGG_INDEX_URL": "ftp://x/"}, "$NESTEGG_INDEX_URL: 'ftp://x/' is not an http(s) URL"),
        ({"NESTEGG_CONFIG": "/no/such/nestegg.yml"}, "(from $NESTEGG_CONFIG) does not exist"),
    ],
)
def test_config_from_environ_errors_name_the_variable(variables: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_environ({"NESTEGG_CONFIG": "", **variables})
    assert message in str(error.value)


def test_make_application_serves_the_mirror(tmp_path: Path, upstream: PrivateIndex) -> None:
    upstream.add("lazy-pkg", "1.0", sdist=False)
    app = make_application(
        {
            "NESTEGG_CONFIG": "",
            "NESTEGG_CACHE_DIR": str(tmp_path / "nest"),
            "NESTEGG_INDEX_URL": upstream.index_url,
        }
    )
    try:
        status, _, body = call(app, "/simple/lazy-pkg/", HTTP_ACCEPT="application/vnd.pypi.simple.v1+json")
    finally:
        app.stop()
    assert status.startswith("200"), body
    assert b"lazy_pkg-1.0-py3-none-any.whl" in body


def test_make_application_leaves_the_process_as_it_was_and_its_caller_stops_it(
    tmp_path: Path, upstream: PrivateIndex
) -> None:
    """An application that embeds the mirror keeps its own SIGTERM handler and exit, and lets go
    of a mirror it stopped (one it makes again leaves none behind)."""
    upstream.add("embedded", "1.0", sdist=False)
    environ = {
        "NESTEGG_CONFIG": "",
        "NESTEGG_CACHE_DIR": str(tmp_path / "nest"),
        "NESTEGG_INDEX_URL": upstream.index_url,
    }

    def own_handler(_signum: int, _frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, own_handler)
    try:
        app = make_application(environ)
        assert signal.getsignal(signal.SIGTERM) is own_handler
        assert call(app, "/simple/embedded/")[0].startswith("200")
        app.stop()
        app.stop()  # once only
    finally:
        signal.signal(signal.SIGTERM, previous)
    # stopped: its counts are in the nest, and nothing of the process holds it
    assert json.loads((tmp_path / "nest" / "metrics.json").read_bytes())["counters"]["bytes_served"] > 0
    made = weakref.ref(app.composition)
    del app
    gc.collect()
    assert made() is None


# a worker that exits ends what its app started ---------------------------------------------------


def hung_nest(tmp_path: Path, upstream: PrivateIndex, repo: GitRepo) -> dict[str, str]:
    """The environment of a WSGI process whose nest builds hung_package, whose build hangs."""
    config = tmp_path / "nestegg.yml"
    build = {"name": "hung_package", "repo_type": "git", "repo_url": str(repo.path),
             "versions": [{"version": "1.0.0", "tag": "1.0.0"}]}  # fmt: skip
    # the mirror's own URL, which builds need, is where the WSGI server listens (nothing, here)
    settings = {"ttl": 0, "port": 9, "source_builds": [build]}
    config.write_text(yaml.safe_dump({"nestegg": settings}), encoding="utf-8")
    return installer_env(
        NESTEGG_CONFIG=str(config),
        NESTEGG_CACHE_DIR=str(tmp_path / "nest"),
        NESTEGG_INDEX_URL=upstream.index_url,
    )


#: a process that loads the WSGI app, asks it for the page of a project whose build hangs, and exits
#: once the build runs; the request in a daemon thread (waitress's workers) or in a pool's
#: (gunicorn's gthread workers: the interpreter joins its threads at exit)
EXITS_WHILE_BUILDING = """
import concurrent.futures, sys, threading, time
from pathlib import Path
from nestegg_core.wsgi import application

def ask():
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/simple/hung-package/", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "9", "wsgi.url_scheme": "http"}
    list(application(environ, lambda status, headers, exc_info=None: None))

if sys.argv[2] == "daemon":
    threading.Thread(target=ask, daemon=True).start()
else:
    concurrent.futures.ThreadPoolExecutor(1).submit(ask)
mark = Path(sys.argv[1])
deadline = time.monotonic() + 60
while not mark.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print("building" if mark.exists() else "no build", flush=True)
"""


def test_sigterm_reaches_the_servers_handler_when_no_thread_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """During the interpreter's exit no thread starts: gunicorn's own handler was then skipped."""
    calls: list[int] = []
    ending = wsgi._Exit()
    ending._previous = lambda signum, _frame: calls.append(signum)

    def refused(_thread: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refused)
    ending._terminated(signal.SIGTERM, None)
    assert calls == [signal.SIGTERM]


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("thread", ["daemon", "pool"])
def test_a_process_that_exits_ends_the_build_its_app_runs(
    tmp_path: Path,
    upstream: PrivateIndex,
    hung_repo: tuple[GitRepo, Path],  # noqa: F811 - the fixture imported above
    thread: str,
) -> None:
    repo, mark = hung_repo
    env = hung_nest(tmp_path, upstream, repo)
    with hung_group(mark) as group:
        process = subprocess.Popen(
            [sys.executable, "-c", EXITS_WHILE_BUILDING, str(mark), thread],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            out, _ = process.communicate(timeout=60)
        finally:
            process.kill()
            process.wait()
        assert out.startswith("building"), out
        assert process.returncode == 0, out
        assert group_members(group()) == []


# files handed to the front server ----------------------------------------------------------------


@pytest.fixture
def wheel(upstream: PrivateIndex) -> tuple[str, str]:
    record = upstream.add("front-pkg", "1.0+local.2", sdist=False, payload_size=50_000)[0]
    assert record.sha256 is not None
    return record.filename, record.sha256


def test_x_accel_redirect_names_the_file_under_the_prefix(
    make_mirror: MirrorFactory, http: requests.Session, wheel: tuple[str, str]
) -> None:
    mirror = make_mirror(sendfile="x-accel-redirect", sendfile_prefix="/internal/nest/")
    url = f"{mirror.url}/files/front-pkg/{wheel[0]}"
    http.get(mirror.index_url + "front-pkg/")
    first = http.get(url)  # not cached yet: streamed by nestegg while it downloads
    assert hashlib.sha256(first.content).hexdigest() == wheel[1]
    assert "X-Accel-Redirect" not in first.headers
    for method in ("GET", "HEAD"):
        answer = http.request(method, url)
        assert answer.status_code == 200
        path = mirror.repository.store.file_path(NormalizedName("front-pkg"), wheel[0])
        relative = path.relative_to(mirror.config.nestegg_dir)
        assert answer.headers["X-Accel-Redirect"] == f"/internal/nest/{relative.as_posix()}"
        assert answer.headers["Content-Length"] == "0"
        assert answer.content == b""
        assert answer.headers["Cache-Control"] == "max-age=31536000, immutable"
    metrics = http.get(f"{mirror.url}/metrics").json()
    assert metrics["bytes_offloaded"] == 2 * len(first.content)


def test_x_sendfile_names_the_absolute_path_and_private_files_too(
    make_mirror: MirrorFactory, http: requests.Session, wheel: tuple[str, str], upstream: PrivateIndex
) -> None:
    mirror = make_mirror(sendfile="x-sendfile")
    http.get(mirror.index_url + "front-pkg/")
    url = f"{mirror.url}/files/front-pkg/{wheel[0]}"
    http.get(url)
    answer = http.get(url)
    assert answer.headers["X-Sendfile"] == str(
        mirror.repository.store.file_path(NormalizedName("front-pkg"), wheel[0])
    )
    # a private file: from the private store, by the same header
    private = upstream.add("own-pkg", "2.0", sdist=False)[0]
    source = upstream.root / "nest" / "private" / "own-pkg" / private.filename
    mirror.repository.private.add(source)
    answer = http.get(f"{mirror.url}/files/own-pkg/{private.filename}")
    expected = mirror.config.nestegg_dir / "private" / "own-pkg" / private.filename
    assert answer.headers["X-Sendfile"] == str(expected.resolve())


def test_a_path_a_front_server_may_read_otherwise_is_sent_by_nestegg(
    tmp_path: Path, make_mirror: MirrorFactory, http: requests.Session, wheel: tuple[str, str]
) -> None:
    mirror = make_mirror(sendfile="x-sendfile", nestegg_dir=tmp_path / "nest egg")
    http.get(mirror.index_url + "front-pkg/")
    url = f"{mirror.url}/files/front-pkg/{wheel[0]}"
    http.get(url)
    answer = http.get(url)
    assert "X-Sendfile" not in answer.headers
    assert hashlib.sha256(answer.content).hexdigest() == wheel[1]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, (None, "/_nestegg/", None)),
        ({"sendfile": "X-Accel-Redirect"}, ("x-accel-redirect", "/_nestegg/", None)),
        ({"sendfile": "x-sendfile"}, ("x-sendfile", "/_nestegg/", None)),
        ({"sendfile": False}, (None, "/_nestegg/", None)),
        ({"sendfile_prefix": "/internal"}, (None, "/internal/", None)),
        ({"sendfile-prefix": "/a/b/"}, (None, "/a/b/", None)),
        ({"max_cache_size": "20G"}, (None, "/_nestegg/", 20 * 1024**3)),
        ({"max_cache_size": 1000}, (None, "/_nestegg/", 1000)),
    ],
)
def test_deployment_config_keys(body: dict[str, Any], expected: tuple[Any, ...]) -> None:
    config = parse_config({"nestegg": body}, source=Path("team.yml"))
    assert (config.sendfile, config.sendfile_prefix, config.max_cache_size) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sendfile": "apache"}, "team.yml: nestegg.sendfile: expected x-accel-redirect or x-sendfile"),
        ({"sendfile": True}, "team.yml: nestegg.sendfile: expected a non-empty string, got bool True"),
        ({"sendfile_prefix": "internal"}, "team.yml: nestegg.sendfile_prefix: expected a URL path"),
        ({"sendfile_prefix": "/a b/"}, "team.yml: nestegg.sendfile_prefix: expected a URL path"),
        ({"max_cache_size": "lots"}, "team.yml: nestegg.max_cache_size: expected a size like 500M"),
        ({"max_cache_size": 0}, "team.yml: nestegg.max_cache_size: expected a size like 500M"),
    ],
)
def test_deployment_config_errors_name_file_and_key(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(yaml.safe_load(yaml.safe_dump({"nestegg": body})), source=Path("team.yml"))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# metrics ---------------------------------------------------------------------------------------------


def test_counters_of_processes_add_up_in_the_nest(tmp_path: Path) -> None:
    # two Counters on one nest stand for two worker processes
    first, second = Counters(tmp_path, flush_after=0.05), Counters(tmp_path, flush_after=0.05)
    first.add("cache_hits", 2)
    second.add("cache_hits")
    second.add("upstream_errors")
    deadline = time.monotonic() + 5
    while first.totals()["cache_hits"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)  # the second's timer adds its counts without any request
    totals = first.totals()
    assert (totals["cache_hits"], totals["upstream_errors"], totals["cache_misses"]) == (3, 1, 0)
    since = totals["since"]
    assert Counters(tmp_path).totals()["since"] == since  # kept across restarts


def test_a_stopped_mirror_has_written_its_counts_and_writes_nothing_more(
    make_mirror: MirrorFactory, http: requests.Session, wheel: tuple[str, str]
) -> None:
    """The counts are in the nest when the server's stop returns, and no timer adds them later: a
    test that removed its nest at once (a temporary folder) found it refilled a second later."""
    mirror = make_mirror()
    # a timer still waits at the stop (unless this machine is slow: then nothing is proved)
    mirror.repository.counters.flush_after = 0.3
    nest = mirror.config.nestegg_dir
    http.get(mirror.index_url + "front-pkg/")
    assert http.get(f"{mirror.url}/metrics").json()["cache_misses"] == 0  # a flush; its answer counts on
    assert http.get(f"{mirror.url}/files/front-pkg/{wheel[0]}").status_code == 200
    mirror.stop()
    metrics = nest / "metrics.json"
    written = json.loads(metrics.read_bytes())["counters"]
    assert written["cache_misses"] == written["upstream_downloads"] == 1
    assert written["bytes_served"] > 0
    before = (metrics.stat().st_mtime_ns, sorted(p.name for p in (nest / "locks").iterdir()))
    time.sleep(0.6)
    assert (metrics.stat().st_mtime_ns, sorted(p.name for p in (nest / "locks").iterdir())) == before


def test_counters_survive_an_unwritable_nest(tmp_path: Path) -> None:
    (tmp_path / "locks").write_text("a file where a directory belongs")
    counters = Counters(tmp_path)
    counters.add("bytes_served", 10)
    assert counters.totals()["bytes_served"] == 10
    assert counters.totals()["bytes_served"] == 10  # kept, not lost or counted twice


def test_metrics_endpoint_counts_hits_misses_errors_and_bytes(
    mirror: Mirror, http: requests.Session, faults: Faults, upstream: PrivateIndex
) -> None:
    record = upstream.add("metered", "1.0", sdist=False, payload_size=20_000)[0]
    http.get(mirror.index_url + "metered/")
    url = f"{mirror.url}/files/metered/{record.filename}"
    size = len(http.get(url).content)
    http.get(url)
    faults.status = 503
    assert http.get(mirror.index_url + "other/").status_code == 502
    metrics = http.get(f"{mirror.url}/metrics").json()
    assert metrics["cache_misses"] == 1
    assert metrics["cache_hits"] == 1
    assert metrics["upstream_downloads"] == 1
    assert metrics["upstream_errors"] == 1
    assert metrics["bytes_served"] >= 2 * size
    assert metrics["bytes_offloaded"] == 0
    assert isinstance(metrics["pid"], int)
    text = http.get(f"{mirror.url}/metrics", headers={"Accept": "text/plain;version=0.0.4"})
    assert text.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE nestegg_cache_hits_total counter\nnestegg_cache_hits_total 1\n" in text.text
    assert http.get(f"{mirror.url}/metrics?format=prometheus").text.startswith("# HELP nestegg_")


def test_prometheus_text_lists_every_counter() -> None:
    text = prometheus_text(
        {"cache_hits": 1, "cache_misses": 2, "upstream_downloads": 3, "upstream_errors": 4,
         "bytes_served": 5, "bytes_offloaded": 6, "since": 1700000000.0}
    )  # fmt: skip
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == [
        "nestegg_cache_hits_total 1", "nestegg_cache_misses_total 2", "nestegg_upstream_downloads_total 3",
        "nestegg_upstream_errors_total 4", "nestegg_bytes_served_total 5",
        "nestegg_bytes_offloaded_total 6", "nestegg_metrics_since_seconds 1700000000.000",
    ]  # fmt: skip


def test_health(mirror: Mirror, http: requests.Session) -> None:
    assert http.get(f"{mirror.url}/health").json() == {"status": "ok"}
    assert Config().sendfile is None


# many workers on one nest (two mirrors in one process stand for two worker processes) -------------


def test_workers_agree_on_a_page_once_another_cached_a_file(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, http: requests.Session
) -> None:
    record = upstream.add("shared", "1.0", sdist=False)[0]
    faults.html_only = True  # no sizes upstream: the worker that caches the file learns it
    # workers behind one address: the same Host, hence the same pages
    first, second = make_mirror(public_url=PUBLIC), make_mirror(public_url=PUBLIC)
    json_type = {"Accept": "application/vnd.pypi.simple.v1+json"}
    before = {m: http.get(f"{m.index_url}shared/", headers=json_type) for m in (first, second)}
    assert before[first].headers["ETag"] == before[second].headers["ETag"]
    http.get(f"{first.url}/files/shared/{record.filename}").raise_for_status()
    after = {m: http.get(f"{m.index_url}shared/", headers=json_type) for m in (first, second)}
    assert after[first].json()["files"][0]["size"] == record.size
    assert after[second].headers["ETag"] == after[first].headers["ETag"] != before[first].headers["ETag"]
    assert faults.count(prefix="/simple/shared/") == 1  # caught up from disk, not from the upstream


def test_a_page_asked_once_a_file_is_served_lists_what_it_learned(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file's last byte waits until its page knows it: slowed here, as under load."""
    record = upstream.add("learned", "1.0", sdist=False)[0]
    faults.html_only = True  # no sizes upstream: the download learns it
    first, second = make_mirror(), make_mirror()
    json_type = {"Accept": "application/vnd.pypi.simple.v1+json"}
    for mirror in (first, second):
        assert "size" not in http.get(f"{mirror.index_url}learned/", headers=json_type).json()["files"][0]
    page_changed = CacheStore.page_changed

    def slowly(store: CacheStore, name: NormalizedName, *, metadata_only: bool = False) -> None:
        time.sleep(0.5)
        page_changed(store, name, metadata_only=metadata_only)

    monkeypatch.setattr(CacheStore, "page_changed", slowly)
    http.get(f"{first.url}/files/learned/{record.filename}").raise_for_status()
    for mirror in (first, second):
        files = http.get(f"{mirror.index_url}learned/", headers=json_type).json()["files"]
        assert files[0]["size"] == record.size, mirror.url


def test_a_name_another_worker_made_private_is_never_served_from_the_mirror_again(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    http: requests.Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warm page is answered without a look at the disk while the nest's generations stay the
    same: an upload in another worker changes the private store's at once."""
    monkeypatch.setattr(repository, "RECHECK", 600.0)  # not by the clock: by the generation
    upstream.add("shifty", "1.0", sdist=False)
    first, second = make_mirror(), make_mirror()
    for _ in range(3):  # rendered, saved, then answered warm
        assert "shifty-1.0" in http.get(f"{first.index_url}shifty/").text
    second.repository.private.add(make_wheel(PackageSpec(name="shifty", version="9.0"), tmp_path))
    page = http.get(f"{first.index_url}shifty/").text
    assert "shifty-9.0" in page
    assert "shifty-1.0" not in page


def test_workers_agree_on_a_page_another_revalidated(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repository, "RECHECK", 600.0)  # not by the clock: by the generation
    upstream.add("moving", "1.0", sdist=False)
    eager, lazy = make_mirror(ttl=0, public_url=PUBLIC), make_mirror(ttl=600, public_url=PUBLIC)
    for _ in range(3):  # rendered, saved, then answered warm
        etag = http.get(f"{lazy.index_url}moving/").headers["ETag"]
    assert etag == http.get(f"{eager.index_url}moving/").headers["ETag"]
    upstream.add("moving", "2.0", sdist=False)
    time.sleep(0.01)  # a state file of another mtime
    new = http.get(f"{eager.index_url}moving/")  # revalidates at once and saves the new state
    assert "moving-2.0" in new.text
    # the other worker's page is fresh for ten minutes, yet it answers from the newer state on disk
    assert http.get(f"{lazy.index_url}moving/").headers["ETag"] == new.headers["ETag"]
    assert faults.count(prefix="/simple/moving/") == 3  # the lazy one's first, the eager one's two
