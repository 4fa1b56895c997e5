"""Caching behaviour against a fake upstream: revalidation, stale-if-error, restarts, integrity."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror
from nestegg_core.config.config import SourceBuild
from nestegg_core.errors import NotFound, UpstreamError
from nestegg_core.index import later, repository
from nestegg_core.index import mirror as mirror_module
from nestegg_core.index import upstream as upstream_module
from nestegg_core.index.mirror import MirrorIndex
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import Fetched, FileStream
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage import store as store_module
from nestegg_core.storage.pagestate import PageState
from nestegg_core.storage.store import CacheStore, PageStamp
from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory, pip_download

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
    assert http.get(mirror.index_url + "pkg/").status_code == 200
    assert http.get(file_url(mirror, wheel)).status_code == 200
    for status in (500, 503):
        faults.status = status
        again = http.get(mirror.index_url + "pkg/")
        assert again.status_code == 200
        assert {f for f in files if f in again.text} == {wheel}  # what can be served
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
    stale = http.get(third.index_url + "pkg/").text
    assert {f for f in files if f in stale} == {wheel}  # the page lists what can be served
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
    page = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON}).json()
    listed = {f["filename"] for f in page["files"]}
    assert wheel in listed
    assert not any(f.endswith(".tar.gz") and "1.0" in f for f in listed)  # never cached: gone
    assert page["versions"] == ["2.0", "1.0"]  # PEP 700: the upstream's, and the cached wheel's
    assert hashlib.sha256(http.get(file_url(mirror, wheel)).content).hexdigest() == files[wheel]


@pytest.mark.parametrize(
    ("listed", "versions", "kept", "expected"),
    [
        # the upstream dropped 1.0, whose wheel is cached: listed with its version (PEP 700)
        (["pkg-2.0.tar.gz"], ["2.0"], ["pkg-1.0-py3-none-any.whl"], ("2.0", "1.0")),
        # spelled otherwise than the upstream's list: listed once, as the upstream spells it
        (["pkg-2.0.tar.gz"], ["1.0.0", "2.0"], ["pkg-1.0-py3-none-any.whl"], ("1.0.0", "2.0")),
        # still listed by the upstream: its list as it is
        (["pkg-1.0-py3-none-any.whl"], ["1.0", "0.9"], ["pkg-1.0-py3-none-any.whl"], ("1.0", "0.9")),
        # a file that carries no version adds none
        (["pkg-2.0.tar.gz"], ["2.0"], ["pkg-1.0.win32.exe"], ("2.0",)),
        # no list of the upstream's (an HTML page): the versions of the files listed
        (["pkg-2.0.tar.gz"], None, ["pkg-1.0-py3-none-any.whl"], ("2.0", "1.0")),
    ],
    ids=["dropped", "spelled-otherwise", "still-listed", "no-version", "no-list"],
)
def test_cached_files_the_upstream_dropped_keep_their_versions_listed(
    listed: list[str], versions: list[str] | None, kept: list[str], expected: tuple[str, ...]
) -> None:
    page = ProjectPage.build("pkg", [DistFile(filename=f) for f in listed], versions)
    merged = MirrorIndex._with_kept(page, [DistFile(filename=f, size=1) for f in kept])
    assert merged.versions == expected
    assert {f.filename for f in merged.files} == {*listed, *kept}


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


def test_offline_pages_list_the_cached_files_only(
    make_mirror: MirrorFactory,
    files: dict[str, str],
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)  # every rendering is saved, and read back
    wheel = next(f for f in files if f.endswith(".whl") and "-1.0-" in f)
    pip = {"User-Agent": "pip/24.0 {}"}

    def listed(mirror: Mirror, **headers: str) -> tuple[set[str], list[str]]:
        page = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON, **headers}).json()
        return {f["filename"] for f in page["files"]}, page["versions"]

    online = make_mirror(fetch_ahead=0, pages_ahead=False)
    assert listed(online) == (set(files), ["1.0", "2.0"])
    assert http.get(online.index_url + "pkg/").status_code == 200  # HTML
    assert listed(online, **pip)[0] == set(files)
    assert http.get(file_url(online, wheel)).status_code == 200
    online.stop()
    # offline and online again, each from the renderings the other left, both ways
    for offline in (True, False, True):
        mirror = make_mirror(offline=offline, fetch_ahead=0, pages_ahead=False)
        expected = ({wheel}, ["1.0"]) if offline else (set(files), ["1.0", "2.0"])
        for _ in range(2):  # made, then read back
            assert listed(mirror) == expected
            assert listed(mirror, **pip)[0] == expected[0]
            html = http.get(mirror.index_url + "pkg/").text
            assert {f for f in files if f in html} == expected[0]
        if offline:
            missing = http.get(file_url(mirror, next(f for f in files if "-2.0-" in f)))
            assert missing.status_code == 404
        mirror.stop()


def go_down(upstream: PrivateIndex, faults: Faults, down: str) -> Callable[[Mirror], None]:
    """Take ``upstream`` down (``error``: every answer a 503; ``refused``: nothing listens);
    what brings it back, for ``mirror``."""
    port = urlsplit(upstream.url).port
    if down == "error":
        faults.status = 503
    else:
        upstream.stop()

    def back(mirror: Mirror) -> None:
        if down == "error":
            faults.status = None
        else:
            config = upstream.mirror.config.with_changes(port=port)
            upstream.mirror = Mirror(config, middleware=faults).start()
            mirror.repository.circuits.reset()  # as its probe does past the circuit's window

    return back


@pytest.mark.parametrize(("down", "ttl"), [("error", 0), ("refused", 0), ("refused", 600)])
def test_a_page_served_while_the_upstream_is_down_lists_the_cached_files_only(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    files: dict[str, str],
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    down: str,
    ttl: int,
) -> None:
    """It listed every file of the page kept: an unpinned install took 2.0, never cached, and
    failed. Within its TTL too, once the upstream is known down (its circuit open)."""
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)  # every rendering is saved, and read back
    wheel = next(f for f in files if f.endswith(".whl") and "-1.0-" in f)
    pip = {"User-Agent": "pip/24.0 {}"}

    def listed(mirror: Mirror, **headers: str) -> tuple[set[str], list[str], str]:
        answer = http.get(mirror.index_url + "pkg/", headers={"Accept": JSON, **headers})
        page = answer.json()
        return {f["filename"] for f in page["files"]}, page["versions"], answer.headers["ETag"]

    def html(mirror: Mirror) -> set[str]:
        return {f for f in files if f in http.get(mirror.index_url + "pkg/").text}

    mirror = make_mirror(ttl=ttl, fetch_ahead=0, pages_ahead=False)
    whole = listed(mirror)
    assert whole[:2] == (set(files), ["1.0", "2.0"])
    assert listed(mirror, **pip)[0] == html(mirror) == set(files)
    assert http.get(file_url(mirror, wheel)).status_code == 200
    state = mirror.repository.store.read_page(NormalizedName("pkg"))
    back = go_down(upstream, faults, down)
    if ttl:  # a page asked past its TTL finds the upstream down (opens its circuit)
        assert http.get(mirror.index_url + "never-cached/").status_code == 410
    for _ in range(2):  # never from a rendering kept
        files_listed, versions, tag = listed(mirror)
        assert (files_listed, versions) == ({wheel}, ["1.0"])
        assert tag != whole[2]
        assert listed(mirror, **pip)[0] == html(mirror) == {wheel}
    # a file not cached is still asked for (its host may be up): what the upstream says
    other = next(f for f in files if "-2.0-" in f)
    assert http.get(file_url(mirror, other)).status_code == 502
    # nothing of it kept as the page: once back, the upstream's whole page, never this one
    assert mirror.repository.store.read_page(NormalizedName("pkg")) == state
    back(mirror)
    if ttl:
        assert listed(mirror) == whole  # the rendering kept before the outage, within its TTL
    assert listed(mirror)[:2] == whole[:2]
    assert listed(mirror, **pip)[0] == html(mirror) == set(files)


@pytest.mark.parametrize("down", ["error", "refused"])
def test_a_page_kept_with_nothing_cached_is_answered_as_a_name_never_cached_while_down(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    http: requests.Session,
    down: str,
) -> None:
    # it was the page kept, every file on it one that could not come
    upstream.add("pkg", "1.0")
    mirror = make_mirror(ttl=0, fetch_ahead=0, pages_ahead=False)
    assert http.get(mirror.index_url + "pkg/").status_code == 200
    go_down(upstream, faults, down)
    kept, never = (http.get(f"{mirror.index_url}{name}/") for name in ("pkg", "never-cached"))
    assert kept.status_code == never.status_code == (502 if down == "error" else 410)
    if down == "error":  # what the upstream said of each, as of a name never cached
        assert "/simple/pkg/ with HTTP 503" in kept.text
        assert "/simple/never-cached/ with HTTP 503" in never.text
    else:
        assert kept.reason == never.reason.replace("'never-cached'", "'pkg'")


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


@pytest.mark.parametrize("upstream_then", ["down", "other-bytes", "offline"])
def test_the_metadata_of_a_cached_wheel_is_taken_from_it(
    make_mirror: MirrorFactory,
    faults: Faults,
    files: dict[str, str],
    http: requests.Session,
    upstream_then: str,
) -> None:
    # pip caches a small wheel without asking for its metadata; uv asks for it later
    mirror = make_mirror()
    wheel = next(f for f in files if f.endswith(".whl") and "-1.0-" in f)
    http.get(mirror.index_url + "pkg/")
    assert http.get(file_url(mirror, wheel)).status_code == 200
    listed = next(f for f in mirror.repository.project(NormalizedName("pkg")).files if f.filename == wheel)
    faults.reset()
    if upstream_then == "down":
        faults.status = 500
    elif upstream_then == "other-bytes":  # not what its page vouches for, unlike the wheel's own
        faults.corrupt.add(f"/files/pkg/{wheel}.metadata")
    else:
        mirror.stop()
        mirror = make_mirror(offline=True)
    for _ in range(2):
        answer = http.get(file_url(mirror, wheel + ".metadata"))
        assert answer.status_code == 200, answer.text
        assert answer.content == wheel_metadata(cached(mirror, wheel))
        assert listed.core_metadata == {"sha256": hashlib.sha256(answer.content).hexdigest()}
    assert faults.count(f"/files/pkg/{wheel}.metadata") == 0


def test_the_metadata_of_a_cached_wheel_is_not_served_unless_it_matches_its_page(
    make_mirror: MirrorFactory, faults: Faults, files: dict[str, str], http: requests.Session
) -> None:
    first = make_mirror()
    wheel = next(f for f in files if f.endswith(".whl") and "-1.0-" in f)
    http.get(first.index_url + "pkg/")
    http.get(file_url(first, wheel))
    first.stop()
    store, name = first.repository.store, NormalizedName("pkg")
    record = store.read_record(name, wheel)
    assert record is not None
    store.write_record(name, record.with_changes(core_metadata={"sha256": "0" * 64}))
    faults.status = 500
    mirror = make_mirror()
    assert http.get(file_url(mirror, wheel + ".metadata")).status_code == 502
    assert not store.metadata_path(name, wheel).exists()


class _MadeUp:
    """A fetcher of made-up pages of ``sizes[name]`` files; notes which pages the index held in
    memory as each was fetched, the moment its model is made."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.index: MirrorIndex | None = None
        self.held: list[list[str]] = []

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
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
        # "~": made ahead, in the background; the page a client asked for last stays meanwhile...
        ({"big": 20, "small": 3}, ["big", "~small"], [[], ["big"]], ["big", "small"]),
        ({"big": 20, "a": 4, "b": 4}, ["big", "~a", "~b"], [[], ["big"], ["a", "big"]], ["a", "b", "big"]),
        # ...until a client asks for another page
        ({"big": 20, "small": 3}, ["big", "~small", "small"], [[], ["big"]], ["small"]),
        # "@": a client asked for it, answered from its rendering (``asked``): it stays too
        ({"big": 20, "small": 3}, ["~big", "@big", "~small"], [[], ["big"]], ["big", "small"]),
        # made ahead of nobody yet: held (within their own budget, see the next test)
        ({"big": 20, "small": 3}, ["~big", "~small"], [[], ["big"]], ["big", "small"]),
    ],
    ids=[
        "large-page",
        "lru",
        "lru-reused",
        "large-between",
        "made-ahead",
        "made-ahead-lru",
        "asked-after",
        "rendering-asked",
        "ahead-of-nobody",
    ],
)
def test_pages_in_memory_stay_within_the_budget(
    tmp_path: Path, sizes: dict[str, int], asked: list[str], held: list[list[str]], after: list[str]
) -> None:
    fetcher = _MadeUp(sizes)
    index = MirrorIndex(CacheStore(tmp_path, "https://example.com/simple/"), fetcher, max_files=10)
    fetcher.index = index
    for step in asked:
        name = NormalizedName(step.lstrip("~@"))
        if step.startswith("@"):
            index.asked(name)
            continue
        with upstream_module.in_background() if step.startswith("~") else contextlib.nullcontext():
            page = index.page(name)
            assert index.file(name, page.files[0].filename) == page.files[0]
    assert fetcher.held == held  # each page fetched once, holding then only these
    assert sorted(index._loaded) == after


@pytest.mark.parametrize(
    ("asked", "held", "ahead"),
    [
        # pages made ahead stay beside the budget of 10 files, within their own 8, oldest out first
        (["~a", "~b", "~c", "~d"], ["a", "b", "c", "d"], ["c", "d"]),
        (["~a", "~b", "~c", "~d", "~e"], ["b", "c", "d", "e"], ["d", "e"]),
        # a client's request takes a page made ahead: it counts against the budget again
        (["~a", "~b", "a", "b", "~c", "~d"], ["a", "b", "c", "d"], ["c", "d"]),
        (["~a", "~b", "~c", "a", "b", "c"], ["b", "c"], []),
        # the mirror quiet, none is spared
        (["~a", "~b", "~c", "!"], ["b", "c"], []),
    ],
    ids=["within", "oldest-out", "taken-then-more", "all-taken", "quiet"],
)
def test_pages_made_ahead_are_held_until_a_client_takes_them(
    tmp_path: Path, asked: list[str], held: list[str], ahead: list[str]
) -> None:
    sizes = dict.fromkeys("abcde", 4)
    fetcher = _MadeUp(sizes)
    index = MirrorIndex(
        CacheStore(tmp_path, "https://example.com/simple/"), fetcher, max_files=10, max_ahead_files=8
    )
    fetcher.index = index
    for step in asked:
        if step == "!":
            index.trim()
            continue
        name = NormalizedName(step.lstrip("~"))
        with upstream_module.in_background() if step.startswith("~") else contextlib.nullcontext():
            page = index.page(name)
            assert index.file(name, page.files[0].filename) == page.files[0]
    assert len(fetcher.held) == len({step.lstrip("~") for step in asked} - {"!"})  # each fetched once
    assert sorted(index._loaded) == held
    assert sorted(index._ahead) == ahead
    assert index._ahead_files == sum(sizes[name] for name in index._ahead)
    assert index._loaded_files == sum(sizes[name] for name in index._loaded)


class _Answers:
    """A fetcher that answers each page fetch with the next of ``answers``: a page, or None for
    a 304 Not Modified; with ``etag``, or the one of the answer's number when ``etag`` is None."""

    def __init__(self, answers: list[ProjectPage | None], etags: list[str | None]) -> None:
        self.answers, self.etags = answers, etags
        self.asked: list[str | None] = []

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        self.asked.append(etag)
        answer, given = self.answers[len(self.asked) - 1], self.etags[len(self.asked) - 1]
        return Fetched(page=answer, etag=given if answer is not None else etag)

    def open(self, url: str) -> FileStream:
        raise NotFound(url)


def _page(*versions: str) -> ProjectPage:
    names = [f"pkg-{version}.tar.gz" for version in versions]
    return ProjectPage.build("pkg", [DistFile(filename=n, url=f"https://example.com/{n}") for n in names])


@pytest.mark.parametrize(
    ("second", "etag", "rewritten"),
    [
        (None, '"1"', False),  # 304 Not Modified
        (_page("1.0"), '"1"', False),  # the same page, the same validator
        (_page("1.0"), None, False),  # the same page from an index without validators
        (_page("1.0"), '"2"', True),  # the same files under a new validator: kept for the next ask
        (_page("1.0", "2.0"), '"2"', True),  # a new release
    ],
    ids=["304", "same", "same-no-validators", "new-etag", "changed"],
)
def test_a_page_the_upstream_gives_again_keeps_its_state_file(
    tmp_path: Path, second: ProjectPage | None, etag: str | None, rewritten: bool
) -> None:
    """A page the upstream gives again unchanged is not written again: its state file stays (and
    with it every rendering made from it, which hang on that file) and a note says when. Other
    processes on the nest, fresh or holding the page, take the note as the time it was checked."""
    first_etag = None if etag is None else '"1"'
    fetcher = _Answers([_page("1.0"), second], [first_etag, etag])
    now = [0.0]
    store = CacheStore(tmp_path, "https://example.com/simple/")
    index = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0])
    other = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0])  # another process, page held
    name = NormalizedName("pkg")
    index.page(name)
    other.page(name)
    stamp = store.page_stamp(name)
    now[0] = 100.0
    page = index.page(name)
    assert fetcher.asked == [None, first_etag]
    assert page == (second or _page("1.0"))
    assert (store.page_stamp(name) != stamp) is rewritten
    state = store.read_page(name)
    assert state is not None
    assert (state.checked, state.page, state.etag) == (100.0, page, etag)
    now[0] = 150.0  # past the TTL of the first fetch, within that of the second
    fresh = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0])
    assert fresh.page(name) == other.page(name) == page
    assert len(fetcher.asked) == 2  # neither asked the upstream again


def test_a_file_another_process_cached_is_on_every_thread_s_page_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests for a page while a file another process cached is taken in: the second waits
    for the first's catch-up and answers its page, not the one before (gunicorn's workers gave two
    ETags for one page); and meanwhile the page before is never vouched for as the disk's now,
    which would save its rendering for every process."""
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    store = CacheStore(tmp_path, "https://example.com/simple/")
    index = MirrorIndex(store, _Answers([_page("1.0", "2.0")], ['"1"']), ttl=60, clock=lambda: 0.0)
    name = NormalizedName("pkg")
    before = index.page(name)
    learned = before.files[0].with_changes(size=3)  # the upstream gave no size: the download did
    store.make_folder(store.files / name)
    store.file_path(name, learned.filename).write_bytes(b"abc")
    store.write_record(name, learned)

    inside, go = threading.Event(), threading.Event()
    with_kept = MirrorIndex._with_kept

    def paused(page: ProjectPage, kept: list[DistFile], *, only_kept: bool = False) -> ProjectPage:
        if threading.current_thread().name == "first":
            inside.set()
            assert go.wait(10)
        return with_kept(page, kept, only_kept=only_kept)

    monkeypatch.setattr(MirrorIndex, "_with_kept", staticmethod(paused))
    answers: dict[str, ProjectPage] = {}

    def ask(thread: str) -> None:
        answers[thread] = index.page(name)

    first = threading.Thread(target=ask, args=("first",), name="first")
    second = threading.Thread(target=ask, args=("second",), name="second")
    first.start()
    try:
        assert inside.wait(10)
        assert index.checked(name, before) is None
        second.start()
        second.join(0.5)  # before: it answered the page before at once
    finally:
        go.set()
        first.join(10)
    second.join(10)
    assert answers["first"].file(learned.filename) == learned
    assert answers["second"] is answers["first"]
    assert index.checked(name, answers["first"]) == 0.0


def test_a_file_cached_while_the_page_catches_up_is_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download's note of its file (``cached``) while a request catches up with the disk: it
    is left to the catch-up, which reads the file's record, rather than half made beside it (the
    names of the files noted, not yet the page: the catch-up then kept the page before, which
    ``checked`` vouched for as the disk's)."""
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    store = CacheStore(tmp_path, "https://example.com/simple/")
    index = MirrorIndex(store, _Answers([_page("1.0", "2.0")], ['"1"']), ttl=60, clock=lambda: 0.0)
    name = NormalizedName("pkg")
    before = index.page(name)
    learned = before.files[0].with_changes(size=3)
    store.make_folder(store.files / name)
    store.file_path(name, learned.filename).write_bytes(b"abc")
    store.write_record(name, learned)

    catching, caught = threading.Event(), threading.Event()
    noting, noted = threading.Event(), threading.Event()
    kept_names, build = MirrorIndex._kept_names, ProjectPage.build

    def paused_names(self: MirrorIndex, project: NormalizedName) -> frozenset[str]:
        names = kept_names(self, project)
        if threading.current_thread().name == "request":
            catching.set()
            assert caught.wait(10)
        return names

    def paused_build(*args: object, **kwargs: object) -> ProjectPage:
        if threading.current_thread().name == "download":
            noting.set()
            assert noted.wait(10)
        return build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MirrorIndex, "_kept_names", paused_names)
    monkeypatch.setattr(ProjectPage, "build", staticmethod(paused_build))
    request = threading.Thread(target=index.page, args=(name,), name="request")
    download = threading.Thread(target=index.cached, args=(name, learned), name="download")
    request.start()
    try:
        assert catching.wait(10)
        download.start()
        noting.wait(1)  # before: the note got this far, beside the catch-up
        caught.set()
        deadline = time.monotonic() + 10
        while request.is_alive() and time.monotonic() < deadline:
            assert index.checked(name, before) is None
            time.sleep(0.001)
        assert index.checked(name, before) is None
    finally:
        caught.set()
        noted.set()
        request.join(10)
        download.join(10)
    assert index.page(name).file(learned.filename) == learned


class _Held(_Answers):
    """:class:`_Answers` whose second fetch waits until ``go`` is set (``asking`` says it began)."""

    def __init__(self, answers: list[ProjectPage | None], etags: list[str | None]) -> None:
        super().__init__(answers, etags)
        self.asking, self.go = threading.Event(), threading.Event()

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:
        if self.asked:
            self.asking.set()
            assert self.go.wait(10)
        return super().project(name, etag=etag, last_modified=last_modified)


def test_the_web_ui_is_not_held_up_by_a_revalidation_of_the_page(tmp_path: Path) -> None:
    """A catch-up waits for another catch-up, never for the upstream another thread asks."""
    fetcher = _Held([_page("1.0"), _page("1.0", "2.0")], ['"1"', '"2"'])
    now = [0.0]
    index = MirrorIndex(
        CacheStore(tmp_path, "https://example.com/simple/"), fetcher, ttl=60, clock=lambda: now[0]
    )
    name = NormalizedName("pkg")
    before = index.page(name)
    now[0] = 100.0  # past the TTL: the next request asks the upstream
    revalidating = threading.Thread(target=index.page, args=(name,))
    revalidating.start()
    try:
        assert fetcher.asking.wait(10)
        started = time.monotonic()
        stored = index.stored(name)
        assert time.monotonic() - started < mirror_module.CATCH_UP_WAIT / 2
        assert stored is not None
        assert stored[0] is before
    finally:
        fetcher.go.set()
        revalidating.join(10)
    assert index.page(name) == _page("1.0", "2.0")


@pytest.mark.slow
@pytest.mark.parametrize("validators", [True, False], ids=["etag", "no-validators"])
def test_pip_past_the_ttl_of_pages_the_upstream_gives_again_gets_the_renderings_kept(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    validators: bool,
) -> None:
    """The next tox run, its mirror a new process past the TTL: each page is asked of the upstream
    again, and as none changed, none is parsed or made again (nor its state written again).
    Without validators, the answer's digest confirms the state: no state is read whole either."""
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    faults.no_validators = not validators
    for name in ("alpha", "beta-two"):
        upstream.add(name, "1.0", sdist=False)

    def download(mirror: Mirror, dest: str) -> None:
        pip_download(mirror.index_url, tmp_path / dest, "alpha", "beta-two")

    first = make_mirror()
    download(first, "cold")
    download(first, "warm")  # pip's pages as they are once its wheels are cached
    port, nest = first.port, first.repository.store
    first.stop()
    pages = {name: nest.page_stamp(NormalizedName(name)) for name in ("alpha", "beta-two")}
    made = sorted((p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in nest.rendered.rglob("*"))
    faults.reset()
    monkeypatch.setattr(Repository, "_write_rendered", _no_rendering)
    # a 304, or the body the state was read from (its digest): nothing is parsed
    monkeypatch.setattr(upstream_module, "parse_project_stream", _no_parse)
    if not validators:  # confirmed by its digest, the state is not read either
        monkeypatch.setattr(CacheStore, "read_page", _no_state_read)
    second = make_mirror(ttl=0, port=port)  # every page past its TTL
    download(second, "again")
    assert faults.count("/simple/alpha/") == faults.count("/simple/beta-two/") == 1
    assert faults.count(prefix="/files/") == 0
    assert {name: nest.page_stamp(NormalizedName(name)) for name in pages} == pages
    assert sorted((p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in nest.rendered.rglob("*")) == made


def _no_rendering(*args: object, **kwargs: object) -> None:
    raise AssertionError("a page was made again")


def _no_parse(*args: object, **kwargs: object) -> None:
    raise AssertionError("a page the upstream gave again was parsed")


def _no_state_read(*args: object, **kwargs: object) -> None:
    raise AssertionError("a state file was read whole")


class _Digested:
    """A fetcher whose answers carry a digest, as ``HttpFetcher``'s do, and no validators: each
    fetch gives the next of ``answers`` (a page and its digest), or raises it."""

    def __init__(self, answers: list[tuple[ProjectPage, str] | Exception]) -> None:
        self.answers = answers
        self.asked: list[str | None] = []

    def project(
        self,
        name: str,  # noqa: ARG002
        *,
        etag: str | None,
        last_modified: str | None,  # noqa: ARG002
        digest: str | None = None,  # noqa: ARG002
    ) -> Fetched:
        self.asked.append(etag)
        answer = self.answers[len(self.asked) - 1]
        if isinstance(answer, Exception):
            raise answer
        return Fetched(page=answer[0], digest=answer[1])

    def open(self, url: str) -> FileStream:
        raise NotFound(url)


@pytest.mark.parametrize(
    ("second", "rewritten", "read"),
    [
        ((_page("1.0"), "d1"), False, False),  # the same answer: its state stands, never read
        ((_page("1.0", "2.0"), "d2"), True, False),  # a new release: written, the old never read
        (UpstreamError("upstream answered with HTTP 503"), False, True),  # served stale: read then
    ],
    ids=["same", "changed", "upstream-fails"],
)
def test_a_new_process_past_the_ttl_asks_the_upstream_before_it_reads_the_state(
    tmp_path: Path, second: tuple[ProjectPage, str] | Exception, rewritten: bool, read: bool
) -> None:
    """A page past its TTL in a process that never read it: the state's first line says what the
    upstream's answer must be to be the same (its digest); the rest, the files, is read only if the
    upstream does not answer. The answer, when the same, is the page."""
    fetcher = _Digested([(_page("1.0"), "d1"), second])
    store, name, stamp, now = _past_the_ttl(tmp_path, fetcher)
    read_page = store.read_page
    reads = _counting_reads(store)
    page = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0]).page(name)
    assert page == (second[0] if isinstance(second, tuple) else _page("1.0"))
    assert (store.page_stamp(name) != stamp) is rewritten
    assert bool(reads) is read
    state = read_page(name)
    assert state is not None
    assert (state.page, state.digest) == (page, second[1] if isinstance(second, tuple) else "d1")
    assert state.checked == (0.0 if isinstance(second, Exception) else 100.0)


class _ByDigest(_Digested):
    """:class:`_Digested` answering as ``HttpFetcher`` does when asked by digest: ``page=None``,
    nothing parsed, for the answer of that digest."""

    def __init__(self, answers: list[tuple[ProjectPage, str] | Exception]) -> None:
        super().__init__(answers)
        self.digests: list[str | None] = []

    def project(
        self, name: str, *, etag: str | None, last_modified: str | None, digest: str | None = None
    ) -> Fetched:
        self.digests.append(digest)
        fetched = super().project(name, etag=etag, last_modified=last_modified)
        if digest is not None and fetched.digest == digest:
            return Fetched(page=None, digest=digest)
        return fetched


def _past_the_ttl(
    tmp_path: Path, fetcher: _Digested
) -> tuple[CacheStore, NormalizedName, PageStamp | None, list[float]]:
    """A nest whose page of "pkg" a process had from ``fetcher`` at 0, the stamp of its state,
    and a clock at 100 for the next process: past the TTL of 60."""
    now = [0.0]
    store = CacheStore(tmp_path, "https://example.com/simple/")
    name = NormalizedName("pkg")
    MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0]).page(name)
    stamp = store.page_stamp(name)
    now[0] = 100.0
    return store, name, stamp, now


def _counting_reads(store: CacheStore) -> list[str]:
    reads: list[str] = []
    read_page = store.read_page

    def counted(name: NormalizedName) -> PageState | None:
        reads.append(name)
        return read_page(name)

    store.read_page = counted  # type: ignore[method-assign]
    return reads


@pytest.mark.parametrize(
    ("second", "answered", "read", "rewritten"),
    [
        # the same answer: confirmed on disk, the state neither parsed again nor read
        ((_page("1.0"), "d1"), True, False, False),
        ((_page("1.0", "2.0"), "d2"), _page("1.0", "2.0"), False, True),  # a new release: the new page
        (UpstreamError("upstream answered with HTTP 503"), _page("1.0"), True, False),  # the held one, stale
    ],
    ids=["same", "changed", "upstream-fails"],
)
def test_a_new_process_reconfirms_a_page_past_its_ttl_by_digest_without_reading_it(
    tmp_path: Path,
    second: tuple[ProjectPage, str] | Exception,
    answered: bool | ProjectPage,
    read: bool,
    rewritten: bool,
) -> None:
    """What a fresh process does before it serves a rendering kept of a page past its TTL: the
    upstream is asked by the digest of what the state was read from; whatever the answer, the
    page is then had without asking it again."""
    fetcher = _ByDigest([(_page("1.0"), "d1"), second])
    store, name, stamp, now = _past_the_ttl(tmp_path, fetcher)
    reads = _counting_reads(store)
    index = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0])
    assert index.reconfirm(name) == answered
    assert fetcher.digests == [None, "d1"]
    assert bool(reads) is read
    assert (store.page_stamp(name) != stamp) is rewritten
    assert store.confirmed_at(name) == (100.0 if answered is True else None)
    assert index.page(name) == (_page("1.0") if answered is True else answered)
    assert len(fetcher.asked) == 2


@pytest.mark.parametrize("case", ["within-ttl", "held", "offline"])
def test_reconfirm_asks_nothing_of_a_page_it_is_not_for(tmp_path: Path, case: str) -> None:
    """A page within its TTL, or held in memory (past its TTL, :meth:`page` asks by digest), or
    an offline mirror: nothing is asked, nothing confirmed."""
    fetcher = _ByDigest([(_page("1.0"), "d1"), (_page("1.0"), "d1")])
    now = [0.0]
    store = CacheStore(tmp_path, "https://example.com/simple/")
    name = NormalizedName("pkg")
    first = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0])
    held = first.page(name)
    now[0] = 30.0 if case == "within-ttl" else 100.0
    index = (
        first
        if case == "held"
        else MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0], offline=case == "offline")
    )
    assert index.reconfirm(name) is False
    assert len(fetcher.asked) == 1
    assert store.confirmed_at(name) is None
    if case == "held":  # asked by digest, the same answer: the page held stands, nothing parsed
        assert index.page(name) is held
        assert fetcher.digests == [None, "d1"]


def test_a_reconfirmed_page_gone_from_the_upstream_is_not_found(tmp_path: Path) -> None:
    fetcher = _ByDigest([(_page("1.0"), "d1"), NotFound("project 'pkg' is not on the upstream index")])
    store, name, _, now = _past_the_ttl(tmp_path, fetcher)
    index = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0])
    with pytest.raises(NotFound, match="not on the upstream index"):
        index.reconfirm(name)
    with pytest.raises(NotFound, match="not on the upstream index"):
        index.page(name)
    assert len(fetcher.asked) == 2


def test_a_state_left_for_after_the_answer_is_written_once_by_whoever_needs_it_first(tmp_path: Path) -> None:
    """A new page's state left for after its answer (``later``) is written by another request that
    must save a rendering under it, or by its own request, once."""
    fetcher = _Digested([(_page("1.0"), "d1")])
    store = CacheStore(tmp_path, "https://example.com/simple/")
    name = NormalizedName("pkg")
    index = MirrorIndex(store, fetcher, ttl=60, clock=lambda: 0.0)
    with later.collecting() as work:
        page = index.page(name)
    assert store.page_stamp(name) is None
    assert index.checked(name, page) is None  # not on disk: nothing may be saved under it yet
    index.settle(name)
    stamp = store.page_stamp(name)
    assert stamp is not None
    assert index.checked(name, page) == 0.0
    later.run(work)  # the request that fetched it: written already
    assert store.page_stamp(name) == stamp


@pytest.mark.parametrize(
    ("collecting", "in_background", "max_files", "written_after"),
    [
        (True, False, later.MAX_FILES, True),  # a request answered first: written after, from memory
        (True, False, 0, True),  # a large page too (answered from the file it is rendered into)
        (True, True, later.MAX_FILES, True),  # made ahead: held in memory, written after
        (True, True, 0, False),  # made ahead, large: a request that waits for it finds it on disk
        (False, False, later.MAX_FILES, False),  # a script: finds on disk what it was answered
    ],
    ids=["request", "request-large", "background", "background-large", "script"],
)
def test_a_new_state_is_written_after_the_answer_unless_nobody_waits_on_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    collecting: bool,
    in_background: bool,
    max_files: int,
    written_after: bool,
) -> None:
    monkeypatch.setattr(later, "MAX_FILES", max_files)
    store = CacheStore(tmp_path, "https://example.com/simple/")
    name = NormalizedName("pkg")
    index = MirrorIndex(store, _Digested([(_page("1.0"), "d1")]), ttl=60, clock=lambda: 0.0)
    context = upstream_module.in_background() if in_background else contextlib.nullcontext()
    with later.collecting(collecting) as work, context:
        index.page(name)
    assert (store.page_stamp(name) is None) is written_after
    later.run(work)
    assert store.page_stamp(name) is not None


@pytest.mark.parametrize(
    ("answer", "made"),
    [
        ((_page("1.0"), "d1"), True),  # a new project with a file: its first download's lock folder
        ((ProjectPage.build("pkg", []), "d1"), False),  # no file to download: no folder
        (NotFound("project 'pkg' is not on the upstream index"), False),  # nothing for a name made up
    ],
    ids=["files", "no-files", "404"],
)
def test_a_new_page_has_its_lock_folder_made_once_its_answer_is_out(
    tmp_path: Path, answer: tuple[ProjectPage, str] | Exception, made: bool
) -> None:
    """The folder of the locks of a new project's files is made once its page is answered, not on
    the way of the client's request for a file, where it costs an inode. Its files' folder is
    not: its mtime stamps the files kept, and a new one would hold off the page's renderings."""
    store = CacheStore(tmp_path, "https://example.com/simple/")
    name = NormalizedName("pkg")
    index = MirrorIndex(store, _Digested([answer]), ttl=60, clock=lambda: 0.0)
    with later.collecting() as work, contextlib.suppress(NotFound):
        page = index.page(name)
    assert not (store.locks / name).exists()  # the answer waits for none of it
    later.run(work)
    assert (store.locks / name).is_dir() is made
    assert not (store.files / name).exists()
    if made:
        assert index.checked(name, page) == 0.0  # its renderings may be saved


def test_renderings_left_for_after_their_answers_are_saved_in_any_order(
    make_mirror: MirrorFactory, upstream: PrivateIndex
) -> None:
    """Two installers' first requests for a page, the second's work done first: it writes the
    page's state before its rendering, and both renderings are kept."""
    upstream.add("pkg", "1.0")
    repo = make_mirror().repository
    name = NormalizedName("pkg")
    with later.collecting() as first:
        repo.rendered(name, JSON, gzip=False, base="http://a.example.com", cached_metadata=False)
    with later.collecting() as second:
        repo.rendered(name, JSON, gzip=False, base="http://b.example.com", cached_metadata=False)
    assert repo.store.page_stamp(name) is None
    later.run(second)
    later.run(first)
    for base in ("http://a.example.com", "http://b.example.com"):
        assert repo.pages.path(name, repository._kind(JSON, None, base, meta=False)).is_file()


@pytest.mark.parametrize(
    ("case", "asked", "read"),
    [
        ("new-process", 1, False),  # within the TTL: the entry from the state alone
        ("dropped", 1, False),  # dropped from memory: the same
        ("held", 1, False),  # the page in memory: its entry
        ("offline", 1, False),  # past the TTL, offline: the state stands
        ("past-ttl", 2, True),  # the upstream asked again (the same page), the page made
        ("kept", 1, True),  # a cached file with its record: what the page made lists, the record
        ("unlisted", 1, True),  # not on the state: the page made says so
    ],
)
def test_a_file_of_a_page_not_held_is_read_from_its_state_alone(
    tmp_path: Path, case: str, asked: int, read: bool
) -> None:
    """uv asks for every page, then for each wheel's metadata and file, dozens at once: each of
    those made again the page dropped from memory meanwhile (60-100 ms of a page of 15,000 files
    under the GIL). A file's entry is now read from the state of a page not held, within its TTL,
    a column's line at a time (``read_page_entry``); the page is made only when the state cannot
    say (past the TTL, a record of the file kept, a file it does not list)."""
    fetcher = _Answers([_page("1.0", "2.0"), _page("1.0", "2.0")], ['"1"', '"1"'])
    now = [0.0]
    store = CacheStore(tmp_path, "https://example.com/simple/")
    name = NormalizedName("pkg")
    first = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0])
    made = first.page(name)
    filename = "pkg-9.0.tar.gz" if case == "unlisted" else "pkg-1.0.tar.gz"
    expected = made.file(filename)
    if case == "kept":
        listed = made.file(filename)
        assert listed is not None
        expected = listed.with_changes(size=3)  # learned by the download
        (store.files / name).mkdir(parents=True)
        (store.files / name / filename).write_bytes(b"abc")
        store.write_record(name, expected)
    now[0] = 100.0 if case in ("offline", "past-ttl") else 30.0
    index = MirrorIndex(store, fetcher, ttl=60, clock=lambda: now[0], offline=case == "offline")
    if case == "dropped":
        index = first
        index._evict(name)
    elif case == "held":
        index = first
    stamp = store.page_stamp(name)
    reads = _counting_reads(store)
    if case == "unlisted":
        with pytest.raises(NotFound, match=r"has no file 'pkg-9\.0\.tar\.gz'"):
            index.entry(name, filename)
    else:
        assert index.entry(name, filename) == (expected, stamp)
        assert index.file(name, filename) == expected
    assert len(fetcher.asked) == asked
    assert bool(reads) is read
    assert (name in index._loaded) is (case in ("held", "past-ttl", "kept", "unlisted"))


@pytest.mark.parametrize(
    ("ages", "keep", "left"),
    [
        ([100, 50, 10, 5], 10, ["n2", "n3"]),  # past the TTL (older than 30 s): dropped
        ([10, 9, 8, 7, 6], 3, ["n2", "n3", "n4"]),  # over the cap: the oldest dropped
        ([100, 9, 8], 1, ["n2"]),
        ([], 5, []),
    ],
)
def test_notes_of_missing_projects_are_trimmed_by_age_then_count(
    tmp_path: Path, ages: list[int], keep: int, left: list[str]
) -> None:
    store = CacheStore(tmp_path, "https://example.com/simple/")
    now = time.time()
    for i, age in enumerate(ages):
        store.note_missing(NormalizedName(f"n{i}"), now - age)
        os.utime(store.missing / f"n{i}", (now - age, now - age))
    store.trim_missing(keep=keep, expired_before=now - 30)
    assert sorted(path.name for path in store.missing.glob("*")) == left


def test_a_merged_source_build_s_page_while_down_lists_its_built_and_cached_files(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    files: dict[str, str],
    http: requests.Session,
) -> None:
    # a source build merged with the upstream's files (private: no), its upstream answering 503
    wheel = next(f for f in files if f.endswith(".whl") and "-1.0-" in f)
    mirror = make_mirror()
    assert http.get(file_url(mirror, wheel)).status_code == 200  # cached
    mirror.stop()
    build = SourceBuild(name=NormalizedName("pkg"), repo_type="git", repo_url="x", private=False)
    config = mirror.config.with_changes(ttl=0, source_builds=(build,))
    repository = Repository(config)  # no server: nothing is built on demand
    try:
        built = make_wheel(PackageSpec(name="pkg", version="3.0"), mirror.config.nestegg_dir)
        repository.private.add(built)

        def listed() -> set[str]:
            rendered = repository.rendered(NormalizedName("pkg"), JSON)
            return {f["filename"] for f in json.loads(rendered.body)["files"]}

        assert listed() == {*files, built.name}
        faults.status = 503
        assert listed() == {wheel, built.name}
        faults.status = None
        assert listed() == {*files, built.name}
    finally:
        repository.close()
