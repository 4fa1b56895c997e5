"""Configuration: the seed's ``nestegg.yml`` format, its lookup, and the upstream pip would use.

Nothing is read at import time; :func:`load_config` reads and validates, :class:`Config` is the value.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
from packaging.utils import NormalizedName, canonicalize_name

from nestegg_core.errors import ConfigError
from nestegg_core.simple.models import is_valid_name, parse_version
from nestegg_core.urls import mask_url

from .pipindex import pip_index_url
from .sizes import parse_size

CONFIG_NAME = "nestegg.yml"
DEFAULT_PORT = 7654
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TTL = 600.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_UPLOAD = 200 * 1024 * 1024
#: how a front server can be told to send a cached file itself (see ``Config.sendfile``)
SENDFILE_MODES = ("x-accel-redirect", "x-sendfile")
DEFAULT_SENDFILE_PREFIX = "/_nestegg/"
DEFAULT_CI_INTERVAL = 300.0
DEFAULT_CI_TIMEOUT = 3600.0
# The limits of what is taken from the upstream: an endless or dripping answer must not grow the
# server or hold a thread without end.
#: bytes of a project page, decoded (the largest real pages are about 20 MB)
MAX_PAGE_SIZE = 64 * 1024**2
#: bytes of a PEP 658 metadata file
MAX_METADATA_SIZE = 16 * 1024**2
#: seconds a page or a metadata file may take in all, however steadily it comes
PAGE_DEADLINE = 120.0
#: bytes of a file whose size neither the index nor the answer gives
MAX_FILE_SIZE = 20 * 1024**3


def default_cache_dir() -> Path:
    """The one nestegg cache of this user, shared by every tool and process."""
    return Path(platformdirs.user_cache_dir("nestegg", appauthor=False))


@dataclass(frozen=True, kw_only=True)
class SourceVersion:
    """One ``versions`` entry of a source build: build ``tag`` (a tag or branch) as ``version``."""

    version: str
    tag: str
    dist_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class CISettings:
    """The ``ci`` entry of a source build: what to run on each new commit of which refs, how often."""

    #: run in the checkout, split like a shell would (no shell runs it); ``tox`` is this Python's tox
    command: str = "tox"
    #: branches and tags to test; empty means the default branch (git ``HEAD``, hg ``default``)
    watch: tuple[str, ...] = ()
    #: seconds between polls of the repository while serving; 0 polls never (trigger URL, CLI)
    interval: float = DEFAULT_CI_INTERVAL
    #: seconds a run may take before it is stopped and recorded as timed out
    timeout: float = DEFAULT_CI_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class SourceBuild:
    """One ``source_builds`` entry: a git or hg repository whose tags are built into the store."""

    name: NormalizedName
    repo_type: str
    repo_url: str
    private: bool = True
    versions: tuple[SourceVersion, ...] = ()
    #: continuous integration of the repository; None: none
    ci: CISettings | None = None


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything a mirror needs; build one with :func:`load_config` or directly in tests."""

    nestegg_dir: Path = field(default_factory=default_cache_dir)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: the upstream Simple API root; None means "the index pip uses", resolved by ``upstream_url``
    index_url: str | None = None
    ttl: float = DEFAULT_TTL
    timeout: float = DEFAULT_TIMEOUT
    offline: bool = False
    #: pages for pip list only the files that fit the interpreter its User-Agent describes
    #: (see ``clients``); off by default, as pip's ``--platform`` cannot be seen
    compatible_only: bool = False
    threads: int = 16
    source_builds: tuple[SourceBuild, ...] = ()
    #: names and fnmatch patterns that are private even before anything was uploaded
    private_names: tuple[str, ...] = ()
    #: a file of ``user:hash`` lines (see ``auth``); uploads need it
    credentials_file: Path | None = None
    #: whether reading private projects needs credentials too
    private_read_auth: bool = False
    max_upload_size: int = DEFAULT_MAX_UPLOAD
    #: the token a POST to ``/ci/trigger/<name>`` must send; None turns the trigger URL off
    ci_token: str | None = field(default=None, repr=False)  # a secret: kept out of reprs
    #: CI runs at the same time (per process)
    ci_jobs: int = 1
    #: None: the app sends cached files; ``x-accel-redirect`` (nginx) or ``x-sendfile`` (Apache's
    #: mod_xsendfile, lighttpd): it answers with a header and the front server sends the file
    sendfile: str | None = None
    #: the nginx ``internal`` location that aliases ``nestegg_dir`` (``x-accel-redirect`` only)
    sendfile_prefix: str = DEFAULT_SENDFILE_PREFIX
    #: bytes the mirror's cached files may take; past it the least recently used are pruned
    max_cache_size: int | None = None
    #: bytes of an upstream project page (decoded) and of a PEP 658 metadata file; an answer over
    #: it fails (502) and the cached page, if any, is served
    max_page_size: int = MAX_PAGE_SIZE
    max_metadata_size: int = MAX_METADATA_SIZE
    #: seconds an upstream page or metadata file may take in all (``timeout`` bounds each read)
    page_deadline: float = PAGE_DEADLINE
    #: bytes of an upstream file whose size neither its page nor its answer gives
    max_file_size: int = MAX_FILE_SIZE
    #: the file this came from, for messages; None for defaults
    source: Path | None = None

    def with_changes(self, **changes: Any) -> Config:
        return replace(self, **changes)

    def without_ci(self) -> Config:
        """This config with no CI (no polling, no trigger URL): for a mirror that serves one run."""
        return replace(
            self, ci_token=None, source_builds=tuple(replace(b, ci=None) for b in self.source_builds)
        )

    @property
    def upstream_url(self) -> str:
        """The upstream index URL with a trailing slash: configured, else the one pip uses."""
        url = self.index_url or pip_index_url()
        return url.rstrip("/") + "/"


def config_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a config is looked for when none is named, first match wins."""
    env = os.environ if environ is None else environ
    found = []
    if env.get("NESTEGG_CONFIG"):
        found.append(Path(env["NESTEGG_CONFIG"]))
    found.append(Path.cwd() / CONFIG_NAME)
    found.append(Path.home() / CONFIG_NAME)
    found.append(Path(platformdirs.user_config_dir("nestegg", appauthor=False)) / CONFIG_NAME)
    return found


def find_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to read: ``path`` (which must exist), else the first candidate that exists."""
    if path is not None:
        chosen = Path(path)
        if not chosen.is_file():
            raise ConfigError(f"config file {str(chosen)!r} does not exist")
        return chosen
    env = os.environ if environ is None else environ
    for index, candidate in enumerate(config_candidates(env)):
        if candidate.is_file():
            return candidate
        if index == 0 and env.get("NESTEGG_CONFIG"):
            raise ConfigError(f"config file {str(candidate)!r} (from $NESTEGG_CONFIG) does not exist")
    return None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Read the config (named, or found by :func:`config_candidates`) and apply ``overrides``.

    Overrides whose value is None are ignored, so CLI options can be passed through as they are.
    """
    found = find_config(path, environ)
    config = Config() if found is None else parse_config_file(found)
    changes = {key: value for key, value in overrides.items() if value is not None}
    unknown = set(changes) - {f.name for f in fields(Config)}
    if unknown:
        raise TypeError(f"unknown config override(s): {sorted(unknown)}")
    if "nestegg_dir" in changes:
        changes["nestegg_dir"] = Path(changes["nestegg_dir"]).expanduser()
    if "index_url" in changes:
        changes["index_url"] = check_index_url(changes["index_url"], "--index-url")
    # the same bounds as in the file: waitress would take port 99999 modulo 65536, 0 threads hang
    port = changes.get("port")
    if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
        raise ConfigError(f"port: expected a port number 0-65535, got {port!r}")
    threads = changes.get("threads")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ConfigError(f"threads: expected an integer >= 1, got {threads!r}")
    return replace(config, **changes)


def parse_config_file(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    import yaml  # noqa: PLC0415 - 12 ms of every start, and only a config file needs it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    return parse_config(data, source=path)


def parse_config(data: Any, *, source: Path | None = None) -> Config:
    """Validate the parsed YAML document (top key ``nestegg``) into a :class:`Config`."""
    where = _Where(str(source) if source else "<config>")
    if data is None:
        data = {"nestegg": {}}
    top = where.mapping(data, "")
    where.only(top, "", {"nestegg"})
    # an empty ``nestegg:`` is no settings; ``nestegg: 0`` or ``nestegg: []`` is a mistake
    body = where.mapping({} if top.get("nestegg") is None else top["nestegg"], "nestegg")
    known = {
        "nestegg_dir", "host", "port", "index_url", "ttl", "timeout", "offline", "threads",
        "source_builds", "private_names", "credentials_file", "private_read_auth",
        "max_upload_size", "ci_token", "ci_jobs", "sendfile", "sendfile_prefix", "max_cache_size",
        "compatible_only", "max_page_size", "max_metadata_size", "page_deadline", "max_file_size",
    }  # fmt: skip
    where.only(body, "nestegg", known)
    values: dict[str, Any] = {"source": source}
    base = source.parent if source else Path.cwd()
    for key, raw in body.items():
        path = f"nestegg.{key}"
        name = key.replace("-", "_")
        if name in ("nestegg_dir", "credentials_file"):
            values[name] = base / Path(os.path.expandvars(where.string(raw, path))).expanduser()
        elif name == "host":
            values[name] = where.string(raw, path)
        elif name == "port":
            port = where.integer(raw, path)
            if not 0 <= port <= 65535:
                raise where.error(path, f"expected a port number 0-65535, got {port!r}")
            values[name] = port
        elif name == "index_url":
            values[name] = check_index_url(where.string(raw, path), f"{where.file}: {path}")
        elif name in ("ttl", "timeout", "page_deadline"):
            values[name] = where.number(raw, path)
            if name != "ttl" and values[name] == 0:  # a socket timeout of 0 fails every request
                raise where.error(path, "expected a number of seconds > 0, got 0")
        elif name in ("max_page_size", "max_metadata_size", "max_file_size"):
            try:
                values[name] = parse_size(raw)
            except ValueError as exc:
                raise where.error(path, str(exc)) from None
        elif name == "ci_token":
            values[name] = _ci_token(where, raw, path)
        elif name in ("threads", "max_upload_size", "ci_jobs"):
            values[name] = where.integer(raw, path, minimum=1)
        elif name in ("offline", "private_read_auth", "compatible_only"):
            values[name] = where.boolean(raw, path)
        elif name == "private_names":
            values[name] = tuple(where.string(item, f"{path}[{i}]") for i, item in
                                 enumerate(where.sequence(raw, path)))  # fmt: skip
        elif name in ("sendfile", "sendfile_prefix", "max_cache_size"):
            values[name] = _deployment_value(where, name, raw, path)
        elif name == "source_builds":
            values[name] = tuple(
                _source_build(where, item, f"{path}[{i}]") for i, item in enumerate(where.sequence(raw, path))
            )
    names = [build.name for build in values.get("source_builds", ())]
    for name in names:
        if names.count(name) > 1:
            raise where.error("nestegg.source_builds", f"project {name!r} is listed twice")
    return Config(**values)


def _source_build(where: _Where, raw: Any, path: str) -> SourceBuild:
    item = where.mapping(raw, path)
    where.only(item, path, {"name", "repo_type", "repo_url", "private", "versions", "ci"})
    for key in ("name", "repo_type", "repo_url"):
        if key not in item:
            raise where.error(f"{path}.{key}", "is required")
    name = where.string(item["name"], f"{path}.name")
    if not is_valid_name(name):
        raise where.error(f"{path}.name", f"{name!r} is not a valid project name")
    repo_type = where.string(item["repo_type"], f"{path}.repo_type").lower()
    if repo_type not in ("git", "hg"):
        raise where.error(f"{path}.repo_type", f"expected 'git' or 'hg', got {repo_type!r}")
    versions = []
    for i, entry in enumerate(where.sequence(item.get("versions") or [], f"{path}.versions")):
        vpath = f"{path}.versions[{i}]"
        mapping = where.mapping(entry, vpath)
        where.only(mapping, vpath, {"version", "tag", "dist_file"})
        if "version" not in mapping:
            raise where.error(f"{vpath}.version", "is required")
        version = where.string(mapping["version"], f"{vpath}.version")
        if parse_version(version) is None:
            raise where.error(f"{vpath}.version", f"{version!r} is not a valid version")
        tag = where.string(mapping.get("tag", version), f"{vpath}.tag")
        dist_file = mapping.get("dist_file")
        versions.append(
            SourceVersion(
                version=version,
                tag=tag,
                dist_file=None if dist_file is None else where.string(dist_file, f"{vpath}.dist_file"),
            )
        )
    return SourceBuild(
        name=canonicalize_name(name),
        repo_type=repo_type,
        repo_url=where.string(item["repo_url"], f"{path}.repo_url"),
        private=where.boolean(item.get("private", True), f"{path}.private"),
        versions=tuple(versions),
        ci=_ci_settings(where, item["ci"], f"{path}.ci") if "ci" in item else None,
    )


def _ci_token(where: _Where, raw: Any, path: str) -> str:
    token = where.string(raw, path)
    if len(token) < 16:  # the message never shows the secret
        raise where.error(path, f"expected a token of at least 16 characters, got {len(token)}")
    return token


def _ci_settings(where: _Where, raw: Any, path: str) -> CISettings | None:
    """``ci: yes`` (the defaults), ``ci: no``, or a mapping of :class:`CISettings` keys."""
    if isinstance(raw, bool):
        return CISettings() if raw else None
    item = where.mapping(raw, path)
    where.only(item, path, {"command", "watch", "interval", "timeout"})
    values: dict[str, Any] = {}
    if "command" in item:
        command = where.string(item["command"], f"{path}.command")
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise where.error(f"{path}.command", f"cannot split {command!r}: {exc}") from None
        if not words:
            raise where.error(f"{path}.command", f"expected a command, got {command!r}")
        values["command"] = command
    if "watch" in item:
        raw_watch = item["watch"]
        single = isinstance(raw_watch, (str, int, float))
        refs = [raw_watch] if single else where.sequence(raw_watch, f"{path}.watch")
        watch = []
        for i, ref in enumerate(refs):
            value = where.string(ref, f"{path}.watch[{i}]")
            if value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value):
                raise where.error(f"{path}.watch[{i}]", f"{value!r} is not a branch or tag name")
            watch.append(value)
        values["watch"] = tuple(dict.fromkeys(watch))
    if "interval" in item:
        values["interval"] = where.number(item["interval"], f"{path}.interval")
    if "timeout" in item:
        timeout = where.number(item["timeout"], f"{path}.timeout")
        if timeout == 0:
            raise where.error(f"{path}.timeout", "expected a number of seconds > 0, got 0")
        values["timeout"] = timeout
    return CISettings(**values)


def _deployment_value(where: _Where, name: str, raw: Any, path: str) -> Any:
    """``sendfile``, ``sendfile_prefix`` and ``max_cache_size``: how a team's server runs."""
    if name == "sendfile":
        mode = None if raw is False else where.string(raw, path).lower()
        if mode is not None and mode not in SENDFILE_MODES:
            raise where.error(path, f"expected {' or '.join(SENDFILE_MODES)} (or no), got {mode!r}")
        return mode
    if name == "sendfile_prefix":
        prefix = where.string(raw, path)
        if not re.fullmatch(r"/[A-Za-z0-9._~!=+/-]*", prefix):
            raise where.error(path, f"expected a URL path like '/_nestegg/', got {prefix!r}")
        return prefix.rstrip("/") + "/"
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise where.error(path, str(exc)) from None


def check_index_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{where}: {mask_url(url)!r} is not an http(s) URL of an index (like https://example.com/simple/)"
        )
    return url


class _Where:
    """Type checks that raise one-line errors naming the file and the dotted key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {path or 'top level'}: {message}")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.error(path, f"expected a mapping, got {_describe(value)}")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {_describe(value)}")
        return value

    def only(self, value: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in value:
            if key.replace("-", "_") not in allowed:
                choices = ", ".join(sorted(allowed))
                where = f"{path}.{key}" if path else key
                raise self.error(where, f"unknown key {key!r} (known: {choices})")

    def string(self, value: Any, path: str) -> str:
        # YAML reads a tag like 1.0 as a float: accept scalars, as the seed's configs rely on it
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
            raise self.error(path, f"expected a non-empty string, got {_describe(value)}")
        return str(value)

    def integer(self, value: Any, path: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            raise self.error(path, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise self.error(path, f"expected a number of seconds >= 0, got {_describe(value)}")
        return float(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected yes/no (true/false), got {_describe(value)}")
        return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
