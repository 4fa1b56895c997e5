"""One index made of the private store and the mirror, with the rules that keep them apart.

A private name is answered from the private store only; the upstream is never asked for it. A
merged name (a ``private: no`` source build) lists private files in front of upstream's. A name
an ``upstreams`` route matches is its index's alone (:mod:`.routes`): served by that index's own
repository, the default upstream never asked. Every other name is the mirror's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import operator
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

from packaging.utils import NormalizedName

from nestegg_core.config.config import Config, Upstream
from nestegg_core.config.sizes import format_size
from nestegg_core.errors import (
    ArchiveError,
    Busy,
    InsufficientStorage,
    IntegrityError,
    NesteggError,
    NotFound,
    UnsafePath,
    UpstreamDown,
    UpstreamError,
    UpstreamTimeout,
    disk_full,
)
from nestegg_core.simple.clients import (
    ClientProfile,
    for_client,
    for_pip,
    marker_environment,
    pip_lists_metadata,
    profile_from_user_agent,
)
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.models import NO_HASHES, DistFile, ProjectPage, is_dist_filename, mismatch
from nestegg_core.simple.render import (
    MetadataFor,
    is_json,
    project_pieces,
    quote_filename,
    rebased,
    rebased_length,
    render_index,
    render_project,
    url_growth,
)
from nestegg_core.storage import store as _store
from nestegg_core.storage.counters import Counters
from nestegg_core.storage.fs import open_read, read_at_most, write_atomic
from nestegg_core.storage.generation import RECHECK
from nestegg_core.storage.pagefiles import (
    GZIP,
    PageFile,
    PageStream,
    PendingPage,
    RenderedPages,
    compressor,
    disk_token,
    etag,
    rebased_etag,
)
from nestegg_core.storage.private import PrivateStore
from nestegg_core.storage.store import (
    CHANGED,
    CHANGED_METADATA,
    CacheStore,
    PageStamp,
    check_filename,
    check_note,
)
from nestegg_core.storage.usage import SizeLimit, mark_used
from nestegg_core.urls import mask_url, without_credentials
from nestegg_core.waits import blocking

from . import ahead as ahead_module
from . import later
from .ahead import PageRequest, PagesAhead, checked_together
from .circuit import CircuitFetcher, Circuits
from .counting import CountingFetcher
from .downloads import LOCK_WAIT, Download, Downloads
from .guesses import Guesses
from .mirror import MirrorIndex
from .ranges import Ranges, RangesRefused
from .refresh import Refresher
from .routes import Routes
from .upstream import (
    Fetcher,
    HttpFetcher,
    OfflineFetcher,
    background,
    in_background,
    new_via_token,
    pause_in_background,
)

logger = logging.getLogger(__name__)

#: bytes of rendered pages kept; a rendered page also lives no longer than its page in memory
_RENDER_CACHE_BYTES = 4 * 1024 * 1024
#: saved renderings of up to ``_WARM_PAGE`` bytes are held in memory, ``_WARM_BYTES`` in all: a
#: small warm page is answered without opening its file. A larger one is sent from its file, a
#: block at a time: read whole, sixteen threads sending the largest pages at once (as uv asks for
#: them) held each page twice (read, and copied into waitress's buffer), and the process kept that
#: memory afterwards
_WARM_PAGE = 64 * 1024
_WARM_BYTES = 4 * 1024 * 1024
#: the renderings answered for new base URLs that wait for a quiet mirror to be kept; past it,
#: those answered longest ago are not (each is made again while asked for)
_MAX_UNKEPT = 1024
#: what a rendering is kept in memory under: name, content type, client, gzip, base URL (and "!"
#: when the metadata of cached wheels is left out)
_RenderKey = tuple[str, str, "ClientProfile | None", bool, str]
#: pages whose state file is larger (about 700 files) are made one at a time: uv asks for every
#: page at once, and a page's model (about 650 bytes a file) is held while it is rendered
_LARGE_STATE = 256 * 1024
#: how long such a page waits for another to be made, before it is made beside it: one that waits
#: on a slow upstream (its TTL passed) holds the others back no longer than this
_LARGE_WAIT = 2.0
#: names whose disk token is remembered (about 200 bytes each); past it, all are read again
_MAX_TOKENS = 10_000
#: metadata files whose note of their check is remembered (about 250 bytes each), likewise
_MAX_CHECKED = 10_000
#: seconds after its change settles that a page is made again in the background
_REFRESH_AFTER = 0.1
#: seconds without a request that the background waits for before it makes a page: the pages of
#: a running install are made by its requests, the background takes the quiet after it (at once
#: when the server can tell that its clients are gone: ``Repository.clients_gone``)
_IDLE = 1.0
#: seconds without a request after which a mirror loads its upstream client's CA bundle, once, as
#: it starts (``Repository.prepare``): its 20-70 ms of CPU, on the other core, slowed the first
#: pages of a fresh process asked at once (a warm tox run's) by a few milliseconds each
PREPARE_QUIET = 0.05
#: wheels being downloaded whose requirements are waited for (``Repository.ahead_of``)
_MAX_AFTER_DOWNLOAD = 64
#: seconds after a page sent from its file that the download of the wheel pip is guessed to take
#: starts (``Repository.guess_file``): its thread started in the request's took pages made ahead
#: 1.6 ms longer (median), and pip reads a page for longer than this
GUESS_BEFORE_ANSWER = 0.002
#: the largest page whose guess is made before its answer (the pick takes 0.5-0.7 us a file);
#: a larger one's after it
GUESS_NOW_FILES = 1_000
#: seconds the store's times of its pages' checks are used before it is scanned again
#: (``Repository._checked_with``): a run asks its pages past their TTL within them
CHECKED_TIMES_FOR = 60.0
#: past this many pages in the cache, which were asked together is not guessed: the scan's time
#: and memory (about 150 bytes a page) grow with it, and a shared cache mixes many clients' runs
MAX_CHECKED_TIMES = 20_000
#: bytes of a metadata file read for its requirements: they come before its description
_AHEAD_METADATA = 1024 * 1024


@dataclass(frozen=True)
class Rendered:
    """A page rendered for one content type, with its strong ETag.

    The body is ``body``, or, for a page served from its rendered file, ``file``'s bytes, or, for
    one sent as it is made, ``stream``'s; gzip encoded if ``gzip``.
    """

    page: ProjectPage | None
    body: bytes
    etag: str
    file: PageFile | None = None
    gzip: bool = False
    stream: PageStream | None = None

    def close(self) -> None:
        """Close the file the body is read from, if any: for a caller that does not send it."""
        if self.stream is not None:
            self.stream.close()
        elif self.file is not None:
            self.file.close()


@dataclass
class _Listing:
    """The names of the root index as the stores held them, and the renderings made of them."""

    #: the stores' generations and the mtimes of their folders when they were scanned
    seen: tuple[bytes | None, ...]
    folders: tuple[int, ...]
    names: list[str]
    #: those of them that are private or merged, once asked for (``Repository._private_of``)
    private: frozenset[str] | None = None
    #: by (JSON, private names left out)
    renderings: dict[tuple[bool, bool], Rendered] = field(default_factory=dict)
    #: until when it is trusted while the generations hold
    until: float = 0.0


@dataclass(frozen=True)
class _Cached:
    """A rendered page as the cache keeps it: not holding its page, which the mirror may drop."""

    page: weakref.ref[ProjectPage]
    body: bytes
    etag: str


class Repository:
    """The index the WSGI app serves."""

    #: when each page was last checked, the earliest first, as the store last said, and when it said so
    _checked_times: tuple[float, list[tuple[NormalizedName, float]]] | None = None
    #: whether a client's request is still served, its answer still being sent, if the server can
    #: tell (waitress, see ``serve_clients``): the background waits for that too
    clients_sending: Callable[[], bool] | None = None

    def __init__(
        self, config: Config, *, fetcher: Fetcher | None = None, routes: Routes[Repository] | None = None
    ) -> None:
        self.config = config
        #: the mirror's name in the Via header of its upstream requests: a request that carries it
        #: came round a loop (``NesteggApp`` refuses it)
        self.via_token = new_via_token()
        #: the fetcher this repository made, whose connections it closes (:meth:`close`)
        self._own_fetcher: HttpFetcher | None = None
        if fetcher is None:
            fetcher = (
                OfflineFetcher()
                if config.offline
                else HttpFetcher(
                    config.upstream_url,
                    timeout=config.timeout,
                    connect_timeout=config.connect_timeout,
                    max_page_size=config.max_page_size,
                    page_deadline=config.page_deadline,
                    via_token=self.via_token,
                )
            )
            self._own_fetcher = fetcher if isinstance(fetcher, HttpFetcher) else None
        #: the upstreams that could not be reached, not waited for again at once
        self.circuits = Circuits(config.upstream_url)
        if not config.offline:
            fetcher = CircuitFetcher(fetcher, self.circuits)
        #: counts of every process of the nest (``/metrics``)
        self.counters = Counters(config.nestegg_dir)
        fetcher = CountingFetcher(fetcher, self.counters)
        self.fetcher = fetcher
        self.store = CacheStore(config.nestegg_dir, config.upstream_url)
        self.mirror = MirrorIndex(
            self.store, fetcher, ttl=config.ttl, offline=config.offline, circuit=self.circuits.index
        )
        #: the mirror's pages as last rendered, served while nothing they were made from changes
        self.pages = RenderedPages(self.store.rendered, root=self.store.root)
        self._pages_dir = str(self.store.page_path(NormalizedName("x")).parent)
        self._files_dir = str(self.store.files)
        self._source_builds = frozenset(build.name for build in config.source_builds)
        reserved = list(config.private_names)
        reserved += [b.name for b in config.source_builds if b.private]
        merged = [b.name for b in config.source_builds if not b.private]
        self.private = PrivateStore(config.nestegg_dir / "private", reserved=reserved, merged=merged)
        #: prunes in the background when a new file takes the cache over ``max_cache_size``
        self.size_limit = (
            SizeLimit(config.nestegg_dir, config.max_cache_size) if config.max_cache_size else None
        )
        self.downloads = Downloads(
            self.store,
            fetcher,
            on_cached=self._cached,
            max_file_size=config.max_file_size,
        )
        self.downloads.current = self._current
        #: the files pip was guessed to take after its pages, and how the guesses fared
        self.guesses = Guesses()
        #: ranges of files not cached, from their download or passed through from the upstream
        self.ranges = Ranges(fetcher, self.downloads)
        #: called with a name before its private page is read (on-demand source builds)
        self.before_private: Callable[[NormalizedName], None] | None = None
        #: the URL clients reach this index at, once known (``Mirror.bind`` sets it); source builds
        #: point their build environment at it
        self.index_url: str | None = None
        #: renderings that have no file, by name, content type, client and encoding
        self._rendered: OrderedDict[tuple[str, str, ClientProfile | None, bool, str], _Cached] = OrderedDict()
        self._rendered_bytes = 0
        #: saved renderings read back, by name and kind: (token, checked, ETag, body)
        self._warm: OrderedDict[tuple[str, str], tuple[str, float, str, bytes]] = OrderedDict()
        self._warm_bytes = 0
        #: the renderings answered for a new base URL and not kept yet (:meth:`_rebased_now`), by
        #: page and kind: written once the mirror is quiet (:meth:`_refresh`), not as an install asks
        self._unkept: OrderedDict[tuple[NormalizedName, str], Callable[[], None]] = OrderedDict()
        self._render_lock, self._large_lock = threading.Lock(), threading.Lock()
        #: pages being made now (by requests; the background's own is done when it looks), and
        #: when the last page or file was asked for
        self._making, self._asked = 0, 0.0
        #: whether the server's clients are gone, if it can tell (waitress): the installers closed
        #: the connections they kept over their install (pip and uv do as they exit), and no other
        #: is open. Then the install is over, and the background need not wait for a quiet second
        self.clients_gone: Callable[[], bool] | None = None
        #: makes again, in the background, the renderings a cached file made stale; and writes,
        #: once the mirror is quiet, those answered before they were kept (``keeper``)
        self.refresher, self.keeper = (
            Refresher(self._refresh, delay=lambda: _store.SETTLE_NS / 1e9 + _REFRESH_AFTER, busy=self._busy),
            Refresher(self._keep_unkept, delay=lambda: 0.0, busy=self._busy),
        )
        #: the lock of each metadata file being fetched, with how many threads want it: gone when
        #: none does, so that files asked once leave nothing behind
        self._metadata_locks: dict[str, tuple[threading.Lock, int]] = {}
        self._metadata_guard = threading.Lock()
        #: the notes of metadata checks read or written (``_checked_metadata``), by name and file
        self._checked: dict[tuple[str, str], bytes] = {}
        #: disk tokens by name, with the generations they were read in and until when they hold
        self._tokens: dict[tuple[str, bool], tuple[tuple[bytes | None, bytes | None], str, float]] = {}
        #: the root index, and the lock of its scans and renderings
        self._index: _Listing | None = None
        self._index_lock = threading.Lock()
        #: fetches the pages of the projects a wheel requires ahead of the client's requests; one
        #: for all routes (a wheel of one index may require projects of another)
        ahead = config.pages_ahead and not config.offline
        self.ahead: PagesAhead | None = PagesAhead(self._needs_page, self._page_ahead) if ahead else None
        self._own_ahead = self.ahead  # what close stops: a route's is its root's
        #: the wheels being downloaded whose requirements are read once they are cached, with the
        #: environment and page request of the client getting them (``ahead_of``)
        self._after_download: OrderedDict[tuple[str, str], tuple[Mapping[str, str], PageRequest | None]] = (
            OrderedDict()
        )
        self._after_lock = threading.Lock()
        #: the indexes of ``upstreams``, each the only one that serves the names it matches (a
        #: mounted upstream is given its mirror's, so that a name has one home whatever the URL)
        self.routes: Routes[Repository] = (
            routes if routes is not None else Routes(config.upstreams, self._route)
        )

    def _route(self, upstream: Upstream) -> Repository:
        """The mirror of a routed index: its own cache, TTL, circuit and downloads; this one's
        private store (a private name is private everywhere) and source builds."""
        routed = Repository(self.config.with_changes(index_url=upstream.url, upstreams=()))
        routed.private = self.private
        routed.downloads.slots = self.downloads.slots  # one bound on the downloads of a process
        routed.ahead = self.ahead  # whose pages it makes through this one's routes
        routed.before_private = lambda name: self.before_private(name) if self.before_private else None
        return routed

    def serving(self, name: NormalizedName) -> Repository:
        """The repository that serves ``name``: a route's if one matches it, else this one."""
        return self.routes.serving(name) or self

    def index_of(self, name: NormalizedName) -> str:
        """The index ``name`` comes from (credentials left out), for people: "private" for the
        private store's names."""
        if self.private.is_private(name):
            return "private"
        return without_credentials(self.serving(name).config.upstream_url)

    # pages -------------------------------------------------------------------------------

    def project(self, name: NormalizedName) -> ProjectPage:
        """The page clients see for ``name``; :class:`NotFound` if nobody has it."""
        routed = self.routes.serving(name)
        if routed is not None:  # the private store first: the route's repository asks it too
            return routed.project(name)
        if self.before_private is not None and self._is_source_build(name):
            self.before_private(name)
        if self.private.is_private(name):
            page = self.private.page(name)
            if page is None:
                raise NotFound(f"private project {name!r} has no files yet")
            return page
        if self.private.is_merged(name):
            private = self.private.page(name)
            try:
                upstream = self.mirror.page(name)
            except (NotFound, UpstreamError) as exc:
                if private is None:
                    raise
                logger.debug("serving only the private files of %r: %s", name, exc)
                return private
            return upstream if private is None else upstream.merged(private.files)
        return self.mirror.page(name)

    def rendered(
        self,
        name: NormalizedName,
        content_type: str,
        client: ClientProfile | None = None,
        *,
        gzip: bool = False,
        base: str = "",
        cached_metadata: bool = True,
    ) -> Rendered:
        """The page of ``name`` as bytes of ``content_type``, rendered once per change.

        With ``client``, only the files that may fit that installer are listed. With ``gzip``, the
        page comes gzip encoded. Its file URLs start with ``base`` (the URL of the mirror's root
        the client reached), else they are relative. Without ``cached_metadata``, the wheels
        already cached are listed without their PEP 658 metadata (``lists_cached_metadata``).
        """
        routed = self.routes.serving(name)
        if routed is not None:
            return routed.rendered(
                name, content_type, client, gzip=gzip, base=base, cached_metadata=cached_metadata
            )
        self._asked = time.monotonic()
        # before the wait: the next page made ahead must not drop this one once it is made
        self.mirror.asked(name)
        if self.ahead is not None:  # a page being made ahead is this one's answer
            self.ahead.wait(name, self.config.page_deadline)
        self.downloads.settle(name)  # a file an installer has whole is listed as it was learned
        return self._rendered_page(name, content_type, client, gzip=gzip, base=base, meta=cached_metadata)

    def _rendered_page(
        self,
        name: NormalizedName,
        content_type: str,
        client: ClientProfile | None,
        *,
        gzip: bool,
        base: str,
        meta: bool = True,
    ) -> Rendered:
        """:meth:`rendered`, for a request or the background."""
        if self.mirror.failing or self.circuits.index.reason is not None:
            # the upstream cannot give some page: this one's renderings may list what cannot come
            down = self._rendered_down(name, content_type, client, gzip=gzip, base=base, meta=meta)
            if down is not None:
                return down
        token = self._known_token(name, meta)
        kind = _kind(content_type, client, base, meta)
        wanted = kind + GZIP if gzip else kind
        #: the page the upstream's answer made, if :meth:`MirrorIndex.reconfirm` asked it
        page: ProjectPage | None = None
        if token is not None or self._plain_mirror(name):  # no token yet: the page is new
            self.refresher.served(name, (content_type, client, gzip, base, meta))
        if token is not None:
            warm = self._read_rendered(name, wanted, token)
            if warm is None and base:
                warm = self._rebased(name, kind, content_type, token, base, gzip=gzip, meta=meta)
            if warm is not None:
                return warm
            self._together(name, PageRequest(content_type=content_type, client=client, gzip=gzip, base=base,
                                              cached_metadata=meta))  # fmt: skip
            # past its TTL, a page the upstream gives again unchanged is served as rendered,
            # its state neither parsed again from the upstream's answer nor read from disk
            answered = self.mirror.reconfirm(name)
            if answered is True and self._disk_token(name, meta) == token:
                warm = self._read_rendered(name, wanted, token, confirmed=True)
                if warm is not None:
                    return warm
            elif isinstance(answered, ProjectPage):
                page = answered
            stamp = self.store.page_stamp(name)
            if (
                stamp is not None
                and stamp[2] > _LARGE_STATE
                and self._large_lock.acquire(timeout=_LARGE_WAIT)
            ):
                try:
                    # another thread may have made it while this one waited
                    token = self._disk_token(name, meta)
                    warm = None if token is None else self._read_rendered(name, wanted, token)
                    if warm is not None:
                        return warm
                    return self._render(
                        name, content_type, client, token, gzip=gzip, base=base, meta=meta, page=page
                    )
                finally:
                    self._large_lock.release()
        return self._render(name, content_type, client, token, gzip=gzip, base=base, meta=meta, page=page)

    def _together(self, name: NormalizedName, request: PageRequest) -> None:
        """A client's page of ``name`` is past its TTL, the upstream about to be asked for it: so
        are, ahead of their requests, the pages checked with it last time (a run asks again what
        it asked then), made as ``request`` asks (``PagesAhead.together``). Never waits."""
        if self.ahead is None or background() or self.mirror.ttl < ahead_module.TOGETHER_MIN_TTL:
            return
        header = self.store.read_page_header(name)
        if header is None or self.mirror.fresh(header.checked):
            return
        names = functools.partial(self._checked_with, name, header.checked)
        self.ahead.together(("together", name, header.checked), names, request=request)

    def _checked_with(self, name: NormalizedName, checked: float) -> list[NormalizedName]:
        """The pages checked in the same run as that of ``name`` at ``checked``: the store's
        times, looked up again once ``CHECKED_TIMES_FOR`` seconds old (a scan of its pages); none
        in a cache of more than ``MAX_CHECKED_TIMES`` pages."""
        now = time.monotonic()
        known = self._checked_times
        if known is None or now - known[0] > CHECKED_TIMES_FOR:
            times = self.store.checked_times(MAX_CHECKED_TIMES) or {}
            known = self._checked_times = (now, sorted(times.items(), key=operator.itemgetter(1)))
        return checked_together(known[1], checked, but=name, gap=ahead_module.TOGETHER_GAP)

    def _render(
        self,
        name: NormalizedName,
        content_type: str,
        client: ClientProfile | None,
        token: str | None,
        *,
        gzip: bool,
        base: str,
        meta: bool,
        page: ProjectPage | None = None,
    ) -> Rendered:
        """Make the rendering :meth:`rendered` did not find; ``token`` is the disk's before, and
        ``page`` the project's page if it was just had from the upstream."""
        with self._render_lock:
            self._making += 1
        try:
            kind = _kind(content_type, client, base, meta)
            wanted = kind + GZIP if gzip else kind
            if page is None:
                page = self.project(name)
            if self.mirror.failing or self.circuits.index.reason is not None:
                # the upstream failed to give the page just now
                down = self._rendered_down(
                    name, content_type, client, gzip=gzip, base=base, meta=meta, page=page
                )
                if down is not None:
                    return down
            pause_in_background()  # a page made ahead: rendered once no client's request is worked on
            if (
                token is not None
                and self.mirror.checked(name, page) is not None
                and self._disk_token(name, meta) == token
            ):
                # the page of the state the rendering was made from, just given again by the
                # upstream (``MirrorIndex._confirm``) or kept while it fails: what is saved stands
                warm = self._read_rendered(name, wanted, token, confirmed=True)
                if warm is not None:
                    return warm
            key = (name, content_type, client, gzip, base + ("" if meta else "!"))
            cached = self._rendered.get(key)
            # held while no rendering can be saved (a change settling, a private name); once the
            # disk has a token, made again and saved, or a new process would make it once more
            if cached is not None and cached.page() is page and token is None:
                return Rendered(page, cached.body, cached.etag, gzip=gzip)
            shown = _listed(page, client, meta)
            metadata_for = self._metadata_for(name, shown, meta)
            url_for = _file_urls(base, name)
            if token is None and later.deferring(len(page.files)):
                # a page fetched just now: answered from memory, its rendering kept after the answer
                plain = render_project(shown, content_type, url_for, metadata_for)
                write = functools.partial(
                    self._write_later, name, kind, page, plain, gzip=gzip, meta=meta, base=base
                )
                later.defer(write)
                return self._in_memory(key, page, plain, gzip=gzip)
            pieces = project_pieces(shown, content_type, url_for, metadata_for)
            if token is None and later.active() and not background():
                # a large one: answered from the file it is rendered into, kept after the answer
                pending = self.pages.pending(name, kind, pieces, gzip=gzip, base=base)
                if pending is not None:
                    later.defer(functools.partial(self._keep_later, name, page, pending, meta=meta))
                    return Rendered(page, b"", pending.file.etag, pending.file, gzip)
                pieces = project_pieces(shown, content_type, url_for, metadata_for)
            saved = self._write_rendered(name, kind, token, page, pieces, gzip=gzip, meta=meta, base=base)
            if saved is not None:
                served = self._from_file(name, wanted, saved)
                if served is not None:
                    return Rendered(page, served.body, served.etag, served.file, served.gzip)
            body = render_project(shown, content_type, url_for, metadata_for)
            return self._in_memory(key, page, body, gzip=gzip)
        finally:
            with self._render_lock:
                self._making -= 1

    def _rendered_down(
        self,
        name: NormalizedName,
        content_type: str,
        client: ClientProfile | None,
        *,
        gzip: bool,
        base: str,
        meta: bool,
        page: ProjectPage | None = None,
    ) -> Rendered | None:
        """The page of ``name`` while the upstream cannot give it (:meth:`MirrorIndex.down`): its
        cached files alone (and a merged name's private ones), made for this request and never
        kept, so that no rendering of it outlives the outage, nor is one made while the upstream
        answers served in its place. None when the upstream gives the page (it is served as
        ever). ``page`` is the project's, if the caller has it."""
        if self.mirror.down(name) is None or self.private.is_private(name):
            return None
        circuit = self.circuits.index
        if circuit.reason is not None:
            # a page within its TTL asks no upstream: its probe starts here once due
            with contextlib.suppress(UpstreamDown):
                circuit.check()
        if page is None:
            page = self.project(name)  # asks the upstream again once its failure is RETRY_AFTER old
        reason = self.mirror.down(name)
        if reason is None:
            return None
        built: frozenset[str] = frozenset()
        if not self._plain_mirror(name):  # a merged source build: its built files can be served
            private = self.private.page(name)
            built = frozenset() if private is None else frozenset(d.filename for d in private.files)
        shown = _listed(self.mirror.cached_only(name, page, reason, also=built), client, meta)
        metadata_for = self._metadata_for(name, shown, meta)
        body = render_project(shown, content_type, _file_urls(base, name), metadata_for)
        if gzip:
            body = _gzipped(body)
        return Rendered(shown, body, etag(body), gzip=gzip)

    def _in_memory(self, key: _RenderKey, page: ProjectPage, body: bytes, *, gzip: bool) -> Rendered:
        """The answer of a rendering not read from its file, kept for the page's next requests."""
        if gzip:  # the same bytes as the rendering's file would hold: the same ETag in every process
            body = _gzipped(body)
        result = Rendered(page, body, etag(body), gzip=gzip)
        self._remember(key, _Cached(weakref.ref(page), body, result.etag))
        return result

    def _write_later(
        self,
        name: NormalizedName,
        kind: str,
        page: ProjectPage,
        body: bytes,
        *,
        gzip: bool,
        meta: bool,
        base: str,
    ) -> None:
        """Save the rendering of a page fetched just now, once its answer is sent (after its state),
        and hold it as a warm page is held."""
        self.mirror.settle(name)  # its state first, if another request fetched it and has not written it yet
        held = self.mirror.held(name)
        if held is not None and held is not page and held == page:
            page = held  # made again meanwhile (a request after this one's answer), the same
        saved = self._write_rendered(name, kind, None, page, [body], gzip=gzip, meta=meta, base=base)
        warm = None if saved is None else self._from_file(name, kind + GZIP if gzip else kind, saved)
        if warm is not None and warm.file is not None:
            warm.file.close()  # too large to hold: sent from its file when asked

    def _keep_later(
        self, name: NormalizedName, page: ProjectPage, pending: PendingPage, *, meta: bool
    ) -> None:
        """Keep the rendering of a page fetched just now that was answered from ``pending``, once
        the answer is sent, under the state it was made from (written first if need be); dropped
        if the disk holds another by then."""
        kept = False
        try:
            self.mirror.settle(name)
            held = self.mirror.held(name)
            if held is not None and held is not page and held == page:
                page = held  # made again meanwhile (a request after this one's answer), the same
            made_from = self._made_from(name, page, meta)
            kept = made_from is not None and pending.keep(*made_from)
        finally:
            if not kept:
                pending.drop()

    def _metadata_for(self, name: NormalizedName, page: ProjectPage, meta: bool) -> MetadataFor | None:
        """The PEP 658 metadata ``page`` lists of each file (None: each file's own). Every mirrored
        wheel not cached is offered with it: one the upstream offers none for is read from the wheel
        by ranges when asked (:meth:`open_metadata`), without a hash until the wheel is cached, so
        that resolvers never download a wheel to read it. (A cached wheel's record has its
        metadata, unless none could be read from it.) Without ``meta``, a page for pip: no
        metadata of a cached wheel nor of a small one (``pip_lists_metadata``). Worked out as
        the page is written, not by a copy of it: a page of 15,000 wheels is 15,000 new files."""
        lazy = not self.config.offline and any(_lazy_metadata(dist) for dist in page.files)
        if not lazy and (meta or not any(dist.core_metadata is not None for dist in page.files)):
            return None
        held = self._held(name, page)

        def listed(dist: DistFile) -> Mapping[str, str] | None:
            # asked for every file of every page rendered: the cheap tests first (on pip's pages,
            # its size rules out most wheels before a look at the name or the folder)
            value = dist.core_metadata
            ranged = value is None
            if not meta and not pip_lists_metadata(dist, ranged=ranged):
                return None
            if ranged:
                if not lazy or not _lazy_metadata(dist):
                    return None
                if not self._lazy(dist, cached=f"{dist.filename}.json" in held):
                    return None
                value = NO_HASHES
            if not meta and dist.filename in held and f"{dist.filename}.json" in held:
                return None
            return value

        return listed

    def _lazy(self, dist: DistFile, *, cached: bool) -> bool:
        """Whether nestegg reads the metadata of ``dist`` by ranges (see :func:`_lazy_metadata`);
        ``cached``: whether the file's record is in the store."""
        return (
            not cached
            and not self.config.offline
            and _lazy_metadata(dist)
            and is_dist_filename(dist.filename)  # no name of the store's own files
        )

    def _held(self, name: NormalizedName, page: ProjectPage) -> frozenset[str]:
        """The names in the folder of the cached files of ``name``, if ``page`` lists a wheel (none
        otherwise): one scan of the folder, where a look for each wheel's record cost a page of
        thousands of wheels as many stats."""
        if not any(dist.filename.endswith(".whl") for dist in page.files):
            return frozenset()
        try:
            return frozenset(os.listdir(f"{self._files_dir}/{name}"))
        except OSError:
            return frozenset()

    @contextlib.contextmanager
    def large_page(self, name: NormalizedName, *, wait: float) -> Iterator[None]:
        """Held while something is made of the page of ``name`` besides its rendering (the web
        UI's view of it), if the page is large: one large page at a time, as they are rendered.
        Waits up to ``wait`` seconds (a declared wait), then :class:`Busy`."""
        routed = self.routes.serving(name)
        if routed is not None:
            with routed.large_page(name, wait=wait):
                yield
            return
        stamp = self.store.page_stamp(name)
        if stamp is None or stamp[2] <= _LARGE_STATE:
            yield
            return
        with blocking():
            if not self._large_lock.acquire(timeout=wait):
                raise Busy(f"another large page is being made before {name!r}'s: try again in a moment")
        try:
            yield
        finally:
            self._large_lock.release()

    def _read_rendered(
        self, name: NormalizedName, kind: str, token: str, *, confirmed: bool = False
    ) -> Rendered | None:
        """The saved rendering for ``token`` if the TTL allows it (or the mirror has just
        ``confirmed`` its page): from memory, else from disk."""
        held = self._warm.get((name, kind))
        checked = None if held is None or held[0] != token else self._fresh(name, held[1], confirmed)
        if held is not None and checked is not None:
            with self._render_lock:
                if self._warm.get((name, kind)) is held:
                    self._warm[(name, kind)] = (held[0], checked, held[2], held[3])
                    self._warm.move_to_end((name, kind))
            return Rendered(None, held[3], held[2], gzip=kind.endswith(GZIP))
        found = self.pages.open(name, kind, token)
        if found is None:
            return None
        checked = self._fresh(name, found.checked, confirmed)
        if checked is None:
            found.close()  # the TTL has passed: the upstream is asked
            return None
        return self._from_file(name, kind, replace(found, checked=checked))

    def _rebased(
        self,
        name: NormalizedName,
        kind: str,
        content_type: str,
        token: str,
        base: str,
        *,
        gzip: bool,
        meta: bool,
    ) -> Rendered | None:
        """The page of ``kind`` made from a rendering of the same page, state and client saved for
        another base URL (a mirror started on a new port, or reached by another name), its file
        URLs' base replaced a block at a time: none of the page's model nor its state is read (a
        new port's first request for pydantic-core's page took 76 ms and 12 MB, parsing its state
        and rendering it). None when no such rendering is saved, within its TTL, with its base.

        An installer's plain page is answered before it is kept (:meth:`_rebased_now`); any other
        is kept first, then sent from its file."""
        for other in self.pages.elsewhere(name, kind):
            found = self.pages.open(name, other, token)
            if found is None:
                continue
            checked = self._fresh(name, found.checked)
            if checked is None or found.base is None:
                found.close()
                if checked is None:
                    return None  # past the TTL: so is every rendering of this state
                continue
            logger.debug("making the page of %r for %s from its rendering for %s", name, base, found.base)
            if not gzip and later.active() and not background():
                old, new = _files_prefix(found.base, name), _files_prefix(base, name)
                tag = rebased_etag(found.etag, old, new)
                keep = functools.partial(
                    self._keep_rebased,
                    name,
                    kind,
                    source=other,
                    content_type=content_type,
                    token=token,
                    base=base,
                    meta=meta,
                )
                made = replace(found, checked=checked)
                return self._rebased_now(
                    name, kind, made, content_type=content_type, old=old, new=new, etag=tag, keep=keep
                )
            with found.handle:
                saved = self._write_rebased(
                    name,
                    kind,
                    found,
                    content_type=content_type,
                    token=token,
                    checked=checked,
                    base=base,
                    gzip=gzip,
                )
            if saved is None:
                return None
            return self._from_file(name, kind + GZIP if gzip else kind, saved)
        return None

    def _rebased_now(
        self,
        name: NormalizedName,
        kind: str,
        found: PageFile,
        *,
        content_type: str,
        old: str,
        new: str,
        etag: str,
        keep: Callable[[], None],
    ) -> Rendered | None:
        """:meth:`_rebased`'s answer to an installer, made from the rendering ``found`` with the
        file URLs' start ``old`` made ``new`` (ETag ``etag``), before it is kept: a small page made
        whole and held, a larger one sent as it is made (``PageStream``), its length counted first.
        ``keep`` writes it once the mirror is quiet: written after each answer, it took the next
        request's time. None (``found`` closed) if that rendering is cut short or grown."""
        try:
            if found.size > _WARM_PAGE:
                # another port of as many digits: as long, known without reading it
                grown = url_growth(content_type, old, new)
                size = rebased_length(found.blocks(), content_type, old, new) if grown else found.size
                stream = PageStream(found, size, rebased(found.blocks(), content_type, old, new))
                answer = Rendered(None, b"", etag, stream=stream)
            else:
                with found.handle:
                    body = b"".join(rebased(found.blocks(), content_type, old, new))
                self._hold(name, kind, (found.token, found.checked, etag, body))
                answer = Rendered(None, body, etag)
        except OSError:
            found.close()
            return None
        with self._render_lock:
            self._unkept[(name, kind)] = keep
            self._unkept.move_to_end((name, kind))
            while len(self._unkept) > _MAX_UNKEPT:
                self._unkept.popitem(last=False)
        self.keeper.served(name, kind)
        self.keeper.changed(name)
        return answer

    def _keep_rebased(
        self,
        name: NormalizedName,
        kind: str,
        *,
        source: str,
        content_type: str,
        token: str,
        base: str,
        meta: bool,
    ) -> None:
        """Keep the page of ``kind`` that :meth:`_rebased_now` answered, made again from the
        rendering of kind ``source``: unless it is kept already (another request's), the page
        changed since (a rendering of the new state must not be replaced), or that rendering is
        gone or past its TTL meanwhile."""
        kept = self.pages.open(name, kind, token)
        if kept is not None:
            kept.close()
            return
        if self._disk_token(name, meta) != token:
            return
        found = self.pages.open(name, source, token)
        if found is None:
            return
        with found.handle:
            checked = self._fresh(name, found.checked)
            if checked is None:
                return
            kept = self._write_rebased(
                name, kind, found, content_type=content_type, token=token, checked=checked, base=base
            )
        if kept is not None:
            kept.close()

    def _write_rebased(
        self,
        name: NormalizedName,
        kind: str,
        found: PageFile,
        *,
        content_type: str,
        token: str,
        checked: float,
        base: str,
        gzip: bool = False,
    ) -> PageFile | None:
        """Keep the page of ``kind`` made from the rendering ``found`` for ``base``, in the encoding
        asked for; a plain one under the ETag its answer had (``rebased_etag``). None when it
        could not be written, or ``found`` says no base."""
        if found.base is None:
            return None
        old, new = _files_prefix(found.base, name), _files_prefix(base, name)
        return self.pages.write(
            name,
            kind,
            token=token,
            checked=checked,
            pieces=rebased(found.blocks(), content_type, old, new),
            gzip=gzip,
            base=base,
            etag=None if gzip else rebased_etag(found.etag, old, new),
        )

    def _fresh(self, name: NormalizedName, checked: float, confirmed: bool = False) -> float | None:
        """When the upstream last gave the page a rendering made at ``checked`` shows: then, or
        since, with the state unchanged (``CacheStore.confirm``); None once the TTL has passed,
        unless the mirror has just ``confirmed`` the page."""
        if confirmed or self.mirror.fresh(checked):
            return checked
        noted = self.store.confirmed_at(name)
        if noted is not None and noted > checked and self.mirror.fresh(noted):
            return noted
        return None

    def _from_file(self, name: NormalizedName, kind: str, found: PageFile) -> Rendered | None:
        """A saved rendering as it is answered: a small one read and held, a larger one sent from
        its file, a block at a time. None if the file was cut short meanwhile."""
        gzip = kind.endswith(GZIP)
        if found.size > _WARM_PAGE:
            return Rendered(None, b"", found.etag, found, gzip)
        try:
            body = found.handle.readall()
        finally:
            found.close()
        if len(body) != found.size:
            return None
        self._hold(name, kind, (found.token, found.checked, found.etag, body))
        return Rendered(None, body, found.etag, gzip=gzip)

    def _hold(self, name: NormalizedName, kind: str, held: tuple[str, float, str, bytes]) -> None:
        """Hold a small rendering of ``kind`` in memory for the page's next requests: its token,
        check time, ETag and body."""
        body = held[3]
        with self._render_lock:
            old = self._warm.pop((name, kind), None)
            self._warm_bytes += len(body) - (0 if old is None else len(old[3]))
            self._warm[(name, kind)] = held
            while self._warm_bytes > _WARM_BYTES:
                _, dropped = self._warm.popitem(last=False)
                self._warm_bytes -= len(dropped[3])

    def _write_rendered(
        self,
        name: NormalizedName,
        kind: str,
        token: str | None,
        page: ProjectPage,
        pieces: Iterable[bytes],
        *,
        gzip: bool,
        meta: bool,
        base: str = "",
    ) -> PageFile | None:
        """Save the rendering of the mirror's page in ``pieces`` (and its gzip encoding), if it is
        the page of what is on disk now, and open it (the encoded one if ``gzip``); None when it
        is not (and ``pieces`` were not used), or could not be saved.

        ``token`` is the disk's before the page was made; without one (the page was fetched just
        now) the page must be the mirror's of the state file as it is, and the disk must not change
        while that is checked. ``meta`` is :meth:`rendered`'s ``cached_metadata``; ``base`` the
        base URL of its file URLs, kept with it (see :meth:`_rebased`).
        """
        made_from = self._made_from(name, page, meta, token)
        if made_from is None:
            return None
        token, checked = made_from
        return self.pages.write(name, kind, token=token, checked=checked, pieces=pieces, gzip=gzip, base=base)

    def _made_from(
        self, name: NormalizedName, page: ProjectPage, meta: bool, token: str | None = None
    ) -> tuple[str, float] | None:
        """The disk token and check time a rendering of ``page`` is saved under, if ``page`` is
        the mirror's of the disk as it is (``token``, the disk's before the page was made, must be
        it still), the disk not changing while that is checked; None otherwise."""
        if token is None:
            token = self._disk_token(name, meta)
        checked = self.mirror.checked(name, page) if token is not None else None
        if checked is None or token is None or self._disk_token(name, meta) != token:
            return None
        return token, checked

    def _refresh(self, name: NormalizedName, kinds: tuple[Hashable, ...]) -> bool:
        """Make again the renderings of ``kinds`` (as :meth:`rendered` took them) that a cached
        file made stale; False while the change has not settled."""
        if self._disk_token(name) is None:
            return False
        if not self.mirror.is_fresh(name):
            return True  # the upstream is due to be asked: left to the page's next request
        # no client waits on it: the pages it makes are no client's last (MirrorIndex.asked)
        with in_background():
            try:
                for served in kinds:
                    if self.refresher.stopped:
                        break
                    content_type, client, gzip, base, meta = cast(
                        tuple[str, ClientProfile | None, bool, str, bool], served
                    )
                    made = self._rendered_page(name, content_type, client, gzip=gzip, base=base, meta=meta)
                    made.close()
            finally:
                self.mirror.trim()  # the page made last is held for its requests; this one has none
        return True

    def _keep_unkept(self, name: NormalizedName, _kinds: tuple[Hashable, ...]) -> bool:
        """Write the renderings of ``name`` answered before they were kept (:meth:`_rebased_now`),
        each on its own: one that fails is logged, and the others are still written."""
        with self._render_lock:
            keeps = [self._unkept.pop(key) for key in [key for key in self._unkept if key[0] == name]]
        for keep in keeps:
            try:
                keep()
            except (OSError, NesteggError) as exc:
                logger.warning("cannot keep a rendered page of %r: %s", name, exc)
        return True

    def _busy(self) -> float:
        """Seconds until the mirror counts as quiet: no page being made by a request, no download
        a client reads nor answer being sent, and no page asked for (nor a file) for ``_IDLE``
        seconds. Background work waits for it, so that it takes no time from an install, nor makes
        a second large page beside one of its. (uv asks for every wheel at once, then reads them
        for seconds while it unpacks them: pages made again meanwhile took a core from it.)"""
        sending = self.clients_sending
        if self._making or self.downloads.serving() or (sending is not None and sending()):
            return _IDLE
        if self.clients_gone is not None and self.clients_gone():
            return 0.0  # an install over, however recent its last request
        return max(0.0, self._asked + _IDLE - time.monotonic())

    def serve_clients(
        self, gone: Callable[[], bool] | None, sending: Callable[[], bool] | None = None
    ) -> None:
        """Take from the server whether its clients are gone and whether one is still served (see
        ``clients_gone``, ``clients_sending``), here and in the routed indexes; the server pokes
        the refreshers when they go."""
        for repository in (self, *(routed for _, routed in self.routes.items())):
            repository.clients_gone = gone
            repository.clients_sending = sending

    def keep_files_served(self, timeout: float = 5.0) -> None:
        """Wait, up to ``timeout`` seconds, for the files an installer already has whole to be put
        in the cache (``Downloads.settle``), this index's and its routed ones'."""
        deadline = time.monotonic() + timeout
        for downloads in (self.downloads, *(routed.downloads for _, routed in self.routes.items())):
            downloads.settle(None, max(0.0, deadline - time.monotonic()))

    def prepare(self) -> threading.Thread | None:
        """Get the upstream clients of this index and its routed ones ready for their first request
        (``HttpFetcher.prepare``), in a thread of its own once no page nor file has been asked for
        for ``PREPARE_QUIET`` seconds: the thread, or None when no index is reached over HTTP
        (offline, or a fetcher given)."""
        repositories = (self, *(routed for _, routed in self.routes.items()))
        fetchers = [r._own_fetcher for r in repositories if r._own_fetcher is not None]
        if not fetchers:
            return None

        def quiet_for() -> float:
            """Seconds until no request has been made for ``PREPARE_QUIET`` seconds (0: now)."""
            if any(r._making for r in repositories):
                return PREPARE_QUIET
            return max(r._asked for r in repositories) + PREPARE_QUIET - time.monotonic()

        def prepare() -> None:
            # a moment first: a warm run's first pages, asked at once, have both cores to themselves
            time.sleep(PREPARE_QUIET)
            while (wait := quiet_for()) > 0:
                time.sleep(wait)
            for fetcher in fetchers:
                try:
                    fetcher.prepare()
                except Exception:  # a head start only: the first request does it again, and says what fails
                    logger.debug(
                        "could not prepare the client of %s", mask_url(fetcher.index_url), exc_info=True
                    )

        thread = threading.Thread(target=prepare, name="nestegg-prepare", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread can be started now: the first request loads it
            return None
        return thread

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background work, waiting up to ``timeout`` for a page being made, once the files
        an installer has are in place; let go of the files and connections held open (the server
        calls this when it stops: a later use opens them again)."""
        deadline = time.monotonic() + timeout
        self.keep_files_served(timeout)
        if self.ahead is not None and self.ahead is self._own_ahead:
            self.ahead.stop(timeout)
        self.refresher.stop(timeout)
        self.keeper.stop(timeout)  # what it has not written is made again when next asked for
        self.downloads.drop_pending()
        # nothing more is written in the nest once the server's stop returns (a test may remove it)
        self.downloads.stop(max(0.0, deadline - time.monotonic()))
        if self.size_limit is not None:
            self.size_limit.wait(max(0.0, deadline - time.monotonic()))
        self.store.generation.close()
        self.private.generation.close()
        if self._own_fetcher is not None:
            self._own_fetcher.close()
        self.counters.close()

    def _disk_token(self, name: NormalizedName, meta: bool = True) -> str | None:
        """The token of the mirror's page of ``name`` on disk; None for private and merged names,
        whose pages are made from more than the mirror's cache. Without ``meta`` (pip's pages),
        a change of the metadata of cached wheels alone (``CHANGED_METADATA``) is not in it.
        Offline, the page lists the cached files alone: the folder that holds them is in it too."""
        if not self._plain_mirror(name):
            return None
        # plain strings: this runs for every page request, and pathlib's joins cost more than the stats
        folder = f"{self._files_dir}/{name}/"
        state = f"{self._pages_dir}/{name}.json"
        markers: tuple[str, ...] = (folder + CHANGED,)
        if meta:
            markers += (folder + CHANGED_METADATA,)
        if self.config.offline:
            # one field more: never the token of a rendering made online, which lists every file
            markers += (folder[:-1],)
        return disk_token(state, *markers)

    def _known_token(self, name: NormalizedName, meta: bool = True) -> str | None:
        """:meth:`_disk_token`, without a look at the disk while neither store's generation has
        changed since it was last looked at (and not for longer than ``RECHECK``)."""
        seen = (self.store.generation.current(), self.private.generation.current())
        now = time.monotonic()
        held = self._tokens.get((name, meta))
        if held is not None and held[0] == seen and now < held[2]:
            return held[1]
        token = self._disk_token(name, meta)
        if token is not None and None not in seen:
            if len(self._tokens) >= _MAX_TOKENS:
                self._tokens.clear()
            self._tokens[(name, meta)] = (seen, token, now + RECHECK)
        return token

    def _plain_mirror(self, name: NormalizedName) -> bool:
        """Whether ``name`` is the mirror's alone: not private, not merged, not a source build."""
        return not (
            name in self._source_builds or self.private.is_merged(name) or self.private.is_private(name)
        )

    def _remember(self, key: _RenderKey, cached: _Cached) -> None:
        with self._render_lock:
            # what the mirror dropped from memory can never be served again: make room first
            for dead in [k for k, v in self._rendered.items() if v.page() is None]:
                self._rendered_bytes -= len(self._rendered.pop(dead).body)
            old = self._rendered.pop(key, None)
            self._rendered_bytes += len(cached.body) - (0 if old is None else len(old.body))
            self._rendered[key] = cached
            while self._rendered_bytes > _RENDER_CACHE_BYTES and len(self._rendered) > 1:
                _, dropped = self._rendered.popitem(last=False)
                self._rendered_bytes -= len(dropped.body)

    def index(self, content_type: str, *, shows_private: Callable[[], bool] | None = None) -> Rendered:
        """The root page: every project the mirror knows (cached or private), not upstream's.

        ``shows_private``, if given, says whether the asker may see private (and merged) names;
        it is asked only when the index has some. Made once per change of the stores, and kept.
        """
        listing = self._listing()
        hide = shows_private is not None and bool(self._private_of(listing)) and not shows_private()
        key = (is_json(content_type), hide)
        rendered = listing.renderings.get(key)
        if rendered is None:
            with self._index_lock:
                rendered = listing.renderings.get(key)
                if rendered is None:
                    if hide:
                        hidden = self._private_of(listing)
                        names = [n for n in listing.names if n not in hidden]
                    else:
                        names = listing.names
                    body = render_index(names, content_type)
                    rendered = listing.renderings[key] = Rendered(None, body, etag(body))
        return rendered

    def _listing(self) -> _Listing:
        """The names of the root index, scanned again only when a store's generation or folders
        changed (or, when a generation cannot be had, on every call)."""
        held = self._index
        stores = [self.store, *(routed.store for _, routed in self.routes.items())]
        seen = (*(s.generation.current() for s in stores), self.private.generation.current())
        if held is not None and held.seen == seen and None not in seen and time.monotonic() < held.until:
            return held
        with self._index_lock:  # one scan at a time: the others take what it made
            # taken before the disk is looked at: a change made while it is leaves a generation unseen
            seen = (*(s.generation.current() for s in stores), self.private.generation.current())
            places = [*(f for s in stores for f in (s.pages, s.files)), self.private.root]
            folders = tuple(_mtime_ns(f) for f in places)
            held = self._index
            if held is not None and None not in seen and (held.seen, held.folders) == (seen, folders):
                held.until = time.monotonic() + RECHECK  # nothing changed (checked every RECHECK)
                return held
            # every index's names: a routed index's too (served by its route whatever the page)
            names = {name for s in stores for name in s.project_names()}
            names.update(self.private.names())
            listing = _Listing(seen=seen, folders=folders, names=sorted(names))
            listing.until = time.monotonic() + RECHECK
            self._index = listing
            return listing

    def _private_of(self, listing: _Listing) -> frozenset[str]:
        """The names of ``listing`` that are private or merged (what ``private_read_auth``
        guards), found once per listing."""
        if listing.private is None:
            listing.private = self.private.protected(listing.names)
        return listing.private

    # files -------------------------------------------------------------------------------

    def open_file(
        self, name: NormalizedName, filename: str, *, fetch: bool = True
    ) -> Path | Download | DistFile:
        """A complete file on disk, or the download that is fetching it (with a reader counted,
        see ``Download.attach``); without ``fetch``, the page's entry of a file not on disk."""
        routed = self.routes.serving(name)
        if routed is not None:
            return routed.open_file(name, filename, fetch=fetch)
        path = self._cached_file(name, filename)
        if path is not None:
            return path
        dist = self._find(name, filename)
        if dist.origin == "private":
            return self.private.file_path(name, filename)
        path = self.store.file_path(name, filename)
        if path.is_file():
            self.counters.add("cache_hits")
            mark_used(self.store, name, filename)
            return path
        if not fetch:
            return dist
        self.counters.add("cache_misses")
        return self.downloads.get(name, dist)

    def fetch_ahead(self, name: NormalizedName, filename: str) -> bool:
        """Download the mirrored wheel ``filename``, not cached, ahead of its request
        (``Downloads.ahead``): pip just read its metadata, so it resolved to it, and asks for it
        once it has resolved the rest. Only a wheel the page in memory lists at up to
        ``fetch_ahead`` bytes; whether it was taken."""
        routed = self.routes.serving(name)
        if routed is not None:
            return routed.fetch_ahead(name, filename)
        limit = self.config.fetch_ahead
        if not limit or self.config.offline or not filename.endswith(".whl"):
            return False
        dist = self.mirror.listed(name, filename)
        if dist is None or dist.origin != "mirror" or dist.size is None or dist.size > limit:
            return False
        if os.path.isfile(self.store.file_path(name, filename)):
            return False
        self.downloads.ahead(name, dist)
        return True

    def guess_file(
        self,
        name: NormalizedName,
        agent: str | None,
        request: PageRequest,
        *,
        since: float,
        page: ProjectPage | None = None,
        now: bool = False,
    ) -> None:
        """pip is being answered the page of ``name`` it asked for at ``since``
        (``time.monotonic``): guess the file it takes next (``likely_picks``, of ``page``, the
        page in memory, or the page read once the answer is out when none of its files is
        cached), and download it ahead of pip's request when it is a mirrored wheel pip
        is shown no metadata for (so asks for it at once), of up to ``fetch_ahead`` bytes, not
        cached, and this client's guesses of that way were right lately (``Guesses``). The pages its wheel
        requires are made ahead as ``request`` asked for this one, as for a wheel pip gets
        (:meth:`ahead_of`), even if it is whole before pip asks.

        Done once the answer is out (``later``), after the page's writing: the download makes
        the project's files folder, and a page is not saved while that folder's change settles.
        ``now`` (an answer the server sends whole only with nothing left for after it: a file),
        done at once for a page of up to ``GUESS_NOW_FILES`` files, the download starting
        ``GUESS_BEFORE_ANSWER`` seconds later, off the answer's way. Never waits."""
        routed = self.routes.serving(name)
        if routed is not None:
            routed.guess_file(name, agent, request, since=since, page=page, now=now)
            return
        profile = profile_from_user_agent(agent)
        if profile is None or not self.config.fetch_ahead or self.config.offline:
            return
        if page is None:
            page = self.mirror.held(name)
            if page is None:
                # answered from its rendering: warm, its files most likely cached too. With none
                # downloaded (a page made ahead, dropped from memory before pip asked for it), the
                # page is read once the answer is out, for the guess and for pip's next request:
                # 15-24 ms for 5,000 files, that request's otherwise
                if not self._holds_files(name):
                    read = functools.partial(
                        self._guess_read, name, agent, profile, request=request, since=since
                    )
                    later.defer(read)
                return
        guess = functools.partial(self._guess, name, agent, profile, page, request=request, since=since)
        if now and len(page.files) <= GUESS_NOW_FILES:
            guess(delay=GUESS_BEFORE_ANSWER)
        else:
            later.defer(functools.partial(guess, delay=0.0))

    def _holds_files(self, name: NormalizedName) -> bool:
        """Whether a file of ``name`` was ever downloaded: its folder is made by the first (a
        stat, on every warm page pip asks for; a listing of it took 9 us)."""
        return os.path.isdir(f"{self._files_dir}/{name}")

    def _guess_read(
        self,
        name: NormalizedName,
        agent: str | None,
        profile: ClientProfile,
        *,
        request: PageRequest,
        since: float,
    ) -> None:
        """:meth:`_guess`, of the page read first (from the disk, while it is fresh)."""
        try:
            page = self.project(name)
        except NesteggError as exc:  # pip's own request for the file will say what is wrong
            logger.debug("no guess of pip's file of %s: %s", name, exc)
            return
        self._guess(name, agent, profile, page, request=request, since=since, delay=0.0)

    def _guess(
        self,
        name: NormalizedName,
        agent: str | None,
        profile: ClientProfile,
        page: ProjectPage,
        *,
        request: PageRequest,
        since: float,
        delay: float,
    ) -> None:
        try:
            picks = self.guesses.pick(name, profile, page, uploaded_by=self.guesses.horizon(agent))
        except Exception:  # a guess: none made is no failure, and the page is answered all the same
            logger.debug("no guess of pip's file of %s", name, exc_info=True)
            return
        dist = self.guesses.guessed(agent, name, picks, since=since)
        if dist is None:
            return
        if dist.origin != "mirror" or dist.size is None or dist.size > self.config.fetch_ahead:
            return
        # a wheel listed with its metadata is asked for once pip has resolved: see fetch_ahead
        if pip_lists_metadata(dist, ranged=_lazy_metadata(dist)):
            return
        if not os.path.isfile(self.store.file_path(name, dist.filename)):
            self.downloads.ahead(name, dist, after=delay)
            self.ahead_of(name, dist.filename, environment=marker_environment(agent), request=request)

    def file_taken(self, name: NormalizedName, filename: str, agent: str | None) -> None:
        """pip asks for ``filename`` of ``name``, or its metadata: a guess is judged by it, and
        the page in memory tells when it was uploaded (the day its pins were made, or after)."""
        routed = self.routes.serving(name)
        if routed is not None:
            routed.file_taken(name, filename, agent)
            return
        page = self.mirror.held(name)
        try:
            self.guesses.taken(agent, name, filename, None if page is None else page.file(filename))
        except Exception:  # a guess judged: none is no failure, and the file is answered all the same
            logger.debug("no judgement of the guesses of %s", name, exc_info=True)

    def passed_over(self, name: NormalizedName, filename: str) -> None:
        """pip asked for ``filename`` of ``name`` (a file or a file's metadata): a download ahead
        of another file of it, not started yet, is dropped, pip having rejected that file."""
        routed = self.routes.serving(name)
        (self.downloads if routed is None else routed.downloads).passed_over(name, filename)

    def read_range(self, name: NormalizedName, dist: DistFile, start: int, end: int) -> bytes | None:
        """Bytes ``start`` to ``end`` (exclusive) of a mirrored file not cached (the page's entry
        ``dist``), without its whole download: None if they are to come from that (see
        :class:`Ranges`). The whole file is not downloaded for a range: lazy-wheel clients read a
        few ranges of wheels they then mostly reject (docs/internals.rst)."""
        self._asked = time.monotonic()
        return self.ranges.read(name, dist, start, end)

    # pages ahead --------------------------------------------------------------------------

    def ahead_of(
        self,
        name: NormalizedName,
        filename: str,
        *,
        environment: Mapping[str, str],
        request: PageRequest | None,
        metadata: Path | None = None,
    ) -> None:
        """Fetch ahead the pages of the projects the wheel ``filename`` requires in the client's
        ``environment`` (:class:`PagesAhead`), rendered as ``request`` asks: the client read the
        wheel's metadata (served from ``metadata``), or gets the wheel itself, which the mirror is
        downloading (its requirements are read once it is cached). Never waits."""
        routed = self.routes.serving(name)
        if routed is not None:
            routed.ahead_of(name, filename, environment=environment, request=request, metadata=metadata)
            return
        if self.ahead is None or not filename.endswith(".whl"):
            return
        key = (name, filename)
        if metadata is None:
            with self._after_lock:
                self._after_download[key] = (environment, request)
                while len(self._after_download) > _MAX_AFTER_DOWNLOAD:
                    self._after_download.popitem(last=False)
            # the download may have ended before it was noted: then it is read here
            if not os.path.isfile(self.store.file_path(name, filename)):
                return
            with self._after_lock:
                if self._after_download.pop(key, None) is None:
                    return  # read by _cached
        read = functools.partial(self._requirements_of, name, filename, metadata)
        self.ahead.wheel(key, read, of=name, environment=environment, request=request)

    def _requirements_of(self, name: NormalizedName, filename: str, metadata: Path | None) -> bytes | None:
        """The metadata of the wheel ``filename``: from ``metadata``, else the one kept of it, else
        from the cached wheel (whose central directory costs a large wheel some milliseconds)."""
        if metadata is None and os.path.isfile(kept := self.store.metadata_path(name, filename)):
            metadata = kept
        if metadata is not None:
            with self.open_served(metadata) as handle:
                return read_at_most(handle, _AHEAD_METADATA)
        with self.open_served(self.store.file_path(name, filename)) as handle:
            return wheel_metadata(handle, filename)

    def _needs_page(self, name: NormalizedName) -> bool:
        """Whether the page of ``name`` is to be fetched ahead: the mirror's, neither fresh in
        memory nor on disk."""
        repository = self.serving(name)
        if not repository._plain_mirror(name) or repository.config.offline:
            return False
        if repository.mirror.is_fresh(name):
            return False
        header = repository.store.read_page_header(name)
        return header is None or not repository.mirror.fresh(header.checked)

    def _page_ahead(self, name: NormalizedName, request: PageRequest | None) -> None:
        """Fetch the page of ``name``, and make the rendering ``request`` asks for."""
        if request is None:
            self.project(name)
            return
        rendered = self.rendered(
            name,
            request.content_type,
            request.client,
            gzip=request.gzip,
            base=request.base,
            cached_metadata=request.cached_metadata,
        )
        rendered.close()

    def _cached(self, name: NormalizedName, record: DistFile, changed: bool) -> None:
        with self._after_lock:
            after = self._after_download.pop((name, record.filename), None) if self._after_download else None
        if after is not None and self.ahead is not None:
            read = functools.partial(self._requirements_of, name, record.filename, None)
            self.ahead.wheel((name, record.filename), read, of=name, environment=after[0], request=after[1])
        self.mirror.cached(name, record)
        if changed:
            self.refresher.changed(name)
        if self.size_limit is not None:
            self.size_limit.cached(record)

    def _current(self, name: NormalizedName, dist: DistFile) -> bool:
        """Whether the page in memory lists ``dist`` as it is, or does not say: a file the
        upstream re-published (other hashes) while it was downloaded is not cached."""
        listed = self.mirror.listed(name, dist.filename)
        return listed is None or all(listed.hashes.get(a, d) == d for a, d in dist.hashes.items())

    def _cached_file(self, name: NormalizedName, filename: str) -> Path | None:
        """A mirror's file complete on disk, found without the page: every cached file with its
        record is listed on the page (upstream's or kept), so no page is needed to serve it."""
        if not self._plain_mirror(name):
            return None
        path = self.store.file_path(name, filename)
        if not (path.is_file() and self.store.record_path(name, filename).is_file()):
            return None
        self.counters.add("cache_hits")
        mark_used(self.store, name, filename)
        return path

    def open_any(
        self, name: NormalizedName, filename: str, *, fetch: bool = True
    ) -> tuple[Path | Download | DistFile, bool]:
        """A file of the project or, for ``<file>.metadata``, its core metadata (then True); see
        :meth:`open_file` for ``fetch``."""
        self._asked = time.monotonic()
        routed = self.routes.serving(name)
        if routed is not None:
            return routed.open_any(name, filename, fetch=fetch)
        if filename.endswith(".metadata"):
            self.downloads.settle(name)  # the wheel's, if an installer has it whole, is being kept
        if filename.endswith(".metadata") and self._plain_mirror(name):
            with contextlib.suppress(NotFound):
                path = self._checked_metadata(name, filename[: -len(".metadata")])
                if path is not None:  # served without the page
                    return path, True
        if filename.endswith(".metadata"):  # never a listed file's name (is_dist_filename)
            return self.open_metadata(name, filename[: -len(".metadata")]), True
        return self.open_file(name, filename, fetch=fetch), False

    def open_metadata(self, name: NormalizedName, filename: str) -> Path:
        """The PEP 658 core metadata file of ``filename``, taken from the wheel if it is cached,
        else fetched, and verified either way: one kept from before is served only if it matches
        what the page says of it now (the upstream may have published other bytes under the same
        name since)."""
        routed = self.routes.serving(name)
        if routed is not None:
            return routed.open_metadata(name, filename)
        before = self.store.page_stamp(name)  # a change meanwhile is seen by the next request
        dist, made = self._entry(name, filename)
        if self._lazy(dist, cached=os.path.isfile(f"{self._files_dir}/{name}/{dist.filename}.json")):
            return self._ranged_metadata(name, dist)
        if dist.core_metadata is None:
            raise NotFound(f"no metadata for {filename!r}")
        if dist.origin == "private":
            return self.private.metadata_path(name, filename)
        path = self.store.metadata_path(name, filename)
        status = self._matching_metadata(path, dist)
        if status is None:
            with self._metadata_lock(f"{name}/{filename}"):
                status = self._matching_metadata(path, dist)  # another thread may have fetched it
                if status is None:
                    status = self._metadata_of_cached(name, dist, path)
                if status is None:
                    status = self._fetch_metadata(dist, path)
        self._note_checked(name, filename, status, made, before)
        return path

    def _ranged_metadata(self, name: NormalizedName, dist: DistFile) -> Path:
        """The metadata of a mirrored wheel the upstream offers none for (``_metadata_for``): kept
        from before, else read from the wheel by ranges and kept with a note that it was (the
        wheel's own replaces it once the wheel is cached: ``Downloads``), else, from an upstream
        without ranges, the wheel's once it is downloaded whole and cached."""
        path = self.store.metadata_path(name, dist.filename)
        if self._matching_metadata(path, dist) is not None:
            return path
        with self._metadata_lock(f"{name}/{dist.filename}"):
            if self._matching_metadata(path, dist) is not None:
                return path
            try:
                metadata = self.ranges.wheel_metadata(dist)
            except RangesRefused:
                return self._metadata_of_download(name, dist, path)
            except ArchiveError as exc:
                raise UpstreamError(f"no metadata read from {dist.filename!r} by ranges: {exc}") from None
            if metadata is None:
                raise NotFound(f"{dist.filename!r} holds no METADATA")
            if len(metadata) > self.config.max_metadata_size:
                raise UpstreamError(
                    f"the metadata of {dist.filename!r} is larger than max_metadata_size "
                    f"({format_size(self.config.max_metadata_size)}); raise nestegg.max_metadata_size"
                )
            self._keep_metadata(self.store.metadata_ranged_path(name, dist.filename), b"ranges\n", dist)
            self._keep_metadata(path, metadata, dist)
        return path

    def _metadata_of_download(self, name: NormalizedName, dist: DistFile, path: Path) -> Path:
        """The metadata of the wheel ``dist`` once downloaded whole and cached (``Downloads``
        keeps it then)."""
        download = self.downloads.get(name, dist)
        try:
            download.wait_done(LOCK_WAIT)
        finally:
            download.leave()
        if self._matching_metadata(path, dist) is None:
            raise NotFound(f"no metadata for {dist.filename!r}: none was found in the wheel")
        return path

    def _metadata_of_cached(self, name: NormalizedName, dist: DistFile, path: Path) -> os.stat_result | None:
        """Keep at ``path`` the METADATA of the wheel ``dist`` if it is cached and matches every
        hash the page gives of it: the status of the file written; None otherwise. An installer
        that reads the metadata of a wheel another cached has it with the upstream down, offline,
        or sending other bytes than its page vouches for."""
        if not dist.filename.endswith(".whl") or not self.store.record_path(name, dist.filename).is_file():
            return None
        try:
            with self.store.open_read(self.store.file_path(name, dist.filename)) as handle:
                metadata = wheel_metadata(handle, dist.filename)
        except (NesteggError, OSError) as exc:  # not readable: the upstream's is asked for
            logger.debug("no metadata of the cached %s: %s", dist.filename, exc)
            return None
        if (
            metadata is None
            or len(metadata) > self.config.max_metadata_size
            or mismatch(metadata, dist.core_metadata or {}) is not None
        ):
            return None
        return self._keep_metadata(path, metadata, dist)

    def _matching_metadata(self, path: Path, dist: DistFile) -> os.stat_result | None:
        """The status of the metadata file at ``path`` if it matches every hash the page gives of
        it (``dist.core_metadata``); None if it does not, or is not there. A link in its place is
        refused as a missing file, as :meth:`open_served` refuses it."""
        limit = self.config.max_metadata_size
        try:
            with self.store.open_read(path) as handle:
                data = read_at_most(handle, limit + 1)
                status = os.fstat(handle.fileno())
        except UnsafePath as exc:
            logger.warning("%s", exc)
            raise NotFound(f"no file {path.name!r}") from None
        except OSError:
            return None
        if len(data) > limit or mismatch(data, dist.core_metadata or {}) is not None:
            return None
        return status

    def _checked_metadata(self, name: NormalizedName, filename: str) -> Path | None:
        """The metadata file of ``filename`` if it was found to match the page made from the state
        on disk now (:meth:`_note_checked`), in this process or another; else None."""
        identity = self._metadata_identity(name, filename)
        if identity is None:
            return None
        key = (name, filename)
        if self._checked.get(key) != identity:
            # read once a process: finding the note costs a look at each folder on the way
            if self.store.metadata_note(name, filename) != identity:
                return None
            self._remember_checked(key, identity)
        return self.store.metadata_path(name, filename)

    def _metadata_identity(self, name: NormalizedName, filename: str) -> bytes | None:
        """The note a check of the metadata of ``filename`` against the page of the state on disk
        now would leave (:func:`store.check_note`); None without a state or metadata file."""
        base = check_filename(filename)
        try:
            # plain strings, as in _disk_token: pathlib's joins cost more than the stats
            state = os.lstat(f"{self._pages_dir}/{name}.json")
            metadata = os.lstat(f"{self._files_dir}/{name}/{base}.metadata")
        except OSError:
            return None
        return check_note(state, metadata)

    def _remember_checked(self, key: tuple[str, str], identity: bytes) -> None:
        with self._render_lock:
            if len(self._checked) >= _MAX_CHECKED:
                self._checked.clear()
            self._checked[key] = identity

    def _note_checked(
        self,
        name: NormalizedName,
        filename: str,
        status: os.stat_result,
        made: PageStamp | None,
        before: PageStamp | None,
    ) -> None:
        """Note that the metadata file of ``status`` matched the entry read from the state file of
        stamp ``made``, if that is the state on disk, the same before and after (else the next
        request looks again)."""
        if before is None or made != before or self.store.page_stamp(name) != before:
            return
        try:
            self.store.note_metadata_checked(name, filename, before, status)
        except (OSError, UnsafePath) as exc:  # only a head start for the next request
            logger.debug("cannot note the check of the metadata of %s: %s", filename, exc)
            return
        identity = self._metadata_identity(name, filename)
        if identity is not None:
            self._remember_checked((name, filename), identity)

    @contextlib.contextmanager
    def _metadata_lock(self, key: str) -> Iterator[None]:
        """Held while one metadata file is fetched: a thread that asks for it meanwhile waits (on
        the upstream, or on another thread that asks it) and then finds it on disk."""
        with self._metadata_guard:
            lock, users = self._metadata_locks.get(key) or (threading.Lock(), 0)
            self._metadata_locks[key] = (lock, users + 1)
        try:
            with blocking(), lock:
                yield
        finally:
            with self._metadata_guard:
                users = self._metadata_locks[key][1] - 1
                if users:
                    self._metadata_locks[key] = (lock, users)
                else:
                    del self._metadata_locks[key]

    def _fetch_metadata(self, dist: DistFile, path: Path) -> os.stat_result:
        """Fetch the metadata of ``dist`` into ``path`` once it matches the page's hashes; the
        status of the file written."""
        url = dist.url + ".metadata"
        try:
            data = bytes(self._read_metadata(url))
        except NesteggError:
            raise
        except Exception as exc:  # an answer no check foresaw: an upstream failure like any other
            logger.debug("cannot fetch %s", mask_url(url), exc_info=True)
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            raise UpstreamError(f"cannot fetch the metadata {mask_url(url)} ({reason})") from None
        # every hash the page gives that can be checked is (a wrong one of any form fails)
        algorithm = mismatch(data, dist.core_metadata or {})
        if algorithm is not None:
            raise IntegrityError(
                f"metadata of {dist.filename!r} from {mask_url(url)} does not match its {algorithm}"
            )
        return self._keep_metadata(path, data, dist)

    def _keep_metadata(self, path: Path, data: bytes, dist: DistFile) -> os.stat_result:
        """Write the checked metadata of ``dist`` at ``path``; a full disk is :class:`InsufficientStorage`."""
        try:
            return write_atomic(path, data, root=self.store.root)
        except OSError as exc:
            if disk_full(exc):
                raise InsufficientStorage(
                    f"the disk is full: the metadata of {dist.filename!r} was not kept"
                ) from None
            raise

    def _read_metadata(self, url: str) -> bytearray:
        """The body of the upstream's metadata file at ``url``, within max_metadata_size and
        page_deadline (:class:`UpstreamError`, :class:`UpstreamTimeout`)."""
        limit, seconds = self.config.max_metadata_size, self.config.page_deadline
        deadline = time.monotonic() + seconds
        stream = self.fetcher.open(url)
        data = bytearray()
        too_large = UpstreamError(
            f"upstream metadata {mask_url(url)} is larger than max_metadata_size "
            f"({format_size(limit)}); raise nestegg.max_metadata_size"
        )
        try:
            if stream.size is not None and stream.size > limit:
                raise too_large  # said before a byte is read
            for chunk in stream.chunks():
                data += chunk
                if len(data) > limit:
                    raise too_large
                if time.monotonic() > deadline:
                    raise UpstreamTimeout(
                        f"upstream {mask_url(url)} took longer than page_deadline ({seconds:g}s) to "
                        "send its metadata; raise nestegg.page_deadline"
                    )
        finally:
            stream.close()
        return data

    def held_metadata(self, name: NormalizedName, dists: Iterable[DistFile]) -> bytes | None:
        """The core metadata nestegg holds of one of ``dists`` (one release's files), wheels
        first: a private file's, a mirrored file's PEP 658 file that matches the page, or the
        METADATA of a cached wheel; None when it holds none. Nothing is fetched for it."""
        ordered = sorted(dists, key=lambda dist: not dist.filename.endswith(".whl"))
        for dist in ordered:
            data = self._held_metadata(name, dist)
            if data is not None:
                return data
        return None

    def _held_metadata(self, name: NormalizedName, dist: DistFile) -> bytes | None:
        limit = self.config.max_metadata_size
        try:
            if dist.origin == "private":
                if dist.core_metadata is None:
                    return None
                with self.open_served(self.private.metadata_path(name, dist.filename)) as handle:
                    data = read_at_most(handle, limit + 1)
                return data if len(data) <= limit else None
            path = self.store.metadata_path(name, dist.filename)
            if dist.core_metadata is not None and self._matching_metadata(path, dist) is not None:
                with self.open_served(path) as handle:
                    data = read_at_most(handle, limit + 1)
                if len(data) <= limit and mismatch(data, dist.core_metadata) is None:
                    return data
            path = self.store.file_path(name, dist.filename)
            if dist.filename.endswith(".whl") and self.store.record_path(name, dist.filename).is_file():
                with self.open_served(path) as handle:
                    return wheel_metadata(handle, dist.filename)
        except (NesteggError, OSError) as exc:  # not held, or not readable: another file may say
            logger.debug("no metadata of %s held: %s", dist.filename, exc)
        return None

    def held_size(self, name: NormalizedName, dist: DistFile) -> int | None:
        """The size of ``dist`` as the page says, else as its copy in the cache is; else None."""
        if dist.size is not None:
            return dist.size
        try:
            if dist.origin == "private":
                return self.private.file_path(name, dist.filename).stat().st_size
            if not self.store.record_path(name, dist.filename).is_file():
                return None  # a part file, or one being placed
            return self.store.file_path(name, dist.filename).stat().st_size
        except (NesteggError, OSError):
            return None

    def open_served(self, path: Path) -> BinaryIO:
        """A file :meth:`open_any` gave, open for reading: a link in the nest on the way to it (or
        in its place) is never followed, but refused as a missing file with a warning naming it."""
        try:
            return open_read(self.config.nestegg_dir, path)
        except UnsafePath as exc:
            logger.warning("%s", exc)
            raise NotFound(f"no file {path.name!r}") from None

    def _find(self, name: NormalizedName, filename: str) -> DistFile:
        return self._entry(name, filename)[0]

    def _entry(self, name: NormalizedName, filename: str) -> tuple[DistFile, PageStamp | None]:
        """The entry of ``filename`` on the page clients see, and the stamp of the state file it
        was read from (``MirrorIndex.entry``, which spares making a page not held for it)."""
        if self._plain_mirror(name):
            return self.mirror.entry(name, filename)
        page = self.project(name)
        dist = page.file(filename)
        if dist is None:
            raise NotFound(f"project {name!r} has no file {filename!r}")
        return dist, self.mirror.made_from(name, page)

    def _is_source_build(self, name: str) -> bool:
        return name in self._source_builds

    def metrics(self) -> dict[str, Any]:
        """The counters of the nest (every process's), see :mod:`nestegg_core.storage.counters`."""
        return self.counters.totals()


def _files_prefix(base: str, name: NormalizedName) -> str:
    """How the file URLs of the page of ``name`` start: from ``base`` (the mirror's root as the
    client reached it), else relative to the page."""
    return f"{base}/files/{quote(name)}/" if base else f"../../files/{quote(name)}/"


def _file_urls(base: str, name: NormalizedName) -> Callable[[DistFile], str]:
    """The URL a page of ``name`` gives each file (see :func:`_files_prefix`)."""
    prefix = _files_prefix(base, name)

    def url_for(dist: DistFile) -> str:
        return prefix + quote_filename(dist.filename)

    return url_for


def _listed(page: ProjectPage, client: ClientProfile | None, meta: bool) -> ProjectPage:
    """The files of ``page`` its page for ``client`` lists: those that may fit it; pip's (without
    ``meta``) without the links it skips, each near a wheel's cost to it."""
    shown = page if client is None else for_client(page, client)
    return shown if meta else for_pip(shown)


def _gzipped(body: bytes) -> bytes:
    """``body`` as a rendering's ``.gz`` file holds it: the same bytes, so the same ETag, in every process."""
    packer = compressor()
    return packer.compress(body) + packer.flush()


def _lazy_metadata(dist: DistFile) -> bool:
    """Whether ``dist`` is a mirrored wheel the upstream offers no metadata for."""
    return dist.core_metadata is None and dist.origin == "mirror" and dist.filename.endswith(".whl")


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _kind(content_type: str, client: ClientProfile | None, base: str = "", meta: bool = True) -> str:
    """The rendered file's suffix: the format (both HTML types are the same bytes), the client and
    the base of the file URLs. Those of a client or a base are kept in the page's folder of
    renderings for installers (``pagefiles.CLIENTS``), at most ``MAX_CLIENTS`` pairs of them: a
    made-up Host header, like a made-up User-Agent, must not fill the disk."""
    kind = "json" if is_json(content_type) else "html"
    if not meta:  # no metadata of cached wheels: pip's
        kind += "_nm"
    if client is None and not base:
        return kind
    made_for = "" if client is None else hashlib.sha256(repr(client).encode()).hexdigest()[:16]
    if base:
        made_for += "@" + hashlib.sha256(base.encode()).hexdigest()[:12]
    return f"{kind}-{made_for}"
