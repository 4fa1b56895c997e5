"""Metadata read from hostile archives: a wheel's METADATA and an sdist's PKG-INFO are read
within bounds, whatever the zip's central directory or the tar's headers claim, and an archive
past a bound is refused before its cost is paid (attack round 2, findings 2 and 8)."""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nestegg_core.errors import ArchiveError, UploadError
from nestegg_core.simple import distmeta
from nestegg_core.simple.distmeta import parse_dist_filename, sdist_metadata, wheel_metadata

from .test_faults import peak_growth

METADATA = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n\n"
WHEEL_METADATA = "pkg-1.0.dist-info/METADATA"


def attempt(action: Callable[[], Any]) -> Any:
    """What ``action()`` returns, or the exception it raises."""
    try:
        return action()
    except Exception as exc:  # noqa: BLE001 (returned for the test to look at)
        return exc


def traced(action: Callable[[], Any]) -> tuple[Any, int, float]:
    """What ``action()`` returns (or raises), the peak of the memory Python allocated meanwhile,
    and the seconds it took."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = attempt(action)
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak, seconds


# zip -------------------------------------------------------------------------------------------


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED, comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.comment = comment
    return out.getvalue()


def end_record(data: bytes) -> tuple[int, int, int, int]:
    """Where a zip's (plain) end record is, its member count, and its central directory's size
    and offset."""
    at = data.rfind(b"PK\x05\x06")
    _, _, _, _, count, size, offset, _ = struct.unpack_from("<4s4H2LH", data, at)
    return at, count, size, offset


def ends(
    at: int, count: int, size: int, offset: int, *, zip64: bool, disks: tuple[int, int, int] = (0, 0, 1)
) -> bytes:
    """End records for a zip whose central directory ends at ``at``: claiming ``count`` members,
    as Zip64 end records (a Zip64 record and its locator before a plain record of 0xFFFF..
    fields), and on ``disks`` (this disk, the central directory's, the number of disks)."""
    disk, directory_disk, disk_count = disks
    if not zip64:
        return struct.pack("<4s4H2LH", b"PK\x05\x06", disk, directory_disk, count, count, size, offset, 0)
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, disk, directory_disk, count, count, size, offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", directory_disk, at, disk_count)
    plain = struct.pack("<4s4H2LH", b"PK\x05\x06", *[0xFFFF] * 4, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return record + locator + plain


def with_end(
    data: bytes, *, count: int | None = None, zip64: bool = False, disks: tuple[int, int, int] = (0, 0, 1)
) -> bytes:
    """``data`` (a zip with a plain end record) with other end records (see :func:`ends`)."""
    at, real, size, offset = end_record(data)
    return data[:at] + ends(at, real if count is None else count, size, offset, zip64=zip64, disks=disks)


def many_member_wheel(count: int, claimed: int | None = None) -> bytes:
    """A wheel whose central directory lists ``count`` empty members besides its METADATA, each
    pointing at one empty local file (47 bytes of central directory each), as the attack's did."""
    local, central = bytearray(), bytearray()
    for name, data in ((WHEEL_METADATA.encode(), METADATA), (b"z", b"")):
        crc, offset = zlib.crc32(data), len(local)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, len(data), len(data),
                             len(name), 0) + name + data  # fmt: skip
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, crc,
                               len(data), len(data), len(name), 0, 0, 0, 0, 0o644 << 16,
                               offset) + name  # fmt: skip
    central += central[-47:] * (count - 1)  # the empty member's entry again
    claimed = count + 1 if claimed is None else claimed
    return bytes(local + central) + ends(
        len(local) + len(central), claimed, len(central), len(local), zip64=True
    )


def zip64_fields(members: dict[str, bytes]) -> bytes:
    """A stored zip whose central directory gives each member's sizes and offset in a Zip64 extra
    field (0xFFFFFFFF in the header), as writers of archives over 4 GiB do."""
    local, central = bytearray(), bytearray()
    for name, data in members.items():
        raw, crc, offset = name.encode(), zlib.crc32(data), len(local)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, 0, 0, 0x21, crc, len(data), len(data),
                             len(raw), 0) + raw + data  # fmt: skip
        extra = struct.pack("<2H3Q", 0x0001, 24, len(data), len(data), offset)
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 45, 3, 45, 0, 0, 0, 0, 0x21, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(raw), len(extra), 0, 0, 0, 0o644 << 16,
                               0xFFFFFFFF) + raw + extra  # fmt: skip
    end = ends(len(local) + len(central), len(members), len(central), len(local), zip64=True)
    return bytes(local + central) + end


def test_real_wheels_read_as_zipfile_reads_them(tmp_path: Path) -> None:
    members = {
        "pkg/__init__.py": b"x = 1\n" * 1000,
        WHEEL_METADATA: METADATA,
        "pkg-1.0.dist-info/RECORD": b"",
    }
    cases = {
        "deflated": zipped(members),
        "stored": zipped(members, zipfile.ZIP_STORED),
        "comment": zipped(members, comment=b"an archive comment " * 1000),
        "zip64": with_end(zipped(members), zip64=True),
        "zip64-fields": zip64_fields(members),
        "prefixed": b"#!/bin/sh\nexit 0\n" * 50 + zipped(members),  # a self-extractor's code first
    }
    for label, data in cases.items():
        path = tmp_path / f"{label}.whl"
        path.write_bytes(data)
        with zipfile.ZipFile(path) as archive:
            assert archive.read(WHEEL_METADATA) == METADATA, label
        assert wheel_metadata(path) == METADATA, label
        with path.open("rb") as handle:  # export reads an open file
            assert wheel_metadata(handle) == METADATA, label


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"pkg/__init__.py": b""}, None),
        ({WHEEL_METADATA: METADATA, "other-1.0.dist-info/METADATA": METADATA}, None),  # which one?
        ({"pkg/pkg-1.0.dist-info/METADATA": METADATA}, None),  # not at the top
        ({WHEEL_METADATA: METADATA, "pkg/x.dist-info/METADATA": b"no"}, METADATA),
    ],
    ids=["none", "two", "nested", "one-and-nested"],
)
def test_the_one_top_level_metadata_is_taken(members: dict[str, bytes], expected: bytes | None) -> None:
    assert wheel_metadata(io.BytesIO(zipped(members))) == expected


def test_a_million_members_claimed_are_refused_before_anything_is_read() -> None:
    data = with_end(zipped({WHEEL_METADATA: METADATA}), count=1_000_000, zip64=True)
    result, peak, seconds = traced(lambda: wheel_metadata(io.BytesIO(data), "pkg-1.0-py3-none-any.whl"))
    assert isinstance(result, ArchiveError)
    assert str(result) == (
        "'pkg-1.0-py3-none-any.whl' lists 1,000,000 members in a central directory of 72 bytes: "
        "nestegg reads at most 500,000 members and 67,108,864 bytes"
    )
    assert peak < 200_000, peak
    assert seconds < 1


def test_a_central_directory_too_large_is_refused() -> None:
    data = zipped({WHEEL_METADATA: METADATA})
    at, count, _, offset = end_record(data)
    # a directory of 64 MiB + 1 claimed: its start would be before the file's, or far past it
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, 64 * 1024 * 1024 + 1, offset, 0)
    with pytest.raises(ArchiveError, match=r"central directory of 67,108,865 bytes"):
        wheel_metadata(io.BytesIO(data[:at] + end))


def test_many_members_cost_no_memory_for_each(monkeypatch: pytest.MonkeyPatch) -> None:
    # 150,000 members (7 MB): zipfile made a ZipInfo of each, some 60 MB
    data = many_member_wheel(150_000)
    result, peak, _ = traced(lambda: wheel_metadata(io.BytesIO(data)))
    assert result == METADATA
    assert peak < 8 * 1024 * 1024, peak
    # more members than the end record claims are counted as they are read
    monkeypatch.setattr(distmeta, "MAX_MEMBERS", 100_000)
    lying = many_member_wheel(150_000, claimed=10)
    with pytest.raises(ArchiveError, match=r"has over 100,000 members: nestegg reads no more"):
        wheel_metadata(io.BytesIO(lying))


@pytest.mark.parametrize(
    "disks", [(0, 0, 2), (1, 1, 1), (0, 1, 1)], ids=["two-disks", "last-disk", "directory-elsewhere"]
)
def test_multi_disk_archives_are_refused(disks: tuple[int, int, int]) -> None:
    data = zipped({WHEEL_METADATA: METADATA})
    with pytest.raises(ArchiveError, match=r"is a zip archive that spans several disks$"):
        wheel_metadata(io.BytesIO(with_end(data, zip64=True, disks=disks)))
    if disks[2] == 1:
        with pytest.raises(ArchiveError, match=r"is a zip archive that spans several disks$"):
            wheel_metadata(io.BytesIO(with_end(data, disks=disks)))


def bombed(declared: int, inflated: int) -> bytes:
    """A wheel whose METADATA declares ``declared`` bytes and inflates to ``inflated``."""
    data = zipped({WHEEL_METADATA: b"\0" * inflated})
    at = data.find(b"PK\x01\x02")
    central = bytearray(data)
    struct.pack_into("<L", central, at + 24, declared)  # its uncompressed size
    return bytes(central)


def test_a_metadata_bomb_is_cut_at_its_declared_size() -> None:
    data = bombed(100, 50 * 1024 * 1024)  # 50 KB inflating to 50 MB
    result, peak, _ = traced(lambda: wheel_metadata(io.BytesIO(data)))
    assert isinstance(result, ArchiveError)
    assert "unpacks to more than the 100 bytes it declares" in str(result)
    assert peak < 2 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bombed(20 * 1024 * 1024, 20 * 1024 * 1024), "is 20,971,520 bytes: nestegg reads at most 10,485,760"),
        (bombed(2000, 1000), "its size or CRC does not match"),
        (zipped({WHEEL_METADATA: METADATA}, zipfile.ZIP_STORED).replace(METADATA, METADATA.upper()), "CRC"),
        (zipped({WHEEL_METADATA: METADATA}, zipfile.ZIP_BZIP2), "packed with method 12"),
        (zipped({WHEEL_METADATA: METADATA}, zipfile.ZIP_LZMA), "packed with method 14"),
        (zipped({WHEEL_METADATA: METADATA})[:-30], "is not a zip archive"),
        (b"not a zip at all", "is not a zip archive"),
        (b"", "is not a zip archive"),
    ],
    ids=["over-the-cap", "short", "crc", "bzip2", "lzma", "cut-off", "garbage", "empty"],
)
def test_metadata_that_cannot_be_read_whole_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        wheel_metadata(io.BytesIO(data), "pkg-1.0-py3-none-any.whl")


def test_an_encrypted_metadata_is_refused() -> None:
    data = bytearray(zipped({WHEEL_METADATA: METADATA}))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        struct.pack_into("<H", data, at + flags_at, 1)
    with pytest.raises(ArchiveError, match="is encrypted"):
        wheel_metadata(io.BytesIO(bytes(data)))


# tar -------------------------------------------------------------------------------------------


def member(name: str, data: bytes = b"", *, size: int | None = None, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    info.type = kind
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def gzipped(*pieces: bytes, repeat: int = 1) -> bytes:
    """A .tar.gz of ``pieces`` (the first ``repeat`` times) and the end of the archive."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    parts = []
    for _ in range(repeat // 10_000):
        parts.append(packer.compress(pieces[0] * 10_000))
    parts.append(packer.compress(pieces[0] * (repeat % 10_000)))
    parts += [packer.compress(piece) for piece in pieces[1:]]
    return b"".join([*parts, packer.compress(b"\0" * 1024), packer.flush()])


def sdist(tmp_path: Path, data: bytes, filename: str = "pkg-1.0.tar.gz") -> Path:
    path = tmp_path / filename
    path.write_bytes(data)
    return path


def test_tar_members_are_not_kept(tmp_path: Path) -> None:
    # tarfile keeps a TarInfo of each member it read (450 bytes): 30,000 held 13 MB
    path = sdist(tmp_path, gzipped(member("pkg-1.0/x"), member("pkg-1.0/PKG-INFO", METADATA), repeat=30_000))
    result, peak, _ = traced(lambda: sdist_metadata(path))
    assert result == METADATA
    assert peak < 3 * 1024 * 1024, peak


@pytest.mark.slow
def test_the_attacks_sdist_costs_bounded_time_and_memory(tmp_path: Path) -> None:
    # the attack's shape in gzip, at the default bound: 150,000 empty members and no PKG-INFO
    # (330 KB) kept 70 MB of members before nothing was found; 2,000,000 kept 900 MB
    path = sdist(tmp_path, gzipped(member("pkg-1.0/x"), repeat=150_000))
    started = time.monotonic()
    result, growth = peak_growth(lambda: attempt(lambda: sdist_metadata(path)))
    assert str(result) == "'pkg-1.0.tar.gz' has over 100,000 members: nestegg reads no more"
    assert growth < 20 * 1024 * 1024, growth
    assert time.monotonic() - started < 30


def test_the_members_looked_at_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distmeta, "MAX_TAR_MEMBERS", 1000)
    path = sdist(tmp_path, gzipped(member("pkg-1.0/x"), repeat=5000))
    with pytest.raises(
        ArchiveError, match=r"^'pkg-1.0.tar.gz' has over 1,000 members: nestegg reads no more$"
    ):
        sdist_metadata(path)
    path = sdist(tmp_path, gzipped(member("pkg-1.0/x"), member("pkg-1.0/PKG-INFO", METADATA), repeat=999))
    assert sdist_metadata(path) == METADATA


def test_the_bytes_unpacked_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distmeta, "MAX_UNPACKED", 8 * 1024 * 1024)
    zeros = b"\0" * (16 * 1024 * 1024)  # a member's data is skipped, but still unpacked
    path = sdist(tmp_path, gzipped(member("pkg-1.0/big", zeros), member("pkg-1.0/PKG-INFO", METADATA)))
    with pytest.raises(ArchiveError, match=r"unpacks to over 8,388,608 bytes"):
        sdist_metadata(path)


@pytest.mark.parametrize(
    "kind",
    [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME],
    ids=["pax", "pax-global", "gnu-longname"],
)
def test_a_huge_tar_header_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    # tarfile reads such a header whole into memory, whatever size it says
    size = 64 * 1024 * 1024
    path = sdist(tmp_path, gzipped(member("pkg-1.0/x", size=size, kind=kind), b"\0" * size, b"\0" * 512))
    result, peak, _ = traced(lambda: sdist_metadata(path))
    assert isinstance(result, ArchiveError)
    assert str(result) == "'pkg-1.0.tar.gz' has a tar header over 1,048,576 bytes long"
    assert peak < 4 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("compress", "message"),
    [
        (lambda data: lzma.compress(data, format=lzma.FORMAT_XZ), "is not gzip-compressed"),
        (bz2.compress, "is not gzip-compressed"),
        (lambda data: data, "is not gzip-compressed"),
        (lambda _: zipped({"pkg-1.0/PKG-INFO": METADATA}), "is not gzip-compressed"),
        (lambda data: gzipped(data)[:-40], "is not a readable .tar.gz"),
        (lambda _: zlib.compress(b"not a tar" * 100, wbits=31), "is not a readable .tar.gz"),
    ],
    ids=["xz", "bzip2", "plain-tar", "zip", "cut-off", "gzip-of-no-tar"],
)
def test_a_tar_gz_must_be_a_gzip_compressed_tar(
    tmp_path: Path, compress: Callable[[bytes], bytes], message: str
) -> None:
    tar = member("pkg-1.0/PKG-INFO", METADATA) + b"\0" * 1024
    with pytest.raises(ArchiveError, match=message):
        sdist_metadata(sdist(tmp_path, compress(tar)))


@pytest.mark.parametrize(
    "pieces",
    [
        [member("pax", b"9" * 5000 + b" path=x\n", kind=tarfile.XHDTYPE)],  # past int()'s digits
        [member("pax", b"0 path=x\n", kind=tarfile.XHDTYPE)],
        [member("pax", b"16 path=pkg-1.0\n", kind=tarfile.XGLTYPE)] * 2000,  # nested in tarfile
    ],
    ids=["huge-pax-length", "zero-pax-length", "pax-chain"],
)
def test_a_damaged_tar_is_refused(tmp_path: Path, pieces: list[bytes]) -> None:
    path = sdist(tmp_path, gzipped(*pieces, member("pkg-1.0/PKG-INFO", METADATA)))
    with pytest.raises(
        ArchiveError, match=r"^'pkg-1.0.tar.gz' (is not a readable .tar.gz|has a tar header over)"
    ):
        sdist_metadata(path)


def test_a_tar_that_points_backwards_is_refused(tmp_path: Path) -> None:
    # a size of -1024 (in base-256) sends tarfile back to the member before: it read the two in
    # turn for ever, keeping each (a 200-byte upload grew the server without end)
    header = bytearray(member("pkg-1.0/c"))
    header[124:136] = b"\xff" + (-1024).to_bytes(11, "big", signed=True)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    path = sdist(tmp_path, gzipped(member("pkg-1.0/a"), member("pkg-1.0/b"), bytes(header)))
    with pytest.raises(ArchiveError, match="a member's size points backwards"):
        sdist_metadata(path)


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_pkg_info_is_looked_for_where_the_sdist_format_puts_it(tmp_path: Path, suffix: str) -> None:
    other = METADATA.replace(b"pkg", b"other")
    members = {
        "other-9.9/PKG-INFO": other,
        "pkg-1.0/src/PKG-INFO": b"",
        "PKG-INFO": b"",
        "pkg-1.0/PKG-INFO": METADATA,
    }
    if suffix == ".zip":
        data = zipped(members)
    else:
        data = gzipped(*(member(name, value) for name, value in members.items()))
    assert sdist_metadata(sdist(tmp_path, data, f"pkg-1.0{suffix}")) == METADATA
    # the same folder spelled otherwise (an older setuptools' Pkg-1.0.0)
    assert sdist_metadata(sdist(tmp_path, data, f"PKG-1.0.0{suffix}")) == METADATA
    # none where the format puts it: the first other one at the top, whose name the caller checks
    assert sdist_metadata(sdist(tmp_path, data, f"pkg-2.0{suffix}")) == other
    del members["other-9.9/PKG-INFO"], members["pkg-1.0/PKG-INFO"]
    if suffix == ".zip":
        data = zipped(members)
    else:
        data = gzipped(*(member(name, value) for name, value in members.items()))
    assert sdist_metadata(sdist(tmp_path, data, f"pkg-1.0{suffix}")) is None


def test_a_pkg_info_over_the_cap_is_refused(tmp_path: Path) -> None:
    path = sdist(tmp_path, gzipped(member("pkg-1.0/PKG-INFO", b"a" * (11 * 1024 * 1024))))
    with pytest.raises(ArchiveError, match=r"'pkg-1.0/PKG-INFO' in 'pkg-1.0.tar.gz' is 11,534,336 bytes"):
        sdist_metadata(path)


def test_tarfile_keeps_its_members_where_they_are_emptied() -> None:
    """_tar_members empties TarFile.members, an attribute tarfile does not document: if a Python
    release moves it, this fails, and the members would be kept again."""
    data = member("pkg-1.0/a") + member("pkg-1.0/b") + b"\0" * 1024
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        first = archive.next()
        assert archive.members == [first]  # type: ignore[attr-defined]
        archive.members.clear()  # type: ignore[attr-defined]
        second = archive.next()
        assert second is not None
        assert second.name == "pkg-1.0/b"
        assert archive.members == [second]  # type: ignore[attr-defined]


# filenames -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "\u212a-1.0.tar.gz",  # KELVIN SIGN: k once normalized
        "\uff4b-1.0.tar.gz",  # FULLWIDTH LATIN SMALL LETTER K
        "k-1.0-py3-none-any.wh\u2113",
        "caf\u00e9-1.0.tar.gz",
        "k\u0131-1.0.tar.gz",  # dotless i
        "k-\uff11.0.tar.gz",  # a fullwidth digit
        "k-1.0\n.tar.gz",
        "k-1.0\x7f.tar.gz",
    ],
)
def test_distribution_filenames_are_printable_ascii(filename: str) -> None:
    with pytest.raises(UploadError, match=r"not printable ASCII$"):
        parse_dist_filename(filename)
