"""``nestegg_core.wsgi:application``: the mirror for gunicorn, Apache mod_wsgi or any WSGI server.

Configured like the command line, from the environment: ``NESTEGG_CONFIG`` names the
``nestegg.yml`` (else the usual places are searched), and ``NESTEGG_CACHE_DIR``,
``NESTEGG_INDEX_URL`` and ``NESTEGG_OFFLINE`` override its ``nestegg_dir``, ``index_url`` and
``offline``. Under mod_wsgi, ``SetEnv`` (``mod_wsgi-express --setenv``) values reach the
application in the request rather than the process environment; those of the first request are
used too, before the process's own.

Importing this module does no work: the application is built on the first request, once per
process. Under a pre-forking server (gunicorn, mod_wsgi daemons) that is after the fork, so no
worker inherits another's threads or open files, even with gunicorn's ``--preload``. The worker
processes share the cache dir safely: a file is downloaded once across all of them (file locks) and
every worker renders a page from the same state on disk.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping

from .config.config import Config, environ_settings, load_config
from .errors import NesteggError
from .http.types import Environ, StartResponse, WSGIApp
from .serve.compose import compose

logger = logging.getLogger(__name__)


def config_from_environ(environ: Mapping[str, str] | None = None) -> Config:
    """The config that ``NESTEGG_CONFIG`` and the other ``NESTEGG_*`` variables of ``environ`` say."""
    env = dict(os.environ if environ is None else environ)
    return load_config(environ=env, **environ_settings(env))


def make_application(environ: Mapping[str, str] | None = None) -> WSGIApp:
    """The mirror's WSGI application for the config of ``environ`` (default ``os.environ``).

    Background services of the app (CI polling) are started, as a server does once it listens.
    """
    composition = compose(config_from_environ(environ))
    composition.app.start_services()
    return composition.wsgi


class LazyApplication:
    """A WSGI application that builds the real one on its first request, once, thread-safely.

    ``factory`` gets the ``NESTEGG_*`` values of the process environment, overridden by string
    values of the first request's WSGI environ (mod_wsgi's ``SetEnv``). A config error is logged and
    answered with 500 and the message, and tried again on the next request.
    """

    def __init__(self, factory: Callable[[Mapping[str, str]], WSGIApp] = make_application) -> None:
        self.factory = factory
        self._app: WSGIApp | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        app = self._app
        if app is None:
            try:
                app = self._build(environ)
            except NesteggError as exc:
                logger.error("cannot start nestegg: %s", exc)
                body = f"nestegg is not configured right: {exc}\n".encode()
                start_response(
                    "500 Internal Server Error",
                    [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
                )
                return [body]
        return app(environ, start_response)

    def _build(self, environ: Environ) -> WSGIApp:
        with self._lock:
            if self._app is None:
                env = dict(os.environ)
                env.update(
                    (k, v) for k, v in environ.items()
                    if k.startswith("NESTEGG_") and isinstance(v, str)
                )  # fmt: skip
                self._app = self.factory(env)
                logger.info("nestegg ready in process %d", os.getpid())
            return self._app


#: the entry point: ``gunicorn nestegg_core.wsgi:application``, ``WSGIScriptAlias`` of a file that
#: imports it, or ``mod_wsgi-express start-server --application-type module nestegg_core.wsgi``
application = LazyApplication()
