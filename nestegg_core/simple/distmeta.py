"""Metadata read from distribution files themselves: wheel METADATA, sdist PKG-INFO.

The archives come from clients and upstreams, so each is read within fixed bounds that the
largest real ones stay far below: a zip's central directory is sized up from its end record and
then read a piece at a time, a tar's members one at a time without keeping them, and only the
metadata member is unpacked, up to its declared size. An archive past a bound, or not of the kind
its name says, raises :class:`ArchiveError` before the bytes are spent.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import Parser
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from packaging.utils import NormalizedName, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from nestegg_core.errors import ArchiveError, UploadError, cut

from .models import MAX_FILENAME, MAX_VERSION, has_unreadable_version

_MAX_METADATA = 10 * 1024 * 1024
#: the most members a zip may list (a scan takes about 1 us each): the largest real wheels hold
#: tens of thousands (torch 13,000, in a central directory of 1.2 MB)
MAX_MEMBERS = 500_000
#: the largest zip central directory read (a member takes 46 bytes there, and its name)
MAX_CENTRAL_DIRECTORY = 64 * 1024 * 1024
#: the most members of a .tar.gz looked at for its PKG-INFO (tarfile takes 15-40 us each)
MAX_TAR_MEMBERS = 100_000
#: the most bytes a .tar.gz is unpacked to while its PKG-INFO is looked for (3-6 s of inflating)
MAX_UNPACKED = 2 * 1024 * 1024 * 1024
#: the most bytes of headers one tar member may have (pax and GNU records, sparse maps)
_MAX_TAR_HEADER = 1024 * 1024
_PIECE = 1024 * 1024


def parse_dist_filename(filename: str) -> tuple[NormalizedName, Version]:
    """Project name and version of a wheel or sdist filename; :class:`UploadError` otherwise."""
    if not (filename.isascii() and filename.isprintable()):
        # the filename specs allow ASCII only: K-1.0.tar.gz with a Kelvin sign is no name of k's
        raise UploadError(f"invalid distribution filename {cut(filename)!r}: not printable ASCII")
    if has_unreadable_version(filename):
        raise UploadError(
            f"invalid distribution filename {cut(filename)!r}: its version is over {MAX_VERSION} characters"
        )
    if len(filename) > MAX_FILENAME:
        raise UploadError(
            f"invalid distribution filename {cut(filename)!r}: {len(filename)} characters, "
            f"over the {MAX_FILENAME} nestegg stores"
        )
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            # packaging reads any text between the dashes as tags: pip would find no wheel in it
            tags = filename[: -len(".whl")].rsplit("-", 3)[1:]
            if not all(_TAG.fullmatch(tag) for tag in tags):
                raise ValueError(f"its tags {'-'.join(tags)!r} are not made of letters, digits, '_' and '.'")
            return name, version
        if filename.endswith((".tar.gz", ".zip")):
            return parse_sdist_filename(filename)
    except ValueError as exc:  # packaging's Invalid*Filename, InvalidVersion, a huge build number
        raise UploadError(f"invalid distribution filename {cut(filename)!r}: {cut(str(exc))}") from None
    raise UploadError(
        f"invalid distribution filename {filename!r}: expected a wheel (.whl) or an sdist (.tar.gz or .zip)"
    )


#: a wheel's python, abi or platform tag: a set of tags, each of letters, digits and '_', joined by '.'
_TAG = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")


def wheel_metadata(path: Path | BinaryIO, filename: str | None = None) -> bytes | None:
    """The ``*.dist-info/METADATA`` bytes of a wheel (a path, or a file open for reading), or None
    if it has none or more than one; :class:`ArchiveError` if it is no zip nestegg reads."""
    shown = filename or (path.name if isinstance(path, Path) else "the wheel")
    with _opened(path) as handle:
        zipped = _Zip(handle, shown)
        found = []
        for entry in zipped.entries(b".dist-info/METADATA"):
            found.append(entry)
            if len(found) > 1:
                return None
        return zipped.read(found[0]) if found else None


def sdist_metadata(path: Path, filename: str | None = None) -> bytes | None:
    """The top-level ``PKG-INFO`` of an sdist (.tar.gz or .zip, as ``filename`` says), or None.

    The sdist format puts it at ``<name>-<version>/PKG-INFO``: that one is taken, else the first
    other top-level one. :class:`ArchiveError` if the archive is not of the kind its name says,
    or past a bound."""
    filename = filename or path.name
    try:
        release: tuple[NormalizedName, Version] | None = parse_dist_filename(filename)
    except UploadError:
        release = None
    with _opened(path) as handle:
        if filename.endswith(".zip"):
            zipped = _Zip(handle, filename)
            chosen = None
            for entry in zipped.entries(b"/PKG-INFO"):
                chosen = chosen or entry
                if _names(entry.name.partition("/")[0], release):
                    chosen = entry
                    break
            return None if chosen is None else zipped.read(chosen)
        return _tar_pkg_info(handle, filename, release)


def metadata_of(path: Path, filename: str | None = None) -> bytes | None:
    """The metadata of the wheel or sdist at ``path`` (named ``filename``, if not as the path is)."""
    if (filename or path.name).endswith(".whl"):
        return wheel_metadata(path, filename)
    return sdist_metadata(path, filename)


def metadata_fields(data: bytes) -> dict[str, list[str]]:
    """Core metadata headers, each name lower-cased, with every value it has; with no Description
    header, the body (where metadata 2.1 puts it) is the description."""
    # UTF-8, as the core metadata spec says: read as bytes, "Jörg" came out as "J\ufffd\ufffdrg"
    message = Parser(policy=compat32).parsestr(data.decode("utf-8", "replace"))
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key.lower(), []).append(str(value).strip())
    body = message.get_payload()
    if "description" not in fields and isinstance(body, str) and body.strip():
        fields["description"] = [body]
    return fields


@contextlib.contextmanager
def _opened(path: Path | BinaryIO) -> Iterator[BinaryIO]:
    """``path`` opened for reading, or a file already open (left open)."""
    if isinstance(path, Path):
        with open(path, "rb") as handle:
            yield handle
    else:
        yield path


def _names(folder: str, release: tuple[NormalizedName, Version] | None) -> bool:
    """Whether ``folder`` is the ``<name>-<version>`` of ``release`` (in any spelling)."""
    if release is None or len(folder) > MAX_FILENAME:
        return False
    try:
        return parse_sdist_filename(f"{folder}.tar.gz") == release
    except ValueError:
        return False


# zip -------------------------------------------------------------------------------------------
#
# zipfile.ZipFile makes a ZipInfo for every member before anything can be looked up (some 400
# bytes each: a million-member central directory of 47 MB cost 400 MB), and reads members of any
# size it is told. The records below are the zip format's (APPNOTE.TXT 4.3), read as zipfile does.

_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # one member's central directory header
_LENGTHS = struct.Struct("<3H")  # of its name, extra field and comment, at offset 28
_LOCAL = struct.Struct("<4s2B4HL2L2H")  # the header before a member's data
_CENTRAL_SIGNATURE = b"PK\x01\x02"
#: the bytes after the end record looked through first (its comment is nearly always empty)
_SHORT_TAIL = 8 * 1024
#: the longest central directory header: its fixed part, a name, an extra field and a comment
_MAX_HEADER = _CENTRAL.size + 3 * 0xFFFF
_ENCRYPTED = 0x01 | 0x20 | 0x40  # encrypted, compressed patched data, strong encryption
_UTF8 = 0x800
#: the bytes of a local header's extra field a reader of ranges is told to expect (wheels' are
#: empty or a few dozen bytes; a longer one is read as it comes)
_LOCAL_EXTRA = 1024
_STORED, _DEFLATED = 0, 8


@dataclass(frozen=True)
class _Entry:
    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    packed_size: int
    size: int
    offset: int


class _Zip:
    """A zip archive's central directory, sized up from its end record (multi-disk archives are
    refused), and the members found in it."""

    def __init__(self, handle: BinaryIO, shown: str) -> None:
        self.handle = handle
        self.shown = shown
        end = handle.seek(0, os.SEEK_END)
        # the record, then a comment of up to 64 KiB: the last few KiB first, which hold the last
        # record of nearly every zip (a wheel read by ranges costs that much)
        for comment in (_SHORT_TAIL, 0xFFFF):
            tail_start = max(0, end - _END.size - comment)
            handle.seek(tail_start)
            tail = handle.read()
            at = tail.rfind(b"PK\x05\x06")  # the last one, as zipfile takes it
            if at >= 0 or tail_start == 0:
                break
        if at < 0 or at + _END.size > len(tail):
            raise ArchiveError(f"{shown!r} is not a zip archive")
        _, disk, directory_disk, on_disk, entries, size, offset, _ = _END.unpack_from(tail, at)
        record = tail_start + at
        if record >= _END64_LOCATOR.size + _END64.size:
            handle.seek(record - _END64_LOCATOR.size - _END64.size)
            zip64 = handle.read(_END64.size + _END64_LOCATOR.size)
            signature, locator_disk, _, disks = _END64_LOCATOR.unpack_from(zip64, _END64.size)
            if signature == b"PK\x06\x07":
                if locator_disk != 0 or disks > 1:
                    raise ArchiveError(f"{shown!r} is a zip archive that spans several disks")
                fields = _END64.unpack_from(zip64)
                if fields[0] == b"PK\x06\x06":  # else not a Zip64 archive, as zipfile reads it
                    disk, directory_disk, on_disk, entries, size, offset = fields[4:]
                    record -= _END64.size + _END64_LOCATOR.size
        if disk or directory_disk or on_disk != entries:
            raise ArchiveError(f"{shown!r} is a zip archive that spans several disks")
        if entries > MAX_MEMBERS or size > MAX_CENTRAL_DIRECTORY:
            raise ArchiveError(
                f"{shown!r} lists {entries:,} members in a central directory of {size:,} bytes: "
                f"nestegg reads at most {MAX_MEMBERS:,} members and {MAX_CENTRAL_DIRECTORY:,} bytes"
            )
        #: where the central directory starts; what precedes the archive (a self-extractor's
        #: code) shifts every offset in it, as zipfile allows
        self.start = record - size
        self.size = size
        self.shift = self.start - offset
        if self.start < 0:
            raise ArchiveError(f"{shown!r} is not a zip archive: its central directory is cut off")

    def entries(self, suffix: bytes) -> Iterator[_Entry]:
        """The members at the top level (one ``/`` in their name) whose name ends with ``suffix``,
        in their order; the archive's file is read while this runs, so read members afterwards."""
        handle, data, at, left, seen = self.handle, b"", 0, self.size, 0
        handle.seek(self.start)
        while at < len(data) or left:
            if left and len(data) - at < _MAX_HEADER:
                piece = handle.read(min(left, _PIECE))
                if not piece:
                    raise ArchiveError(f"{self.shown!r} is cut off: its central directory ends early")
                left -= len(piece)
                data, at = data[at:] + piece, 0
                continue
            seen += 1
            if seen > MAX_MEMBERS:  # the end record may claim fewer members than there are
                raise ArchiveError(f"{self.shown!r} has over {MAX_MEMBERS:,} members: nestegg reads no more")
            if not data.startswith(_CENTRAL_SIGNATURE, at) or len(data) - at < _CENTRAL.size:
                raise ArchiveError(f"{self.shown!r} is not a zip archive: its central directory is damaged")
            name_length, extra_length, comment_length = _LENGTHS.unpack_from(data, at + 28)
            name_end = at + _CENTRAL.size + name_length
            end = name_end + extra_length + comment_length
            if end > len(data):
                raise ArchiveError(f"{self.shown!r} is not a zip archive: its central directory is damaged")
            if data.endswith(suffix, at, name_end) and data.count(b"/", at + _CENTRAL.size, name_end) == 1:
                yield self._entry(data, at, data[name_end : name_end + extra_length])
            at = end

    def _entry(self, data: bytes, at: int, extra: bytes) -> _Entry:
        fields = _CENTRAL.unpack_from(data, at)
        flags, method, crc, packed_size, size = fields[5], fields[6], fields[9], fields[10], fields[11]
        offset = fields[18]
        raw_name = data[at + _CENTRAL.size : at + _CENTRAL.size + fields[12]]
        try:
            name = raw_name.decode("utf-8" if flags & _UTF8 else "cp437")
        except UnicodeDecodeError:
            raise ArchiveError(f"{self.shown!r} has a member whose name is not UTF-8") from None
        # Zip64: the sizes and offset that do not fit in 32 bits follow in an extra field, in order
        wide = [value == 0xFFFFFFFF for value in (size, packed_size, offset)]
        while any(wide) and len(extra) >= 4:
            kind, length = struct.unpack_from("<2H", extra)
            field = extra[4 : 4 + length]
            if kind == 0x0001:
                if len(field) < 8 * sum(wide):
                    raise ArchiveError(f"{self.shown!r} has a damaged Zip64 field for {name!r}")
                values = list(struct.unpack_from(f"<{sum(wide)}Q", field))
                size = values.pop(0) if wide[0] else size
                packed_size = values.pop(0) if wide[1] else packed_size
                offset = values.pop(0) if wide[2] else offset
                break
            extra = extra[4 + length :]
        return _Entry(name=name, raw_name=raw_name, flags=flags, method=method, crc=crc,
                      packed_size=packed_size, size=size, offset=offset + self.shift)  # fmt: skip

    def read(self, entry: _Entry) -> bytes:
        """The member's bytes, unpacked up to its declared size (at most ``_MAX_METADATA``) and
        checked against its size and CRC."""
        where = f"{entry.name!r} in {self.shown!r}"
        if entry.size > _MAX_METADATA:
            raise ArchiveError(f"{where} is {entry.size:,} bytes: nestegg reads at most {_MAX_METADATA:,}")
        if entry.flags & _ENCRYPTED or entry.method not in (_STORED, _DEFLATED):
            raise ArchiveError(f"{where} is encrypted or packed with method {entry.method}: "
                               "nestegg reads stored and deflated members")  # fmt: skip
        # a deflate stream of empty blocks can be any length: more than this unpacks to more
        stored = entry.method == _STORED
        if entry.packed_size > 2 * _MAX_METADATA or (stored and entry.packed_size != entry.size):
            raise ArchiveError(f"{where} is damaged: {entry.packed_size:,} bytes packed for {entry.size:,}")
        expect = getattr(self.handle, "expect", None)
        if expect is not None:  # a file read by ranges: its header, name and data in one request
            expect(entry.offset, _LOCAL.size + len(entry.raw_name) + _LOCAL_EXTRA + entry.packed_size)
        self.handle.seek(entry.offset)
        header = self.handle.read(_LOCAL.size)
        if len(header) < _LOCAL.size or not header.startswith(b"PK\x03\x04"):
            raise ArchiveError(f"{where} is damaged: no local header where the central directory says")
        name_length, extra_length = _LOCAL.unpack(header)[-2:]
        if self.handle.read(name_length) != entry.raw_name:
            raise ArchiveError(f"{where} is damaged: its local header names another file")
        self.handle.seek(extra_length, os.SEEK_CUR)
        inflate = zlib.decompressobj(-zlib.MAX_WBITS) if entry.method == _DEFLATED else None
        out = bytearray()
        left = entry.packed_size
        while left:
            piece = self.handle.read(min(left, _PIECE))
            if not piece:
                raise ArchiveError(f"{where} is cut off")
            left -= len(piece)
            # never more than one byte past the declared size (max_length stays at least 1)
            out += piece if inflate is None else inflate.decompress(piece, entry.size + 1 - len(out))
            if len(out) > entry.size:
                raise ArchiveError(f"{where} unpacks to more than the {entry.size:,} bytes it declares")
        if len(out) != entry.size or zlib.crc32(out) != entry.crc:
            raise ArchiveError(f"{where} is damaged: its size or CRC does not match")
        return bytes(out)


# tar -------------------------------------------------------------------------------------------


def _tar_pkg_info(
    handle: BinaryIO, filename: str, release: tuple[NormalizedName, Version] | None
) -> bytes | None:
    if handle.read(2) != b"\x1f\x8b":
        raise ArchiveError(f"{filename!r} is not gzip-compressed, as a .tar.gz file must be")
    handle.seek(0)
    fallback = None
    try:
        with gzip.GzipFile(fileobj=handle, mode="rb") as unpacked:
            stream = _Unpacked(unpacked, filename)
            stream.allow(_MAX_TAR_HEADER)  # tarfile.open reads the first member
            with tarfile.open(fileobj=stream, mode="r:") as archive:
                for member in _tar_members(archive, stream, filename):
                    top, _, rest = member.name.partition("/")
                    if not member.isfile() or rest != "PKG-INFO":
                        continue
                    exact = _names(top, release)
                    if exact or fallback is None:
                        if member.size > _MAX_METADATA:
                            raise ArchiveError(f"{member.name!r} in {filename!r} is {member.size:,} bytes: "
                                               f"nestegg reads at most {_MAX_METADATA:,}")  # fmt: skip
                        stream.allow(member.size)
                        member_file = archive.extractfile(member)
                        data = b"" if member_file is None else member_file.read()
                        if exact:
                            return data
                        fallback = data
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, RecursionError) as exc:
        # a damaged gzip or tar (a pax length of 5000 digits; a chain of pax headers nests as
        # deep as it is long)
        raise ArchiveError(f"{filename!r} is not a readable .tar.gz: {cut(str(exc))}") from None
    return fallback


def _tar_members(archive: tarfile.TarFile, stream: _Unpacked, filename: str) -> Iterator[tarfile.TarInfo]:
    """The archive's members in turn, none kept; at most ``MAX_TAR_MEMBERS``, each with at most
    ``_MAX_TAR_HEADER`` bytes of headers."""
    for count in range(MAX_TAR_MEMBERS + 1):
        stream.allow(_MAX_TAR_HEADER)
        member = archive.next()
        # tarfile keeps every member it read in TarFile.members (not documented, ~450 bytes
        # each): emptied as we go; test_distmeta checks that it still is where it was
        archive.members.clear()  # type: ignore[attr-defined]
        if member is None:
            return
        if count == MAX_TAR_MEMBERS:
            raise ArchiveError(f"{filename!r} has over {MAX_TAR_MEMBERS:,} members: nestegg reads no more")
        yield member


class _Unpacked:
    """The unpacked bytes of a .tar.gz as tarfile reads them: forward only, up to
    ``MAX_UNPACKED`` in all, and between two calls of :meth:`allow`, at most the bytes it allows.
    tarfile skips a member's data with a seek, but reads a pax or GNU header whole, however long
    it says it is, and the blocks of a sparse file's map one by one, keeping each."""

    def __init__(self, stream: gzip.GzipFile, filename: str) -> None:
        self.stream = stream
        self.filename = filename
        self.position = 0
        self.allowed = 0

    def allow(self, size: int) -> None:
        self.allowed = size

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.allowed:
            raise ArchiveError(f"{self.filename!r} has a tar header over {_MAX_TAR_HEADER:,} bytes long")
        self._reach(self.position + size)
        data = self.stream.read(size)
        self.allowed -= len(data)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.position + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self.position:
            raise ArchiveError(f"{self.filename!r} is a damaged tar: a member's size points backwards")
        self._reach(target)
        self.stream.seek(target)
        self.position = target
        return target

    def tell(self) -> int:
        return self.position

    def write(self, _data: bytes) -> int:
        raise io.UnsupportedOperation("read only")

    def close(self) -> None:
        """Nothing: the unpacked stream is closed by its opener."""

    def _reach(self, position: int) -> None:
        if position > MAX_UNPACKED:
            raise ArchiveError(
                f"{self.filename!r} unpacks to over {MAX_UNPACKED:,} bytes: nestegg reads no more"
            )
