"""Configuration: the seed's ``nestegg.yml`` format, its lookup, and the upstream pip would use.

Nothing is read at import time; :func:`load_config` reads and validates, :class:`Config` is the value.
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
from packaging.utils import NormalizedName, canonicalize_name

from nestegg_core.errors import ConfigError, NesteggError
from nestegg_core.simple.distmeta import parse_dist_filename
from nestegg_core.simple.models import is_valid_name, parse_version
from nestegg_core.simple.patterns import common_name, normalize_pattern, pattern_problem
from nestegg_core.urls import mask_text, mask_url, normalize_index_url

from .pipindex import pip_index_setting, pip_index_url
from .refs import ref_problem
from .settings import (
    BOOLEAN,
    COUNT,
    MAX_THREADS,
    NAMES,
    PATH,
    PORT,
    SECONDS,
    SENDFILE,
    SIZE,
    SIZE_OR_NO,
    STRING,
    THREADS,
    TIMEOUT,
    TOKEN,
    URL_PATH,
    Kind,
    Reader,
    WrittenFloat,
    WrittenInt,
    declared,
    keys,
    secret_keys,
    setting,
)

CONFIG_NAME = "nestegg.yml"
DEFAULT_PORT = 7654
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TTL = 600.0
DEFAULT_TIMEOUT = 30.0
#: seconds to connect: the upstream is usually a CDN a few milliseconds away, and a network that
#: drops packets should cost seconds, not the read timeout
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_MAX_UPLOAD = 200 * 1024 * 1024
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
#: the largest wheel downloaded ahead of pip's request for it (``fetch_ahead``)
FETCH_AHEAD = 64 * 1024**2


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
class Upstream:
    """One ``upstreams`` entry: an index that alone serves the projects its patterns match."""

    #: the index's Simple API root, with one trailing slash (and any credentials it was given)
    url: str = field(repr=False)
    #: names and glob patterns, normalized (``simple.patterns.normalize_pattern``)
    projects: tuple[str, ...]

    def __repr__(self) -> str:  # never the index's password
        return f"Upstream(url={mask_url(self.url)!r}, projects={self.projects!r})"


def _index_url(reader: Reader, raw: Any, path: str) -> str:
    return check_index_url(reader.string(raw, path), f"{reader.file}: {path}")


def _source_builds(reader: Reader, raw: Any, path: str) -> tuple[SourceBuild, ...]:
    return tuple(
        _source_build(reader, item, f"{path}[{i}]") for i, item in enumerate(reader.sequence(raw, path))
    )


def _upstreams(reader: Reader, raw: Any, path: str) -> tuple[Upstream, ...]:
    found: list[Upstream] = []
    #: each pattern with where it was read, for the message naming both of a clash
    seen: list[tuple[str, str, str, int]] = []
    for i, item in enumerate(reader.sequence(raw, path)):
        where = f"{path}[{i}]"
        entry = reader.mapping(item, where)
        reader.only(entry, where, {"url", "projects"})
        for key in ("url", "projects"):
            if key not in entry:
                raise reader.error(f"{where}.{key}", "is required")
        url = normalize_index_url(
            check_index_url(reader.string(entry["url"], f"{where}.url"), f"{reader.file}: {where}.url")
        )
        for other in found:
            if normalize_index_url(other.url) == url:
                raise reader.error(f"{where}.url", f"{mask_url(url)!r} is listed twice; give it one entry")
        names = reader.sequence(entry["projects"], f"{where}.projects")
        if not names:
            raise reader.error(f"{where}.projects", "expected at least one name or pattern, got none")
        patterns = []
        for k, raw_name in enumerate(names):
            key = f"{where}.projects[{k}]"
            written = reader.string(raw_name, key)
            problem = pattern_problem(written)
            if problem is not None:
                raise reader.error(key, f"{written!r} {problem}")
            pattern = normalize_pattern(written)
            for other_key, other_written, other_pattern, other_entry in seen:
                common = common_name(pattern, other_pattern) if other_entry != i else None
                if common is not None:
                    raise reader.error(
                        key,
                        f"{written!r} and {other_key} {other_written!r} both match {common!r}: "
                        "a project comes from one index; narrow one of them",
                    )
            seen.append((key, written, pattern, i))
            patterns.append(pattern)
        found.append(Upstream(url=url, projects=tuple(dict.fromkeys(patterns))))
    return tuple(found)


INDEX_URL = Kind("an http(s) URL", _index_url)
UPSTREAMS = Kind("a list of indexes: url, projects (names and glob patterns)", _upstreams)


def _public_url(reader: Reader, raw: Any, path: str) -> str:
    return check_public_url(reader.string(raw, path), f"{reader.file}: {path}")


PUBLIC_URL = Kind("an http(s) URL", _public_url)
SOURCE_BUILDS = Kind("a list of source builds, as above", _source_builds)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything a mirror needs; build one with :func:`load_config` or directly in tests."""

    nestegg_dir: Path = setting(
        factory=default_cache_dir,
        kind=PATH,
        option="--cache-dir",
        metavar="DIR",
        variable="NESTEGG_CACHE_DIR",
        description="the nest: the cache and the private store",
        default_text="the user cache directory",
    )
    host: str = setting(
        DEFAULT_HOST,
        kind=STRING,
        option="--host",
        metavar="HOST",
        commands=("serve",),
        description="the address to listen on; any but loopback lets every machine that reaches it in",
    )
    port: int = setting(
        DEFAULT_PORT,
        kind=PORT,
        option="--port",
        metavar="PORT",
        commands=("serve",),
        description="the port to listen on; 0 picks a free one",
    )
    #: the upstream Simple API root; None means "the index pip uses", resolved by ``upstream_url``
    index_url: str | None = setting(
        None,
        kind=INDEX_URL,
        aliases=("index-url",),
        option="--index-url",
        metavar="URL",
        variable="NESTEGG_INDEX_URL",
        description="the upstream Simple API",
        default_text="the index pip uses: PIP_INDEX_URL, pip's configuration, else pip's default",
    )
    #: more indexes, each the only home of the projects it names: never merged with index_url
    upstreams: tuple[Upstream, ...] = setting(
        (),
        kind=UPSTREAMS,
        description="more indexes, each the only one asked for the projects its names and patterns match",
    )
    #: where clients reach the mirror's root behind a proxy; None: the URL of each request (its Host)
    public_url: str | None = setting(
        None,
        kind=PUBLIC_URL,
        option="--public-url",
        metavar="URL",
        commands=("serve",),
        variable="NESTEGG_PUBLIC_URL",
        description="the URL clients reach the mirror at behind a proxy; pages' file URLs start with it",
        default_text="the URL each request was made to (its Host header)",
    )
    ttl: float = setting(
        DEFAULT_TTL, kind=SECONDS, description="seconds before a page is revalidated with the upstream"
    )
    timeout: float = setting(
        DEFAULT_TIMEOUT, kind=TIMEOUT, description="seconds each read from the upstream may take"
    )
    connect_timeout: float = setting(
        DEFAULT_CONNECT_TIMEOUT, kind=TIMEOUT, description="seconds a connection to the upstream may take"
    )
    offline: bool = setting(
        False,
        kind=BOOLEAN,
        option="--offline",
        variable="NESTEGG_OFFLINE",
        description="serve from the cache only, never ask the upstream",
    )
    #: pages for pip list only the files that fit the interpreter its User-Agent describes
    #: (see ``clients``); off by default, as pip's ``--platform`` cannot be seen
    compatible_only: bool = setting(
        False,
        kind=BOOLEAN,
        option="--compatible-only",
        commands=("serve",),
        description="list to pip only the files that fit its interpreter and platform",
    )
    threads: int = setting(
        16, kind=THREADS, option="--threads", metavar="N", commands=("serve",), description="worker threads"
    )
    source_builds: tuple[SourceBuild, ...] = setting(
        (),
        kind=SOURCE_BUILDS,
        description="git and hg repositories whose tags are built into the private store",
    )
    #: names and fnmatch patterns that are private even before anything was uploaded
    private_names: tuple[str, ...] = setting(
        (), kind=NAMES, description="names and glob patterns that are private before anything is uploaded"
    )
    #: a file of ``user:hash`` lines (see ``credentials``); uploads need it
    credentials_file: Path | None = setting(
        None,
        kind=PATH,
        description="the file of users and password hashes ('nestegg passwd'); uploads need it",
    )
    private_read_auth: bool = setting(
        False, kind=BOOLEAN, description="reading private projects needs credentials too"
    )
    max_upload_size: int = setting(
        DEFAULT_MAX_UPLOAD, kind=COUNT, description="bytes an uploaded file may have", default_text="200 MiB"
    )
    #: the token a POST to ``/ci/trigger/<name>`` must send; None turns the trigger URL off
    ci_token: str | None = setting(
        None, kind=TOKEN, secret=True, description="the token a POST to /ci/trigger/<name> must send"
    )
    ci_jobs: int = setting(1, kind=COUNT, description="CI runs at the same time (per process)")
    #: None: the app sends cached files; ``x-accel-redirect`` (nginx) or ``x-sendfile`` (Apache's
    #: mod_xsendfile, lighttpd): it answers with a header and the front server sends the file
    sendfile: str | None = setting(
        None, kind=SENDFILE, description="let the front server send cached files (nginx, Apache)"
    )
    sendfile_prefix: str = setting(
        DEFAULT_SENDFILE_PREFIX,
        kind=URL_PATH,
        description="the nginx internal location that aliases nestegg_dir (x-accel-redirect)",
    )
    max_cache_size: int | None = setting(
        None,
        kind=SIZE,
        description="the most the cached files may take; the least recently used are pruned",
        default_text="no limit",
    )
    #: bytes of an upstream project page (decoded) and of a PEP 658 metadata file; an answer over
    #: it fails (502) and the cached page, if any, is served
    max_page_size: int = setting(
        MAX_PAGE_SIZE, kind=SIZE, description="the most an upstream project page may have, decoded"
    )
    max_metadata_size: int = setting(
        MAX_METADATA_SIZE, kind=SIZE, description="the most a PEP 658 metadata file of the upstream may have"
    )
    page_deadline: float = setting(
        PAGE_DEADLINE, kind=TIMEOUT, description="seconds an upstream page or metadata file may take in all"
    )
    #: pip asks for a wheel's metadata once it resolved to the wheel, and for the wheel itself
    #: only after resolving everything else: its download can run meanwhile; a small wheel it
    #: asks for as soon as it has read its page, whose answer starts the one pip likely takes
    fetch_ahead: int = setting(
        FETCH_AHEAD,
        kind=SIZE_OR_NO,
        description="the largest wheel fetched before pip asks: its metadata read, or guessed (no: none)",
    )
    #: an installer that read a wheel's metadata, or got the wheel, asks next for the pages of the
    #: projects it requires, one round trip to the upstream after another
    pages_ahead: bool = setting(
        True,
        kind=BOOLEAN,
        description=(
            "fetch before the installer asks: the pages of what a wheel requires, and past the TTL "
            "those asked with a page"
        ),
    )
    max_file_size: int = setting(
        MAX_FILE_SIZE,
        kind=SIZE,
        description="the most an upstream file may have when neither its page nor its answer gives its size",
    )
    #: the file this came from, for messages; None for defaults
    source: Path | None = None

    def with_changes(self, **changes: Any) -> Config:
        return replace(self, **changes)

    def for_one_run(self) -> Config:
        """This config for a mirror that serves one run on this machine (a tox run, a test
        session, ``nestegg ci``, ``nestegg export``): on loopback, sending its files itself at the
        URL each request was made to, and with no CI (no polling, no trigger URL). A nestegg.yml
        written for ``nestegg serve`` behind a front server (``sendfile``) or a proxy
        (``public_url``) would otherwise have every download of the run fail."""
        return replace(
            self,
            host=DEFAULT_HOST,
            public_url=None,
            sendfile=None,
            ci_token=None,
            source_builds=tuple(replace(b, ci=None) for b in self.source_builds),
        )

    @property
    def upstream_url(self) -> str:
        """The upstream index URL with a trailing slash: configured, else the one pip uses."""
        url = self.index_url or pip_index_url()
        return url.rstrip("/") + "/"


def config_candidates(environ: Mapping[str, str] | None = None, project: Path | None = None) -> list[Path]:
    """Where a config is looked for when none is named, first match wins; ``project`` is a
    directory looked in before the current one (a tox run's root, wherever tox is started)."""
    env = os.environ if environ is None else environ
    found = []
    if env.get("NESTEGG_CONFIG"):
        found.append(Path(env["NESTEGG_CONFIG"]))
    if project is not None:
        found.append(project / CONFIG_NAME)
    found.append(Path.cwd() / CONFIG_NAME)
    found.append(Path.home() / CONFIG_NAME)
    found.append(Path(platformdirs.user_config_dir("nestegg", appauthor=False)) / CONFIG_NAME)
    return found


def find_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    project: Path | None = None,
) -> Path | None:
    """The config file to read: ``path`` (which must exist), else the first candidate that exists."""
    if path is not None:
        chosen = Path(path)
        if not chosen.is_file():
            raise ConfigError(f"config file {str(chosen)!r} does not exist")
        return chosen
    env = os.environ if environ is None else environ
    for index, candidate in enumerate(config_candidates(env, project)):
        if candidate.is_file():
            return candidate
        if index == 0 and env.get("NESTEGG_CONFIG"):
            raise ConfigError(f"config file {str(candidate)!r} (from $NESTEGG_CONFIG) does not exist")
    return None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    project: Path | None = None,
    **overrides: Any,
) -> Config:
    """Read the config (named, or found by :func:`config_candidates`, ``project`` first) and
    apply ``overrides``.

    Overrides whose value is None are ignored, so CLI options can be passed through as they are.
    """
    found = find_config(path, environ, project)
    config = Config() if found is None else parse_config_file(found)
    changes = {key: value for key, value in overrides.items() if value is not None}
    unknown = set(changes) - {f.name for f in fields(Config)}
    if unknown:
        raise TypeError(f"unknown config override(s): {sorted(unknown)}")
    if "nestegg_dir" in changes:
        if not str(changes["nestegg_dir"]).strip():
            raise ConfigError("--cache-dir: expected a directory, got ''")
        changes["nestegg_dir"] = Path(changes["nestegg_dir"]).expanduser()
    if "index_url" in changes:
        changes["index_url"] = check_index_url(changes["index_url"], "--index-url")
    if "public_url" in changes:
        changes["public_url"] = check_public_url(changes["public_url"], "--public-url")
    # the same bounds as in the file: waitress would take port 99999 modulo 65536, 0 threads hang
    port = changes.get("port")
    if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
        raise ConfigError(f"port: expected a port number 0-65535, got {port!r}")
    threads = changes.get("threads")
    if threads is not None and not (isinstance(threads, int) and 1 <= threads <= MAX_THREADS):
        raise ConfigError(f"threads: expected an integer 1-{MAX_THREADS}, got {threads!r}")
    config = replace(config, **changes)
    if config.index_url is None:  # the index pip uses: checked as a configured one is
        url, where = pip_index_setting(os.environ if environ is None else environ)
        check_index_url(url, where)
    return config


#: the ``NESTEGG_*`` variables, and the setting each sets (as declared on the config's fields)
VARIABLES = {
    declaration.variable: field.name for field, declaration in declared(Config) if declaration.variable
}
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off", "")


def environ_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings the ``NESTEGG_*`` variables of ``environ`` give (``NESTEGG_CONFIG`` aside),
    each checked as in a nestegg.yml; one set empty says nothing (``NESTEGG_OFFLINE`` no)."""
    found: dict[str, Any] = {}
    for variable, key in VARIABLES.items():
        value = environ.get(variable)
        if value is None:
            continue
        if key == "offline":
            if value.strip().lower() not in _TRUE + _FALSE:
                raise ConfigError(f"${variable}: expected yes or no (1 or 0), got {value!r}")
            found[key] = value.strip().lower() in _TRUE
        elif not value.strip():
            continue
        elif key == "index_url":
            found[key] = check_index_url(value, f"${variable}")
        elif key == "public_url":
            found[key] = check_public_url(value, f"${variable}")
        elif key == "nestegg_dir":
            found[key] = Path(value).expanduser()
        else:
            found[key] = value
    return found


def parse_config_file(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    import yaml  # noqa: PLC0415 - 12 ms of every start, and only a config file needs it

    try:
        data = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader, numbers kept as written
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    return parse_config(data, source=path)


@functools.cache
def _loader() -> Any:
    """YAML's safe loader, whose numbers keep the text they were written as (see ``Reader.string``)."""
    import yaml  # noqa: PLC0415

    class Loader(yaml.SafeLoader):
        pass

    def written(kind: type[WrittenInt | WrittenFloat], read: Any) -> Any:
        def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
            number = kind(read(loader, node))
            number.written = node.value
            return number

        return construct

    safe = yaml.SafeLoader
    Loader.add_constructor("tag:yaml.org,2002:int", written(WrittenInt, safe.construct_yaml_int))
    Loader.add_constructor("tag:yaml.org,2002:float", written(WrittenFloat, safe.construct_yaml_float))
    return Loader


def parse_config(data: Any, *, source: Path | None = None) -> Config:
    """Validate the parsed YAML document (top key ``nestegg``) into a :class:`Config`."""
    where = Reader(
        str(source) if source else "<config>", source.parent if source else None, secrets=secret_keys(Config)
    )
    if data is None:
        data = {"nestegg": {}}
    top = where.mapping(data, "")
    where.only(top, "", {"nestegg"})
    # an empty ``nestegg:`` is no settings; ``nestegg: 0`` or ``nestegg: []`` is a mistake
    body = where.mapping({} if top.get("nestegg") is None else top["nestegg"], "nestegg")
    known = keys(Config)
    where.only(body, "nestegg", set(known))
    values: dict[str, Any] = {"source": source}
    declarations = {field.name: declaration for field, declaration in declared(Config)}
    spelled: dict[str, str] = {}
    for key, raw in body.items():
        name = known[key.replace("-", "_")]
        if name in spelled:  # index_url and index-url: which one wins would be a guess
            raise where.error(f"nestegg.{key}", f"sets {name} as nestegg.{spelled[name]} does; keep one")
        spelled[name] = key
        values[name] = declarations[name].kind.read(where, raw, f"nestegg.{key}")
    names = [build.name for build in values.get("source_builds", ())]
    for name in names:
        if names.count(name) > 1:
            raise where.error("nestegg.source_builds", f"project {name!r} is listed twice")
    _check_shadowing(where, values)
    return Config(**values)


def _check_shadowing(where: Reader, values: dict[str, Any]) -> None:
    """A route naming a private name (``private_names``, a ``private: yes`` source build) is an
    error: the private store would answer for it and the route would never be used."""
    private = [(f"nestegg.private_names[{i}]", p) for i, p in enumerate(values.get("private_names", ()))]
    private += [
        (f"nestegg.source_builds[{i}].name", b.name)
        for i, b in enumerate(values.get("source_builds", ()))
        if b.private
    ]
    for i, upstream in enumerate(values.get("upstreams", ())):
        for k, pattern in enumerate(upstream.projects):
            for key, written in private:
                common = common_name(pattern, normalize_pattern(written))
                if common is not None:
                    raise where.error(
                        f"nestegg.upstreams[{i}].projects[{k}]",
                        f"{pattern!r} matches the private name {common!r} ({key} {written!r}): private "
                        "projects come from the private store only; take it out of one of them",
                    )


def _source_build(where: Reader, raw: Any, path: str) -> SourceBuild:
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
    versions: list[SourceVersion] = []
    for i, entry in enumerate(where.sequence(item.get("versions") or [], f"{path}.versions")):
        vpath = f"{path}.versions[{i}]"
        mapping = where.mapping(entry, vpath)
        where.only(mapping, vpath, {"version", "tag", "dist_file"})
        if "version" not in mapping:
            raise where.error(f"{vpath}.version", "is required")
        version = where.string(mapping["version"], f"{vpath}.version")
        parsed = parse_version(version)
        if parsed is None:
            raise where.error(f"{vpath}.version", f"{version!r} is not a valid version")
        # which entry's build would be served under it would be a guess (1.1.0 and 1.1 are one)
        again = next((v.version for v in versions if parse_version(v.version) == parsed), None)
        if again is not None:
            raise where.error(f"{vpath}.version", f"{version!r} is listed already, as {again!r}; keep one")
        if "tag" in mapping:
            tag = _ref(where, mapping["tag"], f"{vpath}.tag", repo_type)
        elif problem := ref_problem(version, repo_type):  # the tag is the version, unless named
            raise where.error(
                f"{vpath}.tag", f"is required: the version {version!r} is no tag name ({problem})"
            )
        else:
            tag = version
        dist_file = mapping.get("dist_file")
        if dist_file is not None:
            dist_file = _dist_file(where, dist_file, f"{vpath}.dist_file")
        versions.append(SourceVersion(version=version, tag=tag, dist_file=dist_file))
    return SourceBuild(
        name=canonicalize_name(name),
        repo_type=repo_type,
        repo_url=where.string(item["repo_url"], f"{path}.repo_url"),
        private=where.boolean(item.get("private", True), f"{path}.private"),
        versions=tuple(versions),
        ci=_ci_settings(where, item["ci"], f"{path}.ci", repo_type) if "ci" in item else None,
    )


def _dist_file(where: Reader, raw: Any, path: str) -> str:
    """A ``dist_file``: the name of an sdist or wheel (which the build must make, spelled as older
    tools spelled it or as it is built: the build checks its project, version, format and tags)."""
    value = where.string(raw, path)
    try:
        parse_dist_filename(value)
    except NesteggError as exc:
        raise where.error(path, str(exc)) from None
    return value


def _ref(where: Reader, raw: Any, path: str, repo_type: str, *, head: bool = False) -> str:
    """A tag or branch name of a ``repo_type`` repository (``head``: or git's ``HEAD``), never a
    revision expression (:func:`ref_problem`), which the builds refuse too (checked here, it is an
    error at start, not at the first build)."""
    value = where.string(raw, path)
    problem = ref_problem(value, repo_type, head=head)
    if problem is not None:
        raise where.error(path, f"{value!r} is not a branch or tag name: {problem}")
    return value


def _ci_settings(where: Reader, raw: Any, path: str, repo_type: str) -> CISettings | None:
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
            raise where.error(f"{path}.command", f"cannot split {mask_text(command)!r}: {exc}") from None
        if not words:
            raise where.error(f"{path}.command", f"expected a command, got {mask_text(command)!r}")
        values["command"] = command
    if "watch" in item:
        raw_watch = item["watch"]
        single = isinstance(raw_watch, (str, int, float))
        refs = [raw_watch] if single else where.sequence(raw_watch, f"{path}.watch")
        watch = []
        for i, ref in enumerate(refs):
            watch.append(_ref(where, ref, f"{path}.watch[{i}]", repo_type, head=True))
        values["watch"] = tuple(dict.fromkeys(watch))
    if "interval" in item:
        values["interval"] = where.number(item["interval"], f"{path}.interval")
    if "timeout" in item:
        timeout = where.number(item["timeout"], f"{path}.timeout")
        if timeout == 0:
            raise where.error(f"{path}.timeout", "expected a number of seconds > 0, got 0")
        values["timeout"] = timeout
    return CISettings(**values)


def _http_url(url: str) -> bool:
    """Whether ``url`` is an http(s) URL with a host, a port in range if any, and no query,
    fragment, blank or control character: one that paths can be appended to. urllib raises on
    some of the rest ("http://[::1", a port out of range) and takes others apart quietly."""
    if not url.isprintable() or any(char.isspace() for char in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for one out of range or not a number
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port != 0
        and not parts.query
        and not parts.fragment
        and "?" not in url
        and "#" not in url
    )


def check_index_url(url: str, where: str) -> str:
    """``url`` (blanks around it dropped), if it is an http(s) URL of an index; else a ConfigError
    that names ``where`` it comes from."""
    url = url.strip()
    if not _http_url(url):
        raise ConfigError(
            f"{where}: {mask_url(url)!r} is not an http(s) URL of an index (like https://example.com/simple/)"
        )
    return url


def check_public_url(url: str, where: str) -> str:
    """``url`` without blanks around it nor a slash at its end (file URLs are made by appending
    their path), if it is an http(s) URL of the mirror; else a ConfigError naming ``where``."""
    url = url.strip()
    if not _http_url(url):
        raise ConfigError(
            f"{where}: {mask_url(url)!r} is not an http(s) URL of the mirror (like https://example.com/pypi)"
        )
    return url.rstrip("/")
