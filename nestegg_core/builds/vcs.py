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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from nestegg_core.errors import BuildError
from nestegg_core.urls import mask_text

if TYPE_CHECKING:
    from nestegg_core.config.config import Config

S = TypeVar("S")

#: seconds a clone or fetch may take
FETCH_TIMEOUT = 600.0


class Transcript:
    """Runs commands and keeps what they said, for a build's log; URLs are masked."""

    def __init__(self) -> None:
        self.parts: list[str] = []

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
        """Run ``command``; on failure (``check``) raise :class:`BuildError` with its last words.

        Messages name the command as ``label``, else as run (the program without its directory).
        """
        self.note(f"$ {' '.join(command)}")
        shown = label or " ".join([os.path.basename(command[0]), *command[1:]])
        started = time.monotonic()
        try:
            result = run_unattended(command, cwd=cwd, env=env, timeout=timeout, merge_output=True)
        except subprocess.TimeoutExpired:
            self.note(f"[timed out after {timeout:.0f}s]")
            raise BuildError(f"{mask_text(shown)!r} did not finish within {timeout:.0f}s") from None
        if result.stdout:
            self.note(result.stdout)
        self.note(f"[exit {result.returncode} after {time.monotonic() - started:.1f}s]")
        if check and result.returncode != 0:
            raise BuildError(
                f"{mask_text(shown)!r} failed (exit {result.returncode}): {_last_line(result.stdout)}"
            )
        return result

    def text(self) -> str:
        return "".join(self.parts)


def run_unattended(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    timeout: float,
    cwd: Path | None = None,
    merge_output: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with no input and no terminal, its output captured as text (stderr into
    stdout with ``merge_output``); :class:`BuildError` if it is not installed. A time-out is
    raised as :class:`subprocess.TimeoutExpired`, for the caller to word."""
    try:
        return subprocess.run(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            # no controlling terminal: ssh and credential helpers fail instead of prompting
            start_new_session=True,
        )
    except FileNotFoundError:
        raise BuildError(f"cannot run {command[0]!r}: it is not installed (or not on PATH)") from None


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return mask_text(lines[-1]) if lines else "no output"


#: how git ("fatal: ...", "error: ...") and hg ("abort: ...") start the line that says what failed
_FAILURE = ("fatal:", "error:", "abort:")


def failure_line(output: str) -> str:
    """The line of a failed command's ``output`` that says why, masked: the first one git or hg
    starts with ``fatal:``, ``error:`` or ``abort:``, else the last (git's advice after its reason,
    "and the repository exists.", says nothing)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    return mask_text(next((line for line in lines if line.lower().startswith(_FAILURE)), lines[-1]))


class VCS(Protocol):
    """A version control system nestegg builds from."""

    #: the ``repo_type`` of the config
    kind: str

    def update(self, url: str, path: Path, run: Transcript) -> None:
        """Make ``path`` an up-to-date copy of the repository at ``url`` (clone or fetch)."""

    def resolve(self, path: Path, ref: str, run: Transcript) -> str:
        """The full commit id that tag, branch (or commit) ``ref`` names now; :class:`BuildError` if none."""

    def checkout(self, path: Path, commit: str, dest: Path, run: Transcript) -> None:
        """Write a clean checkout of ``commit`` to the new directory ``dest``."""


class Git:
    """git, with a bare ``--mirror`` clone: every branch and tag is a local ref."""

    kind = "git"

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or shutil.which("git") or "git"

    @staticmethod
    def env() -> dict[str, str]:
        env = dict(os.environ)
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        return env

    def _git(self, *args: str) -> list[str]:
        return [self.executable, *args]

    def update(self, url: str, path: Path, run: Transcript) -> None:
        env = self.env()
        if (path / "HEAD").is_file() and (path / "objects").is_dir():
            run.run(self._git("-C", str(path), "remote", "set-url", "origin", url), env=env)
            run.run(self._git("-C", str(path), "fetch", "--prune", "--force", "--quiet", "origin"), env=env)
            return
        _replace_dir(
            path, lambda tmp: run.run(self._git("clone", "--mirror", "--quiet", "--", url, str(tmp)), env=env)
        )

    def resolve(self, path: Path, ref: str, run: Transcript) -> str:
        _check_ref(ref)
        for candidate in (f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
            result = run.run(
                self._git("-C", str(path), "rev-parse", "--verify", "--quiet", "--end-of-options",
                          f"{candidate}^{{commit}}"),
                env=self.env(),
                check=False,
            )  # fmt: skip
            commit = result.stdout.strip()
            if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit):
                return commit
        raise BuildError(f"no tag, branch or commit {ref!r} in the git repository")

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
        env = dict(os.environ)
        # plain output whatever the user's hgrc says; [auth] and [ui] ssh settings still apply
        env.update(HGPLAIN="1", LC_ALL="C")
        return env

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

    def resolve(self, path: Path, ref: str, run: Transcript) -> str:
        _check_ref(ref)
        literal = _revset_string(f"literal:{ref}")
        candidates = [f"tag({literal})", f"bookmark({literal})", f"max(branch({literal}))"]
        if re.fullmatch(r"[0-9a-f]{6,40}", ref):
            candidates.append(_revset_string(ref))
        for revset in candidates:
            result = run.run(
                self._hg("--repository", str(path), "log", "--rev", revset, "--template", "{node}\\n"),
                env=self.env(),
                check=False,
            )
            nodes = result.stdout.split()
            if result.returncode == 0 and len(nodes) == 1 and re.fullmatch(r"[0-9a-f]{40}", nodes[0]):
                return nodes[0]
        raise BuildError(f"no tag, bookmark, branch or commit {ref!r} in the hg repository")

    def checkout(self, path: Path, commit: str, dest: Path, run: Transcript) -> None:
        clone = ("clone", "--quiet", "--updaterev", commit, "--", str(path), str(dest))
        run.run(self._hg(*clone), env=self.env())


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


def _check_ref(ref: str) -> None:
    if not ref or ref.startswith("-") or any(c.isspace() or ord(c) < 32 for c in ref):
        raise BuildError(f"invalid tag or branch name {ref!r}")


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
