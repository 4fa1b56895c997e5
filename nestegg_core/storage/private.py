"""The private store: files uploaded or built here, served under names the upstream never answers for.

Layout under ``<nestegg dir>/private``::

    <name>/<filename>            the distribution file
    <name>/<filename>.json       its record (hashes, size, upload time, requires-python, yanked)
    <name>/<filename>.metadata   its core metadata (wheels), served as PEP 658 metadata
    .new-<name>.<pid>.<random>   a new name's folder while its first file is written into it
    .generation                  new bytes after every change of a project (``generation``)
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from nestegg_core.errors import InsufficientStorage, NotFound, UnsafePath, UploadError, cut, disk_full
from nestegg_core.simple.distmeta import metadata_fields, metadata_of, parse_dist_filename
from nestegg_core.simple.models import (
    DistFile,
    ProjectPage,
    format_time,
    is_dist_filename,
    is_normalized,
    parse_specifier,
    parse_version,
)
from nestegg_core.simple.patterns import is_pattern as _is_pattern
from nestegg_core.simple.patterns import normalize_pattern

from .fs import (
    copy_atomic,
    is_regular,
    make_folder,
    open_read,
    remove_folder_below,
    rename_folder_below,
    scan_below,
    sha256_file,
    sync_file,
    sync_folder,
    unlink_below,
    write_atomic,
)
from .generation import Generation
from .locks import FileLock
from .store import check_filename

logger = logging.getLogger(__name__)

#: where uploads are received, in the nest, before they are published
UPLOADS = Path("tmp", "uploads")
#: the start of the name of a new project's folder while it is filled, in the private store
STAGED = ".new-"


class PrivateStore:
    """Private projects on disk, with their pages cached in memory until the directory changes."""

    def __init__(
        self,
        root: Path,
        *,
        reserved: Iterable[str] = (),
        merged: Iterable[str] = (),
        nest: Path | None = None,
    ) -> None:
        self.root = root
        #: the nestegg dir (by default the store's parent): no link below it is followed
        self.nest = root.parent if nest is None else nest
        #: names and patterns that are private whatever is stored (config and private source builds),
        #: in the form of the names they are matched against (see :func:`normalize_pattern`)
        self.reserved = tuple(normalize_pattern(p) for p in reserved)
        self._exact = frozenset(p for p in self.reserved if not _is_pattern(p))
        self._patterns = [re.compile(fnmatch.translate(p)) for p in self.reserved if _is_pattern(p)]
        #: names whose private files are merged in front of upstream's (``private: no`` builds)
        self.merged = frozenset(canonicalize_name(n) for n in merged)
        self._pages: dict[str, tuple[int, ProjectPage]] = {}
        self._lock = threading.Lock()
        #: stamped after every change of a project's folder: its making (the name turns private)
        #: and every file added, yanked or removed
        self.generation = Generation(root / ".generation", make_folder=partial(make_folder, self.nest))

    # questions ---------------------------------------------------------------------------

    def is_private(self, name: NormalizedName) -> bool:
        """Whether the upstream must never be asked for ``name``."""
        if name in self.merged:
            return False
        if self.is_reserved(name):
            return True
        return self._stamp(name) is not None

    def is_reserved(self, name: NormalizedName) -> bool:
        """Whether ``name`` is one of the names, or matches one of the patterns, that are private
        whatever is stored."""
        return name in self._exact or any(p.match(name) for p in self._patterns)

    def is_merged(self, name: NormalizedName) -> bool:
        return name in self.merged

    def protected(self, names: Iterable[str]) -> frozenset[str]:
        """Those of ``names`` that are private or merged, as :meth:`is_private` and
        :meth:`is_merged` say, with one look at the store's folder instead of one per name."""
        folders: set[str] = set()
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root) as entries:
            folders = {e.name for e in entries}
        return frozenset(
            n for n in names if n in self.merged or n in folders or self.is_reserved(NormalizedName(n))
        )

    def page(self, name: NormalizedName) -> ProjectPage | None:
        """The page of the private files of ``name``, or None if there are none."""
        stamp = self._stamp(name)
        if stamp is None:
            return None
        cached = self._pages.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        files = self._records(name)
        if not files:
            return None
        files.sort(key=_sort_key)
        page = ProjectPage.build(name, files)
        with self._lock:
            self._pages[name] = (stamp, page)
        return page

    def names(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(
                entry.name for entry in os.scandir(self.root)
                if entry.is_dir(follow_symlinks=False) and is_normalized(entry.name)
                and self.page(NormalizedName(entry.name))
            )  # fmt: skip
        return []

    def file_path(self, name: NormalizedName, filename: str) -> Path:
        path = self.root / name / check_filename(filename)
        if not path.is_file():
            raise NotFound(f"private project {name!r} has no file {filename!r}")
        return path

    def metadata_path(self, name: NormalizedName, filename: str) -> Path:
        path = self.root / name / f"{check_filename(filename)}.metadata"
        if not path.is_file():
            raise NotFound(f"no metadata for {filename!r}")
        return path

    # changes -----------------------------------------------------------------------------

    def add(
        self, path: Path, *, filename: str | None = None, move: bool = False, replace: bool = False
    ) -> tuple[DistFile, bool]:
        """Publish a file; returns its record and whether it is new.

        The same bytes again change nothing; other bytes under an existing filename raise
        :class:`UploadError` ("File already exists"), as PyPI answers, unless ``replace`` is true
        (a source build of a branch that moved is a new build of the same version). A full disk
        is :class:`InsufficientStorage`, with nothing of the file left behind.
        """
        filename = filename or path.name
        parse_dist_filename(filename)  # UploadError, saying what is wrong with the name
        filename = check_filename(filename)
        try:
            return self._add(path, filename, move=move, replace=replace)
        except OSError as exc:
            if disk_full(exc):
                raise InsufficientStorage(f"the disk is full: {filename!r} was not published") from None
            raise

    def _add(self, path: Path, filename: str, *, move: bool, replace: bool) -> tuple[DistFile, bool]:
        name, version = parse_dist_filename(filename)
        sha256 = sha256_file(path)
        folder = self.root / name
        target = folder / filename
        with self.lock(name):
            existing = self._record(name, filename)
            if target.is_file() and existing is not None:
                if existing.sha256 == sha256:
                    return existing, False
                if replace:
                    logger.info("replacing %s/%s with a new build", name, filename)
                else:
                    raise UploadError(
                        f"File already exists ({filename!r}) with other contents; "
                        "use a new version or remove the old file first"
                    )
            elif not replace:
                # the same file spelled otherwise (PKG-1.0.tar.gz, pkg-1.0.0.tar.gz, a .zip sdist)
                # would sit beside it as a second, different copy of one release: refused as PyPI does
                twin = self._twin(name, filename)
                if twin is not None:
                    if twin.sha256 == sha256:
                        return twin, False
                    raise UploadError(
                        f"File already exists: {filename!r} is the same distribution as {twin.filename!r}, "
                        "with other contents; use a new version"
                    )
            record, metadata = _checked(path, filename, name, version, sha256)
            self._publish(name, path, record, metadata, move=move)
        logger.info("published %s/%s (version %s)", name, filename, version)
        return record, True

    def yank(self, name: NormalizedName, filename: str, reason: str | None) -> DistFile:
        """Mark a file yanked (``reason`` may be empty) or, with ``reason=None``, not yanked."""
        with self.lock(name):
            record = self._record(name, filename)
            if record is None:
                raise NotFound(f"private project {name!r} has no file {filename!r}")
            record = record.with_changes(yanked=reason)
            self._write_record(name, record)
        return record

    def remove(self, name: NormalizedName, filename: str) -> None:
        with self.lock(name):
            folder = self.root / name
            if not is_regular(folder / check_filename(filename)):
                raise NotFound(f"private project {name!r} has no file {filename!r}")
            # the record first: a crash in between leaves an unlisted file, never a listed ghost
            for suffix in (".json", ".metadata", ""):
                unlink_below(self.nest, folder / f"{filename}{suffix}")
            self._changed(name)

    def _publish(self, name: str, path: Path, record: DistFile, metadata: bytes, *, move: bool) -> None:
        """Write the checked file: every check passed, and the folder's existence makes the name
        private for good. A new name's folder is filled aside and renamed in whole, so a crash
        leaves no name private without a file, which no upload was answered for."""
        folder = self.root / name
        if os.path.lexists(folder):
            try:
                self._write(folder, path, record, metadata, move=move)
            except (OSError, UnsafePath):
                self._undo(name, record.filename)
                raise
        else:
            aside = self.root / f"{STAGED}{name}.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                self._write(aside, path, record, metadata, move=move)
                rename_folder_below(self.nest, aside, folder)
                sync_folder(self.nest, self.root)
            except (OSError, UnsafePath):
                remove_folder_below(self.nest, aside)
                raise
        self._changed(name)

    def _write(self, folder: Path, path: Path, record: DistFile, metadata: bytes, *, move: bool) -> None:
        """The file of ``record``, its metadata (a wheel's) and the record, written into ``folder``
        to the disk: the store holds the only copy, and an upload is answered once it is written."""
        make_folder(self.nest, folder)
        if record.core_metadata is not None:
            write_atomic(folder / f"{record.filename}.metadata", metadata, durable=True, root=self.nest)
        copy_atomic(path, folder / record.filename, move=move, root=self.nest)
        sync_file(folder / record.filename)
        data = json.dumps(record.to_json(), separators=(",", ":")).encode()
        write_atomic(folder / f"{record.filename}.json", data, durable=True, root=self.nest)
        sync_folder(self.nest, folder)

    def _undo(self, name: str, filename: str) -> None:
        """Take back what a failed :meth:`add` wrote into a folder that was there: the file, its
        record and metadata (the file it replaced is gone too: no record outlives its file)."""
        folder = self.root / name
        for suffix in (".json", ".metadata", ""):
            with contextlib.suppress(OSError, UnsafePath):
                unlink_below(self.nest, folder / f"{filename}{suffix}")
        self._changed(name)

    def emptied(self) -> list[str]:
        """The names that stay private with no file left (each was removed): a folder and no record."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(
                entry.name for entry in os.scandir(self.root)
                if entry.is_dir(follow_symlinks=False) and is_normalized(entry.name)
                and not self._filenames(entry.name)
            )  # fmt: skip
        return []

    def sweep(self, before: float) -> int:
        """Remove what crashes left, untouched since ``before`` (a time): folders of new names
        filled aside, temporary files in the projects' folders, and uploads received (``UPLOADS``
        in the nest). Returns how many files went."""
        removed = 0
        with scan_below(self.nest, self.root) as entries:
            folders = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        for folder in folders:
            if folder.startswith(STAGED) and _untouched(self.root / folder, before):
                removed += remove_folder_below(self.nest, self.root / folder)
            elif is_normalized(folder):
                removed += _remove_old(self.nest, self.root / folder, before, ".tmp")
        return removed + _remove_old(self.nest, self.nest / UPLOADS, before, "")

    def lock(self, name: NormalizedName) -> FileLock:
        path = self.root / ".locks" / f"{name}.lock"
        make_folder(self.nest, path.parent)
        return FileLock(path)

    # internals ---------------------------------------------------------------------------

    def _stamp(self, name: str) -> int | None:
        # a directory's mtime changes with every file renamed into or out of it
        try:
            return os.lstat(self.root / name).st_mtime_ns
        except OSError:
            return None

    def _twin(self, name: str, filename: str) -> DistFile | None:
        """A stored file that is ``filename`` under another spelling: the sdist of its version,
        or a wheel of its version, build and tags."""
        identity = _identity(filename)
        # told by their names: reading every record made each upload read them all (3,000 uploads
        # to one project took 4 minutes)
        for other in self._filenames(name):
            if other != filename:
                with contextlib.suppress(UploadError, ValueError):  # InvalidWheelFilename is one
                    if _identity(other) == identity:
                        record = self._record(name, other)
                        if record is not None:
                            return record
        return None

    def _filenames(self, name: str) -> list[str]:
        """The names of the files of ``name`` that have a record beside them (regular files: no link)."""
        with scan_below(self.nest, self.root / name) as entries:
            files = {e.name for e in entries if e.is_file(follow_symlinks=False)}
            for link in (e.name for e in entries if e.is_symlink()):
                logger.warning("ignoring %s: a symbolic link in the private store", self.root / name / link)
        return [
            filename
            for entry in files
            if (filename := entry.removesuffix(".json")) != entry
            and filename in files
            and is_dist_filename(filename)
        ]

    def _records(self, name: str) -> list[DistFile]:
        """The records of the files of ``name``, each beside its file (regular files: no link)."""
        records = (self._record(name, filename) for filename in self._filenames(name))
        return [record for record in records if record is not None]

    def _record(self, name: str, filename: str) -> DistFile | None:
        path = self.root / name / f"{filename}.json"
        try:
            with open_read(self.nest, path) as handle:
                record = DistFile.from_json(json.loads(handle.read()))
        except FileNotFoundError:
            return None
        except (OSError, UnsafePath, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring damaged private record %s: %s", path, exc)
            return None
        if record.filename != filename:  # a record answers for its own file only
            logger.warning("ignoring private record %s: it is %r's", path, record.filename)
            return None
        return record

    def _write_record(self, name: str, record: DistFile) -> None:
        data = json.dumps(record.to_json(), separators=(",", ":")).encode()
        write_atomic(self.root / name / f"{record.filename}.json", data, root=self.nest)
        self._changed(name)

    def _changed(self, name: str) -> None:
        _touch(self.root / name)
        with self._lock:
            self._pages.pop(name, None)
        self.generation.advance()


def _checked(path: Path, filename: str, name: str, version: Version, sha256: str) -> tuple[DistFile, bytes]:
    """The record of the file at ``path`` and its metadata, once its metadata says it is the
    release its filename says; :class:`UploadError` otherwise."""
    metadata = metadata_of(path, filename)  # ArchiveError past a bound or of another kind
    if metadata is None:
        where = (
            "a wheel holds one *.dist-info/METADATA, and it has none or more than one"
            if filename.endswith(".whl")
            else "no PKG-INFO in a top-level folder, where an sdist has it (<name>-<version>/PKG-INFO)"
        )
        raise UploadError(f"{filename!r} has no metadata: {where}")
    fields = metadata_fields(metadata)
    meta_name, meta_version = ((fields.get(key) or [""])[0] for key in ("name", "version"))
    if not (meta_name and meta_version):
        raise UploadError(f"{filename!r} holds metadata without a Name and a Version")
    if canonicalize_name(meta_name) != name:
        raise UploadError(f"{filename!r} holds metadata of project {cut(meta_name)!r}")
    # compared as versions: 1.0 in the filename is the 1.0.0 of its metadata
    if parse_version(meta_version) != version:
        raise UploadError(
            f"{filename!r} holds metadata of version {cut(meta_version)!r}, "
            f"not {str(version)!r} as its filename says"
        )
    requires_python = next(iter(fields.get("requires-python", [])), None)
    if requires_python is not None and parse_specifier(requires_python) is None:
        raise UploadError(f"{filename!r} has an invalid Requires-Python {cut(requires_python)!r}")
    record = DistFile(
        filename=filename,
        hashes={"sha256": sha256},
        requires_python=requires_python,
        size=path.stat().st_size,
        upload_time=format_time(datetime.now(timezone.utc)),
        origin="private",
        core_metadata={"sha256": hashlib.sha256(metadata).hexdigest()} if filename.endswith(".whl") else None,
    )
    return record, metadata


def _untouched(path: Path, before: float) -> bool:
    try:
        return os.lstat(path).st_mtime < before
    except OSError:
        return False


def _remove_old(root: Path, folder: Path, before: float, suffix: str) -> int:
    """Remove the regular files of ``folder`` whose names start with a dot and end with
    ``suffix``, untouched since ``before``."""
    removed = 0
    with scan_below(root, folder) as entries:
        old = [
            e.name for e in entries
            if e.name.startswith(".") and e.name.endswith(suffix) and e.is_file(follow_symlinks=False)
            and e.stat(follow_symlinks=False).st_mtime < before
        ]  # fmt: skip
    for name in old:
        with contextlib.suppress(OSError, UnsafePath):
            removed += unlink_below(root, folder / name)
    return removed


def _identity(filename: str) -> tuple[object, ...]:
    """What makes two filenames the same distribution: one sdist per release, one wheel per tags."""
    if filename.endswith(".whl"):
        _, version, build, tags = parse_wheel_filename(filename)
        return ("wheel", version, build, tags)
    return ("sdist", parse_dist_filename(filename)[1])


def _sort_key(dist: DistFile) -> tuple[int, object, str]:
    version = parse_version(dist.version or "")
    return (0, version, dist.filename) if version is not None else (1, "", dist.filename)


def _touch(folder: Path) -> None:
    # a rename over an existing record does not always change the directory's mtime: make sure
    with contextlib.suppress(OSError):
        os.utime(folder, follow_symlinks=False)
