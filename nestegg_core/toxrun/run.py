"""The tox side of nestegg: one mirror for a tox run, and the variables that send installs to it.

:mod:`tox_nestegg.plugin` only declares tox options and calls into this module, so everything here is
tested without tox. A run goes::

    settings = resolve_settings(...)          # command line over tox config over defaults
    run = ToxRun(load_tox_config(settings), work_dir=..., refresh=settings.refresh).start()
    ... run.variables(set_env, passes) ...    # for each environment, exported into its set_env
    run.stop()

**Stable URL.** tox records the index variables of every install in ``.tox-info.json`` and runs the
installer again when they change, so a new port each run would reinstall everything each run. The
port is kept in ``<work dir>/.nestegg-port``; the first run takes a port derived from the work
dir (below every OS's ephemeral range, so that short-lived client sockets do not take it), and a
run that finds its port busy (say a second tox of the same project) falls back to other derived
ports, then to any free port, and keeps what it got for next time.

**The user's indexes.** Whatever index an environment would have used without nestegg becomes an
upstream of the mirror instead of being bypassed: the main upstream (``index_url`` of
``nestegg.yml``, else ``PIP_INDEX_URL``, else pip's config) is served at ``/simple/``; an index set
in the environment's ``set_env`` (or passed in from outside for uv, or an extra index of pip or uv)
is mounted at ``/upstreams/<key>/simple/`` with a cache of its own (:mod:`nestegg_core.serve.mounts`).
Local indexes and find-links (directories, ``file:`` URLs) are left alone: they are no network
access, work offline, and someone put them there on purpose (a wheelhouse). Remote find-links pages
cannot be mirrored (they are not a Simple API) and are dropped with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nestegg_core.builds.sources import BuildOutcome, SourceBuilder
from nestegg_core.config.config import Config, load_config
from nestegg_core.config.pipindex import pip_config_value
from nestegg_core.errors import NesteggError
from nestegg_core.http.types import WSGIApp
from nestegg_core.index.circuit import Outage
from nestegg_core.serve.mounts import UpstreamMounts
from nestegg_core.serve.server import Mirror, describe
from nestegg_core.storage.fs import write_atomic
from nestegg_core.urls import mask_url

from .settings import (
    INDEX_VARIABLES,
    PIP_EXTRA_INDEX_URL,
    PIP_FIND_LINKS,
    PIP_INDEX_URL,
    UV_DEFAULT_INDEX,
    UV_EXTRA_INDEX_URL,
    UV_FIND_LINKS,
    UV_INDEX,
    UV_INDEX_URL,
    Settings,
)

logger = logging.getLogger(__name__)

PORT_FILE = ".nestegg-port"
#: ports derived from the work dir: below the ephemeral ranges of Linux (32768+), macOS and
#: Windows (49152+), so no outgoing connection holds one when the next run wants it
STABLE_PORTS = range(20000, 30000)
DERIVED_PORTS = 3

#: pip reads these from its config files when the variable is not set
_PIP_OPTIONS = {
    PIP_INDEX_URL: "index-url",
    PIP_EXTRA_INDEX_URL: "extra-index-url",
    PIP_FIND_LINKS: "find-links",
}
# `uv --index` takes `[name=]url`; a URL alone never matches (its scheme has a colon)
_NAMED_INDEX = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)=(.+)$")


# the mirror's config ----------------------------------------------------------------------------------


def load_tox_config(
    settings: Settings, environ: Mapping[str, str] | None = None, *, root: Path | None = None
) -> Config:
    """The mirror's config: nestegg.yml (named, else looked up, in the tox ``root`` first), for
    this run alone (``for_one_run``: a nestegg.yml may open ``nestegg serve`` to the network, or
    put it behind a front server)."""
    offline = True if settings.offline else None
    config = load_config(settings.config_file, environ=environ, project=root, offline=offline)
    return config.for_one_run()


# ports -------------------------------------------------------------------------------------


def port_candidates(work_dir: Path, saved: int | None = None, *, count: int = DERIVED_PORTS) -> list[int]:
    """Ports to try in order: the one kept from the last run, ports derived from ``work_dir``, 0."""
    ports = [] if saved is None else [saved]
    key = os.path.normcase(str(work_dir.absolute()))
    for index in range(count):
        digest = hashlib.sha256(f"{index}:{key}".encode()).digest()
        port = STABLE_PORTS.start + int.from_bytes(digest[:4], "big") % len(STABLE_PORTS)
        if port not in ports:
            ports.append(port)
    ports.append(0)
    return ports


def read_port(path: Path) -> int | None:
    """The port kept in ``path``, or None if there is none (or garbage)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        return None
    return int(text)


# variables ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A value of an index variable an environment would have had without nestegg."""

    value: str
    #: where it came from: "set_env" (the project's tox config), "environment" or "pip config"
    origin: str

    @property
    def own(self) -> bool:
        return self.origin == "set_env"


def found_settings(
    set_env: Mapping[str, str],
    passes: Callable[[str], bool],
    environ: Mapping[str, str],
    pip_config: Mapping[str, str],
) -> dict[str, Found]:
    """The index variables as the environment's installers would see them without nestegg.

    ``set_env`` holds the environment's own values of :data:`INDEX_VARIABLES`; a variable
    of the surrounding ``environ`` counts when ``passes`` says tox passes it on; pip falls back
    to ``pip_config`` (option values by variable name).
    """
    found = {}
    for name in INDEX_VARIABLES:
        if name in set_env:
            found[name] = Found(set_env[name], "set_env")
        elif name in environ and passes(name):
            found[name] = Found(environ[name], "environment")
        elif name in pip_config:
            found[name] = Found(pip_config[name], "pip config")
    return found


@dataclass(frozen=True)
class Injection:
    """The variables to export into an environment, and what to tell the user about them."""

    variables: dict[str, str]
    warnings: tuple[str, ...] = ()


def install_variables(
    found: Mapping[str, Found],
    route: Callable[[str | None], str],
    *,
    explicit_upstream: bool = False,
) -> Injection:
    """The variables that point pip and uv at the mirror, given what they would use without it.

    ``route(None)`` is the mirror's main index; ``route(url)`` the mirror's URL for the index
    at ``url``. With ``explicit_upstream`` (an ``index_url`` in nestegg.yml) a main index that
    comes from outside the project (the environment, pip config) gives way to nestegg's;
    a main index in the environment's own ``set_env`` always wins.
    """
    warnings: list[str] = []

    def main_index(names: Iterable[str]) -> str:
        for name in names:
            item = found.get(name)
            if item is None or not item.value.strip():
                continue  # pip and uv read an empty variable as unset
            if explicit_upstream and not item.own:
                return route(None)
            return _routed(item.value.strip(), route)
        return route(None)

    def index_list(name: str) -> str:
        item = found.get(name)
        return "" if item is None else " ".join(_routed(entry, route) for entry in item.value.split())

    uv_index = main_index((UV_DEFAULT_INDEX, UV_INDEX_URL))
    variables = {
        PIP_INDEX_URL: main_index((PIP_INDEX_URL,)),
        PIP_EXTRA_INDEX_URL: index_list(PIP_EXTRA_INDEX_URL),
        # UV_INDEX_URL too: uv releases before UV_DEFAULT_INDEX know only that one
        UV_DEFAULT_INDEX: uv_index,
        UV_INDEX_URL: uv_index,
        UV_INDEX: index_list(UV_INDEX),
        UV_EXTRA_INDEX_URL: index_list(UV_EXTRA_INDEX_URL),
    }
    for name, separator in ((PIP_FIND_LINKS, " "), (UV_FIND_LINKS, ",")):
        item = found.get(name)
        if item is None:
            continue
        entries = item.value.split() if separator == " " else [e.strip() for e in item.value.split(",")]
        remote = [entry for entry in entries if _is_remote(entry)]
        if remote:  # else the user's value stays as it is: nothing is exported
            variables[name] = separator.join(entry for entry in entries if entry and not _is_remote(entry))
            shown = ", ".join(repr(mask_url(entry)) for entry in remote)
            warnings.append(
                f"nestegg: ignoring remote find-links {shown} of {name} ({item.origin}): "
                "a links page cannot be mirrored; publish its files to the mirror's upstream"
            )
    return Injection(variables, tuple(warnings))


def _describe_builds(outcomes: Iterable[BuildOutcome]) -> str:
    parts = []
    for outcome in outcomes:
        commit = f" at {outcome.commit[:12]}" if outcome.commit else ""
        part = f"{outcome.version} {outcome.status} ({outcome.ref}{commit})"
        parts.append(part if outcome.ok else f"{part}: {outcome.message}")
    return ", ".join(parts) or "no versions configured"


def _is_remote(entry: str) -> bool:
    return entry.lower().startswith(("http://", "https://"))


def _routed(entry: str, route: Callable[[str | None], str]) -> str:
    """``entry`` of an index option with its http(s) URL replaced by the mirror's."""
    named = _NAMED_INDEX.match(entry)
    if named is not None and _is_remote(named.group(2)):
        return f"{named.group(1)}={route(named.group(2))}"
    return route(entry) if _is_remote(entry) else entry


# the run ----------------------------------------------------------------------------------


class ToxRun:
    """The mirror of one tox invocation, shared by all its environments (``tox p`` too)."""

    def __init__(
        self,
        config: Config,
        *,
        work_dir: Path,
        refresh: bool = False,
        environ: Mapping[str, str] | None = None,
        access_log: bool = False,
        middleware: Callable[[WSGIApp], WSGIApp] | None = None,
    ) -> None:
        self.config = config
        self.work_dir = work_dir
        self.refresh = refresh
        #: whether the access log (a line per request) may reach tox's output
        self.access_log = access_log
        self.environ = dict(os.environ if environ is None else environ)
        self._middleware = middleware
        self._mirror: Mirror | None = None
        self._mounts: UpstreamMounts | None = None
        self._warned: set[str] = set()
        self._pip_config: dict[str, str] = {}
        self._quieted: list[tuple[logging.Logger, int]] = []

    @property
    def mirror(self) -> Mirror:
        if self._mirror is None:
            raise NesteggError("the mirror of this tox run is not started")
        return self._mirror

    @property
    def port_file(self) -> Path:
        return self.work_dir / PORT_FILE

    def start(self) -> ToxRun:
        """Bind (kept port first), serve, and remember the port; :class:`NesteggError` if impossible."""
        # the upstream is resolved now, so that a config problem stops the run before any install
        upstream = None if self.config.offline else self.config.upstream_url
        self._quiet("waitress", logging.ERROR)  # its queue-depth warnings would land in tox's output
        if not self.access_log:
            self._quiet("nestegg_core.access", logging.WARNING)
            # an outage is said once, at the end of the run (stop), not when its circuit opens,
            # nor as each page lists its cached files alone
            self._quiet("nestegg_core.index.circuit", logging.ERROR)
            self._quiet("nestegg_core.index.mirror.down", logging.ERROR)
        error: NesteggError | None = None
        for port in port_candidates(self.work_dir, read_port(self.port_file)):
            # no CI polling nor trigger: this mirror lives for one tox run; pages a run's
            # downloads made stale are still made again, for the next run
            mirror = Mirror(self.config.with_changes(port=port), middleware=self._middleware)
            try:
                mirror.start()
            except NesteggError as exc:
                logger.debug("port %d: %s", port, exc)
                error = error or exc
                continue
            self._mirror = mirror
            break
        else:
            self._restore_logging()
            raise NesteggError(f"cannot start the mirror: {error}")
        self._keep_port(self.mirror.port)
        self._mounts = UpstreamMounts(self.mirror)
        if self.refresh:
            self.mirror.repository.mirror.refresh_all()
            for _, routed in self.mirror.repository.routes.items():
                routed.mirror.refresh_all()
            self._mounts.refresh = True
        self._pip_config = {
            name: value
            for name, option in _PIP_OPTIONS.items()
            if (value := pip_config_value(option, self.environ)) is not None
        }
        logger.debug("nestegg upstream %s", mask_url(upstream) if upstream else "none (offline)")
        return self

    def build_sources(self) -> list[str]:
        """Build the configured source builds (or find them built); one line per project, logged.

        A failed build does not stop the run: an environment that needs the project fails at
        its install with the build's message; the others go on.
        """
        if not self.config.source_builds:
            return []
        builder = SourceBuilder(
            self.config, self.mirror.repository.private, index_url=lambda: self.mirror.index_url
        )
        lines = []
        for build in self.config.source_builds:
            try:
                outcomes = builder.build(build.name, retry_failed=False, refresh=False)
            except NesteggError as exc:
                outcomes, problem = [], str(exc)
            else:
                problem = ""
            line = f"nestegg: source build {build.name}: " + (problem or _describe_builds(outcomes))
            ok = not problem and all(outcome.ok for outcome in outcomes)
            logger.log(logging.WARNING if ok else logging.ERROR, "%s", line)
            lines.append(line)
        return lines

    def stop(self) -> None:
        """Stop serving (idempotent); then a line per upstream the run could not reach, logged."""
        mirror, self._mirror = self._mirror, None
        if mirror is not None:
            mirror.stop()
            for mounted in self._mounts.repositories() if self._mounts else ():
                mounted.close()  # as the mirror's own: its files kept before tox's process ends
        self._restore_logging()
        if mirror is not None:
            for outage in self._outages(mirror):
                logger.warning("nestegg: %s", outage.describe())

    def outages(self) -> list[Outage]:
        """What the run saw of each upstream it could not reach: the main one's, then the mounts'."""
        return self._outages(self.mirror)

    def _outages(self, mirror: Mirror) -> list[Outage]:
        repositories = [mirror.repository, *(self._mounts.repositories() if self._mounts else ())]
        return [outage for repository in repositories for outage in repository.circuits.outages()]

    def describe(self) -> str:
        """The one line for tox's output: where the mirror is and which cache it uses."""
        return describe(self.mirror)

    def index_url(self, upstream: str | None = None) -> str:
        """The mirror's URL for the index at ``upstream`` (None: its own upstream)."""
        if upstream is None or self._mounts is None:
            return self.mirror.index_url
        return self._mounts.index_url(upstream)

    def variables(
        self, set_env: Mapping[str, str], passes: Callable[[str], bool] = lambda _: True
    ) -> dict[str, str]:
        """What to export into an environment with these ``set_env`` values of :data:`INDEX_VARIABLES`.

        ``passes(name)`` says whether tox passes the variable ``name`` on from the outside.
        """
        found = found_settings(set_env, passes, self.environ, self._pip_config)
        injection = install_variables(
            found, self.index_url, explicit_upstream=self.config.index_url is not None
        )
        for warning in injection.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                logger.warning("%s", warning)
        return injection.variables

    def _keep_port(self, port: int) -> None:
        if read_port(self.port_file) == port:
            return
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.port_file, f"{port}\n".encode("ascii"))
        except OSError as exc:  # the run works; the next one may reinstall
            logger.warning("nestegg: cannot keep the port in %s: %s", self.port_file, exc)

    def _quiet(self, name: str, level: int) -> None:
        target = logging.getLogger(name)
        if target.level < level:
            self._quieted.append((target, target.level))
            target.setLevel(level)

    def _restore_logging(self) -> None:
        while self._quieted:
            target, level = self._quieted.pop()
            target.setLevel(level)

    def __enter__(self) -> ToxRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
