"""A store's generation: eight bytes in a shared memory-mapped file, new after every change.

Every process that serves from a nest must answer from what is on disk now: a page another
process revalidated, a file it cached, a name an upload made private. Checking that with a stat
of each file a page is made from costs three system calls per warm request, and on a busy server
each one gives up the interpreter lock and waits to take it back among the other threads: at 8
clients on 2 cores that was a third of the requests served per second and the worst latencies.

So each store keeps a small file that its writers stamp with new random bytes once a change is
on disk, and that every process maps into memory: reading it is a memory read, with no system
call, and a process that saw the same bytes before a request knows that nothing it checked has
changed since. A reader takes the generation before it looks at the disk, so a change made
while it looks leaves it a generation it has not seen.

What does not stamp it (a release older than this file, a hand edit, a file system that does not
share mappings between machines) is still seen: readers check the disk again at least every
``RECHECK`` seconds whatever the generation says, and map the file again when it was replaced.
When the file cannot be used at all, :meth:`Generation.current` is None and readers check the
disk every time, as before.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nestegg_core.errors import UnsafePath

logger = logging.getLogger(__name__)

#: seconds a reader trusts a generation before it checks the disk (and the file) again anyway
RECHECK = 1.0
_SIZE = 8
#: a link where the file should be is never followed: stamps would land in its target
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class Generation:
    """The generation of one store, kept in the file at ``path`` (made when first used).

    The file is mapped read-only and stamped with ``pwrite``: a write through a mapping that the
    disk cannot back (a full disk, a copy-on-write file system) would kill the process instead of
    failing. It is made whole (written aside and linked into place), never grown or truncated,
    since a mapping of a file cut shorter than it faults on reading; nothing here shortens it.
    """

    def __init__(self, path: Path, *, make_folder: Callable[[Path], None] | None = None) -> None:
        self.path = path
        #: makes the file's folder (the store's, which follows no link on the way); else mkdir
        self.make_folder = make_folder
        self._map: mmap.mmap | None = None
        self._fd: int | None = None  # open for writing, when it could be
        self._identity: tuple[int, int] | None = None
        self._check_at = 0.0
        self._lock = threading.Lock()
        self._warned = False

    def current(self) -> bytes | None:
        """The generation now, or None when there is none to trust (the disk must be checked)."""
        self._check()
        view = self._map  # once: another thread may map the file again meanwhile
        return None if view is None else view[:_SIZE]

    def advance(self) -> None:
        """Mark a change as made: call once it is on disk, so that readers who see the new
        generation see the change."""
        # a writer without the file tries again at once: readers rely on its stamp
        self._check(force=self._fd is None)
        stamp = random.getrandbits(8 * _SIZE).to_bytes(_SIZE, "little")
        try:
            # under the lock: another thread that maps the file again closes the descriptor, whose
            # number the next file opened may take (a stamp would land in that file)
            with self._lock:
                if self._fd is None:
                    raise OSError("the file cannot be opened for writing")
                _write_at_start(self._fd, stamp)
        except OSError as exc:
            if not self._warned:  # once: every write of the store would say it again
                self._warned = True
                logger.warning(
                    "cannot stamp %s (%s): other processes of this nest see this one's changes "
                    "up to %.0f s late",
                    self.path,
                    exc,
                    RECHECK,
                )

    def close(self) -> None:
        """Let the file go (a later use maps it again)."""
        with self._lock:
            self._release()
            self._check_at = 0.0

    def _release(self) -> None:
        # a mapping still read by another thread is closed once that thread is done with it
        if self._fd is not None:
            os.close(self._fd)
        self._map, self._fd, self._identity = None, None, None

    def _check(self, *, force: bool = False) -> None:
        """Map the file if it is not mapped yet, or no longer the file at ``path``: at most once
        every ``RECHECK`` seconds, unless ``force``."""
        if not force and time.monotonic() < self._check_at:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now < self._check_at:
                return  # another thread checked meanwhile
            self._check_at = now + RECHECK
            try:
                status = os.lstat(self.path)
            except FileNotFoundError:
                status = None
            except OSError:
                self._release()
                return
            if status is not None and (status.st_dev, status.st_ino) == self._identity:
                return
            self._release()
            self._open()

    def _open(self) -> None:
        try:
            # made by readers too: a folder that a writer makes later would be mapped a check late
            if self.make_folder is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            else:
                self.make_folder(self.path.parent)
            _create(self.path)
        except (OSError, UnsafePath) as exc:
            logger.debug("no generation file %s: %s", self.path, exc)
            return
        fd: int | None = None
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | _NOFOLLOW)
            except PermissionError:  # another user's nest: this process reads it only
                fd = None
            reader = os.open(self.path, os.O_RDONLY | _NOFOLLOW) if fd is None else fd
            try:
                status = os.fstat(reader)
                if not stat.S_ISREG(status.st_mode) or status.st_size < _SIZE:
                    raise OSError(f"{status.st_size} bytes, not {_SIZE}")
                self._map = mmap.mmap(reader, _SIZE, access=mmap.ACCESS_READ)
            finally:
                if reader != fd:
                    os.close(reader)
            self._fd, self._identity = fd, (status.st_dev, status.st_ino)
        except (OSError, ValueError) as exc:
            logger.warning("cannot map the generation file %s: %s", self.path, exc)
            if fd is not None:
                os.close(fd)
            self._map, self._fd, self._identity = None, None, None


def _create(path: Path) -> None:
    """Make the file at ``path`` whole, unless there is one: written aside, then linked in."""
    if os.path.lexists(path):
        return
    stamp = random.getrandbits(8 * _SIZE).to_bytes(_SIZE, "little")
    aside = path.with_name(f"{path.name}.{os.getpid()}.{random.getrandbits(32):x}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)  # the umask decides
    try:
        os.write(fd, stamp)
    finally:
        os.close(fd)
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # another process made it first
    except OSError:  # no hard links here: made in place, read as unusable until it is whole
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
            try:
                os.write(fd, stamp)
            finally:
                os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(aside)


def _write_at_start(fd: int, data: bytes) -> None:
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, 0)
    else:  # Windows: the file's own position, moved by nothing else (the caller holds the lock)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
