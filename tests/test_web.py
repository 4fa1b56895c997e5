"""The read-only web interface: what it lists, where files came from, escaping, access, speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from nestegg_core import Mirror
from nestegg_core.builds.runs import EnvResult, RunStore
from nestegg_core.config.config import CISettings, SourceBuild, SourceVersion
from nestegg_core.config.credentials import set_password
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage.pagestate import PageState
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory

COMMIT = "0123456789abcdef0123456789abcdef01234567"
EVIL = "<script>alert(1)</script>"


def _publish_private(mirror: Mirror, tmp_path: Path, name: str, version: str) -> list[str]:
    spec = PackageSpec(name=name, version=version)
    out = tmp_path / "dists"
    paths = [make_wheel(spec, out), make_sdist(spec, out)]
    return [mirror.repository.private.add(path)[0].filename for path in paths]


@pytest.fixture
def populated(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path
) -> Mirror:
    """A mirror with a cached project (one file cached), a private upload and a private source build."""
    upstream.add("My_Pkg", "1.0")
    upstream.add("My_Pkg", "1.1", yanked=EVIL)
    upstream.add("My_Pkg", "2.0rc1")
    mirror = make_mirror(
        source_builds=(
            SourceBuild(name="built-pkg", repo_type="git", repo_url="https://user:hunter2@example.com/built.git",  # type: ignore[arg-type]
                        ci=CISettings(interval=0)),
        ),
    )  # fmt: skip
    assert http.get(mirror.index_url + "my-pkg/").status_code == 200
    assert http.get(f"{mirror.url}/files/my-pkg/my_pkg-1.0-py3-none-any.whl").status_code == 200
    _publish_private(mirror, tmp_path, "secret-tool", "0.1")
    built = _publish_private(mirror, tmp_path, "built-pkg", "1.0.0")
    state = {
        "built": {
            "1.0.0": {"ref": "v1.0.0", "commit": COMMIT, "files": built, "built_at": "2024-05-06T07:08:09Z"}
        }
    }
    (mirror.config.nestegg_dir / "builds").mkdir()
    (mirror.config.nestegg_dir / "builds" / "built-pkg.json").write_text(json.dumps(state))
    return mirror


def test_root_and_prefix_redirect(mirror: Mirror, http: requests.Session) -> None:
    for path in ("/", "/ui"):
        response = http.get(mirror.url + path, allow_redirects=False)
        assert response.status_code == 302
        assert response.headers["Location"] == "/ui/"
    assert http.get(mirror.url + "/").url == mirror.url + "/ui/"
    response = http.get(mirror.url + "/ui/project/My_Pkg?here=1", allow_redirects=False)
    assert response.headers["Location"] == "/ui/project/my-pkg?here=1"


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/", "/pypi/ui/"),
        ("/?q=a", "/pypi/ui/?q=a"),
        ("/ui", "/pypi/ui/"),
        ("/ui/project/My_Pkg?here=1", "/pypi/ui/project/my-pkg?here=1"),
        ("/ui/ci/My_Pkg", "/pypi/ui/ci/my-pkg"),
    ],
)
def test_redirects_stay_under_the_public_urls_path(
    make_mirror: MirrorFactory, http: requests.Session, path: str, location: str
) -> None:
    mirror = make_mirror(public_url="http://proxy.example.com/pypi")
    response = http.get(mirror.url + path, allow_redirects=False)
    assert (response.status_code, response.headers["Location"]) == (302, location)


def test_home_lists_cached_and_private_projects(populated: Mirror, http: requests.Session) -> None:
    data = http.get(f"{populated.url}/ui/?format=json").json()
    rows = {row["name"]: row for row in data["projects"]}
    assert set(rows) == {"my-pkg", "secret-tool", "built-pkg"}
    assert rows["my-pkg"]["kind"] == "mirror"
    assert (rows["my-pkg"]["latest"], rows["my-pkg"]["versions"], rows["my-pkg"]["files_here"]) == (
        "1.1",
        3,
        1,
    )
    assert (rows["secret-tool"]["kind"], rows["secret-tool"]["files_here"]) == ("private", 2)
    page = http.get(f"{populated.url}/ui/")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none' forbids scripts
    assert 'href="/ui/project/secret-tool"' in page.text
    assert "<script" not in page.text


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("q=PKG", ["built-pkg", "my-pkg"]),
        ("q=my_pkg", ["my-pkg"]),
        ("kind=private", ["built-pkg", "secret-tool"]),
        ("kind=mirror", ["my-pkg"]),
        ("q=nothing-like-it", []),
    ],
)
def test_filter(populated: Mirror, http: requests.Session, query: str, names: list[str]) -> None:
    data = http.get(f"{populated.url}/ui/?format=json&{query}").json()
    assert [row["name"] for row in data["projects"]] == names


def test_pagination(populated: Mirror, http: requests.Session) -> None:
    first = http.get(f"{populated.url}/ui/?format=json&per_page=2").json()
    second = http.get(f"{populated.url}/ui/?format=json&per_page=2&page=2").json()
    assert (first["total"], first["pages"]) == (3, 2)
    assert [r["name"] for r in first["projects"] + second["projects"]] == [
        "built-pkg",
        "my-pkg",
        "secret-tool",
    ]
    html = http.get(f"{populated.url}/ui/?per_page=2").text
    assert 'rel="next" href="/ui/?page=2&amp;per_page=2"' in html
    assert http.get(f"{populated.url}/ui/?format=json&page=9").json()["projects"] == []


def test_project_page_follows_what_it_is_made_of(
    populated: Mirror, http: requests.Session, tmp_path: Path
) -> None:
    """What the page shows is made once per change: a file cached, a private upload, a build."""

    def here(name: str) -> dict[str, bool]:
        data = http.get(f"{populated.url}/ui/project/{name}?format=json").json()
        return {f["filename"]: f["here"] for v in data["versions"] for f in v["files"]}

    assert here("my-pkg")["my_pkg-1.1-py3-none-any.whl"] is False
    assert http.get(f"{populated.url}/files/my-pkg/my_pkg-1.1-py3-none-any.whl").status_code == 200
    assert here("my-pkg")["my_pkg-1.1-py3-none-any.whl"] is True
    assert set(here("secret-tool")) == {"secret_tool-0.1-py3-none-any.whl", "secret_tool-0.1.tar.gz"}
    _publish_private(populated, tmp_path, "secret-tool", "0.2")
    assert "secret_tool-0.2.tar.gz" in here("secret-tool")
    origins = http.get(f"{populated.url}/ui/project/built-pkg?format=json").json()["versions"][0]["files"]
    assert {f["origin"] for f in origins} == {"built"}
    (populated.config.nestegg_dir / "builds" / "built-pkg.json").write_text('{"built": {}}')
    origins = http.get(f"{populated.url}/ui/project/built-pkg?format=json").json()["versions"][0]["files"]
    assert {f["origin"] for f in origins} == {"uploaded"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "page: expected a whole number >= 1 of at most 9 digits, got '0'"),
        ("per_page=many", "per_page: expected a whole number >= 1 of at most 9 digits, got 'many'"),
        # not "no whole number": one of more digits than a count has
        (
            "per_page=9999999999999",
            "per_page: expected a whole number >= 1 of at most 9 digits, got '9999999999999'",
        ),
        ("kind=public", "kind: expected 'private' or 'mirror', got 'public'"),
        ("format=xml", "format: expected 'html' or 'json', got 'xml'"),
    ],
)
def test_bad_parameters(mirror: Mirror, http: requests.Session, query: str, message: str) -> None:
    response = http.get(f"{mirror.url}/ui/?{query}")
    assert response.status_code == 400
    assert response.text.strip() == message


def test_project_page_files_and_origins(populated: Mirror, http: requests.Session) -> None:
    data = http.get(f"{populated.url}/ui/project/my-pkg?format=json").json()
    assert [v["version"] for v in data["versions"]] == ["2.0rc1", "1.1", "1.0"]
    files = {f["filename"]: f for v in data["versions"] for f in v["files"]}
    wheel = files["my_pkg-1.0-py3-none-any.whl"]
    assert (wheel["here"], wheel["origin"]) == (True, "mirrored")
    assert len(wheel["sha256"]) == 64
    assert wheel["size"] > 0
    assert wheel["upload_time"]
    assert files["my_pkg-1.0.tar.gz"]["here"] is False
    assert files["my_pkg-1.1.tar.gz"]["yanked"] == EVIL
    here = http.get(f"{populated.url}/ui/project/my-pkg?format=json&here=1").json()
    assert [(v["version"], [f["filename"] for f in v["files"]]) for v in here["versions"]] == [
        ("1.0", ["my_pkg-1.0-py3-none-any.whl"])
    ]

    built = http.get(f"{populated.url}/ui/project/built-pkg?format=json").json()
    assert built["kind"] == "private"
    assert built["source_build"]["repo_url"] == "https://user:***@example.com/built.git"
    assert built["source_build"]["status"] == {"fetched_at": None, "fetch_error": None, "failed": {}}
    (version,) = built["versions"]
    assert {(f["origin"], f["ref"], f["commit"]) for f in version["files"]} == {("built", "v1.0.0", COMMIT)}
    uploaded = http.get(f"{populated.url}/ui/project/secret-tool?format=json").json()
    assert {f["origin"] for v in uploaded["versions"] for f in v["files"]} == {"uploaded"}

    html = http.get(f"{populated.url}/ui/project/built-pkg").text
    assert f'<code title="{COMMIT}">{COMMIT[:12]}</code>' in html
    assert "hunter2" not in html
    page = http.get(f"{populated.url}/ui/project/my-pkg").text
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_source_builds_status_names_its_failing_versions(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path
) -> None:
    """A version failed once, then taken out of the config, is no failure of the build now."""
    versions = (SourceVersion(version="1.0", tag="v1.0"), SourceVersion(version="2.0", tag="v2.0"))
    build = SourceBuild(name="built-pkg", repo_type="git", repo_url="x", versions=versions)  # type: ignore[arg-type]
    mirror = make_mirror(source_builds=(build,))
    _publish_private(mirror, tmp_path, "built-pkg", "1.0")
    error = f"no tag or branch {EVIL!r} in 'https://u:***@example.com/r.git'"
    state = {
        "checked_at": 1714979289.0,
        "fetch_error": "cannot fetch 'https://u:***@example.com/r.git': fatal: gone",
        "failed": {"2.0": {"error": error}, "0.9": {"error": "an old failure"}},
    }
    (mirror.config.nestegg_dir / "builds").mkdir()
    (mirror.config.nestegg_dir / "builds" / "built-pkg.json").write_text(json.dumps(state))
    data = http.get(f"{mirror.url}/ui/project/built-pkg?format=json").json()
    assert data["source_build"]["status"] == {
        "fetched_at": "2024-05-06T07:08:09.000000Z",
        "fetch_error": state["fetch_error"],
        "failed": {"2.0": error},
    }
    html = http.get(f"{mirror.url}/ui/project/built-pkg").text
    assert "cannot fetch &#x27;https://u:***@example.com/r.git&#x27;: fatal: gone" in html
    assert "&lt;script&gt;" in html
    assert EVIL not in html
    assert "an old failure" not in html


def test_project_pages_paginate_versions(populated: Mirror, http: requests.Session) -> None:
    data = http.get(f"{populated.url}/ui/project/my-pkg?format=json&per_page=1&page=3").json()
    assert (data["pages"], [v["version"] for v in data["versions"]]) == (3, ["1.0"])


def test_pages_never_ask_the_upstream(populated: Mirror, http: requests.Session, faults: Faults) -> None:
    faults.reset()
    paths = [
        "/ui/", "/ui/?q=x", "/ui/project/my-pkg", "/ui/project/built-pkg", "/ui/project/secret-tool",
        "/ui/ci", "/ui/ci/built-pkg", "/ui/badge/my-pkg.svg", "/ui/badge/elsewhere.svg",
    ]  # fmt: skip
    for path in paths:
        assert http.get(populated.url + path).status_code == 200, path
    assert http.get(f"{populated.url}/ui/project/elsewhere").status_code == 404
    assert faults.count(prefix="/") == 0
    # and nothing was built for the source build
    assert not (populated.config.nestegg_dir / "repos").exists()


def test_ci_pages_and_badge(populated: Mirror, http: requests.Session) -> None:
    store = RunStore(populated.config.nestegg_dir)
    passed, _ = store.queue("built-pkg", "main", COMMIT, "poll")
    store.start(passed.id)
    store.finish(passed.id, outcome="passed", log="fine\n", duration=3.0, exit_code=0,
                 envs=[EnvResult(name="py", outcome="passed", exit_code=0, duration=2.0)])  # fmt: skip
    failed, _ = store.queue("built-pkg", EVIL, COMMIT, "trigger")
    store.start(failed.id)
    store.finish(failed.id, outcome="failed", log=f"line one\n{EVIL}\n", duration=1.0, exit_code=1,
                 envs=[EnvResult(name=EVIL, outcome="failed", exit_code=1)])  # fmt: skip
    store.close()

    assert "failing" in http.get(f"{populated.url}/ui/badge/built-pkg.svg").text
    assert http.get(f"{populated.url}/ui/badge/built-pkg.svg?format=json").json() == {
        "name": "built-pkg", "ci": "failed",
    }  # fmt: skip
    assert "unknown" in http.get(f"{populated.url}/ui/badge/my-pkg.svg").text
    listing = http.get(f"{populated.url}/ui/ci/built-pkg?format=json").json()
    assert [(r["id"], r["outcome"]) for r in listing["runs"]] == [
        (failed.id, "failed"),
        (passed.id, "passed"),
    ]
    overview = http.get(f"{populated.url}/ui/ci?format=json").json()
    assert [b["name"] for b in overview["source_builds"]] == ["built-pkg"]
    assert overview["source_builds"][0]["ci"] == "failed"
    home = http.get(f"{populated.url}/ui/?format=json&q=built").json()
    assert home["projects"][0]["ci"] == "failed"

    run = http.get(f"{populated.url}/ui/ci/built-pkg/{failed.id}")
    assert run.status_code == 200
    assert EVIL not in run.text
    assert "line one\n&lt;script&gt;alert(1)&lt;/script&gt;" in run.text
    raw = http.get(f"{populated.url}/ui/ci/built-pkg/{failed.id}/log")
    assert raw.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert raw.headers["X-Content-Type-Options"] == "nosniff"
    assert raw.text == f"line one\n{EVIL}\n"
    assert http.get(f"{populated.url}/ui/ci/built-pkg/{failed.id}?format=json").json()["log"] == raw.text
    for path in (f"/ui/ci/my-pkg/{failed.id}", "/ui/ci/built-pkg/999", "/ui/ci/nothing-here"):
        assert http.get(populated.url + path).status_code == 404, path
    for path in ("/ui/ci", "/ui/ci/built-pkg"):
        assert EVIL not in http.get(populated.url + path).text


def test_head_requests(populated: Mirror, http: requests.Session) -> None:
    response = http.head(f"{populated.url}/ui/project/my-pkg")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) > 0
    assert response.content == b""


def test_private_projects_need_credentials_when_reads_do(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path
) -> None:
    credentials = tmp_path / "users.txt"
    set_password(credentials, "alice", "wonderland")
    mirror = make_mirror(private_read_auth=True, credentials_file=credentials, offline=True)
    _publish_private(mirror, tmp_path, "secret-tool", "0.1")
    assert http.get(f"{mirror.url}/ui/?format=json").json()["projects"] == []
    assert http.get(f"{mirror.url}/ui/project/secret-tool").status_code == 401
    assert http.get(f"{mirror.url}/ui/badge/secret-tool.svg").status_code == 401
    auth = ("alice", "wonderland")
    assert [p["name"] for p in http.get(f"{mirror.url}/ui/?format=json", auth=auth).json()["projects"]] == [
        "secret-tool"
    ]
    assert http.get(f"{mirror.url}/ui/project/secret-tool", auth=auth).status_code == 200


def _fake_cache(mirror: Mirror, count: int, versions: int = 10) -> None:
    """``count`` projects as the cache stores them, each with ``versions`` versions of two files."""
    store = mirror.repository.store
    files = [
        DistFile(filename=f"project_00000-1.{v}{suffix}", hashes={"sha256": "0" * 64}, size=1000 + v,
                 upload_time="2024-01-01T00:00:00.000000Z", url=f"https://example.com/{v}")
        for v in range(versions) for suffix in ("-py3-none-any.whl", ".tar.gz")
    ]  # fmt: skip
    template = json.dumps(
        PageState(page=ProjectPage.build("project-00000", files), checked=time.time()).to_json()
    )
    store.pages.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        text = template.replace("project-00000", f"project-{index:05d}").replace(
            "project_00000", f"project_{index:05d}"
        )
        (store.pages / f"project-{index:05d}.json").write_text(text)
    assert store.read_page("project-04999") is not None  # type: ignore[arg-type]


@pytest.mark.slow
def test_five_thousand_projects_stay_fast(make_mirror: MirrorFactory, http: requests.Session) -> None:
    mirror = make_mirror(offline=True)
    _fake_cache(mirror, 5000)
    timings = {}
    for label, path in [
        ("home, first", "/ui/"),
        ("home", "/ui/"),
        ("filtered", "/ui/?q=project-049"),
        ("last page", "/ui/?page=100"),
        ("json", "/ui/?format=json&per_page=500"),
        ("project", "/ui/project/project-04999"),
    ]:
        started = time.perf_counter()
        response = http.get(mirror.url + path)
        timings[label] = time.perf_counter() - started
        assert response.status_code == 200
    assert http.get(f"{mirror.url}/ui/?format=json").json()["total"] == 5000
    print("timings (ms):", {label: round(seconds * 1000, 1) for label, seconds in timings.items()})
    assert timings["home"] < 0.5
    assert timings["filtered"] < 0.5
    assert timings["last page"] < 0.5
