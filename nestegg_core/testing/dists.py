"""Generate real, installable wheels and sdists offline.

The packages are built from a :class:`PackageSpec` alone: no network, no setuptools, no
build frontend. They serve as the projects of a fake upstream index in our own tests, as
fixtures for other projects through the pytest plugin, and as (optionally large) files for
benchmarks. Output is byte-for-byte deterministic, so a spec always gives the same sha256.

The sdist carries a tiny stdlib-only PEP 517 backend (:mod:`nestegg_core.testing.sdist_backend`,
whose file is copied in), so pip and uv can build it with build isolation and no index at all;
the wheel it builds has the same members, in the same order, with the same bytes as
:func:`make_wheel`'s: both are written by that module's helpers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .sdist_backend import BUILD_INFO, write_record, write_sdist, zip_add

__all__ = [
    "PAYLOAD_NAME",
    "PackageSpec",
    "backend_source",
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
    #: the long description, the metadata's body
    description: str = ""
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
    body = f"\n{spec.description}" if spec.description else ""
    return ("".join(line + "\n" for line in lines) + body).encode("utf-8")


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
            for m in members:
                rows.append((m.arcname, zip_add(zf, m.arcname, m.size, m.chunks(), m.compress), str(m.size)))
            write_record(zf, f"{dist_info}/RECORD", rows)

    _write_atomically(path, write)
    return path


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


def backend_source() -> bytes:
    """The in-tree backend every sdist carries: :mod:`nestegg_core.testing.sdist_backend`'s file."""
    return files(__package__).joinpath("sdist_backend.py").read_bytes()


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
        _bytes_member(f"{_BACKEND_DIR}/{_BACKEND_MODULE}.py", backend_source()),
        _bytes_member(f"{_BACKEND_DIR}/{BUILD_INFO}", _build_info(spec)),
        *_package_members(spec),
    ]
    by_name: dict[str, tuple[int, Iterable[bytes]] | None] = {}
    for member in members:
        by_name[f"{root}/{member.arcname}"] = (member.size, member.chunks())
        for parent in PurePosixPath(member.arcname).parents:
            by_name.setdefault(root if parent.name == "" else f"{root}/{parent}", None)
    _write_atomically(path, lambda out: write_sdist(out, by_name))
    return path
