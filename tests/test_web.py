"""The read-only web interface: what it lists, where files came from, escaping, access, speed."""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from nestegg_core import Config, Mirror
from nestegg_core.builds.runs import EnvResult, RunStore
from nestegg_core.config.config import CISettings, SourceBuild, SourceVersion, Upstream
from nestegg_core.config.credentials import set_password
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage.pagestate import PageState
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex
from nestegg_core.ui import web
from nestegg_core.ui.web import DESCRIPTION_CHARS

from .conftest import Faults, MirrorFactory, pip_download
from .loopback import refused_url

COMMIT = "0123456789abcdef0123456789abcdef01234567"
EVIL = "<script>alert(1)</script>"


def _publish_private(mirror: Mirror, tmp_path: Path, name: str, version: str) -> list[str]:
    spec = PackageSpec(name=name, version=version)
    out = tmp_path / "dists"
    paths = [make_wheel(spec, out), make_sdist(spec, out)]
    return [mirror.repository.private.add(path)[0].filename for path in paths]


#: the source build of the populated mirror
BUILT = SourceBuild(
    name="built-pkg", repo_type="git", repo_url="https://user:hunter2@example.com/built.git",  # type: ignore[arg-type]
    ci=CISettings(interval=0),
)  # fmt: skip


@pytest.fixture
def populated(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path
) -> Mirror:
    """A mirror with a cached project (one file cached), a private upload and a private source build."""
    mirror = make_mirror(source_builds=(BUILT,))
    _populate(upstream, mirror, mirror.url, http, tmp_path)
    return mirror


def _populate(
    upstream: PrivateIndex, mirror: Mirror, url: str, http: requests.Session, tmp_path: Path
) -> None:
    """What ``populated`` holds, put in ``mirror`` (reached at ``url``)."""
    upstream.add("My_Pkg", "1.0")
    upstream.add("My_Pkg", "1.1", yanked=EVIL)
    upstream.add("My_Pkg", "2.0rc1")
    assert http.get(url + "/simple/my-pkg/").status_code == 200
    assert http.get(f"{url}/files/my-pkg/my_pkg-1.0-py3-none-any.whl").status_code == 200
    _publish_private(mirror, tmp_path, "secret-tool", "0.1")
    built = _publish_private(mirror, tmp_path, "built-pkg", "1.0.0")
    state = {
        "built": {
            "1.0.0": {"ref": "v1.0.0", "commit": COMMIT, "files": built, "built_at": "2024-05-06T07:08:09Z"}
        }
    }
    (mirror.config.nestegg_dir / "builds").mkdir()
    (mirror.config.nestegg_dir / "builds" / "built-pkg.json").write_text(json.dumps(state))


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


# behind a front server ----------------------------------------------------------------------------

#: the path a front server serves the mirror under
UNDER = "/pypi"


class PrefixProxy:
    """A front server on 127.0.0.1 that serves the mirror under ``/pypi/``, the prefix taken off
    (nginx's ``location /pypi/ { proxy_pass http://mirror/; }``); any other path is its own 404."""

    def __init__(self) -> None:
        self.target = ""
        self.session = requests.Session()
        self.session.trust_env = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.forward(self)

            do_HEAD = do_GET  # noqa: N815 - the name http.server calls

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, request: BaseHTTPRequestHandler) -> None:
        if not request.path.startswith(UNDER + "/"):
            request.send_error(404, "not under the front server's /pypi/")
            return
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
        answer = self.session.request(
            request.command, self.target + request.path[len(UNDER) :], headers=headers,
            allow_redirects=False, stream=True, timeout=30,
        )  # fmt: skip
        body = answer.raw.read(decode_content=False)
        request.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.session.close()


def mounted_at(prefix: str) -> Any:
    """WSGI middleware that mounts the app at ``prefix``, as a WSGI server mounts it: the prefix
    moves from PATH_INFO to SCRIPT_NAME; any other path is a 404."""

    def wrap(app: Any) -> Any:
        def mounted(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if not path.startswith(prefix + "/"):
                start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
                return []
            body: Iterable[bytes] = app(
                {**environ, "SCRIPT_NAME": prefix, "PATH_INFO": path[len(prefix) :]}, start_response
            )
            return body

        return mounted

    return wrap


@pytest.fixture(params=["public_url", "script_name"])
def under_a_path(
    request: pytest.FixtureRequest, upstream: PrivateIndex, tmp_path: Path, http: requests.Session
) -> Iterator[tuple[Mirror, str]]:
    """A populated mirror reached at ``<origin>/pypi/``: behind a front server that takes the prefix
    off (public_url says where), or mounted there by the WSGI server (SCRIPT_NAME); and that URL."""
    config = Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url=upstream.index_url, source_builds=(BUILT,)
    )
    with contextlib.ExitStack() as stack:
        if request.param == "public_url":
            proxy = PrefixProxy()
            stack.callback(proxy.close)
            mirror = Mirror(config.with_changes(public_url=proxy.url + UNDER)).start()
            stack.callback(mirror.stop)
            proxy.target = mirror.url
            url = proxy.url + UNDER
        else:
            mirror = Mirror(config, middleware=mounted_at(UNDER)).start()
            stack.callback(mirror.stop)
            url = mirror.url + UNDER
        _populate(upstream, mirror, url, http, tmp_path)
        store = RunStore(mirror.config.nestegg_dir)
        run, _ = store.queue("built-pkg", "main", COMMIT, "poll")
        store.start(run.id)
        store.finish(run.id, outcome="passed", log="fine\n", duration=1.0, exit_code=0, envs=[])
        store.close()
        yield mirror, url


_LINK = re.compile(r'(?:href|src|action)="([^"]*)"')


def test_every_link_of_the_ui_works_under_a_path(
    under_a_path: tuple[Mirror, str], http: requests.Session, tmp_path: Path
) -> None:
    """Every link of every page the UI shows, followed from its home, answers 200 under /pypi/; and
    the index URL the UI gives pip is the one pip installs from."""
    _, url = under_a_path
    origin = urlsplit(url)
    # pages that have a pager and a form besides their links
    todo = [f"{url}/ui/", f"{url}/ui/?per_page=1&q=pkg", f"{url}/ui/project/my-pkg?per_page=1&page=2"]
    seen: set[str] = set()
    while todo and len(seen) < 200:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        answer = http.get(page, allow_redirects=False)
        assert answer.status_code == 200, page
        if not answer.headers["Content-Type"].startswith("text/html"):
            continue
        for link in _LINK.findall(answer.text):
            target = urljoin(page, html.unescape(link))
            if target.startswith("data:"):
                continue
            parts = urlsplit(target)
            assert (parts.netloc, parts.path[: len(UNDER) + 1]) == (origin.netloc, UNDER + "/"), (page, link)
            todo.append(target.partition("#")[0])
    visited = {urlsplit(page).path for page in seen}
    assert {f"{UNDER}/ui/project/built-pkg", f"{UNDER}/ui/ci/built-pkg", f"{UNDER}/ui/badge/built-pkg.svg",
            f"{UNDER}/ui/ci/built-pkg/1/log", f"{UNDER}/ui/project/my-pkg"} <= visited  # fmt: skip
    home = http.get(f"{url}/ui/").text
    (index_url,) = re.findall(r"Use <code>([^<]*)</code> as the index URL", home)
    assert index_url == f"{url}/simple/"
    assert f"pip install --index-url {index_url} my-pkg" in http.get(f"{url}/ui/project/my-pkg").text
    pip_download(index_url, tmp_path / "got", "my-pkg==1.0")
    assert (tmp_path / "got" / "my_pkg-1.0-py3-none-any.whl").is_file()


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


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/ui/ci/", "/ui/ci"),
        ("/ui/project/my-pkg/?here=1", "/ui/project/my-pkg?here=1"),
        ("/ui/ci/built-pkg/1/", "/ui/ci/built-pkg/1"),
        ("/ui/badge/built-pkg.svg/", "/ui/badge/built-pkg.svg"),
    ],
)
def test_a_page_with_a_slash_at_its_end_moved_to_the_page(
    populated: Mirror, http: requests.Session, path: str, location: str
) -> None:
    """/ui/ci/ was a 404 saying "'' is not a project name"."""
    moved = http.get(populated.url + path, allow_redirects=False)
    assert (moved.status_code, moved.headers["Location"]) == (302, location)


LONG = "a" * 60_000


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (f"/ui/project/{LONG}", 404, f"'{'a' * 77}...' is not a project name"),
        (f"/ui/ci/{LONG}", 404, f"'{'a' * 77}...' is not a project name"),
        (f"/ui/ci/{LONG}/1", 404, f"no CI run #1 of '{'a' * 77}...'"),
        (f"/ui/badge/{LONG}.svg", 404, f"'{'a' * 77}...' is not a project name"),
        (f"/ui/?format={LONG}", 400, f"format: expected 'html' or 'json', got '{'a' * 77}...'"),
        (f"/ui/?kind={LONG}", 400, f"kind: expected 'private' or 'mirror', got '{'a' * 77}...'"),
        ("/ui/?" + "&".join(["q=x"] * 65), 400, "too many query fields: a page takes 64 at most"),
    ],
)
def test_what_a_client_sends_is_not_echoed_whole(
    mirror: Mirror, http: requests.Session, path: str, status: int, message: str
) -> None:
    """A 60,000-letter name came back whole in the error; 20,000 query fields took 0.2 s to echo
    in the page's links."""
    answer = http.get(mirror.url + path)
    assert (answer.status_code, answer.text.strip()) == (status, message)


@pytest.mark.parametrize(
    ("path", "said", "previous"),
    [
        ("/ui/?page=9", "No project on page 9: there is one.", "/ui/?page=1"),
        ("/ui/?per_page=2&page=7", "No project on page 7: the last is page 2.", "/ui/?page=2&amp;per_page=2"),
        ("/ui/project/my-pkg?page=5", "No version on page 5: there is one.", "/ui/project/my-pkg?page=1"),
        ("/ui/ci?page=3", "No run on page 3: there is one.", "/ui/ci?page=1"),
        ("/ui/ci/built-pkg?page=3", "No run on page 3: there is one.", "/ui/ci/built-pkg?page=1"),
    ],
)
def test_a_page_past_the_last_says_so_and_leads_to_the_last(
    populated: Mirror, http: requests.Session, path: str, said: str, previous: str
) -> None:
    """It said "No project yet: install something." of a nest with projects, "No files." of a
    project with files, and had no link back."""
    store = RunStore(populated.config.nestegg_dir)
    store.queue("built-pkg", "main", COMMIT, "poll")
    store.close()
    page = http.get(populated.url + path).text
    assert f'<p class="empty">{said}</p>' in page
    assert f'<a rel="prev" href="{previous}">' in page


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
    # a state with a password in it (written by hand, or by an older release): shown masked
    error = f"no tag or branch {EVIL!r} in 'https://u:secret@example.com/r.git'"
    state = {
        "checked_at": 1714979289.0,
        "fetch_error": "cannot fetch 'https://u:secret@example.com/r.git': fatal: gone",
        "failed": {"2.0": {"error": error}, "0.9": {"error": "an old failure"}},
    }
    (mirror.config.nestegg_dir / "builds").mkdir()
    (mirror.config.nestegg_dir / "builds" / "built-pkg.json").write_text(json.dumps(state))
    answer = http.get(f"{mirror.url}/ui/project/built-pkg?format=json")
    assert "secret" not in answer.text
    assert answer.json()["source_build"]["status"] == {
        "fetched_at": "2024-05-06T07:08:09.000000Z",
        "fetch_error": "cannot fetch 'https://u:***@example.com/r.git': fatal: gone",
        "failed": {"2.0": error.replace(":secret@", ":***@")},
    }
    html = http.get(f"{mirror.url}/ui/project/built-pkg").text
    assert "secret" not in html
    assert "cannot fetch &#x27;https://u:***@example.com/r.git&#x27;: fatal: gone" in html
    assert "&lt;script&gt;" in html
    assert EVIL not in html
    assert "an old failure" not in html


def test_project_page_shows_the_long_description_escaped_and_cut(
    mirror: Mirror, http: requests.Session, tmp_path: Path
) -> None:
    long = f"Usage\n=====\n\n    {EVIL} & more\n" + "x" * (DESCRIPTION_CHARS + 1234)
    spec = PackageSpec(name="described", version="1.0", description=long)
    mirror.repository.private.add(make_wheel(spec, tmp_path / "dists"))
    page = http.get(f"{mirror.url}/ui/project/described").text
    shown = re.search(r'<pre class="description">(.*?)</pre>', page, re.DOTALL)
    assert shown is not None
    assert shown[1] == html.escape(long[:DESCRIPTION_CHARS])  # as written: not markup, lines kept
    assert EVIL not in page
    cut = len(long) - DESCRIPTION_CHARS
    assert f"Cut here: {cut:,} more characters." in page
    (whole,) = re.findall(r'href="([^"]*)">the JSON API', page)
    assert http.get(mirror.url + whole).json()["info"]["description"].rstrip("\n") == long
    data = http.get(f"{mirror.url}/ui/project/described?format=json").json()["description"]
    assert (data["version"], data["text"], data["cut"]) == ("1.0", long[:DESCRIPTION_CHARS], cut)


@pytest.mark.parametrize("routed", [False, True])
def test_a_mirrored_projects_description_is_of_the_newest_version_held(
    upstream: PrivateIndex, make_mirror: MirrorFactory, http: requests.Session, routed: bool
) -> None:
    # routed: the project comes from an index of ``upstreams``, whose cache is its own
    route = {"index_url": refused_url(), "upstreams": (Upstream(url=upstream.index_url, projects=("told",)),)}
    mirror = make_mirror(**(route if routed else {}))
    upstream.add("told", "1.0", description="The first one.", sdist=False)
    upstream.add("told", "2.0", description="The second one.", sdist=False)
    assert http.get(mirror.index_url + "told/").status_code == 200
    assert "<pre" not in http.get(f"{mirror.url}/ui/project/told").text  # nothing held: none shown
    assert http.get(f"{mirror.url}/files/told/told-1.0-py3-none-any.whl").status_code == 200
    page = http.get(f"{mirror.url}/ui/project/told").text
    assert '<h2>Description of 1.0</h2><pre class="description">The first one.' in page
    assert "Cut here" not in page
    assert http.get(f"{mirror.url}/files/told/told-2.0-py3-none-any.whl").status_code == 200
    assert "Description of 2.0" in http.get(f"{mirror.url}/ui/project/told").text


def test_project_pages_paginate_versions(populated: Mirror, http: requests.Session) -> None:
    data = http.get(f"{populated.url}/ui/project/my-pkg?format=json&per_page=1&page=3").json()
    assert (data["pages"], [v["version"] for v in data["versions"]]) == (3, ["1.0"])


def test_a_project_page_shows_so_many_files_in_all(
    populated: Mirror, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 versions of 100 files each made 14 MB of HTML in 2 s, for any client that asked for
    per_page=500: past ``FILES_PER_PAGE`` the versions only say how many files they have."""
    monkeypatch.setattr(web, "FILES_PER_PAGE", 3)
    data = http.get(f"{populated.url}/ui/project/my-pkg?format=json").json()
    assert [(v["version"], len(v["files"]), v["more_files"]) for v in data["versions"]] == [
        ("2.0rc1", 2, 0),
        ("1.1", 1, 1),
        ("1.0", 0, 2),
    ]
    page = http.get(f"{populated.url}/ui/project/my-pkg").text
    assert page.count('<td class="file">') == 3
    assert "Files are left out: fewer versions a page (per_page) show more of each." in page
    assert "Files are left out" not in http.get(f"{populated.url}/ui/project/my-pkg?per_page=1").text


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


def test_a_private_projects_ci_run_asks_for_credentials_before_it_says_whether_it_exists(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path
) -> None:
    credentials = tmp_path / "users.txt"
    set_password(credentials, "alice", "wonderland")
    mirror = make_mirror(private_read_auth=True, credentials_file=credentials, offline=True)
    _publish_private(mirror, tmp_path, "secret-tool", "0.1")
    store = RunStore(mirror.config.nestegg_dir)
    secret, _ = store.queue("secret-tool", "main", COMMIT, "poll")
    public, _ = store.queue("open-tool", "main", COMMIT, "poll")
    for run in (secret, public):
        store.start(run.id)
        store.finish(run.id, outcome="passed", log="the log\n", duration=1.0, exit_code=0)
    store.close()
    auth = ("alice", "wonderland")
    # a run of the project, none, another project's, a name written otherwise: all alike
    for path in (f"{secret.id}", f"{secret.id}/log", "999", "999/log", f"{public.id}"):
        for name in ("secret-tool", "Secret_Tool"):
            anonymous = http.get(f"{mirror.url}/ui/ci/{name}/{path}")
            assert anonymous.status_code == 401, path
            assert "WWW-Authenticate" in anonymous.headers
            assert http.get(f"{mirror.url}/ui/ci/{name}/{path}", auth=("alice", "wrong")).status_code == 401
    assert http.get(f"{mirror.url}/ui/ci/secret-tool/{secret.id}/log", auth=auth).text == "the log\n"
    for path in ("999", f"{public.id}"):
        assert http.get(f"{mirror.url}/ui/ci/secret-tool/{path}", auth=auth).status_code == 404
    assert http.get(f"{mirror.url}/ui/ci/open-tool/{public.id}").status_code == 200
    assert http.get(f"{mirror.url}/ui/ci/open-tool/999").status_code == 404


def test_the_ci_list_neither_shows_nor_counts_a_private_projects_runs_without_credentials(
    make_mirror: MirrorFactory, http: requests.Session, tmp_path: Path
) -> None:
    credentials = tmp_path / "users.txt"
    set_password(credentials, "alice", "wonderland")
    mirror = make_mirror(private_read_auth=True, credentials_file=credentials, offline=True)
    _publish_private(mirror, tmp_path, "secret-tool", "0.1")
    store = RunStore(mirror.config.nestegg_dir)
    opened = [store.queue("open-tool", f"ref-{n}", COMMIT, "poll")[0].id for n in range(3)]
    for n in range(3):
        store.queue("secret-tool", f"ref-{n}", COMMIT, "poll")
    store.close()
    anonymous = http.get(f"{mirror.url}/ui/ci?format=json&per_page=2").json()
    assert (anonymous["total"], anonymous["pages"]) == (3, 2)
    assert [run["id"] for run in anonymous["runs"]] == opened[::-1][:2]  # a page of two, full
    assert "secret-tool" not in http.get(f"{mirror.url}/ui/ci").text
    allowed = http.get(f"{mirror.url}/ui/ci?format=json", auth=("alice", "wonderland")).json()
    assert allowed["total"] == len(allowed["runs"]) == 6


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
