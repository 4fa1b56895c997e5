"""Files below the nest, written so that a crash loses nothing and read without following a link.

The nest's own folder may be a symbolic link (a cache on another disk): the user chose it. Below
it nothing is followed: another user of a shared cache could plant a link to make nestegg read,
write or remove files elsewhere. Folders are opened one at a time from the nest, each with
O_NOFOLLOW, and files in them with O_NOFOLLOW too, so a link swapped in meanwhile is caught.

Every write goes to a temporary file in the same folder and is renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from nestegg_core.errors import UnsafePath

logger = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
#: a folder, file or FIFO planted where a file or folder was expected (and a link, on some systems)
_NOT_OURS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO, getattr(errno, "EMLINK", -1)})
#: whether files can be opened relative to a folder's descriptor (POSIX); elsewhere by path
_BY_FD = {os.open, os.mkdir, os.stat, os.unlink} <= os.supports_dir_fd and os.scandir in os.supports_fd


def refused(path: Path, what: str) -> UnsafePath:
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
                    raise refused(root.joinpath(*parts[: depth + 1]), "folder") from None
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
                raise refused(path, "file") from None
            raise


def open_read(root: Path, path: Path) -> BinaryIO:
    """The regular file ``path`` below ``root`` open for reading, no link followed
    (:class:`UnsafePath`; FileNotFoundError when it is missing)."""
    # not blocking: a FIFO planted in its place would hold the thread until someone writes to it
    fd = open_below(root, path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise refused(path, "regular file")
        return os.fdopen(fd, "rb")  # O_NONBLOCK does nothing to a regular file
    except BaseException:
        os.close(fd)
        raise


def read_at_most(handle: BinaryIO, count: int) -> bytes:
    """What ``handle.read(count)`` gives of a regular file, taking memory only for the bytes it
    holds: ``read`` takes ``count`` bytes up front (16 MiB for a metadata file of a few kilobytes
    read against its limit, in each thread that reads one)."""
    wanted = min(max(os.fstat(handle.fileno()).st_size - handle.tell(), 0) + 1, count)
    data = handle.read(wanted)
    if len(data) == wanted < count:  # it grew since its size was read
        data += handle.read(count - wanted)
    return data


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
                raise refused(path, "regular file")
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
                        raise refused(source, "regular file")
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


def rename_below(root: Path, source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` in their one folder, reached without following a link; a
    ``source`` that is anything but a regular file (a link swapped in) is refused."""
    if not _BY_FD:
        os.replace(source, target)
        return
    with folder_of(root, target) as folder:
        if not stat.S_ISREG(os.stat(source.name, dir_fd=folder, follow_symlinks=False).st_mode):
            raise refused(source, "regular file")
        os.replace(source.name, target.name, src_dir_fd=folder, dst_dir_fd=folder)


def rename_folder_below(root: Path, source: Path, target: Path) -> None:
    """Rename the folder ``source`` to ``target``, a name not taken, in their one folder, reached
    without following a link; a ``source`` that is no folder (a link swapped in) is refused."""
    if not _BY_FD:
        os.rename(source, target)
        return
    with folder_of(root, target) as folder:
        if not stat.S_ISDIR(os.stat(source.name, dir_fd=folder, follow_symlinks=False).st_mode):
            raise refused(source, "folder")
        os.rename(source.name, target.name, src_dir_fd=folder, dst_dir_fd=folder)


def sync_file(path: Path) -> None:
    """Write what the system holds of the file at ``path`` to the disk (its data, not its name)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(root: Path, folder: Path) -> None:
    """Write the names of ``folder`` below ``root`` to the disk (a rename into it lasts a power cut)."""
    fd = open_folder(root, folder) if _BY_FD else os.open(folder, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_folder_below(root: Path, folder: Path) -> int:
    """Remove ``folder`` below ``root`` and the regular files in it, reached without following a
    link; returns how many files went. One that holds anything else stays (with what it holds)."""
    removed = 0
    with scan_below(root, folder) as entries:
        names = [e.name for e in entries if e.is_file(follow_symlinks=False)]
    for name in names:
        with contextlib.suppress(OSError, UnsafePath):
            removed += unlink_below(root, folder / name)
    with contextlib.suppress(OSError):
        os.rmdir(folder)
    return removed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
