"""Empty files made ahead of need: a new file's inode allocated off the way of a request.

A cold file takes a lock file of its own before the upstream is asked for it (:mod:`.locks`), and
making a file allocates an inode: 0.25-2 ms on an ext4 disk whose inodes are deleted often (each
benchmark round, ``nestegg prune``), where ext4 passes over the inodes deleted lately. Linux can
make a file with no name (``O_TMPFILE``) and give it one later (``linkat``), which takes 0.02-0.04
ms there. :class:`Blanks` keeps a few such files of one folder's file system, made in the
background (:meth:`Blanks.fill`); :meth:`Blanks.place` names one where a new file is wanted.

Nothing is left on disk by them: a blank never named is freed when its descriptor closes, the
process's end included. Elsewhere (no ``O_TMPFILE``, a file system without it, no ``/proc``)
every call gives nothing and the caller makes its file as before.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import weakref
from pathlib import Path

from nestegg_core.errors import NesteggError

from .fs import open_folder

__all__ = ["KEEP", "Blanks"]

logger = logging.getLogger(__name__)

#: blanks kept ready: pip takes one a cold file, and the next is made while it downloads
KEEP = 4
_TMPFILE = getattr(os, "O_TMPFILE", 0)
_FLAGS = os.O_RDWR | _TMPFILE | getattr(os, "O_CLOEXEC", 0)
#: what a blank's name says of a path made otherwise: it exists (a link too), or its folder does not
_MADE_OTHERWISE = frozenset({errno.EEXIST, errno.ENOENT, errno.ENOTDIR})
#: what says that blanks cannot be made or named here (no O_TMPFILE, another file system...)
_UNSUPPORTED = frozenset(
    {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOSYS}
)


def _close_all(held: list[int]) -> None:
    """Close the descriptors in ``held`` (the blanks, then their folder's), emptying it."""
    while held:
        with contextlib.suppress(OSError):
            os.close(held.pop())


class Blanks:
    """A few unnamed empty files (mode 0o644, less the umask) of the file system of ``folder``
    below ``root``, named on demand below ``folder``; thread-safe, per process (a child made by
    ``fork`` starts with none of its parent's)."""

    def __init__(self, root: Path, folder: Path, keep: int = KEEP) -> None:
        self.root = root
        self.folder = folder
        self.keep = keep
        self._lock = threading.Lock()
        self._fds: list[int] = []  # the blanks, the newest last
        self._folder_fd: list[int] = []  # the folder's descriptor, once opened: a list for the finalizer
        self._pid = os.getpid()
        self._filling = False
        #: False once blanks proved impossible here, or :meth:`close` was called
        self.usable = bool(_TMPFILE) and keep > 0 and os.path.isdir("/proc/self/fd")
        # a store dropped without close (a test's) leaves no descriptor open
        weakref.finalize(self, _close_all, self._fds)
        weakref.finalize(self, _close_all, self._folder_fd)

    @property
    def ready(self) -> int:
        """How many blanks are made and not yet named."""
        return len(self._fds)

    def wanted(self) -> bool:
        """Whether :meth:`fill` has blanks to make (and nobody makes them now)."""
        return self.usable and not self._filling and len(self._fds) < self.keep

    def fill(self) -> None:
        """Make blanks until ``keep`` are ready (the folder made if missing): a few inodes, for a
        thread that no request waits on. Gives up quietly where blanks cannot be made."""
        with self._lock:
            if not self.wanted():
                return
            self._forked()
            self._filling = True
        try:
            while True:
                with self._lock:
                    if not self.usable or len(self._fds) >= self.keep:
                        return
                    try:
                        # its own descriptor of the folder: close() may close the kept one meanwhile
                        folder = os.dup(self._open_folder())
                    except (OSError, NesteggError) as exc:  # a link planted on the way, a full disk
                        self._unusable(exc)
                        return
                try:
                    fd = os.open(".", _FLAGS, 0o644, dir_fd=folder)
                except OSError as exc:
                    with self._lock:
                        self._unusable(exc)
                    return
                finally:
                    os.close(folder)
                with self._lock:
                    if self.usable:
                        self._fds.append(fd)
                        continue
                os.close(fd)  # closed meanwhile
                return
        finally:
            self._filling = False

    def place(self, path: Path) -> int | None:
        """Name a blank ``path`` (a file below ``folder`` that does not exist), the folders on the
        way followed as ``open`` follows them: its descriptor, open for reading and writing (the
        caller closes it). None, and nothing named, when no blank is ready, ``path`` exists (a
        link included) or its folder is missing."""
        if not self.usable or not self._fds:
            return None
        try:
            name = path.relative_to(self.folder)
        except ValueError:
            return None
        with self._lock:  # held while it names it: close() closes the folder's descriptor
            self._forked()
            if not self._fds or not self._folder_fd:
                return None
            fd = self._fds.pop(0)  # the oldest: one made meanwhile is the next's
            try:
                # linkat(2) with AT_SYMLINK_FOLLOW through /proc: what names an O_TMPFILE file
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=self._folder_fd[0], follow_symlinks=True)
            except OSError as exc:
                if exc.errno in _MADE_OTHERWISE:
                    self._fds.insert(0, fd)  # kept for the next: this path is made otherwise
                else:
                    os.close(fd)
                    self._unusable(exc)
                return None
            return fd

    def close(self) -> None:
        """Free the blanks not named; none is made or named after."""
        with self._lock:
            self.usable = False
            _close_all(self._fds)
            _close_all(self._folder_fd)

    # under _lock ---------------------------------------------------------------------------

    def _open_folder(self) -> int:
        if not self._folder_fd:
            self._folder_fd.append(open_folder(self.root, self.folder, create=True))
        return self._folder_fd[0]

    def _forked(self) -> None:
        """In a child made by ``fork``, let the parent's blanks go: both would name them."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid, self._filling = pid, False
            _close_all(self._fds)
            _close_all(self._folder_fd)

    def _unusable(self, exc: Exception) -> None:
        if not self.usable:
            return
        unsupported = isinstance(exc, OSError) and exc.errno in _UNSUPPORTED
        level = logging.DEBUG if unsupported else logging.WARNING
        logger.log(level, "no files made ahead in %s: %s", self.folder, exc)
        self.usable = False
        _close_all(self._fds)
