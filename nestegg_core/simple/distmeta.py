"""Metadata read from distribution files themselves: wheel METADATA, sdist PKG-INFO."""

from __future__ import annotations

import tarfile
import zipfile
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from packaging.utils import NormalizedName, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from nestegg_core.errors import UploadError

from .models import MAX_VERSION, has_unreadable_version

_MAX_METADATA = 10 * 1024 * 1024


def parse_dist_filename(filename: str) -> tuple[NormalizedName, Version]:
    """Project name and version of a wheel or sdist filename; :class:`UploadError` otherwise."""
    if has_unreadable_version(filename):
        raise UploadError(
            f"invalid distribution filename {_cut(filename)!r}: its version is over {MAX_VERSION} characters"
        )
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            return name, version
        if filename.endswith((".tar.gz", ".zip")):
            return parse_sdist_filename(filename)
    except ValueError as exc:  # packaging's Invalid*Filename, InvalidVersion, a huge build number
        raise UploadError(f"invalid distribution filename {_cut(filename)!r}: {_cut(str(exc))}") from None
    raise UploadError(
        f"invalid distribution filename {filename!r}: expected a wheel (.whl) or sdist (.tar.gz)"
    )


def _cut(text: str) -> str:
    # a message names the bad value, not all 5000 digits of it
    return text if len(text) <= 200 else text[:180] + "..."


def wheel_metadata(path: Path | BinaryIO) -> bytes | None:
    """The ``*.dist-info/METADATA`` bytes of a wheel (a path, or a file open for reading), or None
    if it has none or is no zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [
                n for n in archive.namelist()
                if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
            ]  # fmt: skip
            if len(names) != 1 or archive.getinfo(names[0]).file_size > _MAX_METADATA:
                return None
            return archive.read(names[0])
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return None


def sdist_metadata(path: Path) -> bytes | None:
    """The top-level ``PKG-INFO`` of an sdist (.tar.gz or .zip), or None."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.count("/") == 1 and info.filename.endswith("/PKG-INFO"):
                        return None if info.file_size > _MAX_METADATA else archive.read(info)
            return None
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile() and member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                    if member.size > _MAX_METADATA:
                        return None
                    handle = archive.extractfile(member)
                    return None if handle is None else handle.read()
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    return None


def metadata_of(path: Path) -> bytes | None:
    if path.name.endswith(".whl"):
        return wheel_metadata(path)
    return sdist_metadata(path)


def metadata_fields(data: bytes) -> dict[str, list[str]]:
    """Core metadata headers, each name lower-cased, with every value it has."""
    message = BytesParser(policy=compat32).parsebytes(data, headersonly=True)
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key.lower(), []).append(str(value).strip())
    return fields
