"""The on-disk cache: where pages, files and their records live, written so a crash loses nothing.

Layout under the nestegg dir (one dir shared by every process of the user), with one ``<upstream>``
folder per upstream index (see :func:`upstream_key`), so that two indexes never mix::

    mirror/<upstream>/pages/<name>.json            page state (validators, time, digest, files: ``pagestate``)
    mirror/<upstream>/confirmed/<name>             when the upstream last gave that page again
    mirror/<upstream>/missing/<name>               when the upstream said it has no such project
    mirror/<upstream>/files/<name>/<filename>      cached distribution files, complete and verified
    mirror/<upstream>/files/<name>/<filename>.json the record of a cached file (hashes, size, ...)
    mirror/<upstream>/files/<name>/<filename>.metadata   PEP 658 core metadata of a cached file
    mirror/<upstream>/files/<name>/<filename>.metadata.checked   which page the metadata matched
    mirror/<upstream>/files/<name>/<filename>.metadata.ranged    its metadata was read by ranges
    mirror/<upstream>/files/<name>/.<filename>.<pid>.<n>.part   a download in progress
    mirror/<upstream>/rendered/<name>.<kind>       a page as served (``pagefiles``), and for kinds
    mirror/<upstream>/rendered/<name>.clients/<kind>    of installer (``compatible_only``)
    mirror/<upstream>/.generation                  new bytes after every page change (``generation``)
    locks/<upstream>/<name>/<filename>.lock        inter-process locks (flock)

Every write goes to a temporary file in the same directory and is renamed into place, and no
symbolic link below the nestegg dir is followed (:mod:`nestegg_core.storage.fs`); no file a store
keeps is named otherwise than a distribution (:func:`check_filename`), so no upstream name reaches
a record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from packaging.utils import NormalizedName

from nestegg_core.errors import NesteggError, NotFound, UnsafePath, no_files_left, out_of_files
from nestegg_core.simple.models import DistFile, is_dist_filename, is_normalized

from .blanks import Blanks
from .fs import (
    make_folder,
    open_below,
    open_read,
    refused,
    rename_below,
    scan_below,
    unlink_below,
    write_atomic,
)
from .generation import Generation
from .locks import FileLock, LockTimeout
from .pagestate import PageState, StateHeader, read_entry, read_header, read_state

logger = logging.getLogger(__name__)

_counter = itertools.count()


def check_filename(filename: str) -> str:
    """``filename`` if it is a distribution's filename (see :func:`is_dist_filename`), else
    :class:`NotFound`: no name of a store's own files (records, metadata, markers) gets through."""
    if not is_dist_filename(filename):
        raise NotFound(f"no file {filename!r}")
    return filename


#: a folder or marker changed more recently than this may change again unseen in the same mtime tick
SETTLE_NS = 1_000_000_000

#: the file in a project's files folder whose mtime says when a cached file last changed its page
CHANGED = ".changed"
#: the same, for a change only the pages that list the metadata of cached wheels show (not pip's)
CHANGED_METADATA = ".changed-metadata"

#: the identity of a state file on disk (see ``CacheStore.page_stamp``)
PageStamp = tuple[int, int, int]


def _stamp(status: os.stat_result) -> PageStamp:
    return (status.st_ino, status.st_mtime_ns, status.st_size)


#: the longest note of a metadata file's check read (``check_note``)
_MAX_CHECK_LINE = 512


def check_note(state: os.stat_result | PageStamp, metadata: os.stat_result) -> bytes:
    """The note of a check of a metadata file (``CacheStore.note_metadata_checked``): the
    identities of the state file of the page it matched, and of the metadata file itself.

    The state alone tells: a cached file changes what its page says of its metadata only when the
    upstream offers none, and then that metadata is written with it (``downloads``).
    """
    stamp = _stamp(state) if isinstance(state, os.stat_result) else state
    numbers = (*stamp, metadata.st_ino, metadata.st_mtime_ns, metadata.st_size)
    return (" ".join(f"{number:x}" for number in numbers) + "\n").encode()


def upstream_key(url: str) -> str:
    """A folder name for an upstream index: readable, and unique by a hash of the URL.

    Credentials are left out, so a changed password keeps the cache.
    """
    parts = urlsplit(url)
    netloc = parts.hostname or "local"
    if parts.port:
        netloc += f"_{parts.port}"
    path = parts.path.rstrip("/")
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", f"{netloc}{path}").strip("-.")[:60]
    digest = hashlib.sha256(f"{parts.scheme}://{netloc}{path}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def _part_of(entry: str) -> str | None:
    """The filename a part file (``.<filename>.<pid>.<n>.part``) belongs to, or None."""
    if not (entry.startswith(".") and entry.endswith(".part")):
        return None
    filename, _, rest = entry[1 : -len(".part")].rpartition(".")
    filename, _, pid = filename.rpartition(".")
    return filename if filename and pid.isdigit() and rest.isdigit() else None


class CacheStore:
    """Paths and atomic reads and writes of the mirror cache of one upstream."""

    def __init__(self, root: Path, upstream: str = "", *, key: str | None = None) -> None:
        self.root = root
        #: the folder of this upstream; upkeep, which works on every upstream's cache, passes it
        self.key = upstream_key(upstream) if key is None else key
        self.pages = root / "mirror" / self.key / "pages"
        self.files = root / "mirror" / self.key / "files"
        #: names the upstream answered 404 for, each with when it said so
        self.missing = root / "mirror" / self.key / "missing"
        #: names whose state the upstream confirmed since it was written, each with when it last did
        self.confirmed = root / "mirror" / self.key / "confirmed"
        self.locks = root / "locks" / self.key
        #: the mirror's pages as rendered for clients (``pagefiles``)
        self.rendered = root / "mirror" / self.key / "rendered"
        #: stamped after every write that changes a page: a state file, a file's ``CHANGED`` marker
        self.generation = Generation(root / "mirror" / self.key / ".generation", make_folder=self.make_folder)

    def make_folder(self, folder: Path) -> None:
        """Make a folder of this store if it is missing, following no link (:class:`UnsafePath`)."""
        make_folder(self.root, folder)

    # pages -------------------------------------------------------------------------------

    def page_path(self, name: NormalizedName) -> Path:
        return self.pages / f"{name}.json"

    def read_page(self, name: NormalizedName) -> PageState | None:
        """The state of ``name``, checked when the upstream last confirmed it (:meth:`confirm`)."""
        path = self.page_path(name)
        try:
            with open_read(self.root, path) as handle:
                state = read_state(handle)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if out_of_files(exc):  # no descriptor to read it with: the state is whole, try later
                raise no_files_left("read its cache") from None
            logger.warning("ignoring damaged cache state %s: %s", path, exc)
            return None
        except (UnsafePath, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            # a damaged state file (or a link) is a cache miss, never an outage; the next fetch rewrites it
            logger.warning("ignoring damaged cache state %s: %s", path, exc)
            return None
        confirmed = self.confirmed_at(name)
        if confirmed is not None and confirmed > state.checked:
            return dataclasses.replace(state, checked=confirmed)
        return state

    def read_page_header(self, name: NormalizedName) -> StateHeader | None:
        """The first line of the state of ``name`` (validators, check time, digest), checked when
        the upstream last confirmed it; None when there is none, or it is damaged or of an older
        form (``read_page`` reads those whole)."""
        try:
            with open_read(self.root, self.page_path(name)) as handle:
                header = read_header(handle)
        except (OSError, UnsafePath, ValueError, KeyError, TypeError, OverflowError, RecursionError):
            return None  # read_page says what is wrong with it
        return None if header is None else self._confirmed(name, header)

    def read_page_entry(
        self, name: NormalizedName, filename: str
    ) -> tuple[StateHeader, DistFile | None] | None:
        """The header of the state of ``name`` (checked when the upstream last confirmed it) and
        its entry of ``filename``, read without the rest of its files (:func:`read_entry`); None
        when there is no state, or it is damaged or of an older form (``read_page`` reads those)."""
        try:
            with open_read(self.root, self.page_path(name)) as handle:
                found = read_entry(handle, filename)
        except (OSError, UnsafePath, ValueError, KeyError, TypeError, OverflowError, RecursionError):
            return None  # read_page says what is wrong with it
        return None if found is None else (self._confirmed(name, found[0]), found[1])

    def _confirmed(self, name: NormalizedName, header: StateHeader) -> StateHeader:
        """``header``, checked when the upstream last gave its page again, if that is later."""
        confirmed = self.confirmed_at(name)
        if confirmed is not None and confirmed > header.checked:
            return dataclasses.replace(header, checked=confirmed)
        return header

    def confirm(self, name: NormalizedName, checked: float) -> None:
        """Keep that the upstream gave the page of the state on disk again at ``checked``, without
        writing the state anew: the renderings made from it stay what the disk serves."""
        write_atomic(self.confirmed / name, f"{checked!r}\n".encode("ascii"), root=self.root)

    def confirmed_at(self, name: NormalizedName) -> float | None:
        """When the upstream last gave the page of ``name``'s state again (:meth:`confirm`); None if
        it never did. Older than the state's own ``checked`` once a newer state is written."""
        try:
            with open_read(self.root, self.confirmed / name) as handle:
                checked = float(handle.read(64).decode("ascii"))
        except FileNotFoundError:
            return None
        except (OSError, UnsafePath, ValueError) as exc:  # a damaged note: asked again, never an outage
            logger.debug("ignoring the note of a confirmed page %r: %s", name, exc)
            return None
        return checked if math.isfinite(checked) else None

    def write_page(self, state: PageState) -> PageStamp:
        """Write the state; returns the stamp of the file written (see :meth:`page_stamp`)."""
        written = write_atomic(self.page_path(state.page.name), state.to_bytes(), root=self.root)
        self.generation.advance()
        return _stamp(written)

    def page_stamp(self, name: NormalizedName) -> PageStamp | None:
        """Which state file is on disk: inode, mtime (ns) and size; None when there is none.

        Every write is a new file (a rename), so two writes within one mtime tick still differ.
        """
        try:
            return _stamp(os.lstat(self.page_path(name)))
        except OSError:
            return None

    def note_missing(self, name: NormalizedName, checked: float) -> None:
        """Keep that the upstream said ``name`` is not there, at ``checked``."""
        write_atomic(self.missing / name, f"{checked!r}\n".encode("ascii"), root=self.root)

    def missing_since(self, name: NormalizedName) -> float | None:
        """When the upstream last said ``name`` is not there; None if it never did (or said more since)."""
        try:
            with open_read(self.root, self.missing / name) as handle:
                text = handle.read(64)
            return float(text.decode("ascii"))
        except FileNotFoundError:
            return None
        except (OSError, UnsafePath, ValueError) as exc:  # a damaged note: asked again, never an outage
            logger.debug("ignoring the note of a missing project %r: %s", name, exc)
            return None

    def trim_missing(self, *, keep: int, expired_before: float) -> int:
        """Drop the notes of missing projects taken before ``expired_before`` (past their TTL: they
        say nothing any more), then the oldest past ``keep``: a client asking made-up names would
        otherwise leave a file each for ever. How many were dropped."""
        notes: list[tuple[float, str]] = []
        try:
            with os.scandir(self.missing) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        notes.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
        except FileNotFoundError:
            return 0
        notes.sort()
        expired = sum(1 for when, _ in notes if when < expired_before)
        dropped = 0
        for _, name in notes[: max(expired, len(notes) - keep)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.missing / name)
                dropped += 1
        return dropped

    def forget_missing(self, name: NormalizedName) -> None:
        """The upstream has a page of ``name`` now."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.missing / name)

    # files -------------------------------------------------------------------------------

    def file_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / check_filename(filename)

    def metadata_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f"{check_filename(filename)}.metadata"

    def metadata_ranged_path(self, name: NormalizedName, filename: str) -> Path:
        """The note that the metadata of ``filename`` was read from the upstream by ranges (the
        wheel not cached): replaced by the wheel's own, if it differs, once the wheel is."""
        return self.files / name / f"{check_filename(filename)}.metadata.ranged"

    def metadata_check_path(self, name: NormalizedName, filename: str) -> Path:
        """The note of which metadata file matched the page made from which state."""
        return self.files / name / f"{check_filename(filename)}.metadata.checked"

    def note_metadata_checked(
        self, name: NormalizedName, filename: str, state: PageStamp, metadata: os.stat_result
    ) -> None:
        """Note that the metadata file of ``filename``, of status ``metadata``, matches what the
        page made from the state file of stamp ``state`` says of it (see :func:`check_note`)."""
        write_atomic(self.metadata_check_path(name, filename), check_note(state, metadata), root=self.root)

    def metadata_note(self, name: NormalizedName, filename: str) -> bytes | None:
        """The note of the last check of the metadata file of ``filename``, or None."""
        try:
            with open_read(self.root, self.metadata_check_path(name, filename)) as handle:
                return handle.read(_MAX_CHECK_LINE)
        except (OSError, UnsafePath):
            return None

    def page_changed(self, name: NormalizedName, *, metadata_only: bool = False) -> None:
        """Note that a cached file of ``name`` changed its page (a record that tells more than the
        index, a file removed): the renderings of the page made before are stale (``pagefiles``).
        With ``metadata_only``, the change is only the PEP 658 metadata of a cached wheel, which
        only the renderings that list it (not pip's) show: the others stay."""
        # a new file, not a touch: a link planted in its place is replaced, not followed
        write_atomic(
            self.files / name / (CHANGED_METADATA if metadata_only else CHANGED), b"", root=self.root
        )
        self.generation.advance()

    def record_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f"{check_filename(filename)}.json"

    def part_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f".{check_filename(filename)}.{os.getpid()}.{next(_counter)}.part"

    def lock(
        self, name: NormalizedName, filename: str, *, timeout: float = -1, blanks: Blanks | None = None
    ) -> FileLock:
        """The lock of a file's download; a missing lock file is named from ``blanks`` if given (made
        below :attr:`locks`, see :meth:`blanks`)."""
        path = self.locks / name / f"{check_filename(filename)}.lock"
        self.make_folder(path.parent)
        return FileLock(path, timeout=timeout, blanks=blanks)

    def blanks(self) -> Blanks:
        """Files made ahead for the lock files of :meth:`lock` (their owner closes them)."""
        return Blanks(self.root, self.locks)

    def make_lock_folder(self, name: NormalizedName) -> None:
        """Make the folder of the locks of the files of ``name``, if missing. Made once its page
        is fetched (``MirrorIndex``): a new folder is an inode to allocate, 0.1-0.8 ms on a busy
        disk, on the way of the client's first file otherwise. (The files' own folder is not: its
        mtime stamps the files kept, and the first part file's maker makes it, ``Downloads``.)"""
        self.make_folder(self.locks / name)

    def create_part(self, name: NormalizedName, filename: str) -> tuple[Path, BinaryIO]:
        """A new partial download of one file, open for writing: made in its folder (reached
        without following a link, :class:`UnsafePath`), never over an existing file or link."""
        for _ in range(10):
            path = self.part_path(name, filename)
            try:
                fd = open_below(self.root, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, create=True)
            except FileExistsError:
                continue  # a name taken (planted?): the next one
            return path, os.fdopen(fd, "wb")
        raise refused(path, "new file")

    def place(self, part: Path, final: Path) -> None:
        """Rename a finished partial download into place, in its folder reached without following
        a link; a part file replaced by anything but a regular file meanwhile is refused."""
        rename_below(self.root, part, final)

    def open_read(self, path: Path) -> BinaryIO:
        """A file of this store (cached, metadata, partial) open for reading: see :func:`open_read`."""
        return open_read(self.root, path)

    def remove_parts(self, name: NormalizedName, filename: str, *, spare: str | None = None) -> None:
        """Remove leftover partial downloads of one file, but the one named ``spare`` (the
        caller's); call only while holding its lock."""
        folder = self.files / name
        prefix = f".{filename}."
        with scan_below(self.root, folder) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(".part") and entry.name != spare:
                    logger.info("removing partial download %s", folder / entry.name)
                    with contextlib.suppress(OSError, UnsafePath):
                        unlink_below(self.root, folder / entry.name)

    def prepare(self) -> None:
        """Check that the nest can be written and remove partial downloads a crash left behind.

        Called when a server starts: it fails at once on an unusable nest rather than on every
        request, and what a killed process was downloading is not left on disk until that file
        is asked for again. Every upstream's cache is swept, not only this one's.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            reason = exc.strerror or exc
            raise NesteggError(f"cannot use {str(self.root)!r} as the nestegg dir: {reason}") from None
        removed = 0
        with scan_below(self.root, self.root / "mirror") as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    removed += CacheStore(self.root, key=entry.name).sweep_parts()
        if removed:
            logger.info("removed %d partial downloads left by a crash", removed)

    def sweep_parts(self) -> int:
        """Remove the partial downloads no process is writing; returns how many.

        A download holds its file's lock from its first byte until the rename, so a part file
        whose lock is free is abandoned, however young, or not begun: one made before its lock
        is taken (empty), which its download makes again once it finds it gone.
        """
        removed = 0
        with scan_below(self.root, self.files) as folders:
            names = [f.name for f in folders if f.is_dir(follow_symlinks=False) and is_normalized(f.name)]
        for name in names:
            with scan_below(self.root, self.files / name) as entries:
                parts = [(e.name, _part_of(e.name)) for e in entries if e.is_file(follow_symlinks=False)]
            for entry, filename in parts:
                if filename is None:
                    continue
                try:
                    with self.lock(NormalizedName(name), filename, timeout=0):
                        removed += unlink_below(self.root, self.files / name / entry)
                except (LockTimeout, NotFound, OSError, UnsafePath):
                    continue  # being downloaded, already gone, or not ours to judge
        return removed

    def read_record(self, name: NormalizedName, filename: str) -> DistFile | None:
        try:
            with open_read(self.root, self.record_path(name, filename)) as handle:
                record = DistFile.from_json(json.loads(handle.read()))
        except FileNotFoundError:
            return None
        except (OSError, UnsafePath, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring damaged record of %s/%s: %s", name, filename, exc)
            return None
        if record.filename != filename:  # a record answers for its own file only
            logger.warning("ignoring the record of %s/%s: it is %r's", name, filename, record.filename)
            return None
        return record

    def write_record(self, name: NormalizedName, dist: DistFile) -> None:
        data = json.dumps(dist.to_json(), separators=(",", ":")).encode()
        write_atomic(self.record_path(name, dist.filename), data, root=self.root)

    def kept_files(self, name: NormalizedName) -> list[DistFile]:
        """Records of every complete cached file of a project (those stay listed forever)."""
        with scan_below(self.root, self.files / name) as entries:
            # regular files only: a link in the cache is never followed, nor listed
            files = {e.name for e in entries if e.is_file(follow_symlinks=False)}
        kept = []
        for entry in sorted(files):
            filename = entry.removesuffix(".json")
            if filename != entry and filename in files and is_dist_filename(filename):
                record = self.read_record(name, filename)
                if record is not None:
                    kept.append(record)
        return kept

    def checked_times(self, most: int) -> dict[NormalizedName, float] | None:
        """When each page of the cache was last had from the upstream, as the times its state was
        written and confirmed (their files' mtimes, not their content: a folder's scan, not a
        read a page); None past ``most`` pages. A guess of which pages were asked together
        (``ahead.checked_together``)."""
        times: dict[NormalizedName, float] = {}
        for folder, suffix in ((self.pages, ".json"), (self.confirmed, "")):
            with scan_below(self.root, folder) as entries:
                if len(entries) > most:
                    return None
                for entry in entries:
                    name = entry.name[: -len(suffix)] if suffix else entry.name
                    if not entry.name.endswith(suffix) or not is_normalized(name):
                        continue
                    try:
                        when = entry.stat(follow_symlinks=False).st_mtime
                    except OSError:  # removed meanwhile
                        continue
                    key = NormalizedName(name)
                    times[key] = max(when, times.get(key, when))
        return times

    def project_names(self) -> Iterator[str]:
        """Every project the cache holds a page or a file of."""
        seen: set[str] = set()
        for folder, suffix in ((self.pages, ".json"), (self.files, "")):
            with scan_below(self.root, folder) as entries:
                found = [entry.name for entry in entries]
            for entry in found:
                name = entry[: -len(suffix)] if suffix else entry
                if entry.endswith(suffix) and is_normalized(name) and name not in seen:
                    seen.add(name)
                    yield name
