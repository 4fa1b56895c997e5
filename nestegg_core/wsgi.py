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

The entry point stops what its app started when the process exits, as ``nestegg serve`` does
when it stops: the source builds that run (with every process they started), CI runs, the
background's work, then each repository's downloads and files (its counts are written to the
nest). That is done by whichever comes first of: the interpreter's exit, before it joins the
threads that are not daemons (gunicorn's gthread pool, whose request may wait on a build), and
again in :mod:`atexit` (mod_wsgi runs those when a daemon process shuts down, waitress-serve once
Ctrl-C stopped it). A SIGTERM that has a Python handler of the server's (gunicorn's graceful stop
of a worker) stops at once only what would outlive the worker or hold it past its graceful
timeout, the source builds and CI runs, then calls that handler: the requests in flight, a
download among them, are finished by the server before the process exits. The handler can be set
from the main thread only: where the app is built on the first request of a sync worker, or in
gunicorn's ``post_worker_init`` hook below (``gunicorn -c python:nestegg_core.wsgi``), which any
worker class runs there.

:func:`make_application` touches nothing of the process: an application that embeds the mirror
stops it with :meth:`Application.stop` (its handlers and exit are its own).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from types import FrameType

from .config.config import Config, environ_settings, load_config
from .errors import NesteggError
from .http.types import Environ, StartResponse, WSGIApp
from .serve._threading import before_threads_are_joined
from .serve.compose import Composition, compose

logger = logging.getLogger(__name__)

#: seconds the stop of an app waits for each of its repositories' work (a file being cached)
STOP_TIMEOUT = 5.0


def config_from_environ(environ: Mapping[str, str] | None = None) -> Config:
    """The config that ``NESTEGG_CONFIG`` and the other ``NESTEGG_*`` variables of ``environ`` say."""
    env = dict(os.environ if environ is None else environ)
    return load_config(environ=env, **environ_settings(env))


def make_application(environ: Mapping[str, str] | None = None) -> Application:
    """The mirror's WSGI application for the config of ``environ`` (default ``os.environ``).

    Background services of the app (CI polling) are started, as a server does once it listens.
    Nothing of the process is changed (no exit hook, no signal handler): the caller stops what
    the app started with :meth:`Application.stop` when it is done with it.
    """
    composition = compose(config_from_environ(environ))
    composition.app.start_services()
    return Application(composition)


class Application:
    """A mirror's WSGI application (:func:`make_application`), and the stop of what it started."""

    def __init__(self, composition: Composition) -> None:
        self.composition = composition
        #: the application proper, which this one calls
        self.wsgi = composition.wsgi
        self._stopped = False
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self.wsgi(environ, start_response)

    def stop_services(self) -> None:
        """Stop what would outlive the process or hold its exit: the source builds that run, with
        every process they started, the CI runs and polls, the background's work. Requests are
        still answered (a download goes on); a source build not built is then a 502."""
        self.composition.app.stop_services()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop everything the app started: its services, then each repository's downloads (up to
        ``timeout`` seconds each) and files; its counts are written to the nest. Once only: a
        second caller returns when the first is done."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self.composition.stop(timeout)


class _Exit:
    """The apps the entry point made in this process, each stopped once when it exits, whichever
    way comes first; a second caller returns once the first has stopped them (the interpreter
    then goes on). An app stopped before is taken out (:meth:`discard`)."""

    def __init__(self) -> None:
        self._apps: list[Application] = []
        self._lock = threading.Lock()
        self._hooked = False
        self._previous: Callable[[int, FrameType | None], object] | None = None

    def add(self, app: Application) -> None:
        with self._lock:
            self._apps.append(app)
            if not self._hooked:
                self._hooked = True
                before_threads_are_joined(self.stop)
                atexit.register(self.stop)
        self.on_sigterm()

    def discard(self, app: Application) -> None:
        with self._lock:
            self._apps = [each for each in self._apps if each is not app]

    def stop(self) -> None:
        with self._lock:  # held throughout: whoever comes next waits for it
            apps, self._apps = self._apps, []
            for app in apps:
                try:
                    app.stop(STOP_TIMEOUT)
                except Exception:  # an exit goes on: what else there is to stop is stopped
                    logger.exception("cannot stop nestegg in process %d", os.getpid())

    def stop_services(self) -> None:
        with self._lock:  # held throughout: the exit's stop comes after, not beside it
            for app in self._apps:
                try:
                    app.stop_services()
                except Exception:  # the server's own handler is called all the same
                    logger.exception("cannot stop nestegg's builds in process %d", os.getpid())

    def on_sigterm(self) -> bool:
        """Stop the apps' builds and CI on SIGTERM, then call the handler the server set (in this
        thread: it would wait for a request that may wait on a build); whether it will. Only the
        main thread may set a handler, and only a Python handler is called on: the default one
        ends the process at once, and another set outside Python cannot be called."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if self._previous is not None:
            return True
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False
        self._previous = previous
        signal.signal(signal.SIGTERM, self._terminated)
        return True

    def _terminated(self, signum: int, frame: FrameType | None) -> None:
        # gunicorn's graceful stop: its requests in flight are finished before the process exits,
        # whose hooks stop the rest (downloads under way among it)
        try:
            threading.Thread(target=self.stop_services, name="nestegg-stop", daemon=True).start()
        except RuntimeError:  # the interpreter is exiting: its hooks stop the app, the server's go on
            logger.debug("no thread to stop nestegg's services on SIGTERM", exc_info=True)
        finally:
            if self._previous is not None:
                self._previous(signum, frame)


#: what the entry point made: stopped at the process's exit
_EXIT = _Exit()


def post_worker_init(_worker: object) -> None:
    """gunicorn's hook, run in each worker's main thread before it serves: its SIGTERM stops the
    app's builds and CI too, whatever thread builds it (``gunicorn -c python:nestegg_core.wsgi``,
    or a config file that imports this)."""
    _EXIT.on_sigterm()


class LazyApplication:
    """A WSGI application that builds the real one on its first request, once, thread-safely:
    the entry point, which stops the app it built when the process exits (see the module's
    docstring), or when :meth:`stop` is called.

    ``factory`` gets the ``NESTEGG_*`` values of the process environment, overridden by string
    values of the first request's WSGI environ (mod_wsgi's ``SetEnv``). A config error is logged and
    answered with 500 and the message, and tried again on the next request.
    """

    def __init__(self, factory: Callable[[Mapping[str, str]], WSGIApp] = make_application) -> None:
        self.factory = factory
        self._app: WSGIApp | None = None
        self._built: Application | None = None
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

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the app built, if any, as the process's exit would; a later request builds another."""
        with self._lock:
            built, self._built, self._app = self._built, None, None
        if built is not None:
            _EXIT.discard(built)
            built.stop(timeout)

    def _build(self, environ: Environ) -> WSGIApp:
        with self._lock:
            if self._app is None:
                env = dict(os.environ)
                env.update(
                    (k, v) for k, v in environ.items()
                    if k.startswith("NESTEGG_") and isinstance(v, str)
                )  # fmt: skip
                built = self.factory(env)
                if isinstance(built, Application):  # served as it is, one call less a request
                    self._built = built
                    _EXIT.add(built)
                    built = built.wsgi
                self._app = built
                logger.info("nestegg ready in process %d", os.getpid())
            return self._app


#: the entry point: ``gunicorn nestegg_core.wsgi:application``, ``WSGIScriptAlias`` of a file that
#: imports it, or ``mod_wsgi-express start-server --application-type module nestegg_core.wsgi``
application = LazyApplication()
