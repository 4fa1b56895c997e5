"""The mirror of the upstream index: pages revalidated after a TTL, served stale when it fails."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from packaging.utils import NormalizedName

from nestegg_core.errors import NesteggError, NotCached, NotFound, UnsafePath, UpstreamError
from nestegg_core.simple.models import DistFile, ProjectPage, is_dist_filename, versions_with
from nestegg_core.storage import store as _store
from nestegg_core.storage.fs import scan_below
from nestegg_core.storage.pagestate import PageState, StateHeader
from nestegg_core.storage.store import CacheStore, PageStamp
from nestegg_core.waits import blocking

from . import later
from .circuit import Circuit
from .upstream import Fetched, Fetcher, background, holding

logger = logging.getLogger(__name__)
#: what a page lists while the upstream is down, said once per project (a tox run says its
#: outages once, at its end, and quiets this as it does the circuits)
down_logger = logging.getLogger(f"{__name__}.down")

#: after an upstream failure, how long a stale page is served before the upstream is asked again
RETRY_AFTER = 30.0
#: files of the pages a process keeps parsed in memory (about 700 bytes each); past it the least
#: recently used pages are dropped and read again from their state file when next asked for. Warm
#: pages and cached files are served without their page, so it is the last page a client asked
#: for that matters (pip asks for a page, then its file), and that one is kept whatever its size,
#: also while a page is made ahead of its request beside it (``in_background``): pydantic-core's
#: file, its page of 15,000 files dropped for one made ahead, took 65-118 ms to read it again
MAX_FILES = 1_000
#: files of the pages made ahead of a client (``in_background``) held beside ``max_files`` until a
#: client's request takes each (a file's, next), the oldest first past it: a run's dependencies,
#: made a dozen at a time, dropped each other before pip asked for their files (0.9-1.1 ms each)
MAX_AHEAD_FILES = 10_000
#: names this process remembers (about 300 bytes each, the pages in memory among them); past it,
#: the least recently asked for that hold no page are forgotten: a 404 or a page dropped from
#: memory, asked of the upstream or read from disk again when next asked for
MAX_ENTRIES = 4_096
#: how long a request waits for another thread's catch-up of the same page (a stat and a listing,
#: or the records of a project): past it, it answers the page it has
CATCH_UP_WAIT = 2.0
#: notes of missing projects kept on disk at most (a file of a few bytes each, a block on disk),
#: those past their TTL dropped first; looked through once every ``TRIM_MISSING_EVERY`` notes
MAX_MISSING_NOTES = 4_096
TRIM_MISSING_EVERY = 256


@dataclass(slots=True)
class _Entry:
    """What this process holds in memory for one project."""

    state: PageState | None = None
    page: ProjectPage | None = None  # upstream's files merged with the kept ones
    fresh_until: float = 0.0
    missing_until: float = 0.0  # the upstream said 404 and nothing is kept
    mtime: PageStamp | None = None  # of the state file read or written, to notice other writes
    kept: frozenset[str] = frozenset()  # the cached files on disk when ``page`` was made
    files_stamp: int | None = None  # mtime of the project's files folder when ``kept`` was listed
    reloadable: bool = False  # ``page`` can be made again from the state on disk (see _evict)
    #: one upstream fetch (or catch-up) of the page at a time
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the lock is held by a catch-up (disk work only), which another request waits for
    catching_up: bool = False
    #: threads in :meth:`MirrorIndex.page` with this entry: it is never forgotten while one is, so
    #: that all of them take the same lock (see _forget)
    users: int = 0
    #: the state of a page fetched just now, not written yet (``later``), and who writes it: the
    #: request that fetched it once its answer is sent, or one that must see it on disk first
    unsaved: PageState | None = None
    saving: threading.Lock = field(default_factory=threading.Lock)


class MirrorIndex:
    """Project pages and file descriptions of the upstream, as cached on disk."""

    def __init__(
        self,
        store: CacheStore,
        fetcher: Fetcher,
        *,
        ttl: float = 600.0,
        offline: bool = False,
        clock: Callable[[], float] = time.time,
        max_files: int = MAX_FILES,
        max_ahead_files: int = MAX_AHEAD_FILES,
        max_entries: int = MAX_ENTRIES,
        circuit: Circuit | None = None,
    ) -> None:
        self.store = store
        #: the upstream's circuit, told what was served in its place while it was down
        self.circuit = circuit
        self.fetcher = fetcher
        self.ttl = ttl
        self.offline = offline
        self.clock = clock
        #: notes of missing projects written by this process (they are trimmed every so many)
        self._missing_notes = 0
        self.max_files = max_files
        self.max_ahead_files = max_ahead_files
        self.max_entries = max_entries
        #: least recently asked for first
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._guard = threading.Lock()
        self._refresh_before = 0.0
        # the names whose page is in memory, least recently used first, with their file counts
        self._loaded: OrderedDict[str, int] = OrderedDict()
        self._loaded_files = 0
        #: those of them made ahead that no client's request took since, oldest first (see
        #: ``max_ahead_files``), and their files
        self._ahead: OrderedDict[str, int] = OrderedDict()
        self._ahead_files = 0
        #: the page a client asked for last: work in the background does not drop it
        self._asked_last: str | None = None
        #: the names whose page the upstream answered with an error when last asked (a 5xx, a page
        #: it cannot read), served in its place meanwhile, with the error's message and status;
        #: empty while none is (a page answered from its rendering looks at nothing else)
        self.failing: dict[str, tuple[str, int]] = {}
        #: the names whose page was said (once) to list its cached files alone while down
        self._said_down: set[str] = set()

    def refresh_all(self) -> None:
        """Make every page revalidate on its next request (``--refresh``)."""
        self._refresh_before = self.clock()
        with self._guard:
            for entry in self._entries.values():
                entry.fresh_until = 0.0

    def page(self, name: NormalizedName) -> ProjectPage:
        """The project's page: upstream's files and, after them, every cached file it dropped.
        Offline, the cached files alone: :class:`NotCached` when there are none, as for a name
        never cached (an empty page said nothing of why)."""
        entry = self._hold(name)
        try:
            page = self._page(name, entry)
        finally:
            with self._guard:
                entry.users -= 1
        if not page.files and self.offline:
            raise NotCached(
                f"the cache has nothing for {name!r} and nestegg is offline: no upstream is asked"
            )
        return page

    def down(self, name: NormalizedName) -> str | None:
        """Why the page of ``name`` is served in the upstream's place now, if it is: its circuit
        is open (it could not be reached, nor can the files on its host), or it answered the page
        with an error when last asked (again after ``RETRY_AFTER``). None otherwise."""
        circuit = self.circuit
        reason = None if circuit is None else circuit.reason
        if reason is not None and circuit is not None:
            return f"upstream {circuit.upstream} is unreachable ({reason})"
        failed = self.failing.get(name)
        return None if failed is None else f"the upstream failed: {failed[0]}"

    def cached_only(
        self, name: NormalizedName, page: ProjectPage, reason: str, *, also: frozenset[str] = frozenset()
    ) -> ProjectPage:
        """``page`` as served while the upstream cannot give it (``reason``, see :meth:`down`):
        its cached files alone (and those named in ``also``), with their versions, as offline, so
        that an installer picks what can be served. Said once per project. With none, what a name
        never cached gets: :class:`NotCached` (the upstream unreachable), else the upstream's error."""
        kept = self._kept_names(name) | also
        page = ProjectPage.build(name, [dist for dist in page.files if dist.filename in kept])
        if not page.files:
            failed = self.failing.get(name)
            if failed is not None and self.circuit is not None and self.circuit.reason is None:
                error = UpstreamError(failed[0])
                error.status = failed[1]
                raise error
            if self.circuit is not None:
                self.circuit.missed(name)
            raise NotCached(f"the cache has nothing for {name!r} and {reason}")
        if name not in self._said_down:
            if len(self._said_down) >= self.max_entries:
                self._said_down.clear()
            self._said_down.add(name)
            down_logger.warning(
                "serving the page of %r with its cached files only (%d) while %s",
                name,
                len(page.files),
                reason,
            )
        return page

    def _page(self, name: NormalizedName, entry: _Entry) -> ProjectPage:
        now = self.clock()
        page = entry.page  # once: another thread may drop it from memory meanwhile (_evict)
        if page is not None and now < entry.fresh_until:
            self._catch_up(name, entry)
            return self._remember(name, entry.page or page)
        if page is None and now < entry.missing_until:
            raise NotFound(f"project {name!r} is not on the upstream index")
        lock = entry.lock
        if page is not None and not lock.acquire(blocking=False):
            return page  # another thread is revalidating; this answer may lag by one fetch
        if page is None:
            self._make_room()
            with blocking():  # another thread asks the upstream
                lock.acquire()
        try:
            if entry.page is not None and self.clock() < entry.fresh_until:
                return self._remember(name, entry.page)  # revalidated while we waited for the lock
            self._revalidate(name, entry)
            if entry.page is None:
                raise NotFound(f"project {name!r} is not on the upstream index")
            return self._remember(name, entry.page)
        finally:
            lock.release()

    def reconfirm(self, name: NormalizedName) -> bool | ProjectPage:
        """Ask the upstream whether it gives again, unchanged, the page whose state on disk is
        past its TTL and not held in memory, by the digest of what that state was read from
        (a state with validators, or within its TTL, or a page held, is left to :meth:`page`).

        True once the page is confirmed on disk (``CacheStore.confirm``), its state not read, so
        that what was rendered from it is served again; the page the answer made otherwise (a new
        one, or the one held if the upstream failed), as :meth:`page` gives it; False if nothing
        was asked. :class:`NotFound` as :meth:`page` raises it.
        """
        if self.offline or not _asked_first(self.store.read_page_header(name), self.fresh):
            return False
        entry = self._hold(name)
        try:
            if entry.page is not None:
                return False
            self._make_room()  # the page is read if it cannot be confirmed
            with blocking():  # another thread may be asking the upstream
                entry.lock.acquire()
            try:
                if entry.page is None and self._revalidate(name, entry, need_page=False):
                    return True
                if entry.page is None:
                    raise NotFound(f"project {name!r} is not on the upstream index")
                return self._remember(name, entry.page)
            finally:
                entry.lock.release()
        finally:
            with self._guard:
                entry.users -= 1

    def stored(self, name: NormalizedName) -> tuple[ProjectPage, frozenset[str]] | None:
        """The page of ``name`` as this nest holds it, without asking the upstream, and the names
        of its cached files: the page in memory (caught up with the disk), else the one its state
        file and cached files make, then held as a page asked for is (the web UI shows what the
        Simple API serves, from one model). None when the nest holds nothing of it."""
        entry = self._hold(name)
        try:
            if entry.page is None:
                self._make_room()
                if entry.lock.acquire(blocking=False):  # else the upstream is being asked: not waited for
                    try:
                        mtime = self.store.page_stamp(name)
                        state = self.store.read_page(name) if entry.page is None else None
                        if state is not None:
                            self._use(name, entry, state, mtime)
                    finally:
                        entry.lock.release()
            page = entry.page
            if page is not None:
                self._catch_up(name, entry)
                return self._remember(name, entry.page or page), entry.kept
        finally:
            with self._guard:
                entry.users -= 1
        state = self.store.read_page(name)  # being fetched, or no state: not held here
        kept = self.store.kept_files(name)
        if state is None and not kept:
            return None
        base = state.page if state is not None else ProjectPage.build(name, ())
        page = self._with_kept(base, kept, only_kept=self.offline)
        return page, frozenset(dist.filename for dist in kept)

    def fresh(self, checked: float) -> bool:
        """Whether a page the upstream confirmed at ``checked`` may be served without asking again."""
        return self.offline or (checked >= self._refresh_before and self.clock() < checked + self.ttl)

    def checked(self, name: NormalizedName, page: ProjectPage) -> float | None:
        """When the upstream confirmed ``page``, if it is the page in memory and what the state
        file and cached files on disk make now: not an older page answered while another thread
        caught up, one made while the upstream failed or said 404, or one that another process's
        state file or cached file has overtaken."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        # read once: another thread may evict the entry (and load it again) meanwhile, without
        # this one's lock; the page read again last says the rest belongs to it
        state, mtime, files_stamp = entry.state, entry.mtime, entry.files_stamp
        if entry.page is not page or not entry.reloadable or state is None:
            return None
        if mtime is None or mtime != self.store.page_stamp(name):
            return None
        if files_stamp is None or files_stamp != self._files_stamp(name):
            return None
        return state.checked if entry.page is page else None

    def made_from(self, name: NormalizedName, page: ProjectPage) -> PageStamp | None:
        """The stamp of the state file ``page`` was made from, if it is the page in memory of
        ``name`` (and could be made again from that state); else None."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        mtime = entry.mtime  # read first: the page read again last says it belongs to it
        return mtime if entry.page is page and entry.reloadable and entry.state is not None else None

    def file(self, name: NormalizedName, filename: str) -> DistFile:
        """The description of one file, from the page or, for a file upstream dropped, its record."""
        return self.entry(name, filename)[0]

    def entry(self, name: NormalizedName, filename: str) -> tuple[DistFile, PageStamp | None]:
        """The entry of ``filename`` as :meth:`page` lists it, and the stamp of the state file it
        was read from (None when it is not one on disk, see :meth:`made_from`).

        A page not held in memory whose state on disk is within its TTL is not made for it: the
        entry is read from the state alone (``CacheStore.read_page_entry``) when no record of the
        file is kept beside it (a cached file's record is what the page lists). uv asks for every
        page, then for each wheel's metadata and file, dozens at once: each of those made its
        page again, 60-100 ms of a 15,000-file page under the GIL, twice a project.
        """
        held = self._entries.get(name)
        if held is None or (
            held.page is None and not held.lock.locked() and self.clock() >= held.missing_until
        ):
            stored = self._stored_entry(name, filename)
            if stored is not None:
                return stored
        page = self.page(name)
        dist = page.file(filename)
        if dist is None:
            raise NotFound(f"project {name!r} has no file {filename!r}")
        return dist, self.made_from(name, page)

    def _stored_entry(self, name: NormalizedName, filename: str) -> tuple[DistFile, PageStamp] | None:
        """The entry of ``filename`` in the state on disk, if it lists one and is fresh, no record
        of the file is kept, and the state was not replaced while it was read; else None."""
        stamp = self.store.page_stamp(name)
        if stamp is None or os.path.lexists(self.store.record_path(name, filename)):
            return None
        found = self.store.read_page_entry(name, filename)
        if found is None or found[1] is None or not self.fresh(found[0].checked):
            return None
        if self.store.page_stamp(name) != stamp:
            return None
        return found[1], stamp

    def listed(self, name: NormalizedName, filename: str) -> DistFile | None:
        """The entry of ``filename`` on the page of ``name`` in memory, if any (asks nobody)."""
        entry = self._entries.get(name)
        page = None if entry is None else entry.page
        return None if page is None else page.file(filename)

    def cached(self, name: NormalizedName, record: DistFile) -> None:
        """Note a newly cached file, so its page lists what was learned (metadata, hash)."""
        entry = self._entries.get(name)
        # under the page's lock, or not at all: a catch-up (or a fetch) that holds it reads the
        # disk, this record on it, and one in between would be undone by this older page
        if entry is None or not entry.lock.acquire(blocking=False):
            return
        entry.catching_up = True  # a request for the page waits for it, as for a catch-up
        try:
            self._cached(name, entry, record)
        finally:
            entry.catching_up = False
            entry.lock.release()

    def _cached(self, name: NormalizedName, entry: _Entry, record: DistFile) -> None:
        with self._guard:
            if entry.page is None:
                return
            # the record is on disk now: _catch_up need not make the page again for it
            entry.kept |= {record.filename}
            if entry.page.file(record.filename) == record:
                # nothing learned (the index gave size, hash and metadata): the page, and so its
                # rendered bytes, stay as they are instead of being rebuilt for every file cached
                return
            files = tuple(record if d.filename == record.filename else d for d in entry.page.files)
            versions = entry.page.index_versions
            if record.filename not in {d.filename for d in files}:
                files += (record,)
                versions = versions_with(versions, (record,))
                if name in self._loaded:
                    self._loaded_files += _weight(len(files)) - self._loaded[name]
                    self._loaded[name] = _weight(len(files))
                if name in self._ahead:
                    self._ahead_files += _weight(len(files)) - self._ahead[name]
                    self._ahead[name] = _weight(len(files))
            entry.page = ProjectPage.build(name, files, versions)

    # memory ------------------------------------------------------------------------------

    def _remember(self, name: str, page: ProjectPage) -> ProjectPage:
        """Note ``page`` as the most recently used, and drop the least recently used others while
        the pages in memory hold more than ``max_files`` files."""
        with self._guard:
            self._loaded_files += _weight(len(page.files)) - self._loaded.pop(name, 0)
            self._loaded[name] = _weight(len(page.files))
            self._ahead_files -= self._ahead.pop(name, 0)
            if background():
                self._ahead[name] = self._loaded[name]
                self._ahead_files += self._ahead[name]
            else:
                self._asked_last = name
        self._make_room(keep=name)
        return page

    def asked(self, name: NormalizedName) -> None:
        """Note that a client asks for the page of ``name``, which may be answered from its
        rendering without a look at the page: held in memory, it is the page work in the
        background does not drop (pip asks for its file next)."""
        if background():
            return
        with self._guard:
            self._asked_last = name
            if name in self._loaded:
                self._loaded.move_to_end(name)

    def is_fresh(self, name: NormalizedName) -> bool:
        """Whether the page of ``name`` may be answered now without asking the upstream."""
        entry = self._entries.get(name)
        return self.offline or (entry is not None and self.clock() < entry.fresh_until)

    def trim(self) -> None:
        """Drop pages from memory until those left hold at most ``max_files`` files, the one a
        client asked for last too (the mirror is quiet)."""
        self._make_room(spare_asked=False)

    def _make_room(self, keep: str | None = None, *, spare_asked: bool = True) -> None:
        """Drop the least recently used pages (but ``keep``'s) while those in memory hold more than
        ``max_files`` files, not counting the pages made ahead that no client took yet (within
        ``max_ahead_files``). Also done before a page is made: a page larger than that is held
        while it is asked for (its page, then its file), not while the next one is made, unless
        that one is made in the background (then the page a client asked for last stays).
        Without ``spare_asked`` (the mirror is quiet), neither those nor that one are spared."""
        victims = []
        with self._guard:
            while self._ahead and (self._ahead_files > self.max_ahead_files or not spare_asked):
                self._ahead_files -= self._ahead.popitem(last=False)[1]
            spared = (keep, self._asked_last) if spare_asked and background() else (keep,)
            excess = self._loaded_files - self._ahead_files - self.max_files
            for other, count in self._loaded.items():
                if excess <= 0:
                    break
                if other in self._ahead and other != keep:
                    continue
                if other in spared:
                    if other == keep:
                        break
                    continue
                victims.append(other)
                excess -= count
        for victim in victims:
            self._evict(victim)

    def _evict(self, name: str) -> None:
        """Drop the page of ``name`` from memory; its next request reads the state file again."""
        entry = self._entries.get(name)
        if entry is None:  # forgotten: nothing of it is held
            with self._guard:
                self._loaded_files -= self._loaded.pop(name, 0)
                self._ahead_files -= self._ahead.pop(name, 0)
            return
        lock = entry.lock
        if not lock.acquire(blocking=False):
            return  # being revalidated or caught up: dropped another time
        try:
            with self._guard:
                count = self._loaded.pop(name, None)
                if count is None:
                    return
                self._loaded_files -= count
                self._ahead_files -= self._ahead.pop(name, 0)
                if not entry.reloadable:
                    entry.fresh_until = 0.0  # made from what the disk does not hold: ask upstream
                self.failing.pop(name, None)  # asked again when next asked for
                entry.page = entry.state = None
                entry.mtime = entry.files_stamp = None
                entry.kept = frozenset()
        finally:
            lock.release()

    # internals ---------------------------------------------------------------------------

    def _hold(self, name: str) -> _Entry:
        """The entry of ``name``, made if need be, with one more user (the caller lets it go)."""
        with self._guard:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry(users=1)
                self._forget()
            else:
                self._entries.move_to_end(name)
                entry.users += 1
        return entry

    def _forget(self) -> None:
        """Under the guard: past ``max_entries`` names, forget the least recently asked for of
        those that hold no page and that no thread uses (a 404 remembered, a page dropped from
        memory). An entry in use is never forgotten: a thread that arrives meanwhile finds it,
        so two threads never hold two locks of one name (and fetch its page twice at once)."""
        looked = 0
        while len(self._entries) > self.max_entries and looked < len(self._entries):
            name, entry = next(iter(self._entries.items()))
            if entry.users or entry.page is not None or name in self._loaded or entry.lock.locked():
                self._entries.move_to_end(name)  # not looked at again before the others
                looked += 1
            else:
                del self._entries[name]

    def _catch_up(self, name: NormalizedName, entry: _Entry) -> None:
        """Take in what other processes wrote since the page was made: a newer state, other files.

        A stat and a directory listing per request, so that every worker process of a pre-forking
        server (gunicorn, mod_wsgi) answers from the state on disk: the same page, the same ETag.
        """
        lock = entry.lock
        if not lock.acquire(blocking=False):
            if not entry.catching_up:
                return  # the upstream is being asked: this answer may lag by one fetch
            # another thread catches up: its page is this answer too, in every thread as in
            # every process (a catch-up reads the disk only, but a state may be large)
            with blocking():
                if not lock.acquire(timeout=CATCH_UP_WAIT):
                    return
        entry.catching_up = True
        try:
            if entry.page is None:
                return  # dropped from memory (_evict) since the caller looked: it has its page
            mtime = self.store.page_stamp(name)
            if mtime is not None and mtime != entry.mtime:
                state = self.store.read_page(name)
                if state is not None:
                    self._use(name, entry, state, mtime)
                    return
            stamp = self._files_stamp(name)
            if stamp is not None and stamp == entry.files_stamp:
                return
            kept = self._kept_names(name)
            if kept != entry.kept:
                base = entry.state.page if entry.state is not None else ProjectPage.build(name, ())
                entry.kept = kept
                entry.page = self._with_kept(base, self.store.kept_files(name), only_kept=self.offline)
            # after the page: checked() must never see the new stamp beside the page before it,
            # or a rendering of that page would be saved as the disk's now, for every process
            entry.files_stamp = stamp
        finally:
            entry.catching_up = False
            lock.release()

    def _files_stamp(self, name: NormalizedName) -> int | None:
        """The files folder's mtime (0 when there is none), or None when it is too recent to trust.

        A record renamed into the folder changes its mtime, so an unchanged mtime spares the
        listing; one within the last second may yet hide a second change in the same tick.
        """
        try:
            mtime = os.lstat(self.store.files / name).st_mtime_ns
        except FileNotFoundError:
            return 0
        except OSError:
            return None
        return mtime if time.time_ns() - mtime > _store.SETTLE_NS else None

    def _kept_names(self, name: NormalizedName) -> frozenset[str]:
        """The files of ``name`` that have a record beside them on disk (a cheap ``kept_files``)."""
        with scan_below(self.store.root, self.store.files / name) as entries:
            names = {
                e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            }
        return frozenset(
            n[:-5] for n in names if n.endswith(".json") and n[:-5] in names and is_dist_filename(n[:-5])
        )

    def _revalidate(
        self, name: NormalizedName, entry: _Entry, *, need_page: bool = True, by_digest: bool = True
    ) -> bool:
        """Make ``entry`` hold the page of ``name`` as fresh as the upstream can tell. Without
        ``need_page``, a state on disk the upstream gives again unchanged (its digest) is only
        confirmed on disk, not read: True then, and the entry holds no page. Without
        ``by_digest``, a page the upstream answers is parsed even if it is the one held."""
        mtime = self.store.page_stamp(name)
        #: the first line of a state on disk past its TTL, whose files are read only if needed
        header: StateHeader | None = None
        if mtime is not None and mtime != entry.mtime:
            # first use in this process, or another process wrote a newer state
            header = None if self.offline else self.store.read_page_header(name)
            if not _asked_first(header, self.fresh):
                header = None
                state = self.store.read_page(name)
                if state is not None:
                    self._use(name, entry, state, mtime)
                    if self.clock() < entry.fresh_until:
                        return False
        elif entry.state is not None and mtime is not None:
            # another process may have had the same page from the upstream since (``_confirm``)
            confirmed = self.store.confirmed_at(name)
            if confirmed is not None and confirmed > entry.state.checked:
                self._use(name, entry, replace(entry.state, checked=confirmed), mtime, reuse=True)
                if self.clock() < entry.fresh_until:
                    return False
        # asked first, the upstream is asked as the state on disk would ask it, not as one older held
        state = entry.state if header is None else None
        on_disk = state is not None or entry.page is not None or header is not None
        missing = None if on_disk else self.store.missing_since(name)
        if missing is not None and self.fresh(missing):
            # a 404 is kept like a page: not asked again within its TTL, in this process or the next
            entry.missing_until = missing + self.ttl
            return False
        # asked with the digest of what the page held was read from: the same body is not parsed
        held = state or header
        known = held.digest if by_digest and held is not None else None
        # a page held is served stale once the upstream is slow to answer for it (``holding``)
        try:
            with holding() if on_disk else contextlib.nullcontext():
                fetched = self._fetch(name, state, known)
        except NotFound as exc:
            self._not_found(name, entry, exc)
            return False
        except UpstreamError as exc:
            if header is not None:  # the state on disk is served stale: read whole now
                state = self.store.read_page(name)
                if state is not None:
                    self._use(name, entry, state, mtime)
            self._unanswered(name, entry, exc, missing)
            return False
        self._said_down.discard(name)  # answered: said again if it goes down again
        now = self.clock()
        if header is not None and fetched.page is None:
            # the body the state on disk was read from, given again
            return self._given_again(name, entry, fetched, mtime, need_page=need_page)
        if header is not None and fetched.page is not None and _same(fetched, header):
            # the answer the state on disk was read from: it stands, and the page just read is its
            state = PageState(page=fetched.page, checked=now, digest=fetched.digest)
            self._use(name, entry, state, mtime)
            self._use(name, entry, state, self._confirm(name, entry, now), reuse=True)
            return False
        if state is not None and (fetched.page is None or _same(fetched, state)):
            # a 304, or the same page again: the page we hold is still right, and so is its state
            self._use(name, entry, replace(state, checked=now), self._confirm(name, entry, now), reuse=True)
            return False
        # a 304 to a request without validators failed in _fetch
        assert fetched.page is not None
        state = PageState(
            page=fetched.page,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            checked=now,
            digest=fetched.digest,
        )
        if mtime is None:
            self._take_new(name, entry, state)
        else:
            self._use(name, entry, state, self._save(state))
        return False

    def _take_new(self, name: NormalizedName, entry: _Entry, state: PageState) -> None:
        """Hold the page of a project new to the nest. Its state is written once its answer is
        sent, the client's wait spared (``later``), whatever its size (15,000 files took 16-23 ms);
        the folder of its files' locks is made then too, before the client asks for a file. A
        large page made in the background is written at once: a request that waited for it finds
        it on disk, and does not make it again."""
        if state.page.files:
            later.defer(functools.partial(self._make_lock_folder, name))
        if later.deferring(len(state.page.files)) or (later.active() and not background()):
            # no state on disk that another thread could take in meanwhile
            self._use(name, entry, state, None)
            entry.unsaved = state
            later.defer(functools.partial(self._settle, entry))
        else:
            self._use(name, entry, state, self._save(state))

    def settle(self, name: NormalizedName) -> None:
        """Write now the state of the page of ``name`` fetched just now, if its writing was left
        for after the answer of the request that fetched it (``later``) and is not done yet:
        another request's rendering of the page is saved under that state."""
        entry = self._entries.get(name)
        if entry is not None:
            self._settle(entry)  # also waits for a write under way in another thread

    def held(self, name: NormalizedName) -> ProjectPage | None:
        """The page of ``name`` in memory, if any (asks nobody, reads nothing)."""
        entry = self._entries.get(name)
        return None if entry is None else entry.page

    def _settle(self, entry: _Entry) -> None:
        """Write the unsaved state of ``entry``, once whoever asks first, and note its file as the
        entry's unless the entry moved on meanwhile (``_catch_up`` takes it in then)."""
        with entry.saving:
            state, entry.unsaved = entry.unsaved, None
            if state is None:
                return  # written by the other
            stamp = self._save(state)
            with self._guard:
                if entry.state is state and entry.mtime is None:
                    entry.mtime = stamp

    def _given_again(
        self,
        name: NormalizedName,
        entry: _Entry,
        fetched: Fetched,
        mtime: PageStamp | None,
        *,
        need_page: bool,
    ) -> bool:
        """The upstream gave again the body the state on disk (``mtime``) was read from: that
        state stands, confirmed on disk, and is read unless the page is not ``need_page``-ed."""
        now = self.clock()
        if not need_page and self.store.page_stamp(name) == mtime:
            self._note_confirmed(name, now)
            return True
        state = self.store.read_page(name)
        if state is None or not _same(fetched, state):
            # replaced or damaged meanwhile: the upstream is asked again, for a page to parse
            return self._revalidate(name, entry, need_page=need_page, by_digest=False)
        state = replace(state, checked=now)
        self._use(name, entry, state, mtime)
        self._use(name, entry, state, self._confirm(name, entry, now), reuse=True)
        return False

    def _not_found(self, name: NormalizedName, entry: _Entry, exc: NotFound) -> None:
        """The upstream has no page of ``name`` (or, offline, nothing was asked): its cached files
        are served, if any; else the 404 is kept, or the error raised."""
        offline = isinstance(exc, NotCached)  # the upstream said nothing: nothing to keep
        self.failing.pop(name, None)
        if not offline:
            self._said_down.discard(name)
            self._note_missing(name)
        kept = self.store.kept_files(name)
        if kept:
            logger.info("upstream has no project %r; serving its %d cached files", name, len(kept))
            state = PageState(page=ProjectPage.build(name, ()), checked=self.clock())
            # the state on disk is not what is served: _catch_up must not take it in
            self._use(name, entry, state, self.store.page_stamp(name), kept=kept)
            return
        if offline:
            raise exc
        entry.page = entry.state = None
        entry.missing_until = self.clock() + min(self.ttl, 60.0)
        with self._guard:
            self._loaded_files -= self._loaded.pop(name, 0)
            self._ahead_files -= self._ahead.pop(name, 0)

    def _unanswered(
        self, name: NormalizedName, entry: _Entry, exc: UpstreamError, missing: float | None
    ) -> None:
        """The upstream failed: the page held (or made of the cached files) is served stale, a
        404 it gave stays a 404; else the failure is raised, in a line that says what is missing."""
        # an upstream that cannot be reached is said once, by its circuit, not once per page; a
        # page that failed alone (its host answered meanwhile: the circuit stayed closed) is said
        down = exc.unreachable is not None and self.circuit is not None and self.circuit.reason is not None
        if entry.page is None:
            kept = self.store.kept_files(name)
            if not kept:
                if missing is not None:
                    # what the upstream said last stands while it cannot say more: still a 404
                    logger.debug("%s; %r is still missing, as the upstream said", exc, name)
                    entry.missing_until = self.clock() + min(self.ttl, RETRY_AFTER)
                    return
                if self.offline:
                    raise NotCached(
                        f"the cache has nothing for {name!r} and nestegg is offline: no upstream is asked"
                    ) from None
                if down and self.circuit is not None and exc.unreachable is not None:
                    self.circuit.missed(name)
                    # a 404, as offline: pip retries a 502 six times with back-off and uv stops at
                    # it, where a 404 lets both go on to their other indexes at once
                    raise NotCached(
                        f"the cache has nothing for {name!r} and upstream {self.circuit.upstream} "
                        f"is unreachable ({exc.unreachable})"
                    ) from None
                raise exc
            entry.page = ProjectPage.build(name, kept)
            entry.reloadable = False
        if down and self.circuit is not None:
            self.circuit.served_stale()
            logger.debug("%s; serving the cached page of %r", exc, name)
        elif not self.offline:
            logger.warning("%s; serving the cached page of %r", exc, name)
            self.failing[name] = (str(exc), exc.status)
        entry.fresh_until = self.clock() + min(self.ttl, RETRY_AFTER)

    def _fetch(self, name: NormalizedName, state: PageState | None, digest: str | None = None) -> Fetched:
        """The upstream's answer for ``name``, asked with the validators of ``state`` and the
        ``digest`` of what the page held was read from; any failure to get or read it is an
        UpstreamError (or NotFound), so that a page that cannot be read never replaces the one held."""
        etag = state.etag if state else None
        last_modified = state.last_modified if state else None
        try:
            fetched = self.fetcher.project(name, etag=etag, last_modified=last_modified, digest=digest)
        except NesteggError:
            raise
        except Exception as exc:  # a page no parser foresaw: served stale like any upstream failure
            logger.debug("cannot read the upstream page of %r", name, exc_info=True)
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            raise UpstreamError(f"cannot read the upstream page of {name!r} ({reason})") from None
        if fetched.page is None and fetched.digest is None and not (etag or last_modified):
            # "not modified" since a version it was never told of: there is no page to keep
            raise UpstreamError(
                f"upstream answered 304 Not Modified for the page of {name!r}, asked without a validator"
            )
        return fetched

    def _note_confirmed(self, name: NormalizedName, checked: float) -> None:
        try:
            self.store.confirm(name, checked)
        except (OSError, UnsafePath) as exc:
            logger.warning("cannot keep that the page of %r is unchanged: %s", name, exc)

    def _note_missing(self, name: NormalizedName) -> None:
        try:
            self.store.note_missing(name, self.clock())
            self._missing_notes += 1
            if self._missing_notes % TRIM_MISSING_EVERY == 0:
                self.store.trim_missing(keep=MAX_MISSING_NOTES, expired_before=self.clock() - self.ttl)
        except (OSError, UnsafePath) as exc:
            logger.warning("cannot keep that the upstream has no %r: %s", name, exc)

    def _make_lock_folder(self, name: NormalizedName) -> None:
        try:
            self.store.make_lock_folder(name)
        except (OSError, UnsafePath) as exc:  # a download makes it, or says why it cannot
            logger.debug("cannot make the folder of %r's locks yet: %s", name, exc)

    def _save(self, state: PageState) -> PageStamp | None:
        """Write the state; its file's stamp, or None when it could not be written."""
        try:
            if self.store.missing_since(state.page.name) is not None:
                self.store.forget_missing(state.page.name)
            return self.store.write_page(state)
        except (OSError, UnsafePath) as exc:
            logger.warning("cannot write cache state of %r: %s", state.page.name, exc)
            return None

    def _confirm(self, name: NormalizedName, entry: _Entry, checked: float) -> PageStamp | None:
        """Keep that the upstream gave the state held again at ``checked``; the stamp of its file.

        The state file is not written again (a note beside it says when, ``CacheStore.confirm``):
        a page rendered from it stays valid, and a run after the TTL whose pages did not change
        renders none of them again. A state not on disk as held is written whole.
        """
        assert entry.state is not None
        if entry.mtime is None or entry.mtime != self.store.page_stamp(name):
            return self._save(replace(entry.state, checked=checked))
        self._note_confirmed(name, checked)
        return entry.mtime

    def _use(
        self,
        name: NormalizedName,
        entry: _Entry,
        state: PageState,
        mtime: PageStamp | None,
        *,
        kept: list[DistFile] | None = None,
        reuse: bool = False,
    ) -> None:
        if not (reuse and entry.page is not None):
            # both before the records are read: a file cached meanwhile is seen next time
            stamp, entry.kept = self._files_stamp(name), self._kept_names(name)
            files = self.store.kept_files(name) if kept is None else kept
            entry.page = self._with_kept(state.page, files, only_kept=self.offline)
            entry.files_stamp = stamp  # after the page, as in _catch_up
        entry.state, entry.mtime = state, mtime
        entry.reloadable = kept is None
        entry.missing_until = 0.0
        if self.failing:  # a state had from the upstream (or another process that had it)
            self.failing.pop(name, None)
        fresh = state.checked + self.ttl
        entry.fresh_until = 0.0 if state.checked < self._refresh_before else fresh

    @staticmethod
    def _with_kept(page: ProjectPage, kept: list[DistFile], *, only_kept: bool = False) -> ProjectPage:
        """Upstream's files, with what we learned of cached ones, then cached files it dropped (and
        their versions, if it lists its own). With ``only_kept`` (offline), the cached files alone,
        with their versions: an installer picks only what can be served."""
        if not kept:
            return ProjectPage.build(page.name, ()) if only_kept else page
        records = {dist.filename: dist for dist in kept}
        files = []
        for dist in page.files:
            record = records.pop(dist.filename, None)
            if record is not None:
                # the upstream's current yank state wins; the rest we verified ourselves
                files.append(record.with_changes(yanked=dist.yanked, url=dist.url))
            elif not only_kept:
                files.append(dist)
        dropped = list(records.values())
        if only_kept:
            return ProjectPage.build(page.name, files + dropped)
        return ProjectPage.build(page.name, files + dropped, versions_with(page.index_versions, dropped))


def _weight(files: int) -> int:
    """What a page counts against ``max_files``: its files, and at least one (an empty page too)."""
    return max(files, 1)


def _same(fetched: Fetched, state: PageState | StateHeader) -> bool:
    """Whether the upstream's answer is the page of ``state``, with the same validators: the
    same digest of what it was read from when both have one, else the same page."""
    if fetched.etag != state.etag or fetched.last_modified != state.last_modified:
        return False
    if fetched.digest is not None and state.digest is not None:
        return fetched.digest == state.digest
    return isinstance(state, PageState) and fetched.page == state.page


def _asked_first(header: StateHeader | None, fresh: Callable[[float], bool]) -> bool:
    """Whether the upstream is asked for a page before its state on disk is read whole: the state
    is past its TTL, and the answer, if it is the same, will say so by its digest alone (without
    validators, an upstream answers whole; with them, a 304 would need the state's files)."""
    return (
        header is not None
        and header.digest is not None
        and not (header.etag or header.last_modified)
        and not fresh(header.checked)
    )
