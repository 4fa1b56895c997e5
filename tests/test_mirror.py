"""Caching behaviour against a fake upstream: revalidation, stale-if-error, restarts, integrity."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror
from nestegg_core.errors import NotFound
from nestegg_core.index.mirror import MirrorIndex
from nestegg_core.index.upstream import Fetched, FileStream
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage.store import CacheStore
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory

JSON = "application/vnd.pypi.simple.v1+json"
PAGE = "/simple/pkg/"


@pytest.fixture
def files(upstream: PrivateIndex) -> dict[str, str]:
    """Upstream files of ``pkg`` by filename, with their sha256."""
    records = upstream.add("pkg", "1.0", payload_size=200_000) + upstream.add("pkg", "2.0")
    return {r.filename: r.hashes["sha256"] for r in records}


def file_url(mirror: Mirror, filename: str) -> str:
    return f"{mirror.url}/files/pkg/{filename}"


def cached(mirror: Mirror, filename: str) -> Path:
    return mirror.repository.store.files / "pkg" / filename


@pytest.mark.usefixtures("files")
def test_page_is_fetched_once_within_ttl(mirror: Mirror, faults: Faults, http: requests.Session) -> None:
    for _ in range(3):
        assert http.get(mirror.index_url + "pkg/").status_code == 200
    assert faults.count(PAGE) == 1
    accept = faults.seen[0].headers["accept"]
    assert accept.startswith("application/vnd.pypi.simple.v1+json")


@pytest.mark.usefixtures("files")
def test_revalidation_uses_the_etag(
    make_mirror: MirrorFactory, faults: Faults, http: requests.Session
) -> None:
    mirror = make_mirror(ttl=0)
    first = http.get(mirror.index_url + "pkg/")
    second = http.get(mirror.index_url + "pkg/")
    assert first.content == second.content
    assert faults.count(PAGE) == 2
    assert "if-none-match" not in faults.seen[0].headers
    assert faults.seen[1].headers["if-none-match"].startswith('"')


def test_new_upstream_release_shows_after_ttl(
    make_mirror: MirrorFactory, upstream: PrivateIndex, files: dict[str, str], http: requests.Session
) -> None:
    mirror = make_mirror(ttl=0)
    assert len(http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]) == len(files)
    upstream.add("pkg", "3.0")
    versions = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["versions"]
    assert versions == ["1.0", "2.0", "3.0"]


def test_stale_if_error(
    make_mirror: MirrorFactory, faults: Faults, files: dict[str, str], http: requests.Session
) -> None:
    mirror = make_mirror(ttl=0)
    wheel, sdist = sorted(files)[:2]
    page = http.get(mirror.index_url + "pkg/").content
    assert http.get(file_url(mirror, wheel)).status_code == 200
    for status in (500, 503):
        faults.status = status
        again = http.get(mirror.index_url + "pkg/")
        assert again.status_code == 200
        assert again.content == page
        assert hashlib.sha256(http.get(file_url(mirror, wheel)).content).hexdigest() == files[wheel]
    uncached = http.get(file_url(mirror, sdist))
    assert uncached.status_code == 502
    assert "HTTP 503" in uncached.text
    assert http.get(mirror.index_url + "other/").status_code == 502


def test_restart_with_warm_cache(
    make_mirror: MirrorFactory, faults: Faults, files: dict[str, str], http: requests.Session
) -> None:
    first = make_mirror()
    wheel = sorted(files)[0]
    page = http.get(first.index_url + "pkg/").content
    http.get(file_url(first, wheel))
    first_url = first.url
    first.stop()
    fetched = faults.count(prefix="/")
    second = make_mirror()
    # the same page, its file URLs on the new port
    assert http.get(second.index_url + "pkg/").content == page.replace(
        first_url.encode(), second.url.encode()
    )
    assert faults.count(prefix="/") == fetched  # the state on disk needed no refetch
    faults.status = 503
    third = make_mirror(ttl=0)
    assert http.get(third.index_url + "pkg/").content == page.replace(first_url.encode(), third.url.encode())
    assert hashlib.sha256(http.get(file_url(third, wheel)).content).hexdigest() == files[wheel]


def test_upstream_404_is_404(mirror: Mirror, http: requests.Session) -> None:
    response = http.get(mirror.index_url + "nothing-here/")
    assert response.status_code == 404


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_bad_download_is_an_error_and_never_cached(
    mirror: Mirror, faults: Faults, files: dict[str, str], http: requests.Session, fault: str
) -> None:
    wheel = next(f for f in files if f.endswith(".whl") and "1.0" in f)
    getattr(faults, fault).add(f"/files/pkg/{wheel}")
    http.get(mirror.index_url + "pkg/")
    # broken off before the last byte; or, if it failed before the first, a clean 502
    with contextlib.suppress(requests.exceptions.ChunkedEncodingError):
        assert http.get(file_url(mirror, wheel)).status_code == 502
    assert not cached(mirror, wheel).exists()
    assert not list(cached(mirror, wheel).parent.glob(".*.part"))
    getattr(faults, fault).clear()
    # a hash mismatch is remembered for a while (not downloaded again at once): that while is over
    mirror.repository.downloads.failed_check_for = 0.0
    body = http.get(file_url(mirror, wheel)).content
    assert hashlib.sha256(body).hexdigest() == files[wheel]
    assert cached(mirror, wheel).is_file()


def test_concurrent_first_requests_make_one_download(
    mirror: Mirror, faults: Faults, files: dict[str, str], http: requests.Session
) -> None:
    wheel = next(f for f in files if f.endswith(".whl") and "1.0" in f)
    http.get(mirror.index_url + "pkg/")
    faults.gate = threading.Event()

    def fetch(_: int) -> str:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(file_url(mirror, wheel), timeout=30)
            response.raise_for_status()
            return hashlib.sha256(response.content).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        results = pool.map(fetch, range(16))
        threading.Timer(0.3, faults.gate.set).start()
        digests = list(results)
    assert digests == [files[wheel]] * 16
    assert faults.count(f"/files/pkg/{wheel}") == 1


def test_files_deleted_upstream_stay_listed_and_installable(
    make_mirror: MirrorFactory, upstream: PrivateIndex, files: dict[str, str], http: requests.Session
) -> None:
    mirror = make_mirror(ttl=0)
    wheel = next(f for f in files if f.endswith(".whl") and "1.0" in f)
    http.get(mirror.index_url + "pkg/")
    http.get(file_url(mirror, wheel))
    for filename in files:
        if "1.0" in filename:
            upstream.mirror.repository.private.remove("pkg", filename)  # type: ignore[arg-type]
    listed = {
        f["filename"] for f in http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()["files"]
    }
    assert wheel in listed
    assert not any(f.endswith(".tar.gz") and "1.0" in f for f in listed)  # never cached: gone
    assert hashlib.sha256(http.get(file_url(mirror, wheel)).content).hexdigest() == files[wheel]


@pytest.mark.parametrize("variant", ["html_only", "no_validators"])
def test_upstream_variants(
    make_mirror: MirrorFactory, faults: Faults, files: dict[str, str], http: requests.Session, variant: str
) -> None:
    setattr(faults, variant, True)
    mirror = make_mirror(ttl=0)
    data = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()
    assert {f["filename"]: f["hashes"]["sha256"] for f in data["files"]} == files
    assert http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json() == data
    wheel = next(f for f in files if f.endswith(".whl"))
    assert hashlib.sha256(http.get(file_url(mirror, wheel)).content).hexdigest() == files[wheel]


def test_offline_serves_the_cache_only(
    make_mirror: MirrorFactory, faults: Faults, files: dict[str, str], http: requests.Session
) -> None:
    online = make_mirror()
    wheel = sorted(files)[0]
    http.get(online.index_url + "pkg/")
    http.get(file_url(online, wheel))
    online.stop()
    faults.reset()
    offline = make_mirror(offline=True)
    assert http.get(offline.index_url + "pkg/").status_code == 200
    assert http.get(file_url(offline, wheel)).status_code == 200
    assert (
        http.get(offline.index_url + "other/").status_code == 410
    )  # NotCached: the cache has nothing, offline
    assert faults.seen == []


def test_metadata_from_upstream_is_verified_and_kept(
    mirror: Mirror, faults: Faults, files: dict[str, str], http: requests.Session
) -> None:
    wheel = next(f for f in files if f.endswith(".whl"))
    http.get(mirror.index_url + "pkg/")
    faults.corrupt.add(f"/files/pkg/{wheel}.metadata")
    assert http.get(file_url(mirror, wheel + ".metadata")).status_code == 502
    faults.corrupt.clear()
    good = http.get(file_url(mirror, wheel + ".metadata"))
    assert good.status_code == 200
    assert good.content.startswith(b"Metadata-Version")
    count = faults.count(f"/files/pkg/{wheel}.metadata")
    http.get(file_url(mirror, wheel + ".metadata"))
    assert faults.count(f"/files/pkg/{wheel}.metadata") == count


class _MadeUp:
    """A fetcher of made-up pages of ``sizes[name]`` files; notes which pages the index held in
    memory as each was fetched, the moment its model is made."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.index: MirrorIndex | None = None
        self.held: list[list[str]] = []

    def project(self, name: str, *, etag: str | None, last_modified: str | None) -> Fetched:  # noqa: ARG002
        assert self.index is not None
        self.held.append(sorted(self.index._loaded))
        files = [
            DistFile(filename=f"{name}-{n}.tar.gz", url=f"https://example.com/{name}-{n}.tar.gz")
            for n in range(self.sizes[name])
        ]
        return Fetched(page=ProjectPage.build(name, files))

    def open(self, url: str) -> FileStream:
        raise NotFound(url)


@pytest.mark.parametrize(
    ("sizes", "asked", "held", "after"),
    [
        # a page past the budget stays while it is asked for, page then file, not while the next is made
        ({"big": 20, "small": 3}, ["big", "big", "small"], [[], []], ["small"]),
        # the least recently used go first, and only while the budget is exceeded
        ({"a": 4, "b": 4, "c": 4}, ["a", "b", "c"], [[], ["a"], ["a", "b"]], ["b", "c"]),
        ({"a": 4, "b": 4, "c": 4}, ["a", "b", "a", "c"], [[], ["a"], ["a", "b"]], ["a", "c"]),
        ({"a": 4, "big": 20, "c": 4}, ["a", "big", "c"], [[], ["a"], []], ["c"]),
    ],
    ids=["large-page", "lru", "lru-reused", "large-between"],
)
def test_pages_in_memory_stay_within_the_budget(
    tmp_path: Path, sizes: dict[str, int], asked: list[str], held: list[list[str]], after: list[str]
) -> None:
    fetcher = _MadeUp(sizes)
    index = MirrorIndex(CacheStore(tmp_path, "https://example.com/simple/"), fetcher, max_files=10)
    fetcher.index = index
    for name in asked:
        page = index.page(NormalizedName(name))
        assert index.file(NormalizedName(name), page.files[0].filename) == page.files[0]
    assert fetcher.held == held  # each page fetched once, holding then only these
    assert sorted(index._loaded) == after
