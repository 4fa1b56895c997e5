"""Reading the nest's files: a bounded read gives what ``read`` gives, and takes memory only for
what the file holds."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from nestegg_core.storage.fs import open_read, read_at_most

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("size", "start", "count"),
    [
        (0, 0, 1),
        (10, 0, 11),  # the whole file, and the byte more that tells it is whole
        (10, 0, 10),
        (10, 0, 5),
        (10, 4, 11),  # from where the handle is
        (10, 10, 3),  # at its end
        (3 * MIB, 0, 16 * MIB + 1),
        (3 * MIB, 0, MIB),
    ],
)
def test_read_at_most_gives_what_read_gives(tmp_path: Path, size: int, start: int, count: int) -> None:
    path = tmp_path / "file"
    path.write_bytes(bytes(i % 251 for i in range(size)))
    with open_read(tmp_path, path) as ours, open_read(tmp_path, path) as plain:
        ours.seek(start)
        plain.seek(start)
        assert read_at_most(ours, count) == plain.read(count)
        assert ours.tell() == plain.tell()


def test_read_at_most_reads_on_if_the_file_grew_since_its_size_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"a" * 10)
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        status = real_fstat(fd)
        with open(path, "ab") as writer:  # another writer, as the file is read
            writer.write(b"b" * 20)
        return status

    with open_read(tmp_path, path) as handle:
        monkeypatch.setattr(os, "fstat", fstat_then_grow)
        assert read_at_most(handle, 25) == b"a" * 10 + b"b" * 15


@pytest.mark.skipif(
    tracemalloc.is_tracing(), reason="tracemalloc is on already (its peak is not this test's)"
)
def test_read_at_most_takes_memory_for_the_file_not_for_the_count(tmp_path: Path) -> None:
    path = tmp_path / "METADATA"
    path.write_bytes(b"Metadata-Version: 2.1\nName: pkg\n" * 100)
    tracemalloc.start()
    try:
        with open_read(tmp_path, path) as handle:
            tracemalloc.reset_peak()
            data = read_at_most(handle, 16 * MIB + 1)
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == path.read_bytes()
    assert peak < 64 * 1024  # read(16 MiB + 1) took 16 MiB
