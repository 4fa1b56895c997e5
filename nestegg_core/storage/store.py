"""The on-disk cache: where pages, files and their records live, written so a crash loses nothing.

Layout under the nestegg dir (one dir shared by every process of the user), with one ``<upstream>``
folder per upstream index (see :func:`upstream_key`), so that two indexes never mix::

    mirror/<upstream>/pages/<name>.json            page state (validators, time, files: ``pagestate``)
    mirror/<upstream>/files/<name>/<filename>      cached distribution files, complete and verified
    mirror/<upstream>/files/<name>/<filename>.json the record of a cached file (hashes, size, ...)
    mirror/<upstream>/files/<name>/<filename>.metadata   PEP 658 core metadata of a cached file
    mirror/<upstream>/files/<name>/.<filename>.<pid>.<n>.part   a download in progress
    mirror/<upstream>/.generation                  new bytes after every page change (``generation``)
    locks/<upstream>/<name>/<filename>.lock        inter-process locks (filelock)

Every write goes to a temporary file in the same directory and is renamed into place. No symbolic
link below the nestegg dir is followed (see "paths below the nest"), nor is any file a store keeps
named otherwise than a distribution (:func:`check_filename`), so no upstream name reaches a record.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from filelock import FileLock
from filelock import Timeout as LockTimeout
from packaging.utils import NormalizedName

from nestegg_core.errors import NesteggError, NotFound, UnsafePath
from nestegg_core.simple.models import DistFile, is_dist_filename, is_normalized

from .generation import Generation
from .pagestate import PageState, read_state

logger = logging.getLogger(__name__)

_counter = itertools.count()


def check_filename(filename: str) -> str:
    """``filename`` if it is a distribution's filename (see :func:`is_dist_filename`), else
    :class:`NotFound`: no name of a store's own files (records, metadata, markers) gets through."""
    if not is_dist_filename(filename):
        raise NotFound(f"no file {filename!r}")
    return filename


# paths below the nest ---------------------------------------------------------------------
#
# The nest's own folder may be a symbolic link (a cache on another disk): the user chose it. Below
# it nothing is followed: another user of a shared cache could plant a link to make nestegg read,
# write or remove files elsewhere. Folders are opened one at a time from the nest, each with
# O_NOFOLLOW, and files in them with O_NOFOLLOW too, so a link swapped in meanwhile is caught.

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
#: a folder, file or FIFO planted where a file or folder was expected (and a link, on some systems)
_NOT_OURS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO, getattr(errno, "EMLINK", -1)})
#: whether files can be opened relative to a folder's descriptor (POSIX); elsewhere by path
_BY_FD = {os.open, os.mkdir, os.stat, os.unlink} <= os.supports_dir_fd and os.scandir in os.supports_fd


def _refused(path: Path, what: str) -> UnsafePath:
    return UnsafePath(
        f"refusing {str(path)!r}: a symbolic link or not a {what} (no link in the nest is followed)"
    )


def open_folder(root: Path, folder: Path, *, create: bool = False) -> int:
    """A descriptor of ``folder`` (``root`` or a folder below it) opened a folder at a time from
    ``root`` without following a link; missing ones are made when ``create``. Raises
    :class:`UnsafePath` for a link or a file on the way, FileNotFoundError for a missing folder."""
    parts = folder.relative_to(root).parts
    try:
        fd = os.open(root, _FOLDER)  # followed: the nest itself may be a link
    except FileNotFoundError:
        if not create:
            raise
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, _FOLDER)
    try:
        for depth, part in enumerate(parts):
            try:
                try:
                    inner = os.open(part, _FOLDER | _NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):  # made by another meanwhile
                        os.mkdir(part, dir_fd=fd)
                    inner = os.open(part, _FOLDER | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _NOT_OURS:
                    raise _refused(root.joinpath(*parts[: depth + 1]), "folder") from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder_of(root: Path, path: Path, *, create: bool = False) -> Iterator[int]:
    """:func:`open_folder` of the folder that holds ``path``, closed when the block ends."""
    fd = open_folder(root, path.parent, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_below(
    root: Path, path: Path, flags: int = os.O_RDONLY, mode: int = 0o666, *, create: bool = False
) -> int:
    """A descriptor of the file ``path`` below ``root``, opened with ``flags`` without following a
    link on the way nor at ``path`` itself (:class:`UnsafePath`); missing folders made if ``create``."""
    if not _BY_FD:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    with folder_of(root, path, create=create) as folder:
        try:
            return os.open(path.name, flags | _NOFOLLOW | _CLOEXEC, mode, dir_fd=folder)
        except OSError as exc:
            if exc.errno in _NOT_OURS:
                raise _refused(path, "file") from None
            raise


def open_read(root: Path, path: Path) -> BinaryIO:
    """The regular file ``path`` below ``root`` open for reading, no link followed
    (:class:`UnsafePath`; FileNotFoundError when it is missing)."""
    # not blocking: a FIFO planted in its place would hold the thread until someone writes to it
    fd = open_below(root, path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refused(path, "regular file")
        return os.fdopen(fd, "rb")  # O_NONBLOCK does nothing to a regular file
    except BaseException:
        os.close(fd)
        raise


def make_folder(root: Path, folder: Path) -> None:
    """Make ``folder`` below ``root`` if it is missing, without following a link on the way."""
    if _BY_FD:
        os.close(open_folder(root, folder, create=True))
    else:
        folder.mkdir(parents=True, exist_ok=True)


def is_regular(path: Path) -> bool:
    """Whether ``path`` is a regular file itself, not a link to one (its folders are not checked)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _create_temp(folder: int, prefix: str, suffix: str, mode: int = 0o600) -> tuple[int, str]:
    """A new file in the folder of descriptor ``folder``, by a name of ``prefix``, random letters
    and ``suffix``, as ``tempfile.mkstemp`` makes one (O_EXCL: never an existing file or link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(name, flags, mode, dir_fd=folder), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name {prefix}...{suffix}")


def temp_file(root: Path, folder: Path, *, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new temporary file in ``folder`` below ``root`` (made if missing, no link followed): its
    descriptor and its path."""
    if not _BY_FD:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
        return fd, Path(tmp)
    fd = open_folder(root, folder, create=True)
    try:
        made, name = _create_temp(fd, prefix, suffix)
    finally:
        os.close(fd)
    return made, folder / name


def unlink_below(root: Path, path: Path) -> bool:
    """Remove the regular file ``path`` below ``root``, reached without following a link; False
    when it is missing. A link or anything else in its place is left alone (:class:`UnsafePath`)."""
    if not _BY_FD:
        if not is_regular(path):
            return False
        os.unlink(path)
        return True
    try:
        with folder_of(root, path) as folder:
            try:
                status = os.stat(path.name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISREG(status.st_mode):
                raise _refused(path, "regular file")
            os.unlink(path.name, dir_fd=folder)
            return True
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def scan_below(root: Path, folder: Path) -> Iterator[list[os.DirEntry[str]]]:
    """The entries of ``folder`` below ``root``, reached without following a link; none when it
    is missing, or a link (with a warning). Use them in the block: their ``stat`` and ``is_*``
    (with ``follow_symlinks=False``) look in the folder through its descriptor, closed when the
    block ends."""
    if not _BY_FD:
        try:
            with os.scandir(folder) as found:
                yield list(found)
        except FileNotFoundError:
            yield []
        return
    try:
        fd = open_folder(root, folder)
    except FileNotFoundError:
        yield []
        return
    except UnsafePath as exc:
        logger.warning("%s", exc)
        yield []
        return
    try:
        with os.scandir(fd) as found:
            yield list(found)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _filled(fd: int, *, durable: bool) -> Iterator[BinaryIO]:
    """The new file ``fd`` to write, flushed (and synced, if ``durable``) once written."""
    with os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        if durable:
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_file(path: Path, *, durable: bool = False, root: Path | None = None) -> Iterator[BinaryIO]:
    """A new file that replaces ``path`` when the block ends without an error, through a
    temporary file and a rename; on any error the temporary file goes and ``path`` stays as it was.

    With ``root``, the nest: no link below it is followed to ``path``'s folder (made if missing),
    and a link at ``path`` is replaced, never written through.
    """
    if root is None or not _BY_FD:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with _filled(fd, durable=durable) as handle:
                yield handle
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    with folder_of(root, path, create=True) as folder:
        fd, name = _create_temp(folder, f".{path.name}.", ".tmp")
        try:
            with _filled(fd, durable=durable) as handle:
                yield handle
            os.replace(name, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=folder)
            raise


def write_atomic(
    path: Path, data: bytes | Iterable[bytes], *, durable: bool = False, root: Path | None = None
) -> os.stat_result:
    """Write ``data`` (bytes, or pieces of them) to ``path`` through a temporary file and a rename
    (below ``root`` without following a link, if given: see :func:`atomic_file`).

    Returns the written file's status (inode, size, mtime), which the rename keeps.
    """
    with atomic_file(path, durable=durable, root=root) as handle:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            handle.writelines(data)
        handle.flush()
        # the rename on the way out keeps it
        return os.fstat(handle.fileno())


def copy_atomic(source: Path, target: Path, *, move: bool = False, root: Path | None = None) -> None:
    """Copy (or move) ``source`` to ``target`` through a temporary file and a rename (below
    ``root`` without following a link, if given: see :func:`atomic_file`)."""
    if root is not None and _BY_FD:
        with folder_of(root, target, create=True) as folder:
            if move:
                # one rename when both are on one file system; else copied, as shutil.move does
                with contextlib.suppress(OSError):
                    if not is_regular(source):
                        raise _refused(source, "regular file")
                    os.replace(source, target.name, dst_dir_fd=folder)
                    return
        with open(source, "rb") as reading, atomic_file(target, root=root) as handle:
            shutil.copyfileobj(reading, handle)
        if move:
            os.unlink(source)
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if move:
            shutil.move(str(source), tmp)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: a folder or marker changed more recently than this may change again unseen in the same mtime tick
SETTLE_NS = 1_000_000_000

#: the file in a project's files folder whose mtime says when a cached file last changed its page
CHANGED = ".changed"

#: the identity of a state file on disk (see ``CacheStore.page_stamp``)
PageStamp = tuple[int, int, int]


def _stamp(status: os.stat_result) -> PageStamp:
    return (status.st_ino, status.st_mtime_ns, status.st_size)


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
        self.locks = root / "locks" / self.key
        #: stamped after every write that changes a page: a state file, a file's ``CHANGED`` marker
        self.generation = Generation(root / "mirror" / self.key / ".generation", make_folder=self.make_folder)

    def make_folder(self, folder: Path) -> None:
        """Make a folder of this store if it is missing, following no link (:class:`UnsafePath`)."""
        make_folder(self.root, folder)

    # pages -------------------------------------------------------------------------------

    def page_path(self, name: NormalizedName) -> Path:
        return self.pages / f"{name}.json"

    def read_page(self, name: NormalizedName) -> PageState | None:
        path = self.page_path(name)
        try:
            with open_read(self.root, path) as handle:
                return read_state(handle)
        except FileNotFoundError:
            return None
        except (OSError, UnsafePath, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            # a damaged state file (or a link) is a cache miss, never an outage; the next fetch rewrites it
            logger.warning("ignoring damaged cache state %s: %s", path, exc)
            return None

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

    # files -------------------------------------------------------------------------------

    def file_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / check_filename(filename)

    def metadata_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f"{check_filename(filename)}.metadata"

    def page_changed(self, name: NormalizedName) -> None:
        """Note that a cached file of ``name`` changed its page (a record that tells more than the
        index, a file removed): the renderings of the page made before are stale (``pagefiles``)."""
        # a new file, not a touch: a link planted in its place is replaced, not followed
        write_atomic(self.files / name / CHANGED, b"", root=self.root)
        self.generation.advance()

    def record_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f"{check_filename(filename)}.json"

    def part_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f".{check_filename(filename)}.{os.getpid()}.{next(_counter)}.part"

    def lock(self, name: NormalizedName, filename: str, *, timeout: float = -1) -> FileLock:
        path = self.locks / name / f"{check_filename(filename)}.lock"
        self.make_folder(path.parent)
        return FileLock(path, timeout=timeout)

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
        raise _refused(path, "new file")

    def place(self, part: Path, final: Path) -> None:
        """Rename a finished partial download into place, in its folder reached without following
        a link; a part file replaced by anything but a regular file meanwhile is refused."""
        if not _BY_FD:
            os.replace(part, final)
            return
        with folder_of(self.root, final) as folder:
            if not stat.S_ISREG(os.stat(part.name, dir_fd=folder, follow_symlinks=False).st_mode):
                raise _refused(part, "regular file")
            os.replace(part.name, final.name, src_dir_fd=folder, dst_dir_fd=folder)

    def open_read(self, path: Path) -> BinaryIO:
        """A file of this store (cached, metadata, partial) open for reading: see :func:`open_read`."""
        return open_read(self.root, path)

    def remove_parts(self, name: NormalizedName, filename: str) -> None:
        """Remove leftover partial downloads of one file; call only while holding its lock."""
        folder = self.files / name
        prefix = f".{filename}."
        with scan_below(self.root, folder) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(".part"):
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
        whose lock is free is abandoned, however young.
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
