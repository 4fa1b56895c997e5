"""The PyPI JSON API (``/pypi/<name>/json``, ``/pypi/<name>/<version>/json``), and pip-tools using it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from nestegg_core.serve.mounts import UpstreamMounts
from nestegg_core.simple.jsonapi import find_release, latest_release, packagetype, project_json, releases_of
from nestegg_core.simple.models import DistFile, Hashes, ProjectPage
from nestegg_core.testing import installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory

# pure rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("a-1.0-py3-none-any.whl", "bdist_wheel"),
        ("a-1.0.tar.gz", "sdist"),
        ("a-1.0.zip", "sdist"),
        ("A-1.0.TAR.GZ", "sdist"),
        ("a-1.0-py2.7.egg", "bdist_egg"),
        ("a-1.0.win32.exe", "bdist_wininst"),
        ("a-1.0.txt", None),
    ],
)
def test_packagetype(filename: str, kind: str | None) -> None:
    assert packagetype(filename) == kind


def dist(filename: str, **changes: object) -> DistFile:
    return DistFile(filename=filename, **changes)  # type: ignore[arg-type]


SPELLED = ProjectPage.build(
    "pkg",
    [dist("pkg-0.6c1.tar.gz"), dist("pkg-69.3-py3-none-any.whl"), dist("pkg-2.0b1.tar.gz")],
    ["0.6c1", "69.3.0", "70.0"],
)


def test_releases_are_keyed_by_the_pages_spelling_of_each_version() -> None:
    releases = releases_of(SPELLED)
    assert {k: [d.filename for d in v] for k, v in releases.items()} == {
        "0.6c1": ["pkg-0.6c1.tar.gz"],  # the filename's 0.6rc1 is the list's 0.6c1
        "69.3.0": ["pkg-69.3-py3-none-any.whl"],
        "70.0": [],  # a version without files is a release without files, as Warehouse lists it
        "2.0b1": ["pkg-2.0b1.tar.gz"],  # not in the list: spelled as the filename says
    }


@pytest.mark.parametrize(
    ("asked", "found"),
    [("0.6c1", "0.6c1"), ("0.6rc1", "0.6c1"), ("69.3", "69.3.0"), ("69.3.0", "69.3.0"), ("1.0", None)],
)
def test_a_release_is_found_in_any_spelling(asked: str, found: str | None) -> None:
    assert find_release(releases_of(SPELLED), asked) == found


@pytest.mark.parametrize(
    ("files", "latest"),
    [
        (["p-1.0.tar.gz", "p-2.0b1.tar.gz"], "1.0"),  # a final release before a pre-release
        (["p-1.0.tar.gz", "p-1.1.tar.gz"], "1.1"),
        (["p-2.0b1.tar.gz"], "2.0b1"),  # only pre-releases: the highest
        ([], None),
    ],
)
def test_latest_release(files: list[str], latest: str | None) -> None:
    assert latest_release(releases_of(ProjectPage.build("p", [dist(f) for f in files]))) == latest


def test_a_yanked_release_is_not_the_latest() -> None:
    page = ProjectPage.build("p", [dist("p-1.0.tar.gz"), dist("p-1.1.tar.gz", yanked="broken")])
    assert latest_release(releases_of(page)) == "1.0"


def test_the_document_in_warehouses_shape() -> None:
    sha256, md5 = "ab" * 32, "cd" * 16
    page = ProjectPage.build(
        "pkg",
        [
            dist(
                "pkg-1.0-py3-none-any.whl",
                hashes={"sha256": sha256, "md5": md5},
                requires_python=">=3.8",
                size=123,
                upload_time="2024-05-06T07:08:09.123456Z",
            ),
            dist("pkg-1.0.tar.gz", hashes=Hashes("sha256", sha256), yanked=""),
        ],
    )
    metadata = {
        "name": ["Pkg"],
        "summary": ["A package"],
        "requires-dist": ["dep>=1", "other; extra == 'x'"],
        "classifier": ["License :: OSI Approved"],
        "project-url": ["Source, https://example.com/src"],
    }
    document = json.loads(
        project_json(
            page,
            "1.0",
            releases_of(page),
            metadata=metadata,
            url_for=lambda d: f"http://example.com/files/pkg/{d.filename}",
            with_releases=True,
        )
    )
    info = document["info"]
    assert (info["name"], info["version"], info["summary"]) == ("Pkg", "1.0", "A package")
    assert info["requires_dist"] == ["dep>=1", "other; extra == 'x'"]
    assert info["requires_python"] == ">=3.8"  # the files', as the metadata does not say
    assert info["classifiers"] == ["License :: OSI Approved"]
    assert info["project_urls"] == {"Source": "https://example.com/src"}
    assert (info["author"], info["license"], info["yanked"]) == (None, None, False)
    wheel, sdist = document["urls"]
    assert wheel == {
        "comment_text": "",
        "digests": {"md5": md5, "sha256": sha256},
        "downloads": -1,
        "filename": "pkg-1.0-py3-none-any.whl",
        "has_sig": False,
        "md5_digest": md5,
        "packagetype": "bdist_wheel",
        "python_version": "py3",
        "requires_python": ">=3.8",
        "size": 123,
        "upload_time": "2024-05-06T07:08:09",
        "upload_time_iso_8601": "2024-05-06T07:08:09.123456Z",
        "url": "http://example.com/files/pkg/pkg-1.0-py3-none-any.whl",
        "yanked": False,
        "yanked_reason": None,
    }
    assert (sdist["packagetype"], sdist["python_version"], sdist["yanked"]) == ("sdist", "source", True)
    assert (sdist["size"], sdist["upload_time_iso_8601"], sdist["md5_digest"]) == (None, None, None)
    assert document["releases"] == {"1.0": document["urls"]}
    assert document["vulnerabilities"] == []


def test_without_metadata_what_is_unknown_is_null() -> None:
    page = ProjectPage.build("pkg", [dist("pkg-1.0.tar.gz")])
    document = json.loads(
        project_json(
            page, "1.0", releases_of(page), metadata=None, url_for=lambda d: d.filename, with_releases=False
        )
    )
    info = document["info"]
    assert (info["name"], info["version"]) == ("pkg", "1.0")
    assert info["summary"] is info["requires_dist"] is info["requires_python"] is None
    assert "releases" not in document


# served ----------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_mirrored_project(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, http: requests.Session
) -> None:
    upstream.add("dep-one", "1.0", requires_dist=["other>=2"], summary="The first", requires_python=">=3.8")
    upstream.add("dep-one", "1.1", yanked="broken")
    mirror = make_mirror()
    answer = http.get(f"{mirror.url}/pypi/dep-one/json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    document = answer.json()
    assert sorted(document["releases"]) == ["1.0", "1.1"]
    # 1.1 is yanked: the latest is 1.0; no file of it is cached yet, so only the page is known
    assert (document["info"]["version"], document["info"]["summary"]) == ("1.0", None)
    assert document["info"]["requires_python"] == ">=3.8"
    files = {f["filename"]: f for f in document["urls"]}
    wheel = files["dep_one-1.0-py3-none-any.whl"]
    assert wheel["url"] == f"{mirror.url}/files/dep-one/dep_one-1.0-py3-none-any.whl"
    assert wheel["packagetype"] == "bdist_wheel"
    assert files["dep_one-1.0.tar.gz"]["packagetype"] == "sdist"
    assert [f["yanked_reason"] for f in document["releases"]["1.1"]] == ["broken", "broken"]
    assert faults.count(prefix="/files/") == 0  # nothing fetched for it
    # the wheel cached: its digest is what the file's bytes hash to, its METADATA fills info
    body = http.get(wheel["url"]).content
    assert wheel["digests"]["sha256"] == hashlib.sha256(body).hexdigest()
    release = http.get(f"{mirror.url}/pypi/dep-one/1.0/json").json()
    assert release["info"]["summary"] == "The first"
    assert release["info"]["requires_dist"] == ["other>=2"]
    assert "releases" not in release
    cached = next(f for f in release["urls"] if f["packagetype"] == "bdist_wheel")
    assert cached["size"] == len(body)
    assert http.get(f"{mirror.url}/pypi/dep-one/1.1/json").json()["info"]["yanked"] is True


def test_a_private_project(make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path) -> None:
    mirror = make_mirror()
    # the metadata is UTF-8, and its body the description (it was read as bytes: "J\ufffd\ufffdrg", null)
    spec = PackageSpec(
        name="secret-pkg", version="2.0", summary="Ours, by J\u00f6rg \u2603", description="# Caf\u00e9\n"
    )
    wheel = make_wheel(spec, tmp_path)
    mirror.repository.private.add(wheel)
    document = http.get(f"{mirror.url}/pypi/secret-pkg/2.0/json").json()
    info = document["info"]
    assert (info["name"], info["summary"], info["description"]) == (
        "secret-pkg",
        spec.summary,
        "# Caf\u00e9\n",
    )
    (entry,) = document["urls"]
    assert entry["digests"]["sha256"] == sha256_of(wheel)
    assert entry["size"] == wheel.stat().st_size
    assert http.get(entry["url"]).content == wheel.read_bytes()


def sent_as_is(http: requests.Session, url: str) -> requests.Response:
    """GET ``url`` with its dot segments as written (requests would resolve them), no redirect followed."""
    request = requests.Request("GET", url).prepare()
    request.url = url
    return http.send(request, allow_redirects=False)


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/pypi/Dep_One/json", "/pypi/dep-one/json"),
        ("/pypi/Dep.One/1.0/json", "/pypi/dep-one/1.0/json"),
        # where tools look, relative to an index URL
        ("/simple/../pypi/dep-one/json", "/pypi/dep-one/json"),
        ("/simple/../pypi/dep-one/1.0/json", "/pypi/dep-one/1.0/json"),
    ],
)
def test_redirects(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session, path: str, location: str
) -> None:
    upstream.add("dep-one", "1.0")
    mirror = make_mirror()
    moved = sent_as_is(http, mirror.url + path)
    assert (moved.status_code, moved.headers["Location"]) == (301, location)
    assert http.get(mirror.url + location).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/simple/../files/dep-one/json",  # no other path is reached by dot segments
        "/simple/../pypi/dep-one/../../files/x",
        "/pypi/../../etc/passwd",
    ],
)
def test_dot_segments_reach_the_json_api_only(
    make_mirror: MirrorFactory, http: requests.Session, path: str
) -> None:
    mirror = make_mirror()
    assert sent_as_is(http, mirror.url + path).status_code == 404


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/pypi/no-such/json", "no-such"),
        ("/pypi/dep-one/9.9/json", "project 'dep-one' has no version '9.9'"),
    ],
)
def test_unknown_project_or_version_is_a_404_of_one_line(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session, path: str, message: str
) -> None:
    upstream.add("dep-one", "1.0")
    mirror = make_mirror()
    answer = http.get(mirror.url + path)
    assert answer.status_code == 404
    assert message in answer.text
    assert answer.text.count("\n") == 1


def test_read_auth_guards_it(make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path) -> None:
    from nestegg_core.config.credentials import set_password  # noqa: PLC0415

    users = tmp_path / "users.txt"
    set_password(users, "reader", "pw")
    mirror = make_mirror(credentials_file=users, private_read_auth=True)
    mirror.repository.private.add(make_wheel(PackageSpec(name="secret-pkg", version="1.0"), tmp_path))
    for path in ("/pypi/secret-pkg/json", "/pypi/secret-pkg/1.0/json", "/pypi/Secret_Pkg/json"):
        assert http.get(mirror.url + path).status_code == 401, path
        assert http.get(mirror.url + path, auth=("reader", "pw")).status_code == 200, path


def test_under_a_mounted_upstream(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session
) -> None:
    upstream.add("dep-one", "1.0")
    mirror = make_mirror(index_url="http://127.0.0.1:9/simple/")  # its own upstream is not this one
    mounted = UpstreamMounts(mirror).index_url(upstream.index_url)
    base = mounted.removesuffix("simple/")
    document = http.get(f"{base}pypi/dep-one/json").json()
    assert {f["url"] for f in document["urls"]} == {
        f"{base}files/dep-one/dep_one-1.0-py3-none-any.whl",
        f"{base}files/dep-one/dep_one-1.0.tar.gz",
    }
    request = requests.Request("GET", f"{mounted}../pypi/dep-one/json").prepare()
    request.url = f"{mounted}../pypi/dep-one/json"
    moved = http.send(request, allow_redirects=False)
    assert moved.headers["Location"] == base.removeprefix(mirror.url) + "pypi/dep-one/json"


# pip-tools -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pip_compile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-compile in a venv of its own, installed from the package index this machine uses."""
    python = make_venv(tmp_path_factory.mktemp("pip-tools") / "venv")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "pip-tools"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if install.returncode != 0:
        pytest.skip(f"pip-tools could not be installed from the package index: {install.stderr[-500:]}")
    return python.parent / ("pip-compile.exe" if sys.platform == "win32" else "pip-compile")


@pytest.mark.slow
def test_pip_compile_generate_hashes_downloads_no_file_it_hashes(
    make_mirror: MirrorFactory, upstream: PrivateIndex, faults: Faults, pip_compile: Path, tmp_path: Path
) -> None:
    upstream.add("top-pkg", "1.0", requires_dist=["dep-one>=1"])
    upstream.add("dep-one", "1.0")
    upstream.add("dep-one", "1.1", wheel_tag="cp399-cp399-manylinux_2_17_x86_64", sdist=False)
    upstream.add("dep-one", "1.1")
    mirror = make_mirror()
    (tmp_path / "requirements.in").write_text("top-pkg\n")
    result = subprocess.run(
        [str(pip_compile), "--generate-hashes", "--no-header", "--output-file", "out.txt", "requirements.in"],
        cwd=tmp_path,
        env=installer_env(mirror.index_url, PIP_NO_CACHE_DIR="1", PIP_TOOLS_CACHE_DIR=str(tmp_path / "c")),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = (tmp_path / "out.txt").read_text()
    assert "dep-one==1.1" in out
    assert "top-pkg==1.0" in out
    # every file of each pinned version is hashed, each hash the upstream's
    page = upstream.mirror.repository.private.page("dep-one")  # type: ignore[arg-type]
    assert page is not None
    for file in page.files:
        if file.version == "1.1":
            assert f"sha256:{file.sha256}" in out, file.filename
    downloads = [
        s.path for s in faults.seen if s.path.startswith("/files/") and not s.path.endswith(".metadata")
    ]
    # the hashes came from the JSON API, not from downloaded files: pip downloads only the wheel it
    # resolved to of each project (small wheels: their metadata would cost it as much), never the
    # other files of the pinned versions it hashes
    assert sorted(downloads) == [
        "/files/dep-one/dep_one-1.1-py3-none-any.whl",
        "/files/top-pkg/top_pkg-1.0-py3-none-any.whl",
    ]
