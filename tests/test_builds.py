"""Source builds from real git and hg repositories with real ``build``, pip and uv."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror, load_config
from nestegg_core.builds.sources import SourceBuilder, check_outputs
from nestegg_core.builds.vcs import Git, Mercurial, Transcript, find_hg
from nestegg_core.cli import main
from nestegg_core.config.config import Config, SourceBuild, SourceVersion
from nestegg_core.errors import BuildError
from nestegg_core.storage.private import PrivateStore
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_sdist
from nestegg_core.testing.pytest_plugin import PrivateIndex
from nestegg_core.urls import mask_text

from .conftest import Faults

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
    mirror: Mirror, git_repo: GitRepo, faults: Faults, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nestegg_core.builds.sources")
    # parallel first requests: one builds, the others wait for it and find it done
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


def test_git_resolves_tags_branches_and_commits(git_repo: GitRepo, tmp_path: Path) -> None:
    git, log, clone = Git(), Transcript(), tmp_path / "clone"
    git.update(str(git_repo.path), clone, log)
    assert git.resolve(clone, "1.0.0", log) == git_repo("rev-parse", "1.0.0^{commit}")
    assert git.resolve(clone, "main", log) == git_repo("rev-parse", "main")
    head = git_repo("rev-parse", "main")
    assert git.resolve(clone, head[:10], log) == head
    for ref in ("nope", "-x", "with space"):
        with pytest.raises(BuildError, match=repr(ref).replace("(", r"\(")):
            git.resolve(clone, ref, log)
    git.checkout(clone, head, tmp_path / "out", log)
    assert "2.0.0" in (tmp_path / "out" / "PKG-INFO").read_text()
    write_tree(git_repo.path, "my_package", "2.0.0", extra="x")
    moved = git_repo.commit("moved")
    git.update(str(git_repo.path), clone, log)
    assert git.resolve(clone, "main", log) == moved


def test_hg_resolves_tags_and_branches(hg_repo: HgRepo, tmp_path: Path) -> None:
    hg, log, clone = Mercurial(), Transcript(), tmp_path / "clone"
    hg.update(str(hg_repo.path), clone, log)
    tagged = hg_repo("log", "-r", "1.0.0", "--template", "{node}")
    assert hg.resolve(clone, "1.0.0", log) == tagged
    tip = hg_repo("log", "-r", "tip", "--template", "{node}")
    assert hg.resolve(clone, "default", log) == tip
    with pytest.raises(BuildError, match="no tag, bookmark, branch or commit 'nope'"):
        hg.resolve(clone, "nope", log)
    hg.checkout(clone, tagged, tmp_path / "out", log)
    assert (tmp_path / "out" / "PKG-INFO").is_file()
    assert not (tmp_path / "out" / ".hgtags").exists()


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
