"""The composition root: a mirror's app made of its pieces, each made by its own feature.

Features are factories that return their piece: the upload handler, the read guard, source
builds on demand, the CI service and its trigger, the web UI (loaded on its first request),
and the gate the server asks before it reads a request's body. Only this module puts them
together: none of them knows :class:`~nestegg_core.http.app.NesteggApp` beyond its constructor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nestegg_core.config.config import Config
from nestegg_core.config.credentials import open_credentials
from nestegg_core.errors import BuildError
from nestegg_core.http.app import BodyGate, NesteggApp
from nestegg_core.http.auth import read_guard
from nestegg_core.http.middleware import AccessLog, CountBytes
from nestegg_core.http.types import Environ, ReadGuard, Service, StartResponse, WSGIApp
from nestegg_core.http.uploads import UploadHandler
from nestegg_core.index.repository import Repository
from nestegg_core.storage.private import UPLOADS

if TYPE_CHECKING:
    from nestegg_core.ui.web import WebUI

__all__ = ["Composition", "compose", "create_app"]

#: the web UI's first path segment (``nestegg_core.ui.web.PREFIX``, without importing it)
WEB_PREFIX = "ui"


@dataclass(frozen=True, kw_only=True)
class Composition:
    """A mirror's app and what a server needs of it."""

    #: the routes and services, to mount more upstreams on (``UpstreamMounts``)
    app: NesteggApp
    #: what a WSGI server serves: ``app`` under the access log and the byte counter
    wsgi: WSGIApp
    #: asked by the server before it reads a request's body
    gate: BodyGate

    def stop(self, timeout: float = 5.0) -> None:
        """Stop what the app runs besides its answers, as a server does when it stops: the
        background services (source builds and CI runs are ended, with every process they
        started), then each repository's work and files (the counts are written to the nest)."""
        self.app.stop_services()
        repository = self.app.repository
        for each in (repository, *(routed for _, routed in repository.routes.items())):
            each.close(timeout)


def create_app(config: Config, *, repository: Repository | None = None) -> WSGIApp:
    """The WSGI application of a mirror for ``config``; nothing global, so many can coexist."""
    return compose(config, repository=repository).wsgi


def compose(config: Config, *, repository: Repository | None = None) -> Composition:
    """Make every piece of a mirror for ``config`` and wire them into one app."""
    repository = repository or Repository(config)
    credentials = None if config.credentials_file is None else open_credentials(config.credentials_file)
    upload = UploadHandler(
        repository.private,
        credentials=credentials,
        tmp_dir=config.nestegg_dir / UPLOADS,
        max_size=config.max_upload_size,
        nest=config.nestegg_dir,
    )
    guard = read_guard(config, repository.private, credentials)
    # the routed indexes' renderings are made again, and kept, in the background too
    repositories = [repository, *(routed for _, routed in repository.routes.items())]
    services: list[Service] = [service for r in repositories for service in (r.refresher, r.keeper)]
    if repository.ahead is not None:  # the routed indexes share it
        services.append(repository.ahead)
    post_routes: dict[str, WSGIApp] = {}
    if config.source_builds:
        # imported only when needed: a mirror without source builds never loads them (nor git, CI
        # and their sqlite run store), which keeps a serving process smaller
        from nestegg_core.builds import ci  # noqa: PLC0415
        from nestegg_core.builds.sources import SourceBuilder  # noqa: PLC0415
        from nestegg_core.http.trigger import TriggerHandler  # noqa: PLC0415

        index_url = _own_index_url(repository, config)
        builder = SourceBuilder(config, repository.private, index_url=index_url)
        repository.before_private = builder.ensure
        services.append(builder)  # stopped with the server: so are the builds it runs
        service = ci.service(config, index_url=index_url)
        if service is not None:
            services.append(service)
            post_routes["ci"] = TriggerHandler(service, config.ci_token, public_url=config.public_url)
    ui = LazyWebUI(repository, config, guard)
    app = NesteggApp(
        repository,
        upload=upload,
        guard=guard,
        routes={WEB_PREFIX: ui, "": ui.root},
        post_routes=post_routes,
        services=services,
    )
    return Composition(app=app, wsgi=AccessLog(CountBytes(app, repository.counters)), gate=BodyGate(upload))


def _own_index_url(repository: Repository, config: Config) -> Callable[[], str]:
    """Where a build environment or a CI run finds this mirror: as served (``Mirror.bind`` sets
    ``repository.index_url``), else as configured."""

    def index_url() -> str:
        if repository.index_url:
            return repository.index_url
        if config.port == 0:
            raise BuildError("cannot build: the mirror's own URL is unknown (it listens on port 0)")
        host = config.host if config.host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{config.port}/simple/"

    return index_url


class LazyWebUI:
    """The web interface (:mod:`nestegg_core.ui.web`), imported on its first request.

    A mirror that only installers talk to never loads its pages, templates and run history.
    """

    def __init__(self, repository: Repository, config: Config, guard: ReadGuard | None) -> None:
        self._repository = repository
        self._config = config
        self._guard = guard
        self._ui: WebUI | None = None
        self._lock = threading.Lock()

    def _load(self) -> WebUI:
        with self._lock:
            if self._ui is None:
                from nestegg_core.ui.web import WebUI  # noqa: PLC0415 - see the class docstring

                self._ui = WebUI(self._repository, self._config, guard=self._guard)
            return self._ui

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self._load()(environ, start_response)

    def root(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """``/``: to the project list."""
        return self._load().root(environ, start_response)
