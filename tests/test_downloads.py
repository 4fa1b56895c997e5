"""A download's readers around its check: what an early reader (an installer) and any other reader
get once the file is whole and checked but not yet in place, and after a failure then."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import waits
from nestegg_core.errors import InsufficientStorage, NesteggError, UpstreamError
from nestegg_core.index import downloads as downloads_module
from nestegg_core.index import upstream as upstream_module
from nestegg_core.index.downloads import Download
from nestegg_core.simple import clients
from nestegg_core.simple.models import DistFile
from nestegg_core.storage import blanks as blanks_module
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import MirrorFactory
from .loopback import sha256, wait_until

DATA = bytes(range(256)) * 40  # 10,240 bytes


def written(part: Path) -> Download:
    """A download driven by hand: every byte written into ``part``, none checked yet."""
    dist = DistFile(filename="demo-1.0.tar.gz", url="http://example.com/demo-1.0.tar.gz", size=len(DATA))
    download = Download(NormalizedName("demo"), dist)
    part.write_bytes(DATA)
    download._stream(part, len(DATA))
    download._progress(len(DATA))
    return download


@pytest.fixture
def checked(tmp_path: Path) -> Iterator[Download]:
    """A download driven by hand: every byte written and checked (``_verified``), not in place."""
    download = written(tmp_path / ".demo-1.0.tar.gz.part")
    download._verified()
    yield download
    if not download.done and not download.failed:
        download._fail(InsufficientStorage("the test is over"))


class Reader(threading.Thread):
    """A reader in a thread of its own: the pieces it got so far, and the error it ended with."""

    def __init__(self, download: Download, start: int, end: int | None, *, early: bool) -> None:
        super().__init__(daemon=True)
        self.pieces: list[bytes] = []
        self.error: NesteggError | None = None
        self._read = functools.partial(download.read, start, end, early=early)
        self.start()

    def run(self) -> None:
        try:
            for piece in self._read():
                self.pieces.append(piece)
        except NesteggError as exc:
            self.error = exc

    @property
    def got(self) -> bytes:
        return b"".join(self.pieces)


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, None), (0, 10), (100, len(DATA)), (len(DATA) - 1, len(DATA))],
    ids=["whole", "range-at-the-start", "range-to-the-end", "last-byte"],
)
@pytest.mark.parametrize("early", [True, False], ids=["installer", "other"])
def test_a_checked_file_is_whole_for_an_installer_and_waits_for_its_place_for_others(
    checked: Download, tmp_path: Path, start: int, end: int | None, early: bool
) -> None:
    reader = Reader(checked, start, end, early=early)
    reader.join(0.5)
    assert reader.is_alive() is not early
    if not early:
        # all but the last byte at most, and nothing of a range short of the end, before the place
        assert len(reader.got) <= max(0, len(DATA) - 1 - start)
        if end is not None and end < len(DATA):
            assert reader.got == b""
        final = tmp_path / "demo-1.0.tar.gz"
        checked._place(final, tmp_path / ".demo-1.0.tar.gz.part")
        checked._finish(final)
        reader.join(5)
        assert not reader.is_alive()
    assert (reader.got, reader.error) == (DATA[start:end], None)


@pytest.mark.parametrize("early", [True, False], ids=["installer", "other"])
def test_a_cache_that_fails_once_the_file_is_checked_breaks_off_only_who_waits_for_it(
    checked: Download, early: bool
) -> None:
    reader = Reader(checked, 0, None, early=early)
    reader.join(0.5)
    error = InsufficientStorage("the disk is full")
    checked._fail(error)
    reader.join(5)
    assert not reader.is_alive()
    if early:
        assert (reader.got, reader.error) == (DATA, None)  # checked bytes, had before the cache failed
    else:
        # never whole: the last byte waited for the place, and the answer breaks off
        assert (reader.got, reader.error) == (DATA[:-1], error)
    # a reader that comes after the failure gets the error, installer or not
    with pytest.raises(InsufficientStorage):
        list(checked.read(early=early))


@pytest.mark.parametrize("early", [True, False], ids=["installer", "other"])
def test_a_reader_that_wakes_only_once_the_cache_failed_after_the_check_gets_what_it_may(
    tmp_path: Path, early: bool
) -> None:
    """The check and the cache's failure both come while the reader waits for the last byte (a
    loaded machine): an installer still has every checked byte, from the file it holds open."""
    part = tmp_path / ".demo-1.0.tar.gz.part"
    download = written(part)
    pieces = download.read(early=early)  # driven from here: it wakes only when asked to
    got = b""
    while len(got) < len(DATA) - 1:
        got += next(pieces)
    assert got == DATA[:-1]  # never the last byte before the check
    error = InsufficientStorage("the disk is full")
    download._verified()
    download._failing()
    part.unlink()  # as the failing worker does, before it says why
    download._fail(error)
    if early:
        assert got + b"".join(pieces) == DATA
    else:
        with pytest.raises(InsufficientStorage):
            next(pieces)


def test_a_checked_download_is_not_abandoned(checked: Download) -> None:
    """Nobody reads it any more: only its place is left to make, and the file is kept."""
    assert checked.attach()
    checked.leave()
    assert not checked._abandon(float("inf"), 0.0, near=False)
    assert not checked.failed


PIP = 'pip/26.3 {"installer":{"name":"pip","version":"26.3"}}'


@pytest.mark.parametrize("ahead", [False, True], ids=["for-a-client", "ahead"])
def test_a_download_works_for_a_client_only_when_one_waits_for_it(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    ahead: bool,
) -> None:
    """A client's download counts as work for it (``waits.serving``): pages made ahead give way
    to it, while the request that started it waits, and the pages made again wait for it
    (``Downloads.serving``). A download ahead of its client does neither."""
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)  # pip reads the metadata: a download ahead
    [wheel] = upstream.add("big", "1.0", sdist=False, payload_size=200_000)
    mirror = make_mirror()
    seen: list[bool] = []
    original = upstream_module.HttpFetcher.open

    def opening(fetcher: upstream_module.HttpFetcher, url: str) -> upstream_module.FileStream:
        if url.endswith(wheel.filename):
            time.sleep(0.3)  # the request that started it waits by now
            seen.append(waits.busy())
            # the background (pages made again) waits for a download a client reads, not for one ahead
            seen.append(mirror.repository.downloads.serving())
        return original(fetcher, url)

    monkeypatch.setattr(upstream_module.HttpFetcher, "open", opening)
    assert http.get(mirror.index_url + "big/", headers={"User-Agent": PIP}).ok
    if ahead:
        url = f"{mirror.url}/files/big/{wheel.filename}.metadata"
        assert http.get(url, headers={"User-Agent": PIP}).ok
        cached = mirror.repository.store.file_path(NormalizedName("big"), wheel.filename)
        wait_until(cached.is_file, "the wheel downloaded ahead")
    else:
        assert http.get(f"{mirror.url}/files/big/{wheel.filename}", headers={"User-Agent": PIP}).ok
    assert seen == [not ahead, not ahead]


def _parts(folder: Path, filename: str) -> list[Path]:
    return sorted(folder.glob(f".{filename}.*.part"))


@pytest.mark.parametrize(
    ("case", "parts_when_asked", "status"),
    [
        ("made-meanwhile", 1, 200),  # by the time the upstream is asked, the part file is there
        ("swept", 1, 200),  # removed before the lock was ours (a sweep): the download makes another
        ("no-makers", 0, 200),  # the makers shut down (the server stops): the download makes it
        ("upstream-fails", 1, 502),  # never begun: removed before the client hears of the failure
    ],
)
def test_a_download_s_part_file_is_made_while_it_takes_its_lock_and_asks_the_upstream(
    upstream: PrivateIndex,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    parts_when_asked: int,
    status: int,
) -> None:
    """A new file is an inode to allocate: the part file a download writes is made by another
    thread while the download takes its lock and waits for the upstream, not after."""
    [wheel] = upstream.add("early", "1.0", sdist=False, payload_size=50_000)
    mirror = make_mirror()
    downloads = mirror.repository.downloads
    folder = mirror.repository.store.files / "early"
    if case == "no-makers":
        monkeypatch.setattr(downloads, "_early_part", lambda _download: downloads_module._EarlyPart(None))
    seen: list[int] = []
    original = upstream_module.HttpFetcher.open

    def opening(fetcher: upstream_module.HttpFetcher, url: str) -> upstream_module.FileStream:
        if url.endswith(wheel.filename):
            if case != "no-makers":
                wait_until(lambda: _parts(folder, wheel.filename), "the part file made meanwhile")
            seen.append(len(_parts(folder, wheel.filename)))
            if case == "swept":
                for part in _parts(folder, wheel.filename):
                    part.unlink()
            if case == "upstream-fails":
                raise UpstreamError("the upstream broke down")
        return original(fetcher, url)

    monkeypatch.setattr(upstream_module.HttpFetcher, "open", opening)
    answer = http.get(f"{mirror.url}/files/early/{wheel.filename}", headers={"User-Agent": PIP})
    assert (answer.status_code, seen) == (status, [parts_when_asked])
    cached = folder / wheel.filename
    if status == 200:  # an installer has the file once checked, before it is in place
        wait_until(cached.is_file, "the file in place")
        assert sha256(answer.content) == wheel.hashes["sha256"] == sha256(cached.read_bytes())
    else:
        assert not cached.exists()
    assert _parts(folder, wheel.filename) == []


def test_a_part_file_made_while_another_holds_the_lock_is_used_once_it_is_free(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """Another process downloads the file (its lock held): this one's part file is made while it
    waits, and used once the lock is free and the file still not cached."""
    [wheel] = upstream.add("held", "1.0", sdist=False, payload_size=50_000)
    mirror = make_mirror()
    store = mirror.repository.store
    folder = store.files / "held"
    lock = store.lock(NormalizedName("held"), wheel.filename)
    lock.acquire()
    answers: list[requests.Response] = []
    url = f"{mirror.url}/files/held/{wheel.filename}"
    client = threading.Thread(target=lambda: answers.append(http.get(url, headers={"User-Agent": PIP})))
    try:
        client.start()
        wait_until(lambda: _parts(folder, wheel.filename), "the part file made while the lock is held")
        time.sleep(0.2)
        assert not answers  # still waiting for the lock
    finally:
        lock.release()
    client.join(30)
    [answer] = answers
    assert sha256(answer.content) == wheel.hashes["sha256"]
    wait_until((folder / wheel.filename).is_file, "the file in place")
    assert _parts(folder, wheel.filename) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="blanks: O_TMPFILE, Linux only")
def test_a_cold_file_s_lock_file_is_named_from_a_blank_made_during_an_earlier_download(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session
) -> None:
    """A new file is an inode to allocate: once a download had the part makers make blanks, the
    next cold file's lock file is one of them, named, not a file made on its way; a stopped
    mirror lets those left go."""
    wheels = [upstream.add(f"blank{i}", "1.0", sdist=False, payload_size=10_000)[0] for i in range(2)]
    mirror = make_mirror()
    downloads, store = mirror.repository.downloads, mirror.repository.store

    def get(i: int) -> None:
        answer = http.get(f"{mirror.url}/files/blank{i}/{wheels[i].filename}", headers={"User-Agent": PIP})
        assert sha256(answer.content) == wheels[i].hashes["sha256"]

    get(0)
    # made as the first download takes its lock: that lock may be named from one of them already
    blanks = downloads._blanks
    wait_until(lambda: blanks.ready >= blanks_module.KEEP - 1 and not blanks._filling, "the blanks made")
    made = {os.fstat(fd).st_ino for fd in downloads._blanks._fds}
    get(1)
    lock = store.locks / "blank1" / f"{wheels[1].filename}.lock"
    assert os.lstat(lock).st_ino in made
    mirror.stop()
    assert (downloads._blanks.usable, downloads._blanks.ready) == (False, 0)
