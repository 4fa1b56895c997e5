"""Upstream faults over real loopback servers: what is warm stays served, nothing bad is cached.

The 500/503 stale-if-error case and a corrupt or truncated file from a healthy page are covered by
``test_mirror``; here the upstream refuses connections, never answers, stalls halfway, lies about
lengths and hashes, or answers garbage, and the uncached side must fail with a clear 502/504.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import io
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror
from nestegg_core.config.config import Config
from nestegg_core.errors import NotFound, UpstreamError, UpstreamTimeout
from nestegg_core.index import downloads as downloads_module
from nestegg_core.index import repository, upstream
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import Fetched, FileStream, HttpFetcher, content_length
from nestegg_core.serve.compose import create_app
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage.fs import atomic_file
from nestegg_core.storage.pagestate import PageState
from nestegg_core.storage.store import CacheStore
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, FullDisk, MirrorFactory
from .loopback import (
    Answer,
    RawUpstream,
    Trickle,
    busy_workers,
    health_ms,
    refused_url,
    sha256,
    unconnectable_url,
    verify_cache,
    wait_until,
)

JSON = "application/vnd.pypi.simple.v1+json"
TIMEOUT = 0.5  # the mirror's upstream timeout in these tests
#: what a client sees of a response broken off before its end
BROKEN = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)


def cached_only(page: dict[str, Any], cached: set[str]) -> dict[str, Any]:
    """The JSON ``page`` as served while its upstream is down: the ``cached`` files alone, and
    their versions."""
    files = [f for f in page["files"] if f["filename"] in cached]
    versions = dict.fromkeys(f["filename"].split("-")[1].removesuffix(".tar.gz") for f in files)
    return {**page, "files": files, "versions": list(versions)}


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
    warm_url = warm.url
    warm.stop()
    # the same cache, revalidating every time; then the upstream goes, and its port refuses
    cold = make_mirror(ttl=0, timeout=TIMEOUT)
    nowhere = make_mirror(index_url=refused_url(), timeout=TIMEOUT)  # nothing ever listened there
    upstream.stop()
    again = http.get(cold.index_url + "pkg/", headers={"Accept": JSON}).text
    # its file URLs on the new port; the cached file alone, and its version
    assert json.loads(again.replace(cold.url, warm_url)) == cached_only(page, {wheel})
    body = http.get(f"{cold.url}/files/pkg/{wheel}").content
    assert sha256(body) == hashes[wheel]
    # the upstream refused the page above: its circuit answers at once, and says why
    message = assert_clear_error(http.get(cold.index_url + "other/"), 410)  # pip goes on at once
    assert "(connection refused)" in message
    assert verify_cache(cache(cold), hashes) == 1
    assert "(connection refused)" in assert_clear_error(http.get(nowhere.index_url + "pkg/"), 410)


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
    else:  # served in the upstream's place: the cached file alone
        assert again.json() == cached_only(page, {warm_files[0]})
    body = http.get(f"{scripted_mirror.url}/files/warm/{warm_files[0]}").content
    assert sha256(body) == sha256(scripted.files[warm_files[0]])

    cold = http.get(scripted_mirror.index_url + "cold/")
    if fault == "html-noise":
        assert cold.status_code == 200  # nothing says it is not the upstream's page
    else:
        timeout = fault in ("hang", "stall")
        # unreachable (timed out): a 410 that says why, which pip does not retry; a bad answer: 502
        message = assert_clear_error(cold, 410 if timeout else 502)
        assert "cold" in message
        if timeout:  # the warm page's revalidation above waited; its circuit answers this one at once
            assert "is unreachable (timed out)" in message
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
    # HEAD of an uncached file is answered from its page: it starts no download (issue 20)
    head = http.head(f"{scripted_mirror.url}/files/pkg/{sdist}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(scripted.files[sdist]))
    assert scripted.server.count(f"/files/{sdist}") == 0
    assert verify_cache(cache(scripted_mirror)) == 0
    scripted.file_fault.clear()
    scripted_mirror.repository.circuits.reset()  # the upstream is back, as the circuit's probe finds
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
    mirror.repository.circuits.reset()  # the upstream is back, as the circuit's probe finds
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


@pytest.mark.parametrize("then", ["metadata", "wheel"])
def test_metadata_kept_from_before_a_republish_is_never_served_for_the_new_page(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    http: requests.Session,
    tmp_path: Path,
    then: str,
) -> None:
    (wheel,) = (r.filename for r in upstream.add("pkg", "1.0", sdist=False))
    mirror = make_mirror()
    http.get(mirror.index_url + "pkg/").raise_for_status()
    url = f"{mirror.url}/files/pkg/{wheel}.metadata"
    old = http.get(url).content  # its metadata only, as pip's resolver asks first
    # the upstream now offers other bytes under the same filename, and their metadata
    other = make_wheel(PackageSpec(name="pkg", version="1.0", summary="changed"), tmp_path / "other")
    assert other.name == wheel
    upstream.mirror.repository.private.add(other, replace=True)
    new = wheel_metadata(other)
    assert new is not None
    assert new != old
    mirror.repository.mirror.refresh_all()  # the TTL passed
    (entry,) = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
    assert entry["core-metadata"] == {"sha256": sha256(new)}
    fetched = faults.count(prefix="/files/pkg/", method="GET")
    if then == "wheel":  # the wheel's download replaces the metadata with its own, which matches
        assert http.get(f"{mirror.url}/files/pkg/{wheel}").content == other.read_bytes()
        fetched += 1
    assert http.get(url).content == new
    assert faults.count(prefix="/files/pkg/", method="GET") == fetched + (then == "metadata")
    # and so in a process that never made the page, which the note of its check spares
    later = Repository(mirror.config)
    later.mirror.page = lambda name: pytest.fail(f"page of {name} made")  # type: ignore[method-assign]
    path, _ = later.open_any(NormalizedName("pkg"), f"{wheel}.metadata")
    assert isinstance(path, Path)
    assert path.read_bytes() == new


def test_metadata_served_without_the_page_is_checked_again_once_the_state_changes(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, http: requests.Session, tmp_path: Path
) -> None:
    (wheel,) = (r.filename for r in upstream.add("pkg", "1.0", sdist=False))
    config = make_mirror().config
    http.get(f"{make_mirror().index_url}pkg/").raise_for_status()
    first = Repository(config)
    path, _ = first.open_any(NormalizedName("pkg"), f"{wheel}.metadata")
    assert isinstance(path, Path)
    # another process revalidates the page: the upstream republished the file meanwhile
    other = make_wheel(PackageSpec(name="pkg", version="1.0", summary="changed"), tmp_path / "other")
    upstream.mirror.repository.private.add(other, replace=True)
    Repository(config.with_changes(ttl=0)).project(NormalizedName("pkg"))
    again, _ = Repository(config).open_any(NormalizedName("pkg"), f"{wheel}.metadata")
    assert isinstance(again, Path)
    assert again.read_bytes() == wheel_metadata(other)


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


def _pkg_page(files: int) -> bytes:
    entries = [
        {
            "filename": f"pkg-{i}.0.tar.gz",
            "url": f"../../files/pkg-{i}.0.tar.gz",
            "hashes": {"sha256": sha256(b"%d" % i)},
        }
        for i in range(files)
    ]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "pkg", "files": entries}).encode()


@pytest.mark.parametrize(
    ("files", "again", "parsed"),
    [
        (3, {}, False),  # the body the digest was taken of: not parsed
        (3, {"gzip": True}, False),  # encoded otherwise: the digest is of the body decoded
        (3, {"files": 4}, True),  # a new release
        (3, {"etag": '"e2"'}, True),  # the same body with a validator the state does not hold
        (3, {"content_type": "application/vnd.pypi.simple.v1+json; charset=utf-8"}, True),
        (3, {"digest": "0" * 64}, True),  # asked by another digest
        (8000, {}, False),  # over a megabyte: held in a temporary file, not in memory
        (8000, {"files": 8001}, True),
    ],
    ids=["same", "same-gzip", "changed", "new-etag", "new-type", "other-digest", "large", "large-changed"],
)
def test_the_fetcher_asked_by_digest_does_not_parse_the_page_it_was_taken_of(
    files: int, again: dict[str, Any], parsed: bool
) -> None:
    """Past the TTL, a page held is asked by the digest of what it was read from: the same body,
    with the same validators, is answered ``page=None`` without being parsed; any other is parsed."""
    answers = {"/simple/pkg/": Answer(body=_pkg_page(files), headers={"Content-Type": JSON})}
    assert (len(answers["/simple/pkg/"].body) > upstream._SPOOL_IN_MEMORY) is (files > 3)
    with RawUpstream(lambda _method, path: answers[path]) as server:
        fetcher = HttpFetcher(server.index_url, timeout=TIMEOUT)
        first = fetcher.project("pkg", etag=None, last_modified=None)
        assert first.page is not None
        assert first.digest is not None
        body = _pkg_page(again.get("files", files))
        headers = {"Content-Type": again.get("content_type", JSON)}
        if "etag" in again:
            headers["ETag"] = again["etag"]
        if again.get("gzip"):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        answers["/simple/pkg/"] = Answer(body=body, headers=headers)
        asked = again.get("digest", first.digest)
        fetched = fetcher.project("pkg", etag=None, last_modified=None, digest=asked)
    if not parsed:
        assert fetched == Fetched(page=None, digest=first.digest)
        return
    assert fetched.page is not None
    assert len(fetched.page.files) == again.get("files", files)
    assert fetched.etag == again.get("etag")
    assert (fetched.digest == first.digest) is ("files" not in again and "content_type" not in again)


@pytest.mark.parametrize("how", ["cut", "stall", "too-large"])
def test_a_page_asked_by_digest_that_breaks_off_fails_as_a_page_parsed_as_it_arrives(how: str) -> None:
    """Read whole before its digest is known, a broken page fails as it did when parsed as it
    came: never taken for the page held."""
    body = _pkg_page(3000)
    answers = {
        "cut": Answer(body=body[: len(body) // 2], headers={"Content-Type": JSON}, length=len(body)),
        "stall": Answer(body=body, headers={"Content-Type": JSON}, stall_after=len(body) // 2),
        "too-large": Answer(body=body, headers={"Content-Type": JSON}),
    }
    with RawUpstream(lambda _method, _path: answers[how]) as server:
        limit = len(body) // 2 if how == "too-large" else len(body) * 2
        fetcher = HttpFetcher(server.index_url, timeout=TIMEOUT, max_page_size=limit)
        digest = upstream.page_digest(JSON, server.index_url + "pkg/")
        digest.update(body)
        expected = {
            "cut": "cannot reach",
            "stall": "stalled for",
            "too-large": "is larger than max_page_size",
        }
        with pytest.raises(UpstreamError, match=expected[how]):
            fetcher.project("pkg", etag=None, last_modified=None, digest=digest.hexdigest())


def test_a_page_asked_by_digest_that_cannot_be_held_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary directory that cannot be written is said as such, not as an upstream out of reach."""
    body = _pkg_page(3)
    with RawUpstream(lambda _method, _path: Answer(body=body, headers={"Content-Type": JSON})) as server:
        fetcher = HttpFetcher(server.index_url, timeout=TIMEOUT)
        first = fetcher.project("pkg", etag=None, last_modified=None)
        monkeypatch.setattr(upstream, "_SPOOL_IN_MEMORY", 10)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
        with pytest.raises(UpstreamError) as held:
            fetcher.project("pkg", etag=None, last_modified=None, digest=first.digest)
    assert str(held.value) == (
        f"cannot hold upstream page {server.index_url}pkg/ in a temporary file in {tmp_path / 'gone'} "
        "(No such file or directory); free space there or set TMPDIR"
    )


def test_an_error_page_is_read_to_keep_its_connection_but_not_past_a_megabyte() -> None:
    # 2 MiB of a 404 page, then silence: read on, the fetcher would wait for the timeout
    page = Answer(status=404, body=b"x" * (8 << 20), stall_after=2 << 20)
    with RawUpstream(lambda _method, _path: page) as server:
        fetcher = HttpFetcher(server.index_url, timeout=TIMEOUT)
        with pytest.raises(NotFound, match="not on the upstream index"):
            fetcher.project("pkg", etag=None, last_modified=None)


# a full disk ----------------------------------------------------------------------------------


@pytest.mark.parametrize("midway", [False, True], ids=["at-once", "midway"])
def test_a_full_disk_while_caching_breaks_the_download_off_and_caches_nothing(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    midway: bool,
) -> None:
    records = upstream.add("pkg", "1.0", payload_size=600_000)  # more than one piece of the upstream's
    served = upstream.mirror.repository.private.root / "pkg"
    mirror = make_mirror()
    create_part = CacheStore.create_part
    client_has_bytes = threading.Event()

    def on_a_full_disk(self: CacheStore, name: NormalizedName, filename: str) -> tuple[Path, Any]:
        path, handle = create_part(self, name, filename)
        if midway:  # full after the first piece, once the client has its first bytes
            return path, FullDisk(handle, 1, hold=client_has_bytes)
        return path, FullDisk(handle, 0)

    monkeypatch.setattr(CacheStore, "create_part", on_a_full_disk)
    http.get(mirror.index_url + "pkg/").raise_for_status()
    for record in records:  # two downloads while the disk stays full
        url = f"{mirror.url}/files/pkg/{record.filename}"
        with http.get(url, timeout=30, stream=True) as answer:
            if not midway:  # failed at its first write: answered before its first byte
                assert "disk is full" in assert_clear_error(answer, 507)
                continue
            assert answer.status_code == 200
            # a byte at a time: the first piece the upstream gave may be small (what came with its head)
            pieces = answer.iter_content(1)
            assert next(pieces)
            client_has_bytes.set()
            with pytest.raises(BROKEN):  # broken off: never taken for a whole file
                for _ in pieces:
                    pass
        client_has_bytes.clear()
    # nothing cached, no part file left, and nestegg's log said so once, in a line (each response
    # broken off is a line at INFO)
    assert verify_cache(cache(mirror)) == 0
    assert [p.name for p in (cache(mirror) / "pkg").iterdir()] == []
    said = [
        r for r in caplog.records
        if r.name.startswith("nestegg_core") and "disk is full" in r.getMessage()
        and r.levelno >= logging.WARNING
    ]  # fmt: skip
    assert [r.name for r in said] == ["nestegg_core.index.downloads"], [r.getMessage() for r in said]
    assert "\n" not in said[0].getMessage()
    assert not said[0].exc_info
    # room again: both are fetched and cached whole
    monkeypatch.undo()
    for record in records:
        body = http.get(f"{mirror.url}/files/pkg/{record.filename}", timeout=30).content
        assert body == (served / record.filename).read_bytes()
    assert verify_cache(cache(mirror)) == 2


@pytest.mark.parametrize(
    ("agent", "whole"),
    [
        ('pip/26.3 {"python":"3.11.7"}', True),  # has every checked byte before the cache is written
        ("uv/0.13.9 (x86_64-unknown-linux-gnu)", True),
        ("python-requests/2.32.3", False),  # answered once the file is in place: broken off
    ],
    ids=["pip", "uv", "script"],
)
def test_a_full_disk_once_a_file_is_checked_caches_nothing_and_fails_only_who_waits_for_the_cache(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    agent: str,
    whole: bool,
) -> None:
    (wheel,) = upstream.add("pkg", "1.0", sdist=False, payload_size=300_000)
    served = (upstream.mirror.repository.private.root / "pkg" / wheel.filename).read_bytes()
    mirror = make_mirror()

    def full(*_args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(CacheStore, "write_record", full)  # after the check, before the rename
    http.get(mirror.index_url + "pkg/").raise_for_status()
    url = f"{mirror.url}/files/pkg/{wheel.filename}"
    with http.get(url, headers={"User-Agent": agent}, timeout=30, stream=True) as answer:
        assert answer.status_code == 200
        if whole:
            assert answer.content == served
        else:
            with pytest.raises(BROKEN):
                answer.content  # noqa: B018 - read to its end
    # nothing cached, no part file left; with room again it is fetched and cached whole
    folder = cache(mirror) / "pkg"
    wait_until(lambda: not any(folder.iterdir()), "the part file removed")
    assert verify_cache(cache(mirror)) == 0
    monkeypatch.undo()
    assert http.get(url, headers={"User-Agent": agent}, timeout=30).content == served
    placed = mirror.repository.store.file_path(NormalizedName("pkg"), wheel.filename)
    wait_until(placed.is_file, "the file in place")  # an installer may have it before
    assert verify_cache(cache(mirror)) == 1


def test_a_request_while_a_download_fails_starts_it_afresh(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between removing its partial file and telling its error, a failing download takes no new
    reader: the request that comes then downloads the file again instead of sharing that error."""
    (wheel,) = upstream.add("pkg", "1.0", sdist=False, payload_size=300_000)
    served = (upstream.mirror.repository.private.root / "pkg" / wheel.filename).read_bytes()
    mirror = make_mirror()
    failing, retried = threading.Event(), threading.Event()
    write_record, tell = CacheStore.write_record, downloads_module.Downloads._full

    def full(*_args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def held(self: downloads_module.Downloads, *args: Any) -> Any:
        failing.set()
        retried.wait(5)  # its error is told once the next request is answered (or given up on)
        return tell(self, *args)

    monkeypatch.setattr(CacheStore, "write_record", full)
    monkeypatch.setattr(downloads_module.Downloads, "_full", held)
    http.get(mirror.index_url + "pkg/").raise_for_status()
    url = f"{mirror.url}/files/pkg/{wheel.filename}"
    pip = {"User-Agent": 'pip/26.3 {"python":"3.11.7"}'}
    assert http.get(url, headers=pip, timeout=30).content == served  # checked bytes, then the disk fails
    assert failing.wait(10)
    monkeypatch.setattr(CacheStore, "write_record", write_record)  # room again
    try:
        again = http.get(url, headers=pip, timeout=30)
    finally:
        retried.set()
    assert (again.status_code, again.content == served) == (200, True)
    placed = mirror.repository.store.file_path(NormalizedName("pkg"), wheel.filename)
    wait_until(placed.is_file, "the file in place")
    assert verify_cache(cache(mirror)) == 1


def test_a_full_disk_while_keeping_metadata_is_a_507(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (wheel,) = upstream.add("pkg", "1.0", sdist=False)
    mirror = make_mirror()
    http.get(mirror.index_url + "pkg/").raise_for_status()

    def full(path: Path, *_args: Any, root: Path | None = None, **_kwargs: Any) -> None:
        with atomic_file(path, root=root) as handle:
            FullDisk(handle, 0).write(b"x")

    monkeypatch.setattr(repository, "write_atomic", full)
    url = f"{mirror.url}/files/pkg/{wheel.filename}.metadata"
    assert "disk is full" in assert_clear_error(http.get(url, timeout=30), 507)
    assert [p.name for p in (cache(mirror) / "pkg").iterdir()] == []
    monkeypatch.undo()
    assert http.get(url, timeout=30).content.startswith(b"Metadata-Version")


# the promise on files: over-long bodies, every hash (issue 20) --------------------------------

PAYLOAD = bytes(range(256)) * 1200  # the file the page describes: 307,200 bytes
EXTRA = b"\x00" * 50_000
TAMPERED = PAYLOAD[:-1] + b"\x00"


class OneFile:
    """An index of one project, ``pkg``, with one file whose page entry and answer a test sets."""

    def __init__(self, filename: str = "pkg-1.0.tar.gz", data: bytes = PAYLOAD) -> None:
        self.filename = filename
        self.data = data
        #: the page's entry of the file, besides its name and URL (hashes, size, core-metadata)
        self.entry: dict[str, Any] = {}
        self.file = Answer(body=data)
        self.metadata = Answer(status=404)
        #: an HTML page whose link to the file ends with this fragment, instead of the JSON page
        self.fragment: str | None = None
        #: the page's answer, if not the one made of ``entry``
        self.page: Answer | None = None
        #: paths answered with a redirect to ``/moved<path>``, whose body never ends
        self.moved: set[str] = set()
        self.server = RawUpstream(self.answer)

    def answer(self, method: str, path: str) -> Answer:  # noqa: ARG002
        if path in self.moved:
            location = {"Location": f"/moved{path}"}
            return Answer(status=301, pieces=endless(b"", b"moved "), headers=location)
        path = path.removeprefix("/moved")
        url = self.server.url(f"/files/{self.filename}")
        if path == "/simple/pkg/":
            if self.page is not None:
                return self.page
            if self.fragment is not None:
                html = f'<html><body><a href="{url}#{self.fragment}">{self.filename}</a></body></html>'
                return Answer(body=html.encode(), headers={"Content-Type": "text/html"})
            entry = {"filename": self.filename, "url": url, **self.entry}
            page = {"meta": {"api-version": "1.1"}, "name": "pkg", "files": [entry]}
            return Answer(body=json.dumps(page).encode(), headers={"Content-Type": JSON})
        if path == f"/files/{self.filename}":
            return self.file
        if path == f"/files/{self.filename}.metadata":
            return self.metadata
        return Answer(status=404, body=b"no such thing\n")


@pytest.fixture
def one_file() -> Iterator[OneFile]:
    index = OneFile()
    with index.server:
        yield index


def raw_get(
    port: int, path: str, *, seconds: float = 20.0, limit: int = 16 << 20, version: str = "1.1"
) -> tuple[int, dict[str, str], bytes]:
    """A GET read off a socket until the server closes, ``seconds`` pass or ``limit`` bytes come:
    the status, the header fields and the body (as sent: chunked, if it was)."""
    deadline = time.monotonic() + seconds
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(f"GET {path} HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while len(data) < limit and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = {key.strip().lower(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
    return int(status.split()[1]), fields, body


def assert_never_whole(status: int, fields: dict[str, str], body: bytes) -> None:
    """What a client got of a file that failed: an error before its first byte, or a 200 broken off
    short of its Content-Length (or of its last chunk): never an answer that looks complete."""
    if status != 200:
        assert status in (502, 504), (status, body[:200])
        return
    if "content-length" in fields:
        assert len(body) < int(fields["content-length"]), "a complete-looking answer of a file that failed"
    else:
        assert fields.get("transfer-encoding") == "chunked", fields
        assert not body.endswith(b"0\r\n\r\n"), "a complete-looking answer of a file that failed"


def digest_of(algorithm: str, data: bytes = PAYLOAD) -> str:
    return hashlib.new(algorithm, data).hexdigest()


#: a page's entry of PAYLOAD (its size or not), and an upstream answer longer than it says
OVER_LONG = {
    # a body delimited by closing the connection, past the page's size (held open after it)
    "past-the-page-size": (True, Answer(pieces=lambda: [PAYLOAD + EXTRA], hold=True)),
    "past-the-page-size-chunked": (True, Answer(pieces=lambda: [PAYLOAD, EXTRA], chunked=True, hold=True)),
    # no size on the page: the answer says Content-Length: 10 and sends a longer chunked body
    # (urllib3 and http.client follow the chunks and ignore the length)
    "past-its-content-length": (
        False,
        Answer(pieces=lambda: [PAYLOAD + EXTRA], chunked=True, length=10, hold=True),
    ),
    # an honest Content-Length that is not the page's size (the answer stalls after the page's size)
    "a-length-not-the-page-size": (True, Answer(body=PAYLOAD + EXTRA, stall_after=len(PAYLOAD) + 1000)),
}


@pytest.mark.parametrize("hashes", ["sha256", "md5", "none"])
@pytest.mark.parametrize("case", list(OVER_LONG))
def test_an_over_long_body_never_gives_a_client_a_complete_answer(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session, case: str, hashes: str
) -> None:
    sized, answer = OVER_LONG[case]
    one_file.entry = {"hashes": {} if hashes == "none" else {hashes: digest_of(hashes)}}
    if sized:
        one_file.entry["size"] = len(PAYLOAD)
    one_file.file = answer
    mirror = make_mirror(index_url=one_file.server.index_url, ttl=0, timeout=TIMEOUT)
    http.get(mirror.index_url + "pkg/").raise_for_status()
    path = f"/files/pkg/{one_file.filename}"
    assert_never_whole(*raw_get(mirror.port, path))
    assert verify_cache(cache(mirror)) == 0
    assert not list((cache(mirror) / "pkg").glob(".*part"))
    # the same file sent as it should be is served whole, and cached
    one_file.file = Answer(body=PAYLOAD)
    status, _, body = raw_get(mirror.port, path)
    assert (status, body) == (200, PAYLOAD)
    assert verify_cache(cache(mirror), {one_file.filename: sha256(PAYLOAD)}) == 1


@pytest.mark.parametrize("tampered", [True, False], ids=["tampered", "right"])
def test_an_http_1_0_client_never_gets_a_file_of_unknown_size_before_its_check(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session, tampered: bool
) -> None:
    """HTTP/1.0 has no chunks: a body of unknown length ends with the connection, so one broken
    off after its check failed looks whole. Such a client gets the file only once it is verified."""
    one_file.entry = {"hashes": {"sha256": digest_of("sha256")}}  # no size on the page
    one_file.file = Answer(pieces=lambda: [TAMPERED if tampered else PAYLOAD])  # nor a Content-Length
    mirror = make_mirror(index_url=one_file.server.index_url, ttl=0, timeout=TIMEOUT)
    http.get(mirror.index_url + "pkg/").raise_for_status()
    status, fields, body = raw_get(mirror.port, f"/files/pkg/{one_file.filename}", version="1.0")
    if tampered:
        assert status == 502, (status, fields, body[:100])
        assert b"does not match" in body
    else:
        assert (status, fields.get("content-length"), body) == (200, str(len(PAYLOAD)), PAYLOAD)
    assert verify_cache(cache(mirror)) == (0 if tampered else 1)


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
def test_a_response_broken_off_on_purpose_stays_broken_and_is_logged_in_one_line(
    one_file: OneFile,
    make_mirror: MirrorFactory,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
    sized: bool,
) -> None:
    # the tampered bytes come, then the check fails: a client has had all but the last byte
    one_file.entry = {"hashes": {"sha256": digest_of("sha256")}}
    if sized:
        one_file.entry["size"] = len(PAYLOAD)

    def slowly() -> Iterator[bytes]:
        yield TAMPERED[:-1]
        time.sleep(0.2)  # the client is answered by then: the check can only break it off
        yield TAMPERED[-1:]

    one_file.file = Answer(pieces=slowly, chunked=not sized)
    mirror = make_mirror(index_url=one_file.server.index_url, ttl=0, timeout=TIMEOUT)
    mirror.repository.downloads.failed_check_for = 0.0  # each request downloads it again
    http.get(mirror.index_url + "pkg/").raise_for_status()
    path = f"/files/pkg/{one_file.filename}"
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            status, fields, body = raw_get(mirror.port, path)
            assert status == 200
            assert_never_whole(status, fields, body)
            assert ("content-length" in fields) is sized
    assert verify_cache(cache(mirror)) == 0
    no_traceback(caplog)
    broken = [r for r in caplog.records if f"broke off the answer to GET {path}" in r.getMessage()]
    assert len(broken) == 3, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.INFO and "\n" not in r.getMessage() for r in broken)
    assert "does not match the index" in broken[0].getMessage()


@pytest.mark.parametrize(
    "algorithm", ["blake2s", "blake2b", "sha3_256", "sha3_512", "sha512", "sha384", "sha224", "sha1", "md5"]
)
def test_a_file_is_checked_against_the_only_hash_its_page_gives(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session, algorithm: str
) -> None:
    one_file.entry = {"hashes": {algorithm: digest_of(algorithm)}, "size": len(PAYLOAD)}
    one_file.file = Answer(body=TAMPERED)
    mirror = make_mirror(index_url=one_file.server.index_url, ttl=0, timeout=TIMEOUT)
    url = f"{mirror.url}/files/pkg/{one_file.filename}"
    assert failed(http, url) in ("broken", 502)
    assert verify_cache(cache(mirror)) == 0
    # the right bytes: served, and their sha256 listed (the page vouched for them, by another hash),
    # once the while a hash mismatch is remembered for is over
    one_file.file = Answer(body=PAYLOAD)
    mirror.repository.downloads.failed_check_for = 0.0
    assert http.get(url).content == PAYLOAD
    (entry,) = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
    assert entry["hashes"] == {"sha256": sha256(PAYLOAD)}


@pytest.mark.parametrize(
    "hashes",
    [
        {"sha256": digest_of("sha256"), "blake2b": digest_of("blake2b", TAMPERED)},
        {"sha512": digest_of("sha512"), "md5": digest_of("md5", TAMPERED)},
        {"blake2b": hashlib.blake2b(PAYLOAD, digest_size=32).hexdigest()},  # not blake2b's own length
        {"sha256": digest_of("sha256")[:-2]},
        {"md5": digest_of("md5") + "00"},
    ],
    ids=["sha256-and-a-wrong-blake2b", "sha512-and-a-wrong-md5", "short-blake2b", "short-sha256", "long-md5"],
)
def test_every_digest_a_page_gives_must_match(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session, hashes: dict[str, str]
) -> None:
    one_file.entry = {"hashes": hashes, "size": len(PAYLOAD)}
    mirror = make_mirror(index_url=one_file.server.index_url, ttl=0, timeout=TIMEOUT)
    url = f"{mirror.url}/files/pkg/{one_file.filename}"
    assert failed(http, url) in ("broken", 502)
    assert verify_cache(cache(mirror)) == 0


def test_a_hash_in_an_html_link_of_any_hashlib_algorithm_is_checked(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    one_file.fragment = f"sha3_256={digest_of('sha3_256')}"
    one_file.file = Answer(body=TAMPERED)
    mirror = make_mirror(index_url=one_file.server.index_url, ttl=0, timeout=TIMEOUT)
    assert failed(http, f"{mirror.url}/files/pkg/{one_file.filename}") in ("broken", 502)
    assert verify_cache(cache(mirror)) == 0


@pytest.mark.parametrize(
    "hashes",
    [
        {},
        {"shake_256": hashlib.shake_256(PAYLOAD).hexdigest(32)},
        {"whirlpool": "ab" * 64},
        {"nonsense": "zz"},
    ],
    ids=["none", "shake", "unknown-to-hashlib", "nonsense"],
)
def test_a_file_no_hash_can_vouch_for_is_served_but_no_digest_is_claimed(
    tmp_path: Path, make_mirror: MirrorFactory, http: requests.Session, hashes: dict[str, str]
) -> None:
    wheel = make_wheel(PackageSpec(name="pkg", version="1.0", payload_size=50_000), tmp_path / "dists")
    index = OneFile(wheel.name, wheel.read_bytes())
    index.entry = {"hashes": hashes}
    with index.server:
        mirror = make_mirror(index_url=index.server.index_url, ttl=0, timeout=TIMEOUT)
        assert http.get(f"{mirror.url}/files/pkg/{wheel.name}").content == index.data
        assert http.get(f"{mirror.url}/files/pkg/{wheel.name}.metadata").content.startswith(
            b"Metadata-Version"
        )
        (entry,) = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
        html = http.get(mirror.index_url + "pkg/", headers={"Accept": "text/html"}).text
    # served and cached, and nestegg checks its cached bytes with its own sha256; the pages never
    # claim a digest of the file or of its metadata: nobody vouched for the bytes they come from
    assert verify_cache(cache(mirror), {wheel.name: sha256(index.data)}) == 1
    assert entry["hashes"] == {}
    assert entry["core-metadata"] is True
    assert "sha256" not in html
    assert 'data-core-metadata="true"' in html


@pytest.mark.parametrize("algorithm", ["sha256", "sha3_256", "blake2s"])
def test_metadata_is_checked_against_every_hash_its_page_gives(
    tmp_path: Path, make_mirror: MirrorFactory, http: requests.Session, algorithm: str
) -> None:
    wheel = make_wheel(PackageSpec(name="pkg", version="1.0"), tmp_path / "dists")
    index = OneFile(wheel.name, wheel.read_bytes())
    metadata = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n"
    index.entry = {"core-metadata": {algorithm: digest_of(algorithm, metadata)}}
    index.metadata = Answer(body=metadata.replace(b"1.0", b"6.6"))
    url = f"/files/pkg/{wheel.name}.metadata"
    with index.server:
        mirror = make_mirror(index_url=index.server.index_url, timeout=TIMEOUT)
        assert f"does not match its {algorithm}" in assert_clear_error(http.get(mirror.url + url), 502)
        index.metadata = Answer(body=metadata)
        assert http.get(mirror.url + url).content == metadata


# answers no client library foresaw (attack round 2) -------------------------------------------


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged with a traceback (a bug's mark), nor at ERROR."""
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "length",
    [b"\xb2", b"+10", b"-5", b"", b"10, 11", b"9" * 5000, b"1" * 19],
    ids=["superscript-two", "plus", "negative", "empty", "two-lengths", "5000-digits", "19-digits"],
)
@pytest.mark.parametrize("what", ["file", "metadata"])
def test_an_odd_content_length_is_a_one_line_502_for_files_and_metadata(
    one_file: OneFile,
    make_mirror: MirrorFactory,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
    what: str,
    length: bytes,
) -> None:
    metadata = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n"
    one_file.entry = {"core-metadata": True}
    odd = Answer(raw=b"Content-Length: " + length + b"\r\nConnection: close\r\n\r\n" + metadata)
    if what == "file":
        one_file.file = odd
    else:
        one_file.metadata = odd
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT)
    path = f"/files/pkg/{one_file.filename}" + (".metadata" if what == "metadata" else "")
    with caplog.at_level(logging.INFO):
        message = assert_clear_error(http.get(mirror.url + path), 502)
    # urllib3 refuses two lengths itself (InvalidHeader): any other it reads as no length at all
    assert ("Content-Length" if length != b"10, 11" else "InvalidHeader") in message
    assert len(message) < 300
    no_traceback(caplog)
    assert verify_cache(cache(mirror)) == 0
    assert not list((cache(mirror) / "pkg").glob("*.metadata"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("0", 0),
        ("307200", 307200),
        ("007", 7),
        ("12, 12", 12),
        ("12,12 ,\t12", 12),
        ("9" * 18, int("9" * 18)),
        ("0" * 30 + "5", 5),  # leading zeros make no number larger
        ("\xb2", "invalid Content-Length '\xb2'"),
        ("\u0663", "invalid Content-Length"),  # an Arabic-Indic digit: isdigit(), not ASCII
        ("+5", "invalid Content-Length '+5'"),
        ("-5", "invalid"),
        ("5 5", "invalid"),
        ("", "invalid Content-Length ''"),
        ("12, 13", "invalid"),
        ("1" * 19, "a Content-Length of 19 digits, larger than any file"),
        ("9" * 5000, "a Content-Length of 5000 digits"),
        ("x" * 5000, "invalid Content-Length 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"),
    ],
)
def test_content_length_is_ascii_digits_of_a_sane_size(value: str | None, expected: int | str | None) -> None:
    if not isinstance(expected, str):
        assert content_length(value, "http://example.invalid/f") == expected
        return
    with pytest.raises(UpstreamError, match=re.escape(expected)) as raised:
        content_length(value, "http://user:secret@example.invalid/f")
    assert "secret" not in str(raised.value)
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize("what", ["file", "metadata"])
def test_a_content_length_of_one_number_repeated_is_that_number(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session, what: str
) -> None:
    metadata = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n"
    body = PAYLOAD if what == "file" else metadata
    one_file.entry = {"core-metadata": {"sha256": sha256(metadata)}, "hashes": {"sha256": sha256(PAYLOAD)}}
    answer = Answer(
        raw=b"Content-Length: %d, %d\r\nConnection: close\r\n\r\n" % (len(body), len(body)) + body
    )
    if what == "file":
        one_file.file = answer
    else:
        one_file.metadata = answer
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT)
    path = f"/files/pkg/{one_file.filename}" + (".metadata" if what == "metadata" else "")
    assert http.get(mirror.url + path).content == body


class _Unforeseen:
    """A fetcher whose page lists a wheel with metadata, and whose metadata fails as no check
    foresaw: the client library raising a ValueError (a redirect to ``http://[::1``), or the body
    raising one midway."""

    def __init__(self, when: str) -> None:
        self.when = when

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        dist = DistFile(
            filename="pkg-1.0-py3-none-any.whl", url="https://example.invalid/pkg.whl", core_metadata={}
        )
        return Fetched(page=ProjectPage.build(name, [dist]))

    def open(self, url: str) -> FileStream:  # noqa: ARG002
        if self.when == "open":
            raise ValueError("Invalid IPv6 URL")
        return self

    size: int | None = None

    def chunks(self) -> Iterator[bytes]:
        yield b"Metadata-Version: 2.1\n"
        raise RecursionError("maximum recursion depth exceeded")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("when", ["open", "read"])
def test_metadata_that_fails_as_nothing_foresaw_is_a_one_line_502(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.invalid/simple/")
    app = create_app(config, repository=Repository(config, fetcher=_Unforeseen(when)))
    seen: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/files/pkg/pkg-1.0-py3-none-any.whl.metadata",
        "wsgi.input": io.BytesIO(),
    }
    with caplog.at_level(logging.INFO):
        body = b"".join(app(environ, lambda status, _headers, _exc_info=None: seen.append(status)))
    assert seen[0].startswith("502 ")
    assert body.count(b"\n") == 1
    assert (b"ValueError: Invalid IPv6 URL" if when == "open" else b"RecursionError") in body
    no_traceback(caplog)


def test_metadata_longer_than_its_limit_by_its_length_is_refused_before_its_body(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    one_file.entry = {"core-metadata": True}
    # a length over the limit, and a body that never comes: refused at once, not at the deadline
    one_file.metadata = Answer(pieces=lambda: [b"Metadata-Version: 2.1\n"], length=2_000_000, hold=True)
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=30, max_metadata_size=1 << 20)
    started = time.monotonic()
    message = assert_clear_error(http.get(f"{mirror.url}/files/pkg/{one_file.filename}.metadata"), 502)
    assert "larger than max_metadata_size (1 MiB)" in message
    assert time.monotonic() - started < 10


def test_an_unsolicited_304_is_an_upstream_error_and_a_held_page_stays(
    one_file: OneFile,
    make_mirror: MirrorFactory,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    not_modified = Answer(status=304)
    one_file.page = not_modified  # to the first request, which sent no validator
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT, ttl=0)
    with caplog.at_level(logging.INFO):
        message = assert_clear_error(http.get(mirror.index_url + "pkg/"), 502)
        assert "304 Not Modified" in message
        assert_clear_error(http.get(f"{mirror.url}/files/pkg/{one_file.filename}"), 502)
        # a page held (whose upstream gave no validators): served on, as on any upstream failure
        one_file.page = None
        page = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON})
        assert page.status_code == 200
        assert http.get(f"{mirror.url}/files/pkg/{one_file.filename}").status_code == 200
        one_file.page = not_modified
        again = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON})
        assert again.status_code == 200
        assert [f["filename"] for f in again.json()["files"]] == [one_file.filename]  # cached
    assert any("304 Not Modified" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    no_traceback(caplog)


# endless upstream answers (issue 20) ---------------------------------------------------------


def peak_growth(action: Callable[[], Any]) -> tuple[Any, int]:
    """``action()``, and how far this process's peak RSS rose above its RSS before it (Linux)."""
    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak RSS (VmHWM) starts again from the RSS now
    result = action()
    with open("/proc/self/status") as status:
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1)) * 1024  # type: ignore[union-attr]
    return result, peak - before


def endless(head: bytes, piece: bytes) -> Callable[[], Iterator[bytes]]:
    def pieces() -> Iterator[bytes]:
        yield head
        block = piece * max(1, 65536 // len(piece))
        while True:
            yield block

    return pieces


def dripping(head: bytes, every: float = 0.05) -> Callable[[], Iterator[bytes]]:
    """A body that keeps coming, a byte every ``every`` seconds (well within the timeout)."""
    stop = threading.Event()

    def pieces() -> Iterator[bytes]:
        yield head
        while not stop.wait(every):
            yield b" "

    return pieces


def gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"files": [')]
    block = b" " * (1 << 20)
    parts += [packer.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


ENDLESS_PAGES = {
    "file-list": lambda: Answer(
        pieces=endless(b'{"files": [', b'{"filename": "pkg-1.0.tar.gz", "url": "pkg-1.0.tar.gz"},'),
        headers={"Content-Type": JSON},
    ),
    "html-links": lambda: Answer(
        pieces=endless(b"<html><body>", b'<a href="pkg-1.0.tar.gz">x</a>'),
        headers={"Content-Type": "text/html"},
    ),
    "one-string": lambda: Answer(
        pieces=endless(b'{"files": [{"filename": "pkg-1.0.tar.gz", "url": "', b"a"),
        headers={"Content-Type": JSON},
    ),
    # 64 MiB of JSON's whitespace in 64 kB of gzip: counted as what it expands to
    "gzip-bomb": lambda: Answer(
        body=gzip_bomb(64 << 20), headers={"Content-Type": JSON, "Content-Encoding": "gzip"}
    ),
}


@pytest.mark.parametrize("kind", list(ENDLESS_PAGES))
def test_an_endless_page_is_a_prompt_502_that_names_its_limit(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session, kind: str
) -> None:
    one_file.page = ENDLESS_PAGES[kind]()
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT, max_page_size=4 << 20)
    started = time.monotonic()
    response, grown = peak_growth(lambda: http.get(mirror.index_url + "pkg/", timeout=60))
    message = assert_clear_error(response, 502)
    assert time.monotonic() - started < 20
    assert f"127.0.0.1:{one_file.server.port}/simple/pkg/" in message
    assert "max_page_size (4 MiB)" in message
    assert "raise nestegg.max_page_size" in message
    assert grown < 100 << 20, grown


def test_an_endless_file_list_at_the_default_limits_keeps_memory_bounded(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    # entries as real pages have them: the model of a page costs far more than its text
    entry = json.dumps(
        {
            "filename": "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
            "url": "https://example.invalid/packages/ab/cd/pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
            "hashes": {"sha256": "0" * 64},
            "requires-python": ">=3.8",
            "size": 123456,
        }
    ).encode()
    one_file.page = Answer(pieces=endless(b'{"files": [', entry + b","), headers={"Content-Type": JSON})
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT)
    response, grown = peak_growth(lambda: http.get(mirror.index_url + "pkg/", timeout=120))
    assert "max_page_size (64 MiB)" in assert_clear_error(response, 502)
    # 64 MiB of such entries are about 250,000 files: a model of ~140 MB
    assert grown < 400 << 20, grown


def test_a_good_page_keeps_being_served_when_its_refetch_is_endless(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    one_file.entry = {"hashes": {"sha256": sha256(PAYLOAD)}, "size": len(PAYLOAD)}
    mirror = make_mirror(index_url=one_file.server.index_url, ttl=0, timeout=TIMEOUT, max_page_size=1 << 20)
    good = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()
    assert http.get(f"{mirror.url}/files/pkg/{one_file.filename}").content == PAYLOAD
    for kind in ("file-list", "one-string"):
        one_file.page = ENDLESS_PAGES[kind]()
        again = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}, timeout=60)
        assert again.status_code == 200
        assert again.json() == good
    assert http.get(f"{mirror.url}/files/pkg/{one_file.filename}").content == PAYLOAD


def test_a_redirect_whose_body_never_ends_is_followed_unread(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    one_file.entry = {"hashes": {"sha256": sha256(PAYLOAD)}, "size": len(PAYLOAD)}
    one_file.moved = {"/simple/pkg/", f"/files/{one_file.filename}"}
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT)
    page, grown = peak_growth(
        lambda: http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}, timeout=60)
    )
    assert page.status_code == 200, page.text
    assert [f["filename"] for f in page.json()["files"]] == [one_file.filename]
    assert http.get(f"{mirror.url}/files/pkg/{one_file.filename}", timeout=60).content == PAYLOAD
    assert grown < 100 << 20, grown


def test_a_page_that_drips_is_cut_off_at_its_deadline(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    one_file.page = Answer(pieces=dripping(b'{"files": ['), headers={"Content-Type": JSON})
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT, page_deadline=1.0)
    started = time.monotonic()
    message = assert_clear_error(http.get(mirror.index_url + "pkg/", timeout=60), 504)
    assert time.monotonic() - started < 1.0 + 10 * TIMEOUT
    assert f"127.0.0.1:{one_file.server.port}/simple/pkg/" in message
    assert "page_deadline (1s)" in message


@pytest.mark.parametrize("kind", ["endless", "drips"])
def test_endless_or_dripping_metadata_is_a_clear_error(
    tmp_path: Path, make_mirror: MirrorFactory, http: requests.Session, kind: str
) -> None:
    wheel = make_wheel(PackageSpec(name="pkg", version="1.0"), tmp_path / "dists")
    index = OneFile(wheel.name, wheel.read_bytes())
    index.entry = {"core-metadata": True}
    if kind == "endless":
        index.metadata = Answer(pieces=endless(b"Metadata-Version: 2.1\n", b"x"))
    else:
        index.metadata = Answer(pieces=dripping(b"Metadata-Version: 2.1\n"))
    with index.server:
        mirror = make_mirror(
            index_url=index.server.index_url, timeout=TIMEOUT, max_metadata_size=1 << 20, page_deadline=1.0
        )
        started = time.monotonic()
        response, grown = peak_growth(
            lambda: http.get(f"{mirror.url}/files/pkg/{wheel.name}.metadata", timeout=60)
        )
        message = assert_clear_error(response, 502 if kind == "endless" else 504)
        assert time.monotonic() - started < 1.0 + 10 * TIMEOUT
        assert f"127.0.0.1:{index.server.port}/files/{wheel.name}.metadata" in message
        if kind == "endless":
            assert "max_metadata_size (1 MiB); raise nestegg.max_metadata_size" in message
        else:
            assert "page_deadline (1s)" in message
        assert grown < 100 << 20, grown
        assert not mirror.repository.store.metadata_path(NormalizedName("pkg"), wheel.name).exists()


def test_a_download_that_drips_fails_naming_its_rate(
    one_file: OneFile, make_mirror: MirrorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    one_file.entry = {"size": 10 << 20}  # at a byte every 50 ms: six years
    one_file.file = Answer(pieces=dripping(PAYLOAD[:1000]))
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT)
    downloads = mirror.repository.downloads
    downloads.min_rate, downloads.rate_window = 1024, 1.0
    started = time.monotonic()
    assert_never_whole(*raw_get(mirror.port, f"/files/pkg/{one_file.filename}"))
    assert time.monotonic() - started < 1.0 + 10 * TIMEOUT
    (dripped,) = [r.getMessage() for r in caplog.records if "dripped" in r.getMessage()]
    assert f"127.0.0.1:{one_file.server.port}/files/{one_file.filename}" in dripped
    assert "bytes/s over 1s, under the 1024 bytes/s a download must keep" in dripped
    assert verify_cache(cache(mirror)) == 0
    assert not list((cache(mirror) / "pkg").glob(".*part"))


def test_a_file_of_no_declared_size_stops_at_max_file_size(
    one_file: OneFile, make_mirror: MirrorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    one_file.file = Answer(pieces=endless(b"", b"x"))  # no size on the page, no Content-Length
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT, max_file_size=1 << 20)
    started = time.monotonic()
    status, fields, body = raw_get(mirror.port, f"/files/pkg/{one_file.filename}", limit=8 << 20)
    assert_never_whole(status, fields, body)
    assert len(body) < 2 << 20
    assert time.monotonic() - started < 10
    assert any("more than max_file_size (1 MiB)" in r.getMessage() for r in caplog.records)
    assert verify_cache(cache(mirror)) == 0
    assert not list((cache(mirror) / "pkg").glob(".*part"))


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


# the web UI of a large project (attack 2, finding 5) ------------------------------------------


def big_page(files: int, *, one_version: int = 0) -> ProjectPage:
    """A page of ``files`` files, each its own version, and ``one_version`` more of version 0.1."""
    dists = [
        DistFile(
            filename=f"big-1.{i}-py3-none-any.whl",
            url=f"https://example.invalid/f/big-1.{i}-py3-none-any.whl",
            hashes={"sha256": f"{i:064x}"},
        )
        for i in range(files)
    ]
    dists += [
        DistFile(
            filename=f"big-0.1-{j}-py3-none-any.whl",
            url=f"https://example.invalid/f/big-0.1-{j}-py3-none-any.whl",
            hashes={"sha256": f"{j:064x}"},
        )
        for j in range(one_version)
    ]
    return ProjectPage.build("big", dists)


def test_the_ui_page_of_a_large_project_costs_one_model_and_is_made_once(
    make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """50,000 files: two requests at once hold one model of the page between them (the mirror's,
    made one at a time), /health answers beside them, and later pages of it cost milliseconds."""
    mirror = make_mirror()
    # within its TTL: the upstream is not asked (offline, the page lists only the files cached)
    mirror.repository.store.write_page(
        PageState(page=big_page(48_800, one_version=1_200), checked=time.time())
    )
    health: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            health.append(health_ms(mirror.port))
            done.wait(0.05)

    def both() -> list[requests.Response]:
        answers: list[requests.Response] = []

        def ask(path: str) -> None:
            with requests.Session() as session:
                answers.append(session.get(mirror.url + path, timeout=120))

        askers = [
            threading.Thread(target=ask, args=(path,))
            for path in ("/ui/project/big", "/ui/project/big?format=json")
        ]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join()
        return answers

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        started = time.monotonic()
        answers, grown = peak_growth(both)
        took = time.monotonic() - started
    finally:
        done.set()
        prober.join()
    assert [a.status_code for a in answers] == [200, 200]
    data = next(a for a in answers if a.headers["Content-Type"] == "application/json").json()
    assert (data["total"], len(data["versions"])) == (48_801, 20)
    assert data["versions"][0]["version"] == "1.48799"
    # one model of the page (about 650 bytes a file) and the view: each request made its own before
    assert grown < 80 << 20, grown
    assert took < 60, took
    assert sorted(health)[len(health) // 2] < 100, health
    started = time.monotonic()
    later = http.get(f"{mirror.url}/ui/project/big?format=json&per_page=500&page=3", timeout=60).json()
    assert time.monotonic() - started < 2  # the view is made: no row per file, no version parsed
    assert [v["version"] for v in later["versions"]][:2] == ["1.47799", "1.47798"]
    # a version of 1,200 files shows 500 of them, and says how many more there are
    last = http.get(f"{mirror.url}/ui/project/big?format=json&per_page=1&page=48801", timeout=60).json()
    [version] = last["versions"]
    assert (version["version"], len(version["files"]), version["more_files"]) == ("0.1", 500, 700)
    html = http.get(f"{mirror.url}/ui/project/big?per_page=1&page=48801", timeout=60).text
    assert "and 700 more files" in html


# the second attack round (issue 20) ---------------------------------------------------------------


def test_a_filename_listed_twice_is_fetched_and_checked_as_its_first_entry(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """Entry one has the right sha256, entry two no hash and other bytes: the page showed the
    first, the download followed the second, unchecked (issue 20, second round, finding 6)."""
    good = {"filename": one_file.filename, "url": one_file.server.url(f"/files/{one_file.filename}")}
    evil = {"filename": one_file.filename, "url": one_file.server.url("/evil/pkg-1.0.tar.gz")}
    page = {
        "meta": {"api-version": "1.1"},
        "name": "pkg",
        "files": [{**good, "hashes": {"sha256": sha256(PAYLOAD)}}, evil],
    }
    one_file.page = Answer(body=json.dumps(page).encode(), headers={"Content-Type": JSON})
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT)
    (entry,) = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
    assert entry["hashes"] == {"sha256": sha256(PAYLOAD)}
    assert http.get(f"{mirror.url}/files/pkg/{one_file.filename}").content == PAYLOAD
    assert one_file.server.count("/evil/pkg-1.0.tar.gz") == 0
    (entry,) = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
    assert entry["hashes"] == {"sha256": sha256(PAYLOAD)}


def test_a_redirect_to_a_url_that_cannot_be_read_is_a_502(
    one_file: OneFile, make_mirror: MirrorFactory, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    one_file.entry = {"core-metadata": True}
    one_file.file = one_file.metadata = Answer(status=302, headers={"Location": "http://[::1"})
    mirror = make_mirror(index_url=one_file.server.index_url, timeout=TIMEOUT)
    for path in (one_file.filename, one_file.filename + ".metadata"):
        message = assert_clear_error(http.get(f"{mirror.url}/files/pkg/{path}"), 502)
        assert "redirected to a URL that cannot be read" in message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def public_index(url: str) -> HttpFetcher:
    """A fetcher of the index at ``url`` as if it were on a public address: no test reaches one."""
    fetcher = HttpFetcher(url, timeout=TIMEOUT)
    fetcher._internal = False
    return fetcher


def test_an_index_on_a_public_address_cannot_send_nestegg_to_an_internal_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An internal service (or the mirror itself) behind a file URL: refused, whatever the URL
    names it, before a byte is sent to it (issue 20, second round, finding 11)."""
    with RawUpstream(lambda method, path: Answer(body=b"secret")) as service:  # noqa: ARG005
        fetcher = public_index("http://index.example.invalid/simple/")
        port = service.port
        for host in (
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "localhost",
            "0.0.0.0",  # noqa: S104 - a URL's host, which reaches this host
        ):
            with pytest.raises(UpstreamError, match="internal address"):
                fetcher.open(f"http://{host}:{port}/files/pkg-1.0.tar.gz")
        # a name the URL's text does not give away: the address is checked once connected
        monkeypatch.setattr(upstream, "_literal_address", lambda host: None)  # noqa: ARG005
        with pytest.raises(UpstreamError, match=r"localhost:\d+: it is at the internal address 127\.0\.0\.1"):
            fetcher.open(f"http://localhost:{port}/files/pkg-1.0.tar.gz")
        assert service.seen == []
        # an index on an internal address may point at another (a company's file server)
        assert HttpFetcher(service.index_url, timeout=TIMEOUT).open(service.url("/x")).size == 6


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.invalid/pkg-1.0.tar.gz", "gopher://x/"])
def test_a_file_url_must_be_http(url: str) -> None:
    with pytest.raises(UpstreamError, match="must be http:// or https://"):
        HttpFetcher("http://127.0.0.1:9/simple/", timeout=TIMEOUT).open(url)


@pytest.mark.parametrize(
    ("index", "url", "sent"),
    [
        ("https://u:p@index.example.invalid/simple/", "https://index.example.invalid/files/x.whl", True),
        ("https://u:p@index.example.invalid/simple/", "https://index.example.invalid:443/files/x.whl", True),
        ("https://u:p@index.example.invalid/simple/", "http://index.example.invalid/files/x.whl", False),
        ("https://u:p@index.example.invalid/simple/", "http://index.example.invalid:443/files/x.whl", False),
        ("https://u:p@index.example.invalid/simple/", "https://index.example.invalid:8443/x.whl", False),
        ("https://u:p@index.example.invalid/simple/", "https://files.example.invalid/x.whl", False),
        ("http://u:p@index.example.invalid:8080/simple/", "http://index.example.invalid:8080/x.whl", True),
        ("http://u:p@index.example.invalid:8080/simple/", "https://index.example.invalid:8080/x.whl", False),
        # a token alone (pip sends it as the user, with an empty password), its page's URL too
        ("https://TOKEN@index.example.invalid/simple/", "https://TOKEN@index.example.invalid/simple/", True),
        ("https://TOKEN@index.example.invalid/simple/", "https://index.example.invalid/files/x.whl", True),
        ("https://TOKEN@index.example.invalid/simple/", "http://index.example.invalid/files/x.whl", False),
        ("https://TOKEN@index.example.invalid/simple/", "https://files.example.invalid/x.whl", False),
    ],
)
def test_the_index_credentials_go_only_to_its_own_origin(index: str, url: str, sent: bool) -> None:
    assert (HttpFetcher(index)._auth_for(url) is not None) is sent


def test_a_file_that_failed_its_check_is_not_downloaded_again_at_once(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    faults: Faults,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each request for a tampered file downloaded it again and logged it again: for a while it
    is answered 502 at once, with one line, and logged once."""
    wheel, sdist = (r.filename for r in upstream.add("pkg", "1.0", payload_size=20_000))
    mirror = make_mirror()
    downloads = mirror.repository.downloads
    faults.corrupt.update({f"/files/pkg/{wheel}", f"/files/pkg/{sdist}"})
    url = f"{mirror.url}/files/pkg/{sdist}"

    def warnings() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and sdist in r.getMessage()
        ]

    with pytest.raises(requests.RequestException):  # broken off before its last byte, or a 502
        http.get(url).raise_for_status()
    logged = warnings()
    assert [line for line in logged if "does not match" in line] == logged[:1]
    for _ in range(5):
        message = assert_clear_error(http.get(url), 502)
        assert "not downloaded again for 60s" in message
    assert faults.count(f"/files/pkg/{sdist}") == 1
    assert warnings() == logged
    # bounded: the last failed file pushes out the first
    monkeypatch.setattr(downloads_module, "MAX_FAILED_CHECKS", 1)
    with pytest.raises(requests.RequestException):
        http.get(f"{mirror.url}/files/pkg/{wheel}").raise_for_status()
    assert len(downloads._failed_checks) == 1
    faults.corrupt.clear()
    assert http.get(url).status_code == 200
    assert faults.count(f"/files/pkg/{sdist}") == 2
    # and it is downloaded again once the while is over
    downloads.failed_check_for = 0.0
    assert http.get(f"{mirror.url}/files/pkg/{wheel}").status_code == 200


def test_a_connection_that_is_never_made_fails_after_connect_timeout_not_timeout(tmp_path: Path) -> None:
    # a black-holed route: the read timeout (30 s) is no bound on it, connect_timeout is
    with unconnectable_url() as url:
        config = Config(nestegg_dir=tmp_path, index_url=url, timeout=30.0, connect_timeout=0.5)
        fetcher = Repository(config).fetcher
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=r"/simple/pkg/ did not connect in 0\.5s"):
            fetcher.project("pkg", etag=None, last_modified=None)
        assert time.monotonic() - started < 15  # generous: the machine is loaded; 30 without it


def _page_body(*versions: str) -> bytes:
    files = [{"filename": f"pkg-{v}.tar.gz", "url": f"pkg-{v}.tar.gz", "hashes": {}} for v in versions]
    return json.dumps({"meta": {"api-version": "1.0"}, "name": "pkg", "files": files}).encode()


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (Answer(body=_page_body("1.0")), Answer(body=_page_body("1.0")), True),
        # the same page gzip-encoded, and in pieces: the digest is of what it decodes to
        (
            Answer(body=_page_body("1.0")),
            Answer(body=gzip.compress(_page_body("1.0")), headers={"Content-Encoding": "gzip"}),
            True,
        ),
        (
            Answer(body=_page_body("1.0")),
            Answer(
                pieces=lambda: [_page_body("1.0")[:20], _page_body("1.0")[20:]], length=len(_page_body("1.0"))
            ),
            True,
        ),
        (Answer(body=_page_body("1.0")), Answer(body=_page_body("1.0", "2.0")), False),
        (Answer(body=_page_body("1.0")), Answer(body=_page_body("1.0") + b" "), False),  # other bytes
    ],
    ids=["same", "gzip", "pieces", "changed", "other-bytes"],
)
def test_an_upstream_page_comes_with_the_digest_of_what_it_was_read_from(
    first: Answer, second: Answer, same: bool
) -> None:
    answers = iter([first, second])

    def script(_method: str, _path: str) -> Answer:
        answer = next(answers)
        headers = {"Content-Type": JSON, **answer.headers}
        return dataclasses.replace(answer, headers=headers)

    with RawUpstream(script) as server:
        fetcher = HttpFetcher(server.index_url, timeout=TIMEOUT)
        one = fetcher.project("pkg", etag=None, last_modified=None)
        two = fetcher.project("pkg", etag=None, last_modified=None)
    assert None not in (one.digest, two.digest)
    assert (one.digest == two.digest) is same
    assert one.page is not None
    assert two.page is not None
    assert (one.page.versions == two.page.versions) is (same or second.body.endswith(b" "))
