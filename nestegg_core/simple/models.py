"""Typed values of the Simple Repository API: one distribution file, one project page."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

# PEP 503's rule for what a normalized name looks like; anything else is redirected or refused.
_NORMALIZED = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE | re.ASCII)
_MAX_NAME = 200
#: the longest version text read: far past any real one (a few dozen characters), and short
#: enough that no number in it nears Python's int-string limit (``sys.get_int_max_str_digits``)
MAX_VERSION = 256
#: the longest Requires-Python (or other specifier set) read; real ones stay under a hundred
MAX_SPECIFIER = 1024
#: digits of the numbers of wheel tags and glibc versions (a Python minor, a glibc version)
MAX_DIGITS = 9


def is_valid_name(name: str) -> bool:
    """True for a project name the core metadata spec allows (any spelling)."""
    return len(name) <= _MAX_NAME and _VALID_NAME.match(name) is not None


def is_normalized(name: str) -> bool:
    return _NORMALIZED.match(name) is not None


#: how the names of distribution files end: wheels, sdists, and the older kinds that real indexes
#: still list (installers' archives, eggs, installers of systems); lowercase. Nestegg's own files
#: beside cached ones (``<file>.json``, ``<file>.metadata``, ``.changed``, part files) end otherwise
DIST_SUFFIXES = (
    ".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar", ".egg", ".exe", ".msi", ".rpm",
    ".dmg", ".deb", ".tbz", ".txz", ".tlz", ".tar.lz", ".tar.lzma", ".tar.z",
)  # fmt: skip
#: the longest filename a store takes: its longest sidecar's temporary file
#: (``.<filename>.metadata.checked.<8 letters>.tmp``) within the 255 bytes a filesystem allows a name
MAX_FILENAME = 255 - 31


def is_dist_filename(filename: str) -> bool:
    """Whether ``filename`` can be the name of a distribution file, and so of a file in a store: a
    known distribution suffix (in any case), one path component, no leading dot, printable ASCII
    only (as the filename specs say: a Kelvin sign or a fullwidth letter would alias an ASCII
    name once normalized). No name of a sidecar file (records, metadata, markers, part and
    temporary files) passes."""
    return (
        0 < len(filename) <= MAX_FILENAME
        and filename.isascii()
        and filename.isprintable()
        and (filename.endswith(DIST_SUFFIXES) or filename.lower().endswith(DIST_SUFFIXES))
        and not filename.startswith(".")
        and "/" not in filename
        and "\\" not in filename
        and "\x00" not in filename
    )


def parse_version(text: str) -> Version | None:
    """``text`` as a version, or None when it is none: not PEP 440, longer than ``MAX_VERSION``, or
    (a lower int-string limit) with a number Python refuses to read.

    Every version from outside (an index page, an upload, a command line, a config) is read
    through this: packaging raises a bare ValueError, not InvalidVersion, for a 5000-digit number.
    """
    if len(text) > MAX_VERSION:
        return None
    try:
        return Version(text)
    except ValueError:  # InvalidVersion is one, and so is a number past the int-string limit
        return None


def parse_specifier(text: str) -> SpecifierSet | None:
    """``text`` as a specifier set (a Requires-Python), or None when it is none (as
    :func:`parse_version`, longer than ``MAX_SPECIFIER``).

    packaging reads a specifier's version only when it is first compared: each is read here, so
    that a comparison never raises later.
    """
    if len(text) > MAX_SPECIFIER:
        return None
    try:
        specifier = SpecifierSet(text)
        for spec in specifier:
            if spec.operator != "===" and parse_version(spec.version.removesuffix(".*")) is None:
                return None
    except ValueError:  # InvalidSpecifier is one
        return None
    return specifier


def parse_number(text: str) -> int | None:
    """The number ``text`` holds in ASCII digits (a wheel tag's Python minor, a glibc version), or
    None when it holds none or has more digits than any such number has."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
        return None
    return int(text)


def version_of(filename: str) -> str | None:
    """The version a wheel or sdist filename carries, or None for other (legacy) files and for a
    version that :func:`parse_version` refuses.

    Split as packaging's filename parsers split, without their tag parsing: pages of thousands of
    wheels ask this for every file, and most files share a few versions (hence the cache).
    """
    text = _version_text(filename)
    return None if text is None else _version(text)


def has_unreadable_version(filename: str) -> bool:
    """Whether ``filename`` is a wheel's or sdist's whose version is longer than any version read
    (see :func:`parse_version`), which is no real file's; a legacy file without one is not."""
    if len(filename) <= MAX_VERSION:  # the usual case, without a split
        return False
    text = _version_text(filename)
    return text is not None and len(text) > MAX_VERSION


def _version_text(filename: str) -> str | None:
    """The version part of a wheel or sdist filename, unread; None for other files."""
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        return parts[1] if len(parts) in (5, 6) and parts[0] else None
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            name, dash, version = filename[: -len(suffix)].rpartition("-")
            return version if dash and name else None
    return None


@lru_cache(maxsize=8192)
def _version(text: str) -> str | None:
    version = parse_version(text)
    return None if version is None else str(version)


def format_time(value: datetime) -> str:
    """PEP 700's upload-time form: ISO 8601 in UTC with a ``Z``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Hashes(Mapping[str, str]):
    """A file's hashes when there is at most one (nearly always sha256), as a read-only mapping.

    Pages of tens of thousands of files hold two of these per file (the file's, its metadata's):
    two slots instead of a dict is a fifth of the memory, and a hex digest is held as its bytes
    (65 bytes for a sha256 instead of 113). Compares equal to the same ``dict``.
    """

    __slots__ = ("_algorithm", "_digest")

    def __init__(self, algorithm: str | None = None, digest: str = "") -> None:
        # one copy of the algorithm's name however many files carry it
        self._algorithm = None if algorithm is None else sys.intern(algorithm)
        self._digest = _packed(digest)

    def __getitem__(self, key: str) -> str:
        if key != self._algorithm or self._algorithm is None:
            raise KeyError(key)
        digest = self._digest
        return digest if isinstance(digest, str) else digest.hex()

    def get(self, key: str, default: Any = None) -> Any:
        # the hot path of rendering: no exception for the usual miss
        if key != self._algorithm or self._algorithm is None:
            return default
        digest = self._digest
        return digest if isinstance(digest, str) else digest.hex()

    def __iter__(self) -> Iterator[str]:
        return iter(() if self._algorithm is None else (self._algorithm,))

    def __len__(self) -> int:
        return 0 if self._algorithm is None else 1

    def __repr__(self) -> str:
        return repr(dict(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hashes):
            return self._algorithm == other._algorithm and self._digest == other._digest
        return super().__eq__(other)

    def __hash__(self) -> int:  # immutable, so a default of a frozen dataclass
        return hash((self._algorithm, self._digest))


def _packed(digest: str) -> str | bytes:
    """A lowercase hex digest as its bytes; any other text (uppercase, odd, not hex) as it is."""
    try:
        packed = bytes.fromhex(digest)
    except ValueError:
        return digest
    return packed if packed.hex() == digest else digest


#: the hashes of a file that has none (or of core metadata the index says exists, without a hash)
NO_HASHES = Hashes()


@lru_cache(maxsize=64)
def can_check(algorithm: str) -> bool:
    """Whether a file can be checked against a hash named ``algorithm`` (as PEP 503 names it, the
    name of a hashlib algorithm): one this Python can compute, with a digest of fixed length.

    The shake_* digests have no length of their own, so a page's digest cannot be checked; an
    algorithm hashlib lists but OpenSSL refuses (a legacy one, or md5 in FIPS mode) neither.
    """
    if algorithm not in hashlib.algorithms_available or algorithm.startswith("shake_"):
        return False
    try:
        hashlib.new(algorithm)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=64)
def _hex_length(algorithm: str) -> int:
    return hashlib.new(algorithm).digest_size * 2 if can_check(algorithm) else 0


def well_formed(algorithm: str, digest: str) -> bool:
    """Whether ``digest`` can be a digest of ``algorithm``: hex, of its length. One that cannot
    matches no file."""
    length = _hex_length(algorithm)
    if not 0 < len(digest) == length:
        return False
    try:  # a fifth of a strip() of the hex digits: the parse of a page calls it for every file
        return len(bytes.fromhex(digest)) * 2 == length  # shorter where it holds blanks
    except ValueError:
        return False


def mismatch(data: bytes, hashes: Mapping[str, str]) -> str | None:
    """The first algorithm of ``hashes`` that can be checked (:func:`can_check`) and that ``data``
    does not match, or None when every one matches (or none can be checked)."""
    for algorithm, expected in hashes.items():
        # a digest of another length or form than the algorithm's is a mismatch like any other
        if can_check(algorithm) and hashlib.new(algorithm, data).hexdigest() != expected:
            return algorithm
    return None


def compact_hashes(hashes: Mapping[str, str]) -> Mapping[str, str]:
    """``hashes`` as a :class:`Hashes` if it holds at most one, else as a dict of its own."""
    if isinstance(hashes, Hashes):
        return hashes
    if not hashes:
        return NO_HASHES
    if len(hashes) == 1:
        return Hashes(*next(iter(hashes.items())))
    return dict(hashes)


@dataclass(frozen=True, kw_only=True, slots=True, init=False)
class DistFile:
    """One file of a project page, as the index (upstream or private) describes it.

    ``yanked`` is None when the file is not yanked and the reason (maybe empty) when it is;
    ``core_metadata`` is None when no PEP 658 metadata file exists, else its hashes (maybe none).
    ``origin`` says where the file comes from: ``"mirror"`` or ``"private"``.

    ``hashes`` are the digests a page may list: the index's own and, once nestegg has checked the
    bytes against at least one of them, their sha256. ``own_sha256`` (a cached file's record only)
    is the sha256 nestegg took of the bytes it holds, whether or not the index vouched for them:
    for nestegg's own checks, never listed.
    """

    filename: str
    url: str = ""
    hashes: Mapping[str, str] = NO_HASHES
    requires_python: str | None = None
    yanked: str | None = None
    size: int | None = None
    upload_time: str | None = None
    core_metadata: Mapping[str, str] | None = None
    origin: str = "mirror"
    # not compared: a record is the page's entry when it lists the same (mirror.cached relies on it)
    own_sha256: str | None = field(default=None, compare=False)

    # The dataclass's own __init__ sets each field through object.__setattr__ (frozen): 1.4 us
    # a file, a fifth of a cold page's parse. The slots' setters do the same in a third of it.
    # Its defaults are the fields' (a test compares them).
    def __init__(
        self,
        *,
        filename: str,
        url: str = "",
        hashes: Mapping[str, str] = NO_HASHES,
        requires_python: str | None = None,
        yanked: str | None = None,
        size: int | None = None,
        upload_time: str | None = None,
        core_metadata: Mapping[str, str] | None = None,
        origin: str = "mirror",
        own_sha256: str | None = None,
    ) -> None:
        _set_filename(self, filename)
        _set_url(self, url)
        _set_hashes(self, hashes)
        _set_requires_python(self, requires_python)
        _set_yanked(self, yanked)
        _set_size(self, size)
        _set_upload_time(self, upload_time)
        _set_core_metadata(self, core_metadata)
        _set_origin(self, origin)
        _set_own_sha256(self, own_sha256)

    @classmethod
    def listed(  # noqa: PLR0917  # by position: the keywords cost as much again
        cls,
        filename: str,
        url: str,
        hashes: Mapping[str, str],
        requires_python: str | None,
        yanked: str | None,
        size: int | None,
        upload_time: str | None,
        core_metadata: Mapping[str, str] | None,
    ) -> DistFile:
        """A mirrored file as a page lists it (no ``own_sha256``): the parse makes one per file,
        and taken by position it costs 0.6 us, against 1.1 us through the keywords of ``__init__``."""
        dist = object.__new__(cls)
        _set_filename(dist, filename)
        _set_url(dist, url)
        _set_hashes(dist, hashes)
        _set_requires_python(dist, requires_python)
        _set_yanked(dist, yanked)
        _set_size(dist, size)
        _set_upload_time(dist, upload_time)
        _set_core_metadata(dist, core_metadata)
        _set_origin(dist, "mirror")
        _set_own_sha256(dist, None)
        return dist

    @property
    def sha256(self) -> str | None:
        """The sha256 a page may list (see ``hashes``); None when none was vouched for."""
        return self.hashes.get("sha256")

    @property
    def version(self) -> str | None:
        return version_of(self.filename)

    def with_changes(self, **changes: Any) -> DistFile:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A plain mapping for the on-disk state (not the PEP 691 form: see ``simple``)."""
        data: dict[str, Any] = {"filename": self.filename, "hashes": dict(self.hashes)}
        for key in ("url", "requires_python", "yanked", "size", "upload_time"):
            value = getattr(self, key)
            if (value is not None and value != "") or (key == "yanked" and value == ""):
                data[key] = value
        if self.core_metadata is not None:
            data["core_metadata"] = dict(self.core_metadata)
        if self.origin != "mirror":
            data["origin"] = self.origin
        if self.own_sha256 is not None and self.own_sha256 != self.hashes.get("sha256"):
            # else the listed sha256 is it, as in the records of earlier releases
            data["own_sha256"] = self.own_sha256
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DistFile:
        """The inverse of :meth:`to_json`; raises KeyError/TypeError/ValueError on a bad mapping."""
        filename = data["filename"]
        if not isinstance(filename, str) or not filename or "/" in filename:
            raise ValueError(f"bad filename {filename!r}")
        hashes = compact_hashes({str(k): str(v) for k, v in data.get("hashes", {}).items()})
        metadata = data.get("core_metadata")
        own = data.get("own_sha256")
        return cls(
            filename=filename,
            url=str(data.get("url", "")),
            hashes=hashes,
            requires_python=data.get("requires_python"),
            yanked=data.get("yanked"),
            size=None if data.get("size") is None else int(data["size"]),
            upload_time=data.get("upload_time"),
            core_metadata=(
                None if metadata is None else compact_hashes({str(k): str(v) for k, v in metadata.items()})
            ),
            origin=str(data.get("origin", "mirror")),
            own_sha256=str(own) if own is not None else hashes.get("sha256"),
        )


(
    _set_filename,
    _set_url,
    _set_hashes,
    _set_requires_python,
    _set_yanked,
    _set_size,
    _set_upload_time,
    _set_core_metadata,
    _set_origin,
    _set_own_sha256,
) = (vars(DistFile)[name].__set__ for name in DistFile.__slots__)


@dataclass(frozen=True, kw_only=True)
class ProjectPage:
    """A project's files and versions, in index order.

    ``listed`` says that ``versions`` is the index's own list (PEP 700), passed through; else
    they are the versions its files' names carry.
    """

    name: NormalizedName
    files: tuple[DistFile, ...] = ()
    versions: tuple[str, ...] = ()
    listed: bool = False

    @classmethod
    def build(
        cls, name: str, files: Iterable[DistFile], versions: Iterable[str] | None = None
    ) -> ProjectPage:
        """A page whose ``versions`` are ``versions`` (the index's list, PEP 700), or, when the
        index gives none (None), every version its files carry. One version is listed once
        however it is spelled (``0.6c1`` and ``0.6rc1``, ``69.3`` and ``69.3.0``), as first spelled.

        A version too long to read (a hostile index's, see :func:`parse_version`) is left out: a
        client would choke on it, and so would every comparison. (A file whose name carries one is
        not a distribution's, see :func:`is_dist_filename`.)
        """
        files = tuple(files)
        listed = versions is not None
        if versions is None:
            versions = (version for dist in files if (version := dist.version) is not None)
        return cls(name=canonicalize_name(name), files=files, versions=_distinct(versions), listed=listed)

    @property
    def index_versions(self) -> tuple[str, ...] | None:
        """The index's own list of versions, or None when it gave none (to build a page again)."""
        return self.versions if self.listed else None

    def file(self, filename: str) -> DistFile | None:
        return self._by_filename.get(filename)

    @cached_property
    def _by_filename(self) -> dict[str, DistFile]:
        # pages with thousands of files are asked for one file per request; a name listed twice
        # (in a state saved before the parser dropped the second) is its first entry's
        return {dist.filename: dist for dist in reversed(self.files)}

    def merged(self, first: Iterable[DistFile]) -> ProjectPage:
        """This page with ``first`` in front; a file of ``first`` hides one of the same name here."""
        first = tuple(first)
        names = {dist.filename for dist in first}
        rest = tuple(dist for dist in self.files if dist.filename not in names)
        return ProjectPage.build(self.name, first + rest, versions_with(self.index_versions, first))


def versions_with(versions: tuple[str, ...] | None, files: Iterable[DistFile]) -> tuple[str, ...] | None:
    """The index's list of ``versions`` (PEP 700) and those of ``files``, which nestegg lists beside
    the index's (private ones, cached ones the index dropped): a version whose files a page lists is
    in its list. None when the index gives none: a page's versions are then its files'."""
    if versions is None:
        return None
    return versions + tuple(version for dist in files if (version := dist.version) is not None)


def _distinct(versions: Iterable[str]) -> tuple[str, ...]:
    """``versions`` each once, compared as versions (as text if they are none), first spelling kept."""
    seen: dict[str, str] = {}
    # each spelling once first: a page lists one version for dozens of files, and the key's
    # regular expression for each of them was two thirds of a page's build (pydantic-core's 20 ms)
    for text in dict.fromkeys(versions):
        if len(text) <= MAX_VERSION:
            seen.setdefault(version_key(text), text)
    return tuple(seen.values())


#: the zeros that end a normalized version's release (``69.3.0``: ``69.3``), which Version ignores
_RELEASE_ZEROS = re.compile(r"^((?:\d+!)?\d+(?:\.\d+)*?)(?:\.0)+(?=$|[a-z+]|\.[a-z])")


def version_key(text: str) -> str:
    """What every spelling of one version shares, as Version compares them (``0.6c1`` and
    ``0.6rc1``, ``69.3`` and ``69.3.0``); the text itself if it is no version. A string, not a
    Version: pages list thousands, and the normalized text of each is cached already."""
    normalized = _version(text)
    return text if normalized is None else _RELEASE_ZEROS.sub(r"\1", normalized)
