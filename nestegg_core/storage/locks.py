"""Inter-process locks on files of the cache: ``flock(2)`` on a lock file, as filelock takes them.

filelock 4 takes 0.2-0.3 ms of Python around each lock (670 calls) and 10 ms to import, on the
path of every cold file; this takes the same lock with three system calls. Both lock the open
file with ``flock`` (on Linux, macOS and the BSDs), so an older nestegg sharing the cache, which
takes its locks with filelock, excludes this one and the other way round. Windows, which has no
``flock``, keeps filelock (a dependency there only).
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from nestegg_core.errors import NesteggError

from .fs import refused

if TYPE_CHECKING:
    from .blanks import Blanks

__all__ = ["FileLock", "LockTimeout"]

#: first and last pause between tries of a lock held elsewhere
_FIRST_PAUSE = 0.001
_LAST_PAUSE = 0.05


class LockTimeout(TimeoutError):
    """The lock was held by another for all of the time given."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"the lock {str(path)!r} is held by another process or thread")
        self.path = path


_L = TypeVar("_L", bound="_Lock")


class _Lock:
    """``with lock:`` takes it and lets it go, whichever lock it is."""

    def acquire(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self: _L) -> _L:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - no flock; filelock's msvcrt lock
    import filelock

    class FileLock(_Lock):
        """filelock's lock, raising :class:`LockTimeout`."""

        def __init__(
            self,
            path: Path,
            *,
            timeout: float = -1,
            blanks: Blanks | None = None,  # noqa: ARG002 - no O_TMPFILE here
        ) -> None:
            self.path = path
            self.timeout = timeout
            self._lock = filelock.FileLock(path)

        @property
        def is_locked(self) -> bool:
            return self._lock.is_locked

        def acquire(self, timeout: float | None = None) -> None:
            try:
                self._lock.acquire(timeout=self.timeout if timeout is None else timeout)
            except filelock.Timeout:
                raise LockTimeout(self.path) from None

        def release(self) -> None:
            self._lock.release()

else:
    import fcntl

    #: what a try of a lock held by another says: EAGAIN, and EACCES on some file systems (SMB)
    _HELD = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})
    #: the lock file's own name is never a link followed (one planted in the cache would be)
    _FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)

    class FileLock(_Lock):
        """An exclusive lock on ``path`` (made if missing), held until :meth:`release`.

        Not reentrant: each holder opens the file anew, and two opens of one file exclude each
        other, in one process as in two. ``timeout`` is how long :meth:`acquire` waits: -1 for
        ever, 0 a single try; :class:`LockTimeout` when it is up.
        """

        def __init__(self, path: Path, *, timeout: float = -1, blanks: Blanks | None = None) -> None:
            self.path = path
            self.timeout = timeout
            self._fd: int | None = None
            #: where a missing lock file is named from a file made ahead (see :mod:`.blanks`)
            self._blanks = blanks

        @property
        def is_locked(self) -> bool:
            return self._fd is not None

        def acquire(self, timeout: float | None = None) -> None:
            if self._fd is not None:
                raise RuntimeError(f"the lock {str(self.path)!r} is held already by this holder")
            wait = self.timeout if timeout is None else timeout
            fd = self._blanks.place(self.path) if self._blanks is not None else None
            if fd is None:
                try:
                    fd = os.open(self.path, _FLAGS, 0o644)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:  # O_NOFOLLOW's word for a link
                        raise refused(self.path, "file") from None
                    raise
            try:
                if wait < 0:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # the GIL is let go while it waits
                else:
                    self._poll(fd, time.monotonic() + wait)
                self._fd = fd
            except OSError as exc:
                os.close(fd)
                if isinstance(exc, LockTimeout):
                    raise
                raise NesteggError(
                    f"cannot lock {str(self.path)!r}: {exc.strerror or exc} (keep the nest on a file "
                    "system that gives locks, such as a local disk)"
                ) from None
            except BaseException:
                os.close(fd)
                raise

        def _poll(self, fd: int, deadline: float) -> None:
            pause = _FIRST_PAUSE
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in _HELD:
                        raise
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LockTimeout(self.path) from None
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, _LAST_PAUSE)
                else:
                    return

        def release(self) -> None:
            """Let the lock go (the file stays: removing it would race another's open)."""
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)  # a child forked meanwhile shares the open file
                finally:
                    os.close(fd)

        def __del__(self) -> None:
            self.release()
