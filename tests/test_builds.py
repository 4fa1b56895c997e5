"""Source builds from real git and hg repositories with real ``build``, pip and uv."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from html import escape as html_escape
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror, load_config
from nestegg_core.builds import sources, vcs
from nestegg_core.builds.sources import SourceBuilder, check_outputs
from nestegg_core.builds.vcs import Git, Mercurial, Resolved, Transcript, find_hg, run_unattended
from nestegg_core.cli import main
from nestegg_core.config.config import Config, SourceBuild, SourceVersion
from nestegg_core.errors import BuildError
from nestegg_core.storage.locks import FileLock
from nestegg_core.storage.private import PrivateStore
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_sdist
from nestegg_core.testing.pytest_plugin import PrivateIndex
from nestegg_core.urls import mask_text

from .conftest import Faults
from .loopback import Answer, RawUpstream

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
HELPER = "nestegg-build-helper"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}  # fmt: skip
HG_ENV = {"HGPLAIN": "1", "HGUSER": "Test <test@example.invalid>", "HGRCPATH": ""}


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


# repositories ----------------------------------------------------------------------------------


def write_tree(root: Path, name: str, version: str, *, requires: str = "", extra: str = "") -> None:
    """A project tree like the sdists of ``dists``: an in-tree backend, so building needs no index.

    ``requires`` becomes a build requirement (installed from the mirror); ``extra`` is written
    to a module so that the same version builds to other bytes; ``requires="!"`` names a backend
    that does not exist (a broken build).
    """
    for old in [p for p in root.iterdir() if p.name not in (".git", ".hg", ".hgtags")]:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    sdist = make_sdist(PackageSpec(name=name, version=version), root.parent / "sdists")
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.isfile():
                target = root / member.name.split("/", 1)[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                data = archive.extractfile(member)
                assert data is not None
                target.write_bytes(data.read())
    pyproject = root / "pyproject.toml"
    if requires == "!":
        pyproject.write_text(pyproject.read_text().replace("nestegg_inline_backend", "no_such_backend"))
    elif requires:
        pyproject.write_text(pyproject.read_text().replace("requires = []", f'requires = ["{requires}"]'))
    if extra:
        (root / name.replace("-", "_") / "extra.py").write_text(f"EXTRA = {extra!r}\n")


def add_to_backend(root: Path, code: str) -> None:
    """Append ``code`` to the in-tree build backend of the project tree at ``root``."""
    backend = next(root.glob("_nestegg_backend/*.py"))
    backend.write_text(backend.read_text() + "\n" + code)


#: a build backend (or script) that starts a child, says its process group, then hangs
HANG = """
import os as _os, subprocess as _subprocess, sys as _sys, time as _time
_child = _subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(600)"])
with open({mark!r} + ".part", "w") as _file:
    _file.write(str(_os.getpgid(0)))
_os.replace({mark!r} + ".part", {mark!r})
for _ in range({hang}):
    _time.sleep(0.1)
"""


def group_members(pgid: int, wait: float = 5.0) -> list[int]:
    """The processes of group ``pgid`` that live (a zombie PID 1 has not reaped is no process),
    after up to ``wait`` seconds for them to end (a KILL takes effect a moment after it is sent)."""
    deadline = time.monotonic() + wait
    while (members := _members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def _members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.05)


@contextlib.contextmanager
def hung_group(mark: Path) -> Iterator[Callable[[], int]]:
    """The process group a hung command wrote to ``mark``, killed at the end whatever happened."""
    try:
        yield lambda: int(mark.read_text())
    finally:
        if mark.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(mark.read_text()), signal.SIGKILL)


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self("init", "--quiet", "--initial-branch", "main")

    def __call__(self, *args: str) -> str:
        done = run(["git", "-C", str(self.path), *args], env={**os.environ, **GIT_ENV})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def commit(self, message: str, tag: str | None = None) -> str:
        self("add", "--all")
        self("commit", "--quiet", "--no-gpg-sign", "-m", message)
        if tag:
            self("tag", tag)
        return self("rev-parse", "HEAD")


class HgRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self("init")

    def __call__(self, *args: str) -> str:
        done = run([find_hg(), "--cwd", str(self.path), *args], env={**os.environ, **HG_ENV})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()

    def commit(self, message: str, tag: str | None = None) -> str:
        self("commit", "--addremove", "--quiet", "-m", message)
        node = self("log", "-r", ".", "--template", "{node}")
        if tag:
            self("tag", "--quiet", tag)
        return node


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    """my_package: tag 1.0.0, and version 2.0.0 on main (which needs the helper to build)."""
    repo = GitRepo(tmp_path / "repos" / "my_package")
    write_tree(repo.path, "my_package", "1.0.0")
    repo.commit("1.0.0", tag="1.0.0")
    write_tree(repo.path, "my_package", "2.0.0", requires=HELPER)
    repo.commit("2.0.0 in the making")
    return repo


@pytest.fixture
def hg_repo(tmp_path: Path) -> HgRepo:
    repo = HgRepo(tmp_path / "repos" / "hg_package")
    write_tree(repo.path, "hg_package", "1.0.0")
    repo.commit("1.0.0", tag="1.0.0")
    return repo


SEED_CONFIG = """\
nestegg:
  nestegg_dir: {nest}                         # Where nestegg makes a nest
  port: 0                                     # Port to run on
  index-url: {upstream}                       # Pypi Index URL
  ttl: 0
  source_builds:                              # List of source builds
    - name: my_package                        # package name
      repo_type: git                          # git and hg supported
      repo_url: {git}                         # git url here
      private: Yes                            # private or public
      versions:
        - version: 1.0.0                      # python version
          tag: 1.0.0                          # git/hg branch/tag name
          dist_file: my_package-1.0.0.tar.gz  # source dist file name
        - version: 2.0.0
          tag: main
    - name: hg_package
      repo_type: hg
      repo_url: {hg}
      private: Yes
      versions:
        - version: 1.0.0
          tag: 1.0.0
          dist_file: hg_package-1.0.0.tar.gz
"""


@pytest.fixture
def config_file(tmp_path: Path, upstream: PrivateIndex, git_repo: GitRepo, hg_repo: HgRepo) -> Path:
    upstream.add(HELPER, "1.0", sdist=False)
    upstream.add("my-package", "99.0")  # a public project of the same name is never offered
    path = tmp_path / "nestegg.yml"
    text = SEED_CONFIG.format(nest=tmp_path / "nest", upstream=upstream.index_url, git=git_repo.path,
                              hg=hg_repo.path)  # fmt: skip
    path.write_text(text)
    return path


@pytest.fixture
def mirror(config_file: Path) -> Iterator[Mirror]:
    with Mirror(load_config(config_file)) as mirror:
        yield mirror


def page(mirror: Mirror, name: str) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"{mirror.url}/simple/{name}/", headers=JSON, timeout=120)


def files(mirror: Mirror, name: str) -> dict[str, str]:
    answer = page(mirror, name)
    assert answer.status_code == 200, answer.text
    return {f["filename"]: f["hashes"]["sha256"] for f in answer.json()["files"]}


def builds_logged(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"building {name} ")]


# end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pip_install_builds_on_demand_once_and_again_when_the_branch_moves(
    mirror: Mirror,
    git_repo: GitRepo,
    faults: Faults,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="nestegg_core.builds.sources")
    # parallel first requests: one builds, the others wait for it (past the 503 a request gets
    # after BUILD_WAIT) and find it done
    monkeypatch.setattr(sources, "BUILD_WAIT", 120.0)
    answers: list[requests.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(page(mirror, "my-package"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert sorted(builds_logged(caplog, "my-package")) == [
        f"building my-package 1.0.0 from git 1.0.0 ({git_repo('rev-parse', '1.0.0')[:12]})",
        f"building my-package 2.0.0 from git main ({git_repo('rev-parse', 'main')[:12]})",
    ]
    before = files(mirror, "my-package")
    assert sorted(before) == [
        "my_package-1.0.0-py3-none-any.whl", "my_package-1.0.0.tar.gz",
        "my_package-2.0.0-py3-none-any.whl", "my_package-2.0.0.tar.gz",
    ]  # fmt: skip
    # the build environment of 2.0.0 installed its requirement through the mirror
    assert faults.count(f"/simple/{HELPER}/") >= 1
    assert faults.count(prefix="/simple/my-package") == 0

    python = make_venv(tmp_path / "venv")
    pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "my_package==1.0.0"]
    done = run(pip, env=installer_env(mirror.index_url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(builds_logged(caplog, "my-package")) == 2  # the second request built nothing

    state = json.loads((mirror.config.nestegg_dir / "builds" / "my-package.json").read_text())
    assert state["built"]["1.0.0"]["commit"] == git_repo("rev-parse", "1.0.0")

    write_tree(git_repo.path, "my_package", "2.0.0", requires=HELPER, extra="moved")
    moved = git_repo.commit("main moves on")
    after = files(mirror, "my-package")
    assert builds_logged(caplog, "my-package")[-1].endswith(f"from git main ({moved[:12]})")
    assert len(builds_logged(caplog, "my-package")) == 3
    assert sorted(after) == sorted(before)
    assert after["my_package-1.0.0.tar.gz"] == before["my_package-1.0.0.tar.gz"]
    assert after["my_package-2.0.0-py3-none-any.whl"] != before["my_package-2.0.0-py3-none-any.whl"]

    uv = find_uv()
    assert uv is not None
    command = [uv, "pip", "install", "--no-cache", "--python", str(python), "my_package==2.0.0"]
    done = run(command, env=installer_env(mirror.index_url))
    assert done.returncode == 0, done.stdout + done.stderr
    check = [str(python), "-c", "import my_package.extra; print(my_package.extra.EXTRA)"]
    assert run(check).stdout.strip() == "moved"


@pytest.mark.slow
def test_pip_install_from_hg(mirror: Mirror, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "hg_package==1.0.0"]
    done = run(pip, env=installer_env(mirror.index_url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hg_package-1.0.0-py3-none-any.whl" in done.stdout
    logs = list((mirror.config.nestegg_dir / "logs").glob("hg-package-1.0.0-*.log"))
    assert len(logs) == 1
    assert "python -m build" in logs[0].read_text() or "-m build" in logs[0].read_text()


@pytest.mark.slow
def test_a_broken_build_reports_its_log_and_keeps_what_was_built(
    tmp_path: Path, upstream: PrivateIndex, git_repo: GitRepo, http: requests.Session
) -> None:
    write_tree(git_repo.path, "my_package", "3.0.0", requires="!")
    git_repo.commit("broken", tag="3.0.0")
    write_tree(git_repo.path, "my_package", "2.0.0")
    git_repo.commit("2.0.0 without the helper")
    broken_tag = SourceVersion(version="3.0.0", tag="3.0.0")
    build = SourceBuild(
        name=NormalizedName("my-package"),
        repo_type="git",
        repo_url=str(git_repo.path),
        versions=(broken_tag,),
    )
    config = Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.index_url, source_builds=(build,), ttl=0
    )
    log = tmp_path / "nest" / "logs" / f"my-package-3.0.0-{git_repo('rev-parse', '3.0.0')[:12]}.log"
    with Mirror(config) as mirror:
        url = f"{mirror.url}/simple/my-package/"
        first = http.get(url, headers=JSON)
        assert first.status_code == 502
        assert first.reason.startswith("my-package 3.0.0 (3.0.0 at ")
        assert f": failed (log: {log}): 'python -m build' failed (exit 1): " in first.reason
        assert first.text.startswith(first.reason)
        assert "no_such_backend" in log.read_text()
        # not built again, but a project with nothing to serve keeps saying why
        again = http.get(url, headers=JSON)
        assert again.status_code == 502
        assert f": failed before (log: {log}): 'python -m build' failed" in again.reason

    main_branch = SourceVersion(version="2.0.0", tag="main")
    build = dataclasses.replace(build, versions=(broken_tag, main_branch))
    with Mirror(config.with_changes(source_builds=(build,))) as mirror:
        url = f"{mirror.url}/simple/my-package/"
        served = http.get(url, headers=JSON)
        assert served.status_code == 200
        assert [f["filename"] for f in served.json()["files"]] == [
            "my_package-2.0.0-py3-none-any.whl", "my_package-2.0.0.tar.gz",
        ]  # fmt: skip
        # main breaks: what was built of 2.0.0 before stays served
        write_tree(git_repo.path, "my_package", "2.0.0", requires="!")
        broken = git_repo.commit("main breaks")
        after = http.get(url, headers=JSON)
        assert after.status_code == 200
        assert after.json()["files"] == served.json()["files"]
        assert "no_such_backend" in (log.parent / f"my-package-2.0.0-{broken[:12]}.log").read_text()


@pytest.mark.slow
def test_nestegg_build_command(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "build", "hg_package"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hg-package 1.0.0 (1.0.0 at ")
    assert ": built: hg_package-1.0.0-py3-none-any.whl, hg_package-1.0.0.tar.gz" in out
    assert main(["--config", str(config_file), "build", "hg-package"]) == 0
    assert ": current: " in capsys.readouterr().out
    assert main(["--config", str(config_file), "list"]) == 0
    assert capsys.readouterr().out == "hg-package  1.0.0\n"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["git", "hg"])
def test_nestegg_build_says_a_fetch_failed_and_serves_what_is_built(
    config_file: Path,
    git_repo: GitRepo,
    hg_repo: HgRepo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    """A repository that cannot be fetched was a warning, and 'current': a tag moved since, or
    removed, went unseen."""
    name = "my-package" if kind == "git" else "hg-package"
    repo = git_repo if kind == "git" else hg_repo
    assert main(["--config", str(config_file), "build", name]) == 0
    built = capsys.readouterr().out
    url = str(repo.path)
    commit = (
        git_repo("rev-parse", "1.0.0") if kind == "git" else hg_repo("log", "-r", "1.0.0", "-T", "{node}")
    )
    repo.path.rename(tmp_path / "elsewhere")
    assert main(["--config", str(config_file), "build", name]) == 1
    out, err = capsys.readouterr()
    why = (
        f"fatal: {url!r} does not appear to be a git repository"
        if kind == "git"
        else f"abort: repository {url} not found"
    )
    said = f"error: {name}: cannot fetch {url!r}: {why}\n"
    assert err.endswith(f"\n{said}")  # after the log's lines
    dist = name.replace("-", "_")
    assert out.splitlines()[0] == (
        f"{name} 1.0.0 (1.0.0 at {commit[:12]}): current as of the last fetch: "
        f"{dist}-1.0.0-py3-none-any.whl, {dist}-1.0.0.tar.gz"
    )
    assert len(out.splitlines()) == len(built.splitlines())
    state = json.loads((tmp_path / "nest" / "builds" / f"{name}.json").read_text())
    assert state["fetch_error"] == said.removeprefix(f"error: {name}: ").rstrip("\n")
    assert main(["--config", str(config_file), "list", name]) == 0  # still served
    assert f"{dist}-1.0.0.tar.gz" in capsys.readouterr().out
    # back where it was: fetched, and said so
    (tmp_path / "elsewhere").rename(repo.path)
    assert main(["--config", str(config_file), "build", name]) == 0
    assert ": current: " in capsys.readouterr().out
    assert json.loads((tmp_path / "nest" / "builds" / f"{name}.json").read_text())["fetch_error"] == ""


def _refusing(method: str, path: str) -> Answer:
    """A git server that wants credentials, and takes none."""
    return Answer(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'}, body=b"no\n")


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "credentials"), [("git", "me:secret@"), ("git", ""), ("hg", "me:secret@")])
def test_a_repo_url_that_changed_builds_nothing_from_the_old_clone(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, credentials: str
) -> None:
    """The clone of the old repo_url is no copy of the new one: what is built of it stays
    served, nothing is looked up or built in it; and git or hg asks nobody for a password."""
    name, dist = ("my-package", "my_package") if kind == "git" else ("hg-package", "hg_package")
    assert main(["--config", str(config_file), "build", name]) == 0
    capsys.readouterr()
    with RawUpstream(_refusing) as server:
        url = f"http://{credentials}127.0.0.1:{server.port}/me/{dist}"
        text = config_file.read_text()
        config_file.write_text(re.sub(rf"repo_url: \S+{dist}", f"repo_url: {url}", text))
        started = time.monotonic()
        assert main(["--config", str(config_file), "build", name]) == 1
        assert time.monotonic() - started < 60
    out, err = capsys.readouterr()
    shown = mask_text(url)
    said = (
        "abort: authorization failed"
        if kind == "hg"
        else f"fatal: Authentication failed for 'http://127.0.0.1:{server.port}/me/{dist}/'"
        if credentials
        else f"fatal: could not read Username for 'http://127.0.0.1:{server.port}': terminal prompts disabled"
    )
    assert err.endswith(f"\nerror: {name}: cannot clone {shown!r}: {said}\n")
    assert "secret" not in out + err
    versions = ["1.0.0", "2.0.0"] if kind == "git" else ["1.0.0"]
    for line, version in zip(out.splitlines(), versions, strict=True):
        assert line.startswith(f"{name} {version} ({'1.0.0' if version == '1.0.0' else 'main'}): failed")
        assert line.endswith(f": no repository {shown!r}: cannot clone it: {said}")
    assert not (tmp_path / "nest" / "repos" / name).exists()
    assert main(["--config", str(config_file), "list", name]) == 0  # still served
    assert f"{dist}-1.0.0.tar.gz" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dist_file", "made"),
    [
        ("my_package-1.0.0.zip", "it names a .zip sdist, not a .tar.gz sdist"),
        (
            "my_package-1.0.0-py2.py3-none-any.whl",
            "it names a wheel for py2.py3-none-any, not a wheel for py3-none-any",
        ),
    ],
)
def test_a_dist_file_of_another_format_or_tags_is_not_published(
    config_file: Path, capsys: pytest.CaptureFixture[str], dist_file: str, made: str
) -> None:
    """A .zip sdist or a wheel of other tags than dist_file names was taken for it (said at INFO)."""
    config_file.write_text(
        config_file.read_text().replace("dist_file: my_package-1.0.0.tar.gz", f"dist_file: {dist_file}")
    )
    assert main(["--config", str(config_file), "build", "my_package"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("my-package 1.0.0 (1.0.0 at ")
    assert first.endswith(
        f": dist_file {dist_file!r} was not produced; the build made my_package-1.0.0-py3-none-any.whl, "
        f"my_package-1.0.0.tar.gz ({made})"
    )
    assert main(["--config", str(config_file), "list", "my_package"]) == 0
    assert "1.0.0" not in capsys.readouterr().out  # 2.0.0 only


@pytest.mark.parametrize("kind", ["git", "hg"])
def test_a_repository_asking_for_a_password_gets_no_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """git ran the askpass program a desktop or an editor sets (SSH_ASKPASS, GIT_ASKPASS), though
    no terminal prompt: on a server, a prompt nobody answers, which held the build 10 minutes."""
    asked = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    askpass.write_text(f'#!/bin/sh\necho "$@" >> {asked}\necho guess\n')
    askpass.chmod(0o755)
    for key in ("SSH_ASKPASS", "GIT_ASKPASS"):
        monkeypatch.setenv(key, str(askpass))
    monkeypatch.setenv("DISPLAY", ":0")
    with RawUpstream(_refusing) as server:
        url = f"http://127.0.0.1:{server.port}/me/my_package"
        vcs_ = Git() if kind == "git" else Mercurial()
        started = time.monotonic()
        with pytest.raises(BuildError) as info:
            vcs_.update(url, tmp_path / "clone", Transcript())
        assert time.monotonic() - started < 60
    assert not asked.exists(), asked.read_text()
    said = (
        f"fatal: could not read Username for 'http://127.0.0.1:{server.port}': terminal prompts disabled"
        if kind == "git"
        else f"abort: http authorization required for {url}"
    )
    assert str(info.value).endswith(said)


def test_nestegg_build_names_only_source_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nestegg.yml"
    config.write_text(
        f"nestegg:\n  nestegg_dir: {tmp_path / 'nest'}\n  source_builds:\n"
        "    - {name: My.Package, repo_type: git, repo_url: x}\n"
        "    - {name: hg_package, repo_type: hg, repo_url: y}\n"
    )
    assert main(["--config", str(config), "build", "other"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: 'other' is not a source build in {config} (source builds: hg-package, my-package)\n"
    )
    config.write_text(f"nestegg:\n  nestegg_dir: {tmp_path / 'nest'}\n")
    assert main(["--config", str(config), "build"]) == 2
    assert capsys.readouterr().err == f"error: no source_builds are configured in {config}\n"
    assert not (tmp_path / "nest").exists()  # refused before anything was started


# pieces ----------------------------------------------------------------------------------------


def source(dist_file: str | None = None) -> tuple[SourceBuild, SourceVersion]:
    version = SourceVersion(version="1.0.0", tag="v1", dist_file=dist_file)
    return SourceBuild(
        name=NormalizedName("my-package"), repo_type="git", repo_url="x", versions=(version,)
    ), version


BOTH = ["my_package-1.0.0-py3-none-any.whl", "my_package-1.0.0.tar.gz"]


@pytest.mark.parametrize(
    ("dist_file", "produced", "error"),
    [
        (None, BOTH, None),
        ("my_package-1.0.0.tar.gz", BOTH, None),
        ("my-package-1.0.0.tar.gz", BOTH, None),  # the same sdist, spelled as older setuptools did
        ("mypackage-1.0.0.tar.gz", BOTH,
         "dist_file 'mypackage-1.0.0.tar.gz' was not produced; the build made my_package-1.0.0-py3"),
        ("my_package-1.0.1.tar.gz", BOTH, "dist_file 'my_package-1.0.1.tar.gz' was not produced"),
        ("My.Package-1.0.tar.gz", BOTH, None),  # its name and version spelled otherwise
        ("my_package-1.0.0-py3-none-any.whl", BOTH, None),
        # another format, other tags or another build are another file
        ("my_package-1.0.0.zip", BOTH,
         "dist_file 'my_package-1.0.0.zip' was not produced; the build made my_package-1.0.0-py3-none-any"
         ".whl, my_package-1.0.0.tar.gz (it names a .zip sdist, not a .tar.gz sdist)"),
        ("my_package-1.0.0.tar.gz", ["my_package-1.0.0-py3-none-any.whl", "my_package-1.0.0.zip"],
         "(it names a .tar.gz sdist, not a .zip sdist)"),
        ("my_package-1.0.0-py2.py3-none-any.whl", BOTH,
         "(it names a wheel for py2.py3-none-any, not a wheel for py3-none-any)"),
        ("my_package-1.0.0-cp312-cp312-manylinux_2_17_x86_64.whl", BOTH,
         "(it names a wheel for cp312-cp312-manylinux_2_17_x86_64, not a wheel for py3-none-any)"),
        ("my_package-1.0.0-1-py3-none-any.whl", BOTH,
         "(it names a wheel for py3-none-any (build 1), not a wheel for py3-none-any)"),
        (None, ["my_package-1.0.0.tar.gz"], "expected an sdist and a wheel, the build made my_package-1"),
        (None, [], "expected an sdist and a wheel, the build made nothing"),
        (None, ["my_package-1.0.1.tar.gz"], "tag 'v1' built 'my_package-1.0.1.tar.gz', not my-package 1.0.0"),
        (None, ["other-1.0.0.tar.gz"], "tag 'v1' built 'other-1.0.0.tar.gz'"),
        (None, ["build.log"], "the build made 'build.log', which is no wheel or sdist"),
    ],
)  # fmt: skip
def test_check_outputs(dist_file: str | None, produced: list[str], error: str | None) -> None:
    build, version = source(dist_file)
    if error is None:
        check_outputs(build, version, produced)
    else:
        with pytest.raises(BuildError, match=error.replace("(", r"\(").replace(")", r"\)")):
            check_outputs(build, version, produced)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "git clone https://user:token@git.example.com/repo.git x",
            "git clone https://user:***@git.example.com/repo.git x",
        ),
        ("no urls here", "no urls here"),
        (
            "fetch https://TOKEN@example.com/r and 'http://u:p@example.org/x'",
            "fetch https://***@example.com/r and 'http://u:***@example.org/x'",
        ),
    ],
)
def test_mask_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_git_resolves_tags_and_branches(git_repo: GitRepo, tmp_path: Path) -> None:
    git, log, clone = Git(), Transcript(), tmp_path / "clone"
    git_repo("tag", "--annotate", "-m", "annotated", "v1-annotated", "1.0.0")
    git_repo("tag", "main", "1.0.0")  # a tag and a branch of one name: the tag is built
    git_repo("branch", "feature", "1.0.0")
    git.update(str(git_repo.path), clone, log)
    tagged, head = git_repo("rev-parse", "1.0.0^{commit}"), git_repo("rev-parse", "refs/heads/main")
    assert git.resolve(clone, "1.0.0", log) == Resolved(commit=tagged, kind="tag")
    assert git.resolve(clone, "v1-annotated", log) == Resolved(commit=tagged, kind="tag")
    assert git.resolve(clone, "main", log) == Resolved(commit=tagged, kind="tag")
    assert git.resolve(clone, "refs/heads/main", log) == Resolved(commit=head, kind="branch")
    assert git.resolve(clone, "feature", log) == Resolved(commit=tagged, kind="branch")
    assert git.resolve(clone, "HEAD", log) == Resolved(commit=head, kind="branch")  # what CI watches
    git.checkout(clone, head, tmp_path / "out", log)
    assert "2.0.0" in (tmp_path / "out" / "PKG-INFO").read_text()
    write_tree(git_repo.path, "my_package", "2.0.0", extra="x")
    moved = git_repo.commit("moved")
    git.update(str(git_repo.path), clone, log)
    assert git.resolve(clone, "refs/heads/main", log).commit == moved


@pytest.mark.parametrize(
    ("kind", "ref", "error"),
    [
        # revision expressions: each names a commit, none a tag
        ("git", "1.0.0~1", "'1.0.0~1' is not a branch or tag name: git names hold no '~'"),
        ("git", "1.0.0^", "'1.0.0^' is not a branch or tag name: git names hold no '^'"),
        ("git", "main:setup.py", "'main:setup.py' is not a branch or tag name: git names hold no ':'"),
        ("git", "main@{1}", "'main@{1}' is not a branch or tag name: git names hold no '@{'"),
        ("git", "@", "'@' is not a branch or tag name"),
        ("git", "1.0.0..main", "'1.0.0..main' is not a branch or tag name: git names hold no '..'"),
        ("git", "-x", "'-x' is not a branch or tag name: it would be read as an option"),
        ("git", "with space", "'with space' is not a branch or tag name: it holds a blank"),
        ("hg", "tip", "'tip' is not a branch or tag name: 'tip' is a revision hg reserves"),
        ("hg", "null", "'null' is not a branch or tag name: 'null' is a revision hg reserves"),
        ("hg", ".", "'.' is not a branch or tag name: '.' is a revision hg reserves"),
        ("hg", "0", "'0' is not a branch or tag name: hg names are no whole numbers"),
        ("hg", "1.0.0:tip", "'1.0.0:tip' is not a branch or tag name: hg names hold no ':'"),
        # a revset is never run: neither tip nor the tag
        ("hg", "1.0.0')or(tip", "\"1.0.0')or(tip\" is not a branch or tag name: a name holding \"'()\""),
        ("hg", "max(all())", "'max(all())' is not a branch or tag name: a name holding '()' reads as an hg"),
        ("hg", "1.0.0~1", "'1.0.0~1' is not a branch or tag name: a name holding '~' reads as an hg revset"),
        ("hg", "-x", "'-x' is not a branch or tag name: it would be read as an option"),
        # a commit id is no tag, nor is its prefix, nor a tag or branch that is not there
        ("git", "COMMIT", "no tag or branch 'COMMIT'"),
        ("hg", "COMMIT", "'COMMIT' is not a branch or tag name: it is a commit id, not a tag"),
        ("git", "SHORT", "no tag or branch 'SHORT'"),
        ("hg", "SHORT", "no tag, bookmark or branch 'SHORT'"),
        ("git", "nope", "no tag or branch 'nope'"),
        ("hg", "nope", "no tag, bookmark or branch 'nope'"),
    ],
)  # fmt: skip
def test_a_ref_is_resolved_as_a_name_never_a_revision_nor_a_commit(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, ref: str, error: str
) -> None:
    repo: GitRepo | HgRepo = request.getfixturevalue(f"{kind}_repo")
    backend, log, clone = (Git() if kind == "git" else Mercurial()), Transcript(), tmp_path / "clone"
    backend.update(str(repo.path), clone, log)
    commit = repo("rev-parse", "1.0.0") if kind == "git" else repo("log", "-r", "1.0.0", "-T", "{node}")
    ref = {"COMMIT": commit, "SHORT": commit[:12]}.get(ref, ref)
    error = error.replace("'COMMIT'", repr(commit)).replace("'SHORT'", repr(commit[:12]))
    with pytest.raises(BuildError) as info:
        backend.resolve(clone, ref, log)
    assert str(info.value).startswith(error)


def test_hg_resolves_tags_bookmarks_and_branches(hg_repo: HgRepo, tmp_path: Path) -> None:
    hg, log, clone = Mercurial(), Transcript(), tmp_path / "clone"
    tagged = hg_repo("log", "-r", "1.0.0", "--template", "{node}")
    hg_repo("bookmark", "--rev", "1.0.0", "marked")
    hg.update(str(hg_repo.path), clone, log)
    assert hg.resolve(clone, "1.0.0", log) == Resolved(commit=tagged, kind="tag")
    assert hg.resolve(clone, "marked", log) == Resolved(commit=tagged, kind="bookmark")
    tip = hg_repo("log", "-r", "tip", "--template", "{node}")
    assert hg.resolve(clone, "default", log) == Resolved(commit=tip, kind="branch")
    hg.checkout(clone, tagged, tmp_path / "out", log)
    assert (tmp_path / "out" / "PKG-INFO").is_file()
    assert not (tmp_path / "out" / ".hgtags").exists()


@pytest.mark.parametrize(
    ("recorded", "now", "other"),
    [
        (None, "https://me:old@example.com/r.git", None),
        (None, "https://me:new@example.com/r.git/", None),  # a password changed: the same repository
        (None, "https://example.com/r.git", None),
        (None, "https://me:old@example.com/fork.git", "https://me:***@example.com/r.git"),
        ("https://me:***@example.com/r.git", "https://me:new@example.com/r.git", None),
        ("https://me:***@example.com/r.git", "https://example.com/fork", "https://me:***@example.com/r.git"),
        ("git@example.com:r.git", "example.com:r.git", None),  # scp-like: the user name does not count
        ("example.com:r.git", "git@example.com:r.git/", None),
        ("git@example.com:r.git", "git@example.com:fork.git", "git@example.com:r.git"),
    ],
)  # fmt: skip
def test_a_clone_of_another_url_is_told_by_the_state_else_by_its_own_remote(
    git_repo: GitRepo, tmp_path: Path, recorded: str | None, now: str, other: str | None
) -> None:
    git, log, clone = Git(), Transcript(), tmp_path / "clone"
    git.update(str(git_repo.path), clone, log)
    assert vcs.other_origin(git, clone, str(git_repo.path), log) is None
    assert vcs.other_origin(git, clone, str(git_repo.path) + "/", log) is None
    assert vcs.other_origin(git, clone, str(tmp_path / "elsewhere"), log) == str(git_repo.path)
    moved = ["git", "-C", str(clone), "remote", "set-url", "origin", "https://me:old@example.com/r.git"]
    assert run(moved).returncode == 0
    assert vcs.other_origin(git, clone, now, log, recorded=recorded) == other
    assert vcs.other_origin(git, tmp_path / "no-clone", now, log, recorded=recorded) is None


def test_a_git_clone_s_origin_is_its_stored_url_not_rewritten_nor_a_parent_s(
    git_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``git remote get-url`` rewrote the URL by the user's ``url.<base>.insteadOf`` rules: the
    clone read as one of another URL, cloned afresh on every CI run; ``git -C`` read a parent
    folder's repository for a folder that is none."""
    git, log, clone = Git(), Transcript(), tmp_path / "clone"
    git.update(str(git_repo.path), clone, log)
    rules = tmp_path / "gitconfig"
    rules.write_text(f'[url "https://example.com/mirror/"]\n\tinsteadOf = {git_repo.path}\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(rules))
    rewritten = run(["git", "ls-remote", "--get-url", str(git_repo.path)])
    assert rewritten.stdout.strip() == "https://example.com/mirror/"  # the rule applies
    assert git.origin(clone, log) == str(git_repo.path)
    assert vcs.other_origin(git, clone, str(git_repo.path), log) is None
    no_clone = git_repo.path / "not-a-clone"
    no_clone.mkdir()
    assert git.origin(no_clone, log) is None


def test_a_repo_url_that_reads_as_an_option_is_a_url_to_git(git_repo: GitRepo, tmp_path: Path) -> None:
    """``git remote set-url origin --delete`` was git's own usage error; ``--`` makes it a URL,
    which the fetch then fails on, saying so."""
    git, log, clone = Git(), Transcript(), tmp_path / "clone"
    git.update(str(git_repo.path), clone, log)
    with pytest.raises(BuildError, match=r"^'git -C .* fetch --prune --force --quiet origin' failed"):
        git.update("--delete", clone, log)
    assert run(["git", "-C", str(clone), "remote", "get-url", "origin"]).stdout.strip() == "--delete"


def test_clone_failure_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        BuildError,
        match=r"^'git clone --mirror --quiet -- .*' failed \(exit 128\): fatal: .* does not exist$",
    ):
        Git().update(str(tmp_path / "missing"), tmp_path / "clone", Transcript())
    assert not (tmp_path / "clone").exists()


def test_build_env_points_at_the_mirror_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "/somewhere")
    monkeypatch.setenv("UV_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple/")
    store = PrivateStore(tmp_path / "private")
    builder = SourceBuilder(
        Config(nestegg_dir=tmp_path), store, index_url=lambda: "http://127.0.0.1:1/simple/"
    )
    env = builder.build_env()
    assert env["PIP_INDEX_URL"] == env["UV_DEFAULT_INDEX"] == "http://127.0.0.1:1/simple/"
    assert "PIP_FIND_LINKS" not in env
    assert "UV_EXTRA_INDEX_URL" not in env
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert env["NO_PROXY"].split(",")[0] == "127.0.0.1"


# processes ------------------------------------------------------------------------------------


@needs_proc
@pytest.mark.parametrize(
    ("hang", "timed_out"),
    [
        (6000, True),  # hangs: stopped at its time limit, its child too
        (0, False),  # exits, its child holding the output pipe: not waited for, and ended
    ],
)
def test_a_command_leaves_no_process_of_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hang: int, timed_out: bool
) -> None:
    monkeypatch.setattr(vcs, "KILL_GRACE", 1.0)
    mark = tmp_path / "group"
    command = [sys.executable, "-c", "print('started', flush=True)" + HANG.format(mark=str(mark), hang=hang)]
    started = time.monotonic()
    with hung_group(mark) as group:
        if timed_out:
            with pytest.raises(subprocess.TimeoutExpired) as raised:
                run_unattended(command, env=None, timeout=2, merge_output=True)
            assert raised.value.output == "started\n"
        else:
            done = run_unattended(command, env=None, timeout=30, merge_output=True)
            assert (done.returncode, done.stdout) == (0, "started\n")
        assert time.monotonic() - started < 15
        assert group_members(group()) == []


@needs_proc
def test_a_stopped_command_leaves_no_process_of_its_group(tmp_path: Path) -> None:
    mark, stop = tmp_path / "group", threading.Event()
    log = Transcript(stop)
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            log.run([sys.executable, "-c", HANG.format(mark=str(mark), hang=6000)], timeout=600, label="hang")
        except BuildError as exc:
            errors.append(exc)

    with hung_group(mark) as group:
        thread = threading.Thread(target=hang)
        thread.start()
        wait_for(mark.exists, "process group")
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        assert [str(e) for e in errors] == ["stopped: the server is stopping"]
        assert group_members(group()) == []
    with pytest.raises(BuildError, match="stopped: the server is stopping"):
        log.run(["git", "--version"])  # none starts once stopped


@pytest.fixture
def hung_repo(tmp_path: Path) -> tuple[GitRepo, Path]:
    """hung_package 1.0.0, whose build starts a child and hangs (its group written to the Path)."""
    repo, mark = GitRepo(tmp_path / "repos" / "hung_package"), tmp_path / "group"
    write_tree(repo.path, "hung_package", "1.0.0")
    add_to_backend(repo.path, HANG.format(mark=str(mark), hang=6000))
    repo.commit("hangs", tag="1.0.0")
    return repo, mark


def hung_config(tmp_path: Path, upstream: PrivateIndex, repo: GitRepo) -> Config:
    version = SourceVersion(version="1.0.0", tag="1.0.0")
    build = SourceBuild(
        name=NormalizedName("hung-package"), repo_type="git", repo_url=str(repo.path), versions=(version,)
    )
    return Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.index_url, source_builds=(build,), ttl=0
    )


@needs_proc
@pytest.mark.slow
def test_a_build_past_its_time_limit_leaves_no_process_and_no_temporary_dir(
    tmp_path: Path, upstream: PrivateIndex, hung_repo: tuple[GitRepo, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, mark = hung_repo
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))  # where build makes its build-env-* unless told
    # time for the backend to start and hang under a loaded suite (under 1 s when quiet)
    monkeypatch.setattr(sources, "BUILD_TIMEOUT", 12.0)
    monkeypatch.setattr(vcs, "KILL_GRACE", 1.0)
    config = hung_config(tmp_path, upstream, repo)
    builder = SourceBuilder(
        config, PrivateStore(config.nestegg_dir / "private"), index_url=lambda: upstream.index_url
    )
    with hung_group(mark) as group:
        [outcome] = builder.build("hung-package")
        assert outcome.status == "failed"
        assert outcome.message == "'python -m build' did not finish within 12s"
        assert group_members(group()) == []
    assert list(system_tmp.iterdir()) == []
    assert list((config.nestegg_dir / "tmp" / "builds").iterdir()) == []


@needs_proc
@pytest.mark.slow
def test_stopping_the_mirror_ends_the_build_it_runs(
    tmp_path: Path,
    upstream: PrivateIndex,
    hung_repo: tuple[GitRepo, Path],
    monkeypatch: pytest.MonkeyPatch,
    http: requests.Session,
) -> None:
    repo, mark = hung_repo
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr(vcs, "KILL_GRACE", 1.0)
    config = hung_config(tmp_path, upstream, repo)
    answers: list[requests.Response] = []
    with hung_group(mark) as group:
        mirror = Mirror(config).start()
        try:
            asked = threading.Thread(
                target=lambda: answers.append(http.get(f"{mirror.url}/simple/hung-package/", headers=JSON))
            )
            asked.start()
            wait_for(mark.exists, "build")
        finally:
            started = time.monotonic()
            mirror.stop()
        assert time.monotonic() - started < 15
        asked.join(30)
        assert group_members(group()) == []
    assert [a.status_code for a in answers] == [502]
    assert "stopped: the server is stopping" in answers[0].reason
    assert list(system_tmp.iterdir()) == []
    assert list((config.nestegg_dir / "tmp" / "builds").iterdir()) == []
    # not taken for a failure of the commit: the next server builds it again
    state = json.loads((config.nestegg_dir / "builds" / "hung-package.json").read_text())
    assert state["failed"] == {}


def test_a_fetch_cut_short_by_a_stop_is_no_failure_of_its_versions(
    tmp_path: Path, upstream: PrivateIndex, git_repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    """The clone or the tag's lookup that a stopping server ends says nothing of the versions."""
    config = one_build(tmp_path, upstream, git_repo, SourceVersion(version="1.0.0", tag="1.0.0"))
    builder = SourceBuilder(
        config, PrivateStore(config.nestegg_dir / "private"), index_url=lambda: upstream.index_url
    )
    builder.stop()
    [outcome] = builder.build("my-package")
    assert (outcome.status, outcome.message) == ("failed", "stopped: the server is stopping")
    state = json.loads((config.nestegg_dir / "builds" / "my-package.json").read_text())
    assert state["failed"] == {}
    assert not (config.nestegg_dir / "logs").exists() or not list((config.nestegg_dir / "logs").iterdir())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@needs_proc
@pytest.mark.slow
def test_a_hung_build_holds_up_no_other_request(
    tmp_path: Path,
    upstream: PrivateIndex,
    hung_repo: tuple[GitRepo, Path],
    monkeypatch: pytest.MonkeyPatch,
    http: requests.Session,
) -> None:
    repo, mark = hung_repo
    monkeypatch.setattr(sources, "BUILD_WAIT", 0.5)
    monkeypatch.setattr(vcs, "KILL_GRACE", 1.0)
    upstream.add("public-package", "1.0")
    config = hung_config(tmp_path, upstream, repo).with_changes(threads=4)
    with hung_group(mark) as group, Mirror(config) as mirror:
        url = f"{mirror.url}/simple/hung-package/"
        building = threading.Thread(target=lambda: http.get(url, headers=JSON), daemon=True)
        building.start()
        wait_for(mark.exists, "build")
        answers: list[requests.Response] = []
        started = time.monotonic()
        # more than the server's threads, each asking as pip would, all at once
        askers = [
            threading.Thread(target=lambda: answers.append(requests.get(url, headers=JSON, timeout=30)))
            for _ in range(config.threads * 2)
        ]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(30)
        assert time.monotonic() - started < 10
        assert {(a.status_code, a.headers.get("Retry-After")) for a in answers} == {(503, "5")}
        assert answers[0].text == "a build of hung-package is in progress; try again shortly\n"
        # the server answers all else meanwhile
        assert http.get(f"{mirror.url}/health", timeout=5).status_code == 200
        assert http.get(f"{mirror.url}/simple/public-package/", headers=JSON, timeout=5).status_code == 200
        assert group_members(group(), wait=0)  # the build still hangs, to be ended with the server
    building.join(30)
    assert group_members(group()) == []


# what a build serves when part of it fails -----------------------------------------------------


def one_build(
    tmp_path: Path, upstream: PrivateIndex, repo: GitRepo, *versions: SourceVersion, ttl: int = 0
) -> Config:
    build = SourceBuild(
        name=NormalizedName("my-package"), repo_type="git", repo_url=str(repo.path), versions=versions
    )
    return Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.index_url, source_builds=(build,), ttl=ttl
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tag", "error"),
    [
        ("no-such-tag", "no tag or branch 'no-such-tag' in 'URL'"),
        # a commit id, or a revision expression, is no tag: it built some commit under the version
        ("COMMIT", "no tag or branch 'COMMIT' in 'URL'"),
        ("main~1", "'main~1' is not a branch or tag name: git names hold no '~': it reads as a revision"),
    ],
)
def test_a_tag_that_is_not_there_leaves_the_built_versions_served(
    tmp_path: Path,
    upstream: PrivateIndex,
    git_repo: GitRepo,
    caplog: pytest.LogCaptureFixture,
    tag: str,
    error: str,
) -> None:
    caplog.set_level(logging.INFO, logger="nestegg_core.builds.sources")
    commit = git_repo("rev-parse", "main")
    tag = tag.replace("COMMIT", commit)
    error = error.replace("COMMIT", commit).replace("URL", str(git_repo.path))
    versions = (
        SourceVersion(version="1.0.0", tag="1.0.0"),
        SourceVersion(version="3.0.0", tag=tag),
    )
    with Mirror(one_build(tmp_path, upstream, git_repo, *versions, ttl=3600)) as mirror:
        python = make_venv(tmp_path / "venv")
        pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "--retries", "0", "my_package==1.0.0"]
        done = run(pip, env=installer_env(mirror.index_url))
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(files(mirror, "my-package")) == [
            "my_package-1.0.0-py3-none-any.whl",
            "my_package-1.0.0.tar.gz",
        ]
        ui = f"{mirror.url}/ui/project/my-package?format=json"
        with requests.Session() as session:
            session.trust_env = False
            status = session.get(ui, timeout=60).json()["source_build"]["status"]
    assert list(status["failed"]) == ["3.0.0"]
    assert status["failed"]["3.0.0"].startswith(error)
    assert status["fetch_error"] is None
    # said once a ttl, as a warning, and recorded with the builds' failures
    said = [r for r in caplog.records if tag in r.getMessage()]
    assert [r.levelname for r in said] == ["WARNING"]
    assert said[0].getMessage().startswith("source build of my-package 3.0.0 failed (log: ")
    assert error in said[0].getMessage()
    state = json.loads((tmp_path / "nest" / "builds" / "my-package.json").read_text())
    assert state["failed"]["3.0.0"]["error"].startswith(error)
    assert list(state["built"]) == ["1.0.0"]


@pytest.mark.slow
def test_a_repository_that_cannot_be_fetched_leaves_the_built_versions_served(
    tmp_path: Path,
    upstream: PrivateIndex,
    git_repo: GitRepo,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nestegg_core.builds.sources")
    config = one_build(tmp_path, upstream, git_repo, SourceVersion(version="1.0.0", tag="1.0.0"))
    with Mirror(config) as mirror:
        url = f"{mirror.url}/simple/my-package/"
        served = http.get(url, headers=JSON)
        assert served.status_code == 200
        shutil.rmtree(git_repo.path)
        caplog.clear()
        again = http.get(url, headers=JSON)
        assert again.status_code == 200
        assert again.json()["files"] == served.json()["files"]
        # the project's page says it too, not that all is well
        status = http.get(f"{mirror.url}/ui/project/my-package?format=json").json()["source_build"]["status"]
        html = http.get(f"{mirror.url}/ui/project/my-package").text
    [said] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    where = str(git_repo.path)
    assert said.startswith(f"cannot fetch my-package from {where!r}, building from the fetch of 20")
    assert said.endswith(
        f"(what is built stays served): fatal: {where!r} does not appear to be a git repository"
    )
    state = json.loads((tmp_path / "nest" / "builds" / "my-package.json").read_text())
    assert state["fetch_error"].startswith(f"cannot fetch {str(git_repo.path)!r}: fatal: ")
    assert list(state["built"]) == ["1.0.0"]
    assert status["fetch_error"] == state["fetch_error"]
    assert status["fetched_at"].startswith("20")
    assert status["failed"] == {}
    assert html_escape(state["fetch_error"]) in html


@pytest.mark.slow
def test_a_moved_tag_is_warned_of_with_the_files_it_replaced(
    tmp_path: Path,
    upstream: PrivateIndex,
    git_repo: GitRepo,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Other bytes under a name pip or uv cached or pinned fail their hash check: a tag that moved
    said so at INFO only (a branch moves by design: INFO)."""
    caplog.set_level(logging.INFO, logger="nestegg_core.builds.sources")
    upstream.add(HELPER, "1.0", sdist=False)
    versions = (SourceVersion(version="1.0.0", tag="1.0.0"), SourceVersion(version="2.0.0", tag="main"))
    old_tag, old_main = git_repo("rev-parse", "1.0.0"), git_repo("rev-parse", "main")
    with Mirror(one_build(tmp_path, upstream, git_repo, *versions)) as mirror:
        before = files(mirror, "my-package")
        write_tree(git_repo.path, "my_package", "1.0.0", extra="retagged")
        new_tag = git_repo.commit("1.0.0 again")
        git_repo("tag", "--force", "1.0.0")
        write_tree(git_repo.path, "my_package", "2.0.0", requires=HELPER, extra="moved")
        new_main = git_repo.commit("main moves on")
        caplog.clear()
        after = files(mirror, "my-package")
    assert sorted(after) == sorted(before) == [
        "my_package-1.0.0-py3-none-any.whl", "my_package-1.0.0.tar.gz",
        "my_package-2.0.0-py3-none-any.whl", "my_package-2.0.0.tar.gz",
    ]  # fmt: skip
    assert all(after[name] != before[name] for name in after)
    both = "my_package-{0}-py3-none-any.whl, my_package-{0}.tar.gz"
    how = "other bytes under the same names: clients that cached or pinned them fail their hash check"
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "replaced" in r.getMessage()]
    assert said == [
        ("WARNING", f"tag '1.0.0' of my-package 1.0.0 moved from {old_tag[:12]} to {new_tag[:12]}: "
                    f"{both.format('1.0.0')} replaced by {how}"),
        ("INFO", f"branch 'main' of my-package 2.0.0 moved from {old_main[:12]} to {new_main[:12]}: "
                 f"{both.format('2.0.0')} replaced by {how}"),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("offline", [False, True])
def test_nothing_is_built_from_a_clone_of_another_repo_url(
    tmp_path: Path,
    upstream: PrivateIndex,
    git_repo: GitRepo,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    offline: bool,
) -> None:
    """Offline, or with the old clone not removable, the repo_url changed: the clone is another
    repository's, whose tags are no versions of the configured one."""
    config = one_build(tmp_path, upstream, git_repo, SourceVersion(version="1.0.0", tag="1.0.0"))
    with Mirror(config) as mirror:
        assert http.get(f"{mirror.url}/simple/my-package/", headers=JSON).status_code == 200
    other = tmp_path / "other.git"
    assert run(["git", "clone", "--quiet", "--bare", str(git_repo.path), str(other)]).returncode == 0
    build = dataclasses.replace(config.source_builds[0], repo_url=str(other))
    config = config.with_changes(source_builds=(build,), offline=offline)
    repo = tmp_path / "nest" / "repos" / "my-package"
    removing = shutil.rmtree

    def refused(path: object, *args: object, **kwargs: object) -> None:
        if Path(str(path)) == repo:
            raise PermissionError(13, "Permission denied", str(path))
        removing(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", refused)
    builder = SourceBuilder(
        config, PrivateStore(tmp_path / "nest" / "private"), index_url=lambda: "http://127.0.0.1:9/"
    )
    [outcome] = builder.build("my-package")
    assert (outcome.status, outcome.commit) == ("failed", None)
    assert (
        outcome.message
        == f"the clone in {repo} is of {str(git_repo.path)!r}, not of the repo_url {str(other)!r}"
    )
    if not offline:
        assert outcome.fetch_error.startswith(f"cannot remove {repo}, the clone of the repo_url before (")
        assert outcome.fetch_error.endswith(f"Permission denied: {str(repo)!r}")
    assert repo.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["git", "hg"])
def test_a_repo_url_changed_with_the_upgrade_to_noting_it_is_cloned_afresh(
    tmp_path: Path, upstream: PrivateIndex, kind: str
) -> None:
    """A state written before the repo_url of the last fetch was noted in it (``fetched_from``):
    the clone's own remote tells it is of another repository (hg pulled an unrelated one into it,
    which aborted, and built from the old clone; git fetched into it)."""
    repos: list[GitRepo | HgRepo] = []
    for where, extra in (("old", ""), ("new", "new = True")):
        repo = (GitRepo if kind == "git" else HgRepo)(tmp_path / where / "my_package")
        write_tree(repo.path, "my_package", "1.0.0", extra=extra)
        repos.append(repo)
    old, new = (repo.commit("1.0.0", tag="1.0.0") for repo in repos)
    nest, store = tmp_path / "nest", PrivateStore(tmp_path / "nest" / "private")
    for repo, commit in zip(repos, (old, new), strict=True):
        version = SourceVersion(version="1.0.0", tag="1.0.0")
        build = SourceBuild(name=NormalizedName("my-package"), repo_type=kind, repo_url=str(repo.path),
                            versions=(version,))  # fmt: skip
        config = Config(nestegg_dir=nest, port=0, index_url=upstream.index_url, source_builds=(build,), ttl=0)
        [outcome] = SourceBuilder(config, store, index_url=lambda: "http://127.0.0.1:9/").build("my-package")
        assert (outcome.status, outcome.commit, outcome.fetch_error) == ("built", commit, "")
        state = nest / "builds" / "my-package.json"
        state.write_text(
            json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "fetched_from"})
        )
    clone = str(nest / "repos" / "my-package")
    look = (
        ["git", "-C", clone, "cat-file", "-e", old]
        if kind == "git"
        else [find_hg(), "-R", clone, "log", "-r", old]
    )
    assert run(look).returncode != 0


@pytest.mark.slow
def test_a_broken_version_leaves_the_built_ones_served(
    tmp_path: Path, upstream: PrivateIndex, git_repo: GitRepo, http: requests.Session
) -> None:
    write_tree(git_repo.path, "my_package", "3.0.0", requires="!")
    git_repo.commit("broken", tag="3.0.0")
    versions = (SourceVersion(version="1.0.0", tag="1.0.0"), SourceVersion(version="3.0.0", tag="3.0.0"))
    with Mirror(one_build(tmp_path, upstream, git_repo, *versions)) as mirror:
        answer = http.get(f"{mirror.url}/simple/my-package/", headers=JSON)
        assert answer.status_code == 200, answer.reason
        assert [f["filename"] for f in answer.json()["files"]] == [
            "my_package-1.0.0-py3-none-any.whl", "my_package-1.0.0.tar.gz",
        ]  # fmt: skip


@pytest.mark.slow
def test_what_is_built_is_served_while_another_build_of_it_runs(
    tmp_path: Path,
    upstream: PrivateIndex,
    git_repo: GitRepo,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetch or a ``nestegg build`` holding the project's lock made it a 503 once its ttl was
    past, though its files were there to serve; then each request waited BUILD_WAIT for it (a
    slow repository's fetch made every page of the project 5 s late)."""
    monkeypatch.setattr(sources, "BUILD_WAIT", 30.0)
    versions = (SourceVersion(version="1.0.0", tag="1.0.0"),)
    with Mirror(one_build(tmp_path, upstream, git_repo, *versions)) as mirror:  # ttl 0: looked at each time
        url = f"{mirror.url}/simple/my-package/"
        assert http.get(url, headers=JSON).status_code == 200
        with FileLock(tmp_path / "nest" / "builds" / "my-package.lock"):  # another process's build
            started = time.monotonic()
            answer = http.get(url, headers=JSON)
            assert time.monotonic() - started < 10
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["files"]) == 2


@pytest.mark.slow
def test_an_sdist_whose_wheel_cannot_be_built_here_is_served_alone(
    tmp_path: Path, upstream: PrivateIndex, git_repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    no_compiler = tmp_path / "no-compiler"
    no_compiler.touch()
    write_tree(git_repo.path, "my_package", "3.0.0")
    add_to_backend(
        git_repo.path,
        f"_sdist_only = build_wheel\n\n\n"
        f"def build_wheel(*args, **kwargs):\n"
        f"    if _os.path.exists({str(no_compiler)!r}):\n"
        f"        raise SystemExit(\"error: command 'gcc' failed: No such file or directory\")\n"
        f"    return _sdist_only(*args, **kwargs)\n".replace("_os.", "__import__('os').")
        # an sdist of other bytes each time it is made (as an mtime in it makes one)
        + "\n\n_same_sdist = build_sdist\n\n\ndef build_sdist(*args, **kwargs):\n"
        "    with open('my_package/stamp.py', 'w') as stamp:\n"
        "        stamp.write(repr(__import__('time').time_ns()))\n"
        "    return _same_sdist(*args, **kwargs)\n",
    )
    git_repo.commit("a C extension", tag="3.0.0")
    versions = (SourceVersion(version="3.0.0", tag="3.0.0", dist_file="my_package-3.0.0.tar.gz"),)
    with Mirror(one_build(tmp_path, upstream, git_repo, *versions)) as mirror:
        assert list(files(mirror, "my-package")) == ["my_package-3.0.0.tar.gz"]
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert (
            "serving the sdist of my-package 3.0.0 alone: its wheel could not be built: "
            "error: command 'gcc' failed: No such file or directory" in warned
        )
        no_compiler.unlink()  # the machine that installs it has one
        python = make_venv(tmp_path / "venv")
        pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "my_package==3.0.0"]
        done = run(pip, env=installer_env(mirror.index_url))
        assert done.returncode == 0, done.stdout + done.stderr
        config = mirror.config
    # on demand it stays as it is; nestegg build (retry_failed) tries the wheel again, which builds now
    builder = SourceBuilder(
        config, PrivateStore(config.nestegg_dir / "private"), index_url=lambda: upstream.index_url
    )
    [outcome] = builder.build("my-package", retry_failed=False)
    assert (outcome.status, outcome.files) == ("current", ("my_package-3.0.0.tar.gz",))
    sdist = config.nestegg_dir / "private" / "my-package" / "my_package-3.0.0.tar.gz"
    served = sdist.read_bytes()
    [outcome] = builder.build("my-package")
    assert outcome.status == "built", outcome.message
    assert sorted(outcome.files) == ["my_package-3.0.0-py3-none-any.whl", "my_package-3.0.0.tar.gz"]
    assert sdist.read_bytes() == served  # the same commit's: kept, as clients hashed it
    # a build that made no sdist either is still a failure
    with pytest.raises(BuildError, match=r"expected an sdist, the build made nothing"):
        check_outputs(*source(), [], wheel=False)


@pytest.mark.slow
def test_a_loud_build_keeps_the_head_and_the_tail_of_its_output(
    tmp_path: Path, upstream: PrivateIndex, git_repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vcs, "MAX_OUTPUT", 64 * 1024)
    monkeypatch.setattr(vcs, "OUTPUT_HEAD", 16 * 1024)
    write_tree(git_repo.path, "my_package", "3.0.0")
    add_to_backend(
        git_repo.path, "import sys as _sys\nfor _ in range(40000):\n    print('y' * 79, file=_sys.stderr)\n"
    )
    commit = git_repo.commit("loud", tag="3.0.0")
    config = one_build(tmp_path, upstream, git_repo, SourceVersion(version="3.0.0", tag="3.0.0"))
    builder = SourceBuilder(
        config, PrivateStore(config.nestegg_dir / "private"), index_url=lambda: upstream.index_url
    )
    [outcome] = builder.build("my-package")
    assert outcome.status == "built", outcome.message
    log = (config.nestegg_dir / "logs" / f"my-package-3.0.0-{commit[:12]}.log").read_text()
    assert len(log) < 80 * 1024  # of some 3.2 MB a hook each
    assert "Getting build dependencies for sdist" in log  # the head
    assert "Successfully built" in log  # the tail
    assert " bytes of output cut ...]" in log


@pytest.mark.parametrize(("size", "kept"), [(10, 10), (100, 100), (101, 100), (10_000, 100)])
def test_output_is_cut_to_its_head_and_tail(size: int, kept: int) -> None:
    output, data = vcs.CappedOutput(limit=100, head=30), bytes(ord("a") + i % 26 for i in range(size))
    for start in range(0, size, 7):
        output.write(data[start : start + 7])
        assert output.held <= 100  # never more in memory
    if kept == size:
        assert (output.text(), output.cut) == (data.decode(), 0)
    else:
        note = f"\n[... {size - kept} bytes of output cut ...]\n"
        assert output.text() == data[:30].decode() + note + data[-70:].decode()


class _Sized(vcs.CappedOutput):
    """An output that has a length, so is false while empty."""

    def __len__(self) -> int:
        return self.held


def test_supervise_writes_to_the_output_given_even_one_that_is_false() -> None:
    output = _Sized(limit=1000)
    assert not output
    command = [sys.executable, "-c", "print('said')"]
    ended = vcs.supervise(command, env=None, timeout=60, merge_output=True, output=output)
    assert output.text() == ended.output == "said\n"


def test_supervise_refuses_a_limit_that_is_not_its_outputs() -> None:
    command = [sys.executable, "-c", "pass"]
    with pytest.raises(ValueError, match="limit=5 and an output of limit 1000"):
        vcs.supervise(command, env=None, timeout=60, output=vcs.CappedOutput(limit=1000), limit=5)
    ended = vcs.supervise(command, env=None, timeout=60, output=vcs.CappedOutput(limit=1000), limit=1000)
    assert ended.code == 0


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("{missing}", "fatal: repository '{missing}' does not exist"),
        ("ext::sh -c true", "fatal: transport 'ext' not allowed"),
    ],
)
def test_a_clone_that_fails_says_why(tmp_path: Path, url: str, said: str) -> None:
    missing = str(tmp_path / "missing")
    build = SourceBuild(
        name=NormalizedName("my-package"),
        repo_type="git",
        repo_url=url.format(missing=missing),
        versions=(SourceVersion(version="1.0.0", tag="1.0.0"),),
    )
    config = Config(nestegg_dir=tmp_path / "nest", source_builds=(build,))
    builder = SourceBuilder(
        config, PrivateStore(tmp_path / "private"), index_url=lambda: "http://127.0.0.1:9/"
    )
    [outcome] = builder.build("my-package")
    assert outcome.message.endswith(f": cannot clone it: {said.format(missing=missing)}")
