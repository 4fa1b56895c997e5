"""In-tree PEP 517 build backend written by nestegg (stdlib only, Python 3.8+).

It packages the files of this source tree as they are; nothing is compiled or fetched.

:mod:`nestegg_core.testing.dists` writes this very file into every sdist it makes (read as a
resource), next to a ``nestegg_build.json`` of what to build, and makes its own wheels and sdists
with the same helpers, so that a wheel built from the sdist has the bytes of the generated one.
Being shipped, it must run on the oldest Python an installer may build with: no syntax or
library newer than 3.8 (annotations are never evaluated).
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

#: zip cannot store dates before 1980; the tar mtime is the same instant so both formats agree
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
TAR_MTIME = 315532800
#: ZipInfo.create_system of Unix: the default depends on the OS that writes the file
UNIX = 3
CHUNK = 1 << 20
BUILD_INFO = "nestegg_build.json"


def record_hash(digest: bytes) -> str:
    """A RECORD line's hash of a file whose sha256 is ``digest``."""
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def zip_add(zf: zipfile.ZipFile, arcname: str, size: int, chunks: Iterable[bytes], compress: bool) -> str:
    """Add a file of ``size`` bytes to a wheel; its RECORD hash."""
    info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
    info.create_system = UNIX
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    # known up front, so that zipfile decides on zip64 from the size, not from a guess
    info.file_size = size
    digest = hashlib.sha256()
    with zf.open(info, "w") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    return record_hash(digest.digest())


class ChunkReader:
    """A read()-only file over an iterable of chunks, for tarfile.addfile."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._current = b""
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        # tarfile treats a short read as truncated data, so fill `size` unless at the end
        parts = []
        while size != 0:
            if self._pos >= len(self._current):
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._current, self._pos = nxt, 0
                continue
            available = len(self._current) - self._pos
            take = available if size < 0 else min(size, available)
            parts.append(self._current[self._pos : self._pos + take])
            self._pos += take
            if size > 0:
                size -= take
        return b"".join(parts)


def tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    """An sdist member's header: the same owner, mode and time whoever makes it."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_sdist(out: Any, members: dict[str, tuple[int, Iterable[bytes]] | None]) -> None:
    """Write an sdist to the open binary file ``out``: directories (None) and files (size, chunks),
    in the order of their names."""
    # filename="" keeps the temporary file's name out of the gzip header
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0)
    with gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(members):
            entry = members[name]
            if entry is None:
                tf.addfile(tar_info(name, directory=True))
            else:
                size, chunks = entry
                tf.addfile(tar_info(name, size=size), ChunkReader(chunks))


def write_record(zf: zipfile.ZipFile, record_name: str, rows: list[tuple[str, str, str]]) -> None:
    """The wheel's RECORD, listing ``rows`` and itself, last."""
    rows = [*rows, (record_name, "", "")]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    record = text.getvalue().encode("utf-8")
    zip_add(zf, record_name, len(record), [record], True)


# the backend ----------------------------------------------------------------------------------


def _here() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def _root() -> str:
    return os.path.dirname(_here())


def _info() -> dict[str, Any]:
    with open(os.path.join(_here(), BUILD_INFO), encoding="utf-8") as f:
        info: dict[str, Any] = json.load(f)
    return info


def _walk(top: str) -> list[str]:
    """Files below top (relative to the tree root, "/"-separated), bytecode left out."""
    root = _root()
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for filename in filenames:
            if not filename.endswith(".pyc"):
                rel = os.path.relpath(os.path.join(dirpath, filename), root)
                found.append(rel.replace(os.sep, "/"))
    return found


def _path(rel: str) -> str:
    return os.path.join(_root(), *rel.split("/"))


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk


def _read(rel: str) -> bytes:
    with open(_path(rel), "rb") as f:
        return f.read()


def _dist_info_files(info: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [
        ("METADATA", _read("PKG-INFO")),
        ("WHEEL", info["wheel"].encode("utf-8")),
    ]


def get_requires_for_build_wheel(config_settings: object = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: object = None) -> list[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: object = None) -> str:
    info = _info()
    target = os.path.join(metadata_directory, info["dist_info"])
    if not os.path.isdir(target):
        os.makedirs(target)
    for name, data in _dist_info_files(info):
        with open(os.path.join(target, name), "wb") as f:
            f.write(data)
    return str(info["dist_info"])


def build_wheel(
    wheel_directory: str, config_settings: object = None, metadata_directory: object = None
) -> str:
    info = _info()
    stored = set(info["stored"])
    dist_info = info["dist_info"]
    rows = []
    target = os.path.join(wheel_directory, info["wheel_filename"])
    with zipfile.ZipFile(target, "w") as zf:
        for rel in sorted(_walk(info["package_dir"])):
            path = _path(rel)
            size = os.path.getsize(path)
            digest = zip_add(zf, rel, size, _file_chunks(path), rel not in stored)
            rows.append((rel, digest, str(size)))
        for name, data in _dist_info_files(info):
            arcname = dist_info + "/" + name
            rows.append((arcname, zip_add(zf, arcname, len(data), [data], True), str(len(data))))
        write_record(zf, dist_info + "/RECORD", rows)
    return str(info["wheel_filename"])


def build_sdist(sdist_directory: str, config_settings: object = None) -> str:
    info = _info()
    root = info["sdist_root"]
    rels = ["PKG-INFO", "pyproject.toml"]
    rels += _walk(os.path.basename(_here())) + _walk(info["package_dir"])
    members: dict[str, tuple[int, Iterable[bytes]] | None] = {}
    for rel in rels:
        path = _path(rel)
        members[root + "/" + rel] = (os.path.getsize(path), _file_chunks(path))
        parts = rel.split("/")
        for i in range(len(parts)):
            members.setdefault("/".join([root, *parts[:i]]), None)
    target = os.path.join(sdist_directory, info["sdist_filename"])
    with open(target, "wb") as out:
        write_sdist(out, members)
    return str(info["sdist_filename"])
