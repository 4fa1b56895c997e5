"""Races and kills: many clients at once, several server processes on one nest, ``kill -9`` midway.

Whatever happens, every file ever served and every file in the cache matches its sha256, a file
is downloaded from the upstream once however many ask for it, and what a killed process left
half-written is gone when a server starts again. Server processes are started here, with their
own session, and killed by their PID only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from nestegg_core import Mirror
from nestegg_core.testing.dists import PackageSpec, make_sdist
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults
from .loopback import Trickle, sha256, sha256_file, verify_cache

ROOT = Path(__file__).resolve().parents[1]
JSON = "application/vnd.pypi.simple.v1+json"


def get(url: str, method: str = "GET", **kwargs: Any) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the machine's environment
        return session.request(method, url, timeout=60, **kwargs)


def get_quietly(url: str) -> None:
    """A request whose server is about to be killed: its failure is the expected outcome."""
    with contextlib.suppress(requests.RequestException):
        get(url)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class ServerProcess:
    """``python -m nestegg_core serve --port 0`` in its own session; its port from ``--port-file``."""

    def __init__(self, tmp: Path, nest: Path, index_url: str, *extra: str, label: str = "server") -> None:
        self.port_file = tmp / f"{label}.port"
        self.log = tmp / f"{label}.log"
        self.port_file.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "nestegg_core", "--cache-dir", str(nest), "--index-url", index_url,
            *extra, "serve", "--port", "0", "--port-file", str(self.port_file),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True
            )
        wait_for(lambda: self.port_file.exists() or self.process.poll() is not None, f"{label} to listen")
        if self.process.poll() is not None:
            raise AssertionError(f"{label} exited: {self.log.read_text()}")
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}"

    def kill(self) -> None:
        """``kill -9`` of the server alone (a build it started lives on, as after a real crash)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM, then the whole session this server started (its builds), by its process group id."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: pgid == its pid


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(nest: Path, index_url: str, *extra: str, label: str = "server") -> ServerProcess:
        server = ServerProcess(tmp_path, nest, index_url, *extra, label=f"{label}{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def mirror_files(nest: Path) -> Path:
    """The cached-files folder of the (only) upstream under ``nest``."""
    (folder,) = (nest / "mirror").iterdir()
    return folder / "files"


def parts_under(nest: Path) -> list[Path]:
    return list(nest.rglob("*.part"))


# many clients in one process -------------------------------------------------------------------


def test_32_clients_on_4_uncached_files_make_4_downloads(
    mirror: Mirror, upstream: PrivateIndex, faults: Faults
) -> None:
    records = upstream.add("alpha", "1.0", payload_size=300_000) + upstream.add(
        "beta", "2.0", payload_size=200_000
    )
    expected = {r.filename: r.hashes["sha256"] for r in records}
    for name in ("alpha", "beta"):
        get(f"{mirror.index_url}{name}/").raise_for_status()
    faults.gate = threading.Event()
    kinds = ["full", "tail", "head", "range", "full", "metadata", "tail", "full"]

    def client(job: tuple[str, str]) -> tuple[str, str, bytes, int]:
        filename, kind = job
        name = filename.split("-")[0]
        url = f"{mirror.url}/files/{name}/{filename}"
        if kind == "head":
            response = get(url, "HEAD")
        elif kind == "tail":
            response = get(url, headers={"Range": "bytes=-1000"})
        elif kind == "range":
            response = get(url, headers={"Range": "bytes=100-5000"})
        elif kind == "metadata" and filename.endswith(".whl"):
            response = get(url + ".metadata")
        else:
            kind = "full"
            response = get(url)
        return filename, kind, response.content, response.status_code

    jobs = [(filename, kind) for filename in expected for kind in kinds]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = pool.map(client, jobs)
        wait_for(lambda: faults.count(prefix="/files/") >= 1, "the first download")
        time.sleep(0.3)  # let every request arrive while the upstream holds back
        faults.gate.set()
        answers = list(results)
    for filename, kind, body, status in answers:
        assert status in (200, 206), (filename, kind, status)
        if kind == "full":
            assert sha256(body) == expected[filename]
    fulls = {f: get(f"{mirror.url}/files/{f.split('-')[0]}/{f}").content for f in expected}
    for filename, kind, body, _ in answers:
        if kind == "tail":
            assert body == fulls[filename][-1000:]
        elif kind == "range":
            assert body == fulls[filename][100:5001]
    for filename in expected:
        # one download of each; a range asked before the download had its bytes was passed
        # through to the upstream (issue 23), asking it for that range only
        path = f"/files/{filename.split('-')[0]}/{filename}"
        asked = [s.headers.get("range") for s in faults.files() if s.path == path]
        assert asked.count(None) == 1, (filename, asked)
        assert set(asked) <= {
            None,
            "bytes=100-5000",
            f"bytes={len(fulls[filename]) - 1000}-{len(fulls[filename]) - 1}",
        }
    assert verify_cache(mirror.repository.store.files, expected) == 4


def test_16_clients_on_an_uncached_page_make_one_upstream_request(
    mirror: Mirror, upstream: PrivateIndex, faults: Faults
) -> None:
    upstream.add("gamma", "1.0")
    faults.gate = threading.Event()
    with ThreadPoolExecutor(16) as pool:
        results = pool.map(
            lambda i: get(f"{mirror.index_url}gamma/", headers={"Accept": JSON if i % 2 else "text/html"}),
            range(16),
        )
        wait_for(lambda: faults.count("/simple/gamma/") >= 1, "the page request")
        time.sleep(0.3)
        faults.gate.set()
        assert {r.status_code for r in results} == {200}
    assert faults.count("/simple/gamma/") == 1


# several processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_two_server_processes_on_one_nest_download_each_file_once(
    upstream: PrivateIndex, faults: Faults, servers: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    records = []
    for i in range(3):
        records += upstream.add(f"multi{i}", "1.0", payload_size=250_000)
    expected = {r.filename: r.hashes["sha256"] for r in records}
    nest = tmp_path / "nest"
    first, second = servers(nest, upstream.index_url), servers(nest, upstream.index_url)
    for server in (first, second):
        for i in range(3):
            get(f"{server.url}/simple/multi{i}/").raise_for_status()
    faults.gate = threading.Event()
    jobs = [(server, filename) for filename in expected for server in (first, second, first, second)]

    def client(job: tuple[ServerProcess, str]) -> tuple[str, str]:
        server, filename = job
        response = get(f"{server.url}/files/{filename.split('-')[0]}/{filename}")
        response.raise_for_status()
        return filename, sha256(response.content)

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = pool.map(client, jobs)
        wait_for(lambda: faults.count(prefix="/files/") >= 1, "a download")
        time.sleep(0.5)
        faults.gate.set()
        answers = list(results)
    assert all(digest == expected[filename] for filename, digest in answers)
    for filename in expected:
        assert faults.count(f"/files/{filename.split('-')[0]}/{filename}") == 1, filename
    assert verify_cache(mirror_files(nest), expected) == len(expected)


@pytest.mark.slow
def test_kill_9_during_a_download_then_restart(tmp_path: Path, servers: Callable[..., ServerProcess]) -> None:
    trickle = Trickle()
    with PrivateIndex(tmp_path / "upstream", middleware=trickle) as upstream:
        (wheel, sdist) = upstream.add("slow", "1.0", payload_size=400_000)
        (other,) = upstream.add("other", "1.0", sdist=False, payload_size=10_000)
        expected = {r.filename: r.hashes["sha256"] for r in (wheel, sdist, other)}
        trickle.paths = {f"/files/slow/{wheel.filename}", f"/files/slow/{sdist.filename}"}
        nest = tmp_path / "nest"
        first = servers(nest, upstream.index_url)
        # a file cached before the crash
        get(f"{first.url}/files/other/{other.filename}").raise_for_status()
        outcomes: dict[str, object] = {}

        def download(filename: str) -> None:
            try:
                outcomes[filename] = sha256(get(f"{first.url}/files/slow/{filename}").content)
            except requests.RequestException as exc:
                outcomes[filename] = type(exc).__name__

        clients = [threading.Thread(target=download, args=(d.filename,)) for d in (wheel, sdist)]
        for thread in clients:
            thread.start()
        wait_for(lambda: len(parts_under(nest)) == 2, "two partial downloads")
        first.kill()
        for thread in clients:
            thread.join(30)
        # the clients of the killed server got no whole file, let alone a wrong one
        assert all(outcome not in expected.values() for outcome in outcomes.values()), outcomes
        assert len(parts_under(nest)) == 2
        trickle.release.set()

        second = servers(nest, upstream.index_url)
        assert parts_under(nest) == []  # swept at start: nobody holds their locks
        for dist in (wheel, sdist):
            assert sha256(get(f"{second.url}/files/slow/{dist.filename}").content) == expected[dist.filename]
        assert sha256(get(f"{second.url}/files/other/{other.filename}").content) == expected[other.filename]
        assert verify_cache(mirror_files(nest), expected) == 3


@pytest.mark.slow
def test_kill_9_of_the_downloading_process_while_another_waits(
    tmp_path: Path, servers: Callable[..., ServerProcess]
) -> None:
    trickle = Trickle()
    with PrivateIndex(tmp_path / "upstream", middleware=trickle) as upstream:
        (wheel,) = upstream.add("shared", "1.0", sdist=False, payload_size=400_000)
        trickle.paths = {f"/files/shared/{wheel.filename}"}
        nest = tmp_path / "nest"
        downloading, waiting = servers(nest, upstream.index_url), servers(nest, upstream.index_url)
        get(f"{waiting.url}/simple/shared/").raise_for_status()
        first = threading.Thread(
            target=get_quietly, args=(f"{downloading.url}/files/shared/{wheel.filename}",)
        )
        first.start()
        wait_for(lambda: len(parts_under(nest)) == 1, "the first download")
        result: list[requests.Response] = []
        second = threading.Thread(
            target=lambda: result.append(get(f"{waiting.url}/files/shared/{wheel.filename}"))
        )
        second.start()
        time.sleep(0.5)  # the second process now waits for the first one's lock
        downloading.kill()
        trickle.release.set()
        second.join(60)
        first.join(30)
        (response,) = result
        assert response.status_code == 200
        assert sha256(response.content) == wheel.hashes["sha256"]
        assert parts_under(nest) == []
        assert verify_cache(mirror_files(nest), {wheel.filename: wheel.hashes["sha256"]}) == 1


# builds --------------------------------------------------------------------------------------

HOLD = """

# --- added by test_races: hold every build until the test says go --------------------------
import pathlib as _pathlib
import time as _time

_GATE = _pathlib.Path({gate!r})
_inner_sdist, _inner_wheel = build_sdist, build_wheel


def _hold():
    (_GATE / "started").write_text(str(os.getpid()))
    for _ in range(1200):
        if (_GATE / "go").exists():
            return
        _time.sleep(0.05)
    raise RuntimeError("never told to go")


def build_sdist(sdist_directory, config_settings=None):
    _hold()
    return _inner_sdist(sdist_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _hold()
    return _inner_wheel(wheel_directory, config_settings, metadata_directory)
"""


def git(cwd: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.mark.slow
def test_kill_9_during_a_build_then_restart(tmp_path: Path, servers: Callable[..., ServerProcess]) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    repo = tmp_path / "repo"
    sdist = make_sdist(PackageSpec(name="built-pkg", version="1.0"), tmp_path / "dists")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (tmp_path / "unpacked" / "built_pkg-1.0").rename(repo)
    backend = next(repo.glob("_nestegg_backend/*.py"))
    backend.write_text(backend.read_text() + HOLD.format(gate=str(gate)))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1.0")
    config = tmp_path / "nestegg.yml"
    config.write_text(
        textwrap.dedent(
            f"""\
            nestegg:
              source_builds:
                - name: built-pkg
                  repo_type: git
                  repo_url: {repo}
                  versions:
                    - version: "1.0"
                      tag: v1.0
            """
        )
    )
    nest = tmp_path / "nest"
    with PrivateIndex(tmp_path / "upstream") as upstream:
        first = servers(nest, upstream.index_url, "--config", str(config))
        asked = threading.Thread(target=get_quietly, args=(f"{first.url}/simple/built-pkg/",))
        asked.start()
        wait_for((gate / "started").exists, "the build to start", timeout=60)
        first.kill()
        # the orphaned build could only write to its own work dir; end it too, as a crash of the
        # whole machine would, so that what is left on disk stays put while we look
        first.stop()
        asked.join(30)
        store = nest / "private" / "built-pkg"
        assert not any(p.is_file() and not p.name.startswith(".") for p in store.glob("*")), list(
            store.glob("*")
        )
        (gate / "go").touch()

        second = servers(nest, upstream.index_url, "--config", str(config))
        page = get(f"{second.url}/simple/built-pkg/", headers={"Accept": JSON})
        assert page.status_code == 200, page.text
        files = page.json()["files"]
        assert sorted(f["filename"] for f in files) == [
            "built_pkg-1.0-py3-none-any.whl",
            "built_pkg-1.0.tar.gz",
        ]
        for entry in files:
            body = get(f"{second.url}/files/built-pkg/{entry['filename']}").content
            assert sha256(body) == entry["hashes"]["sha256"]
            assert sha256_file(store / entry["filename"]) == entry["hashes"]["sha256"]
        # nothing half-built was published, and the killed build's work dir is gone
        assert not [p for p in store.iterdir() if p.name.startswith(".")]
        assert not list((nest / "tmp" / "builds").iterdir())
