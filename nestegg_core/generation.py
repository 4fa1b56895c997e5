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

import logging
import mmap
import os
import random
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: seconds a reader trusts a generation before it checks the disk (and the file) again anyway
RECHECK = 1.0
_SIZE = 8


class Generation:
    """The generation of one store, kept in the file at ``path`` (made when first used)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        self._identity: tuple[int, int] | None = None
        self._check_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> bytes | None:
        """The generation now, or None when there is none to trust (the disk must be checked)."""
        self._check()
        view = self._map  # once: another thread may map the file again meanwhile
        return None if view is None else view[:_SIZE]

    def advance(self) -> None:
        """Mark a change as made: call once it is on disk, so that readers who see the new
        generation see the change."""
        # a writer that could not map the file tries again at once: readers rely on its stamp
        self._check(force=self._map is None)
        view = self._map
        if view is not None:
            view[:_SIZE] = random.getrandbits(8 * _SIZE).to_bytes(_SIZE, "little")

    def close(self) -> None:
        with self._lock:
            if self._map is not None:
                self._map.close()
            self._map, self._identity = None, None

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
                status = os.stat(self.path)
            except FileNotFoundError:
                status = None
            except OSError:
                self._map, self._identity = None, None
                return
            if status is not None and (status.st_dev, status.st_ino) == self._identity:
                return
            # the old mapping is left to the threads still reading it; it closes when they are done
            self._map, self._identity = self._open()

    def _open(self) -> tuple[mmap.mmap | None, tuple[int, int] | None]:
        try:
            # made by readers too: a folder that a writer makes later would be mapped a check late
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            logger.debug("no generation file %s: %s", self.path, exc)
            return None, None
        try:
            status = os.fstat(fd)
            if status.st_size < _SIZE:
                # two processes may both do this: growing a file to the same size keeps its bytes
                os.ftruncate(fd, _SIZE)
            return mmap.mmap(fd, _SIZE), (status.st_dev, status.st_ino)
        except (OSError, ValueError) as exc:
            logger.warning("cannot map the generation file %s: %s", self.path, exc)
            return None, None
        finally:
            os.close(fd)
