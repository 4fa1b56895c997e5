"""Private names never fall through to the upstream; ``private: no`` merges private files first."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName, canonicalize_name

from nestegg_core import Mirror
from nestegg_core.config.config import SourceBuild
from nestegg_core.simple.patterns import normalize_pattern
from nestegg_core.storage import private
from nestegg_core.storage.private import PrivateStore
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def publish(mirror: Mirror, dists: Path, name: str, version: str) -> None:
    for path in (
        make_wheel(PackageSpec(name=name, version=version), dists),
        make_sdist(PackageSpec(name=name, version=version), dists),
    ):
        mirror.repository.private.add(path)


def filenames(http: requests.Session, mirror: Mirror, name: str) -> list[str]:
    answer = http.get(f"{mirror.url}/simple/{name}/", headers=JSON)
    assert answer.status_code == 200, answer.text
    return [f["filename"] for f in answer.json()["files"]]


def test_uploaded_name_hides_the_upstream_project(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, http: requests.Session, tmp_path: Path
) -> None:
    upstream.add("shared-name", "1.0")
    upstream.add("shared-name", "9.0")
    mirror = make_mirror()
    publish(mirror, tmp_path / "dists", "shared-name", "0.5")
    assert filenames(http, mirror, "shared-name") == [
        "shared_name-0.5-py3-none-any.whl",
        "shared_name-0.5.tar.gz",
    ]
    assert http.get(f"{mirror.url}/files/shared-name/shared_name-9.0.tar.gz").status_code == 404
    assert faults.count(prefix="/simple/shared-name") == 0
    assert faults.count(prefix="/files/shared-name") == 0


@pytest.mark.parametrize("name", ["internal-tool", "acme-things", "acme-other"])
def test_reserved_names_are_404_without_asking_upstream(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, http: requests.Session, name: str
) -> None:
    upstream.add(name, "1.0")
    mirror = make_mirror(private_names=("Internal_Tool", "acme-*"))
    answer = http.get(f"{mirror.url}/simple/{name}/")
    assert answer.status_code == 404
    assert f"private project {name!r} has no files yet" in answer.text
    assert http.get(f"{mirror.url}/files/{name}/{name.replace('-', '_')}-1.0.tar.gz").status_code == 404
    assert faults.count(prefix=f"/simple/{name}") == 0
    assert faults.count(prefix="/files/") == 0


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        ("acme_*", "acme-*"),
        ("corp.*", "corp-*"),
        ("Intern_X", "intern-x"),
        ("acme__.-x", "acme-x"),
        ("Corp.[AB]*", "corp-[ab]*"),
        ("team[._-]x", "team-x"),  # a class of separators is one
        ("team_[._]x", "team-x"),  # and joins the run beside it
        ("[A-C]_*", "[a-c]-*"),
        ("x[!_]y", "x[!-]y"),
        ("x[a_]y", "x[a-]y"),  # '-' last: a member, not a range
        ("x[]_]y", "x[]-]y"),
        ("plain-name", "plain-name"),
        ("a[b", "a[b"),  # no class: a literal '[' (matches no name)
    ],
)
def test_private_name_patterns_are_normalized_as_names_are(pattern: str, normalized: str) -> None:
    assert normalize_pattern(pattern) == normalized


@pytest.mark.parametrize(
    ("name", "private"),
    [
        ("acme-tools", True),
        ("acme-a", True),
        ("acmetools", False),
        ("corp-lib", True),
        ("corp", False),
        ("intern-x", True),
        ("intern-xy", False),
        ("team-b7", True),
        ("team-bb", False),
        ("teamb7", False),
    ],
)
def test_private_name_patterns_protect_the_names_they_mean(tmp_path: Path, name: str, private: bool) -> None:
    store = PrivateStore(tmp_path / "private", reserved=("acme_*", "Corp.*", "Intern_X", "Team.[A-C][0-9]"))
    assert store.is_private(NormalizedName(name)) is private


@pytest.mark.parametrize(
    "asked", ["acme_tools", "acme-tools", "Acme.Tools", "corp.lib", "intern_x", "team.b7"]
)
def test_patterns_written_with_underscores_or_dots_keep_names_off_the_upstream(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, http: requests.Session, asked: str
) -> None:
    for name in ("acme-tools", "corp-lib", "intern-x", "team-b7"):
        upstream.add(name, "9.9")
    before = make_mirror()  # the name was mirrored before it was made private: the web UI says private now
    assert http.get(f"{before.url}/simple/{asked}/", headers=JSON).status_code == 200
    before.stop()
    faults.reset()
    mirror = make_mirror(private_names=("acme_*", "corp.*", "Intern_X", "team_[a-c][0-9]"))
    answer = http.get(f"{mirror.url}/simple/{asked}/", headers=JSON)
    assert answer.status_code == 404, answer.text
    assert "has no files yet" in answer.text
    assert faults.count(prefix="/simple/") == 0
    listed = http.get(f"{mirror.url}/ui/?format=json").json()["projects"]
    assert [(p["name"], p["kind"]) for p in listed] == [(canonicalize_name(asked), "private")]


def test_other_names_still_come_from_upstream(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session
) -> None:
    upstream.add("acmeish", "1.0", wheel=False)
    mirror = make_mirror(private_names=("acme-*",))
    assert filenames(http, mirror, "acmeish") == ["acmeish-1.0.tar.gz"]


def test_private_no_merges_private_files_first(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, http: requests.Session, tmp_path: Path
) -> None:
    upstream.add("forked-lib", "1.0", wheel=False)
    upstream.add("forked-lib", "2.0", wheel=False)
    fork = SourceBuild(
        name=NormalizedName("forked-lib"), repo_type="git", repo_url=str(tmp_path / "none"), private=False
    )
    mirror = make_mirror(source_builds=(fork,))
    assert filenames(http, mirror, "forked-lib") == ["forked_lib-1.0.tar.gz", "forked_lib-2.0.tar.gz"]
    dists = tmp_path / "dists"
    mirror.repository.private.add(make_sdist(PackageSpec(name="forked-lib", version="2.0"), dists))
    mirror.repository.private.add(make_sdist(PackageSpec(name="forked-lib", version="2.0.post1"), dists))
    files = http.get(f"{mirror.url}/simple/forked-lib/", headers=JSON).json()["files"]
    assert [f["filename"] for f in files] == [
        "forked_lib-2.0.tar.gz",  # ours, in front of (and instead of) upstream's file of that name
        "forked_lib-2.0.post1.tar.gz",
        "forked_lib-1.0.tar.gz",
    ]
    ours = (tmp_path / "dists" / "forked_lib-2.0.tar.gz").read_bytes()
    assert http.get(f"{mirror.url}/files/forked-lib/forked_lib-2.0.tar.gz").content == ours
    assert faults.count("/simple/forked-lib/") >= 1


@pytest.mark.slow
def test_pip_and_uv_only_see_private_versions(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, tmp_path: Path
) -> None:
    upstream.add("shared-name", "1.0")
    upstream.add("shared-name", "9.0")
    upstream.add("reserved-name", "1.0")
    mirror = make_mirror(private_names=("reserved-*",))
    publish(mirror, tmp_path / "dists", "shared-name", "0.5")
    python = make_venv(tmp_path / "venv")
    env = installer_env(mirror.index_url)

    pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "shared-name"]
    done = run(pip, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully installed shared-name-0.5" in done.stdout
    refused = run([*pip[:-1], "shared-name>=1"], env=env)
    assert refused.returncode != 0
    assert "from versions: 0.5" in refused.stderr
    refused = run([*pip[:-1], "reserved-name"], env=env)
    assert refused.returncode != 0
    assert "No matching distribution found for reserved-name" in refused.stderr

    uv = find_uv()
    assert uv is not None
    uv_pip = [uv, "pip", "install", "--no-cache", "--python", str(python), "--reinstall"]
    done = run([*uv_pip, "shared-name"], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shared-name==0.5" in done.stderr
    refused = run([*uv_pip, "shared-name>=1"], env=env)
    assert refused.returncode != 0
    assert "only shared-name==0.5 is available" in refused.stderr
    refused = run([*uv_pip, "reserved-name"], env=env)
    assert refused.returncode != 0
    assert "reserved-name was not found in the package registry" in refused.stderr

    assert faults.count(prefix="/simple/shared-name") == 0
    assert faults.count(prefix="/simple/reserved-name") == 0
    assert faults.count(prefix="/files/") == 0


# a publish cut short -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["copy_atomic", "rename_folder_below"])
def test_a_publish_cut_short_leaves_a_new_name_public_and_its_leftovers_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A kill between the first write and the last: the upload was never answered, so the name
    must not turn private with no file (it hid the upstream's project for good)."""
    store = PrivateStore(tmp_path / "nest" / "private")
    path = make_wheel(PackageSpec(name="new-name", version="1.0"), tmp_path / "dists")

    def killed(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # no clean-up runs, as after a kill -9

    monkeypatch.setattr(private, where, killed)
    with pytest.raises(KeyboardInterrupt):
        store.add(path)
    name = NormalizedName("new-name")
    assert not store.is_private(name)
    assert (store.page(name), store.names(), store.emptied()) == (None, [], [])
    assert store.protected(["new-name"]) == frozenset()
    (aside,) = [p for p in store.root.iterdir() if p.name.startswith(".new-")]
    assert aside.name.startswith(".new-new-name.")
    # swept once untouched long enough, not before
    assert store.sweep(time.time() - 3600) == 0
    assert aside.exists()
    assert store.sweep(time.time() + 1) >= 1
    assert not aside.exists()
    monkeypatch.undo()
    assert store.add(path)[1]
    assert store.is_private(name)
    assert [d.filename for d in store.page(name).files] == [path.name]  # type: ignore[union-attr]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names descriptors through /proc")
def test_a_published_file_is_on_the_disk_before_the_upload_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store holds the only copy: its file, metadata, record and their names are synced."""
    store = PrivateStore(tmp_path / "nest" / "private")
    synced: list[str] = []
    fsync = os.fsync

    def noted(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", noted)
    path = make_wheel(PackageSpec(name="durable", version="1.0"), tmp_path / "dists")
    store.add(path)
    folder = store.root / "durable"
    names = {Path(p).name for p in synced if not Path(p).name.endswith(".tmp")}
    # the new name's folder is synced as it is filled, aside, and the store's once it is renamed in
    assert {path.name, "private"} <= names, synced
    assert any(name.startswith(".new-durable.") for name in names), synced
    assert sum(".metadata." in p or ".json." in p for p in synced) == 2, synced  # before their renames
    assert folder.is_dir()
