"""Upstream faults over real loopback servers: what is warm stays served, nothing bad is cached.

The 500/503 stale-if-error case and a corrupt or truncated file from a healthy page are covered by
``test_mirror``; here the upstream refuses connections, never answers, stalls halfway, lies about
lengths and hashes, or answers garbage, and the uncached side must fail with a clear 502/504.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nestegg_core import Mirror
from nestegg_core.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.errors import NotFound, UpstreamError, UpstreamTimeout
from nestegg_core.pytest_plugin import PrivateIndex
from nestegg_core.upstream import Fetched, HttpFetcher

from .conftest import Faults, MirrorFactory
from .loopback import (
    Answer,
    RawUpstream,
    Trickle,
    busy_workers,
    health_ms,
    refused_url,
    sha256,
    verify_cache,
    wait_until,
)

JSON = "application/vnd.pypi.simple.v1+json"
TIMEOUT = 0.5  # the mirror's upstream timeout in these tests
#: what a client sees of a response broken off before its end
BROKEN = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)


def assert_clear_error(response: requests.Response, *statuses: int) -> str:
    """A short one-line text error with one of ``statuses``: never a 500 or a traceback."""
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    assert text.endswith("\n")
    assert text.count("\n") == 1, text
    assert len(text) < 1000
    assert "Traceback" not in text
    assert "internal error" not in text
    return text


def failed(http: requests.Session, url: str, **kwargs: Any) -> str | int:
    """How a request that must not succeed failed: ``"broken"`` (cut off midway) or its status.

    Once bytes flow a failing download can only break the response off (the last byte waits for
    the hash check); before that the mirror still answers a clear error.
    """
    try:
        response = http.get(url, timeout=30, **kwargs)
    except BROKEN:
        return "broken"
    assert_clear_error(response, 502, 504)
    return response.status_code


class ScriptedIndex:
    """A fake upstream of real wheels and sdists whose every answer a test can spoil.

    Pages are PEP 691 JSON listing each file at ``/files/<filename>`` on this same server, with
    the right sha256 and size unless :attr:`lie_hash` / :attr:`lie_size` say otherwise.
    ``page_fault`` and ``file_fault`` (by filename, or ``"*"``) pick a spoiled answer.
    """

    FAULTS = ("hang", "stall", "close", "500", "503", "garbage-json", "garbage-type", "html-noise")

    def __init__(self, tmp: Path) -> None:
        self.files: dict[str, bytes] = {}
        self.projects: dict[str, list[str]] = {}
        self.page_fault: str | None = None
        self.file_fault: dict[str, str] = {}
        self.lie_hash: set[str] = set()
        self.lie_size: set[str] = set()
        self.tmp = tmp
        self.server = RawUpstream(self.answer)

    def add(self, name: str, version: str, payload_size: int = 50_000) -> list[str]:
        spec = PackageSpec(name=name, version=version, payload_size=payload_size)
        made = [make_wheel(spec, self.tmp), make_sdist(spec, self.tmp)]
        for path in made:
            self.files[path.name] = path.read_bytes()
            self.projects.setdefault(name, []).append(path.name)
        return [p.name for p in made]

    def page(self, name: str) -> bytes:
        entries = []
        for filename in self.projects[name]:
            data = self.files[filename]
            digest = "0" * 64 if filename in self.lie_hash else sha256(data)
            size = len(data) + (1 if filename in self.lie_size else 0)
            url = self.server.url(f"/files/{filename}")
            entries.append({"filename": filename, "url": url, "hashes": {"sha256": digest}, "size": size})
        return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": entries}).encode()

    def answer(self, method: str, path: str) -> Answer:  # noqa: ARG002 - GET and HEAD alike
        if path.startswith("/simple/"):
            name = path.split("/")[2]
            if name not in self.projects:
                return Answer(status=404, body=b"no such project\n")
            body = self.page(name)
            return self.spoil(self.page_fault, body, JSON)
        filename = path.rsplit("/", 1)[-1]
        if filename not in self.files:
            return Answer(status=404, body=b"no such file\n")
        fault = self.file_fault.get(filename, self.file_fault.get("*"))
        return self.spoil(fault, self.files[filename], "application/octet-stream")

    @staticmethod
    def spoil(fault: str | None, body: bytes, content_type: str) -> Answer:
        headers = {"Content-Type": content_type}
        if fault is None:
            return Answer(body=body, headers=headers)
        if fault == "hang":
            return Answer(hang=True)
        if fault == "stall":
            return Answer(body=body, headers=headers, stall_after=len(body) // 2)
        if fault == "close":  # an answer that stops short of its Content-Length
            return Answer(body=body[: len(body) // 3], headers=headers, length=len(body))
        if fault == "short":  # an honest length, but fewer bytes than the page promised
            return Answer(body=body[:-10], headers=headers)
        if fault in ("500", "503"):
            return Answer(status=int(fault), body=b"upstream is having a bad day\n")
        if fault == "garbage-json":
            return Answer(body=b'{"files": [{"filename": 3}', headers={"Content-Type": JSON})
        if fault == "garbage-type":
            return Answer(
                body=b"\x89PNG\r\n\x1a\n" + bytes(range(256)), headers={"Content-Type": "image/png"}
            )
        if fault == "html-noise":  # a captive portal or an error page that says 200
            return Answer(body=b"<html><body><h1>Please log in</h1></body></html>", headers={})
        raise AssertionError(fault)


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[ScriptedIndex]:
    index = ScriptedIndex(tmp_path / "generated")
    with index.server:
        yield index


@pytest.fixture
def scripted_mirror(scripted: ScriptedIndex, make_mirror: MirrorFactory) -> Mirror:
    return make_mirror(index_url=scripted.server.index_url, ttl=0, timeout=TIMEOUT)


def cache(mirror: Mirror) -> Path:
    """The mirror's folder of cached files (one per upstream)."""
    return mirror.repository.store.files


# connection-level faults ---------------------------------------------------------------------


def test_refused_upstream_serves_the_warm_cache_and_says_so_for_the_rest(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session
) -> None:
    records = upstream.add("pkg", "1.0") + upstream.add("pkg", "2.0")
    hashes = {r.filename: r.hashes["sha256"] for r in records}
    wheel = records[0].filename
    warm = make_mirror()
    http.get(warm.index_url + "pkg/").raise_for_status()
    http.get(f"{warm.url}/files/pkg/{wheel}").raise_for_status()
    page = http.get(warm.index_url + "pkg/", headers={"Accept": JSON}).json()
    warm.stop()
    # the same cache, revalidating every time; then the upstream goes, and its port refuses
    cold = make_mirror(ttl=0, timeout=TIMEOUT)
    nowhere = make_mirror(index_url=refused_url(), timeout=TIMEOUT)  # nothing ever listened there
    upstream.stop()
    assert http.get(cold.index_url + "pkg/", headers={"Accept": JSON}).json() == page
    body = http.get(f"{cold.url}/files/pkg/{wheel}").content
    assert sha256(body) == hashes[wheel]
    message = assert_clear_error(http.get(cold.index_url + "other/"), 502)
    assert "cannot reach upstream" in message
    assert verify_cache(cache(cold), hashes) == 1
    assert "cannot reach upstream" in assert_clear_error(http.get(nowhere.index_url + "pkg/"), 502)


@pytest.mark.parametrize("fault", ScriptedIndex.FAULTS)
def test_page_faults_keep_warm_pages_and_fail_cold_ones_clearly(
    scripted: ScriptedIndex, scripted_mirror: Mirror, http: requests.Session, fault: str
) -> None:
    warm_files = scripted.add("warm", "1.0")
    scripted.add("cold", "1.0")
    http.get(scripted_mirror.index_url + "warm/").raise_for_status()
    body = http.get(f"{scripted_mirror.url}/files/warm/{warm_files[0]}").content
    assert sha256(body) == sha256(scripted.files[warm_files[0]])
    page = http.get(scripted_mirror.index_url + "warm/", headers={"Accept": JSON}).json()

    scripted.page_fault = fault
    again = http.get(scripted_mirror.index_url + "warm/", headers={"Accept": JSON})
    assert again.status_code == 200
    listed = {f["filename"] for f in again.json()["files"]}
    if fault == "html-noise":
        # a 200 page without links is what the upstream says now: only the cached file stays
        assert listed == {warm_files[0]}
    else:
        assert again.json() == page
    body = http.get(f"{scripted_mirror.url}/files/warm/{warm_files[0]}").content
    assert sha256(body) == sha256(scripted.files[warm_files[0]])

    cold = http.get(scripted_mirror.index_url + "cold/")
    if fault == "html-noise":
        assert cold.status_code == 200  # nothing says it is not the upstream's page
    else:
        timeout = fault in ("hang", "stall")
        message = assert_clear_error(cold, 504 if timeout else 502)
        assert "cold" in message
        if timeout:
            assert f"{TIMEOUT:g}s" in message
    assert verify_cache(cache(scripted_mirror)) == 1


@pytest.mark.parametrize("fault", ["hang", "500", "503"])
def test_file_faults_before_any_byte_are_clear_errors(
    scripted: ScriptedIndex, scripted_mirror: Mirror, http: requests.Session, fault: str
) -> None:
    wheel, sdist = scripted.add("pkg", "1.0")
    http.get(scripted_mirror.index_url + "pkg/").raise_for_status()
    scripted.file_fault["*"] = fault
    message = assert_clear_error(
        http.get(f"{scripted_mirror.url}/files/pkg/{wheel}"), 504 if fault == "hang" else 502
    )
    assert wheel in message or "127.0.0.1" in message
    # HEAD of an uncached file starts the download too: the same clear answer, without a body
    head = http.head(f"{scripted_mirror.url}/files/pkg/{sdist}")
    assert head.status_code == (504 if fault == "hang" else 502)
    assert verify_cache(cache(scripted_mirror)) == 0
    scripted.file_fault.clear()
    for filename in (wheel, sdist):
        body = http.get(f"{scripted_mirror.url}/files/pkg/{filename}").content
        assert sha256(body) == sha256(scripted.files[filename])
    assert verify_cache(cache(scripted_mirror)) == 2


@pytest.mark.parametrize("fault", ["stall", "close", "short", "lie-hash", "lie-size"])
def test_file_faults_midway_break_the_response_and_cache_nothing(
    scripted: ScriptedIndex, scripted_mirror: Mirror, http: requests.Session, fault: str
) -> None:
    (wheel, _) = scripted.add("pkg", "1.0", payload_size=300_000)
    if fault == "lie-hash":
        scripted.lie_hash.add(wheel)
    elif fault == "lie-size":
        scripted.lie_size.add(wheel)
    else:
        scripted.file_fault[wheel] = fault
    http.get(scripted_mirror.index_url + "pkg/").raise_for_status()
    url = f"{scripted_mirror.url}/files/pkg/{wheel}"
    # a whole file or a range over its end: never a complete response
    assert failed(http, url) in ("broken", 502, 504)
    assert failed(http, url, headers={"Range": "bytes=-1000"}) in ("broken", 502, 504)
    # a range short of the end would be whole before the check: it waits for it, and fails
    assert failed(http, url, headers={"Range": "bytes=0-999"}) in (502, 504)
    assert verify_cache(cache(scripted_mirror)) == 0
    assert not list((cache(scripted_mirror) / "pkg").glob(".*"))
    scripted.file_fault.clear()
    scripted.lie_hash.clear()
    scripted.lie_size.clear()
    body = http.get(url).content
    assert sha256(body) == sha256(scripted.files[wheel])
    assert verify_cache(cache(scripted_mirror)) == 1


def test_metadata_that_never_comes_is_a_timeout(
    upstream: PrivateIndex, faults: Faults, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    (wheel,) = (r.filename for r in upstream.add("pkg", "1.0", sdist=False))
    mirror = make_mirror(timeout=TIMEOUT)
    http.get(mirror.index_url + "pkg/").raise_for_status()
    faults.gate = threading.Event()  # the upstream holds every answer back
    try:
        assert_clear_error(http.get(f"{mirror.url}/files/pkg/{wheel}.metadata"), 504)
    finally:
        faults.gate.set()
    assert http.get(f"{mirror.url}/files/pkg/{wheel}.metadata").content.startswith(b"Metadata-Version")


# what the upstream says changes ------------------------------------------------------------


def test_upstream_swapping_a_cached_files_bytes_changes_nothing_served(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session, tmp_path: Path
) -> None:
    (wheel,) = (r.filename for r in upstream.add("pkg", "1.0", sdist=False))
    mirror = make_mirror(ttl=0)
    http.get(mirror.index_url + "pkg/").raise_for_status()
    original = http.get(f"{mirror.url}/files/pkg/{wheel}").content
    # the upstream now offers other bytes under the same filename (a re-upload, or an attack)
    other = make_wheel(PackageSpec(name="pkg", version="1.0", summary="changed"), tmp_path / "other")
    assert other.name == wheel
    upstream.mirror.repository.private.add(other, replace=True)
    listed = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
    (entry,) = listed
    served = http.get(f"{mirror.url}/files/pkg/{wheel}").content
    # what is listed is what is served: the bytes verified when they were cached
    assert served == original
    assert entry["hashes"]["sha256"] == sha256(served)
    assert entry["size"] == len(served)
    assert verify_cache(cache(mirror), {wheel: sha256(original)}) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_for_an_uncached_project_is_a_one_line_502(
    mirror: Mirror, faults: Faults, http: requests.Session, status: int
) -> None:
    faults.status = status
    for accept in (JSON, "text/html"):
        message = assert_clear_error(http.get(mirror.index_url + "pkg/", headers={"Accept": accept}), 502)
        assert f"HTTP {status}" in message


# the fetcher on its own --------------------------------------------------------------------


def test_the_fetcher_parses_a_page_as_it_arrives_and_a_broken_one_fails_as_a_whole_read_did() -> None:
    entries = [
        {
            "filename": f"pkg-{i}.0.tar.gz",
            "url": f"../../files/pkg-{i}.0.tar.gz",
            "hashes": {"sha256": sha256(b"%d" % i)},
        }
        for i in range(3000)
    ]
    body = json.dumps({"meta": {"api-version": "1.1"}, "name": "pkg", "files": entries}).encode()
    headers = {"Content-Type": JSON}
    answers = {
        # a redirect: relative file URLs resolve against the page where the answer came from
        "/simple/pkg/": Answer(status=301, headers={"Location": "/simple/v2/pkg/"}),
        "/simple/v2/pkg/": Answer(
            body=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip", "ETag": '"e1"'}
        ),
        "/simple/cut/": Answer(body=body[: len(body) // 2], headers=headers, length=len(body)),
        "/simple/stall/": Answer(body=body, headers=headers, stall_after=len(body) // 2),
        "/simple/same/": Answer(status=304),
    }
    with RawUpstream(lambda _method, path: answers[path]) as server:
        fetcher = HttpFetcher(f"http://user:secret@127.0.0.1:{server.port}/simple/", timeout=TIMEOUT)
        fetched = fetcher.project("pkg", etag=None, last_modified=None)
        assert fetched.etag == '"e1"'
        assert fetched.page is not None
        assert len(fetched.page.files) == 3000
        assert fetched.page.files[7].url == f"http://127.0.0.1:{server.port}/simple/files/pkg-7.0.tar.gz"
        assert fetched.page.files[7].sha256 == sha256(b"7")

        with pytest.raises(UpstreamError) as cut:
            fetcher.project("cut", etag=None, last_modified=None)
        assert type(cut.value) is UpstreamError
        masked = f"http://user:***@127.0.0.1:{server.port}/simple"
        assert str(cut.value) == f"cannot reach upstream {masked}/cut/ (ChunkedEncodingError)"
        with pytest.raises(UpstreamTimeout, match=f"/simple/stall/ stalled for {TIMEOUT:g}s") as stall:
            fetcher.project("stall", etag=None, last_modified=None)
        assert "secret" not in str(stall.value)
        assert fetcher.project("same", etag='"e0"', last_modified=None) == Fetched(page=None, etag='"e0"')


def test_an_error_page_is_read_to_keep_its_connection_but_not_past_a_megabyte() -> None:
    # 2 MiB of a 404 page, then silence: read on, the fetcher would wait for the timeout
    page = Answer(status=404, body=b"x" * (8 << 20), stall_after=2 << 20)
    with RawUpstream(lambda _method, _path: page) as server:
        fetcher = HttpFetcher(server.index_url, timeout=TIMEOUT)
        with pytest.raises(NotFound, match="not on the upstream index"):
            fetcher.project("pkg", etag=None, last_modified=None)


def test_clients_waiting_on_a_slow_upstream_file_do_not_starve_the_others(
    make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """20 clients (more than the 16 workers) wait for a file the upstream holds back."""
    trickle = Trickle()
    with PrivateIndex(tmp_path / "slow", middleware=trickle) as slow:
        [wheel] = slow.add("held", "1.0", sdist=False, payload_size=200_000)
        path = f"/files/held/{wheel.filename}"
        trickle.paths.add(path)
        mirror = make_mirror(index_url=slow.index_url)
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        clients: list[socket.socket] = []
        try:
            for _ in range(20):
                clients.append(socket.create_connection(("127.0.0.1", mirror.port), timeout=30))
                clients[-1].sendall(request)
            assert trickle.holding.wait(10)
            wait_until(lambda: busy_workers(mirror._server) >= 20, "20 readers waiting")
            assert health_ms(mirror.port) < 1000  # starved, it would not be answered at all
            assert requests.get(mirror.index_url + "held/", timeout=10).status_code == 200
            trickle.release.set()
            for client in clients:  # and each of them gets the whole file
                data = b""
                while chunk := client.recv(1 << 20):
                    data += chunk
                assert sha256(data.partition(b"\r\n\r\n")[2]) == wheel.hashes["sha256"]
        finally:
            trickle.release.set()
            for client in clients:
                client.close()
