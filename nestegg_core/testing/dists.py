"""Generate real, installable wheels and sdists offline.

The packages are built from a :class:`PackageSpec` alone: no network, no setuptools, no
build frontend. They serve as the projects of a fake upstream index in our own tests, as
fixtures for other projects through the pytest plugin, and as (optionally large) files for
benchmarks. Output is byte-for-byte deterministic, so a spec always gives the same sha256.

The sdist carries a tiny stdlib-only PEP 517 backend (:data:`BACKEND_SOURCE`), so pip and uv
can build it with build isolation and no index at all; the wheel it builds has the same
members, in the same order, with the same bytes as :func:`make_wheel`'s.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = [
    "BACKEND_SOURCE",
    "PAYLOAD_NAME",
    "PackageSpec",
    "core_metadata",
    "make_sdist",
    "make_wheel",
    "sdist_filename",
    "wheel_filename",
]

METADATA_VERSION = "2.1"
# Name of the pseudo-random data file inside the package directory (reserved in `files`).
PAYLOAD_NAME = "_nestegg_payload.bin"

_BACKEND_DIR = "_nestegg_backend"
_BACKEND_MODULE = "nestegg_inline_backend"
_BUILD_INFO = "nestegg_build.json"

# Zip cannot store dates before 1980; the tar mtime is the same instant so both formats agree.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_TAR_MTIME = 315532800
_UNIX = 3  # ZipInfo.create_system; the default depends on the OS that writes the file
_CHUNK = 1 << 20

# PEP 508 / core metadata name rule; packaging's own validator is newer than our minimum.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE | re.ASCII)
_TAG_PART = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


@dataclass(frozen=True, kw_only=True)
class PackageSpec:
    """What to put in a generated distribution.

    ``files`` maps paths relative to the package directory to text content; an entry named
    ``__init__.py`` replaces the generated one (which only sets ``__version__``).
    ``payload_size`` adds that many bytes of deterministic, incompressible data as
    ``<import_name>/_nestegg_payload.bin``, for large-file benchmarks.
    """

    name: str
    version: str
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    summary: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    payload_size: int = 0
    wheel_tag: str = "py3-none-any"

    def __post_init__(self) -> None:
        """Validate every field and freeze the mutable containers the caller passed in."""
        if not _VALID_NAME.match(self.name):
            raise ValueError(f"invalid project name {self.name!r}")
        try:
            Version(self.version)
        except InvalidVersion as exc:
            raise ValueError(f"invalid version {self.version!r}") from exc
        requires = _requirements(self.requires_dist, "requires_dist")
        if self.requires_python is not None:
            _check_specifier(self.requires_python)
        extras = _extras(self.extras)
        if "\n" in self.summary or "\r" in self.summary:
            raise ValueError(f"summary must be a single line: {self.summary!r}")
        for rel in self.files:
            _check_relative_path(rel)
        if self.payload_size < 0:
            raise ValueError(f"payload_size must not be negative: {self.payload_size!r}")
        _expand_tag(self.wheel_tag)
        object.__setattr__(self, "requires_dist", requires)
        object.__setattr__(self, "extras", MappingProxyType(extras))
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    def __hash__(self) -> int:
        # The generated __hash__ would choke on the mappings; specs make good cache keys.
        return hash(
            (
                self.name,
                self.version,
                self.requires_dist,
                self.requires_python,
                tuple(sorted(self.extras.items())),
                self.summary,
                tuple(sorted(self.files.items())),
                self.payload_size,
                self.wheel_tag,
            )
        )

    @property
    def import_name(self) -> str:
        """The package directory and import name: the canonical name with ``_`` for ``-``."""
        return canonicalize_name(self.name).replace("-", "_")


def _requirements(reqs: Iterable[str], what: str) -> tuple[str, ...]:
    # A bare string would otherwise be taken apart into one-character requirements.
    if isinstance(reqs, str):
        raise TypeError(f"{what} must be a sequence of requirement strings, not {reqs!r}")
    frozen = tuple(reqs)
    for req in frozen:
        _parse_requirement(req)
    return frozen


def _check_specifier(specifier: str) -> None:
    try:
        if not specifier.strip():
            raise InvalidSpecifier(specifier)
        SpecifierSet(specifier)
    except InvalidSpecifier as exc:
        raise ValueError(f"invalid requires_python {specifier!r}") from exc


def _extras(extras: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    frozen: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for extra, reqs in extras.items():
        if not _VALID_NAME.match(extra):
            raise ValueError(f"invalid extra name {extra!r}")
        normal = canonicalize_name(extra)
        if normal in seen:
            raise ValueError(f"extra {extra!r} is the same extra as {seen[normal]!r}")
        seen[normal] = extra
        frozen[extra] = _requirements(reqs, f"extras[{extra!r}]")
    return frozen


def _parse_requirement(req: str) -> Requirement:
    try:
        return Requirement(req)
    except InvalidRequirement as exc:
        raise ValueError(f"invalid requirement {req!r}") from exc


def _check_relative_path(rel: str) -> None:
    parts = rel.split("/")
    if (
        not rel
        or "\\" in rel
        or rel.startswith("/")
        or any(part in ("", ".", "..", "__pycache__") for part in parts)
        or rel == PAYLOAD_NAME
        # The in-tree backend leaves bytecode out of the wheel, so make_wheel must too.
        or rel.endswith(".pyc")
    ):
        raise ValueError(f"invalid package file path {rel!r}")


def _expand_tag(tag: str) -> list[str]:
    """The single tags of a (possibly compressed) wheel tag, in the order bdist_wheel writes."""
    parts = tag.split("-")
    if len(parts) != 3 or not all(_TAG_PART.match(part) for part in parts):
        raise ValueError(f"invalid wheel tag {tag!r}")
    try:
        parse_tag(tag)
    except ValueError as exc:
        raise ValueError(f"invalid wheel tag {tag!r}") from exc
    return ["-".join(t) for t in itertools.product(*(part.split(".") for part in parts))]


def _stem(spec: PackageSpec) -> str:
    return f"{spec.import_name}-{Version(spec.version)}"


def _with_extra_marker(req: str, extra: str) -> str:
    parsed = _parse_requirement(req)
    marker = parsed.marker
    parsed.marker = None
    if marker is None:
        return f'{parsed}; extra == "{extra}"'
    # Parenthesised so an `or` in the original marker cannot escape the extra condition.
    return f'{parsed}; ({marker}) and extra == "{extra}"'


def core_metadata(spec: PackageSpec) -> bytes:
    """The core metadata (``METADATA`` in the wheel, ``PKG-INFO`` in the sdist) of ``spec``."""
    lines = [
        f"Metadata-Version: {METADATA_VERSION}",
        f"Name: {spec.name}",
        f"Version: {Version(spec.version)}",
    ]
    if spec.summary:
        lines.append(f"Summary: {spec.summary}")
    if spec.requires_python is not None:
        lines.append(f"Requires-Python: {SpecifierSet(spec.requires_python)}")
    lines.extend(f"Requires-Dist: {_parse_requirement(req)}" for req in spec.requires_dist)
    # Sorted so that specs which compare equal also give identical bytes.
    for extra, reqs in sorted((canonicalize_name(k), v) for k, v in spec.extras.items()):
        lines.append(f"Provides-Extra: {extra}")
        lines.extend(f"Requires-Dist: {_with_extra_marker(req, extra)}" for req in reqs)
    return "".join(line + "\n" for line in lines).encode("utf-8")


def wheel_filename(spec: PackageSpec) -> str:
    """The wheel's file name: normalized name with underscores, normalized version, tag."""
    return f"{_stem(spec)}-{spec.wheel_tag}.whl"


def sdist_filename(spec: PackageSpec) -> str:
    """The sdist's file name: normalized name with underscores and normalized version."""
    return f"{_stem(spec)}.tar.gz"


def _wheel_file(spec: PackageSpec) -> bytes:
    tags = _expand_tag(spec.wheel_tag)
    purelib = all(tag.endswith("-any") for tag in tags)
    lines = [
        "Wheel-Version: 1.0",
        "Generator: nestegg",
        f"Root-Is-Purelib: {'true' if purelib else 'false'}",
        *(f"Tag: {tag}" for tag in tags),
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


@dataclass(frozen=True, kw_only=True)
class _Member:
    """One file of an archive; ``chunks`` is called once per write so payloads stream."""

    arcname: str
    size: int
    chunks: Callable[[], Iterable[bytes]]
    compress: bool = True


def _bytes_member(arcname: str, data: bytes) -> _Member:
    return _Member(arcname=arcname, size=len(data), chunks=lambda: (data,))


def _payload_chunks(spec: PackageSpec) -> Iterator[bytes]:
    # SHAKE-256 in counter mode: fast C code, incompressible, stdlib everywhere, and each
    # chunk is independent so nothing larger than one chunk is ever in memory.
    seed = f"nestegg-payload:{canonicalize_name(spec.name)}=={Version(spec.version)}:".encode()
    remaining = spec.payload_size
    for index in itertools.count():
        if remaining <= 0:
            return
        size = min(_CHUNK, remaining)
        yield hashlib.shake_256(seed + index.to_bytes(8, "big")).digest(size)
        remaining -= size


def _package_members(spec: PackageSpec) -> list[_Member]:
    pkg = spec.import_name
    init = f'__version__ = "{Version(spec.version)}"\n'.encode()
    members = {f"{pkg}/__init__.py": _bytes_member(f"{pkg}/__init__.py", init)}
    for rel, content in spec.files.items():
        members[f"{pkg}/{rel}"] = _bytes_member(f"{pkg}/{rel}", content.encode("utf-8"))
    if spec.payload_size:
        name = f"{pkg}/{PAYLOAD_NAME}"
        # Stored, not deflated: the data is incompressible and deflating 50 MB costs seconds.
        members[name] = _Member(
            arcname=name,
            size=spec.payload_size,
            chunks=lambda: _payload_chunks(spec),
            compress=False,
        )
    return [members[name] for name in sorted(members)]


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _zip_add(zf: zipfile.ZipFile, member: _Member) -> str:
    info = zipfile.ZipInfo(member.arcname, date_time=_ZIP_EPOCH)
    info.create_system = _UNIX
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED if member.compress else zipfile.ZIP_STORED
    # Known up front so zipfile decides on zip64 from the size, not from a guess.
    info.file_size = member.size
    digest = hashlib.sha256()
    with zf.open(info, "w") as out:
        for chunk in member.chunks():
            digest.update(chunk)
            out.write(chunk)
    return _record_hash(digest.digest())


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    # Parallel test workers may generate the same file into a shared directory: readers
    # must never see a half-written archive.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        tmp_path.chmod(0o644)
        tmp_path.replace(path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def make_wheel(spec: PackageSpec, dest: Path) -> Path:
    """Write the wheel of ``spec`` into directory ``dest`` (created if missing).

    Returns the wheel's path. The same spec always gives the same bytes.
    """
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / wheel_filename(spec)
    dist_info = f"{_stem(spec)}.dist-info"
    members = [
        *_package_members(spec),
        _bytes_member(f"{dist_info}/METADATA", core_metadata(spec)),
        _bytes_member(f"{dist_info}/WHEEL", _wheel_file(spec)),
    ]

    def write(out: IO[bytes]) -> None:
        rows: list[tuple[str, str, str]] = []
        with zipfile.ZipFile(out, "w") as zf:
            for member in members:
                rows.append((member.arcname, _zip_add(zf, member), str(member.size)))
            record_name = f"{dist_info}/RECORD"
            rows.append((record_name, "", ""))
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            _zip_add(zf, _bytes_member(record_name, text.getvalue().encode("utf-8")))

    _write_atomically(path, write)
    return path


class _ChunkReader:
    """A read()-only file over an iterable of chunks, for tarfile.addfile."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._current = b""
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        # tarfile treats a short read as truncated data, so fill `size` unless at the end.
        parts: list[bytes] = []
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


def _tar_info(name: str, *, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = _TAR_MTIME
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _pyproject() -> bytes:
    return (
        "# Built by an in-tree, stdlib-only backend so that installing needs no network.\n"
        "[build-system]\n"
        "requires = []\n"
        f'build-backend = "{_BACKEND_MODULE}"\n'
        f'backend-path = ["{_BACKEND_DIR}"]\n'
    ).encode()


def _build_info(spec: PackageSpec) -> bytes:
    stem = _stem(spec)
    info = {
        "dist_info": f"{stem}.dist-info",
        "package_dir": spec.import_name,
        "sdist_filename": sdist_filename(spec),
        "sdist_root": stem,
        "stored": [f"{spec.import_name}/{PAYLOAD_NAME}"] if spec.payload_size else [],
        "wheel": _wheel_file(spec).decode("utf-8"),
        "wheel_filename": wheel_filename(spec),
    }
    return (json.dumps(info, indent=2, sort_keys=True) + "\n").encode("utf-8")


def make_sdist(spec: PackageSpec, dest: Path) -> Path:
    """Write the sdist of ``spec`` into directory ``dest`` (created if missing).

    The sdist holds ``PKG-INFO``, ``pyproject.toml``, the package sources and an in-tree
    PEP 517 backend, so pip and uv install it offline without setuptools. Returns its path.
    """
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / sdist_filename(spec)
    root = _stem(spec)
    members = [
        _bytes_member("PKG-INFO", core_metadata(spec)),
        _bytes_member("pyproject.toml", _pyproject()),
        _bytes_member(f"{_BACKEND_DIR}/{_BACKEND_MODULE}.py", BACKEND_SOURCE.encode("utf-8")),
        _bytes_member(f"{_BACKEND_DIR}/{_BUILD_INFO}", _build_info(spec)),
        *_package_members(spec),
    ]
    by_name: dict[str, _Member | None] = {}
    for member in members:
        by_name[f"{root}/{member.arcname}"] = member
        for parent in PurePosixPath(member.arcname).parents:
            by_name.setdefault(root if parent.name == "" else f"{root}/{parent}", None)

    def write(out: IO[bytes]) -> None:
        # filename="" keeps the temporary file's name out of the gzip header.
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
        ):
            for name in sorted(by_name):
                entry = by_name[name]
                if entry is None:
                    tf.addfile(_tar_info(name, directory=True))
                else:
                    reader = _ChunkReader(entry.chunks())
                    tf.addfile(_tar_info(name, size=entry.size), reader)

    _write_atomically(path, write)
    return path


# The in-tree PEP 517 backend shipped in every sdist. It must run on the oldest Python an
# installer may build with (3.8), with the stdlib only, and mirror make_wheel/make_sdist
# exactly: same member order, zip/tar settings and RECORD format.
BACKEND_SOURCE = '''\
"""In-tree PEP 517 build backend written by nestegg (stdlib only, Python 3.8+).

It packages the files of this source tree as they are; nothing is compiled or fetched.
"""

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

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_TAR_MTIME = 315532800
_CHUNK = 1 << 20


def _info():
    with open(os.path.join(_HERE, "nestegg_build.json"), encoding="utf-8") as f:
        return json.load(f)


def _walk(top):
    """Files below top (relative to the tree root, "/"-separated), bytecode left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(_ROOT, top)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for filename in filenames:
            if not filename.endswith(".pyc"):
                rel = os.path.relpath(os.path.join(dirpath, filename), _ROOT)
                found.append(rel.replace(os.sep, "/"))
    return found


def _path(rel):
    return os.path.join(_ROOT, *rel.split("/"))


def _file_chunks(path):
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def _read(rel):
    with open(_path(rel), "rb") as f:
        return f.read()


def _zip_add(zf, arcname, size, chunks, compress):
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_EPOCH)
    info.create_system = 3
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.file_size = size
    digest = hashlib.sha256()
    with zf.open(info, "w") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    return "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def _dist_info_files(info):
    return [
        ("METADATA", _read("PKG-INFO")),
        ("WHEEL", info["wheel"].encode("utf-8")),
    ]


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = _info()
    target = os.path.join(metadata_directory, info["dist_info"])
    if not os.path.isdir(target):
        os.makedirs(target)
    for name, data in _dist_info_files(info):
        with open(os.path.join(target, name), "wb") as f:
            f.write(data)
    return info["dist_info"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = _info()
    stored = set(info["stored"])
    dist_info = info["dist_info"]
    rows = []
    target = os.path.join(wheel_directory, info["wheel_filename"])
    with zipfile.ZipFile(target, "w") as zf:
        for rel in sorted(_walk(info["package_dir"])):
            path = _path(rel)
            size = os.path.getsize(path)
            digest = _zip_add(zf, rel, size, _file_chunks(path), rel not in stored)
            rows.append((rel, digest, str(size)))
        for name, data in _dist_info_files(info):
            arcname = dist_info + "/" + name
            rows.append((arcname, _zip_add(zf, arcname, len(data), [data], True), str(len(data))))
        record_name = dist_info + "/RECORD"
        rows.append((record_name, "", ""))
        text = io.StringIO()
        csv.writer(text, lineterminator="\\n").writerows(rows)
        record = text.getvalue().encode("utf-8")
        _zip_add(zf, record_name, len(record), [record], True)
    return info["wheel_filename"]


class _ChunkReader(object):
    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._current = b""
        self._pos = 0

    def read(self, size=-1):
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
            parts.append(self._current[self._pos:self._pos + take])
            self._pos += take
            if size > 0:
                size -= take
        return b"".join(parts)


def _tar_info(name, size=0, directory=False):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = _TAR_MTIME
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_sdist(sdist_directory, config_settings=None):
    info = _info()
    root = info["sdist_root"]
    rels = ["PKG-INFO", "pyproject.toml"]
    rels += _walk(os.path.basename(_HERE)) + _walk(info["package_dir"])
    names = {}
    for rel in rels:
        names[root + "/" + rel] = rel
        parts = rel.split("/")
        for i in range(len(parts)):
            names.setdefault("/".join([root] + parts[:i]), None)
    target = os.path.join(sdist_directory, info["sdist_filename"])
    with open(target, "wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for name in sorted(names):
                    rel = names[name]
                    if rel is None:
                        tf.addfile(_tar_info(name, directory=True))
                    else:
                        path = _path(rel)
                        reader = _ChunkReader(_file_chunks(path))
                        tf.addfile(_tar_info(name, size=os.path.getsize(path)), reader)
    return info["sdist_filename"]
'''
