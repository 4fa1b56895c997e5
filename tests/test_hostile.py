"""Hostile input: crafted paths, headers, uploads and configs, and the defaults that keep a mirror safe.

Each answer must be a deliberate one (a redirect, 4xx, or the right bytes): never a 500, never a
file from outside the served trees, never a secret, never a name made private by a refused upload.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import re
import select
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Config, Mirror
from nestegg_core.cli import main
from nestegg_core.cli.export import export
from nestegg_core.config import credentials as credentials_module
from nestegg_core.config.credentials import NOT_A_TOKEN, Credentials, set_password
from nestegg_core.errors import NesteggError
from nestegg_core.index import repository
from nestegg_core.index.downloads import AHEAD_AT_ONCE
from nestegg_core.serve import _waitress
from nestegg_core.serve import server as serving
from nestegg_core.serve.mounts import UpstreamMounts
from nestegg_core.serve.server import describe, make_server
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import ProjectPage
from nestegg_core.storage.pagestate import PageState
from nestegg_core.storage.store import CacheStore
from nestegg_core.storage.usage import SizeLimit, cached_files, prune
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory, pip_download
from .loopback import (
    Answer,
    RawUpstream,
    Trickle,
    busy_workers,
    health_ms,
    never_reading,
    sha256,
    verify_cache,
    wait_until,
)

JSON = "application/vnd.pypi.simple.v1+json"
#: the mirrors' public URL where two processes must share their renderings
PUBLIC = "http://mirror.example.com"
SENTINEL = b"sentinel: this file must never be served"
USER, PASSWORD = "alice", "correct horse"
#: what pip on CPython 3.11, Linux x86_64 sends (``compatible_only`` reads it)
PIP_AGENT = "pip/24.0 " + json.dumps(
    {"python": "3.11.7", "implementation": {"name": "CPython"}, "system": {"name": "Linux"}, "cpu": "x86_64"}
)


def raw_request(
    port: int, target: bytes, headers: bytes = b"", method: bytes = b"GET"
) -> tuple[int, bytes, bytes]:
    """Send a request line the way no polite client would; returns status, head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


@pytest.fixture
def pkg(upstream: PrivateIndex) -> dict[str, bytes]:
    records = upstream.add("pkg", "1.0", payload_size=100_000)
    root = upstream.mirror.repository.private.root / "pkg"
    return {r.filename: (root / r.filename).read_bytes() for r in records}


@pytest.fixture
def sentinels(tmp_path: Path) -> None:
    """Files a traversal would reach: in the nest, next to it, and in the upstream's store."""
    for path in (
        tmp_path / "nest" / "secret.txt",
        tmp_path / "secret.txt",
        tmp_path / "upstream" / "secret.txt",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SENTINEL)


# paths -------------------------------------------------------------------------------------

EVIL_SEGMENTS = [
    b"..", b"%2e%2e", b"%2E%2e", b".%2e", b"...", b".", b"%2e",
    b"..%2f..%2fsecret.txt", b"..%2F..%2F..%2Fsecret.txt", b"%2e%2e%2fsecret.txt",
    b"..%5c..%5csecret.txt", b"..\\..\\secret.txt", b"%5c%5csecret.txt",
    b"%252e%252e%252fsecret.txt",  # encoded twice
    b"%2fetc%2fpasswd", b"/etc/passwd", b"C:\\secret.txt", b"file:%2f%2f%2fetc%2fpasswd",
    b"%00", b"pkg%00.whl", b"%ff%fe", b"caf\xc3\xa9", b"caf%C3%A9", b"\xe2\x80\xae",
    b"a" * 250, b"a" * 5000, b"-" * 300, b"%0d%0aX-Injected:%201", b"%3Cscript%3E", b"~root", b"*",
    b".hidden", b".pkg-1.0.tar.gz.1.0.part", b"secret.txt",
]  # fmt: skip
TEMPLATES = [
    b"/simple/{}/", b"/simple/{}", b"/simple/pkg/{}", b"/files/{}/pkg-1.0.tar.gz", b"/files/pkg/{}",
    b"/files/pkg/{}.metadata", b"/{}/simple/pkg/", b"/upstreams/{}/simple/pkg/", b"/ui/{}",
    b"/ui/project/{}",
]  # fmt: skip


@pytest.mark.usefixtures("pkg", "sentinels")
def test_path_traversal_and_odd_names_in_every_segment(mirror: Mirror, faults: Faults) -> None:
    answers: dict[int, int] = {}
    for template in TEMPLATES:
        for segment in EVIL_SEGMENTS:
            target = template.replace(b"{}", segment)
            status, head, body = raw_request(mirror.port, target)
            answers[status] = answers.get(status, 0) + 1
            assert status in (200, 301, 302, 400, 401, 404, 405, 414, 431), (target, status, body[:300])
            assert SENTINEL not in body, target
            assert b"root:" not in body, target
            assert b"Traceback" not in body, target
            assert b"X-Injected" not in head, target
            if status == 200:  # only the harmless: an index page, the web UI's own pages
                assert not target.startswith(b"/files/"), target
            if status in (301, 302):
                location = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"location:"))
                assert b".." not in location, target
                assert location.split(b":", 1)[1].strip().startswith(b"/"), target
    assert 404 in answers
    # nothing of it was passed on to the upstream but plain project pages
    for seen in faults.seen:
        assert ".." not in seen.path, seen.path
        assert "secret" not in seen.path, seen.path


@pytest.mark.usefixtures("pkg")
def test_absolute_form_and_odd_request_targets(mirror: Mirror) -> None:
    for target in (
        b"http://evil.invalid/simple/pkg/",
        b"//simple/pkg/",
        b"/simple//pkg/",
        b"/./simple/pkg/",
        b"/simple/pkg/?../../secret.txt",
        b"/simple/pkg/#frag",
        b"*",
        b"/" + b"x/" * 2000,
    ):
        status, _, body = raw_request(mirror.port, target)
        assert status in (200, 301, 302, 400, 404, 414), (target, status, body[:200])
        assert b"Traceback" not in body


@pytest.mark.usefixtures("pkg")
def test_over_long_names_are_404_everywhere(mirror: Mirror, http: requests.Session) -> None:
    for length in (201, 256, 300, 4000):
        name = "a" * length
        for path in (f"/simple/{name}/", f"/files/{name}/{name}-1.0.tar.gz", f"/files/pkg/{name}.whl"):
            answer = http.get(mirror.url + path)
            assert answer.status_code == 404, (path[:40], answer.status_code, answer.text[:200])


FORGING_TARGETS = [
    b"/simple/x%0a127.0.0.1%20%22GET%20/forged%20HTTP/1.1%22%20200%200%200.1ms",
    b"/simple/x%0d%0aforged",
    b"/\x1b[2J\x1b[31mred",
    b"/files/a%1b%5b2Jb/c",
    b"/health?a=%0a&b=\x1b[0m&c=%22",
    b'/a"b\\c',
    b"/caf%c3%a9%e2%80%ae",
    b"/simple/%00%7f%85/",
]


def test_control_characters_cannot_forge_access_log_lines(
    mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nestegg_core.access")
    for target in FORGING_TARGETS:
        raw_request(mirror.port, target)
    lines = [r.getMessage() for r in caplog.records if r.name == "nestegg_core.access"]
    assert len(lines) == len(FORGING_TARGETS), lines
    for line in lines:
        # printable ASCII only, and the request (in quotes) is one field: no quote inside it
        # unescaped
        assert all(0x20 <= ord(c) <= 0x7E for c in line), repr(line)
        request = line.split('"', 1)[1].rsplit('"', 1)[0]
        assert '"' not in request.replace('\\"', ""), line
    assert '/simple/x\\x0a127.0.0.1 \\"GET /forged HTTP/1.1\\" 200 0 0.1ms' in lines[0], lines[0]
    assert "/simple/x\\x0d\\x0aforged" in lines[1]
    assert "/\\x1b[2J\\x1b[31mred" in lines[2]
    assert "?a=%0a&b=\\x1b[0m&c=%22" in lines[4]  # the query as sent, still escaped
    assert "/caf\\xc3\\xa9\\xe2\\x80\\xae" in lines[6]


# headers -----------------------------------------------------------------------------------

BAD_ACCEPT = [
    "", ",", ",,,;;;", "*", "/", "text/", "*/*;q=", "*/*;q=abc", "*/*;q=nan", "*/*;q=inf", "*/*;q=-1",
    "*/*;q=1e999", "application/vnd.pypi.simple.v1+json;q=0", "text/html;level=1;q=0.5;q=0.9",
    "application/vnd.pypi.simple.v999+json", "application/vnd.pypi.simple.latest+json",
    "APPLICATION/VND.PYPI.SIMPLE.V1+JSON", "text/*;q=0, */*;q=0", "a/b," * 2000, "\u00e9/\u00e9",
]  # fmt: skip
PAGE_TYPES = {JSON, "application/vnd.pypi.simple.v1+html", "text/html"}


@pytest.mark.usefixtures("pkg")
def test_bad_accept_headers_get_a_page_or_406(mirror: Mirror) -> None:
    for accept in BAD_ACCEPT:
        for target in (b"/simple/", b"/simple/pkg/"):
            status, head, body = raw_request(
                mirror.port, target, b"Accept: " + accept.encode("latin-1") + b"\r\n"
            )
            assert status in (200, 406), (accept, status, body[:200])
            content_type = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-type:")
            )
            if status == 200:
                assert content_type.split(";")[0] in PAGE_TYPES, accept


BAD_RANGES = [
    "bytes=0-0", "bytes=-1", "bytes=0-", "bytes=5-2", "bytes=-0", "bytes=0--1", "bytes=--1", "bytes=1-2,3-4",
    "bytes=0-99999999999999999999999", "bytes=99999999999999999999-", "bytes=-99999999999999999999",
    "bytes = 1 - 2", "bytes=1-2;", "items=0-1", "bytes=", "bytes=-", "=0-1", "bytes=0x10-0x20", "bytes=1e3-",
    "bytes=\u0661-\u0662", "bytes=0-" + "9" * 5000,
]  # fmt: skip


def expect_range(full: bytes, status: int, head: bytes, body: bytes, header: str) -> None:
    """The whole file (200), exactly the bytes Content-Range names (206), or 416 with none."""
    assert status in (200, 206, 416), (header, status, body[:200])
    if status == 200:
        assert body == full, header
        return
    content_range = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-range:")
    )
    if status == 416:
        assert content_range == f"bytes */{len(full)}", header
        return
    first, last, size = (int(x) for x in content_range.removeprefix("bytes ").replace("/", "-").split("-"))
    assert size == len(full), header
    assert body == full[first : last + 1], header


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "downloading"])
def test_bad_range_headers_never_get_wrong_bytes(
    mirror: Mirror, upstream: PrivateIndex, http: requests.Session, cached: bool
) -> None:
    # one file per header, so that each request can be the first of an uncached file
    files = {}
    for i in range(len(BAD_RANGES)):
        (record,) = upstream.add(f"r{i}", "1.0", sdist=False, payload_size=60_000)
        files[i] = (f"{mirror.url}/files/r{i}/{record.filename}", record.hashes["sha256"])
        http.get(f"{mirror.index_url}r{i}/").raise_for_status()
    for i, header in enumerate(BAD_RANGES):
        url, digest = files[i]
        if cached:
            http.get(url).raise_for_status()
        target = url.split(str(mirror.port), 1)[1].encode()
        status, head, body = raw_request(mirror.port, target, b"Range: " + header.encode() + b"\r\n")
        full = http.get(url).content
        assert sha256(full) == digest
        expect_range(full, status, head, body, header)


# names of nestegg's own files -----------------------------------------------------------------

WHEEL, SDIST = "pkg-1.0-py3-none-any.whl", "pkg-1.0.tar.gz"
#: names an upstream page may list that are, or look like, the files a store keeps beside a cached
#: file (records, metadata, markers, part and temporary files, locks)
SIDECAR_NAMES = [
    f"{SDIST}.json", f"{WHEEL}.json", f"{WHEEL}.metadata", f"{SDIST}.metadata", f"{SDIST}.json.json",
    f".{SDIST}.1.2.part", f".{SDIST}.1.2.tmp", ".changed", ".generation", f"{SDIST}.lock", f"{SDIST}.JSON",
    "pkg.json", "README", "pkg-1.0.tar.gz.part",
]  # fmt: skip


class SidecarUpstream:
    """An upstream whose page of ``pkg`` lists a real wheel and sdist and every name of
    ``SIDECAR_NAMES``, each a file of bytes that would pass for a record if taken for one."""

    def __init__(self, tmp: Path, *, html: bool) -> None:
        spec = PackageSpec(name="pkg", version="1.0")
        wheel, sdist = make_wheel(spec, tmp), make_sdist(spec, tmp)
        self.real = {WHEEL: wheel.read_bytes(), SDIST: sdist.read_bytes()}
        self.metadata = wheel_metadata(wheel)
        forged = {"filename": SDIST, "hashes": {"sha256": "0" * 64}, "url": "http://evil.invalid/x"}
        self.hostile = {name: json.dumps({**forged, "name": name}).encode() for name in SIDECAR_NAMES}
        self.html = html
        self.server = RawUpstream(self.answer)

    def answer(self, _method: str, path: str) -> Answer:
        files = {**self.real, **self.hostile}
        if path == "/simple/pkg/":
            if self.html:
                links = "".join(
                    f'<a href="/files/{quote(n)}#sha256={sha256(d)}">{n}</a>' for n, d in files.items()
                )
                return Answer(
                    body=f"<html><body>{links}</body></html>".encode(), headers={"Content-Type": "text/html"}
                )
            entries = [
                {"filename": n, "url": f"/files/{quote(n)}", "hashes": {"sha256": sha256(d)}, "size": len(d)}
                for n, d in files.items()
            ]
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": "pkg", "files": entries}).encode()
            return Answer(body=body, headers={"Content-Type": JSON})
        name = unquote(path.removeprefix("/files/"))
        if name in files:
            return Answer(body=files[name], headers={"Content-Type": "application/octet-stream"})
        return Answer(status=404, body=b"no such file\n")


@pytest.mark.parametrize("html", [False, True], ids=["json", "html"])
@pytest.mark.parametrize("route", ["mirror", "mount"])
def test_upstream_names_of_sidecars_never_reach_nestegg_s_own_files(
    make_mirror: MirrorFactory,
    http: requests.Session,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    route: str,
    html: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger="nestegg_core.simple.parse")
    hostile = SidecarUpstream(tmp_path / "dists", html=html)
    with hostile.server:
        if route == "mirror":
            mirror = make_mirror(index_url=hostile.server.index_url)
            index_url, store = mirror.index_url, mirror.repository.store
        else:
            mirror = make_mirror()
            index_url = UpstreamMounts(mirror).index_url(hostile.server.index_url)
            store = CacheStore(mirror.config.nestegg_dir, hostile.server.index_url)
        files_url = index_url.removesuffix("simple/") + "files/pkg/"

        def ask_every_sidecar_name() -> None:
            own = {p.name: p.read_bytes() for p in (store.files / "pkg").glob("*") if p.is_file()}
            own.update({p.name: p.read_bytes() for p in (store.files / "pkg").glob(".*") if p.is_file()})
            for name in SIDECAR_NAMES:
                answer = http.get(files_url + quote(name))
                if name == f"{WHEEL}.metadata" and answer.status_code == 200:
                    # the PEP 658 metadata of the listed wheel, taken from it: never the upstream's file
                    assert answer.content == hostile.metadata, name
                    continue
                assert answer.status_code == 404, (name, answer.status_code, answer.content[:200])
                assert answer.content not in (hostile.hostile[name], *own.values()), name

        ask_every_sidecar_name()  # before anything is cached
        for name, data in hostile.real.items():
            assert sha256(http.get(files_url + name).content) == sha256(data)
        ask_every_sidecar_name()  # with records, metadata and the change marker on disk
        for accept in (JSON, "text/html"):
            page = http.get(index_url + "pkg/", headers={"Accept": accept})
            assert page.status_code == 200
            for name in SIDECAR_NAMES:
                assert quote(name) not in page.text, (accept, name)
                assert json.dumps(name) not in page.text, (accept, name)
        listed = http.get(index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
        assert {f["filename"]: f["hashes"]["sha256"] for f in listed} == {
            name: sha256(data) for name, data in hostile.real.items()
        }
        # the upstream was never asked for one, and the page said why once, at debug level
        assert not [path for _, path, _ in hostile.server.seen if "/files/" in path and
                    unquote(path.rsplit("/", 1)[-1]) not in hostile.real]  # fmt: skip
        left = [
            r for r in caplog.records if r.name == "nestegg_core.simple.parse" and "left" in r.getMessage()
        ]
        assert len(left) == 1, [r.getMessage() for r in left]
        assert left[0].levelno == logging.DEBUG
        assert verify_cache(store.files) == 2


@pytest.mark.parametrize(
    "upload_time",
    [
        "0001-01-01T00:00:00+01:00",  # no time in UTC: before its first day
        "9999-12-31T23:59:59-01:00",  # after its last
        "2024-06-01T00:00:00+25:00",
        "2024-06-01T00:00:00Z" + "9" * 1000,
        "not a time at all",
    ],
    ids=["year-1-east", "year-9999-west", "offset-25h", "long", "garbage"],
)
def test_odd_upload_times_leave_pip_served(
    make_mirror: MirrorFactory, tmp_path: Path, upload_time: str
) -> None:
    # pip's file requests date what it takes, and its next pages are guessed by that date
    wheels = {}
    for version in ("1.0", "2.0"):
        for name in ("pkg", "other"):
            path = make_wheel(PackageSpec(name=name, version=version), tmp_path / "dists")
            wheels[path.name] = path.read_bytes()

    def answer(_method: str, path: str) -> Answer:
        name = path.removeprefix("/simple/").strip("/")
        if path.startswith("/simple/"):
            entries = [
                {
                    "filename": f,
                    "url": f"/files/{f}",
                    "hashes": {"sha256": sha256(d)},
                    "upload-time": upload_time,
                }
                for f, d in wheels.items()
                if f.startswith(f"{name}-")
            ]
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": entries}).encode()
            return Answer(body=body, headers={"Content-Type": JSON})
        data = wheels.get(path.removeprefix("/files/"))
        return Answer(status=404) if data is None else Answer(body=data)

    with RawUpstream(answer) as hostile:
        mirror = make_mirror(index_url=hostile.index_url)
        got = tmp_path / "got"
        pip_download(mirror.index_url, got, "pkg==1.0", "other==1.0")
        pip_download(mirror.index_url, got, "pkg", "other")
    assert {p.name: p.read_bytes() for p in got.iterdir()} == wheels


def test_a_record_answers_only_for_its_own_file(tmp_path: Path) -> None:
    # a record written by hand, by an older release for a name now refused, or planted
    store = CacheStore(tmp_path / "nest", "http://upstream.invalid/simple/")
    folder = store.files / "pkg"
    folder.mkdir(parents=True)
    (folder / SDIST).write_bytes(b"bytes")
    (folder / f"{SDIST}.json").write_text(json.dumps({"filename": "other-1.0.tar.gz", "hashes": {}}))
    (folder / f"{SDIST}.json.json").write_text(json.dumps({"filename": f"{SDIST}.json", "hashes": {}}))
    assert store.read_record(NormalizedName("pkg"), SDIST) is None
    assert store.kept_files(NormalizedName("pkg")) == []


def test_a_request_for_a_private_file_s_sidecar_is_a_404(
    mirror: Mirror, http: requests.Session, tmp_path: Path
) -> None:
    wheel = make_wheel(PackageSpec(name="secret-pkg", version="1.0"), tmp_path / "dists")
    mirror.repository.private.add(wheel)
    folder = mirror.repository.private.root / "secret-pkg"
    base = f"{mirror.url}/files/secret-pkg/"
    assert http.get(base + wheel.name).content == wheel.read_bytes()
    assert http.get(base + wheel.name + ".metadata").content == wheel_metadata(wheel)
    own = {p.read_bytes() for p in folder.iterdir()} - {wheel.read_bytes(), wheel_metadata(wheel)}
    for name in (f"{wheel.name}.json", f"{wheel.name}.json.metadata", ".generation", ".locks"):
        answer = http.get(base + quote(name))
        assert answer.status_code == 404, name
        assert answer.content not in own


# links planted in a shared nest ---------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """What a link planted in the nest points at: a sentinel file, a folder, and in it what a cached
    project's folder holds (a file and its record), so that a followed link would find work."""
    folder = tmp_path / "outside"
    (folder / "elsewhere").mkdir(parents=True)
    (folder / "secret.txt").write_bytes(SENTINEL)
    (folder / "elsewhere" / WHEEL).write_bytes(SENTINEL)
    (folder / "elsewhere" / f"{WHEEL}.json").write_text(json.dumps({"filename": WHEEL, "hashes": {}}))
    (folder / "elsewhere" / f"{WHEEL}.metadata").write_bytes(SENTINEL)
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under ``folder`` (itself too): bytes and mtime, to see any write."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in sorted([folder, *folder.rglob("*")])
    }


def plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def warned_about(caplog: pytest.LogCaptureFixture, path: Path) -> bool:
    return any(r.levelno >= logging.WARNING and str(path) in r.getMessage() for r in caplog.records)


#: where a link may be planted before a file is downloaded, relative to the mirror's cache of one
#: upstream (``{key}`` is its folder), and what it points at
DOWNLOAD_LINKS = {
    "project folder": ("mirror/{key}/files/pkg", "elsewhere"),
    "files folder": ("mirror/{key}/files", "elsewhere"),
    "cache folder": ("mirror/{key}", "elsewhere"),
    "lock folder": ("locks/{key}/pkg", "elsewhere"),
    "part file": ("mirror/{key}/files/pkg/.{wheel}.planted.part", "secret.txt"),
    "record": ("mirror/{key}/files/pkg/{wheel}.json", "secret.txt"),
    "metadata": ("mirror/{key}/files/pkg/{wheel}.metadata", "secret.txt"),
    "change marker": ("mirror/{key}/files/pkg/.changed", "secret.txt"),
    "dangling file": ("mirror/{key}/files/pkg/{wheel}", "nothing-here"),
}


@pytest.mark.parametrize("where", list(DOWNLOAD_LINKS))
def test_a_download_never_writes_through_a_link_in_the_nest(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    outside: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    wheel = upstream.add("pkg", "1.0", sdist=False)[0].filename
    real = (upstream.mirror.repository.private.root / "pkg" / wheel).read_bytes()
    metadata = wheel_metadata(upstream.mirror.repository.private.root / "pkg" / wheel)
    faults.html_only = True  # no size on the page: the mirror learns it, and marks the page changed
    mirror = make_mirror(ttl=0)
    store = mirror.repository.store
    assert http.get(mirror.index_url + "pkg/").status_code == 200
    relative, target = DOWNLOAD_LINKS[where]
    link = store.root / relative.format(key=store.key, wheel=wheel)
    plant(link, outside / target)
    if where == "part file":  # its name is known in advance (pid, a counter): as if guessed
        monkeypatch.setattr(CacheStore, "part_path", lambda _self, _name, _filename: link)
    before = snapshot(outside)
    answer = http.get(f"{mirror.url}/files/pkg/{wheel}")
    fetched = http.get(f"{mirror.url}/files/pkg/{wheel}.metadata")
    assert snapshot(outside) == before  # nothing written, made, touched or removed there
    assert SENTINEL not in answer.content
    assert SENTINEL not in fetched.content
    if where in ("project folder", "files folder", "cache folder", "lock folder", "part file"):
        # refused: one line that names the link, in the log and to the client
        assert answer.status_code == 404, answer.text
        assert answer.text.count("\n") == 1
        assert warned_about(caplog, link), [r.getMessage() for r in caplog.records]
    elif where == "metadata":  # a linked file is never served, nor replaced by this download
        assert answer.content == real
        assert fetched.status_code == 404
        assert warned_about(caplog, link), [r.getMessage() for r in caplog.records]
    else:  # a link in the place of a file this download writes is replaced, never written through
        assert answer.content == real
        assert fetched.content == metadata
        assert not link.is_symlink()


@pytest.mark.parametrize("sendfile", [None, "x-accel-redirect"])
def test_a_linked_file_or_folder_is_never_served(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    http: requests.Session,
    outside: Path,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    sendfile: str | None,
) -> None:
    wheel = upstream.add("pkg", "1.0", sdist=False)[0].filename
    upstream.add("other", "1.0", sdist=False)
    mirror = make_mirror(sendfile=sendfile)
    store, private = mirror.repository.store, mirror.repository.private
    for name in ("pkg", "other"):
        http.get(f"{mirror.index_url}{name}/").raise_for_status()
    http.get(f"{mirror.url}/files/pkg/{wheel}").raise_for_status()
    http.get(f"{mirror.url}/files/pkg/{wheel}.metadata").raise_for_status()
    mine = make_wheel(PackageSpec(name="mine", version="1.0"), tmp_path / "dists")
    private.add(mine)
    theirs = make_wheel(PackageSpec(name="theirs", version="1.0"), tmp_path / "dists")
    private.add(theirs)
    # a cached file and its metadata, a private file, a cached project's and a private project's folder
    other = "other-1.0-py3-none-any.whl"
    (outside / "elsewhere" / other).write_bytes(SENTINEL)
    (outside / "elsewhere" / f"{other}.json").write_text(json.dumps({"filename": other, "hashes": {}}))
    links = {
        f"pkg/{wheel}": (store.file_path(NormalizedName("pkg"), wheel), outside / "secret.txt"),
        f"pkg/{wheel}.metadata": (store.metadata_path(NormalizedName("pkg"), wheel), outside / "secret.txt"),
        f"mine/{mine.name}": (private.root / "mine" / mine.name, outside / "secret.txt"),
        f"other/{other}": (store.files / "other", outside / "elsewhere"),
        f"theirs/{theirs.name}": (private.root / "theirs", outside / "elsewhere"),
    }
    for link, target in links.values():
        plant(link, target)
    for path, (link, _) in links.items():
        answer = http.get(f"{mirror.url}/files/{path}")
        assert answer.status_code == 404, (path, answer.status_code, answer.headers)
        assert SENTINEL not in answer.content
        assert "X-Accel-Redirect" not in answer.headers
        assert warned_about(caplog, link), (path, [r.getMessage() for r in caplog.records])


@pytest.mark.parametrize("linked", ["state", "rendered"])
def test_a_linked_state_file_or_rendered_page_is_a_cache_miss(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session, outside: Path, linked: str
) -> None:
    upstream.add("pkg", "1.0")
    # one public URL: both processes serve the same rendering, whatever their ports
    mirror = make_mirror(public_url=PUBLIC)
    store = mirror.repository.store
    plain = {"Accept": JSON, "Accept-Encoding": "identity"}  # the rendering forged below, not its gzip
    first = http.get(mirror.index_url + "pkg/", headers=plain)
    assert first.status_code == 200
    # copies of the state and its rendering, each changed to list another file, linked in their place
    state = store.page_path(NormalizedName("pkg"))
    forged_state = outside / "state.json"
    forged_state.write_bytes(state.read_bytes().replace(b"pkg-1.0.tar.gz", b"pkg-6.6.tar.gz"))
    rendered = mirror.repository.pages.path(NormalizedName("pkg"), repository._kind(JSON, None, PUBLIC))
    assert rendered.is_file()
    forged_page = outside / "page.json"
    forged_page.write_bytes(rendered.read_bytes().replace(b"pkg-1.0.tar.gz", b"pkg-6.6.tar.gz"))
    before = snapshot(outside)
    for link, forged in {"state": [(state, forged_state)], "rendered": [(rendered, forged_page)]}[linked]:
        status = link.stat()
        plant(link, forged)
        # the link takes the real file's times, so that it looks unchanged to a stat
        os.utime(link, ns=(status.st_atime_ns, status.st_mtime_ns), follow_symlinks=False)
    # another process of the nest (nothing in memory) serves the page
    again = make_mirror(public_url=PUBLIC)
    answer = http.get(again.index_url + "pkg/", headers=plain)
    assert answer.status_code == 200
    assert "pkg-6.6" not in answer.text
    assert {f["filename"] for f in answer.json()["files"]} == {f["filename"] for f in first.json()["files"]}
    assert snapshot(outside) == before


def test_a_linked_folder_of_renderings_for_installers_is_never_read_nor_written(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session, outside: Path
) -> None:
    upstream.add("pkg", "1.0")
    mirror = make_mirror(compatible_only=True, public_url=PUBLIC)
    pip = {"Accept": JSON, "Accept-Encoding": "identity", "User-Agent": PIP_AGENT}
    first = http.get(mirror.index_url + "pkg/", headers=pip)
    assert first.status_code == 200
    # a copy of the renderings for pip, changed to list another file, linked in their folder's place
    folder = mirror.repository.pages.folder / "pkg.clients"
    # written once pip had its answer (``later``)
    wait_until(lambda: folder.is_dir() and any(folder.iterdir()), "pip's rendering written")
    forged = outside / "clients"
    shutil.copytree(folder, forged)
    for path in forged.iterdir():
        path.write_bytes(path.read_bytes().replace(b"pkg-1.0.tar.gz", b"pkg-6.6.tar.gz"))
    before = snapshot(outside)
    plant(folder, forged)
    # another process of the nest (nothing in memory) serves the page to pip, and would save it
    again = make_mirror(compatible_only=True, public_url=PUBLIC)
    answer = http.get(again.index_url + "pkg/", headers=pip)
    assert answer.status_code == 200
    assert "pkg-6.6" not in answer.text
    assert answer.json() == first.json()
    assert snapshot(outside) == before
    assert folder.is_symlink()


def test_prune_and_the_size_limit_never_stat_nor_remove_through_a_link(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session, outside: Path, tmp_path: Path
) -> None:
    records = upstream.add("pkg", "1.0")
    mirror = make_mirror()
    store = mirror.repository.store
    for record in records:
        http.get(f"{mirror.url}/files/pkg/{record.filename}").raise_for_status()
    big = outside / "big.bin"
    big.write_bytes(b"x" * 3_000_000)
    # a cached file whose record stays, a project folder, another upstream's cache, a stale temporary
    linked = "linked-1.0.tar.gz"
    plant(store.files / "pkg" / linked, big)
    (store.files / "pkg" / f"{linked}.json").write_text(json.dumps({"filename": linked, "hashes": {}}))
    plant(store.files / "evil", outside / "elsewhere")
    plant(store.root / "mirror" / "evil-00000000", outside)
    (outside / "files").mkdir()
    plant(outside / "files" / "pkg", outside / "elsewhere")
    stale = store.files / "pkg" / ".x.tmp"
    plant(stale, outside / "secret.txt")
    os.utime(stale, (0, 0), follow_symlinks=False)
    before = snapshot(outside)
    found = cached_files(store.root)
    assert sorted(f.filename for f in found) == sorted(r.filename for r in records)
    assert sum(f.size for f in found) < 1_000_000  # the linked big file is neither counted nor followed
    limit = SizeLimit(store.root, 1)
    limit.cached(records[0])
    limit.wait(30)
    assert cached_files(store.root) == []
    result = prune(store.root, max_size=0, older_than=0)
    assert result.removed == ()
    assert snapshot(outside) == before
    assert (store.files / "pkg" / linked).is_symlink()  # links are left alone, not removed


def test_export_copies_nothing_through_a_link(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session, outside: Path, tmp_path: Path
) -> None:
    records = upstream.add("pkg", "1.0")
    mirror = make_mirror()
    store = mirror.repository.store
    for record in records:
        http.get(f"{mirror.url}/files/pkg/{record.filename}").raise_for_status()
    wheel = records[0].filename
    plant(store.file_path(NormalizedName("pkg"), wheel), outside / "secret.txt")
    plant(store.metadata_path(NormalizedName("pkg"), wheel), outside / "secret.txt")
    plant(store.files / "evil", outside / "elsewhere")
    before = snapshot(outside)
    result = export(mirror.config, tmp_path / "exported")
    assert snapshot(outside) == before
    assert sorted(result.projects) == ["pkg"]
    assert [d.filename for d in result.projects[NormalizedName("pkg")]] == [records[1].filename]
    for path in (tmp_path / "exported").rglob("*"):
        assert path.is_dir() or SENTINEL not in path.read_bytes(), path


def test_an_upload_never_writes_through_a_link_in_the_nest(
    server: Mirror, outside: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nest = server.config.nestegg_dir
    plant(nest / "tmp" / "uploads", outside / "elsewhere")
    plant(nest / "private" / "evil", outside / "elsewhere")
    before = snapshot(outside)
    for name in ("evil", "good"):
        path = make_sdist(PackageSpec(name=name, version="1.0"), tmp_path / "dists")
        answer = upload(server, path)
        assert answer.status_code in (403, 404), answer.text  # refused, one line
        assert answer.text.count("\n") == 1
    assert snapshot(outside) == before
    assert warned_about(caplog, nest / "tmp" / "uploads")


# slow and vanishing clients -------------------------------------------------------------------

#: what "answers in milliseconds" allows on a loaded machine; starved, it is never answered at all
QUICK_MS = 1000


@pytest.fixture
def big_file(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session
) -> tuple[Mirror, str]:
    """A mirror and the path of a 5 MiB file it has cached."""
    [wheel] = upstream.add("big", "1.0", sdist=False, payload_size=5 * 1024 * 1024)
    mirror = make_mirror()
    path = f"/files/big/{wheel.filename}"
    http.get(mirror.url + path).raise_for_status()
    return mirror, path


def test_slow_readers_of_ranges_hold_no_worker(big_file: tuple[Mirror, str]) -> None:
    mirror, path = big_file
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-\r\n\r\n".encode()
    clients = never_reading(mirror.port, request, 20)
    try:
        channels = mirror._server.active_channels
        # every answer is queued, sent from the event loop as the client reads: no worker waits
        wait_until(
            lambda: (
                sum(1 for c in list(channels.values()) if c.total_outbufs_len) == 20
                and busy_workers(mirror._server) == 0
            ),
            "20 answers queued and no worker busy",
        )
        assert health_ms(mirror.port) < QUICK_MS
    finally:
        for client in clients:
            client.close()


def test_pipelined_slow_readers_are_cut_off_after_the_send_timeout(
    big_file: tuple[Mirror, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker waits for a client to take the first answer before it starts the second; not
    for ever."""
    monkeypatch.setattr(_waitress, "SEND_TIMEOUT", 1.0)
    mirror, path = big_file
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    clients = never_reading(mirror.port, request * 2, 20)
    try:
        wait_until(lambda: busy_workers(mirror._server) >= 20, "20 workers waiting on their clients")
        assert health_ms(mirror.port) < QUICK_MS  # beside them
        wait_until(lambda: busy_workers(mirror._server) == 0, "the workers let go", timeout=15)
        assert all(closed_by_server(client) for client in clients)
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["queued", "worker-waits"])
def test_clients_that_take_nothing_of_their_answers_are_closed_after_the_send_timeout(
    big_file: tuple[Mirror, str], monkeypatch: pytest.MonkeyPatch, pipelined: bool
) -> None:
    """A cached file is sent from the event loop as the client takes it, and a client that never
    does held its connection, and a file descriptor, for good: 260 such made every other request
    a 503 at a limit of 512 open files. Closed from the event loop, without a byte read."""
    monkeypatch.setattr(_waitress, "SEND_TIMEOUT", 1.0)
    monkeypatch.setattr(serving, "CLEANUP_INTERVAL", 1)
    mirror, path = big_file
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    clients = never_reading(mirror.port, request * (2 if pipelined else 1), 10)
    try:
        channels = mirror._server.active_channels

        def held() -> int:  # connections with an answer not all sent (the fixture's own is idle)
            return sum(1 for channel in list(channels.values()) if channel.total_outbufs_len)

        wait_until(lambda: held() >= 10, "10 answers held")
        wait_until(lambda: held() == 0, "the connections closed", timeout=15)
        assert all(closed_by_server(client) for client in clients)
        assert health_ms(mirror.port) < QUICK_MS
    finally:
        for client in clients:
            client.close()


def closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed ``client``'s connection (what it had sent is read first)."""
    received = 0
    try:
        while received < 64 * 1024 * 1024:  # far more than any answer here
            chunk = client.recv(1 << 20)
            if not chunk:
                return True
            received += len(chunk)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def read_answer(client: socket.socket) -> bytes:
    """One whole answer with a Content-Length, however the network cut it (its head and body
    may come in two reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while found is not None and len(body) < int(found.group(1)):
        chunk = client.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_idle_connections_at_the_limit_make_room_for_a_new_client(
    make_mirror: MirrorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections that send nothing, as many as the server takes: another client is answered
    within seconds (waitress stopped accepting at the limit until they timed out, 300 s), and
    the connections closed are those idle longest."""
    monkeypatch.setattr(serving, "CONNECTION_LIMIT", 40)
    monkeypatch.setattr(serving, "CLEANUP_INTERVAL", 1)
    mirror = make_mirror()
    server = mirror._server
    idle = []
    try:
        for _ in range(37):  # with the listener and the trigger, 39 of its 40 places
            idle.append(socket.create_connection(("127.0.0.1", mirror.port), timeout=10))
        wait_until(lambda: len(server.active_channels) == 37, "the idle connections accepted")
        recent = socket.create_connection(("127.0.0.1", mirror.port), timeout=10)
        idle.append(recent)
        recent.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(recent).startswith(b"HTTP/1.1 200 ")  # the last one asked something
        for _ in range(10):  # more than its places: the server stops accepting
            idle.append(socket.create_connection(("127.0.0.1", mirror.port), timeout=10))
        started = time.monotonic()
        assert health_ms(mirror.port, timeout=30) < 30_000
        assert time.monotonic() - started < 10  # a look every second, not the idle timeout
        recent.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(recent).startswith(b"HTTP/1.1 200 ")  # longest idle went first
        assert sum(closed_by_server(client) for client in idle[:10]) == 10
    finally:
        for client in idle:
            client.close()


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(
    make_mirror: MirrorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that is never idle, sending its head a byte at a time, would hold its connection
    (and so a place of the connection limit) for ever."""
    monkeypatch.setattr(serving, "HEAD_TIMEOUT", 1.0)
    monkeypatch.setattr(serving, "CLEANUP_INTERVAL", 1)
    mirror = make_mirror()
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as client:
        client.sendall(b"GET /health HTTP/1.1\r\n")
        deadline = time.monotonic() + 15
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                client.sendall(b"X")
            except OSError:  # reset: the server closed it
                closed = True
                break
            readable, _, _ = select.select([client], [], [], 0.2)
            if readable:
                closed = closed_by_server(client)
        assert closed, "the connection was held open"
        assert time.monotonic() < deadline - 10  # within a few seconds of HEAD_TIMEOUT


@pytest.mark.parametrize("rate", [20, 4000], ids=["drips", "steady"])
def test_a_request_body_slower_than_the_least_rate_is_cut_off(
    make_mirror: MirrorFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, rate: int
) -> None:
    """A body of an allowed size sent a byte at a time held its connection, and a file
    descriptor: 245 such took every descriptor a process had. One at the least rate is not cut."""
    monkeypatch.setattr(serving, "HEAD_TIMEOUT", 1.0)
    monkeypatch.setattr(serving, "CLEANUP_INTERVAL", 1)
    monkeypatch.setattr(_waitress, "MIN_BODY_RATE", 1000)
    mirror = make_mirror()
    size = 12_000  # at 4,000 bytes a second: 3 s, within 1 s + 12 s
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as client:
        client.sendall(f"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        sent, closed = 0, False
        started = time.monotonic()
        while sent < size and time.monotonic() < started + 15:
            try:
                client.sendall(b"x" * (rate // 20))
            except OSError:  # reset: the server closed it
                closed = True
                break
            sent += rate // 20
            readable, _, _ = select.select([client], [], [], 0.05)
            if readable:
                try:
                    closed = client.recv(1, socket.MSG_PEEK) == b""  # peeked: an answer stays
                except OSError:  # reset
                    closed = True
                if closed:
                    break
        if rate == 20:
            assert closed, "the connection was held open"
            assert time.monotonic() < started + 6  # within a few seconds of HEAD_TIMEOUT
            assert "its request's body came at less than 1000 bytes a second" in caplog.text
        else:
            assert not closed
            assert read_head(client).startswith("http/1.1 "), "the request was answered"


class _NoDescriptorLeft:
    """A listening socket whose ``accept`` fails as with no file descriptor left, until ``until``."""

    def __init__(self, sock: socket.socket, until: float) -> None:
        self._sock, self.until, self.tries = sock, until, 0

    def accept(self) -> tuple[socket.socket, Any]:
        if time.monotonic() < self.until:
            self.tries += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_with_no_file_descriptor_left_the_server_pauses_and_says_so_once(
    make_mirror: MirrorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """waitress tried accept() again at once: a core at 100% and a traceback logged each time."""
    mirror = make_mirror()
    listener: Any = mirror._server
    fake = _NoDescriptorLeft(listener.socket, time.monotonic() + 2.0)
    listener.socket = fake
    try:
        with caplog.at_level(logging.WARNING):
            waiting = socket.create_connection(("127.0.0.1", mirror.port), timeout=10)  # in the backlog
            with waiting:
                waiting.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_head(waiting).startswith("http/1.1 200")  # accepted once it could be
    finally:
        listener.socket = fake._sock
    assert 1 <= fake.tries <= 8, fake.tries  # a try every ACCEPT_PAUSE, not thousands
    said = [r for r in caplog.records if "no file descriptor left" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert "accept() threw" not in caplog.text


def test_readers_of_a_download_stop_once_their_clients_went_away(
    make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    """300 requests for a file the upstream holds back, each connection closed once sent."""
    trickle = Trickle()
    with PrivateIndex(tmp_path / "slow", middleware=trickle) as slow:
        [wheel] = slow.add("held", "1.0", sdist=False, payload_size=200_000)
        path = f"/files/held/{wheel.filename}"
        trickle.paths.add(path)
        mirror = make_mirror(index_url=slow.index_url)
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            for _ in range(300):
                with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as client:
                    client.sendall(request)
            assert trickle.holding.wait(10)
            # each reader sees its client gone within about a second, long before the file comes
            wait_until(lambda: busy_workers(mirror._server) == 0, "the readers to stop", timeout=10)
            assert health_ms(mirror.port) < QUICK_MS
        finally:
            trickle.release.set()


# downloads without bound, loops of mirrors (issue 20, second round) -------------------------------


class DrippingIndex:
    """An index of project ``drip``: ``count`` files of ``SIZE`` bytes, each sent a piece every
    20 ms (for hours) until :attr:`stop`; :attr:`sending` holds those being sent now."""

    SIZE = 64 << 20

    def __init__(self, count: int, *, wheels: bool = False) -> None:
        # wheels are of projects of their own (drip0, drip1...), with their PEP 658 metadata,
        # which is sent at once
        self.wheels = wheels
        pattern = "drip{}-1.0-py3-none-any.whl" if wheels else "drip-1.{}.tar.gz"
        self.filenames = [pattern.format(i) for i in range(count)]
        self.stop = threading.Event()
        self.sending: set[str] = set()
        self._lock = threading.Lock()
        self.server = RawUpstream(self.answer)

    def __enter__(self) -> DrippingIndex:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.__exit__(*exc)

    def answer(self, method: str, path: str) -> Answer:  # noqa: ARG002
        if path.startswith("/simple/drip"):
            name = path.split("/")[2]
            url = self.server.url
            files = [
                {"filename": f, "url": url(f"/files/{f}"), "size": self.SIZE, "core-metadata": self.wheels}
                for f in self.filenames
                if f.startswith(f"{name}-")
            ]
            page = {"meta": {"api-version": "1.1"}, "name": name, "files": files}
            return Answer(body=json.dumps(page).encode(), headers={"Content-Type": JSON})
        filename = path.rsplit("/", 1)[-1]
        if filename.endswith(".metadata"):
            name = filename.split("-")[0]
            return Answer(body=f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode())
        return Answer(pieces=lambda: self._drip(filename), length=self.SIZE)

    def _drip(self, filename: str) -> Iterator[bytes]:
        with self._lock:
            self.sending.add(filename)
        try:
            while not self.stop.wait(0.02):
                yield b"x" * 4096
        finally:  # a send failed (the mirror closed the connection), or the test ended
            with self._lock:
                self.sending.discard(filename)


def read_head(client: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        assert chunk, data
        data += chunk
    return data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()


def reading(port: int, path: str) -> socket.socket:
    """A client that asked for ``path`` and got the head of a 200; the caller closes it."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert read_head(client).startswith("http/1.1 200 ")
    except BaseException:
        client.close()
        raise
    return client


def answer_to(port: int, path: str) -> tuple[str, bytes]:
    """The head of the answer to a GET of ``path`` (lowercase), and the body its Content-Length
    gives (a 200 of a dripping file is not read on)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := client.recv(4096)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        text = head.decode("latin-1").lower()
        if not text.startswith("http/1.1 200 "):
            length = re.search(r"\r\ncontent-length: (\d+)", text)
            while length is not None and len(body) < int(length[1]) and (chunk := client.recv(4096)):
                body += chunk
    return text, body


def drip_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nestegg-download-drip")]


def test_a_head_of_a_file_not_cached_starts_no_download(make_mirror: MirrorFactory) -> None:
    """One connection asked HEAD of 350 files: 350 downloads of hours each, and the server ran
    out of file descriptors. A HEAD is answered from the page."""
    with DrippingIndex(50) as index:
        mirror = make_mirror(index_url=index.server.index_url)
        with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as client:
            for filename in index.filenames:
                client.sendall(f"HEAD /files/drip/{filename} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head = read_head(client)
                assert head.startswith("http/1.1 200 ")
                assert f"content-length: {DrippingIndex.SIZE}\r\n" in head
        assert [path for _, path, _ in index.server.seen] == ["/simple/drip/"]
        assert not drip_threads()
        assert not list((mirror.repository.store.files / "drip").glob(".*.part"))


def test_downloads_past_the_limit_wait_briefly_then_are_503(make_mirror: MirrorFactory) -> None:
    with DrippingIndex(3) as index:
        mirror = make_mirror(index_url=index.server.index_url)
        downloads = mirror.repository.downloads
        downloads.slots.limit, downloads.slot_wait, downloads.abandon_after = 2, 0.5, 0.5
        first, second, third = (f"/files/drip/{filename}" for filename in index.filenames)
        clients = [reading(mirror.port, first), reading(mirror.port, second)]
        try:
            wait_until(lambda: len(index.sending) == 2, "two downloads")
            started = time.monotonic()
            head, body = answer_to(mirror.port, third)
            assert head.startswith("http/1.1 503 "), head
            assert time.monotonic() - started < 5
            assert "\r\nretry-after: 5\r\n" in head
            assert body.count(b"\n") == 1
            assert b"2 downloads are running, the most this server runs at once" in body
            # another reader of a running download takes no slot
            clients.append(reading(mirror.port, first))
            # a download whose readers all left is abandoned, and its slot is the next one's
            clients.pop(0).close()
            clients.pop().close()
            wait_until(lambda: index.filenames[0] not in index.sending, "the first download abandoned")
            clients.append(reading(mirror.port, third))
            wait_until(lambda: index.filenames[2] in index.sending, "the third download")
        finally:
            for client in clients:
                client.close()


def test_a_download_nobody_waits_for_is_abandoned(make_mirror: MirrorFactory) -> None:
    """Not left running for hours with its thread, upstream connection and part file."""
    with DrippingIndex(1) as index:
        mirror = make_mirror(index_url=index.server.index_url)
        mirror.repository.downloads.abandon_after = 0.5
        client = reading(mirror.port, f"/files/drip/{index.filenames[0]}")
        try:
            # a download with a reader is never cut, however long it takes
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                assert client.recv(65536)
            assert index.sending
        finally:
            client.close()
        wait_until(lambda: not index.sending, "the upstream connection closed")
        wait_until(lambda: not drip_threads(), "the download's thread gone")
        assert not list((mirror.repository.store.files / "drip").glob(".*.part"))
        assert mirror.repository.downloads.slots.running == 0


def test_a_download_under_way_ends_with_the_server_and_leaves_nothing(make_mirror: MirrorFactory) -> None:
    """A server's stop gives up the downloads still running and waits for their threads: no
    part file, thread or upstream connection is left, and nothing is written in the nest after
    the stop returns (a download finishing later filled a folder its user was removing)."""
    with DrippingIndex(1) as index:
        mirror = make_mirror(index_url=index.server.index_url)
        # its reader gone, the download would go on for this long
        mirror.repository.downloads.abandon_after = 60
        with reading(mirror.port, f"/files/drip/{index.filenames[0]}") as client:
            assert client.recv(65536)
        started = time.monotonic()
        mirror.stop()
        assert time.monotonic() - started < 5
        assert not drip_threads()
        assert not list((mirror.repository.store.files / "drip").glob(".*.part"))
        wait_until(lambda: not index.sending, "the upstream connection closed")


def test_downloads_ahead_of_pip_are_bounded_and_abandoned_when_nobody_asks(
    make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """pip's read of a wheel's metadata starts the wheel's download (``fetch_ahead``): a client that
    reads the metadata of many wheels and never asks for one, from an upstream that drips, holds
    at most ``AHEAD_AT_ONCE`` downloads, each for ``abandon_after`` seconds, and no client's slot."""
    with DrippingIndex(4, wheels=True) as index:
        mirror = make_mirror(index_url=index.server.index_url)
        downloads = mirror.repository.downloads
        # long enough that both are still running when the others fall due (ahead_after later)
        downloads.abandon_after = 2.0
        for number, filename in enumerate(index.filenames):
            answer = http.get(
                f"{mirror.url}/files/drip{number}/{filename}.metadata", headers={"User-Agent": PIP_AGENT}
            )
            assert answer.status_code == 200
            assert answer.text.startswith(f"Metadata-Version: 2.1\nName: drip{number}\n")
        wait_until(lambda: len(index.sending) == AHEAD_AT_ONCE, "the downloads ahead running")
        time.sleep(downloads.ahead_after)  # every one of them was due
        assert downloads.ahead_count == AHEAD_AT_ONCE
        assert set(index.sending) == set(index.filenames[:AHEAD_AT_ONCE])
        # a client's own request is served beside them
        client = reading(mirror.port, f"/files/drip3/{index.filenames[-1]}")
        try:
            wait_until(lambda: not set(index.sending) & set(index.filenames[:AHEAD_AT_ONCE]), "abandoned")
            assert index.filenames[-1] in index.sending  # the one a client reads goes on
        finally:
            client.close()
        wait_until(lambda: not index.sending, "the upstream connections closed")
        wait_until(lambda: not drip_threads(), "the downloads' threads gone")
        for number in range(len(index.filenames)):
            assert not list((mirror.repository.store.files / f"drip{number}").glob(".*.part"))
        assert downloads.slots.running == 0


def test_a_download_near_its_end_is_finished_for_the_cache(
    make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    trickle = Trickle()
    with PrivateIndex(tmp_path / "slow", middleware=trickle) as slow:
        [wheel] = slow.add("held", "1.0", sdist=False, payload_size=200_000)
        path = f"/files/held/{wheel.filename}"
        trickle.paths.add(path)
        mirror = make_mirror(index_url=slow.index_url)
        downloads = mirror.repository.downloads
        downloads.abandon_after = 0.0
        try:
            reading(mirror.port, path).close()
            assert trickle.holding.wait(10)
            (download,) = downloads._running.values()
            wait_until(lambda: download.readers == 0, "its reader gone")
        finally:
            trickle.release.set()
        # what is left of it is far less than a megabyte: it is finished, and cached
        wait_until(lambda: download.done, "the download done")
        assert verify_cache(mirror.repository.store.files, {wheel.filename: wheel.hashes["sha256"]}) == 1


def test_no_file_descriptor_left_is_a_503(
    make_mirror: MirrorFactory,
    pkg: dict[str, bytes],
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EMFILE (past the process's limit of open files) was a 500 and a traceback."""
    mirror = make_mirror()
    wheel, sdist = sorted(pkg)[::-1]

    def no_file_left(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    http.get(f"{mirror.url}/files/pkg/{sdist}").raise_for_status()  # cached
    with monkeypatch.context() as patched:
        patched.setattr(CacheStore, "create_part", no_file_left)  # a download's part file
        patched.setattr(mirror.repository, "open_served", no_file_left)  # a cached file
        for filename in (wheel, sdist):
            answer = http.get(f"{mirror.url}/files/pkg/{filename}")
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.text.count("\n") == 1
            assert "too many open files" in answer.text
    assert http.get(f"{mirror.url}/files/pkg/{wheel}").content == pkg[wheel]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class Republishing:
    """An index of project ``flip``: one file, re-published (new bytes, new sha256) by
    :meth:`republish`; the first publication's bytes are held after their first piece until
    :attr:`release`."""

    FILENAME = "flip-1.0.tar.gz"
    OLD, NEW = b"A" * 300_000, b"B" * 300_000

    def __init__(self) -> None:
        self.generation = 1
        self.release = threading.Event()
        self.server = RawUpstream(self.answer)

    def republish(self) -> None:
        self.generation = 2

    def answer(self, method: str, path: str) -> Answer:  # noqa: ARG002
        if path == "/simple/flip/":
            data = self.OLD if self.generation == 1 else self.NEW
            entry = {
                "filename": self.FILENAME,
                "url": self.server.url(f"/f{self.generation}/{self.FILENAME}"),
                "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
                "size": len(data),
            }
            page = {"meta": {"api-version": "1.1"}, "name": "flip", "files": [entry]}
            return Answer(body=json.dumps(page).encode(), headers={"Content-Type": JSON})
        if path.startswith("/f1/"):
            return Answer(pieces=self._held, length=len(self.OLD))
        return Answer(body=self.NEW)

    def _held(self) -> Iterator[bytes]:
        yield self.OLD[:1000]
        self.release.wait(30)
        yield self.OLD[1000:]


def test_a_client_given_the_new_hash_never_gets_the_old_bytes(
    make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """The upstream re-published a file while its download ran: a client given the new page was
    handed the old bytes (it joined the running download), and the old record then brought the
    old hash back onto the page (finding 12)."""
    index = Republishing()
    with index.server:
        mirror = make_mirror(index_url=index.server.index_url)
        page_url = f"{mirror.url}/simple/flip/"
        file_url = f"{mirror.url}/files/flip/{index.FILENAME}"
        new_sha256 = hashlib.sha256(index.NEW).hexdigest()

        def listed() -> str:
            page = http.get(page_url, headers={"Accept": JSON}).json()
            return str(page["files"][0]["hashes"]["sha256"])

        assert listed() == hashlib.sha256(index.OLD).hexdigest()
        old_reader = reading(mirror.port, f"/files/flip/{index.FILENAME}")
        try:
            index.republish()
            mirror.repository.mirror.refresh_all()
            assert listed() == new_sha256
            answers: list[requests.Response] = []
            asker = threading.Thread(target=lambda: answers.append(http.get(file_url, timeout=30)))
            asker.start()
            wait_until(lambda: len(mirror.repository.downloads._running) == 2, "a download of its own")
            index.release.set()
            asker.join(30)
            (answer,) = answers
            assert answer.status_code == 200
            assert answer.content == index.NEW
            # the old download, checked against the page it was started from, is not cached
            received = b""
            while chunk := old_reader.recv(65536):
                received += chunk
            assert index.OLD not in received
        finally:
            index.release.set()
            old_reader.close()
        assert listed() == new_sha256
        mirror.repository.mirror.refresh_all()
        assert listed() == new_sha256
        assert http.get(file_url).content == index.NEW


def test_a_file_another_download_cached_with_other_hashes_is_a_502(
    make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """As when another process, which does not know this page, cached the old publication: the
    download for the new hashes finds the old file in place, and does not hand it out."""
    index = Republishing()
    with index.server:
        mirror = make_mirror(index_url=index.server.index_url)
        mirror.repository.downloads.current = None
        file_url = f"{mirror.url}/files/flip/{index.FILENAME}"
        http.get(f"{mirror.url}/simple/flip/").raise_for_status()
        old_reader = reading(mirror.port, f"/files/flip/{index.FILENAME}")
        try:
            index.republish()
            mirror.repository.mirror.refresh_all()
            http.get(f"{mirror.url}/simple/flip/").raise_for_status()
            answers: list[requests.Response] = []
            asker = threading.Thread(target=lambda: answers.append(http.get(file_url, timeout=30)))
            asker.start()
            wait_until(lambda: len(mirror.repository.downloads._running) == 2, "a download of its own")
            index.release.set()
            asker.join(30)
        finally:
            index.release.set()
            old_reader.close()
        (answer,) = answers
        assert answer.status_code == 502
        assert answer.text.count("\n") == 1
        assert "re-published" in answer.text


def test_a_file_url_pointing_back_at_the_mirror_is_refused_not_followed(
    make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """pkg's file is at the mirror's /files/loop/..., loop's at its /files/pkg/...: one request
    went round, a download, a thread and a connection each hop, until the upstream timeout."""
    port = [0]

    def answer(method: str, path: str) -> Answer:
        name = path.split("/")[2] if path.startswith("/simple/") else ""
        if name not in ("pkg", "loop"):
            return Answer(status=404)
        other = "loop" if name == "pkg" else "pkg"
        url = f"http://127.0.0.1:{port[0]}/files/{other}/{other}-1.0.tar.gz"
        page = {
            "meta": {"api-version": "1.1"},
            "name": name,
            "files": [{"filename": f"{name}-1.0.tar.gz", "url": url}],
        }
        return Answer(body=json.dumps(page).encode(), headers={"Content-Type": JSON})

    with RawUpstream(answer) as index:
        mirror = make_mirror(index_url=index.index_url, timeout=5)
        port[0] = mirror.port
        started = time.monotonic()
        answered = http.get(f"{mirror.url}/files/pkg/pkg-1.0.tar.gz", timeout=30)
        assert answered.status_code == 502, answered.text
        assert "/files/loop/loop-1.0.tar.gz with HTTP 508" in answered.text
        assert time.monotonic() - started < 5
        assert mirror.repository.downloads.count == 1  # the loop's file was never fetched


def test_via_hops_are_passed_on_and_a_loop_of_mirrors_is_refused(mirror: Mirror, faults: Faults) -> None:
    """Each mirror adds itself to the Via of its upstream requests: a request that names this one,
    or more than eight mirrors, came round a loop (508)."""
    upstream_hops = [f"1.1 nestegg-{i:016x}" for i in range(9)]
    via = ", ".join(["1.0 proxy.example.invalid", *upstream_hops[:7]]).encode()
    status, _, body = raw_request(mirror.port, b"/simple/pkg/", b"Via: " + via + b"\r\n")
    assert status == 404, body  # asked of the upstream (a nestegg, which saw eight hops)
    (seen,) = [s for s in faults.seen if s.path == "/simple/pkg/"]
    assert seen.headers["via"] == ", ".join([*upstream_hops[:7], f"1.1 {mirror.repository.via_token}"])
    eight = ", ".join(upstream_hops[:8]).encode()
    assert raw_request(mirror.port, b"/health", b"Via: " + eight + b"\r\n")[0] == 200
    for refused in (", ".join(upstream_hops), f"1.0 proxy, 1.1 {mirror.repository.via_token} (nestegg)"):
        status, head, body = raw_request(mirror.port, b"/simple/pkg/", f"Via: {refused}\r\n".encode())
        assert status == 508, body
        assert head.startswith(b"HTTP/1.1 508 Loop Detected\r\n")
        assert body.count(b"\n") == 1
        assert b"loop" in body
    assert len([s for s in faults.seen if s.path == "/simple/pkg/"]) == 1


# uploads -----------------------------------------------------------------------------------


@pytest.fixture
def server(make_mirror: MirrorFactory, tmp_path: Path) -> Mirror:
    users = tmp_path / "users.txt"
    set_password(users, USER, PASSWORD)
    return make_mirror(credentials_file=users, max_upload_size=200_000)


def upload(
    server: Mirror, path: Path, *, filename: str | None = None, name: str | None = None
) -> requests.Response:
    data = path.read_bytes()
    project, version = path.name.split("-")[:2]
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name or project.replace("_", "-"),
        "version": version.removesuffix(".tar.gz"),
        "filetype": "bdist_wheel" if path.name.endswith(".whl") else "sdist",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    with requests.Session() as session:
        session.trust_env = False
        return session.post(
            server.url + "/legacy/",
            data=fields,
            files={"content": (filename or path.name, data, "application/octet-stream")},
            auth=(USER, PASSWORD),
            timeout=30,
        )


def every_file(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "filename",
    [
        "../../../evil-1.0.tar.gz",
        "/tmp/evil-1.0.tar.gz",  # noqa: S108 - a path a client must not choose
        "..\\..\\evil-1.0.tar.gz",
        "C:\\evil-1.0.tar.gz",
        "private/../../evil-1.0.tar.gz",
    ],
)
def test_upload_filenames_cannot_leave_the_private_store(
    server: Mirror, tmp_path: Path, filename: str
) -> None:
    path = make_sdist(PackageSpec(name="evil", version="1.0"), tmp_path / "dists")
    before = every_file(tmp_path)
    answer = upload(server, path, filename=filename)
    assert answer.status_code in (200, 400), answer.text
    created = every_file(tmp_path) - before
    private = server.repository.private.root.relative_to(tmp_path)
    # a file, if any, lands in the store under its plain name (a lock and the store's generation
    # beside); nothing elsewhere
    created.discard(str(private / ".generation"))
    assert all(Path(p).parent in (private / "evil", private / ".locks") for p in created), created
    if answer.status_code == 200:
        assert (server.repository.private.root / "evil" / "evil-1.0.tar.gz").read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "alias",
    ["PKG-1.0.tar.gz", "pkg-1.0.0.tar.gz", "pkg-01.0.tar.gz", "pkg-1.0.zip", "PKG-1.0-py3-none-any.whl"],
)
def test_a_respelled_filename_cannot_overwrite_a_release(
    server: Mirror, http: requests.Session, tmp_path: Path, alias: str
) -> None:
    make = make_wheel if alias.endswith(".whl") else make_sdist
    original = make(PackageSpec(name="pkg", version="1.0"), tmp_path / "original")
    other = make(PackageSpec(name="pkg", version="1.0", summary="other bytes"), tmp_path / "other")
    assert upload(server, original).status_code == 200
    answer = upload(server, other, filename=alias)
    assert answer.status_code == 400, answer.text
    assert "File already exists" in answer.text
    listed = http.get(server.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
    assert [f["filename"] for f in listed] == [original.name]
    assert http.get(f"{server.url}/files/pkg/{original.name}").content == original.read_bytes()
    # the very same bytes under another spelling change nothing either
    assert upload(server, original, filename=alias).status_code == 200
    assert len(http.get(server.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]) == 1


def test_refused_uploads_make_no_name_private(
    server: Mirror, upstream: PrivateIndex, http: requests.Session, tmp_path: Path
) -> None:
    upstream.add("victim", "1.0")
    dists = tmp_path / "dists"
    # a wheel of another project under the victim's name, a file over the limit, a wrong digest
    impostor = make_wheel(PackageSpec(name="evil", version="1.0"), dists)
    renamed = impostor.rename(impostor.with_name("victim-1.0-py3-none-any.whl"))
    large = make_sdist(PackageSpec(name="victim", version="2.0", payload_size=400_000), dists)
    assert upload(server, renamed).status_code == 400
    assert upload(server, large).status_code == 413
    answer = http.get(server.index_url + "victim/", headers={"Accept": JSON})
    assert answer.status_code == 200, answer.text
    assert [f["filename"] for f in answer.json()["files"]] == [
        "victim-1.0-py3-none-any.whl",
        "victim-1.0.tar.gz",
    ]
    assert not list((server.config.nestegg_dir / "tmp" / "uploads").glob("*"))


def test_an_upload_cut_off_midway_leaves_nothing(server: Mirror, tmp_path: Path) -> None:
    path = make_sdist(PackageSpec(name="cut", version="1.0", payload_size=100_000), tmp_path / "dists")
    boundary = b"xyzzy"
    body = (
        b'--xyzzy\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
        b'--xyzzy\r\nContent-Disposition: form-data; name="content"; filename="cut-1.0.tar.gz"\r\n\r\n'
        + path.read_bytes()
        + b"\r\n--xyzzy--\r\n"
    )
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    head = (
        b"POST /legacy/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + token + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])
    # the server notices the closed connection; give it a moment, then look
    for _ in range(100):
        if not list((server.config.nestegg_dir / "tmp" / "uploads").glob("*")):
            break
        time.sleep(0.05)
    assert not list((server.config.nestegg_dir / "tmp" / "uploads").glob("*"))
    assert not (server.repository.private.root / "cut").exists()


# bodies, before a byte of them is read --------------------------------------------------------


def head_only(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send only the head of a request; the answer, read until the server closes the connection
    (a server waiting for the body never answers: the socket times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:  # closed with a body left unread: after the answer
            assert data, "reset before any answer"
    first, _, rest = data.partition(b"\r\n")
    lines, _, body = rest.partition(b"\r\n\r\n")
    headers = {
        k.decode().lower(): v.decode() for k, _, v in (line.partition(b": ") for line in lines.split(b"\r\n"))
    }
    return int(first.split()[1]), headers | {"reason": first.decode().split(" ", 2)[2]}, body


HUGE = 300_000_000  # the Content-Length of a body that is never sent


def upload_head(auth: str | None, *, length: int = HUGE, extra: str = "") -> bytes:
    head = "POST /legacy/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xyzzy\r\n"
    if auth is not None:
        head += f"Authorization: {auth}\r\n"
    return f"{head}Content-Length: {length}\r\n{extra}\r\n".encode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "uploads need credentials: send a user and password (or __token__ and a token)"),
        (
            "Basic !!!not-base64",
            "uploads need credentials: send a user and password (or __token__ and a token)",
        ),
        ("Bearer abc", "uploads need credentials: send a user and password (or __token__ and a token)"),
        (basic(USER, "wrong"), "invalid credentials for user 'alice'"),
        (basic("mallory", PASSWORD), "invalid credentials for user 'mallory'"),
        (basic("__token__", "wrong"), NOT_A_TOKEN),
    ],
    ids=["none", "malformed", "not-basic", "wrong-password", "unknown-user", "wrong-token"],
)
def test_an_upload_without_good_credentials_is_refused_before_its_body(
    server: Mirror, monkeypatch: pytest.MonkeyPatch, auth: str | None, message: str
) -> None:
    checked_on: list[str] = []
    check = Credentials.user_of

    def recording(self: Credentials, user: str, password: str) -> str | None:
        checked_on.append(threading.current_thread().name)
        return check(self, user, password)

    monkeypatch.setattr(Credentials, "user_of", recording)
    status, headers, body = head_only(server.port, upload_head(auth))
    assert status == 403
    assert headers["reason"] == message  # as the upload handler says it (twine shows it)
    assert body == (message + "\n").encode()  # uv shows this
    assert headers["connection"] == "close"
    # a password is checked on a worker, never on the thread that reads every connection
    assert "nestegg-server" not in checked_on
    assert not list((server.config.nestegg_dir / "tmp").rglob("*.*"))


def test_a_chunked_upload_without_credentials_is_refused_before_its_body(server: Mirror) -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xyzzy\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 2000
    )
    status, headers, _ = head_only(server.port, head)
    assert status == 403
    assert headers["reason"].startswith("uploads need credentials")


def test_uploads_off_are_refused_before_the_body(make_mirror: MirrorFactory) -> None:
    status, headers, _ = head_only(make_mirror().port, upload_head(basic(USER, PASSWORD)))
    assert status == 403
    assert headers["reason"].startswith("uploads are disabled: set credentials_file")


def test_an_upload_over_the_limit_is_refused_before_its_body(server: Mirror) -> None:
    status, headers, _ = head_only(server.port, upload_head(basic(USER, PASSWORD)))
    assert status == 413
    assert headers["reason"] == (
        f"upload too large: {HUGE} bytes is over the limit of 200000 bytes (max_upload_size)"
    )


@pytest.mark.parametrize(
    "head",
    [
        b"POST /ci/trigger/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",
        b"POST /simple/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    ],
    ids=["ci-trigger", "post-elsewhere", "get"],
)
def test_other_requests_may_send_only_a_small_body(mirror: Mirror, head: bytes) -> None:
    status, headers, body = head_only(mirror.port, head)
    assert status == 413
    assert "over the limit of 65536 bytes" in body.decode()
    assert headers["connection"] == "close"


def test_a_chunked_body_is_cut_off_at_the_limit(mirror: Mirror) -> None:
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    head = b"POST /ci/trigger/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2
    status, _, body = head_only(mirror.port, head)
    assert status == 413
    assert b"over the limit of 65536 bytes" in body


@pytest.mark.parametrize("good", [True, False], ids=["good", "wrong"])
def test_expect_continue_waits_for_the_credentials_check(server: Mirror, tmp_path: Path, good: bool) -> None:
    path = make_sdist(PackageSpec(name="cont", version="1.0"), tmp_path / "dists")
    data = path.read_bytes()
    fields = {":action": "file_upload", "name": "cont", "version": "1.0", "filetype": "sdist"}
    body = b"".join(
        b'--xyzzy\r\nContent-Disposition: form-data; name="'
        + k.encode()
        + b'"\r\n\r\n'
        + v.encode()
        + b"\r\n"
        for k, v in fields.items()
    )
    body += (
        b'--xyzzy\r\nContent-Disposition: form-data; name="content"; filename="cont-1.0.tar.gz"\r\n\r\n'
        + data
        + b"\r\n--xyzzy--\r\n"
    )
    auth = basic(USER, PASSWORD if good else "wrong")
    head = upload_head(auth, length=len(body), extra="Expect: 100-continue\r\nConnection: close\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        first = sock.recv(65536)
        if good:
            assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
            assert (server.repository.private.root / "cont" / path.name).read_bytes() == data
        else:
            assert first.startswith(b"HTTP/1.1 403 invalid credentials for user 'alice'"), first[:300]


SMUGGLED = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("line", "fields", "body"),
    [
        ("POST /health HTTP/1.1", "Content-Length: 5\r\nTransfer-Encoding: chunked", "0\r\n\r\n"),
        ("POST /health HTTP/1.1", "Transfer-Encoding: chunked\r\nContent-Length: 0", "0\r\n\r\n"),
        ("POST /health HTTP/1.1", "content-length: 0\r\ntransfer-encoding: gzip, chunked", "0\r\n\r\n"),
        (
            "POST /health HTTP/1.0",
            "Connection: keep-alive\r\nContent-Length: 0\r\nTransfer-Encoding: chunked",
            "",
        ),
        ("GET /health HTTP/1.1", "Content-Length: 0\r\nTransfer-Encoding: chunked", "0\r\n\r\n"),
    ],
    ids=["cl-then-te", "te-then-cl", "lower-case-gzip", "http-1.0", "get"],
)
def test_content_length_with_transfer_encoding_is_refused_and_nothing_after_it_answered(
    mirror: Mirror, line: str, fields: str, body: str
) -> None:
    """RFC 9112, section 6.3: a front server that frames the request by the other header would
    pass the rest of it on as a request of its own."""
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as sock:
        sock.sendall(f"{line}\r\nHost: x\r\n{fields}\r\n\r\n{body}".encode() + SMUGGLED)
        data = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            data += chunk
    assert data.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), data[:300]
    assert data.count(b"HTTP/1.") == 1, data  # the request after it was never answered
    assert b"Content-Length and Transfer-Encoding" in data


@pytest.mark.parametrize(
    ("line", "fields", "body"),
    [
        ("POST /health HTTP/1.1", "Transfer-Encoding: chunked, chunked", "0\r\n\r\n0\r\n\r\n"),
        ("POST /health HTTP/1.1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "0\r\n\r\n"),
        ("POST /health HTTP/1.1", "transfer-encoding: Chunked,\tCHUNKED", "0\r\n\r\n"),
        ("POST /health HTTP/1.1", "Transfer-Encoding: chunked\r\n , chunked", "0\r\n\r\n"),  # folded
        ("GET /health HTTP/1.1", "Transfer-Encoding: chunked,chunked", "0\r\n\r\n"),
        ("POST /health HTTP/1.0", "Connection: keep-alive\r\nTransfer-Encoding: chunked", "0\r\n\r\n"),
    ],
    ids=["one-field", "two-fields", "case-and-tab", "folded", "get", "http-1.0"],
)
def test_a_body_chunked_twice_or_under_http_1_0_is_refused_and_nothing_after_it_answered(
    mirror: Mirror, line: str, fields: str, body: str
) -> None:
    """RFC 9112, section 6.1: chunked is applied once, and an HTTP/1.0 message with
    Transfer-Encoding has faulty framing; a front server may read either otherwise."""
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as sock:
        sock.sendall(f"{line}\r\nHost: x\r\n{fields}\r\n\r\n{body}".encode() + SMUGGLED)
        data = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            data += chunk
    assert data.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), data[:300]
    assert b'{"status": "ok"}' not in data, data  # the request after it was never answered
    assert b"Transfer-Encoding" in data


@pytest.mark.parametrize(
    "fields",
    [
        "Transfer-Encoding: chunked",
        "X-Note: transfer-encoding: chunked, chunked\r\nTransfer-Encoding: chunked",
    ],
)
def test_a_body_chunked_once_is_read(mirror: Mirror, fields: str) -> None:
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\n0\r\n\r\n".encode() + SMUGGLED)
        data = b""
        while data.count(b'{"status": "ok"}') < 2:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:300]


def test_a_content_length_too_long_for_a_number_is_400(mirror: Mirror) -> None:
    head = b"POST /legacy/ HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    status, _, body = head_only(mirror.port, head)
    assert status == 400
    assert b"Content-Length is invalid" in body


def test_read_auth_hides_private_names_from_the_root_index(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path
) -> None:
    users = tmp_path / "users.txt"
    set_password(users, USER, PASSWORD)
    mirror = make_mirror(credentials_file=users, private_read_auth=True)
    mirror.repository.private.add(make_wheel(PackageSpec(name="hidden-thing", version="1.0"), tmp_path / "d"))
    for accept in ("text/html", JSON):
        anonymous = http.get(mirror.index_url, headers={"Accept": accept})
        assert anonymous.status_code in (200, 401)
        assert "hidden-thing" not in anonymous.text
        known = http.get(mirror.index_url, headers={"Accept": accept}, auth=(USER, PASSWORD))
        assert known.status_code == 200
        assert "hidden-thing" in known.text


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The start of every password check (scrypt) made from now on."""
    calls: list[float] = []
    real = credentials_module._scrypt

    def counted(password: str, salt: bytes, *args: int, **kwargs: int) -> bytes:
        calls.append(time.monotonic())
        return real(password, salt, *args, **kwargs)

    monkeypatch.setattr(credentials_module, "_scrypt", counted)
    return calls


def test_wrong_credentials_sent_again_cost_no_second_check(tmp_path: Path, scrypt_calls: list[float]) -> None:
    users = tmp_path / "users.txt"
    set_password(users, USER, PASSWORD)
    credentials = Credentials(users)
    assert credentials.user_of(USER, PASSWORD) == USER
    attempts = [
        ("a wrong password", USER, "wrong", 1),
        ("the same again", USER, "wrong", 0),
        ("a user nobody is", "nobody", "pw", 1),  # as slow as a real check the first time
        ("the same again", "nobody", "pw", 0),
        ("the right one", USER, PASSWORD, 0),  # remembered before
    ]
    for what, user, password, cost in attempts:
        scrypt_calls.clear()
        assert credentials.user_of(user, password) == (USER if password == PASSWORD else None), what
        assert len(scrypt_calls) == cost, what
    for i in range(5000):  # made-up credentials never push out the right ones
        credentials._refused[f"{i}".encode()] = ""
    credentials.user_of("nobody", "another")
    scrypt_calls.clear()
    assert credentials.user_of(USER, PASSWORD) == USER
    assert scrypt_calls == []
    assert len(credentials._refused) <= 4096
    set_password(users, "nobody", "pw")  # the user's line changed: what it refused is checked again
    scrypt_calls.clear()
    assert credentials.user_of("nobody", "pw") == "nobody"
    assert len(scrypt_calls) == 1


def test_password_checks_run_one_at_a_time_and_a_request_that_waits_too_long_is_503(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "users.txt"
    set_password(users, USER, PASSWORD)
    running, most = [0], [0]
    lock = threading.Lock()
    real = credentials_module._scrypt

    def watched(password: str, salt: bytes, *args: int, **kwargs: int) -> bytes:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(password, salt, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(credentials_module, "_scrypt", watched)
    # eight checks in turn, on a loaded machine too
    monkeypatch.setattr(
        credentials_module, "CHECK_WAIT", 60.0
    )  # eight checks in turn, on a loaded machine too
    mirror = make_mirror(credentials_file=users, private_read_auth=True, threads=4)
    mirror.repository.private.add(make_wheel(PackageSpec(name="hidden-thing", version="1.0"), tmp_path / "d"))
    page = f"{mirror.url}/simple/hidden-thing/"

    def ask(i: int) -> int:
        with requests.Session() as session:
            return session.get(page, auth=(f"made-up-{i}", "x"), timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, range(8))) == [401] * 8
    assert most[0] == credentials_module.CHECKS_AT_ONCE == 1
    # a check that cannot have its turn in time is answered 503, which pip and uv retry
    monkeypatch.setattr(credentials_module, "CHECK_WAIT", 0.2)
    assert credentials_module._CHECKS.acquire(timeout=10)
    try:
        answer = http.get(page, auth=("made-up", "y"), timeout=10)
        assert (answer.status_code, answer.headers.get("Retry-After")) == (503, "1")
        assert "too many password checks" in answer.text
        status, headers, _ = head_only(mirror.port, upload_head(basic("made-up", "w")))  # an upload too
        assert (status, headers.get("retry-after")) == (503, "1")
        assert http.get(f"{mirror.url}/health", auth=("made-up", "z"), timeout=10).status_code == 200
    finally:
        credentials_module._CHECKS.release()
    assert http.get(page, auth=(USER, PASSWORD), timeout=10).status_code == 200


def test_credentials_are_checked_only_where_a_private_name_needs_them(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    http: requests.Session,
    tmp_path: Path,
    scrypt_calls: list[float],
) -> None:
    upstream.add("public-pkg", "1.0")
    users = tmp_path / "users.txt"
    set_password(users, USER, PASSWORD)
    mirror = make_mirror(credentials_file=users, private_read_auth=True)
    bogus = ("made-up", "credentials")
    scrypt_calls.clear()
    for path in (
        "/simple/",
        "/simple/public-pkg/",
        "/health",
        "/ui/",
        "/ui/?format=json",
        "/ui/project/public-pkg",
    ):
        assert http.get(mirror.url + path, auth=bogus).status_code == 200, path
    assert scrypt_calls == []  # nothing private to hide: no check
    mirror.repository.private.add(make_wheel(PackageSpec(name="hidden-thing", version="1.0"), tmp_path / "d"))
    assert "hidden-thing" not in http.get(mirror.index_url, auth=bogus).text
    assert len(scrypt_calls) == 1
    for path in ("/simple/", "/ui/", "/simple/hidden-thing/", "/health", "/simple/public-pkg/"):
        assert http.get(mirror.url + path, auth=bogus).status_code in (200, 401), path
    assert len(scrypt_calls) == 1  # the same wrong credentials are not checked again
    assert "hidden-thing" in http.get(mirror.index_url, auth=(USER, PASSWORD)).text


def test_the_root_index_is_made_once_per_change_however_many_names_were_asked(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name asked of an upstream that has it leaves a state file: 5,000 of them here."""
    mirror = make_mirror(offline=True)
    store = mirror.repository.store
    for i in range(5000):
        store.write_page(PageState(page=ProjectPage.build(f"n{i}x", ()), checked=time.time()))
    scans = [0]
    real = CacheStore.project_names

    def counted(self: CacheStore) -> Iterator[str]:
        scans[0] += 1
        return real(self)

    monkeypatch.setattr(CacheStore, "project_names", counted)
    first = http.get(mirror.index_url, headers={"Accept": JSON})
    assert len(first.json()["projects"]) == 5000
    assert scans[0] == 1
    etag = first.headers["ETag"]
    took = []
    for i in range(20):
        if i == 10:  # from now on past RECHECK every time: the folders are looked at, not scanned
            monkeypatch.setattr(repository, "RECHECK", 0.0)
        started = time.perf_counter()
        again = http.get(mirror.index_url, headers={"Accept": JSON, "If-None-Match": etag})
        took.append(time.perf_counter() - started)
        assert again.status_code == 304
        assert http.get(mirror.index_url, headers={"Accept": JSON}).content == first.content
        assert http.get(mirror.index_url).status_code == 200  # the HTML one, made once too
    assert scans[0] == 1  # a second within RECHECK and past it alike: nothing changed
    assert sorted(took)[10] < 0.05, took  # no scan, no rendering: a few ms even on a loaded machine
    # a change is seen at once: a page written (by any process of the nest), a private upload
    CacheStore(store.root, key=store.key).write_page(PageState(page=ProjectPage.build("new-one", ())))
    names = [p["name"] for p in http.get(mirror.index_url, headers={"Accept": JSON}).json()["projects"]]
    assert "new-one" in names
    assert scans[0] == 2
    mirror.repository.private.add(make_wheel(PackageSpec(name="mine", version="1.0"), tmp_path / "d"))
    assert "mine" in http.get(mirror.index_url).text
    # and a folder made by hand, which stamps no generation, within RECHECK
    (store.files / "by-hand").mkdir(parents=True)
    wait_until(lambda: "by-hand" in http.get(mirror.index_url).text, "the hand-made project listed")


# configuration and command line --------------------------------------------------------------

BAD_CONFIGS = [
    (b"nestegg: {port: '80'}", "nestegg.port"),
    (b"nestegg: {port: 70000}", "nestegg.port"),
    (b"nestegg: {port: true}", "nestegg.port"),
    (b"nestegg: {port: 1.5}", "nestegg.port"),
    (b"nestegg: {threads: 0}", "nestegg.threads"),
    (b"nestegg: {ttl: .nan}", "nestegg.ttl"),
    (b"nestegg: {ttl: -1}", "nestegg.ttl"),
    (b"nestegg: {timeout: .nan}", "nestegg.timeout"),
    (b"nestegg: {timeout: 0}", "nestegg.timeout"),
    (b"nestegg: {timeout: .inf}", "nestegg.timeout"),
    (b"nestegg: {page_deadline: .inf}", "nestegg.page_deadline"),
    (b"nestegg: {page_deadline: -5}", "nestegg.page_deadline"),
    (b"nestegg: {max_page_size: -1}", "nestegg.max_page_size"),
    (b"nestegg: {max_page_size: 1e999}", "nestegg.max_page_size"),
    (b"nestegg: {max_metadata_size: 16Q}", "nestegg.max_metadata_size"),
    (b"nestegg: {max_file_size: true}", "nestegg.max_file_size"),
    (b"nestegg: {unknown_key: 1}", "unknown key 'unknown_key'"),
    (b"nestegg: {port: 1}\nother: 2", "unknown key 'other'"),
    (b"nestegg: [1, 2]", "nestegg: expected a mapping"),
    (b"nestegg: 0", "nestegg: expected a mapping"),
    (b"nestegg: false", "nestegg: expected a mapping"),
    (b"nestegg: ''", "nestegg: expected a mapping"),
    (b"- nestegg", "expected a mapping"),
    (b"just a string", "expected a mapping"),
    (b"nestegg: {nestegg_dir: [a]}", "nestegg.nestegg_dir"),
    (b"nestegg: {nestegg_dir: null}", "nestegg.nestegg_dir"),
    (b"nestegg: {offline: 'yes please'}", "nestegg.offline"),
    (b"nestegg: {private_names: abc}", "nestegg.private_names"),
    (b"nestegg: {source_builds: {name: x}}", "nestegg.source_builds"),
    (b"nestegg: {source_builds: [{name: '../evil', repo_type: git, repo_url: x}]}", "source_builds[0].name"),
    (b"nestegg: {source_builds: [{name: x, repo_type: svn, repo_url: x}]}", "source_builds[0].repo_type"),
    (b"nestegg: {index_url: 'file:///etc/passwd'}", "nestegg.index_url"),
    (b"nestegg: {index_url: 'ftp://user:s3cr3t@host/simple/'}", "nestegg.index_url"),
    (b"nestegg:\n\tport: 1", "line"),
    (b"nestegg: {port: 1", "line"),
    (b"!!python/object/apply:os.system ['echo owned']", "config"),
    (b"nestegg: {port: \xff\xfe}", "UTF-8"),
    (b"\x00\x01\x02", "config"),
    (b"a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]", "unknown key"),
]


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))])
def test_bad_configs_are_one_line_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: bytes,
    expected: str,
) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_bytes(text)
    assert main(["--config", str(path), "--cache-dir", str(tmp_path / "nest"), "serve", "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "s3cr3t" not in err
    assert expected in err, err
    assert not (tmp_path / "owned").exists()


def _must_not_serve(self: Mirror) -> None:
    raise AssertionError(f"a bad configuration got as far as serving: {self.config}")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For ``main()``: never serve, and undo its logging setup (its handler writes to a stream
    that pytest closes after the test; later threads' log records would fail on it)."""
    root, waitress = logging.getLogger(), logging.getLogger("waitress")
    saved = (root.handlers[:], root.level, waitress.level)
    yield
    root.handlers[:], level, waitress_level = saved
    root.setLevel(level)
    waitress.setLevel(waitress_level)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--port", "99999"], "port"),
        (["serve", "--port", "-1"], "port"),
        (["serve", "--threads", "0"], "threads"),
        (["--index-url", "ftp://user:s3cr3t@host/simple/", "serve"], "--index-url"),
        (["--index-url", "https://tok3n-s3cr3t@/simple/", "serve"], "--index-url"),
        (["serve", "--host", "no such host.invalid", "--port", "0"], "cannot listen"),
        # packaging's message goes on with a caret under the fault
        (["export", "out", "--project", "foo>>1"], "'foo>>1' is not a project name or requirement: Expected"),
    ],
)
@pytest.mark.usefixtures("cli")
def test_bad_command_lines_are_one_line_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expected: str,
) -> None:
    monkeypatch.delenv("NESTEGG_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["--cache-dir", str(tmp_path / "nest"), *args]) == 2
    err = capsys.readouterr().err
    # log lines may come first (a warning for a public bind): the error is the last, and one line
    assert err.splitlines()[-1].startswith("error: "), err
    assert err.count("error: ") == 1, err
    assert expected in err.splitlines()[-1]
    assert "Traceback" not in err
    assert "s3cr3t" not in err


@pytest.mark.usefixtures("cli")
def test_a_cache_dir_that_is_a_file_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NESTEGG_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "plain-file").write_text("not a directory")
    args = ["--cache-dir", str(tmp_path / "plain-file"), "--index-url", "http://127.0.0.1:9/simple/"]
    assert main([*args, "serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "plain-file" in err


# safe defaults ----------------------------------------------------------------------------------


def test_loopback_unless_told_and_a_warning_for_a_public_bind(caplog: pytest.LogCaptureFixture) -> None:
    assert Config().host == "127.0.0.1"
    app = Mirror(Config(port=0, offline=True, index_url="http://127.0.0.1:9/")).app
    caplog.set_level(logging.WARNING, logger="nestegg_core.serve.server")
    server = make_server(app, Config(port=0))
    server.close()
    assert not caplog.records
    server = make_server(app, Config(host="0.0.0.0", port=0))  # noqa: S104 - the case under test
    server.close()
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "0.0.0.0" in record.getMessage()  # noqa: S104 - a string, not a bind
    assert "uploads are off" in record.getMessage()
    caplog.clear()
    with pytest.raises(NesteggError, match=r"cannot listen on 999\.1\.1\.1"):
        make_server(app, Config(host="999.1.1.1", port=0))
    assert not caplog.records  # no word of listening where it could not


SECRET = "s3cr3t-Pa55"  # noqa: S105 - the secret a test makes sure never shows
TOKEN = "tok3n-5ecret-XYZ"  # noqa: S105


@pytest.mark.parametrize("userinfo", [f"user:{SECRET}", TOKEN], ids=["password", "token"])
def test_upstream_credentials_never_reach_logs_pages_or_errors(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    userinfo: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    records = upstream.add("pkg", "1.0", payload_size=50_000) + upstream.add("pkg", "2.0")
    index_url = upstream.index_url.replace("http://", f"http://{userinfo}@")
    mirror = make_mirror(index_url=index_url, ttl=0, timeout=0.5)
    shown = [describe(mirror)]
    wheel, sdist, other, _ = (r.filename for r in records)
    for accept in (JSON, "text/html"):
        shown.append(http.get(mirror.index_url + "pkg/", headers={"Accept": accept}).text)
    shown.append(http.get(mirror.index_url).text)
    assert sha256(http.get(f"{mirror.url}/files/pkg/{wheel}").content) == records[0].hashes["sha256"]
    shown.append(http.get(f"{mirror.url}/files/pkg/{wheel}.metadata").text)
    shown.append(http.get(mirror.index_url + "nothing-here/").text)
    faults.corrupt.add(f"/files/pkg/{sdist}")
    try:
        corrupt = http.get(f"{mirror.url}/files/pkg/{sdist}")
    except requests.exceptions.RequestException:
        pass  # broken off: the check failed once the answer had begun
    else:  # the download was checked (and failed) before the answer began: a 502 that says so
        assert corrupt.status_code == 502
        shown.append(corrupt.text)
    faults.status = 503
    shown += [http.get(mirror.index_url + "other/").text, http.get(f"{mirror.url}/files/pkg/{other}").text]
    faults.status = None
    # garbage where a page should be, and an upstream that is gone
    garbage_page = Answer(body=b'{"files": [{"filename": 1}]}', headers={"Content-Type": JSON})
    with RawUpstream(lambda _method, _path: garbage_page) as garbage:
        bad = make_mirror(index_url=garbage.index_url.replace("http://", f"http://{userinfo}@"))
        shown.append(http.get(bad.index_url + "pkg/").text)
    leaks = ("5ecret", SECRET, TOKEN)
    for text in shown:
        assert not [leak for leak in leaks if leak in text], text
    for record in caplog.records:
        logged = record.getMessage() + (record.exc_text or "")
        assert not [leak for leak in leaks if leak in logged], logged
    # nor in the cache's state files (an export or a support bundle would carry them along)
    for path in mirror.repository.store.root.rglob("*.json"):
        text = path.read_text()
        assert not [leak for leak in leaks if leak in text], path


def test_the_ci_token_stays_out_of_the_config_repr() -> None:
    assert SECRET not in repr(Config(ci_token=f"token-{SECRET}"))
