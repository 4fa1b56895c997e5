"""Cache upkeep: when cached files were last used, pruning by age or size, the size limit.

A cached file's last use is the mtime of its record (``<filename>.json``), refreshed when the file is
served and found older than :data:`USED_RESOLUTION` — one ``stat`` per hit and at most one ``utime``
per file and minute, independent of ``atime`` (which ``noatime`` mounts never update). Only the
mirror's files are pruned: the private store holds the only copy of what was uploaded or built here.
Pages stay; a pruned file leaves the set of kept files and is fetched again when asked for. Rendered
pages that can never be served again (``pagefiles``: of a page with no state, or older than it) go
with every prune, the size limit's too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import NormalizedName

from nestegg_core.errors import UnsafePath
from nestegg_core.simple.models import DistFile, is_dist_filename, is_normalized

from .fs import make_folder, scan_below, unlink_below
from .locks import FileLock, LockTimeout
from .pagefiles import RenderedPages
from .private import PrivateStore
from .store import CHANGED, CacheStore

logger = logging.getLogger(__name__)

#: seconds a last-use stamp may lag behind; a hit on an older one refreshes it
USED_RESOLUTION = 60.0
#: temporary files older than this (seconds) are leftovers of a crash
STALE_AFTER = 24 * 3600.0
#: a size limit applied while serving prunes down to this share of it, not just under it
LOW_WATER = 0.9
#: seconds after which a serving process re-measures the cache instead of trusting its estimate
RESCAN_AFTER = 300.0


def mark_used(store: CacheStore, name: NormalizedName, filename: str, *, now: float | None = None) -> None:
    """Note that a cached file was just served (see the module docstring)."""
    path = store.record_path(name, filename)
    now = time.time() if now is None else now
    with contextlib.suppress(OSError):  # a read-only cache or a pruned file: nothing to note
        # a link in its place is not followed (its own time changes, its target's never)
        if now - os.lstat(path).st_mtime > USED_RESOLUTION:
            os.utime(path, (now, now), follow_symlinks=False)


# what is cached ---------------------------------------------------------------------------------


def nest_stores(root: Path) -> list[CacheStore]:
    """The mirror cache of every upstream the nest at ``root`` holds (upkeep works on all of them).

    Upkeep follows no link below ``root``: it never looks at, nor removes, anything elsewhere.
    """
    with scan_below(root, root / "mirror") as entries:
        keys = sorted(
            e.name for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
        )
    return [CacheStore(root, key=key) for key in keys]


@dataclass(frozen=True, kw_only=True)
class CachedFile:
    """One complete file of a mirror cache, with the space it takes and when it was last used."""

    store: CacheStore
    name: NormalizedName
    filename: str
    size: int  # the file, its record, its metadata file and the note of its check
    used: float


def cached_files(root: Path) -> list[CachedFile]:
    """Every complete file (one with a record) of every mirror cache of the nest, in no order."""
    found = []
    for store in nest_stores(root):
        for name in _project_folders(store):
            found += _project_files_on_disk(store, name)
    return found


def _project_folders(store: CacheStore) -> list[NormalizedName]:
    with scan_below(store.root, store.files) as folders:
        return [
            NormalizedName(f.name)
            for f in folders
            if f.is_dir(follow_symlinks=False) and is_normalized(f.name)
        ]


def _project_files_on_disk(store: CacheStore, name: NormalizedName) -> list[CachedFile]:
    stats: dict[str, os.stat_result] = {}
    with scan_below(store.root, store.files / name) as entries:
        for entry in entries:
            if not entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    status = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(status.st_mode):  # a link is neither counted nor followed
                        stats[entry.name] = status
    found = []
    for entry_name, record in stats.items():
        filename = entry_name.removesuffix(".json")
        if filename == entry_name or filename not in stats or not is_dist_filename(filename):
            continue
        extras = (
            stats.get(f"{filename}{suffix}")
            for suffix in (".metadata", ".metadata.checked", ".metadata.ranged")
        )
        size = stats[filename].st_size + record.st_size + sum(extra.st_size for extra in extras if extra)
        found.append(CachedFile(store=store, name=name, filename=filename, size=size, used=record.st_mtime))
    return found


# prune ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    removed: tuple[CachedFile, ...]
    #: files and bytes left in the mirror caches
    kept: int
    size: int
    #: leftover partial downloads and temporary files removed
    leftovers: int = 0
    #: rendered pages removed that could never be served again
    renderings: int = 0

    @property
    def freed(self) -> int:
        return sum(f.size for f in self.removed)


def prune(
    root: Path,
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> PruneResult:
    """Remove the least recently used files of the nest's mirror caches until none was unused for
    ``older_than`` seconds and all take at most ``max_size`` bytes; private files are not touched.

    A file whose lock another process holds (it is being downloaded again) is skipped.
    """
    now = time.time() if now is None else now
    files = sorted(cached_files(root), key=lambda f: (f.used, f.name, f.filename))
    total = sum(f.size for f in files)
    removed: list[CachedFile] = []
    for cached in files:
        too_old = older_than is not None and cached.used < now - older_than
        too_big = max_size is not None and total > max_size
        if not (too_old or too_big):
            break  # the rest are newer, and the cache only got smaller
        if dry_run or _remove(cached):
            total -= cached.size
            removed.append(cached)
    leftovers = renderings = 0
    if not dry_run:
        for store in nest_stores(root):
            leftovers += _remove_leftovers(store, now)
            renderings += sweep_renderings(store, now)
        # what crashes left of uploads and of files being published; the published ones stay
        leftovers += PrivateStore(root / "private", nest=root).sweep(now - STALE_AFTER)
    if removed and not dry_run:
        logger.info("pruned %d cached files (%d bytes)", len(removed), sum(f.size for f in removed))
    return PruneResult(
        removed=tuple(removed),
        kept=len(files) - len(removed),
        size=total,
        leftovers=leftovers,
        renderings=renderings,
    )


def sweep_renderings(store: CacheStore, now: float | None = None) -> int:
    """Remove the rendered pages of ``store`` that can never be served again; returns how many."""
    pages = RenderedPages(store.rendered, root=store.root)
    return pages.sweep(lambda name: (store.page_path(name), store.files / name / CHANGED), now=now)


def _remove(cached: CachedFile) -> bool:
    store, name, filename = cached.store, cached.name, cached.filename
    try:
        with store.lock(name, filename, timeout=0):
            # the record first: a file without one is no longer kept, even if removing it fails
            for path in (
                store.record_path(name, filename),
                store.file_path(name, filename),
                store.metadata_check_path(name, filename),
                store.metadata_ranged_path(name, filename),
                store.metadata_path(name, filename),
            ):
                unlink_below(store.root, path)  # a regular file; never through a link
            try:  # a file the upstream dropped leaves the page with it
                store.page_changed(name)
            except OSError as exc:
                logger.warning("cannot mark the page of %r changed: %s", name, exc)
    except LockTimeout:
        logger.info("not pruning %s/%s: it is being downloaded", name, filename)
        return False
    except (OSError, UnsafePath) as exc:
        logger.warning("cannot prune %s/%s: %s", name, filename, exc)
        return False
    return True


def _remove_leftovers(store: CacheStore, now: float) -> int:
    """Partial downloads no process is writing, and temporary files of writes a crash cut short."""
    removed = store.sweep_parts()
    for name in _project_folders(store):
        folder = store.files / name
        with scan_below(store.root, folder) as entries:
            stale = []
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        # a write in progress is a moment old; an abandoned one is old
                        status = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(status.st_mode) and status.st_mtime < now - STALE_AFTER:
                            stale.append(entry.name)
        for entry_name in stale:
            with contextlib.suppress(OSError, UnsafePath):
                removed += unlink_below(store.root, folder / entry_name)
    return removed


class SizeLimit:
    """Keeps the nest's mirror caches under ``max_size`` bytes while serving.

    Each newly cached file is added to an estimate of the caches' size; when the estimate passes the
    limit (or is older than :data:`RESCAN_AFTER`) a background thread measures them and prunes down
    to :data:`LOW_WATER` of the limit. One process of the nest prunes at a time; the others skip.
    """

    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size
        self._estimate: int | None = None
        self._measured = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self._again = False  # a file came while pruning: measure once more when done

    def cached(self, dist: DistFile) -> None:
        """Note a newly cached file; prune in the background if the caches may be over the limit."""
        with self._lock:
            if self._estimate is not None:
                self._estimate += dist.size or 0
            due = (
                self._estimate is None
                or self._estimate > self.max_size
                or time.monotonic() - self._measured > RESCAN_AFTER
            )
            if not due:
                return
            if self._running:
                self._again = True
                return
            self._running = True
            thread = threading.Thread(target=self._run, name="nestegg-prune", daemon=True)
            thread.start()
            self._thread = thread

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background prune to finish (tests, and a server that stops)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                self._prune()
            except Exception:
                logger.exception("pruning the cache to its size limit failed")
            with self._lock:
                if not self._again:
                    self._running = False
                    return
                self._again = False

    def _prune(self) -> None:
        lock = self.root / "locks" / "prune.lock"
        make_folder(self.root, lock.parent)
        try:
            with FileLock(lock, timeout=0):
                size = sum(f.size for f in cached_files(self.root))
                if size > self.max_size:
                    size = prune(self.root, max_size=int(self.max_size * LOW_WATER)).size
                else:  # what prune would also do: renderings that can never be served again go
                    for store in nest_stores(self.root):
                        sweep_renderings(store)
        except LockTimeout:
            return  # another process is pruning the nest right now
        with self._lock:
            self._estimate, self._measured = size, time.monotonic()
