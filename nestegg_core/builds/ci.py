"""Continuous integration of source builds: poll the repositories, test each new commit, keep every run.

A source build with a ``ci`` entry is polled while nestegg serves (git ``ls-remote``, hg
``identify``, every ``interval`` seconds, in a background thread); each commit of a watched
branch or tag not tested before is queued, and a worker runs its tests in a fresh checkout:
``tox`` by default, its installs pointed at this mirror and cut off from the machine's installer
settings. A POST to ``/ci/trigger/<name>`` with the configured token (a git/hg hook) queues a
run at once, and ``nestegg ci [NAME ...]`` runs them in the foreground. Runs are bounded (one at
a time by default, at most one queued per ref, a time limit each) and recorded in the SQLite
history of :mod:`nestegg_core.builds.runs`; a failing or hanging run is recorded as such and never
disturbs serving.

Clones are kept in ``<nestegg dir>/ci/repos/<name>`` (apart from the builds' own, so a run and a
build never wait for each other); checkouts are made in ``<nestegg dir>/tmp/ci`` and removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from nestegg_core.config.config import CISettings, Config, SourceBuild
from nestegg_core.config.refs import ref_problem
from nestegg_core.config.sizes import format_size
from nestegg_core.errors import BadRequest, BuildError, NotFound
from nestegg_core.installers import installer_env
from nestegg_core.simple.models import is_valid_name
from nestegg_core.storage.fs import read_at_most, write_atomic
from nestegg_core.storage.locks import FileLock, LockTimeout
from nestegg_core.urls import mask_text

from .runs import ERROR, FAILED, INTERRUPTED, MAX_LOG, PASSED, RUNNING, TIMEOUT, EnvResult, Run, RunStore
from .vcs import (
    STOPPED,
    TIMED_OUT,
    VCS,
    CappedOutput,
    CheckoutWork,
    MissingRef,
    Transcript,
    drop_clone_of_other_url,
    failure_line,
    find_hg,
    git_env,
    hg_env,
    run_unattended,
    supervise,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

#: seconds a poll of one ref (ls-remote, identify) may take
POLL_TIMEOUT = 60.0
#: bytes of tox's result file read for the outcomes of its environments
MAX_RESULT = 16 * 1024 * 1024
#: characters of a run's log left to the lines around its command's output (git's, nestegg's)
LOG_ROOM = 64 * 1024
_HEX = re.compile(r"[0-9a-f]{40,64}")


def settings_of(build: SourceBuild) -> CISettings:
    """The CI settings of ``build``: its ``ci`` entry, else the defaults (for the trigger and the CLI)."""
    return build.ci or CISettings()


def watched(build: SourceBuild) -> tuple[str, ...]:
    """The refs CI tests: the configured ones, else the default branch."""
    return settings_of(build).watch or (("HEAD",) if build.repo_type == "git" else ("default",))


# polling ----------------------------------------------------------------------------------------


def remote_head(build: SourceBuild, ref: str, *, timeout: float = POLL_TIMEOUT) -> str:
    """The commit ``ref`` names in the remote repository now, asked without fetching anything."""
    if build.repo_type == "git":
        env = git_env()
        patterns = (
            [ref]
            if ref == "HEAD" or ref.startswith("refs/")
            else [
                f"refs/tags/{ref}",
                f"refs/tags/{ref}^{{}}",
                f"refs/heads/{ref}",
            ]
        )
        output = _ask(["git", "ls-remote", "--", build.repo_url, *patterns], env, timeout)
        found = {}
        for line in output.splitlines():
            commit, _, name = line.partition("\t")
            found[name.strip()] = commit.strip()
        # a peeled annotated tag names the commit; the tag itself, then a branch, come after
        for pattern in (*patterns[1:2], *patterns[:1], *patterns[2:]):
            commit = found.get(pattern, "")
            if _HEX.fullmatch(commit):
                return commit
        raise BuildError(f"no branch or tag {ref!r} in {mask_text(build.repo_url)!r}")
    problem = ref_problem(ref, "hg")
    if problem is not None:
        raise BuildError(f"{ref!r} is not a branch or tag name: {problem}")
    env = hg_env()
    output = _ask(
        [find_hg(), "--noninteractive", "identify", "--debug", "--id", "--rev", ref, "--", build.repo_url],
        env,
        timeout,
    )
    commit = output.strip().split()[-1] if output.strip() else ""
    if not _HEX.fullmatch(commit):
        raise BuildError(f"no branch, bookmark or tag {ref!r} in {mask_text(build.repo_url)!r}")
    return commit


def _ask(command: list[str], env: Mapping[str, str], timeout: float) -> str:
    shown = mask_text(" ".join(command))
    try:
        result = run_unattended(command, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{shown!r} did not answer within {timeout:.0f}s") from None
    if result.returncode != 0:
        raise BuildError(f"{shown!r} failed (exit {result.returncode}): {failure_line(result.stderr)}")
    return result.stdout


# running ----------------------------------------------------------------------------------------


class Runner(CheckoutWork[RunStore]):
    """Runs the tests of one commit of a source build and records the run."""

    def __init__(self, config: Config, store: RunStore, **options: Any) -> None:
        super().__init__(config, store, **options)
        self.root = config.nestegg_dir / "ci"
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def run(self, run: Run, build: SourceBuild, cancel: threading.Event | None = None) -> Run:
        """Check out the run's commit (its ref's head when it has none yet), run the tests, record.

        Never raises for what the tests or the repository do: a failure, a time-out or a
        checkout that cannot be made is the run's outcome. A run another process (or worker)
        made meanwhile is not made again: it is returned as it ended; one it left running when
        it died is made.
        """
        cancel = cancel or threading.Event()
        settings = settings_of(build)
        log = Transcript()
        # runs of one project take turns: they share its clone
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with (
            self._project_lock(build.name),
            _taking_turns(FileLock(locks / f"{build.name}.lock"), build.name),
        ):
            # a run queued by a server may be taken by nestegg ci (one queued run per ref): the
            # one of them that comes second finds it done, or left running by a process killed
            # outright, which it makes again
            current, free = self.store.runnable(run.id)
            if current is not None and not free:
                return current
            if current is not None and current.outcome == RUNNING:
                logger.info("CI run #%d of %s: made again, its process is gone", run.id, build.name)
            run = self.store.start(run.id)
            started = time.monotonic()
            log.note(
                f"# nestegg CI run #{run.id} of {build.name}: {build.repo_type} {run.ref} of {build.repo_url}"
            )
            try:
                return self._run(run, build, settings, log, cancel=cancel, started=started)
            except KeyboardInterrupt:
                self.store.finish(
                    run.id,
                    outcome=INTERRUPTED,
                    log=log.text(),
                    message="interrupted",
                    duration=time.monotonic() - started,
                )
                raise
            except Exception as exc:  # a run must never take its worker (or the server) down
                logger.exception("CI run #%d of %s failed unexpectedly", run.id, build.name)
                log.note(f"# internal error: {exc!r}")
                message = f"internal error: {exc}"
                duration = time.monotonic() - started
                return self.store.finish(
                    run.id, outcome=ERROR, log=log.text(), message=message, duration=duration
                )

    def _run(
        self,
        run: Run,
        build: SourceBuild,
        settings: CISettings,
        log: Transcript,
        *,
        cancel: threading.Event,
        started: float,
    ) -> Run:
        def finish(outcome: str, message: str, **values: Any) -> Run:
            if message:
                log.note(f"# {outcome}: {message}")
            return self.store.finish(
                run.id,
                outcome=outcome,
                log=log.text(),
                message=message,
                duration=time.monotonic() - started,
                **values,
            )

        vcs = self.backends(build.repo_type)
        clone = self.root / "repos" / build.name
        try:
            _fetch(vcs, clone, build, log)
            # the ref's exact name, as builds look it up: what a poll found (git ls-remote, hg
            # identify, which takes a commit id's prefix too) only says when to run
            commit = vcs.resolve(clone, run.ref, log).commit
        except MissingRef as exc:
            return finish(ERROR, f"{exc} in {mask_text(build.repo_url)!r}")
        except BuildError as exc:
            return finish(ERROR, str(exc))
        if run.commit != commit:
            # the ref moved since the poll (a run that waited behind another, on a busy branch):
            # its head now is what runs, and the run says so (tested() then finds it, not the
            # commit polled, which no longer heads the ref and no poll queues again)
            if run.commit is not None:
                log.note(f"# {run.ref!r} moved since its poll from {run.commit}: testing its head")
            self.store.set_commit(run.id, commit)
        log.note(f"# commit {commit}")
        work_root = self.config.nestegg_dir / "tmp" / "ci"
        work_root.mkdir(parents=True, exist_ok=True)
        _remove_left_checkouts(work_root, build.name)
        # no normalized name holds a dot: "a." starts none of "a-b"'s checkouts
        with tempfile.TemporaryDirectory(dir=work_root, prefix=f"{build.name}.") as work:
            source = Path(work) / "source"
            try:
                vcs.checkout(clone, commit, source, log)
                command = self.command(settings)
                env = self.env(Path(work))
            except BuildError as exc:
                return finish(ERROR, str(exc))
            log.note(f"# installs from {env['PIP_INDEX_URL']}")
            log.note(f"$ {shlex.join(command)}")
            # read as it comes, its head and tail kept (with room in the log for the rest): a chatty
            # job takes no more memory than that, nor any disk
            output = CappedOutput(MAX_LOG - LOG_ROOM)
            try:
                ended = supervise(
                    command, cwd=source, env=env, timeout=settings.timeout, merge_output=True, stop=cancel,
                    output=output,
                )  # fmt: skip
            except BuildError as exc:
                return finish(ERROR, str(exc))
            except BaseException:  # Ctrl-C: the run is recorded with what its command said
                log.parts.append(mask_text(output.text()))
                raise
            log.parts.append(mask_text(ended.output))
            code = ended.code
            envs = tox_results(Path(work) / "result.json")
            if ended.stopped == TIMED_OUT:
                return finish(TIMEOUT, f"stopped after the time limit of {settings.timeout:g}s", envs=envs)
            if ended.stopped == STOPPED:
                return finish(INTERRUPTED, "stopped: the server is stopping", envs=envs)
            log.note(f"[exit {code} after {time.monotonic() - started:.1f}s]")
            failed = [env.name for env in envs if env.outcome == FAILED]
            message = (
                f"failed: {', '.join(failed)}" if code and failed else f"exit code {code}" if code else ""
            )
            return finish(PASSED if code == 0 else FAILED, message, exit_code=code, envs=envs)

    def command(self, settings: CISettings) -> list[str]:
        """The argument list of ``settings.command``; ``tox`` is this Python's tox."""
        words = shlex.split(settings.command)
        if words and words[0] == "tox":
            return [self.python, "-m", "tox", *words[1:]]
        return words

    def env(self, work: Path) -> dict[str, str]:
        """The environment of a run: installers see this mirror only; tox writes its result JSON."""
        index_url = self.index_url()
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOX")}
        env = installer_env(index_url, base=base)
        host = urlsplit(index_url).hostname
        if host:  # never through a proxy to ourselves
            for key in ("NO_PROXY", "no_proxy"):
                env[key] = ",".join(filter(None, [host, env.get(key, "")]))
        # tox reads its options' defaults from TOX_<OPTION>: the result JSON, and no user config
        env["TOX_RESULT_JSON"] = str(work / "result.json")
        env["TOX_USER_CONFIG_FILE"] = str(work / "no-tox-user-config.ini")
        # installs already go to this mirror: nestegg's tox plugin need not start one of its own
        env["TOX_NO_NESTEGG"] = "1"
        return env

    def _project_lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


@contextlib.contextmanager
def _taking_turns(lock: FileLock, name: str) -> Iterator[None]:
    """Hold ``lock``, the turn of ``name``'s runs; a wait for another process's run is said."""
    try:
        lock.acquire(timeout=0)
    except LockTimeout:
        logger.info("CI of %s: waiting for the run another process makes of it to end", name)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _fetch(vcs: VCS, clone: Path, build: SourceBuild, log: Transcript) -> None:
    """Fetch ``build``'s repo_url into ``clone``, cloned afresh when it is another URL's clone,
    which the note of its last fetch's URL (masked) tells, as builds note it: without the note (a
    clone older than it) the clone's own remote says, read by a git or hg process."""
    fetched = clone.with_name(f"{clone.name}.fetched-from")  # no normalized name holds a dot
    recorded = _read_note(fetched)
    if drop_clone_of_other_url(vcs, clone, build.repo_url, log, recorded=recorded):
        logger.warning("CI of %s: the repo_url is now %s: cloning it afresh", build.name,
                       mask_text(build.repo_url))  # fmt: skip
    vcs.update(build.repo_url, clone, log)
    if recorded != mask_text(build.repo_url):
        with contextlib.suppress(OSError):  # unnoted, the next run asks the clone
            write_atomic(fetched, mask_text(build.repo_url).encode())


def _read_note(path: Path) -> str | None:
    """The text of the small note at ``path`` (at most 64 KiB read), None when there is none."""
    try:
        with path.open("rb") as handle:
            return read_at_most(handle, 64 * 1024).decode("utf-8", "replace").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc}") from None


def _remove_left_checkouts(work_root: Path, name: str) -> None:
    """Remove the checkouts of ``name``'s runs that a process killed outright left in ``work_root``
    (with their tox environments): none is in use while the caller holds the project's lock."""
    # <name>-<random> is how earlier releases named them: no other project's checkout is named so
    left = re.compile(re.escape(name) + r"[.-][a-z0-9_]{8}")
    with os.scandir(work_root) as entries:
        found = [e.path for e in entries if left.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    for path in found:
        logger.info("removing %s, left by a CI run that did not end", path)
        shutil.rmtree(path, ignore_errors=True)


def tox_results(path: Path, limit: int = MAX_RESULT) -> tuple[EnvResult, ...]:
    """The outcome of each environment in tox's ``--result-json`` file; none if there is no such
    file, or it is over ``limit`` bytes (it holds the output of every command again)."""
    try:
        with path.open("rb") as handle:
            raw = read_at_most(handle, limit + 1)
        if len(raw) > limit:
            logger.warning("not reading tox's result file %s: it is over %s", path, format_size(limit))
            return ()
        data = json.loads(raw)
        envs = data["testenvs"]
        if not isinstance(envs, dict):
            return ()
    except (OSError, ValueError, KeyError, TypeError):
        return ()
    results = []
    for name, env in envs.items():
        result = env.get("result") if isinstance(env, dict) else None
        if not isinstance(result, dict):
            continue  # tox's own packaging environments carry no result
        code = result.get("exit_code")
        outcome = "skipped" if result.get("skipped") else PASSED if result.get("success") else FAILED
        duration = result.get("duration")
        results.append(
            EnvResult(
                name=str(name),
                outcome=outcome,
                exit_code=code if isinstance(code, int) else None,
                duration=float(duration) if isinstance(duration, (int, float)) else None,
            )
        )
    return tuple(results)


# the service ------------------------------------------------------------------------------------


class CIService:
    """Polls the watched refs and runs queued runs in worker threads, while nestegg serves."""

    def __init__(self, config: Config, store: RunStore, runner: Runner) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.builds = {build.name: build for build in config.source_builds}
        self.polled = [b for b in config.source_builds if b.ci is not None and b.ci.interval > 0]
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._stopping = threading.Event()
        self._poke = threading.Event()
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()

    def start(self) -> None:
        """Start the poller (when a build is polled); the workers start with the first run queued."""
        with self._guard:
            if self._threads:
                return
            self._stopping.clear()
            try:
                recovered = self.store.interrupt_unfinished()
            except Exception as exc:  # noqa: BLE001 - a damaged history must not stop the server
                logger.warning("cannot read the CI history %s: %s", self.store.path, exc)
            else:
                if recovered:
                    logger.info("marked %d CI runs of stopped processes interrupted", recovered)
            if self.polled:
                self._spawn(self._poll_loop, "nestegg-ci-poll")
        self._ensure_workers()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and running: a run in progress is stopped and recorded as interrupted."""
        self._stopping.set()
        self._poke.set()
        with self._guard:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self.store.interrupt_unfinished(mine=True)
        except Exception as exc:  # noqa: BLE001 - nor stopping it
            logger.warning("cannot record the CI runs this server leaves unfinished: %s", exc)
        self.store.close()
        self._queue = queue.Queue()

    # queueing ---------------------------------------------------------------------------------

    def trigger(self, name: str, ref: str | None = None, *, how: str = "trigger") -> list[Run]:
        """Queue a run of ``ref`` (default: every watched ref) of source build ``name`` at its head."""
        build = self.build(name)
        refs = watched(build)
        if ref is not None:
            if ref not in refs:
                raise BadRequest(f"ref {ref!r} is not watched by {build.name!r} (watched: {', '.join(refs)})")
            refs = (ref,)
        return [self._enqueue(build, r, None, how)[0] for r in refs]

    def poll(self, build: SourceBuild) -> list[Run]:
        """Queue a run of each watched ref whose head is a commit not tested yet."""
        queued = []
        for ref in watched(build):
            try:
                commit = remote_head(build, ref)
            except BuildError as exc:
                logger.warning("CI of %s: cannot poll %s: %s", build.name, ref, exc)
                continue
            if self.store.tested(build.name, ref, commit):
                continue
            run, new = self._enqueue(build, ref, commit, "poll", untested=True)
            if new:
                logger.info("CI of %s: new commit %s on %s (run #%d)", build.name, commit[:12], ref, run.id)
                queued.append(run)
        return queued

    def build(self, name: str) -> SourceBuild:
        found = self.builds.get(canonicalize_name(name)) if is_valid_name(name) else None
        if found is None:
            known = ", ".join(sorted(self.builds)) or "none"
            raise NotFound(f"{name!r} is not a source build (source builds: {known})")
        return found

    def _enqueue(
        self, build: SourceBuild, ref: str, commit: str | None, how: str, *, untested: bool = False
    ) -> tuple[Run, bool]:
        run, new = self.store.queue(build.name, ref, commit, how, untested=untested)
        if new:
            self._ensure_workers()
            self._queue.put(run.id)
        return run, new

    # threads ----------------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _ensure_workers(self) -> None:
        with self._guard:
            if self._stopping.is_set() or any(t.name.startswith("nestegg-ci-run") for t in self._threads):
                return
            for index in range(self.config.ci_jobs):
                self._spawn(self._work_loop, f"nestegg-ci-run-{index}")

    def _poll_loop(self) -> None:
        due = dict.fromkeys((b.name for b in self.polled), 0.0)
        while not self._stopping.is_set():
            now = time.monotonic()
            for build in self.polled:
                if self._stopping.is_set():
                    break
                if due[build.name] <= now:
                    try:
                        self.poll(build)
                    except Exception:  # the poller outlives any surprise
                        logger.exception("CI of %s: polling failed", build.name)
                    assert build.ci is not None
                    due[build.name] = time.monotonic() + build.ci.interval
            self._poke.wait(max(0.05, min(due.values()) - time.monotonic()))
            self._poke.clear()

    def _work_loop(self) -> None:
        work = self._queue
        while not self._stopping.is_set():
            run_id = work.get()
            if run_id is None or self._stopping.is_set():
                break
            try:
                run, free = self.store.runnable(run_id)
                if run is None or not free:  # made by another, or being made
                    continue
                build = self.builds.get(canonicalize_name(run.project))
                if build is None:
                    self.store.start(run_id)
                    self.store.finish(run_id, outcome=ERROR, log="", message="no longer a source build")
                    continue
                logger.info("CI run #%d of %s %s started", run.id, run.project, run.ref)
                done = self.runner.run(run, build, self._stopping)
                logger.info(
                    "CI run #%d of %s %s: %s %s", done.id, done.project, done.ref, done.outcome, done.message
                )
            except Exception:
                logger.exception("CI run #%d could not be run", run_id)


def service(config: Config, *, index_url: Callable[[], str]) -> CIService | None:
    """CI of ``config``'s source builds, to run while the mirror serves (its URL: ``index_url()``);
    None when no source build has a ``ci`` entry and no trigger token is set."""
    if not config.source_builds or not (config.ci_token or any(b.ci for b in config.source_builds)):
        return None
    store = RunStore(config.nestegg_dir)
    return CIService(config, store, Runner(config, store, index_url=index_url))
