from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from packaging.utils import NormalizedName

from nestegg_core.simple.models import ProjectPage
from nestegg_core.storage import generation
from nestegg_core.storage.generation import Generation
from nestegg_core.storage.pagestate import PageState
from nestegg_core.storage.private import PrivateStore
from nestegg_core.storage.store import CacheStore
from nestegg_core.testing.dists import PackageSpec, make_wheel

THING = NormalizedName("thing")


def test_an_advance_is_seen_at_once_through_another_mapping(tmp_path: Path) -> None:
    """Two Generation objects of one file stand for two processes: no look at the disk between."""
    writer, reader = Generation(tmp_path / "g"), Generation(tmp_path / "g")
    seen = {reader.current()}
    for _ in range(20):
        writer.advance()
        now = reader.current()
        assert now is not None
        assert now not in seen
        seen.add(now)


def test_an_advance_in_another_process_is_seen(tmp_path: Path) -> None:
    reader = Generation(tmp_path / "nest" / ".generation")
    before = reader.current()
    assert before is not None
    assert (tmp_path / "nest" / ".generation").stat().st_size == 8
    code = "import sys; from pathlib import Path; from nestegg_core.storage.generation import Generation; "
    code += "Generation(Path(sys.argv[1])).advance()"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "nest" / ".generation")], check=True)
    assert reader.current() != before


def test_a_replaced_file_is_mapped_again_after_the_recheck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generation, "RECHECK", 0.0)
    path = tmp_path / "g"
    reader = Generation(path)
    before = reader.current()
    path.unlink()  # a cleaned cache: the next writer makes a new file
    writer = Generation(path)
    writer.advance()
    assert path.exists()
    assert reader.current() == writer.current() != before


def test_an_unusable_file_means_no_generation_and_no_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    broken = Generation(tmp_path / "file" / ".generation")
    broken.advance()
    assert broken.current() is None


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads and writes anything")
def test_a_read_only_nest_means_no_generation(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert Generation(tmp_path / ".generation").current() is None
    finally:
        tmp_path.chmod(0o700)


def test_a_file_grown_by_another_keeps_its_bytes(tmp_path: Path) -> None:
    first = Generation(tmp_path / "g")
    first.advance()
    stamped = first.current()
    assert Generation(tmp_path / "g").current() == stamped


@pytest.mark.parametrize(
    ("change", "store"),
    [
        ("write_page", "mirror"),
        ("page_changed", "mirror"),
        ("private_add", "private"),
        ("private_yank", "private"),
        ("private_remove", "private"),
    ],
)
def test_every_change_a_page_is_made_from_advances_its_store(tmp_path: Path, change: str, store: str) -> None:
    cache = CacheStore(tmp_path / "nest", "https://example.com/simple/")
    private = PrivateStore(tmp_path / "nest" / "private")
    wheel = make_wheel(PackageSpec(name="thing", version="1.0"), tmp_path)
    if change in ("private_yank", "private_remove"):
        private.add(wheel)
    watched = (cache if store == "mirror" else private).generation
    other = (private if store == "mirror" else cache).generation
    before, untouched = watched.current(), other.current()
    if change == "write_page":
        cache.write_page(PageState(page=ProjectPage.build(THING, ()), checked=0.0))
    elif change == "page_changed":
        cache.page_changed(THING)
    elif change == "private_add":
        private.add(wheel)
    elif change == "private_yank":
        private.yank(THING, wheel.name, "bad")
    else:
        private.remove(THING, wheel.name)
    assert watched.current() != before
    assert other.current() == untouched


def test_a_stamp_that_cannot_be_written_warns_once_and_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Generation(tmp_path / "g")
    before = writer.current()

    def full(*_args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    writer.advance()
    writer.advance()
    assert writer.current() == before
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "No space left on device" in warnings[0]


@pytest.mark.parametrize("content", [b"", b"abc"])
def test_a_file_too_short_to_map_means_no_generation(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "g").write_bytes(content)
    assert Generation(tmp_path / "g").current() is None
    assert (tmp_path / "g").read_bytes() == content  # never grown or cut: a mapping could fault


def test_the_file_is_made_whole_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    Generation(tmp_path / "nest" / "g").current()
    assert [p.name for p in (tmp_path / "nest").iterdir()] == ["g"]
    assert (tmp_path / "nest" / "g").stat().st_size == 8


def test_a_closed_generation_maps_the_file_again_when_used(tmp_path: Path) -> None:
    first, other = Generation(tmp_path / "g"), Generation(tmp_path / "g")
    first.current()
    first.close()
    other.advance()
    assert first.current() == other.current()


def test_a_stamp_never_lands_in_a_file_opened_as_the_generation_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread lets the file go (maps it again, or the server stops) just as a stamp is
    written: its descriptor's number, taken at once by the next file opened, must not get it."""
    writer = Generation(tmp_path / "g")
    writer.advance()
    other = tmp_path / "other"
    write = generation._write_at_start
    racers: list[threading.Thread] = []

    def let_go_and_open() -> None:
        writer.close()
        with open(other, "wb") as handle:
            handle.write(b"x" * 16)
            handle.flush()
            time.sleep(0.3)

    def racing(fd: int, data: bytes) -> None:
        racer = threading.Thread(target=let_go_and_open)
        racers.append(racer)
        racer.start()
        racer.join(0.2)  # it waits for the stamp, or has let the file go and opened another
        write(fd, data)

    monkeypatch.setattr(generation, "_write_at_start", racing)
    writer.advance()
    racers[0].join(5)
    assert other.read_bytes() == b"x" * 16
