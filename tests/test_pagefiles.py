"""Rendered pages on disk: served without the page's model while nothing they came from changes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Config
from nestegg_core.index import later as later_module
from nestegg_core.index import repository as repository_module
from nestegg_core.index.downloads import Download
from nestegg_core.index.repository import Rendered, Repository
from nestegg_core.index.upstream import Fetched, FileStream
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.render import HTML_V1, JSON_V1, TEXT_HTML, MetadataFor, UrlFor, render_project
from nestegg_core.storage import pagefiles
from nestegg_core.storage import store as store_module
from nestegg_core.storage.pagefiles import RenderedPages, disk_token
from nestegg_core.storage.store import CacheStore
from nestegg_core.storage.usage import prune
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory, Served, idle, pip_download

NAME = NormalizedName("demo")
SECRET = NormalizedName("secret")


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # a files folder counts as settled at once (the 1 s rule has a test of its own)
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)


@pytest.fixture
def published(upstream: PrivateIndex) -> None:
    upstream.add("demo", "1.0")
    upstream.add("demo", "1.1")


def repository(tmp_path: Path, upstream: PrivateIndex, **changes: object) -> Repository:
    config = Config(nestegg_dir=tmp_path / "nest", index_url=upstream.index_url).with_changes(**changes)
    return Repository(config)


def body(rendered: Rendered) -> bytes:
    if rendered.stream is not None:
        return b"".join(rendered.stream)
    if rendered.file is None:
        return rendered.body
    try:
        return rendered.file.handle.readall()
    finally:
        rendered.file.close()


def state_reads(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names whose state ``repo`` reads from now on."""
    reads: list[str] = []
    read_page = repo.store.read_page

    def counted(name: NormalizedName) -> object:
        reads.append(name)
        return read_page(name)

    monkeypatch.setattr(repo.store, "read_page", counted)
    return reads


def no_state_reads(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"the state of {name!r} was read")

    monkeypatch.setattr(repo.store, "read_page", refuse)


@pytest.mark.usefixtures("published")
@pytest.mark.parametrize("content_type", [JSON_V1, HTML_V1, TEXT_HTML])
def test_a_new_process_serves_the_rendered_page_without_reading_its_state(
    tmp_path: Path, upstream: PrivateIndex, faults: Faults, monkeypatch: pytest.MonkeyPatch, content_type: str
) -> None:
    first = repository(tmp_path, upstream).rendered(NAME, content_type)
    assert first.page is not None  # made from the page
    faults.reset()
    later = repository(tmp_path, upstream)
    no_state_reads(later, monkeypatch)
    again = later.rendered(NAME, content_type)
    assert again.page is None  # read back, the page never made
    assert (body(again), again.etag) == (first.body, first.etag)
    assert faults.count() == 0  # within the TTL: the upstream is not asked either


BASE_A, BASE_B = "http://127.0.0.1:8001", "http://mirror.example.com:8002/nest"
PIP = 'pip/26.3 {"installer":{"name":"pip","version":"26.3"},"python":"3.11.7"}'


@pytest.mark.usefixtures("published")
@pytest.mark.parametrize("content_type", [JSON_V1, HTML_V1])
@pytest.mark.parametrize("gzip_asked", [False, True])
@pytest.mark.parametrize("meta", [True, False])
@pytest.mark.parametrize("asked", ["outside a request", "small", "large", "large, as long"])
def test_a_page_for_another_base_is_made_from_its_rendering_for_one_without_its_state(
    tmp_path: Path, upstream: PrivateIndex, faults: Faults, monkeypatch: pytest.MonkeyPatch,
    content_type: str, gzip_asked: bool, meta: bool, asked: str,
) -> None:  # fmt: skip
    first = repository(tmp_path, upstream).rendered(NAME, content_type, base=BASE_A, cached_metadata=meta)
    faults.reset()
    later = repository(tmp_path, upstream)
    no_state_reads(later, monkeypatch)
    if asked.startswith("large"):  # held in memory no longer: sent as it is made
        monkeypatch.setattr(repository_module, "_WARM_PAGE", 0)
    # another port of as many digits: a page as long as the one it is made from
    new_base = BASE_A.replace("8001", "9001") if asked.endswith("as long") else BASE_B
    monkeypatch.setattr(repository_module, "_IDLE", 0.05)
    renderings = later.pages.folder / "demo.clients"
    before = set(os.listdir(renderings))
    # an installer's request: a plain page is answered first, and kept once the mirror is quiet
    with later_module.collecting(asked != "outside a request"):
        made = later.rendered(NAME, content_type, base=new_base, gzip=gzip_asked, cached_metadata=meta)
    assert made.page is None
    assert (made.stream is not None) == (asked.startswith("large") and not gzip_asked)
    answered_first = asked != "outside a request" and not gzip_asked
    assert (set(os.listdir(renderings)) == before) == answered_first
    made_body = body(made)
    if made.stream is not None:
        assert made.stream.size == len(made_body)
    idle(later.keeper)
    assert len(set(os.listdir(renderings)) - before) == 1
    # what a nest that never saw BASE_A renders for the new base, byte for byte
    rendered = repository(tmp_path / "elsewhere", upstream).rendered(
        NAME, content_type, base=new_base, gzip=gzip_asked, cached_metadata=meta
    )
    assert (made_body, made.gzip) == (body(rendered), gzip_asked)
    # a plain page's ETag is known before its bytes are made; a gzip one's is its bytes' digest
    prefixes = (f"{BASE_A}/files/demo/", f"{new_base}/files/demo/")
    expected = rendered.etag if gzip_asked else pagefiles.rebased_etag(first.etag, *prefixes)
    assert made.etag == expected
    assert faults.count(prefix="/simple/demo") == 1  # the other nest's
    # and kept under that ETag: the next process reads it back
    again = repository(tmp_path, upstream)
    no_state_reads(again, monkeypatch)
    kept = again.rendered(NAME, content_type, base=new_base, gzip=gzip_asked, cached_metadata=meta)
    assert (body(kept), kept.etag, kept.stream) == (made_body, made.etag, None)


@pytest.mark.usefixtures("published")
@pytest.mark.parametrize("case", ["state changed", "unkept past the bound"])
def test_a_page_answered_first_is_not_kept_when_it_may_no_longer_be_the_page(
    tmp_path: Path, upstream: PrivateIndex, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    repository(tmp_path, upstream).rendered(NAME, JSON_V1, base=BASE_A)
    later = repository(tmp_path, upstream)
    monkeypatch.setattr(repository_module, "_IDLE", 0.05)
    monkeypatch.setattr(repository_module, "_MAX_UNKEPT", 1)
    renderings = later.pages.folder / "demo.clients"
    before = set(os.listdir(renderings))
    later.keeper.stop()  # nothing kept until the page has changed, or more were answered
    with later_module.collecting():
        later.rendered(NAME, JSON_V1, base=BASE_B)
    if case == "state changed":  # a new release: what was answered is the page before it
        upstream.add("demo", "2.0")
        repository(tmp_path, upstream, ttl=0).rendered(NAME, JSON_V1)
    else:  # a second base answered: past the bound, the first one's is not kept
        with later_module.collecting():
            later.rendered(NAME, JSON_V1, base=BASE_A.replace("8001", "8003"))
    later.keeper.start()
    later.keeper.changed(NAME)
    idle(later.keeper)
    made = set(os.listdir(renderings)) - before
    assert len(made) == (0 if case == "state changed" else 1)
    if made:  # the one answered last
        (kept,) = made
        assert kept == "json-@" + hashlib.sha256(BASE_A.replace("8001", "8003").encode()).hexdigest()[:12]


@pytest.mark.usefixtures("published")
@pytest.mark.parametrize(
    "case", ["past the ttl", "state changed", "another kind", "no base said", "cut short"]
)
@pytest.mark.parametrize("in_request", [False, True])
@pytest.mark.parametrize("large", [False, True])
def test_a_rendering_for_another_base_is_not_used_when_it_may_not_be_the_page(
    tmp_path: Path, upstream: PrivateIndex, faults: Faults, monkeypatch: pytest.MonkeyPatch, case: str,
    in_request: bool, large: bool,
) -> None:  # fmt: skip
    if large:
        monkeypatch.setattr(repository_module, "_WARM_PAGE", 0)
    first = repository(tmp_path, upstream)
    first.rendered(NAME, JSON_V1, base=BASE_A, cached_metadata=case != "another kind")
    if case == "state changed":  # a new release: the rendering for BASE_A is of the page before
        upstream.add("demo", "2.0")
        repository(tmp_path, upstream, ttl=0).rendered(NAME, JSON_V1)
    if case == "no base said":
        monkeypatch.setattr(pagefiles, "_MAX_BASE", 0)
        first.rendered(NAME, JSON_V1, base=BASE_A.replace("8001", "8003"))
        monkeypatch.undo()
        monkeypatch.setattr(store_module, "SETTLE_NS", 0)
        if large:
            monkeypatch.setattr(repository_module, "_WARM_PAGE", 0)
        first.pages.path(NAME, "json-@" + hashlib.sha256(BASE_A.encode()).hexdigest()[:12]).unlink()
    faults.reset()
    later = repository(tmp_path, upstream, ttl=0 if case == "past the ttl" else 600)
    if case == "cut short":  # the rendering for BASE_A is not the length its header says once read
        opened, source = later.pages.open, "json-@" + hashlib.sha256(BASE_A.encode()).hexdigest()[:12]

        def cut(name: NormalizedName, kind: str, token: str) -> pagefiles.PageFile | None:
            found = opened(name, kind, token)
            return found if found is None or kind != source else replace(found, size=found.size + 1)

        monkeypatch.setattr(later.pages, "open", cut)
    reads = state_reads(later, monkeypatch)
    with later_module.collecting(in_request) as work:
        made = body(later.rendered(NAME, JSON_V1, base=BASE_B))
    later_module.run(work)
    if case == "past the ttl":
        assert faults.count(prefix="/simple/demo") == 1  # the upstream asked, as for any page past it
    else:
        assert reads == [NAME]  # made from the page
    rendered = repository(tmp_path / "elsewhere", upstream).rendered(NAME, JSON_V1, base=BASE_B)
    assert made == body(rendered)
    assert (b"demo-2.0" in made) == (case == "state changed")


@pytest.mark.usefixtures("published")
def test_pip_through_a_mirror_on_a_new_port_gets_the_page_made_from_the_last_one_s(
    make_mirror: MirrorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: requests.Session
) -> None:
    first = make_mirror()
    pip_download(first.index_url, tmp_path / "one", "demo")
    first.stop()
    second = make_mirror()
    reads = state_reads(second.repository, monkeypatch)
    pip_download(second.index_url, tmp_path / "two", "demo")
    assert reads == []  # the page's state was not read, nor its model made
    assert os.listdir(tmp_path / "two") == os.listdir(tmp_path / "one") == ["demo-1.1-py3-none-any.whl"]
    page = http.get(second.index_url + "demo/", headers={"User-Agent": PIP, "Accept": JSON_V1}).json()
    assert [entry["url"] for entry in page["files"]] == [
        f"{second.url}/files/demo/{entry['filename']}" for entry in page["files"]
    ]


@pytest.mark.usefixtures("published")
@pytest.mark.parametrize("large", [False, True])
def test_a_page_answered_before_it_is_kept_for_a_new_port_answers_as_any_page(
    make_mirror: MirrorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: requests.Session,
    large: bool,
) -> None:  # fmt: skip
    first = make_mirror()
    pip_download(first.index_url, tmp_path / "one", "demo")
    first.stop()
    streams: list[pagefiles.PageStream] = []

    class Counted(pagefiles.PageStream):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            streams.append(self)

    monkeypatch.setattr(repository_module, "PageStream", Counted)
    monkeypatch.setattr(repository_module, "_IDLE", 0.05)
    if large:  # sent as it is made, not held
        monkeypatch.setattr(repository_module, "_WARM_PAGE", 0)
    headers = {"User-Agent": PIP, "Accept": JSON_V1}
    second = make_mirror()
    url = second.index_url + "demo/"
    head = http.head(url, headers=headers)  # a HEAD made as it is sent too: nothing is
    assert (head.status_code, len(streams)) == (200, int(large))
    third = make_mirror()
    url = third.index_url + "demo/"
    sent = http.get(url, headers=headers)
    assert (sent.status_code, len(streams)) == (200, 2 * large)
    assert int(sent.headers["Content-Length"]) == len(sent.content)
    assert [entry["url"] for entry in sent.json()["files"]] == [
        f"{third.url}/files/demo/{entry['filename']}" for entry in sent.json()["files"]
    ]
    # answered again as it was while the mirror is busy; kept once it is quiet, under the ETag
    # it was sent with: read back then, and a copy of it is current
    busy = http.get(url, headers=headers)
    assert (busy.content, busy.headers["ETag"], len(streams)) == (
        sent.content,
        sent.headers["ETag"],
        3 * large,
    )
    idle(third.repository.keeper)
    again = http.get(url, headers=headers)
    assert (again.content, again.headers["ETag"], len(streams)) == (
        sent.content,
        sent.headers["ETag"],
        3 * large,
    )
    kept_for = "@" + hashlib.sha256(third.url.encode()).hexdigest()[:12]  # the kind's end
    assert any(kept.endswith(kept_for) for kept in os.listdir(third.repository.pages.folder / "demo.clients"))
    unchanged = http.get(url, headers={**headers, "If-None-Match": sent.headers["ETag"]})
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    # as a port whose page is rendered anew would send it
    fresh = make_mirror(nestegg_dir=tmp_path / "fresh")
    assert http.get(fresh.index_url + "demo/", headers=headers).content == sent.content.replace(
        third.url.encode(), fresh.url.encode()
    )
    assert all(stream.source.handle.closed for stream in streams)  # sent, or not: closed


@pytest.mark.usefixtures("published")
def test_the_ttl_still_holds(tmp_path: Path, upstream: PrivateIndex, faults: Faults) -> None:
    repository(tmp_path, upstream).rendered(NAME, JSON_V1)
    faults.reset()
    repository(tmp_path, upstream, ttl=0).rendered(NAME, JSON_V1)
    assert faults.count(prefix="/simple/demo") == 1


@pytest.mark.usefixtures("published")
def test_a_new_upstream_file_makes_a_new_page(tmp_path: Path, upstream: PrivateIndex) -> None:
    repository(tmp_path, upstream).rendered(NAME, JSON_V1)
    upstream.add("demo", "2.0")
    later = repository(tmp_path, upstream, ttl=0)
    assert b"demo-2.0.tar.gz" in body(later.rendered(NAME, JSON_V1))
    # and the next process takes that one from disk
    assert b"demo-2.0.tar.gz" in body(repository(tmp_path, upstream).rendered(NAME, JSON_V1))


@pytest.mark.usefixtures("published")
def test_a_file_cached_just_as_the_index_lists_it_leaves_the_rendering(
    tmp_path: Path, upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    before = body(repository(tmp_path, upstream).rendered(NAME, JSON_V1))
    mirror = make_mirror()
    for filename in ("demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"):
        assert http.get(f"{mirror.url}/files/demo/{filename}").status_code == 200
    # the records say what the upstream's page says (size, sha256, metadata): the page is the same,
    # and a new process serves the rendering it has, without making the page again
    later = repository(tmp_path, upstream)
    no_state_reads(later, monkeypatch)
    after = later.rendered(NAME, JSON_V1)
    assert (after.page, body(after)) == (None, before)


class _Bare:
    """A fetcher whose page of ``demo`` lists its sdist without size, with an md5 only (as an old
    index may), and serves it."""

    def __init__(self) -> None:
        self.data = b"not really a tarball"
        self.listed = True

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        md5 = {"md5": hashlib.md5(self.data).hexdigest()}  # noqa: S324 - an old index's hash
        files = [DistFile(filename="demo-1.0.tar.gz", url="https://example.com/demo-1.0.tar.gz", hashes=md5)]
        return Fetched(page=ProjectPage.build(name, files if self.listed else []))

    def open(self, url: str) -> FileStream:  # noqa: ARG002
        return Served(self.data)


def test_a_file_cached_with_more_than_the_index_says_makes_the_page_again(tmp_path: Path) -> None:
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/")
    upstream = _Bare()
    repo = Repository(config, fetcher=upstream)
    repo.close()  # nothing made in the background (test_refresh): the next request makes the page
    assert b"sha256" not in body(repo.rendered(NAME, JSON_V1))
    download = repo.open_file(NAME, "demo-1.0.tar.gz")
    assert isinstance(download, Download)
    assert b"".join(download.read()) == upstream.data
    for thread in threading.enumerate():  # the download's thread ends once all is written
        if thread.name.startswith("nestegg-download-"):
            thread.join(timeout=10)
    # the record tells its size and sha256 (the md5 vouched for the bytes): the page is made again
    # (in a new process too), with them
    digest = hashlib.sha256(upstream.data).hexdigest().encode()
    after = Repository(config, fetcher=upstream).rendered(NAME, JSON_V1)
    assert after.page is not None
    assert digest in body(after)
    assert digest in body(repo.rendered(NAME, JSON_V1))
    assert Repository(config, fetcher=upstream).rendered(NAME, JSON_V1).page is None  # kept again
    # the upstream drops the file: still listed, from its record, until it is pruned
    upstream.listed = False
    Repository(config.with_changes(ttl=0), fetcher=upstream).rendered(NAME, JSON_V1)
    assert b"demo-1.0.tar.gz" in body(Repository(config, fetcher=upstream).rendered(NAME, JSON_V1))
    assert len(prune(config.nestegg_dir, max_size=0).removed) == 1
    assert b"demo-1.0.tar.gz" not in body(Repository(config, fetcher=upstream).rendered(NAME, JSON_V1))


@pytest.mark.usefixtures("published")
def test_damaged_or_foreign_rendered_files_are_a_miss(tmp_path: Path, upstream: PrivateIndex) -> None:
    first = repository(tmp_path, upstream).rendered(NAME, JSON_V1)
    repo = repository(tmp_path, upstream)
    path = repo.pages.path(NAME, "json")
    for damaged in (b"", b"garbage", b"nestegg-page-1 a b\n{}", b"x" * 2000, path.read_bytes()[:-1]):
        path.write_bytes(damaged)
        again = repository(tmp_path, upstream).rendered(NAME, JSON_V1)
        assert body(again) == first.body
        assert again.etag == first.etag


@pytest.mark.usefixtures("published")
def test_cached_files_and_metadata_are_served_without_the_page(
    tmp_path: Path, upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    mirror = make_mirror()
    wheel = "demo-1.0-py3-none-any.whl"
    expected = {}
    for filename in (wheel, f"{wheel}.metadata"):
        response = http.get(f"{mirror.url}/files/demo/{filename}")
        assert response.status_code == 200
        expected[filename] = response.content
    later = repository(tmp_path, upstream)
    no_state_reads(later, monkeypatch)
    monkeypatch.setattr(later.mirror, "page", lambda name: pytest.fail(f"page of {name} made"))
    path, metadata = later.open_any(NAME, wheel)
    assert not metadata
    assert isinstance(path, Path)
    assert path.read_bytes() == expected[wheel]
    path, metadata = later.open_any(NAME, f"{wheel}.metadata")
    assert metadata
    assert isinstance(path, Path)
    assert path.read_bytes() == expected[f"{wheel}.metadata"]


def test_private_names_never_use_the_mirrors_renderings(tmp_path: Path, upstream: PrivateIndex) -> None:
    upstream.add("secret", "1.0")
    public = repository(tmp_path, upstream)
    public.rendered(SECRET, JSON_V1)
    assert public.pages.path(SECRET, "json").exists()
    private = repository(tmp_path, upstream, private_names=("secret",))
    with pytest.raises(Exception, match="private project 'secret' has no files"):
        private.rendered(SECRET, JSON_V1)


def test_the_token_waits_for_the_change_marker_to_settle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SETTLE_NS", 1_000_000_000)
    store = CacheStore(tmp_path, "http://example.com/simple/")
    state, marker = store.page_path(NAME), store.files / "demo" / store_module.CHANGED
    assert disk_token(state, marker) is None  # no state
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    settled = disk_token(state, marker)
    assert settled is not None  # no marker: nothing to wait for
    (store.files / "demo").mkdir(parents=True)
    (store.files / "demo" / "demo-1.0.tar.gz").write_text("")  # files come and go: no matter
    assert disk_token(state, marker) == settled
    store.page_changed(NAME)
    assert disk_token(state, marker) is None  # just changed: a second change may share its tick
    old = time.time() - 5
    os.utime(marker, (old, old))
    token = disk_token(state, marker)
    assert token not in (None, settled)
    state.write_text("{} ")  # a new state: a new token
    assert disk_token(state, marker) not in (None, token)


@pytest.mark.parametrize("token", ["a.b.c.d", "other"])
def test_open_only_what_was_saved_for_the_token(tmp_path: Path, token: str) -> None:
    pages = RenderedPages(tmp_path)
    saved = "a.b.c.d"
    written = pages.write(NAME, "json", token=saved, checked=12.5, pieces=[b"{}"])
    assert written is not None
    written.close()
    found = pages.open(NAME, "json", token)
    if token != saved:
        assert found is None
        return
    assert found is not None
    assert (found.size, found.etag, found.checked, found.handle.readall()) == (2, written.etag, 12.5, b"{}")
    found.close()


@pytest.mark.parametrize(
    ("base", "kept"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://mirror.example.com/nest", "https://mirror.example.com/nest"),
        (None, None),
        ("", None),
        ("http://example.com/" + "a" * 200, None),  # past what a header holds: unsaid
        ("http://example.com/a b", None),  # no URL: unsaid
        ("http://example.com/\u00e9", None),
    ],
)
@pytest.mark.parametrize("pending", [False, True])
def test_a_rendering_keeps_the_base_of_its_file_urls(
    tmp_path: Path, base: str | None, kept: str | None, pending: bool
) -> None:
    pages, stamp = RenderedPages(tmp_path), "a.b.c.d"
    if pending:
        made = pages.pending(NAME, "json-@1", [b"{}"], base=base)
        assert made is not None
        assert made.keep(stamp, 1.0)
        made.file.close()
    else:
        written = pages.write(NAME, "json-@1", token=stamp, checked=1.0, pieces=[b"{}"], base=base)
        assert written is not None
        written.close()
    found = pages.open(NAME, "json-@1", stamp)
    assert found is not None
    assert (found.base, found.handle.readall()) == (kept, b"{}")
    found.close()


@pytest.mark.parametrize("field", [b"\xff\xfe", b"http://a b", b"- extra"])
def test_a_header_with_a_bad_base_is_a_miss(tmp_path: Path, field: bytes) -> None:
    pages, stamp = RenderedPages(tmp_path), "a.b.c.d"
    written = pages.write(NAME, "json-@1", token=stamp, checked=1.0, pieces=[b"{}"], base="http://a")
    assert written is not None
    written.close()
    path = pages.path(NAME, "json-@1")
    data = path.read_bytes()
    path.write_bytes(
        data.replace(b" http://a ", b" " + field + b" ".ljust(len(b" http://a ") - len(field) - 1), 1)
    )
    assert pages.open(NAME, "json-@1", stamp) is None


def test_a_base_the_header_has_no_room_for_goes_unsaid(tmp_path: Path) -> None:
    pages, stamp = RenderedPages(tmp_path), "a" * 300  # no token is this long: the room is
    made = pages.pending(NAME, "json-@1", [b"{}"], base="http://example.com/" + "b" * 100)
    assert made is not None
    assert made.keep(stamp, 1.0)
    made.file.close()
    found = pages.open(NAME, "json-@1", stamp)
    assert found is not None
    assert (found.base, found.handle.readall()) == (None, b"{}")
    found.close()


def test_the_renderings_for_other_bases_are_those_of_the_same_kind(tmp_path: Path) -> None:
    pages, stamp = RenderedPages(tmp_path), "a.b.c.d"
    for kind in ("json_nm-@1", "json_nm-@2", "json_nm-@3", "json-@4", "json_nm-c@5", "html_nm-@6"):
        written = pages.write(NAME, kind, token=stamp, checked=1.0, pieces=[b"{}"], gzip=kind == "json_nm-@3")
        assert written is not None
        written.close()
    newer = time.time_ns() + 10**9
    os.utime(pages.path(NAME, "json_nm-@1"), ns=(newer, newer))
    assert pages.elsewhere(NAME, "json_nm-@9") == ["json_nm-@1", "json_nm-@2"]  # newest first, no gzip
    assert pages.elsewhere(NAME, "json_nm-@2") == ["json_nm-@1"]
    assert pages.elsewhere(NAME, "json_nm-c@9") == ["json_nm-c@5"]
    assert pages.elsewhere(NAME, "json_nm") == pages.elsewhere(SECRET, "json_nm-@1") == []


@pytest.mark.parametrize("pieces", [[], [b"{}"], [b"{", b"", b'"a":', b"1}"], [b"x" * 70_000] * 3])
def test_a_page_written_in_pieces_reads_back_whole(tmp_path: Path, pieces: list[bytes]) -> None:
    pages, stamp = RenderedPages(tmp_path / "rendered"), "a.b.c.d"
    written = pages.write(NAME, "json", token=stamp, checked=12.5, pieces=iter(pieces))
    whole = b"".join(pieces)
    assert written is not None
    assert (written.size, written.etag, written.token, written.handle.readall()) == (
        len(whole),
        pagefiles.etag(whole),
        stamp,
        whole,
    )
    written.close()
    again = pages.open(NAME, "json", stamp)
    assert again is not None
    assert (again.etag, again.checked, again.handle.readall()) == (pagefiles.etag(whole), 12.5, whole)
    again.close()
    # the gzip encoding is made when asked for, not beside the plain one
    assert pages.open(NAME, "json.gz", stamp) is None
    packed = pages.write(NAME, "json", token=stamp, checked=12.5, pieces=iter(pieces), gzip=True)
    assert packed is not None
    encoded = packed.handle.readall()
    packed.close()
    assert (packed.size, packed.etag, packed.checked) == (len(encoded), pagefiles.etag(encoded), 12.5)
    assert gzip.decompress(encoded) == whole
    # the same bytes as the whole page compressed at once (a page rendered in memory)
    packer = pagefiles.compressor()
    assert encoded == packer.compress(whole) + packer.flush()
    # no temporary file left
    assert sorted(os.listdir(tmp_path / "rendered")) == ["demo.json", "demo.json.gz"]


def test_a_page_written_with_its_etag_is_not_hashed_again(tmp_path: Path) -> None:
    pages, stamp = RenderedPages(tmp_path), "a.b.c.d"
    tag = pagefiles.rebased_etag('"1"', "http://a/files/demo/", "http://b/files/demo/")
    written = pages.write(NAME, "json", token=stamp, checked=1.0, pieces=[b"{}"], etag=tag)
    assert written is not None
    written.close()
    again = pages.open(NAME, "json", stamp)
    assert again is not None
    again.close()
    assert (written.etag, again.etag) == (tag, tag)
    # the bases and the source's ETag each make another
    others = {
        pagefiles.rebased_etag('"2"', "http://a/files/demo/", "http://b/files/demo/"),
        pagefiles.rebased_etag('"1"', "http://c/files/demo/", "http://b/files/demo/"),
        pagefiles.rebased_etag('"1"', "http://a/files/demo/", "http://c/files/demo/"),
    }
    assert len(others | {tag}) == 4


@pytest.mark.parametrize("change", ["none", "cut short", "grown"])
def test_a_rendering_is_read_in_blocks_where_it_lies(tmp_path: Path, change: str) -> None:
    pages, stamp, whole = RenderedPages(tmp_path), "a.b.c.d", bytes(range(256)) * 600
    written = pages.write(NAME, "json", token=stamp, checked=1.0, pieces=[whole])
    assert written is not None
    written.handle.read(10)  # the handle's position is not where it reads
    path = pages.path(NAME, "json")
    if change == "cut short":
        os.truncate(path, path.stat().st_size - 1)
    elif change == "grown":
        with path.open("ab") as out:
            out.write(b"!")
    if change == "none":
        assert b"".join(written.blocks()) == b"".join(written.blocks()) == whole
        assert max(map(len, written.blocks())) <= 64 * 1024
    else:
        with pytest.raises(OSError, match=change.replace("grown", "has grown").replace("cut short", "short")):
            b"".join(written.blocks())
    written.close()


@pytest.mark.parametrize(
    ("made", "said", "sent"),
    [
        ([b"ab", b"cd", b"e"], 5, b"abcde"),
        ([b"ab", b"", b"cd"], 4, b"abcd"),
        ([], 0, b""),
        # shorter than said: the last piece is not sent, so the answer is seen cut
        ([b"ab", b"cd", b"e"], 6, b"abcd"),
        ([b"ab"], 3, b""),
        # longer: nothing past what was said, and not all of it either
        ([b"ab", b"cd", b"e"], 4, b"ab"),
        ([b"abc"], 2, b""),
        ([b"ab", b"cd"], 3, b""),
        # the rendering cut short as it is read
        ([b"ab", b"cd", OSError("cut")], 5, b"ab"),
    ],
)
def test_a_page_sent_as_it_is_made_is_never_whole_looking_and_wrong(
    tmp_path: Path, made: list[bytes | Exception], said: int, sent: bytes
) -> None:
    stamp = "a.b.c.d"
    source = RenderedPages(tmp_path).write(NAME, "json", token=stamp, checked=1.0, pieces=[b"{}"])
    assert source is not None

    def pieces() -> Iterator[bytes]:
        for piece in made:
            if isinstance(piece, Exception):
                raise piece
            yield piece

    stream = pagefiles.PageStream(source, said, pieces())
    assert b"".join(stream) == sent
    assert source.handle.closed


def test_a_page_sent_as_it_is_made_and_closed_halfway_closes_its_rendering(tmp_path: Path) -> None:
    stamp = "a.b.c.d"
    source = RenderedPages(tmp_path).write(NAME, "json", token=stamp, checked=1.0, pieces=[b"{}"])
    assert source is not None
    closed = []

    def pieces() -> Iterator[bytes]:
        try:
            yield b"ab"
            yield b"cd"
        finally:
            closed.append("pieces")

    stream = pagefiles.PageStream(source, 4, pieces())
    assert next(iter(stream)) == b"ab"
    stream.close()  # the client went away: the server closes the answer
    assert (closed, source.handle.closed) == (["pieces"], True)


@pytest.mark.parametrize("gzip_asked", [False, True])
def test_write_opens_the_encoding_asked_for(tmp_path: Path, gzip_asked: bool) -> None:
    stamp = "a.b.c.d"
    written = RenderedPages(tmp_path).write(
        NAME, "html", token=stamp, checked=1.0, pieces=[b"<html>", b"</html>"], gzip=gzip_asked
    )
    assert written is not None
    data = written.handle.readall()
    written.close()
    assert (gzip.decompress(data) if gzip_asked else data) == b"<html></html>"


def test_a_page_that_cannot_be_written_is_no_file_and_leaves_nothing(tmp_path: Path) -> None:
    pages, stamp = RenderedPages(tmp_path / "rendered"), "a.b.c.d"
    pages.path(NAME, "json").mkdir(parents=True)  # the rename onto it fails

    def pieces() -> Iterator[bytes]:
        yield b"{"
        yield b"}"

    assert pages.write(NAME, "json", token=stamp, checked=1.0, pieces=pieces()) is None
    assert pages.open(NAME, "json", stamp) is None
    # no temporary file left; the encoded page may be kept: it is whole, and valid for its token
    assert set(os.listdir(tmp_path / "rendered")) <= {"demo.json", "demo.json.gz"}
    with pytest.raises(KeyboardInterrupt):  # an interruption is not swallowed, and cleans up too
        pages.write(NAME, "other", token=stamp, checked=1.0, pieces=_interrupted())
    assert set(os.listdir(tmp_path / "rendered")) <= {"demo.json", "demo.json.gz"}


@pytest.mark.parametrize("kind", ["json", "json-pip"])
@pytest.mark.parametrize("gzip_asked", [False, True])
@pytest.mark.parametrize("kept", [True, False])
def test_a_page_written_before_its_state_is_sent_then_kept_or_dropped(
    tmp_path: Path, kind: str, gzip_asked: bool, kept: bool
) -> None:
    """A rendering written before its state is on disk is sent from its temporary file; kept, it
    is what :meth:`RenderedPages.write` would have saved for the token, dropped it leaves nothing."""
    folder = tmp_path / "rendered"
    pages, stamp = RenderedPages(folder), "a.b.c.d"
    pieces = [b"{", b'"a":', b"x" * 70_000, b"}"]
    whole = b"".join(pieces)
    pending = pages.pending(NAME, kind, iter(pieces), gzip=gzip_asked)
    assert pending is not None
    assert pages.open(NAME, kind + ".gz" if gzip_asked else kind, stamp) is None  # nothing kept yet
    sent = pending.file.handle.readall()
    pending.file.close()
    assert (gzip.decompress(sent) if gzip_asked else sent) == whole
    assert (pending.file.size, pending.file.etag) == (len(sent), pagefiles.etag(sent))
    if kept:
        assert pending.keep(stamp, 12.5)
    else:
        pending.drop()
    found = pages.open(NAME, kind + ".gz" if gzip_asked else kind, stamp)
    if kept:
        assert found is not None
        assert (found.handle.readall(), found.etag, found.checked) == (sent, pending.file.etag, 12.5)
        found.close()
        again = pages.write(NAME, kind, token=stamp, checked=12.5, pieces=iter(pieces), gzip=gzip_asked)
        assert again is not None
        assert (again.handle.readall(), again.etag) == (sent, pending.file.etag)  # the same file
        again.close()
    else:
        assert found is None
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]  # no temporary file left


def test_a_page_written_before_its_state_that_cannot_be_kept_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "rendered"
    pages = RenderedPages(folder)
    pages.path(NAME, "json").mkdir(parents=True)  # the rename onto it fails
    pending = pages.pending(NAME, "json", [b"{}"])
    assert pending is not None
    pending.file.close()
    assert not pending.keep("a.b.c.d", 1.0)
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]
    pending = pages.pending(NAME, "html", [b"<html>"])
    assert pending is not None
    pending.file.close()
    assert not pending.keep("x" * 400, 1.0)  # a token of another shape: no room in the header
    assert pages.open(NAME, "html", "x" * 400) is None
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]
    with pytest.raises(KeyboardInterrupt):  # an interruption is not swallowed, and cleans up too
        pages.pending(NAME, "other", _interrupted())
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")]


def _interrupted() -> Iterator[bytes]:
    yield b"{"
    raise KeyboardInterrupt


@pytest.mark.usefixtures("published")
def test_a_large_page_is_rendered_into_its_file_and_sent_from_it(
    tmp_path: Path, upstream: PrivateIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "_WARM_PAGE", 10)
    repo = repository(tmp_path, upstream)
    page = repo.project(NAME)  # fetched first: the upstream renders its own pages in this process
    joined: list[ProjectPage] = []

    def counted(
        page: ProjectPage, content_type: str, url_for: UrlFor, metadata_for: MetadataFor | None
    ) -> bytes:
        joined.append(page)
        return render_project(page, content_type, url_for, metadata_for)

    monkeypatch.setattr(repository_module, "render_project", counted)
    cold = repo.rendered(NAME, JSON_V1)
    assert cold.file is not None
    assert joined == []  # never made whole
    expected = render_project(page, JSON_V1, lambda d: f"../../files/demo/{d.filename}")
    assert body(cold) == expected
    assert cold.etag == pagefiles.etag(expected)


@pytest.mark.usefixtures("published")
def test_a_page_dropped_from_memory_while_it_is_checked_is_not_kept(
    tmp_path: Path, upstream: PrivateIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 32 clients asking for cold pages at once: another thread's page evicted this one midway
    repo = repository(tmp_path, upstream)
    page = repo.project(NAME)
    files_stamp = repo.mirror._files_stamp

    def evicted_meanwhile(name: NormalizedName) -> int | None:
        repo.mirror._evict(name)
        return files_stamp(name)

    monkeypatch.setattr(repo.mirror, "_files_stamp", evicted_meanwhile)
    assert repo.mirror.checked(NAME, page) is None
    monkeypatch.undo()
    assert body(repo.rendered(NAME, JSON_V1)) == render_project(
        repo.project(NAME), JSON_V1, lambda d: f"../../files/demo/{d.filename}"
    )


@pytest.mark.usefixtures("published")
def test_served_over_http_with_etag_and_head(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path, upstream: PrivateIndex
) -> None:
    repository(tmp_path, upstream).rendered(NAME, JSON_V1)
    mirror = make_mirror()
    url = f"{mirror.url}/simple/demo/"
    http.headers["Accept-Encoding"] = "identity"  # the encoded page has a test in test_app
    response = http.get(url, headers={"Accept": JSON_V1})
    assert response.status_code == 200
    assert response.json()["name"] == "demo"
    assert int(response.headers["Content-Length"]) == len(response.content)
    etag = response.headers["ETag"]
    assert http.get(url, headers={"Accept": JSON_V1, "If-None-Match": etag}).status_code == 304
    head = http.head(url, headers={"Accept": JSON_V1})
    assert head.headers["Content-Length"] == response.headers["Content-Length"]
    assert head.content == b""


@pytest.mark.usefixtures("published")
def test_large_renderings_are_sent_from_their_file_small_ones_held(
    tmp_path: Path, upstream: PrivateIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = repository(tmp_path, upstream).rendered(NAME, JSON_V1)
    first_body = body(first)
    later = repository(tmp_path, upstream)
    monkeypatch.setattr(repository_module, "_WARM_PAGE", len(first_body) - 1)
    sent = later.rendered(NAME, JSON_V1)
    assert sent.file is not None
    assert body(sent) == first_body
    monkeypatch.setattr(repository_module, "_WARM_PAGE", len(first_body))
    held = later.rendered(NAME, JSON_V1)
    assert (held.file, held.body) == (None, first_body)
    no_state_reads(later, monkeypatch)
    monkeypatch.setattr(later.pages, "open", lambda *_: pytest.fail("read again"))
    assert later.rendered(NAME, JSON_V1).body == first_body  # from memory now


class _Upstream:
    """A fetcher whose page of ``demo`` lists ``files``."""

    def __init__(self) -> None:
        self.files = ["demo-1.0.tar.gz"]

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        files = [DistFile(filename=f, url=f"https://example.com/{f}") for f in self.files]
        return Fetched(page=ProjectPage.build(name, files))

    def open(self, url: str) -> FileStream:
        raise NotImplementedError(url)


def test_an_older_page_answered_during_a_catch_up_is_not_kept_under_the_new_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.com/simple/")
    first, second = _Upstream(), _Upstream()
    a, b = Repository(config, fetcher=first), Repository(config, fetcher=second)
    a.rendered(NAME, JSON_V1)  # process A holds the page of 1.0
    time.sleep(0.01)
    second.files.append("demo-1.1.tar.gz")
    b.mirror.refresh_all()
    b.mirror.page(NAME)  # process B writes the state with 1.1
    # in A, one thread is catching up (it holds the name's lock) while another answers HTML:
    # that one gets the page of 1.0, and the catch-up takes in 1.1 while it renders
    lock = a.mirror._entries[NAME].lock
    lock.acquire()

    def catching_up(
        page: ProjectPage, content_type: str, url_for: UrlFor, metadata_for: MetadataFor | None
    ) -> bytes:
        body = render_project(page, content_type, url_for, metadata_for)
        if lock.locked():
            lock.release()
            a.mirror._catch_up(NAME, a.mirror._entries[NAME])
        return body

    monkeypatch.setattr(repository_module, "render_project", catching_up)
    assert b"demo-1.1" not in a.rendered(NAME, TEXT_HTML).body  # answered from the older page
    monkeypatch.setattr(repository_module, "render_project", render_project)
    for process in (Repository(config, fetcher=_Upstream()), b, a):
        assert b"demo-1.1" in body(process.rendered(NAME, TEXT_HTML))


@pytest.mark.usefixtures("published")
def test_a_rendering_by_another_release_is_a_miss(
    tmp_path: Path, upstream: PrivateIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository(tmp_path, upstream).rendered(NAME, JSON_V1)
    monkeypatch.setattr(pagefiles, "_MAGIC", b"nestegg-page-1/0.0.0")
    later = repository(tmp_path, upstream)
    assert later.rendered(NAME, JSON_V1).page is not None  # made again, not read back


OTHER = NormalizedName("other")


@pytest.mark.parametrize(
    ("names", "large_state", "wait", "most_at_once", "made"),
    [
        ([NAME, OTHER], 0, 30.0, 1, 2),
        ([NAME, OTHER], 1 << 40, 30.0, 2, 2),
        ([NAME, NAME], 0, 30.0, 1, 1),  # the one that waited finds the rendering made meanwhile
        ([NAME, OTHER], 0, 0.2, 2, 2),  # one slow to make (a slow upstream) holds the other back briefly
    ],
    ids=["large-pages", "small-pages", "same-large-page", "waited-long-enough"],
)
def test_large_pages_are_made_one_at_a_time(
    tmp_path: Path,
    upstream: PrivateIndex,
    monkeypatch: pytest.MonkeyPatch,
    names: list[NormalizedName],
    large_state: int,
    wait: float,
    most_at_once: int,
    made: int,
) -> None:
    # uv asks for every page at once; each page's model is held while it is made
    upstream.add("demo", "1.0")
    upstream.add("other", "1.0")
    for name in set(names):
        repository(tmp_path, upstream).rendered(name, JSON_V1)  # the state on disk, rendered as JSON
    repo = repository(tmp_path, upstream)  # a new process, asked for HTML: made from the state
    monkeypatch.setattr(repository_module, "_LARGE_STATE", large_state)
    monkeypatch.setattr(repository_module, "_LARGE_WAIT", wait)
    project = repo.project
    guard = threading.Lock()
    making: list[NormalizedName] = []
    most: list[int] = []

    def slow_project(name: NormalizedName) -> ProjectPage:
        with guard:
            making.append(name)
            most.append(len(making))
        # both at once if the other may come: it is let through, or the wait times out
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        try:
            return project(name)
        finally:
            with guard:
                making.remove(name)

    together = threading.Barrier(2, timeout=1.0)
    monkeypatch.setattr(repo, "project", slow_project)
    bodies: dict[int, bytes] = {}

    def ask(index: int) -> None:
        bodies[index] = body(repo.rendered(names[index], HTML_V1))

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert max(most) == most_at_once
    assert len(most) == made
    assert [bodies[index] for index in range(len(names))] == [_html(project(name)) for name in names]


def _html(page: ProjectPage) -> bytes:
    return render_project(page, HTML_V1, lambda d: f"../../files/{page.name}/{d.filename}")
