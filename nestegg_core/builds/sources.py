"""Source builds: the config's git/hg tags and branches built into the private store.

For each configured version the tag (or branch) is resolved to a commit, and a build is keyed by
that commit: an unchanged tag is never built again, a branch that moved is. A build checks out the
commit, runs ``python -m build`` (isolated; the build environment installs from this mirror, so
builds work from its cache and offline) and publishes the sdist and wheel it made. What was built
before stays served when a build fails; its log is kept under ``<nestegg dir>/logs``.

State, per project, in ``<nestegg dir>/builds/<name>.json``; clones in ``<nestegg dir>/repos``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from nestegg_core.config.config import Config, SourceBuild, SourceVersion
from nestegg_core.errors import BuildError, NesteggError, NotFound, Unavailable
from nestegg_core.installers import installer_env
from nestegg_core.simple.distmeta import parse_dist_filename
from nestegg_core.simple.models import format_time
from nestegg_core.storage.fs import sha256_file, write_atomic
from nestegg_core.storage.locks import FileLock, LockTimeout
from nestegg_core.storage.private import PrivateStore
from nestegg_core.urls import mask_text

from .vcs import (
    VCS,
    CheckoutWork,
    MissingRef,
    Resolved,
    Transcript,
    drop_clone_of_other_url,
    failed,
    other_origin,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

#: seconds one ``python -m build`` may take
BUILD_TIMEOUT = 1800.0
#: seconds a request waits for a build of its project that runs (here or in another process)
#: before it is answered 503: a hung build must not take every worker thread of the server
BUILD_WAIT = 5.0
#: seconds :meth:`SourceBuilder.stop` waits for the builds it stopped to end
STOP_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class BuildOutcome:
    """What happened to one configured version."""

    name: NormalizedName
    version: str
    ref: str
    #: "built" (new files), "current" (built before from this commit), "failed" (just now),
    #: "failed before" (this commit failed earlier and was not retried)
    status: str
    commit: str | None = None
    files: tuple[str, ...] = ()
    log: Path | None = None
    message: str = ""
    #: why the repository could not be fetched ("": it was, or it was not due): the version was
    #: looked up, and built, in the last fetch
    fetch_error: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("built", "current")

    def describe(self) -> str:
        commit = f" at {self.commit[:12]}" if self.commit else ""
        head = f"{self.name} {self.version} ({self.ref}{commit})"
        if self.ok:
            note = f" ({self.message})" if self.message else ""
            stale = " as of the last fetch" if self.fetch_error else ""
            return f"{head}: {self.status}{stale}: {', '.join(self.files)}{note}"
        # the log first: clients cut long reason phrases short
        log = f" (log: {self.log})" if self.log else ""
        return f"{head}: {self.status}{log}: {self.message}"


@dataclass(frozen=True, kw_only=True)
class BuildRecord:
    """What the state of one project's builds says, for those who show it (the web UI)."""

    #: when its repository was last fetched, in seconds since the epoch; None: never
    fetched_at: float | None = None
    #: why the last fetch failed, masked ("": it did not)
    fetch_error: str = ""
    #: version (as ``str(Version)``) to the error it failed with, masked; versions no longer
    #: configured too
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    #: file name to the ref, commit and time (PEP 700) it was built from
    files: dict[str, dict[str, str | None]] = dataclasses.field(default_factory=dict)


def state_path(nestegg_dir: Path, name: str) -> Path:
    """The file of the state of the builds of project ``name`` (normalized)."""
    return nestegg_dir / "builds" / f"{name}.json"


def read_record(nestegg_dir: Path, name: str) -> BuildRecord:
    """What the state of project ``name``'s builds says; an empty record when there is none or
    it cannot be read (said nowhere: the builds warn of a damaged one when they read it)."""
    state = _State.read(state_path(nestegg_dir, name), warn=False)
    files: dict[str, dict[str, str | None]] = {}
    for entry in state.built.values():
        if not isinstance(entry, dict):
            continue
        origin = {key: _str(entry.get(key)) for key in ("ref", "commit", "built_at")}
        names = entry.get("files", ())
        for filename in names if isinstance(names, list) else ():
            if isinstance(filename, str):
                files[filename] = origin
    return BuildRecord(
        fetched_at=state.checked_at if 0 < state.checked_at < 1e11 else None,
        fetch_error=mask_text(state.fetch_error),
        failed={
            str(version): mask_text(str(entry.get("error", "")))
            for version, entry in state.failed.items()
            if isinstance(entry, dict)
        },
        files=files,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def find_source_build(config: Config, name: str) -> SourceBuild:
    """The source build ``name`` (any spelling) of ``config``; :class:`NotFound` naming the known ones."""
    wanted = canonicalize_name(name)
    for build in config.source_builds:
        if build.name == wanted:
            return build
    where = f" in {config.source}" if config.source else ""
    known = ", ".join(sorted(b.name for b in config.source_builds)) or "none"
    raise NotFound(f"{name!r} is not a source build{where} (source builds: {known})")


class SourceBuilder(CheckoutWork[PrivateStore]):
    """Builds the configured versions of source-build projects into the private store."""

    def __init__(
        self,
        config: Config,
        store: PrivateStore,
        *,
        index_url: Callable[[], str],
        python: str = sys.executable,
        backends: Mapping[str, VCS] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, store, index_url=index_url, python=python, backends=backends)
        self.clock = clock
        self.root = config.nestegg_dir
        self._builds = {build.name: build for build in config.source_builds}
        self._checked: dict[str, float] = {}
        self._failures: dict[str, list[BuildOutcome]] = {}
        self._guard = threading.Lock()
        #: set while the server stops: running builds are ended, none is started
        self._stopping = threading.Event()
        self._running = 0
        self._idle = threading.Condition(self._guard)

    # the server's service: running builds end with it ----------------------------------------

    def start(self) -> None:
        self._stopping.clear()

    def stop(self, timeout: float | None = None) -> None:
        """End the builds that run (their processes, whole) and wait for them, at most ``timeout``
        seconds (:data:`STOP_TIMEOUT`)."""
        self._stopping.set()
        deadline = time.monotonic() + (STOP_TIMEOUT if timeout is None else timeout)
        with self._idle:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)

    def source_build(self, name: str) -> SourceBuild:
        return find_source_build(self.config, name)

    # on demand -----------------------------------------------------------------------------

    def ensure(self, name: NormalizedName) -> None:
        """Build what is missing of ``name`` (at most once per ``ttl``); :class:`BuildError` if that failed
        with nothing of ``name`` built, :class:`Unavailable` while another build of it, with
        nothing built yet, runs past :data:`BUILD_WAIT`.

        What is built is served: a version that fails (a broken build, a tag that is gone) is
        logged and recorded, and leaves the others served. Only a project with nothing built is
        an error: once, or for as long as it has nothing, if private (its build error says more
        than an empty page). A commit that failed is not built again here (``nestegg build``
        retries it), so a broken tag costs one build, not one per request.
        """
        build = self._builds.get(name)
        if build is None:
            return
        last = self._checked.get(name)
        if last is None or self.clock() - last >= self.config.ttl:
            # with something built, another build of it (a slow fetch, a rebuild) is not waited
            # for: what is built is served meanwhile
            built = self.store.page(name) is not None
            try:
                outcomes = self.build(
                    name, retry_failed=False, refresh=False, wait=0 if built else BUILD_WAIT
                )
            except Unavailable:
                if not built and self.store.page(name) is None:
                    raise
                return
            with self._guard:
                self._checked[name] = self.clock()
                self._failures[name] = [o for o in outcomes if not o.ok]
            fresh = [o for o in outcomes if o.status == "failed"]
            if fresh and self.store.page(name) is None:
                raise BuildError(_summary(fresh))
        failures = self._failures.get(name)
        if failures and build.private and self.store.page(name) is None:
            raise BuildError(_summary(failures))

    # builds ---------------------------------------------------------------------------------

    def build(
        self, name: str, *, retry_failed: bool = True, refresh: bool = True, wait: float = -1
    ) -> list[BuildOutcome]:
        """Bring every configured version of ``name`` up to date; one outcome per version.

        ``refresh`` fetches the repository even if it was fetched within ``ttl``;
        ``retry_failed`` builds again a commit that failed before. A build of ``name`` that
        runs already is waited for ``wait`` seconds (-1: until it ends), then
        :class:`Unavailable` says so.
        """
        build = self.source_build(name)
        if not build.versions:
            return []
        lock_path = self.root / "builds" / f"{build.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path, timeout=wait)
        try:
            lock.acquire()
        except LockTimeout:
            raise Unavailable(f"a build of {build.name} is in progress; try again shortly") from None
        with self._guard:
            self._running += 1
        try:
            return self._build_all(build, retry_failed=retry_failed, refresh=refresh)
        finally:
            lock.release()
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _build_all(self, build: SourceBuild, *, retry_failed: bool, refresh: bool) -> list[BuildOutcome]:
        """:meth:`build`, its lock held."""
        state = _State.read(self._state_path(build.name))
        log = Transcript(self._stopping)
        fetched = self._update(build, state, log, refresh=refresh)
        commits = self._resolve(build, state, log)
        if (
            fetched is None
            and not self.config.offline
            and any(isinstance(c, BuildError) for c in commits.values())
        ):
            # a tag new since the last fetch: fetch now rather than fail until the ttl is over
            fetched = self._update(build, state, log, refresh=True)
            commits = self._resolve(build, state, log)
        state.fetch_error = fetched or ""
        outcomes = []
        for version in build.versions:
            resolved = commits[version.version]
            outcome = self._build_version(build, version, resolved, state, log, retry_failed=retry_failed)
            outcomes.append(dataclasses.replace(outcome, fetch_error=state.fetch_error))
            state.write(self._state_path(build.name))  # what is done stays done if this process dies
        return outcomes

    def _update(self, build: SourceBuild, state: _State, log: Transcript, *, refresh: bool) -> str | None:
        """Clone or fetch the repository unless that was done within ``ttl``: None if it was not
        (offline, or done just now), "" once done, else why it failed (a line naming the URL).

        A failed fetch is warned of and the last one used; a failed clone leaves no repository,
        which the versions then report. A clone of another ``repo_url`` than the configured one
        is removed first: no version is built from the repository the config no longer names.
        """
        repo = self._repo_path(build.name)
        if self.config.offline:
            return None
        url = mask_text(build.repo_url)
        vcs = self.backends(build.repo_type)
        try:
            other = drop_clone_of_other_url(vcs, repo, build.repo_url, log, recorded=state.fetched_from)
        except BuildError as exc:
            return str(exc)
        if other is not None:
            logger.warning(
                "the repo_url of %s is now %s (it was %s): cloning it afresh", build.name, url, other
            )
            state.checked_at = 0.0
        if not refresh and self.clock() - state.checked_at < self.config.ttl and repo.exists():
            return None  # another process or thread fetched it just now
        logger.info("updating %s from %s", build.name, url)
        try:
            vcs.update(build.repo_url, repo, log)
        except BuildError as exc:
            if self._stopping.is_set():
                return None
            why = log.reason or str(exc)
            if repo.exists():
                logger.warning(
                    "cannot fetch %s from %r, building from the fetch of %s (what is built stays served): %s",
                    build.name, url, _when(state.checked_at), why,
                )  # fmt: skip
                log.note(f"# cannot fetch {url}: {why}")
                return f"cannot fetch {url!r}: {why}"
            log.note(f"# cannot clone {url}: {why}")
            return f"cannot clone {url!r}: {why}"
        state.checked_at = self.clock()
        state.fetched_from = url
        return ""

    def _resolve(
        self, build: SourceBuild, state: _State, log: Transcript
    ) -> dict[str, Resolved | BuildError]:
        repo = self._repo_path(build.name)
        url = mask_text(build.repo_url)
        vcs = self.backends(build.repo_type)
        # offline, or not removed: nothing is looked up in a clone of another repository
        other = other_origin(vcs, repo, build.repo_url, log, recorded=state.fetched_from)
        commits: dict[str, Resolved | BuildError] = {}
        for version in build.versions:
            if other is not None:
                commits[version.version] = BuildError(
                    f"the clone in {repo} is of {other!r}, not of the repo_url {url!r}"
                )
                continue
            if not repo.exists():
                # the clone's own words: the last command of this transcript that failed
                how = (
                    "offline, and it was never cloned"
                    if self.config.offline
                    else f"cannot clone it: {log.reason}"
                    if log.reason
                    else "cannot clone it"
                )
                commits[version.version] = BuildError(f"no repository {url!r}: {how}")
                continue
            try:
                commits[version.version] = vcs.resolve(repo, version.tag, log)
            except MissingRef as exc:
                commits[version.version] = BuildError(f"{exc} in {url!r}")
            except BuildError as exc:
                commits[version.version] = exc
        return commits

    def _build_version(
        self,
        build: SourceBuild,
        version: SourceVersion,
        resolved: Resolved | BuildError,
        state: _State,
        update_log: Transcript,
        *,
        retry_failed: bool,
    ) -> BuildOutcome:
        key = str(Version(version.version))

        def outcome(status: str, **values: Any) -> BuildOutcome:
            return BuildOutcome(name=build.name, version=key, ref=version.tag, status=status, **values)

        log = Transcript(self._stopping)
        log.note(f"# nestegg source build of {build.name} {key} ({version.tag}) from {build.repo_url}")
        log.parts.extend(update_log.parts)
        if self._stopping.is_set():  # its fetch or its tag's lookup was cut short: no failure of it
            return outcome("failed", message="stopped: the server is stopping")
        if isinstance(resolved, BuildError):
            path = self._write_log(build.name, key, "unresolved", log, str(resolved))
            state.failed[key] = {"ref": version.tag, "commit": None, "log": str(path), "error": str(resolved)}
            # tried again (and said again) once per ttl, as the tag may come
            logger.warning("source build of %s %s failed (log: %s): %s", build.name, key, path, resolved)
            return outcome("failed", log=path, message=str(resolved))
        commit = resolved.commit
        done = state.built.get(key)
        if (
            done
            and done.get("commit") == commit
            and self._present(build.name, done.get("files", []))
            # an sdist served without its wheel: a compiler installed since, a mirror back up
            and not (retry_failed and done.get("no_wheel"))
        ):
            state.failed.pop(key, None)  # a branch that came back to a commit built before
            return outcome("current", commit=commit, files=tuple(done["files"]))
        failed = state.failed.get(key)
        if failed and failed.get("commit") == commit and not retry_failed:
            message, log_path = str(failed.get("error", "")), failed.get("log")
            logger.warning("not building %s %s again (run 'nestegg build %s' to retry): %s",
                           build.name, key, build.name, message)  # fmt: skip
            return outcome(
                "failed before", commit=commit, message=message, log=Path(log_path) if log_path else None
            )
        logger.info(
            "building %s %s from %s %s (%s)", build.name, key, build.repo_type, version.tag, commit[:12]
        )
        started = time.monotonic()
        try:
            files, no_wheel, replaced = self._run_build(build, version, commit, log, previous=done)
        except (NesteggError, OSError, subprocess.SubprocessError) as exc:
            if self._stopping.is_set():  # no failure of the commit's: built again next time
                logger.warning("build of %s %s stopped: the server is stopping", build.name, key)
                return outcome("failed", commit=commit, message=f"stopped: {exc}")
            path = self._write_log(build.name, key, commit, log, str(exc))
            state.failed[key] = {"ref": version.tag, "commit": commit, "log": str(path), "error": str(exc)}
            logger.error("source build of %s %s (%s at %s) failed (log: %s): %s",
                         build.name, key, version.tag, commit[:12], path, exc)  # fmt: skip
            return outcome("failed", commit=commit, log=path, message=str(exc))
        if replaced and done:
            self._replaced(build, version, resolved=resolved, done=done, replaced=replaced, log=log)
        path = self._write_log(build.name, key, commit, log, None)
        state.built[key] = {
            "ref": version.tag,
            "commit": commit,
            "files": list(files),
            "built_at": format_time(datetime.now(timezone.utc)),
            **({"no_wheel": no_wheel} if no_wheel else {}),
        }
        state.failed.pop(key, None)
        logger.info("built %s %s in %.1fs: %s", build.name, key, time.monotonic() - started, ", ".join(files))
        message = f"no wheel: {no_wheel}" if no_wheel else ""
        return outcome("built", commit=commit, files=files, log=path, message=message)

    def _replaced(
        self,
        build: SourceBuild,
        version: SourceVersion,
        *,
        resolved: Resolved,
        done: Mapping[str, Any],
        replaced: list[str],
        log: Transcript,
    ) -> None:
        """Say that files served before were replaced by other bytes under the same names: pip and
        uv, which cached or pinned their hashes, then fail their hash checks. A branch moves by
        design (INFO); a tag that moved, or a version built from another tag, is warned of."""
        old_ref, old_commit = str(done.get("ref", "")), str(done.get("commit", ""))[:12]
        files = ", ".join(replaced)
        how = "other bytes under the same names: clients that cached or pinned them fail their hash check"
        if old_ref != version.tag:
            line = (
                f"{build.name} {version.version} is now built from {resolved.kind} {version.tag!r} at "
                f"{resolved.commit[:12]} (it was {old_ref!r} at {old_commit}): {files} replaced by {how}"
            )
        else:
            line = (
                f"{resolved.kind} {version.tag!r} of {build.name} {version.version} moved from "
                f"{old_commit} to {resolved.commit[:12]}: {files} replaced by {how}"
            )
        log.note(f"# {line}")
        level = logging.INFO if old_ref == version.tag and resolved.kind != "tag" else logging.WARNING
        logger.log(level, "%s", line)

    def _run_build(
        self,
        build: SourceBuild,
        version: SourceVersion,
        commit: str,
        log: Transcript,
        *,
        previous: Mapping[str, Any] | None,
    ) -> tuple[tuple[str, ...], str, list[str]]:
        """Build ``commit`` and publish what it made; the files, why no wheel was made (""), and
        the files served before that other bytes replaced.

        A file built before from the same commit (the sdist, when its wheel is built again) is
        kept as it was: the same source, and the bytes clients have.
        """
        work_root = self.root / "tmp" / "builds"
        work_root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(work_root, build.name)
        with tempfile.TemporaryDirectory(dir=work_root, prefix=f"{build.name}-") as work:
            source, out = Path(work) / "source", Path(work) / "dist"
            self.backends(build.repo_type).checkout(self._repo_path(build.name), commit, source, log)
            env = self.build_env()
            # its build environment (``build-env-*``) goes where it is removed, even if killed
            (Path(work) / "tmp").mkdir()
            env.update(dict.fromkeys(("TMPDIR", "TEMP", "TMP"), str(Path(work) / "tmp")))
            log.note(f"# build environment installs from {env['PIP_INDEX_URL']}")
            label = "python -m build"
            result = log.run(
                [self.python, "-m", "build", "--outdir", str(out), str(source)],
                cwd=Path(work),
                env=env,
                timeout=BUILD_TIMEOUT,
                label=label,
                check=False,
            )
            produced = sorted(out.iterdir()) if out.is_dir() else []
            no_wheel = ""
            if result.returncode != 0:
                # the sdist was built, its wheel was not (a C extension that does not compile
                # here): served as the original nestegg served it, which built only the sdist; a
                # build killed (a signal: out of memory) made no sdist to trust alone
                if (
                    result.returncode < 0
                    or len(produced) != 1
                    or produced[0].suffix == ".whl"
                    or not _whole_archive(produced[0])
                ):
                    raise failed(label, result)
                no_wheel = log.reason
                logger.warning("serving the sdist of %s %s alone: its wheel could not be built: %s",
                               build.name, version.version, no_wheel)  # fmt: skip
                log.note(f"# the sdist alone is served: its wheel could not be built: {no_wheel}")
            check_outputs(build, version, [p.name for p in produced], wheel=not no_wheel)
            page = self.store.page(build.name)
            served = {d.filename: d.sha256 for d in page.files} if page is not None else {}
            same = previous is not None and previous.get("commit") == commit
            kept = set(previous.get("files", ())) if previous is not None and same else set()
            replaced = []
            for path in produced:
                if path.name in kept and path.name in served:
                    log.note(f"# {path.name} was built from this commit before: kept as it was")
                    continue
                if path.name in served and served[path.name] != sha256_file(path):
                    replaced.append(path.name)
                self.store.add(path, move=True, replace=True)
            names = tuple(p.name for p in produced)
        # files of the previous build of this version that this one did not make again
        for stale in (previous or {}).get("files", []):
            if stale not in names:
                with contextlib.suppress(NotFound):
                    self.store.remove(build.name, stale)
        return names, no_wheel, replaced

    def build_env(self) -> dict[str, str]:
        """The environment of ``python -m build``: installers see this mirror and nothing else."""
        index_url = self.index_url()
        env = installer_env(index_url)
        host = urlsplit(index_url).hostname
        if host:  # never through a proxy to ourselves
            for key in ("NO_PROXY", "no_proxy"):
                env[key] = ",".join(filter(None, [host, env.get(key, "")]))
        return env

    # helpers --------------------------------------------------------------------------------

    def _repo_path(self, name: str) -> Path:
        return self.root / "repos" / name

    def _state_path(self, name: str) -> Path:
        return state_path(self.config.nestegg_dir, name)

    def _present(self, name: NormalizedName, files: Iterable[str]) -> bool:
        files = list(files)
        if not files:
            return False
        try:
            for filename in files:
                self.store.file_path(name, filename)
        except NotFound:
            return False
        return True

    def _write_log(self, name: str, version: str, commit: str, log: Transcript, error: str | None) -> Path:
        path = self.root / "logs" / f"{name}-{version}-{commit[:12]}.log"
        if error is not None:
            log.note(f"# FAILED: {error}")
        try:
            write_atomic(path, log.text().encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot write build log %s: %s", path, exc)
        return path


def _when(timestamp: float) -> str:
    """A time of the state file (seconds since the epoch; 0: never) as it is shown."""
    return format_time(datetime.fromtimestamp(timestamp, timezone.utc)) if timestamp > 0 else "never"


def _summary(failed: list[BuildOutcome]) -> str:
    more = f" (and {len(failed) - 1} more failed builds)" if len(failed) > 1 else ""
    return failed[0].describe() + more


def _remove_abandoned(work_root: Path, name: str) -> None:
    """Remove work dirs of ``name``'s builds that a killed process left; call holding its build lock.

    With the lock held no other build of ``name`` runs, so each of its dirs is a crash's leftover.
    ``TemporaryDirectory`` adds 8 characters without a dash to the prefix: another project's dirs
    (``<name>-more-xxxxxxxx``) never match.
    """
    pattern = re.compile(rf"{re.escape(name)}-[a-z0-9_]{{8}}")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(work_root):
            if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                logger.info("removing %s, left by a build that was killed", entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)


def check_outputs(
    build: SourceBuild, version: SourceVersion, produced: list[str], *, wheel: bool = True
) -> None:
    """That a build made one sdist and a wheel (unless not ``wheel``) of the configured name,
    version and ``dist_file``."""
    made = ", ".join(produced) or "nothing"
    wanted = Version(version.version)
    for filename in produced:
        try:
            name, file_version = parse_dist_filename(filename)
        except NesteggError:
            raise BuildError(f"the build made {filename!r}, which is no wheel or sdist") from None
        if name != build.name or file_version != wanted:
            raise BuildError(
                f"tag {version.tag!r} built {filename!r}, not {build.name} {version.version} as configured"
            )
    sdists = [f for f in produced if not f.endswith(".whl")]
    wheels = [f for f in produced if f.endswith(".whl")]
    if len(sdists) != 1 or (wheel and not wheels):
        raise BuildError(f"expected an sdist{' and a wheel' if wheel else ''}, the build made {made}")
    if version.dist_file is not None and version.dist_file not in produced:
        wanted_file = _dist_identity(version.dist_file)
        same = [f for f in produced if _dist_identity(f) == wanted_file]
        if not same:
            # a file of its project, version and kind, not of its format or tags: say which
            near = [f for f in produced if wanted_file and (_dist_identity(f) or ())[:3] == wanted_file[:3]]
            how = f" (it names {_form(version.dist_file)}, not {_form(near[0])})" if near else ""
            raise BuildError(f"dist_file {version.dist_file!r} was not produced; the build made {made}{how}")
        # the name and version spelled otherwise (older setuptools wrote My-Package-1.0.tar.gz)
        logger.info("dist_file %r is %s as it is built", version.dist_file, same[0])


def _whole_archive(path: Path) -> bool:
    """Whether the sdist at ``path`` reads to its end (a build that failed may have cut it short)."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        with tarfile.open(path) as archive:
            for _ in archive:  # every member's header, its data decompressed on the way (and checked)
                pass
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile):
        return False
    return True


def _dist_identity(filename: str) -> tuple[object, ...] | None:
    """What a ``dist_file`` names, whatever the spelling of its name and version: an sdist of one
    project, version and archive format, or a wheel of one project, version, build and tags
    (a py2.py3 wheel is no py3 wheel, a linux one no pure one); None if it names no dist."""
    try:
        name, version = parse_dist_filename(filename)
    except NesteggError:
        return None
    if filename.endswith(".whl"):
        _, _, build, tags = parse_wheel_filename(filename)
        return ("wheel", name, version, build, frozenset(tags))
    return ("sdist", name, version, ".zip" if filename.endswith(".zip") else ".tar.gz")


def _form(filename: str) -> str:
    """The format of an sdist, or the build and tags of a wheel, as a message names them."""
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        build = f" (build {parts[2]})" if len(parts) == 6 else ""
        return f"a wheel for {'-'.join(parts[-3:])}{build}"
    return f"a {'.zip' if filename.endswith('.zip') else '.tar.gz'} sdist"


class _State:
    """The built and failed commits of one project's versions, and its last fetch, on disk as JSON."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.checked_at = float(data.get("checked_at", 0.0))
        #: the repo_url (masked) of the last fetch that worked; None: not known (an older state)
        fetched_from = data.get("fetched_from")
        self.fetched_from = fetched_from if isinstance(fetched_from, str) else None
        #: why the last fetch failed ("": it did not)
        self.fetch_error = str(data.get("fetch_error") or "")
        self.built: dict[str, dict[str, Any]] = dict(data.get("built", {}))
        self.failed: dict[str, dict[str, Any]] = dict(data.get("failed", {}))

    @classmethod
    def read(cls, path: Path, *, warn: bool = True) -> _State:
        try:
            data = json.loads(path.read_bytes())
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            return cls(data)
        except FileNotFoundError:
            return cls({})
        except (OSError, ValueError, TypeError) as exc:
            if warn:
                logger.warning("ignoring damaged build state %s: %s", path, exc)
            return cls({})

    def write(self, path: Path) -> None:
        data = {
            "checked_at": self.checked_at,
            "fetched_from": self.fetched_from,
            "fetch_error": self.fetch_error,
            "built": self.built,
            "failed": self.failed,
        }
        write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
