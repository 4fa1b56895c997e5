"""Private names never fall through to the upstream; ``private: no`` merges private files first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror
from nestegg_core.config.config import SourceBuild
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
