"""Team deployment end to end: gunicorn with 4 workers, nginx in front of it, Apache mod_wsgi.

Every server runs as a child process on 127.0.0.1 and is stopped by its PID. Sixteen clients fetch
every page and file at once; each file is checked against the hash its page gives, the fake upstream
counts one download per file across all worker processes, and the workers agree on page ETags.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
import yaml

from nestegg_core.simple.render import HTML_V1, JSON_V1
from nestegg_core.testing import find_uv, installer_env
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults
from .loopback import Trickle
from .test_builds import GitRepo, group_members, hung_group, hung_repo, needs_proc  # noqa: F401 - a fixture
from .test_wsgi import hung_nest

pytestmark = pytest.mark.slow

CLIENTS = 16
#: pid, method, path, query, status, Accept and ETag of every request gunicorn answers
ACCESS_FORMAT = "%(p)s|%(m)s|%(U)s|%(q)s|%(s)s|%({accept}i)s|%({etag}o)s"


# the fake upstream and the nest ------------------------------------------------------------------


def publish(upstream: PrivateIndex) -> dict[str, list[str]]:
    """A small dependency tree with files big enough that concurrent downloads overlap."""
    published: dict[str, list[str]] = defaultdict(list)
    for records in (
        upstream.add("team-app", "1.0", requires_dist=["team-lib>=1.1", "team-util"], payload_size=150_000),
        upstream.add("team-lib", "1.0"),
        upstream.add("team-lib", "1.1", payload_size=300_000),
        upstream.add("team-util", "2.0", requires_dist=["team-extra"], payload_size=100_000),
        # a local version: '+' must survive the trip through X-Accel-Redirect
        upstream.add("team-extra", "0.5+build1"),
    ):
        for record in records:
            published[record.filename.split("-")[0].replace("_", "-")].append(record.filename)
    return dict(published)


def nest_env(tmp_path: Path, upstream: PrivateIndex, **settings: Any) -> dict[str, str]:
    """The environment of a WSGI server running ``nestegg_core.wsgi:application`` on a new nest."""
    config = tmp_path / "nestegg.yml"
    config.write_text(yaml.safe_dump({"nestegg": settings}), encoding="utf-8")
    return installer_env(
        NESTEGG_CONFIG=str(config),
        NESTEGG_CACHE_DIR=str(tmp_path / "nest"),
        NESTEGG_INDEX_URL=upstream.index_url,
    )


# clients -------------------------------------------------------------------------------------------


def hammer(base: str, names: list[str], *, clients: int = CLIENTS) -> int:
    """``clients`` sessions fetch every page and every file at once, checking hashes; files fetched."""
    start = threading.Barrier(clients)

    def client(number: int) -> int:
        fetched = 0
        order = names[number % len(names) :] + names[: number % len(names)]
        with requests.Session() as session:
            session.trust_env = False
            start.wait(30)
            for name in order:
                page = session.get(f"{base}/simple/{name}/", headers={"Accept": JSON_V1}, timeout=60)
                page.raise_for_status()
                html = session.get(f"{base}/simple/{name}/", headers={"Accept": HTML_V1}, timeout=60)
                html.raise_for_status()
                for entry in page.json()["files"]:
                    url = urljoin(page.url, entry["url"])
                    answer = session.get(url, timeout=60)
                    answer.raise_for_status()
                    digest = hashlib.sha256(answer.content).hexdigest()
                    assert digest == entry["hashes"]["sha256"], f"client {number}: {url} has wrong bytes"
                    fetched += 1
        return fetched

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, number) for number in range(clients)]
        return sum(future.result(timeout=180) for future in futures)


def page_etags(base: str, names: list[str], *, rounds: int = 3) -> dict[tuple[str, str], set[str]]:
    """The ETags of every page as answered to ``CLIENTS`` fresh connections at once, per type."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    lock = threading.Lock()

    def ask(name: str, accept: str) -> None:
        # a new connection each time: the server hands it to whichever worker accepts first
        answer = requests.get(
            f"{base}/simple/{name}/?round=final",
            headers={"Accept": accept, "Connection": "close"},
            timeout=30,
        )
        answer.raise_for_status()
        with lock:
            seen[(name, accept)].add(answer.headers["ETag"])

    jobs = [(name, accept) for name in names for accept in (JSON_V1, HTML_V1)] * rounds
    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(ask, *job) for job in jobs]:
            future.result(timeout=60)
    return seen


def check_one_download_each(faults: Faults, published: Mapping[str, list[str]]) -> None:
    for name, filenames in published.items():
        for filename in filenames:
            assert faults.count(f"/files/{name}/{filename}") == 1, (name, filename)


def wait_for_metrics(base: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """``/metrics`` once ``done`` says so: each worker adds its counts within about a second."""
    deadline = time.monotonic() + 10
    while True:
        metrics: dict[str, Any] = requests.get(f"{base}/metrics", timeout=10).json()
        if done(metrics) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.2)


def check_ranges(base: str, name: str) -> None:
    """Byte ranges of a cached file are exactly its bytes (sent through the server's file wrapper)."""
    page = requests.get(f"{base}/simple/{name}/", headers={"Accept": JSON_V1}, timeout=10).json()
    url = urljoin(f"{base}/simple/{name}/", page["files"][0]["url"])
    whole = requests.get(url, timeout=10).content
    size = len(whole)
    for header, first, last in [
        ("bytes=10-99", 10, 99),
        (f"bytes={size - 300}-", size - 300, size - 1),
        ("bytes=-100", size - 100, size - 1),
        ("bytes=0-0", 0, 0),
    ]:
        part = requests.get(url, headers={"Range": header}, timeout=10)
        assert part.status_code == 206, (header, part.status_code)
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{size}", header
        assert part.content == whole[first : last + 1], header


def pip_install(index_url: str, target: Path, *requirements: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--target", str(target)]
    result = subprocess.run(
        [*command, *requirements], env=installer_env(index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def uv_install(index_url: str, target: Path, *requirements: str) -> None:
    uv = find_uv()
    assert uv is not None
    command = [uv, "pip", "install", "--no-cache", "--python", sys.executable, "--target", str(target)]
    result = subprocess.run(
        [*command, *requirements], env=installer_env(index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# servers -------------------------------------------------------------------------------------------


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"server at {url} did not answer in {timeout}s:\n{_tail(log)}")


def waitress_listening(process: subprocess.Popen[bytes], log: Path, timeout: float = 45) -> str:
    """The ``host:port`` waitress-serve listens on, bound to port 0, as its log says it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"Serving on http://([0-9.]+:[0-9]+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"waitress-serve exited with {process.returncode}:\n{_tail(log)}")
        time.sleep(0.05)
    pytest.fail(f"waitress-serve said no port in {timeout}s:\n{_tail(log)}")


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def gunicorn(env: dict[str, str], logs: Path, *, workers: int = 4) -> Iterator[str]:
    """gunicorn serving the mirror on a socket this test bound to 127.0.0.1:0 (``fd://``)."""
    options = ("--workers", str(workers), "--worker-class", "gthread", "--threads", "4")
    with gunicorn_process(env, logs, *options) as (url, _):
        yield url


@contextlib.contextmanager
def gunicorn_process(
    env: dict[str, str], logs: Path, *options: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """gunicorn with ``options`` serving the mirror on a socket this test bound to 127.0.0.1:0
    (``fd://``): its URL and its process, stopped at the end if it still runs."""
    if find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed (it is in the 'test' extra)")
    logs.mkdir(parents=True, exist_ok=True)
    with socket.socket() as listener, open(logs / "gunicorn.log", "wb") as log:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = [
            sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}",
            "--graceful-timeout", "5", "--access-logfile", str(logs / "access.log"),
            "--access-logformat", ACCESS_FORMAT, *options, "nestegg_core.wsgi:application",
        ]  # fmt: skip
        # gunicorn 25+ makes a control socket in $XDG_RUNTIME_DIR, else in ~/.gunicorn: the test's own
        env = {**env, "XDG_RUNTIME_DIR": str(logs)}
        process = subprocess.Popen(
            command, env=env, cwd=logs, pass_fds=(listener.fileno(),), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(url, process, logs / "gunicorn.log")
        yield url, process
    finally:
        stop(process)


@needs_proc
@pytest.mark.parametrize(
    "options",
    [
        ["--worker-class", "sync"],  # the app is built in the worker's main thread
        # built in a pool thread: gunicorn's hook, in the main thread, is what hears the SIGTERM
        ["--worker-class", "gthread", "--threads", "4", "--config", "python:nestegg_core.wsgi"],
    ],
)
def test_a_gunicorn_worker_stopped_ends_the_build_it_runs(
    tmp_path: Path,
    upstream: PrivateIndex,
    hung_repo: tuple[GitRepo, Path],  # noqa: F811 - the fixture imported above
    options: list[str],
) -> None:
    """gunicorn stops a worker with SIGTERM and waits for its requests up to its graceful timeout,
    then kills it: a request that waits on a build held the worker until then, and the build was
    left running."""
    repo, mark = hung_repo
    answers: list[int | str] = []

    def ask(url: str) -> None:
        try:
            answers.append(requests.get(f"{url}/simple/hung-package/", timeout=60).status_code)
        except requests.RequestException as exc:  # the worker killed before it answered
            answers.append(type(exc).__name__)

    with (
        hung_group(mark) as group,
        gunicorn_process(hung_nest(tmp_path, upstream, repo), tmp_path / "logs", *options) as (url, process),
    ):
        asking = threading.Thread(target=ask, args=(url,))
        asking.start()
        deadline = time.monotonic() + 60
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), _tail(tmp_path / "logs" / "gunicorn.log")
        stopped = time.monotonic()
        process.terminate()
        assert process.wait(30) == 0
        assert time.monotonic() - stopped < 5, "the worker was killed at its graceful timeout"
        asking.join(30)
        assert group_members(group()) == []
    assert answers == [502]


@pytest.mark.parametrize(
    "options",
    [
        ["--worker-class", "sync"],  # the SIGTERM handler set where the app is built
        ["--worker-class", "gthread", "--threads", "4", "--config", "python:nestegg_core.wsgi"],
    ],
)
def test_a_download_in_flight_when_gunicorn_stops_a_worker_is_served_whole(
    tmp_path: Path, options: list[str]
) -> None:
    """gunicorn's SIGTERM is its graceful stop (HUP, rolling restarts): the worker finishes its
    requests, up to its graceful timeout. The app stops its builds at once, and its downloads
    only at the exit (they were cut, the client got a part of the file)."""
    trickle = Trickle()
    with PrivateIndex(tmp_path / "slow", middleware=trickle) as slow:
        [wheel] = slow.add("held", "1.0", sdist=False, payload_size=300_000)
        trickle.paths.add(f"/files/held/{wheel.filename}")
        env = installer_env(
            NESTEGG_CONFIG="", NESTEGG_CACHE_DIR=str(tmp_path / "nest"), NESTEGG_INDEX_URL=slow.index_url
        )
        got: list[bytes | str] = []
        with gunicorn_process(env, tmp_path / "logs", *options) as (url, process):
            page = requests.get(f"{url}/simple/held/", timeout=30)
            assert page.status_code == 200, page.text
            [href] = re.findall(r'href="([^"#]+held-1\.0[^"#]*)', page.text)

            def download() -> None:
                try:
                    with requests.get(urljoin(page.url, href), timeout=60, stream=True) as answer:
                        got.append(b"".join(answer.iter_content(1 << 16)))
                except requests.RequestException as exc:
                    got.append(type(exc).__name__)

            downloading = threading.Thread(target=download)
            downloading.start()
            try:
                assert trickle.holding.wait(30), _tail(tmp_path / "logs" / "gunicorn.log")
                time.sleep(0.5)  # its first bytes on their way to the client
                process.terminate()  # to its workers: SIGTERM
                time.sleep(1.0)  # the workers heard it
            finally:
                trickle.release.set()
                downloading.join(60)
            assert process.wait(30) == 0
    assert len(got) == 1
    assert isinstance(got[0], bytes), got
    assert hashlib.sha256(got[0]).hexdigest() == wheel.hashes["sha256"], len(got[0])


@needs_proc
@pytest.mark.parametrize(("stop_signal", "ended"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_waitress_serve_stopped_by_ctrl_c_ends_the_build_it_runs(
    tmp_path: Path,
    upstream: PrivateIndex,
    hung_repo: tuple[GitRepo, Path],  # noqa: F811 - the fixture imported above
    stop_signal: int,
    ended: bool,
) -> None:
    """waitress-serve stops on Ctrl-C and the interpreter exits: the build is ended. SIGTERM, for
    which it sets no handler, kills it outright: nothing of the worker runs, the build is left
    (as the README says)."""
    repo, mark = hung_repo
    command = [sys.executable, "-m", "waitress", "--listen", "127.0.0.1:0", "nestegg_core.wsgi:application"]
    where = ""

    def ask() -> None:
        with contextlib.suppress(requests.RequestException):  # no answer from a server killed
            requests.get(f"http://{where}/simple/hung-package/", timeout=60)

    with hung_group(mark) as group, open(tmp_path / "waitress.log", "wb") as log:
        process = subprocess.Popen(command, env=hung_nest(tmp_path, upstream, repo), stdout=log, stderr=log)
        try:
            where = waitress_listening(process, tmp_path / "waitress.log")
            wait_ready(f"http://{where}", process, tmp_path / "waitress.log")
            threading.Thread(target=ask, daemon=True).start()
            deadline = time.monotonic() + 60
            while not mark.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mark.exists(), _tail(tmp_path / "waitress.log")
            process.send_signal(stop_signal)
            process.wait(30)
        finally:
            stop(process)
        assert (group_members(group()) == []) is ended


def gunicorn_etags(access_log: Path) -> tuple[dict[tuple[str, str], set[str]], set[str]]:
    """The ETags gunicorn's access log shows for the final round, per page and type; the pids."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    pids = set()
    for line in access_log.read_text().splitlines():
        pid, method, path, query, status, accept, etag = line.split("|")
        if query == "round=final" and method == "GET" and status == "200":
            seen[(path, accept)].add(etag)
            pids.add(pid)
    return seen, pids


def test_gunicorn_workers_share_one_cache(tmp_path: Path, upstream: PrivateIndex, faults: Faults) -> None:
    published = publish(upstream)
    faults.file_delay = 0.3  # every file's download overlaps the other clients' requests for it
    # an HTML-only upstream gives no sizes: the worker that caches a file learns one the others
    # must show too, or their JSON pages (and ETags) would differ
    faults.html_only = True
    files = sum(len(f) for f in published.values())
    with gunicorn(nest_env(tmp_path, upstream), tmp_path / "logs") as url:
        assert hammer(url, sorted(published)) == CLIENTS * files
        check_one_download_each(faults, published)
        etags = page_etags(url, sorted(published))
        assert all(len(tags) == 1 for tags in etags.values()), etags
        requests_made = CLIENTS * files
        metrics = wait_for_metrics(
            url,
            lambda m: (
                m["cache_hits"] + m["cache_misses"] >= requests_made and m["upstream_downloads"] >= files
            ),
        )
        check_ranges(url, "team-lib")
    logged, pids = gunicorn_etags(tmp_path / "logs" / "access.log")
    assert all(len(tags) == 1 for tags in logged.values()), logged
    assert len(pids) > 1, "the final round reached one worker only"
    assert metrics["upstream_downloads"] == files
    assert metrics["cache_hits"] + metrics["cache_misses"] == requests_made
    assert metrics["bytes_served"] > 0


# nginx in front of gunicorn ------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
{user}
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {run}/access.log;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {app};
            proxy_set_header Host $http_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        # where nestegg's X-Accel-Redirect answers lead: the nest, for nginx's eyes only
        location {prefix} {{
            internal;
            alias {nest}/;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(app_url: str, nest: Path, run: Path, *, prefix: str = "/_nestegg/") -> Iterator[str]:
    """nginx on a socket this test bound to 127.0.0.1:0, proxying to ``app_url``.

    nginx takes listening sockets over from its parent through the ``NGINX`` variable (as in its
    binary upgrade), so it never binds a port itself.
    """
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    run.mkdir(parents=True, exist_ok=True)
    with socket.socket() as listener, open(run / "nginx.out", "wb") as log:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        # non-blocking, as the sockets of a binary upgrade are: nginx takes inherited sockets as
        # they are, and its two workers both wake for each connection; on a blocking socket the
        # one that loses the race waited in accept() for the next connection, with the requests
        # it had already taken unread (a page_etags request timed out now and then)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        # workers run as the master's user when that is root: the nest is root's alone
        user = "user root root;" if os.geteuid() == 0 else ""
        config = NGINX_CONF.format(user=user, run=run, port=port, app=app_url, prefix=prefix, nest=nest)
        (run / "nginx.conf").write_text(config)
        env = {**os.environ, "NGINX": f"{listener.fileno()};"}
        command = [binary, "-p", str(run), "-c", str(run / "nginx.conf"), "-e", str(run / "error.log")]
        process = subprocess.Popen(
            command, env=env, pass_fds=(listener.fileno(),), stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, run / "error.log")
        yield url
    finally:
        stop(process)


def test_nginx_sends_the_files_gunicorn_names(tmp_path: Path, upstream: PrivateIndex, faults: Faults) -> None:
    published = publish(upstream)
    faults.file_delay = 0.2
    files = sum(len(f) for f in published.values())
    env = nest_env(tmp_path, upstream, sendfile="x-accel-redirect", sendfile_prefix="/_nestegg/")
    with gunicorn(env, tmp_path / "logs") as app, nginx(app, tmp_path / "nest", tmp_path / "nginx") as url:
        assert hammer(url, sorted(published)) == CLIENTS * files
        check_one_download_each(faults, published)
        etags = page_etags(url, sorted(published), rounds=1)
        assert all(len(tags) == 1 for tags in etags.values()), etags
        # a cached file comes from nginx itself: ranges and validators are nginx's
        page = requests.get(f"{url}/simple/team-lib/", headers={"Accept": JSON_V1}, timeout=10).json()
        entry = next(e for e in page["files"] if e["filename"].endswith(".whl") and "1.1" in e["filename"])
        file_url = urljoin(f"{url}/simple/team-lib/", entry["url"])
        whole = requests.get(file_url, timeout=10)
        assert whole.headers["Content-Length"] == str(entry["size"])
        assert "X-Accel-Redirect" not in whole.headers
        part = requests.get(file_url, headers={"Range": "bytes=10-19"}, timeout=10)
        assert part.status_code == 206
        assert part.content == whole.content[10:20]
        again = requests.get(file_url, headers={"If-None-Match": whole.headers["ETag"]}, timeout=10)
        assert again.status_code == 304
        # the internal location is not reachable from outside
        assert requests.get(f"{url}/_nestegg/", timeout=10).status_code == 404
        pip_install(f"{url}/simple/", tmp_path / "pip-target", "team-app")
        uv_install(f"{url}/simple/", tmp_path / "uv-target", "team-app")
        metrics = wait_for_metrics(url, lambda m: m["bytes_offloaded"] > 0)
    assert {p.name for p in (tmp_path / "pip-target").iterdir()} >= {"team_app", "team_lib", "team_util"}
    assert {p.name for p in (tmp_path / "uv-target").iterdir()} >= {"team_app", "team_lib", "team_extra"}
    check_one_download_each(faults, published)  # the installers too were served from the cache
    assert metrics["bytes_offloaded"] > 0


# Apache mod_wsgi ---------------------------------------------------------------------------------------

XSENDFILE_CONF = """\
LoadModule xsendfile_module '{module}'
XSendFile On
XSendFilePath '{nest}'
"""


def _express() -> list[str]:
    """How to run mod_wsgi-express here, or a skip saying what is missing."""
    express = shutil.which("mod_wsgi-express", path=str(Path(sys.executable).parent))
    express = express or shutil.which("mod_wsgi-express")
    if express is None:
        pytest.skip("mod_wsgi-express is not installed (Debian: apache2-dev apache2-bin, then pip mod_wsgi)")
    if os.geteuid() != 0:
        return [express]
    # Apache will not serve as root, and as another user its daemons could not read what is root's
    # alone (often the interpreter itself): in a user namespace this user is nobody to Apache and
    # still root to the file system
    unshare = [shutil.which("unshare") or "unshare", "--user", "--map-user=65534", "--map-group=65534"]
    with contextlib.suppress(OSError):
        if subprocess.run([*unshare, "true"], capture_output=True, check=False).returncode == 0:
            return [*unshare, express]
    pytest.skip("running as root, and user namespaces (unshare --user) are not available for Apache")


@contextlib.contextmanager
def mod_wsgi_express(settings: Mapping[str, str], root: Path, *extra: str) -> Iterator[str]:
    """Apache with mod_wsgi (4 daemon processes) serving ``nestegg_core.wsgi`` on 127.0.0.1.

    Apache can neither bind port 0 nor take a socket over, so a port below the ephemeral range
    (which no client socket holds) is picked at random, and another one if it is taken.
    """
    command = _express()
    setenv = [word for key, value in settings.items() for word in ("--setenv", key, value)]
    for attempt in range(5):
        port = random.randint(20000, 32000)  # noqa: S311 - a port, no secret
        server_root = root / f"apache-{attempt}"
        server_root.mkdir(parents=True)
        log_path = server_root / "server.log"
        arguments = [
            *command, "start-server", "--application-type", "module", "nestegg_core.wsgi",
            "--host", "127.0.0.1", "--port", str(port), "--server-root", str(server_root),
            "--processes", "4", "--threads", "4", "--locale", "C.UTF-8", "--log-to-terminal",
            *setenv, *extra,
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            # no NESTEGG_* in the environment: the settings arrive by SetEnv
            env = installer_env()
            process = subprocess.Popen(arguments, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if _apache_started(process, log_path):
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, process, log_path)
                yield url
                return
            if "Address already in use" not in _tail(log_path):
                pytest.fail(f"mod_wsgi-express did not start:\n{_tail(log_path)}")
        finally:
            stop(process)
    pytest.fail("no free port for Apache in 5 tries")


def _apache_started(process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "resuming normal operations" in _tail(log, 200):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.1)
    pytest.fail(f"Apache did not start in {timeout}s:\n{_tail(log)}")


def _apache_settings(tmp_path: Path, upstream: PrivateIndex, **settings: Any) -> dict[str, str]:
    env = nest_env(tmp_path, upstream, **settings)
    return {key: env[key] for key in ("NESTEGG_CONFIG", "NESTEGG_CACHE_DIR", "NESTEGG_INDEX_URL")}


def test_mod_wsgi_express_daemons_share_one_cache(
    tmp_path: Path, upstream: PrivateIndex, faults: Faults
) -> None:
    published = publish(upstream)
    faults.file_delay = 0.3
    faults.html_only = True
    files = sum(len(f) for f in published.values())
    with mod_wsgi_express(_apache_settings(tmp_path, upstream), tmp_path / "apache") as url:
        assert hammer(url, sorted(published)) == CLIENTS * files
        check_one_download_each(faults, published)
        etags = page_etags(url, sorted(published))
        assert all(len(tags) == 1 for tags in etags.values()), etags
        pip_install(f"{url}/simple/", tmp_path / "pip-target", "team-app")
        metrics = wait_for_metrics(url, lambda m: m["upstream_downloads"] >= files)
        check_ranges(url, "team-lib")
    assert (tmp_path / "pip-target" / "team_app").is_dir()
    check_one_download_each(faults, published)
    assert metrics["upstream_downloads"] >= files  # and the metadata pip asked for


def test_apache_sends_the_files_mod_wsgi_names(
    tmp_path: Path, upstream: PrivateIndex, faults: Faults
) -> None:
    module = Path("/usr/lib/apache2/modules/mod_xsendfile.so")
    if not module.is_file():
        pytest.skip("mod_xsendfile is not installed (Debian: libapache2-mod-xsendfile)")
    published = publish(upstream)
    include = tmp_path / "xsendfile.conf"
    include.write_text(XSENDFILE_CONF.format(module=module, nest=tmp_path / "nest"))
    settings = _apache_settings(tmp_path, upstream, sendfile="x-sendfile")
    with mod_wsgi_express(settings, tmp_path / "apache", "--include-file", str(include)) as url:
        assert hammer(url, sorted(published), clients=4) == 4 * sum(len(f) for f in published.values())
        page = requests.get(f"{url}/simple/team-lib/", headers={"Accept": JSON_V1}, timeout=10).json()
        entry = next(e for e in page["files"] if e["filename"].endswith(".whl") and "1.1" in e["filename"])
        whole = requests.get(urljoin(f"{url}/simple/team-lib/", entry["url"]), timeout=10)
        assert "X-Sendfile" not in whole.headers
        assert hashlib.sha256(whole.content).hexdigest() == entry["hashes"]["sha256"]
        pip_install(f"{url}/simple/", tmp_path / "pip-target", "team-app")
        metrics = wait_for_metrics(url, lambda m: m["bytes_offloaded"] > 0)
    check_one_download_each(faults, published)
    assert metrics["bytes_offloaded"] > 0
