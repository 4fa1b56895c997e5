"""More upstream indexes on one mirror, each under its own URL prefix and with its own cache.

``<mirror>/upstreams/<key>/simple/`` is a mirror of another index, so an installer that was
told to use some other index (or extra index) can be pointed at the mirror instead of going
around it. The key is derived from the index URL: the same index always gets the same URL, which
matters to tox, whose environments reinstall when an index URL in their variables changes.

The cache is the mirror's (namespaced per upstream by the store, so two indexes with different
files under one project name never mix). Private projects are the mirror's own whatever the route:
one private store, one set of rules, and source builds run by the mirror's builder.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable

from nestegg_core.errors import NotFound
from nestegg_core.http.answers import MOUNT
from nestegg_core.http.app import NesteggApp
from nestegg_core.http.types import Environ, StartResponse
from nestegg_core.index.repository import Repository
from nestegg_core.urls import mask_url, normalize_index_url

from .server import Mirror

logger = logging.getLogger(__name__)

#: first path segment of the mounted upstreams
PREFIX = "upstreams"


def upstream_key(url: str) -> str:
    """The stable path segment of the upstream at ``url`` (two accounts on one index are two keys)."""
    return hashlib.sha256(normalize_index_url(url).encode("utf-8")).hexdigest()[:16]


class UpstreamMounts:
    """The upstreams mounted on ``mirror`` besides its own; add them with :meth:`index_url`."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        #: whether mounted upstreams revalidate every page on first use (``--refresh``)
        self.refresh = False
        self._apps: dict[str, NesteggApp] = {}
        self._lock = threading.Lock()
        mirror.nest.add_route(PREFIX, self._dispatch)

    def index_url(self, url: str) -> str:
        """The URL on the mirror that serves the index at ``url``, mounted on first use.

        The mirror's own upstream is served at the mirror's ``index_url``.
        """
        normalized = normalize_index_url(url)
        if normalized == self.mirror.config.upstream_url:
            return self.mirror.index_url
        key = upstream_key(normalized)
        with self._lock:
            if key not in self._apps:
                self._mount(key, normalized)
        return f"{self.mirror.url}/{PREFIX}/{key}/simple/"

    def repositories(self) -> list[Repository]:
        """The repositories of the mounted upstreams, in the order they were mounted."""
        with self._lock:
            return [app.repository for app in self._apps.values()]

    def _mount(self, key: str, url: str) -> None:
        main = self.mirror.repository
        config = main.config.with_changes(index_url=url)
        # the routes of the mirror apply here too: a routed name comes from its own index's
        # mirror (the same one as at /simple/), whichever index was mounted
        repository = Repository(config, routes=main.routes)
        # the routes of a Simple API only: the mirror's app in front already logs and counts, and
        # uploads, builds and web pages are the mirror's own. One private store, one builder and
        # one read guard for every route: a private name never reaches any upstream, and is read
        # (or listed in the root index) under a mount only with the credentials it needs at /simple/
        # an extra index: pip and uv go on to the next index after its 404 (uv stops at a 410)
        app = NesteggApp(repository, guard=self.mirror.nest.guard, last_index=False)
        repository.private = main.private
        repository.downloads.slots = main.downloads.slots  # one bound on the downloads of a process
        repository.clients_gone = main.clients_gone  # the server's: its background starts when they go
        repository.clients_sending = main.clients_sending
        repository.before_private = lambda name: main.before_private(name) if main.before_private else None
        if self.refresh:
            repository.mirror.refresh_all()
        # its pages made again and kept in the background, and made ahead, stopped with the mirror
        self.mirror.nest.add_service(repository.refresher)
        self.mirror.nest.add_service(repository.keeper)
        if repository.ahead is not None:
            self.mirror.nest.add_service(repository.ahead)
        self._apps[key] = app
        logger.info("mirroring %s at %s/%s/%s/simple/", mask_url(url), self.mirror.url, PREFIX, key)

    def _dispatch(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # PATH_INFO is /upstreams/<key>/<rest>; the app of <key> sees /<rest> under a longer SCRIPT_NAME
        parts = environ.get("PATH_INFO", "").split("/", 3)
        key = parts[2] if len(parts) > 2 else ""
        app = self._apps.get(key)
        if app is None:
            raise NotFound(f"no upstream is mounted at {PREFIX}/{key}")
        inner = dict(environ)
        inner["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + f"/{PREFIX}/{key}"
        inner[MOUNT] = f"/{PREFIX}/{key}"  # its pages' file URLs: under the public URL, if any
        inner["PATH_INFO"] = "/" + (parts[3] if len(parts) > 3 else "")
        return app(inner, start_response)
