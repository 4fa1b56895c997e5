"""The read-only web interface under ``/ui/``: projects, their files, CI runs, badges, and JSON of each.

Every page is built from what this nest holds on disk (the cache's page states and files, the
private store, the build records, the CI history); no page asks the upstream anything or starts
a build. The project list is kept in memory until one of the directories it comes from changes,
and every list is paginated, so pages stay fast with thousands of projects and runs.

Routes (each also as JSON with ``?format=json``)::

    /                                   redirects to /ui/
    /ui/?q=TEXT&kind=private|mirror&page=N&per_page=N     projects
    /ui/project/<name>?here=1&page=N    versions and files of a project
    /ui/ci?page=N                       source builds under CI and the latest runs
    /ui/ci/<name>?page=N                runs of a project
    /ui/ci/<name>/<id>                  one run, with its log (``/log`` for the log as text)
    /ui/badge/<name>.svg                the CI status badge of a project

HTML is rendered by :mod:`nestegg_core.ui.pages`, which escapes every value it is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from nestegg_core._version import __version__
from nestegg_core.builds.runs import Run, RunStore
from nestegg_core.builds.sources import read_record, state_path
from nestegg_core.config.config import Config, SourceBuild
from nestegg_core.errors import BadRequest, NotFound, cut
from nestegg_core.http.answers import app_path, location
from nestegg_core.http.app import base_url
from nestegg_core.simple.distmeta import metadata_fields
from nestegg_core.simple.models import (
    MAX_DIGITS,
    DistFile,
    ProjectPage,
    format_time,
    is_valid_name,
    parse_number,
    parse_version,
)
from nestegg_core.urls import mask_text

from . import pages as webpages

if TYPE_CHECKING:
    from nestegg_core.http.types import Environ, ReadGuard, StartResponse
    from nestegg_core.index.repository import Repository

PREFIX = "ui"
PER_PAGE = 50
#: fields a page's query may have (its links repeat them)
MAX_QUERY_FIELDS = 64
VERSIONS_PER_PAGE = 20
MAX_PER_PAGE = 500
_SUMMARY_CACHE = 8192
#: files of one version a project page shows (a hostile page may give one version 100,000 files)
FILES_PER_VERSION = 500
#: files a project page shows in all: 500 versions of 100 files each made 14 MB of HTML in 2 s
FILES_PER_PAGE = 5_000
#: project views kept (see _Versions), and the files and versions they may hold in all (some
#: tens of bytes each); the last one made is kept whatever its size
_VIEW_CACHE = 16
_VIEW_ITEMS = 250_000
#: characters of a long description a project page shows (a description may have megabytes)
DESCRIPTION_CHARS = 20_000
#: versions a project page looks through, newest first, for a description this nest holds
_DESCRIBED_VERSIONS = 20
#: seconds a page of the UI waits for another large page to be made before it answers 503
_LARGE_WAIT = 30.0
#: what the kinds of project are called: only private files, private files over the mirror's, mirrored
PRIVATE, MERGED, MIRROR = "private", "private+mirror", "mirror"


# what the pages show ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Summary:
    """One row of the project list."""

    name: str
    kind: str
    latest: str | None = None
    versions: int = 0
    #: files stored here: cached or private
    files_here: int = 0
    #: when the page was last checked with the upstream, or the newest private upload
    updated: str | None = None
    #: the index it comes from (credentials left out), or "private"
    index: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "latest": self.latest,
            "versions": self.versions,
            "files_here": self.files_here,
            "updated": self.updated,
            "index": self.index,
        }


@dataclass(frozen=True, kw_only=True)
class BuildStatus:
    """What the builds of a source build say: its last fetch, and the versions that fail."""

    #: when the repository was last fetched (a PEP 700 time); None: never
    fetched_at: str | None = None
    #: why the last fetch failed (the versions were built from the one before); None: it did not
    fetch_error: str | None = None
    #: version to the error it failed with
    failed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"fetched_at": self.fetched_at, "fetch_error": self.fetch_error, "failed": dict(self.failed)}


@dataclass(frozen=True, kw_only=True)
class FileRow:
    """A file of a project page, with where it came from and whether it is stored here."""

    dist: DistFile
    here: bool
    #: "uploaded", "built" or "mirrored"
    origin: str
    ref: str | None = None
    commit: str | None = None
    built_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        dist = self.dist
        return {
            "filename": dist.filename,
            "version": dist.version,
            "size": dist.size,
            "sha256": dist.sha256,
            "upload_time": dist.upload_time,
            "requires_python": dist.requires_python,
            "yanked": dist.yanked,
            "here": self.here,
            "origin": self.origin,
            "ref": self.ref,
            "commit": self.commit,
            "built_at": self.built_at,
        }


@dataclass(frozen=True, kw_only=True)
class VersionRows:
    version: str
    files: tuple[FileRow, ...] = ()
    #: files of the version not shown: past ``FILES_PER_VERSION``, or ``FILES_PER_PAGE`` of the page
    more_files: int = 0


@dataclass(frozen=True, kw_only=True)
class Description:
    """The long description of a version, as its core metadata gives it, cut to its first
    :data:`DESCRIPTION_CHARS` characters."""

    version: str
    text: str
    #: its Description-Content-Type (text/markdown, text/x-rst...): shown as written all the same
    content_type: str | None = None
    #: characters left out past ``text``
    cut: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "text": self.text,
            "content_type": self.content_type,
            "cut": self.cut,
        }


@dataclass(frozen=True, kw_only=True)
class Pages:
    """Where a paginated list is: page ``page`` (from 1) of ``pages``, ``per_page`` items each."""

    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def to_json(self) -> dict[str, int]:
        return {"page": self.page, "per_page": self.per_page, "total": self.total, "pages": self.pages}


class _Versions:
    """The files of a project by version, newest version first, as its UI page lists them.

    Made once per change of what it comes from (the mirror's page, the private page, the build
    record), and shown a page of versions at a time: it holds where each file is in those pages,
    in order, not the files, nor a row for each (a page of 200,000 files made 200,000 rows, a
    version parsed for each, on every request).
    """

    def __init__(
        self,
        *,
        mirrored: ProjectPage | None,
        kept: frozenset[str],
        private: ProjectPage | None,
        built: dict[str, dict[str, str | None]],
        built_stamp: int,
        only_here: bool,
    ) -> None:
        #: what it was made of, compared by identity (a page made again is another object)
        self.mirrored = None if mirrored is None else weakref.ref(mirrored)
        self.private = None if private is None else weakref.ref(private)
        self.built_stamp = built_stamp
        self.kept = kept
        self.built = built
        ours = private.files if private is not None else ()
        theirs = mirrored.files if mirrored is not None else ()
        seen = {dist.filename for dist in ours}
        # a file is its index in ours + theirs; no list per version (a page may have 200,000)
        shown = list(range(len(ours))) + [
            index
            for index, dist in enumerate(theirs, len(ours))
            if dist.filename not in seen and (not only_here or dist.filename in kept)
        ]
        version_of = [(ours[i] if i < len(ours) else theirs[i - len(ours)]).version or _OTHER for i in shown]
        listed = mirrored.versions if mirrored is not None and not only_here else ()
        self.versions = sorted(dict.fromkeys([*listed, *version_of]), key=_version_key, reverse=True)
        rank = {version: r for r, version in enumerate(self.versions)}
        #: the files of version ``v`` (the v-th) are ``order[bounds[v]:bounds[v + 1]]``, in
        #: the order of their pages (the sort is stable)
        ranks = array("l", (rank[version] for version in version_of))
        self.order = array("l", (shown[k] for k in sorted(range(len(shown)), key=ranks.__getitem__)))
        counts = array("l", [0]) * len(self.versions)
        for r in ranks:
            counts[r] += 1
        self.bounds = array("l", [0])
        for count in counts:
            self.bounds.append(self.bounds[-1] + count)
        #: the description of its latest version, once read (:meth:`WebUI._description`)
        self.description: Description | _Unread | None = _UNREAD

    def made_of(
        self,
        mirrored: ProjectPage | None,
        kept: frozenset[str],
        private: ProjectPage | None,
        built_stamp: int,
    ) -> bool:
        return (
            (None if self.mirrored is None else self.mirrored()) is mirrored
            and (self.kept is kept or self.kept == kept)  # a file cached leaves its page as it was
            and (None if self.private is None else self.private()) is private
            and self.built_stamp == built_stamp
        )

    def __len__(self) -> int:
        return len(self.versions)

    @property
    def size(self) -> int:
        """What it holds, in files and versions."""
        return len(self.order) + len(self.versions)

    def rows(
        self, start: int, stop: int, mirrored: ProjectPage | None, private: ProjectPage | None
    ) -> list[VersionRows]:
        """Versions ``start`` to ``stop``, with their files (up to ``FILES_PER_VERSION`` each,
        ``FILES_PER_PAGE`` in all), from the pages this view was made of."""
        ours = private.files if private is not None else ()
        theirs = mirrored.files if mirrored is not None else ()
        shown = []
        left = FILES_PER_PAGE
        for v in range(start, min(stop, len(self.versions))):
            first, end = self.bounds[v], self.bounds[v + 1]
            taken = min(end - first, FILES_PER_VERSION, left)
            left -= taken
            rows = []
            for index in self.order[first : first + taken]:
                if index < len(ours):
                    dist = ours[index]
                    origin = self.built.get(dist.filename)
                    if origin is None:
                        rows.append(FileRow(dist=dist, here=True, origin="uploaded"))
                    else:
                        rows.append(FileRow(dist=dist, here=True, origin="built", **origin))
                else:
                    dist = theirs[index - len(ours)]
                    rows.append(FileRow(dist=dist, here=dist.filename in self.kept, origin="mirrored"))
            more = end - first - taken
            shown.append(VersionRows(version=self.versions[v], files=tuple(rows), more_files=more))
        return shown


_OTHER = "other files"


class _Unread:
    """What a view's description is until it is read."""


_UNREAD = _Unread()


# the project list -------------------------------------------------------------------------------


class ProjectIndex:
    """Every project this nest knows, with its kind, listed again only when its sources changed.

    The sources are the cache's page and file directories and the private store's directory;
    their modification times change whenever a project is added to or removed from them.
    """

    def __init__(self, repository: Repository, config: Config) -> None:
        self.repository = repository
        self.builds = [build.name for build in config.source_builds]
        self._stamp: tuple[int, ...] | None = None
        self._listed: list[tuple[str, str]] = []
        self._kinds: dict[str, str] = {}
        self._lock = threading.Lock()

    def listed(self) -> list[tuple[str, str]]:
        """(name, kind) of every project, sorted by name."""
        stamp = self._sources_stamp()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._listed = self._scan()
                    self._kinds = dict(self._listed)
                    self._stamp = stamp
        return self._listed

    def kind(self, name: str) -> str | None:
        self.listed()
        return self._kinds.get(name)

    def _sources_stamp(self) -> tuple[int, ...]:
        stores = [self.repository.store, *(r.store for _, r in self.repository.routes.items())]
        places = [
            *(path for store in stores for path in (store.pages, store.files)),
            self.repository.private.root,
        ]
        return tuple(_mtime_ns(path) for path in places)

    def _scan(self) -> list[tuple[str, str]]:
        private = self.repository.private
        mirrored = set(self.repository.store.project_names())
        for _, routed in self.repository.routes.items():  # the routed indexes' names too
            mirrored.update(routed.store.project_names())
        stored = set(private.names())
        names = mirrored | stored | set(self.builds)
        listed = []
        for name in sorted(names):
            if name in private.merged:
                kind = MERGED
            elif name in stored or private.is_private(NormalizedName(name)):
                kind = PRIVATE  # a name whose private files were all removed stays private
            else:
                kind = MIRROR
            listed.append((name, kind))
        return listed


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


# the handler ------------------------------------------------------------------------------------


@dataclass
class _Request:
    environ: Environ
    start_response: StartResponse
    query: dict[str, list[str]] = field(default_factory=dict)
    #: the URL path the UI's links start with: the app's root as the client reached it (under
    #: public_url's path behind a front server, else under SCRIPT_NAME), no slash at its end
    root: str = ""

    def arg(self, key: str) -> str | None:
        values = self.query.get(key)
        return values[-1] if values else None

    @property
    def json(self) -> bool:
        wanted = self.arg("format")
        if wanted not in (None, "html", "json"):
            raise BadRequest(f"format: expected 'html' or 'json', got {cut(wanted, 80)!r}")
        return wanted == "json"

    def number(self, key: str, default: int, maximum: int | None = None) -> int:
        raw = self.arg(key)
        if raw is None or raw == "":
            return default
        value = parse_number(raw)  # ASCII digits, few: "²".isdigit() is true, and int() has a limit
        if value is None or value < 1:
            expected = f"a whole number >= 1 of at most {MAX_DIGITS} digits"
            raise BadRequest(f"{key}: expected {expected}, got {cut(raw, 80)!r}")
        return min(value, maximum) if maximum else value


class WebUI:
    """The WSGI handler of ``/ui/...`` (registered as the app's ``ui`` route)."""

    def __init__(self, repository: Repository, config: Config, *, guard: ReadGuard | None = None) -> None:
        self.config = config
        self.repository = repository
        #: the app's read guard: private projects ask for credentials here too
        self.guard = guard
        self.index = ProjectIndex(repository, config)
        self.runs = RunStore(config.nestegg_dir)
        self.builds: dict[str, SourceBuild] = {build.name: build for build in config.source_builds}
        self._summaries: OrderedDict[str, tuple[tuple[int, ...], Summary]] = OrderedDict()
        self._views: OrderedDict[tuple[str, bool], _Versions] = OrderedDict()
        self._lock = threading.Lock()

    # routing ----------------------------------------------------------------------------------

    def root(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """``/``: to the project list."""
        return self._redirect(environ, start_response, f"{PREFIX}/")

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        parts = str(environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8", "replace").split("/")[2:]
        try:
            query = parse_qs(str(environ.get("QUERY_STRING", "")), max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:  # each field is echoed in the page's links: 20,000 of them took 0.2 s
            raise BadRequest(f"too many query fields: a page takes {MAX_QUERY_FIELDS} at most") from None
        request = _Request(environ, start_response, query, root=app_path(environ, self.config.public_url))
        if not parts:  # /ui
            return self._redirect(environ, start_response, f"{PREFIX}/")
        if len(parts) > 1 and parts[-1] == "":  # /ui/ci/, /ui/project/a/: the page without the slash
            return self._redirect(environ, start_response, "/".join([PREFIX, *parts[:-1]]))
        head, rest = parts[0], parts[1:]
        if head == "" and not rest:
            return self.home(request)
        if head == "project" and len(rest) == 1:
            return self.project(request, rest[0])
        if head == "ci" and not rest:
            return self.ci(request)
        if head == "ci" and len(rest) == 1:
            return self.ci_project(request, rest[0])
        run_id = parse_number(rest[1]) if head == "ci" and len(rest) in (2, 3) else None
        if run_id is not None and rest[2:] in ([], ["log"]):
            return self.run(request, rest[0], run_id, log_only=bool(rest[2:]))
        if head == "badge" and len(rest) == 1 and rest[0].endswith(".svg"):
            return self.badge(request, rest[0][: -len(".svg")])
        raise NotFound(f"no page {cut(str(environ.get('PATH_INFO', '')), 80)!r}")

    # pages --------------------------------------------------------------------------------------

    def home(self, request: _Request) -> Iterable[bytes]:
        query = (request.arg("q") or "").strip()
        kind = request.arg("kind") or ""
        if kind not in ("", PRIVATE, MIRROR):
            raise BadRequest(f"kind: expected 'private' or 'mirror', got {cut(kind, 80)!r}")
        shows_private = self._shows_private(request.environ)
        needle = canonicalize_name(query) if query else ""
        rows = [
            (name, k)
            for name, k in self.index.listed()
            if (not needle or needle in name)
            and (not kind or k in (kind, MERGED))
            and (k == MIRROR or shows_private())
        ]
        pages = Pages(
            page=request.number("page", 1),
            per_page=request.number("per_page", PER_PAGE, MAX_PER_PAGE),
            total=len(rows),
        )
        shown = [self.summary(name, k) for name, k in rows[pages.offset : pages.offset + pages.per_page]]
        latest = self._latest_runs([s.name for s in shown])
        if request.json:
            return self._json(
                request,
                {
                    "projects": [{**s.to_json(), "ci": _outcome(latest.get(s.name))} for s in shown],
                    "query": query,
                    "kind": kind or None,
                    **pages.to_json(),
                },
            )
        body = webpages.home(
            root=request.root,
            shown=shown,
            latest=latest,
            pages=pages,
            query=query,
            kind=kind,
            index_url=self._index_url(request.environ),
        )
        return self._html(request, "Projects", body)

    def project(self, request: _Request, raw: str) -> Iterable[bytes]:
        name = self._name(request, raw, "project")
        if isinstance(name, list):  # a redirect, or the read guard's 401
            return name
        kind = self.index.kind(name)
        if kind is None:
            raise NotFound(f"no project {cut(name, 80)!r} in this nest")
        only_here = request.arg("here") in ("1", "yes", "true")
        page = request.number("page", 1)
        per_page = request.number("per_page", VERSIONS_PER_PAGE, MAX_PER_PAGE)
        with self.repository.large_page(name, wait=_LARGE_WAIT):
            mirrored, kept, private, built, built_stamp = self._sources(name, kind)
            key = (name, only_here)
            view = self._views.get(key)
            if view is None or not view.made_of(mirrored, kept, private, built_stamp):
                view = _Versions(
                    mirrored=mirrored,
                    kept=kept,
                    private=private,
                    built=built,
                    built_stamp=built_stamp,
                    only_here=only_here,
                )
            self._keep(key, view)
            pages = Pages(page=page, per_page=per_page, total=len(view))
            shown = view.rows(pages.offset, pages.offset + pages.per_page, mirrored, private)
            if isinstance(view.description, _Unread):
                view.description = self._description(name, view, mirrored, private)
            description = view.description
        build = self.builds.get(name)
        status = _build_status(self.config.nestegg_dir, build) if build is not None else None
        last = self._latest_runs([name]).get(name)
        if request.json:
            return self._json(
                request,
                {
                    "name": name,
                    "kind": kind,
                    "index": self.repository.index_of(name),
                    "source_build": _build_json(build, status),
                    "ci": _outcome(last),
                    "description": None if description is None else description.to_json(),
                    "versions": [
                        {
                            "version": v.version,
                            "files": [f.to_json() for f in v.files],
                            "more_files": v.more_files,
                        }
                        for v in shown
                    ],
                    "files_per_page": FILES_PER_PAGE,
                    **pages.to_json(),
                },
            )
        body = webpages.project(
            root=request.root,
            name=name,
            kind=kind,
            source=self.repository.index_of(name),
            versions=shown,
            pages=pages,
            only_here=only_here,
            build=build,
            status=status,
            last=last,
            index_url=self._index_url(request.environ),
            description=description,
        )
        return self._html(request, name, body)

    def ci(self, request: _Request) -> Iterable[bytes]:
        visible = self._visible(request.environ)
        builds = [b for b in self.builds.values() if visible(b.name)]
        latest = self._latest_runs([b.name for b in builds])
        # the runs of private projects are left out, and out of the count: a request without
        # credentials saw short pages and how many runs they had
        among = None
        if self.runs.exists() and self.guard is not None:
            projects = self.runs.projects()
            shown = [name for name in projects if visible(name)]
            among = shown if len(shown) < len(projects) else None
        total = self.runs.count(among=among) if self.runs.exists() else 0
        pages = Pages(
            page=request.number("page", 1),
            per_page=request.number("per_page", PER_PAGE, MAX_PER_PAGE),
            total=total,
        )
        runs = self._runs(None, pages, among=among)
        if request.json:
            return self._json(
                request,
                {
                    "source_builds": [
                        {**(_build_json(b) or {}), "ci": _outcome(latest.get(b.name))} for b in builds
                    ],
                    "runs": [run.to_json() for run in runs],
                    **pages.to_json(),
                },
            )
        body = webpages.ci(root=request.root, builds=builds, latest=latest, runs=runs, pages=pages)
        return self._html(request, "CI", body)

    def ci_project(self, request: _Request, raw: str) -> Iterable[bytes]:
        name = self._name(request, raw, "ci")
        if isinstance(name, list):  # a redirect, or the read guard's 401
            return name
        total = self.runs.count(name) if self.runs.exists() else 0
        build = self.builds.get(name)
        if build is None and total == 0:
            raise NotFound(f"{cut(name, 80)!r} is no source build and has no CI runs")
        pages = Pages(
            page=request.number("page", 1),
            per_page=request.number("per_page", PER_PAGE, MAX_PER_PAGE),
            total=total,
        )
        runs = self._runs(name, pages)
        if request.json:
            return self._json(
                request,
                {
                    "name": name,
                    "source_build": _build_json(build),
                    "runs": [run.to_json() for run in runs],
                    **pages.to_json(),
                },
            )
        last = self._latest_runs([name]).get(name)
        body = webpages.ci_project(
            root=request.root, name=name, build=build, last=last, runs=runs, pages=pages
        )
        return self._html(request, f"CI of {name}", body)

    def run(self, request: _Request, raw: str, run_id: int, *, log_only: bool) -> Iterable[bytes]:
        name = canonicalize_name(raw) if is_valid_name(raw) else None
        # a private project's runs are asked credentials for before they are looked up: which
        # numbers are its runs is no answer for a request without them (it was: 401 or 404)
        refused = None if name is None else self._refused(request, name)
        if refused is not None:
            return refused
        run = self.runs.get(run_id) if self.runs.exists() else None
        if name is None or run is None or run.project != name:
            raise NotFound(f"no CI run #{run_id} of {cut(raw, 80)!r}")
        log = self.runs.log(run_id)
        if log_only:
            body = log.encode("utf-8", "replace")
            return self._send(request, "200 OK", "text/plain; charset=utf-8", body, cache="no-cache")
        if request.json:
            return self._json(request, {**run.to_json(), "log": log})
        page = webpages.run(root=request.root, run=run, build=self.builds.get(name), log=log)
        return self._html(request, f"CI run #{run.id} of {name}", page, refresh=not run.finished)

    def badge(self, request: _Request, raw: str) -> Iterable[bytes]:
        if not is_valid_name(raw):
            raise NotFound(f"{cut(raw, 80)!r} is not a project name")
        name = canonicalize_name(raw)
        refused = self._refused(request, name)
        if refused is not None:
            return refused
        last = self._latest_runs([name]).get(name)
        if request.json:
            return self._json(request, {"name": name, "ci": _outcome(last)})
        svg = webpages.badge("tests", webpages.BADGE_WORDS.get(_outcome(last) or "", "unknown"))
        return self._send(request, "200 OK", "image/svg+xml; charset=utf-8", svg.encode(), cache="no-cache")

    # data ---------------------------------------------------------------------------------------

    def summary(self, name: str, kind: str) -> Summary:
        """The list row of ``name``, read from disk once per change of its files."""
        store, private = self.repository.serving(NormalizedName(name)).store, self.repository.private
        paths = [private.root / name] if kind != MIRROR else []
        if kind != PRIVATE:
            # the note of a page the upstream gave again changes when it was last checked
            paths += [store.page_path(NormalizedName(name)), store.confirmed / name, store.files / name]
        stamp = (*(_mtime_ns(path) for path in paths), hash(kind))
        cached = self._summaries.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        # a large page's state is read by one request at a time (the others find what it made)
        with self.repository.large_page(NormalizedName(name), wait=_LARGE_WAIT):
            cached = self._summaries.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            summary = self._summarize(NormalizedName(name), kind)
        with self._lock:
            self._summaries[name] = (stamp, summary)
            self._summaries.move_to_end(name)
            while len(self._summaries) > _SUMMARY_CACHE:
                self._summaries.popitem(last=False)
        return summary

    def _summarize(self, name: NormalizedName, kind: str) -> Summary:
        versions: dict[str, None] = {}
        files_here = 0
        updated: str | None = None
        if kind != MIRROR:
            page = self.repository.private.page(name)
            if page is not None:
                versions.update(dict.fromkeys(page.versions))
                files_here += len(page.files)
                times = [d.upload_time for d in page.files if d.upload_time]
                updated = max(times) if times else None
        serving = self.repository.serving(name)
        if kind != PRIVATE:
            state = serving.store.read_page(name)
            if state is not None:
                versions.update(dict.fromkeys(state.page.versions))
                if state.checked > 0:
                    checked = format_time(datetime.fromtimestamp(state.checked, timezone.utc))
                    updated = max(filter(None, [updated, checked]))
            files_here += _count_records(serving.store.files / name)
        return Summary(
            index=self.repository.index_of(name),
            name=name,
            kind=kind,
            latest=_latest(versions),
            versions=len(versions),
            files_here=files_here,
            updated=updated,
        )

    def _keep(self, key: tuple[str, bool], view: _Versions) -> None:
        with self._lock:
            self._views[key] = view
            self._views.move_to_end(key)
            held = sum(v.size for v in self._views.values())
            while len(self._views) > 1 and (len(self._views) > _VIEW_CACHE or held > _VIEW_ITEMS):
                held -= self._views.popitem(last=False)[1].size

    def _description(
        self, name: NormalizedName, view: _Versions, mirrored: ProjectPage | None, private: ProjectPage | None
    ) -> Description | None:
        """The long description of the latest version of ``view`` (as the project list shows it),
        else of the newest other one whose core metadata this nest holds (a mirrored project's
        latest may not be cached); None if it holds none of :data:`_DESCRIBED_VERSIONS` of them.
        Nothing is fetched."""
        latest = _latest(view.versions)
        if latest is None:
            return None
        tried = [latest, *(v for v in view.versions if v != latest)][:_DESCRIBED_VERSIONS]
        serving = self.repository.serving(name)  # a routed index's cache holds its files
        for version in tried:
            where = view.versions.index(version)
            (rows,) = view.rows(where, where + 1, mirrored, private)
            ours = [row.dist for row in rows.files if row.dist.origin == "private"]
            theirs = [row.dist for row in rows.files if row.dist.origin != "private"]
            held = (self.repository.held_metadata(name, ours) if ours else None) or (
                serving.held_metadata(name, theirs) if theirs else None
            )
            if held is not None:
                return _described(version, held)
        return None

    def _sources(
        self, name: NormalizedName, kind: str
    ) -> tuple[ProjectPage | None, frozenset[str], ProjectPage | None, dict[str, dict[str, str | None]], int]:
        """What the page of ``name`` is made of: the mirror's page and its cached files (the
        model the Simple API serves from), the private page, and the build record and its mtime."""
        mirrored, kept = None, frozenset[str]()
        if kind != PRIVATE:
            held = self.repository.serving(name).mirror.stored(name)
            if held is not None:
                mirrored, kept = held
        private, built, built_stamp = None, {}, 0
        if kind != MIRROR:
            private = self.repository.private.page(name)
            built_stamp = _mtime_ns(state_path(self.config.nestegg_dir, name))
            built = read_record(self.config.nestegg_dir, name).files
        return mirrored, kept, private, built, built_stamp

    def _latest_runs(self, names: list[str]) -> dict[str, Run]:
        if not names or not self.runs.exists():
            return {}
        return self.runs.latest(names)

    def _runs(self, name: str | None, pages: Pages, *, among: list[str] | None = None) -> list[Run]:
        if not self.runs.exists():
            return []
        return self.runs.runs(name, limit=pages.per_page, offset=pages.offset, among=among)

    # access -------------------------------------------------------------------------------------

    def _visible(self, environ: Environ) -> Callable[[str], bool]:
        """Which names this request may see: with ``private_read_auth``, private ones need
        credentials (checked when a private name is first asked about, if ever)."""
        return _everyone if self.guard is None else self.guard.visible(environ)

    def _shows_private(self, environ: Environ) -> Callable[[], bool]:
        """Whether this request may see private names listed, asked only of a list that has
        some: their kind says which they are, without a look at each."""
        guard = self.guard
        if guard is None:
            return lambda: True
        allowed: list[bool] = []

        def shows() -> bool:
            if not allowed:
                allowed.append(guard.allows(environ))
            return allowed[0]

        return shows

    def _refused(self, request: _Request, name: str) -> Iterable[bytes] | None:
        """The read guard's answer (401) when ``name`` is private and the request has no credentials."""
        guard = self.guard
        if guard is None:
            return None
        probe = dict(request.environ, PATH_INFO=f"/simple/{name}/")
        return guard(probe, request.start_response)

    def _name(self, request: _Request, raw: str, where: str) -> NormalizedName | list[bytes]:
        """The normalized project name; else the answer: a redirect to the page under that name,
        or the read guard's 401 for a private project without credentials."""
        if not is_valid_name(raw):
            raise NotFound(f"{cut(raw, 80)!r} is not a project name")
        name = canonicalize_name(raw)
        if name != raw:  # the query goes with it
            return self._redirect(request.environ, request.start_response, f"{PREFIX}/{where}/{name}")
        refused = self._refused(request, name)
        return name if refused is None else list(refused)

    def _index_url(self, environ: Environ) -> str:
        """The index URL to give pip: the Simple API's, as the pages' file URLs start."""
        return base_url(environ, self.config.public_url) + "/simple/"

    # answers ------------------------------------------------------------------------------------

    def _html(
        self, request: _Request, title: str, body: webpages.Safe, *, refresh: bool = False
    ) -> Iterable[bytes]:
        page = webpages.layout(
            root=request.root,
            title=title,
            body=body,
            json_url=_with_format_json(request),
            version=__version__,
            refresh=refresh,
        )
        return self._send(request, "200 OK", "text/html; charset=utf-8", page.encode(), cache="no-cache")

    def _json(self, request: _Request, data: object) -> Iterable[bytes]:
        body = json.dumps(data, indent=1).encode()
        return self._send(request, "200 OK", "application/json", body, cache="no-cache")

    @staticmethod
    def _send(request: _Request, status: str, content_type: str, body: bytes, *, cache: str) -> list[bytes]:
        request.start_response(
            status,
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", cache),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", webpages.CSP),
                ("Referrer-Policy", "same-origin"),
            ],
        )
        return [] if request.environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _redirect(self, environ: Environ, start_response: StartResponse, target: str) -> list[bytes]:
        # under the path of the public URL, if one is set: the front server's, not the app's
        moved_to = location(environ, "/" + target, self.config.public_url)
        body = f"see {moved_to}\n".encode()
        start_response(
            "302 Found",
            [
                ("Location", moved_to),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


# helpers ----------------------------------------------------------------------------------------


def _everyone(_name: str) -> bool:
    return True


def _outcome(run: Run | None) -> str | None:
    return None if run is None else run.outcome


def _build_json(build: SourceBuild | None, status: BuildStatus | None = None) -> dict[str, Any] | None:
    if build is None:
        return None
    ci = build.ci
    return {
        **({"status": status.to_json()} if status is not None else {}),
        "name": build.name,
        "repo_type": build.repo_type,
        "repo_url": mask_text(build.repo_url),
        "private": build.private,
        "versions": [{"version": v.version, "tag": v.tag} for v in build.versions],
        "ci": None
        if ci is None
        else {"command": ci.command, "watch": list(ci.watch), "interval": ci.interval, "timeout": ci.timeout},
    }


def _with_format_json(request: _Request) -> str:
    query = {k: v for k, v in request.query.items() if k != "format"}
    pairs = [(k, value) for k, values in query.items() for value in values] + [("format", "json")]
    # PATH_INFO is the bytes the client sent, read as latin-1: escaped as they came
    path = quote(str(request.environ.get("PATH_INFO", "")).encode("latin-1", "replace"))
    return f"{request.root}{path}?{urlencode(pairs)}"


def _described(version: str, metadata: bytes) -> Description | None:
    """The description ``metadata`` gives ``version``, cut to :data:`DESCRIPTION_CHARS`."""
    try:
        fields = metadata_fields(metadata)
    except ValueError:  # unreadable headers: as if none were held
        return None
    text = (fields.get("description") or [""])[0]
    if not text.strip():
        return None
    content_type = next(iter(fields.get("description-content-type", ())), None)
    return Description(
        version=version,
        text=text[:DESCRIPTION_CHARS],
        content_type=content_type,
        cut=max(0, len(text) - DESCRIPTION_CHARS),
    )


def _version_key(version: str) -> tuple[int, Version | str]:
    parsed = parse_version(version)
    return (0, version) if parsed is None else (1, parsed)


def _latest(versions: Iterable[str]) -> str | None:
    """The highest final release, else the highest version at all."""
    parsed = [(v, version) for version in versions if (v := parse_version(version)) is not None]
    if not parsed:
        return None
    final = [item for item in parsed if not item[0].is_prerelease]
    return max(final or parsed)[1]


def _count_records(folder: Path) -> int:
    """How many files are cached in ``folder`` (each has a ``.json`` record beside it)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.endswith(".json") and not e.name.startswith("."))
    return 0


def _build_status(root: Path, build: SourceBuild) -> BuildStatus:
    """What ``builds``' record of ``build`` says of its last fetch and of its configured versions
    that fail (one taken out of the config since is no failure)."""
    record = read_record(root, build.name)
    configured = {str(v) for v in (parse_version(c.version) for c in build.versions) if v is not None}
    return BuildStatus(
        fetched_at=format_time(datetime.fromtimestamp(record.fetched_at, timezone.utc))
        if record.fetched_at is not None
        else None,
        fetch_error=record.fetch_error or None,
        failed={version: error for version, error in record.failed.items() if version in configured},
    )
