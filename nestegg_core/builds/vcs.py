"""git and hg, run as the user's own programs: keep a clone, resolve a tag or branch, check out a commit.

Each repository of a source build is kept under ``<nestegg dir>/repos/<name>`` (a bare mirror for
git, a clone without working copy for hg) and updated before builds; a build gets a fresh checkout
of one commit in a temporary directory. Authentication (ssh agent, credential helpers, hgrc) is
the user's own: nothing is prompted for, so a server never hangs on a password question.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Generic, Protocol, TypeVar

from nestegg_core.config.refs import ref_problem
from nestegg_core.errors import BuildError
from nestegg_core.urls import mask_text, without_credentials

if TYPE_CHECKING:
    from nestegg_core.config.config import Config

S = TypeVar("S")

#: seconds a clone or fetch may take
FETCH_TIMEOUT = 600.0
#: seconds a stopped command's processes get between SIGTERM and SIGKILL
KILL_GRACE = 5.0
#: bytes of one command's output kept, as the CI log keeps its runs': its head and its tail
MAX_OUTPUT = 2 * 1024 * 1024
OUTPUT_HEAD = 256 * 1024
#: seconds between looks at a running command's clock and stop event
_POLL = 0.1
#: seconds the output is read for once the command's processes are gone (a daemon that left
#: its process group may hold the pipe for good)
_DRAIN = 5.0


class Transcript:
    """Runs commands and keeps what they said, for a build's log; URLs are masked.

    ``stop`` set ends the command that runs (and refuses the next ones): the server is stopping.
    """

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.parts: list[str] = []
        self.stop = stop
        #: the line that says why the last command that failed did, masked ("" while none did)
        self.reason = ""

    def note(self, text: str) -> None:
        self.parts.append(mask_text(text.rstrip("\n")) + "\n")

    def run(
        self,
        command: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = FETCH_TIMEOUT,
        check: bool = True,
        label: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command``; on failure (``check``) raise :class:`BuildError` with the line that says why
        (:func:`failure_line`).

        Messages name the command as ``label``, else as run (the program without its directory).
        """
        self.note(f"$ {' '.join(command)}")
        shown = label or " ".join([os.path.basename(command[0]), *command[1:]])
        started = time.monotonic()
        try:
            result = run_unattended(
                command, cwd=cwd, env=env, timeout=timeout, merge_output=True, stop=self.stop
            )
        except subprocess.TimeoutExpired as exc:
            if exc.output:
                self.note(str(exc.output))
            self.note(f"[timed out after {timeout:.0f}s]")
            self.reason = f"did not finish within {timeout:.0f}s"
            raise BuildError(f"{mask_text(shown)!r} did not finish within {timeout:.0f}s") from None
        except BuildError as exc:
            self.note(f"[{exc}]")
            self.reason = str(exc)
            raise
        if result.stdout:
            self.note(result.stdout)
        self.note(f"[exit {result.returncode} after {time.monotonic() - started:.1f}s]")
        if result.returncode != 0:
            self.reason = failure_line(result.stdout)
            if check:
                raise failed(shown, result)
        return result

    def text(self) -> str:
        return "".join(self.parts)


def failed(shown: str, result: subprocess.CompletedProcess[str]) -> BuildError:
    """The error of ``result``, a command (``shown``) that exited with an error, saying why."""
    why = failure_line(result.stdout)
    return BuildError(f"{mask_text(shown)!r} failed (exit {result.returncode}): {why}")


def run_unattended(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    timeout: float,
    cwd: Path | None = None,
    merge_output: bool = False,
    stop: threading.Event | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with no input and no terminal, its output captured as text (stderr into
    stdout with ``merge_output``; each cut to its head and tail past :data:`MAX_OUTPUT`);
    :class:`BuildError` if it is not installed, or when ``stop`` is set. A time-out is raised as
    :class:`subprocess.TimeoutExpired` (with the output so far), for the caller to word.

    Whatever way it ends, nothing the command started is left running (see :func:`supervise`).
    """
    if stop is not None and stop.is_set():
        raise BuildError("stopped: the server is stopping")
    ended = supervise(command, env=env, timeout=timeout, cwd=cwd, merge_output=merge_output, stop=stop)
    if ended.stopped == STOPPED:
        raise BuildError("stopped: the server is stopping")
    if ended.stopped == TIMED_OUT:
        raise subprocess.TimeoutExpired(list(command), timeout, output=ended.output)
    assert ended.code is not None  # it exited, and was reaped
    return subprocess.CompletedProcess(list(command), ended.code, ended.output, ended.errors)


#: how :func:`supervise` ended a command that had not exited: its time limit, or ``stop``
TIMED_OUT, STOPPED = "timed out", "stopped"


@dataclass(frozen=True)
class Ended:
    """How a command :func:`supervise` ran ended, and what it said."""

    #: its exit status (negative: the signal that ended it); None if it could not be reaped
    code: int | None
    #: "" when it exited of itself, else :data:`TIMED_OUT` or :data:`STOPPED`
    stopped: str
    #: its output (with stderr, merged), cut to its head and tail past :data:`MAX_OUTPUT`
    output: str
    #: its stderr when not merged, else None
    errors: str | None


def supervise(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    timeout: float,
    cwd: Path | None = None,
    merge_output: bool = False,
    stop: threading.Event | None = None,
    limit: int | None = None,
    output: CappedOutput | None = None,
) -> Ended:
    """Run ``command`` with no input and no terminal until it exits, ``timeout`` seconds pass or
    ``stop`` is set; its output is read as it comes, never more than ``limit`` bytes of it held
    (:class:`CappedOutput`; default :data:`MAX_OUTPUT`). :class:`BuildError` if it cannot be started.
    Given ``output``, its output goes there, held to that output's own limit (``limit`` is then
    left out, or the same): what it said is there too when this raises (Ctrl-C).

    Whatever way it ends, nothing the command started is left running: its process group (a
    session of its own) is stopped, TERM then KILL, as is what it left behind when it exited.
    """
    if output is not None and limit is not None and limit != output.limit:
        raise ValueError(f"limit={limit} and an output of limit {output.limit}: give one or the other")
    try:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            # no controlling terminal: ssh and credential helpers fail instead of prompting; and a
            # process group of its own, ended whole
            start_new_session=True,
        )
    except FileNotFoundError:
        raise BuildError(f"cannot run {command[0]!r}: it is not installed (or not on PATH)") from None
    except PermissionError:
        raise BuildError(f"cannot run {command[0]!r}: it is not executable") from None
    pipes = [pipe for pipe in (process.stdout, process.stderr) if pipe is not None]
    outputs = [CappedOutput(limit) if output is None else output, *(CappedOutput(limit) for _ in pipes[1:])]
    readers = [
        threading.Thread(target=output.read_from, args=(pipe,), name="nestegg-output", daemon=True)
        for pipe, output in zip(pipes, outputs, strict=True)
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    stopped = ""
    try:
        while not exited(process, min(_POLL, max(0.0, deadline - time.monotonic()))):
            if stop is not None and stop.is_set():
                stopped = STOPPED
                break
            if time.monotonic() >= deadline:
                stopped = TIMED_OUT
                break
        if stopped:
            end_group(process)
        else:
            # exited, not reaped: its id is still its group's, whose leftovers (a daemon holding
            # the output pipe) are ended before the id is given up
            _signal_group(process, _KILL)
            process.wait()
    except BaseException:
        end_group(process)
        raise
    finally:
        _join(readers)
    texts = [output.text() for output in outputs]
    return Ended(process.returncode, stopped, texts[0], None if merge_output else texts[1])


_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)


def end_group(process: subprocess.Popen[bytes], grace: float | None = None) -> None:
    """Stop ``process`` and everything it started (its session): TERM, then KILL after ``grace``
    seconds (:data:`KILL_GRACE`). The group is signalled only while its leader is not reaped:
    once it is, its id may be another process's."""
    if process.returncode is not None:
        return
    _signal_group(process, signal.SIGTERM)
    exited(process, KILL_GRACE if grace is None else grace)
    _signal_group(process, _KILL)  # what TERM left, the leader too if it did not heed it
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30.0)


def exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether ``process`` exits within ``timeout`` seconds, told without reaping it where the
    system allows (``waitid`` with ``WNOWAIT``), so that its group can still be signalled."""
    deadline = time.monotonic() + timeout
    delay = 0.0005  # doubled up to 20 ms, as Popen.wait waits: most commands end in milliseconds
    while True:
        if process.returncode is not None:
            return True
        if _WAITID:
            try:
                if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # reaped by someone else: gone
                return True
        elif process.poll() is not None:  # pragma: no cover - reaps: no group signalled after it
            return True
        if time.monotonic() >= deadline:
            return False
        delay = min(delay * 2, 0.02, max(0.0, deadline - time.monotonic()))
        time.sleep(delay)


_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.returncode is not None:  # reaped: its id is no longer its own
        return
    with contextlib.suppress(OSError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, sig)
        else:  # pragma: no cover - no process groups on Windows
            process.send_signal(sig)


def _join(readers: Sequence[threading.Thread]) -> None:
    deadline = time.monotonic() + _DRAIN
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))


class CappedOutput:
    """A command's output as it is read, never more than ``limit`` bytes of it in memory: the
    first ``head`` bytes and the last ones, with a note of how many were cut between."""

    def __init__(self, limit: int | None = None, head: int | None = None) -> None:
        self.limit = MAX_OUTPUT if limit is None else limit
        self.head_size = min(self.limit, OUTPUT_HEAD if head is None else head)
        self._head = bytearray()
        self._tail = bytearray()
        self.cut = 0
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            room = self.head_size - len(self._head)
            if room > 0:
                self._head += data[:room]
                data = data[room:]
            self._tail += data
            excess = len(self._tail) - (self.limit - self.head_size)
            if excess > 0:
                del self._tail[:excess]  # cheap: a bytearray drops its front without copying
                self.cut += excess

    @property
    def held(self) -> int:
        """Bytes of output in memory."""
        return len(self._head) + len(self._tail)

    def read_from(self, pipe: IO[bytes]) -> None:
        """Keep what ``pipe`` gives until it ends (a reader thread's work)."""
        with contextlib.suppress(OSError, ValueError), pipe:
            while chunk := pipe.read1(64 * 1024) if hasattr(pipe, "read1") else pipe.read(64 * 1024):
                self.write(chunk)

    def text(self) -> str:
        with self._lock:
            middle = f"\n[... {self.cut} bytes of output cut ...]\n".encode() if self.cut else b""
            return (bytes(self._head) + middle + bytes(self._tail)).decode("utf-8", "replace")


#: how git ("fatal: ...", "error: ...") and hg ("abort: ...") start the line that says what failed
_FAILURE = ("fatal:", "error:", "abort:")
#: the last line of a Python traceback, ``SyntaxError: '(' was never closed``: what a build's
#: backend died of (its frontend's closing "ERROR Backend subprocess exited ..." says nothing)
_EXCEPTION = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::\s.*)?")
#: an exception that only says a command failed: that command's own lines say why
_WRAPPERS = ("CalledProcessError", "subprocess.CalledProcessError")
#: characters of the telling line kept (a line of megabytes is no message)
_LINE_LIMIT = 400


def failure_line(output: str) -> str:
    """The line of a failed command's ``output`` that says why, masked: the last Python exception
    line (``ModuleNotFoundError: ...``), else the first one git, hg or pip starts with ``fatal:``,
    ``error:`` or ``abort:``, else the last (git's advice after its reason, "and the repository
    exists.", says nothing)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    raised = [
        line for line in lines if _EXCEPTION.fullmatch(line) and line.partition(":")[0] not in _WRAPPERS
    ]
    line = mask_text(  # before it is cut: a cut URL's password would not be seen as one
        raised[-1]
        if raised
        else next((line for line in lines if line.lower().startswith(_FAILURE)), lines[-1])
    )
    return line if len(line) <= _LINE_LIMIT else line[: _LINE_LIMIT - 3] + "..."


_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Resolved:
    """What a tag or branch names: its commit, and whether it is a tag, a branch or a bookmark."""

    commit: str
    kind: str


class MissingRef(BuildError):
    """A repository has no tag or branch of the name asked for."""

    def __init__(self, ref: str, kinds: str) -> None:
        super().__init__(f"no {kinds} {ref!r}")
        self.ref = ref


class VCS(Protocol):
    """A version control system nestegg builds from."""

    #: the ``repo_type`` of the config
    kind: str

    def update(self, url: str, path: Path, run: Transcript) -> None:
        """Make ``path`` an up-to-date copy of the repository at ``url`` (clone or fetch)."""

    def origin(self, path: Path, run: Transcript) -> str | None:
        """The URL the clone at ``path`` fetches from (as it holds it); None if it says none."""

    def resolve(self, path: Path, ref: str, run: Transcript) -> Resolved:
        """The commit the tag or branch (hg: or bookmark) named ``ref`` names now, never a revision
        expression or a commit id; :class:`MissingRef` if there is none, :class:`BuildError` if
        ``ref`` can name none (:func:`ref_problem`)."""

    def checkout(self, path: Path, commit: str, dest: Path, run: Transcript) -> None:
        """Write a clean checkout of ``commit`` to the new directory ``dest``."""


class Git:
    """git, with a bare ``--mirror`` clone: every branch and tag is a local ref."""

    kind = "git"

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or shutil.which("git") or "git"

    @staticmethod
    def env() -> dict[str, str]:
        return git_env()

    def _git(self, *args: str) -> list[str]:
        return [self.executable, *args]

    def update(self, url: str, path: Path, run: Transcript) -> None:
        env = self.env()
        if (path / "HEAD").is_file() and (path / "objects").is_dir():
            run.run(self._git("-C", str(path), "remote", "set-url", "origin", "--", url), env=env)
            run.run(self._git("-C", str(path), "fetch", "--prune", "--force", "--quiet", "origin"), env=env)
            return
        _replace_dir(
            path, lambda tmp: run.run(self._git("clone", "--mirror", "--quiet", "--", url, str(tmp)), env=env)
        )

    def origin(self, path: Path, run: Transcript) -> str | None:
        # the stored URL: ``remote get-url`` rewrites it by the user's ``url.<base>.insteadOf``
        # rules, and ``-C`` searches the parent folders of a path that is no repository
        result = run.run(
            self._git(f"--git-dir={path}", "config", "--get", "remote.origin.url"),
            env=self.env(),
            check=False,
        )
        return (result.stdout.strip() or None) if result.returncode == 0 else None

    def resolve(self, path: Path, ref: str, run: Transcript) -> Resolved:
        _check_ref(ref, self.kind)
        if ref == "HEAD":  # the default branch, which CI watches
            result = run.run(
                self._git("-C", str(path), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"),
                env=self.env(),
                check=False,
            )
            commit = result.stdout.strip()
            if result.returncode == 0 and _HEX.fullmatch(commit):
                return Resolved(commit=commit, kind="branch")
            raise MissingRef(ref, "default branch")
        # refs by their exact names: rev-parse would take what is no ref (a commit id, a
        # revision expression) and look in other namespaces (refs/remotes/...) too
        names = [ref] if ref.startswith("refs/") else [f"refs/tags/{ref}", f"refs/heads/{ref}"]
        fields = "%(refname) %(objectname) %(objecttype) %(*objectname) %(*objecttype)"  # no blank in a ref
        result = run.run(self._git("-C", str(path), "for-each-ref", f"--format={fields}", "--", *names),
                         env=self.env())  # fmt: skip
        found: dict[str, tuple[str, ...]] = {}
        for line in result.stdout.splitlines():
            name, *values = line.split(" ")
            found[name] = tuple(values)
        for name in names:
            if name not in found:
                continue
            kind = "tag" if name.startswith("refs/tags/") else "branch"
            oid, kind_of, peeled, peeled_kind = (*found[name], "", "", "", "")[:4]
            if kind_of == "commit" and _HEX.fullmatch(oid):
                return Resolved(commit=oid, kind=kind)
            if peeled_kind == "commit" and _HEX.fullmatch(peeled):
                return Resolved(commit=peeled, kind=kind)
            if _HEX.fullmatch(oid):  # a tag of a tag: peeled whole (its id is no expression)
                peel = run.run(
                    self._git("-C", str(path), "rev-parse", "--verify", "--quiet", f"{oid}^{{commit}}"),
                    env=self.env(),
                    check=False,
                )
                commit = peel.stdout.strip()
                if peel.returncode == 0 and _HEX.fullmatch(commit):
                    return Resolved(commit=commit, kind=kind)
            raise BuildError(f"{kind} {ref!r} names no commit (a {kind_of or 'missing object'})")
        raise MissingRef(ref, "tag or branch")

    def checkout(self, path: Path, commit: str, dest: Path, run: Transcript) -> None:
        env, here = self.env(), str(dest)
        run.run(self._git("clone", "--quiet", "--shared", "--no-checkout", "--", str(path), here), env=env)
        detached = ("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)
        run.run(self._git("-C", here, *detached), env=env)
        if (dest / ".gitmodules").is_file():
            run.run(self._git("-C", here, "submodule", "update", "--init", "--recursive", "--quiet"), env=env)


class Mercurial:
    """hg, with a clone that has no working copy."""

    kind = "hg"

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or find_hg()

    @staticmethod
    def env() -> dict[str, str]:
        return hg_env()

    def _hg(self, *args: str) -> list[str]:
        return [self.executable, "--noninteractive", *args]

    def update(self, url: str, path: Path, run: Transcript) -> None:
        env = self.env()
        if (path / ".hg").is_dir():
            run.run(self._hg("--repository", str(path), "pull", "--quiet", "--", url), env=env)
            return
        _replace_dir(
            path,
            lambda tmp: run.run(self._hg("clone", "--noupdate", "--quiet", "--", url, str(tmp)), env=env),
        )

    def origin(self, path: Path, run: Transcript) -> str | None:
        command = self._hg("--repository", str(path), "paths", "default")
        result = run.run(command, env=self.env(), check=False)
        return (result.stdout.strip() or None) if result.returncode == 0 else None

    def resolve(self, path: Path, ref: str, run: Transcript) -> Resolved:
        _check_ref(ref, self.kind)
        # names as literal strings of revset functions: never a revset, a revision number or id
        literal = _revset_string(f"literal:{ref}")
        for kind in ("tag", "bookmark", "branch"):
            revset = f"max({kind}({literal}))"
            result = run.run(
                self._hg("--repository", str(path), "log", "--rev", revset, "--template", "{node}\\n"),
                env=self.env(),
                check=False,
            )
            nodes = result.stdout.split()
            if result.returncode == 0 and len(nodes) == 1 and _HEX.fullmatch(nodes[0]):
                return Resolved(commit=nodes[0], kind=kind)
        raise MissingRef(ref, "tag, bookmark or branch")

    def checkout(self, path: Path, commit: str, dest: Path, run: Transcript) -> None:
        clone = ("clone", "--quiet", "--updaterev", commit, "--", str(path), str(dest))
        run.run(self._hg(*clone), env=self.env())


def other_origin(
    vcs: VCS, path: Path, url: str, run: Transcript, *, recorded: str | None = None
) -> str | None:
    """The URL (masked) ``path`` is a clone of when that is another than ``url``, the repo_url now;
    None when it is a clone of ``url``, is no clone, or cannot tell.

    ``recorded`` is the URL of its last fetch, as its owner noted it; without it (a state older
    than the note, CI's clones) the clone's own remote says (git's origin, hg's default path).
    Credentials do not count: a password or user name changed is no other repository.
    """
    if not path.exists():
        return None
    known = recorded if recorded is not None else vcs.origin(path, run)
    if known is None or _comparable(known) == _comparable(url):
        return None
    return mask_text(known)


def drop_clone_of_other_url(
    vcs: VCS, path: Path, url: str, run: Transcript, *, recorded: str | None = None
) -> str | None:
    """Remove ``path`` when it is a clone of another URL than ``url`` (:func:`other_origin`), for
    :meth:`VCS.update` to clone ``url`` afresh: fetched into the old clone, another repository's
    commits would mix with the old one's (hg pulls both histories into one) or fail each time.
    The other URL (masked) if it was removed, else None; :class:`BuildError` if it cannot be."""
    other = other_origin(vcs, path, url, run, recorded=recorded)
    if other is None:
        return None
    run.note(f"# repo_url changed from {other}: cloned afresh")
    try:
        shutil.rmtree(path)
    except OSError as exc:
        why = f"cannot remove {path}, the clone of the repo_url before ({other}): {exc}"
        run.note(f"# {why}")
        raise BuildError(why) from None
    return other


def _comparable(url: str) -> str:
    url = without_credentials(url)
    if "://" in url:
        return url.rstrip("/")
    if re.match(r"[^/]+:", url):  # scp-like [user@]host:path: the user name does not count either
        return re.sub(r"\A[^/@:]*@", "", url).rstrip("/")
    return os.path.abspath(url)  # a path: hg holds it absolute


def unattended_env() -> dict[str, str]:
    """This process's environment, but for what would ask someone for a password or passphrase:
    no askpass program runs (``GIT_ASKPASS``, ``core.askPass``, ``SSH_ASKPASS``: desktops and
    editors set them, to prompts nobody answers on a server), nor an interactive credential
    manager. Credential helpers, ssh agents and keys, hgrc ``[auth]`` still work."""
    env = dict(os.environ)
    for key in ("SSH_ASKPASS", "DISPLAY", "WAYLAND_DISPLAY"):  # ssh before 8.4 asks with DISPLAY set
        env.pop(key, None)
    # an empty GIT_ASKPASS ends git's search for one (core.askPass, SSH_ASKPASS) and asks nothing
    env.update(GIT_ASKPASS="", SSH_ASKPASS_REQUIRE="never", GCM_INTERACTIVE="never", LC_ALL="C")
    return env


def git_env() -> dict[str, str]:
    """The environment git runs in: :func:`unattended_env`, no terminal prompt either."""
    return {**unattended_env(), "GIT_TERMINAL_PROMPT": "0"}


def hg_env() -> dict[str, str]:
    """The environment hg runs in (with ``--noninteractive``): :func:`unattended_env`, and plain
    output whatever the user's hgrc says ([auth] and [ui] ssh settings still apply)."""
    return {**unattended_env(), "HGPLAIN": "1"}


def find_hg() -> str:
    """``hg`` on PATH, else the one installed next to this interpreter (the ``mercurial`` wheel)."""
    found = shutil.which("hg")
    if found:
        return found
    beside = Path(sys.executable).parent / ("hg.exe" if sys.platform == "win32" else "hg")
    return str(beside) if beside.is_file() else "hg"


class CheckoutWork(Generic[S]):
    """What source builds and CI runs share: the config, the store they record into, where their
    installers find this mirror (``index_url()``), the Python that builds or tests, and git and hg."""

    def __init__(
        self,
        config: Config,
        store: S,
        *,
        index_url: Callable[[], str],
        python: str = sys.executable,
        backends: Mapping[str, VCS] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.index_url = index_url
        self.python = python
        self.backends = Backends(backends)


class Backends:
    """The :class:`VCS` of each ``repo_type``, made on first use (``given`` ones first: tests')."""

    def __init__(self, given: Mapping[str, VCS] | None = None) -> None:
        self._made = dict(given or {})
        self._lock = threading.Lock()

    def __call__(self, kind: str) -> VCS:
        with self._lock:
            if kind not in self._made:
                self._made[kind] = backend(kind)
            return self._made[kind]


def backend(kind: str) -> VCS:
    """The :class:`VCS` of a ``repo_type``."""
    if kind == "git":
        return Git()
    if kind == "hg":
        return Mercurial()
    raise BuildError(f"unknown repo_type {kind!r}: expected 'git' or 'hg'")


def _check_ref(ref: str, kind: str) -> None:
    problem = ref_problem(ref, kind, head=True)
    if problem is not None:
        raise BuildError(f"{ref!r} is not a branch or tag name: {problem}")


def _revset_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _replace_dir(path: Path, make: Callable[[Path], object]) -> None:
    """Create ``path`` with ``make(tmp)`` in a sibling temporary dir, then rename it into place.

    A clone that fails halfway leaves nothing behind; something at ``path`` that is no
    repository of the kind wanted (the config's ``repo_type`` changed) is replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    target = tmp / "clone"
    try:
        make(target)
        if path.exists():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
