"""Ranges of files not cached, and wheels' metadata, without whole downloads (issue 23)."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core.index import ranges as ranges_module
from nestegg_core.installers import installer_env
from nestegg_core.simple import clients
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.testing import find_uv
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory
from .loopback import Answer, RawUpstream, sha256, verify_cache
from .test_faults import JSON, TIMEOUT, assert_clear_error, cache

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
BIG = 3 * 1024 * 1024  # a wheel's payload: a whole download is easy to tell from a few ranges


def wheel_of(upstream: PrivateIndex, version: str = "1.0", **spec: object) -> tuple[str, bytes]:
    """A wheel of ``pkg`` published upstream: its filename and bytes."""
    (record,) = upstream.add("pkg", version, sdist=False, payload_size=BIG, **spec)  # type: ignore[arg-type]
    path = upstream.mirror.repository.private.file_path(NormalizedName("pkg"), record.filename)
    return record.filename, path.read_bytes()


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=-2000", -2000, None), ("bytes=0-99", 0, 100), ("bytes=1000000-1000999", 1000000, 1001000)],
)
def test_a_range_of_a_file_not_cached_is_passed_through_without_the_whole_file(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    header: str,
    start: int,
    end: int | None,
) -> None:
    filename, data = wheel_of(upstream)
    mirror = make_mirror()
    response = http.get(f"{mirror.url}/files/pkg/{filename}", headers={"Range": header}, timeout=30)
    assert response.status_code == 206
    expected = data[start:end]
    assert response.content == expected
    first, last = start % len(data), start % len(data) + len(expected) - 1
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    # one ranged request upstream, nothing downloaded whole, nothing cached from unchecked bytes
    assert [s.headers.get("range") for s in faults.files()] == [f"bytes={first}-{last}"]
    assert faults.files(whole=True) == []
    assert verify_cache(cache(mirror)) == 0


def one_file_page(server: RawUpstream, filename: str, data: bytes) -> Answer:
    entry = {"filename": filename, "url": server.url(f"/files/{filename}"), "size": len(data),
             "hashes": {"sha256": sha256(data)}}  # fmt: skip
    page = {"meta": {"api-version": "1.1"}, "name": "pkg", "files": [entry]}
    return Answer(body=json.dumps(page).encode(), headers={"Content-Type": JSON})


def test_a_range_of_a_file_being_downloaded_is_read_from_its_download(
    make_mirror: MirrorFactory, http: requests.Session
) -> None:
    filename, data = "pkg-1.0-py3-none-any.whl", PAYLOAD * 10
    asked: list[str] = []

    def answer(method: str, path: str) -> Answer:
        asked.append(path)
        if path == "/simple/pkg/":
            return one_file_page(server, filename, data)
        # the download gets its first 200,000 bytes, then nothing more
        return Answer(body=data, stall_after=200_000)

    with RawUpstream(answer) as server:
        mirror = make_mirror(index_url=server.index_url, timeout=20)
        url = f"{mirror.url}/files/pkg/{filename}"
        whole = http.get(url, stream=True, timeout=30)
        try:
            assert whole.raw.read(1000) == data[:1000]  # the download has written that much
            response = http.get(url, headers={"Range": "bytes=10-209"}, timeout=5)
            assert response.status_code == 206
            assert response.content == data[10:210]
            assert asked.count(f"/files/{filename}") == 1  # nothing more asked upstream
        finally:
            whole.close()


def test_an_upstream_that_refuses_ranges_gets_the_whole_file_asked_once(
    upstream: PrivateIndex, faults: Faults, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    faults.no_ranges = True
    filename, data = wheel_of(upstream)
    other, other_data = wheel_of(upstream, "2.0")
    mirror = make_mirror()
    for name, expected in ((filename, data), (other, other_data)):
        response = http.get(f"{mirror.url}/files/pkg/{name}", headers={"Range": "bytes=-100"}, timeout=30)
        assert response.status_code == 206
        assert response.content == expected[-100:]
    # the first range found the upstream answers whole; the second file was not asked by range
    assert [(s.path.rsplit("/", 1)[1], "range" in s.headers) for s in faults.files()] == [
        (filename, True), (filename, False), (other, False)
    ]  # fmt: skip
    assert verify_cache(cache(mirror)) == 2


def test_a_range_over_the_bound_waits_for_the_whole_file(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ranges_module, "MAX_RANGE", 1000)
    filename, data = wheel_of(upstream)
    mirror = make_mirror()
    url = f"{mirror.url}/files/pkg/{filename}"
    response = http.get(url, headers={"Range": "bytes=0-1000"}, timeout=30)
    assert (response.status_code, response.content) == (206, data[:1001])
    assert [("range" in s.headers) for s in faults.files()] == [False]
    response = http.get(url, headers={"Range": "bytes=0-999"}, timeout=30)
    assert (response.status_code, response.content) == (206, data[:1000])
    assert len(faults.files()) == 1  # cached by then


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Range": "bytes 1-100/102400"}, PAYLOAD[1:101]),  # another start
        ({"Content-Range": "bytes 0-99/102401"}, PAYLOAD[:100]),  # another file's size
        ({"Content-Range": "bytes 0-199/102400"}, PAYLOAD[:200]),  # more than asked
        ({"Content-Range": "bytes */102400"}, PAYLOAD[:100]),
        ({}, PAYLOAD[:100]),  # no Content-Range
        ({"Content-Range": "bytes 0-99/102400", "Content-Type": "multipart/byteranges"}, PAYLOAD[:100]),
        ({"Content-Range": "bytes 0-99/102400", "Content-Encoding": "gzip"}, PAYLOAD[:100]),
        ({"Content-Range": "bytes 0-99/102400"}, PAYLOAD[:99]),  # cut short (Content-Length says so)
    ],
    ids=["start", "total", "longer", "unsatisfied", "none", "multipart-ok", "encoded", "short"],
)
def test_a_206_that_is_not_the_range_asked_for_is_a_502_never_a_wrong_byte(
    make_mirror: MirrorFactory, http: requests.Session, headers: dict[str, str], body: bytes
) -> None:
    filename = "pkg-1.0-py3-none-any.whl"
    served: list[str] = []

    def answer(method: str, path: str) -> Answer:
        served.append(path)
        if path == "/simple/pkg/":
            return one_file_page(server, filename, PAYLOAD)
        return Answer(status=206, body=body, headers=headers)

    with RawUpstream(answer) as server:
        mirror = make_mirror(index_url=server.index_url, timeout=TIMEOUT)
        response = http.get(f"{mirror.url}/files/pkg/{filename}", headers={"Range": "bytes=0-99"}, timeout=30)
        if headers.get("Content-Type") == "multipart/byteranges":
            # the one range asked for, as its Content-Range says: a plain 206 whatever its type
            assert (response.status_code, response.content) == (206, PAYLOAD[:100])
        else:
            message = assert_clear_error(response, 502)
            assert "range" in message.lower()
    assert verify_cache(cache(mirror)) == 0


def test_a_private_or_cached_file_is_sent_by_range_as_before(
    upstream: PrivateIndex, faults: Faults, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    filename, data = wheel_of(upstream)
    mirror = make_mirror()
    url = f"{mirror.url}/files/pkg/{filename}"
    assert http.get(url, timeout=30).content == data
    faults.reset()
    response = http.get(url, headers={"Range": "bytes=5-9"}, timeout=30)
    assert (response.status_code, response.content) == (206, data[5:10])
    assert faults.files() == []


def test_ranges_from_many_threads_are_each_right(
    upstream: PrivateIndex, faults: Faults, make_mirror: MirrorFactory
) -> None:
    filename, data = wheel_of(upstream)
    mirror = make_mirror()
    url = f"{mirror.url}/files/pkg/{filename}"
    wrong: list[tuple[int, int]] = []

    def fetch(start: int) -> None:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(url, headers={"Range": f"bytes={start}-{start + 9999}"}, timeout=30)
            if response.status_code != 206 or response.content != data[start : start + 10000]:
                wrong.append((start, response.status_code))

    threads = [threading.Thread(target=fetch, args=(n * 100_003,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []
    assert faults.files(whole=True) == []


# PEP 658 metadata of wheels whose upstream offers none ------------------------------------------


def page_entries(http: requests.Session, mirror_index: str) -> dict[str, object]:
    files = http.get(mirror_index + "pkg/", headers={"Accept": JSON}, timeout=30).json()["files"]
    return {entry["filename"]: entry.get("core-metadata") for entry in files}


def test_every_mirrored_wheel_offers_metadata_though_the_upstream_offers_none(
    upstream: PrivateIndex, faults: Faults, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    faults.no_metadata = True
    upstream.add("pkg", "1.0")
    mirror = make_mirror()
    wheel, sdist = "pkg-1.0-py3-none-any.whl", "pkg-1.0.tar.gz"
    assert page_entries(http, upstream.index_url) == {wheel: None, sdist: None}
    assert page_entries(http, mirror.index_url) == {wheel: True, sdist: None}
    html = http.get(mirror.index_url + "pkg/", headers={"Accept": "text/html"}, timeout=30).text
    assert html.count('data-core-metadata="true"') == 1
    assert faults.files() == []


def test_the_metadata_of_a_wheel_not_cached_is_read_by_ranges_kept_and_then_checked_against_the_wheel(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults.no_metadata = True
    filename, data = wheel_of(upstream, requires_dist=["other>=1"])
    mirror = make_mirror()
    url = f"{mirror.url}/files/pkg/{filename}"
    response = http.get(url + ".metadata", timeout=30)
    assert response.status_code == 200
    expected = wheel_metadata(upstream.mirror.repository.private.file_path(NormalizedName("pkg"), filename))
    assert expected is not None
    assert response.content == expected
    assert b"Requires-Dist: other>=1" in response.content
    # the end of the zip (its central directory, and here its METADATA) in one request, not 3 MiB
    ranged = faults.files(whole=False)
    assert faults.files(whole=True) == []
    assert [s.length for s in ranged] == [ranges_module.TAIL]
    store = mirror.repository.store
    assert store.metadata_ranged_path(NormalizedName("pkg"), filename).is_file()
    faults.reset()
    assert http.get(url + ".metadata", timeout=30).content == expected  # kept: nothing asked
    assert faults.files() == []
    # the wheel cached: its own metadata is the same, the note goes, the page gives its hash
    with caplog.at_level(logging.WARNING):
        assert http.get(url, timeout=30).content == data
    assert not store.metadata_ranged_path(NormalizedName("pkg"), filename).exists()
    assert "read by ranges" not in caplog.text
    assert page_entries(http, mirror.index_url)[filename] == {"sha256": sha256(expected)}
    assert http.get(url + ".metadata", timeout=30).content == expected


def handmade_wheel(folder: Path, *, dist_info_first: bool, members: int) -> tuple[Path, bytes]:
    """A wheel of ``pkg`` 2.0 with ``members`` modules beside 1 MiB of data, its .dist-info
    first or last in the archive: its path and METADATA."""
    metadata = b"Metadata-Version: 2.1\nName: pkg\nVersion: 2.0\nRequires-Dist: other>=2\n"
    info = [
        ("pkg-2.0.dist-info/METADATA", metadata),
        (
            "pkg-2.0.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
    ]
    modules = [
        (f"pkg/a_module_with_a_rather_long_name_to_fill_the_directory_{i:05}.py", b"") for i in range(members)
    ]
    data = [("pkg/data.bin", bytes(range(256)) * 4096)]
    ordered = info + modules + data if dist_info_first else modules + data + info
    path = folder / "pkg-2.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in ordered:
            archive.writestr(
                name, body, zipfile.ZIP_STORED if name.endswith(".bin") else zipfile.ZIP_DEFLATED
            )
        archive.writestr("pkg-2.0.dist-info/RECORD", "".join(f"{name},,\n" for name, _ in ordered))
    return path, metadata


@pytest.mark.parametrize(
    ("dist_info_first", "members", "requests_made"),
    [
        (False, 150, 1),  # the wheel spec's order: the tail holds the directory and the METADATA
        (True, 150, 2),  # the tail holds the directory; the METADATA, far before it, in one more
        (True, 1500, 3),  # a directory larger than the tail: the rest of it, then the METADATA
    ],
)
def test_a_wheels_metadata_takes_few_ranges_and_no_byte_twice(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    tmp_path: Path,
    dist_info_first: bool,
    members: int,
    requests_made: int,
) -> None:
    # each request is a round trip to the upstream, which may be far: 3 or 4 of them were 8 KiB
    faults.no_metadata = True
    path, metadata = handmade_wheel(tmp_path, dist_info_first=dist_info_first, members=members)
    upstream.publish(path)
    mirror = make_mirror()
    response = http.get(f"{mirror.url}/files/pkg/{path.name}.metadata", timeout=30)
    assert response.status_code == 200
    assert response.content == metadata
    ranged = faults.files(whole=False)
    assert faults.files(whole=True) == []
    assert len(ranged) == requests_made
    spans = sorted(
        tuple(int(n) for n in s.headers["range"].removeprefix("bytes=").split("-")) for s in ranged
    )
    assert all(last < first for (_, last), (first, _) in itertools.pairwise(spans))
    assert spans[-1][1] == path.stat().st_size - 1  # the first one: the end of the wheel


def test_metadata_read_by_ranges_that_is_not_the_wheels_is_replaced_when_the_wheel_is_cached(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults.no_metadata = True
    filename, data = wheel_of(upstream)
    mirror = make_mirror()
    url = f"{mirror.url}/files/pkg/{filename}"
    expected = http.get(url + ".metadata", timeout=30).content
    store = mirror.repository.store
    kept = store.metadata_path(NormalizedName("pkg"), filename)
    kept.write_bytes(b"Metadata-Version: 2.1\nName: pkg\nVersion: 6.6\n")  # as a lying upstream's ranges
    with caplog.at_level(logging.WARNING):
        assert http.get(url, timeout=30).content == data
    assert kept.read_bytes() == expected
    assert "read by ranges was not the wheel's" in caplog.text
    assert not store.metadata_ranged_path(NormalizedName("pkg"), filename).exists()
    assert http.get(url + ".metadata", timeout=30).content == expected


def test_the_metadata_of_a_wheel_whose_upstream_refuses_ranges_comes_from_the_whole_wheel(
    upstream: PrivateIndex, faults: Faults, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    faults.no_metadata = faults.no_ranges = True
    filename, _ = wheel_of(upstream)
    mirror = make_mirror()
    response = http.get(f"{mirror.url}/files/pkg/{filename}.metadata", timeout=30)
    assert response.status_code == 200
    assert response.content.startswith(b"Metadata-Version")
    # the one range asked was answered whole (closed unread), then the wheel downloaded whole
    assert [("range" in s.headers) for s in faults.files()] == [True, False]
    assert verify_cache(cache(mirror)) == 1
    assert not mirror.repository.store.metadata_ranged_path(NormalizedName("pkg"), filename).exists()


def test_a_damaged_wheel_upstream_is_a_502_for_its_metadata(
    make_mirror: MirrorFactory, http: requests.Session
) -> None:
    filename = "pkg-1.0-py3-none-any.whl"

    # the ranges asked, in turn: the last 64 KiB, then the few bytes before them that the longest
    # end record with its comment would take (no end record in either)
    size, tail = len(PAYLOAD), ranges_module.TAIL
    spans = iter([(size - tail, size), (size - 22 - 0xFFFF, size - tail)])

    def answer(method: str, path: str) -> Answer:
        if path == "/simple/pkg/":
            return one_file_page(server, filename, PAYLOAD)
        start, end = next(spans)
        content_range = f"bytes {start}-{end - 1}/{size}"
        return Answer(status=206, body=PAYLOAD[start:end], headers={"Content-Range": content_range})

    with RawUpstream(answer) as server:
        mirror = make_mirror(index_url=server.index_url, timeout=TIMEOUT)
        message = assert_clear_error(http.get(f"{mirror.url}/files/pkg/{filename}.metadata", timeout=30), 502)
        assert "not a zip archive" in message


# real clients: a resolution that rejects a wheel downloads none of it ----------------------------


@pytest.fixture
def backtracking(upstream: PrivateIndex, faults: Faults) -> str:
    """An upstream without PEP 658 metadata where resolving ``app`` with ``other==1.0`` reads the
    metadata of app 2.0 (a large wheel) and rejects it; the filename of that wheel."""
    faults.no_metadata = True
    upstream.add("other", "1.0", sdist=False)
    upstream.add("other", "2.0", sdist=False)
    upstream.add("app", "1.0", requires_dist=["other<2"], sdist=False)
    (rejected,) = upstream.add("app", "2.0", requires_dist=["other>=2"], sdist=False, payload_size=BIG)
    return rejected.filename


def whole_files(faults: Faults) -> list[str]:
    return sorted(s.path.rsplit("/", 1)[1] for s in faults.files(whole=True))


@pytest.mark.parametrize(
    ("ranged_from", "downloaded"),
    [
        (BIG, False),  # large enough: pip reads its metadata, which the mirror reads by ranges
        # the default (16 MiB): pip downloads the wheel whole to read it, as from the upstream,
        # and is spared the ranges' round trips for every wheel it keeps
        (clients.PIP_RANGED_METADATA_MIN_SIZE, True),
    ],
)
def test_pip_resolves_without_downloading_a_wheel_it_rejects(
    backtracking: str,
    faults: Faults,
    make_mirror: MirrorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ranged_from: int,
    downloaded: bool,
) -> None:
    monkeypatch.setattr(clients, "PIP_RANGED_METADATA_MIN_SIZE", ranged_from)
    mirror = make_mirror()
    # pip reads app 2.0's metadata (which starts its download ahead once ``ahead_after`` has
    # passed) and rejects it at once, asking for app 1.0, which drops it: in milliseconds, but a
    # loaded machine must not make pip late
    mirror.repository.downloads.ahead_after = 5.0
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-cache-dir", "--report", str(report),
               "--ignore-installed", "app", "other==1.0"]  # fmt: skip
    done = subprocess.run(
        command, env=installer_env(mirror.index_url), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    installed = {
        item["metadata"]["name"]: item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert installed == {"app": "1.0", "other": "1.0"}
    assert (backtracking in whole_files(faults)) is downloaded
    if not downloaded:
        assert sum(s.length for s in faults.files()) < 500_000  # bytes of files sent by the upstream
        assert faults.files(whole=False)  # its metadata, read by ranges
    # pip download: the wheels it keeps, whole (once, by either run); the one it rejected, never
    dest = str(tmp_path / "dl")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-cache-dir", "-d", dest, "app", "other==1.0"],
        env=installer_env(mirror.index_url), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
        "app-1.0-py3-none-any.whl",
        "other-1.0-py3-none-any.whl",
    ]
    kept = ["app-1.0-py3-none-any.whl", "other-1.0-py3-none-any.whl"]
    # and other 2.0, guessed as pip was given other's page (the newest release; pip pinned 1.0)
    guessed = "other-2.0-py3-none-any.whl"
    assert whole_files(faults) == sorted([*kept, guessed, backtracking] if downloaded else [*kept, guessed])
    assert mirror.repository.guesses.wrong == 2  # other's, in each run


def test_uv_compiles_without_downloading_a_wheel_it_rejects(
    backtracking: str, faults: Faults, make_mirror: MirrorFactory, tmp_path: Path
) -> None:
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    mirror = make_mirror()
    (tmp_path / "requirements.in").write_text("app\nother==1.0\n")
    command = [
        uv,
        "pip",
        "compile",
        "--no-cache",
        "--python",
        sys.executable,
        str(tmp_path / "requirements.in"),
    ]
    done = subprocess.run(
        command,
        env=installer_env(mirror.index_url),
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "app==1.0" in done.stdout
    assert "other==1.0" in done.stdout
    assert whole_files(faults) == []
    assert sum(s.length for s in faults.files()) < 500_000
