"""Hostile input that is well-formed: numbers too large to read, private names under a mounted
upstream, a wheel whose metadata lies about its version, a flood of names asked once, token logins.

Each answer must be a deliberate one (a page without the bad link, a 400, a 401, a 403): never a
500, never a private name or file shown without credentials, never memory that grows with names.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import lzma
import re
import struct
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Config, Mirror
from nestegg_core.cli import main
from nestegg_core.cli.export import export
from nestegg_core.config.credentials import set_password
from nestegg_core.errors import NotFound
from nestegg_core.index import mirror as mirror_module
from nestegg_core.index import refresh
from nestegg_core.index.mirror import MirrorIndex
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import Fetched, FileStream
from nestegg_core.serve.compose import create_app
from nestegg_core.serve.mounts import UpstreamMounts
from nestegg_core.simple import distmeta
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage import pagefiles
from nestegg_core.storage.pagestate import PageState
from nestegg_core.storage.private import PrivateStore
from nestegg_core.storage.store import CacheStore
from nestegg_core.testing import installer_env
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex
from nestegg_core.ui import web

from .conftest import MirrorFactory, Served
from .loopback import Answer, RawUpstream, busy_workers, sha256, wait_until

USER, PASSWORD = "alice", "correct horse"
JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
#: past Python's int-string limit (4300 digits): packaging raises ValueError, not InvalidVersion
HUGE = "1" * 5000
#: a version of 1000 digits: Python reads it, no real version is that long
LONG = "1" * 1000
#: what pip 24 on CPython 3.11, Linux with glibc 2.36, x86_64 sends (compatible_only reads it)
PIP_AGENT = "pip/24.0 " + json.dumps(
    {
        "installer": {"name": "pip", "version": "24.0"},
        "python": "3.11.7",
        "implementation": {"name": "CPython", "version": "3.11.7"},
        "distro": {"name": "Debian", "libc": {"lib": "glibc", "version": "2.36"}},
        "system": {"name": "Linux", "release": "6.1.0"},
        "cpu": "x86_64",
    }
)


class Index:
    """A fake upstream whose page of ``pkg`` the test writes: real files, plus any links it likes."""

    def __init__(self, tmp: Path) -> None:
        spec = PackageSpec(name="pkg", version="1.0")
        self.files = {p.name: p.read_bytes() for p in (make_wheel(spec, tmp), make_sdist(spec, tmp))}
        self.server = RawUpstream(self.answer)
        #: extra file entries of the page (PEP 691 form), after the real files
        self.extra: list[dict[str, Any]] = []
        self.versions: list[str] | None = None
        self.html = False

    @property
    def good(self) -> list[str]:
        return sorted(self.files)

    def entries(self) -> list[dict[str, Any]]:
        real = [
            {"filename": name, "url": self.server.url(f"/files/{name}"), "hashes": {"sha256": sha256(data)}}
            for name, data in sorted(self.files.items())
        ]
        return real + self.extra

    def page(self) -> Answer:
        if self.html:
            links = "".join(
                f'<a href="{e["url"]}"'
                + (f' data-requires-python="{e["requires-python"]}"' if "requires-python" in e else "")
                + f">{e['filename'][:40]}</a>\n"
                for e in self.entries()
            )
            body = f"<!DOCTYPE html><html><body>{links}</body></html>".encode()
            return Answer(body=body, headers={"Content-Type": "text/html; charset=utf-8"})
        document: dict[str, Any] = {"meta": {"api-version": "1.1"}, "name": "pkg", "files": self.entries()}
        if self.versions is not None:
            document["versions"] = self.versions
        return Answer(body=json.dumps(document).encode(), headers={"Content-Type": JSON})

    def answer(self, _method: str, path: str) -> Answer:
        if path == "/simple/pkg/":
            return self.page()
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/files/") and name in self.files:
            return Answer(body=self.files[name], headers={"Content-Type": "application/octet-stream"})
        return Answer(status=404, body=b"not here\n")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    made = Index(tmp_path / "made")
    with made.server:
        yield made


def get(mirror: Mirror, path: str, accept: str = HTML, agent: str | None = None) -> requests.Response:
    headers = {"Accept": accept}
    if agent is not None:
        headers["User-Agent"] = agent
    with requests.Session() as session:
        session.trust_env = False
        return session.get(mirror.url + path, headers=headers, timeout=30)


def listed(mirror: Mirror, agent: str | None = None) -> tuple[list[str], list[str]]:
    """The filenames of the mirror's page of pkg in both formats (equal), and its versions."""
    answer = get(mirror, "/simple/pkg/", JSON, agent)
    assert answer.status_code == 200, answer.text
    page = answer.json()
    html = get(mirror, "/simple/pkg/", HTML, agent)
    assert html.status_code == 200, html.text
    names = sorted(f["filename"] for f in page["files"])
    assert sorted(re.findall(r'<a href="[^"]*/([^/"#]+)(?:#[^"]*)?"', html.text)) == names
    return names, page["versions"]


def assert_ui_answers(mirror: Mirror, latest: str | None) -> None:
    for path in ("/ui/", "/ui/project/pkg"):
        assert get(mirror, path).status_code == 200, path
    listing = get(mirror, "/ui/?format=json")
    assert listing.status_code == 200, listing.text
    assert [p["latest"] for p in listing.json()["projects"]] == [latest]
    project = get(mirror, "/ui/project/pkg?format=json")
    assert project.status_code == 200, project.text
    assert HUGE not in project.text


# PEP 700 versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "versions", "expected"),
    [
        # the upstream's list as it spells it, each version once, none added from the filenames
        (False, ["0.6c1", "1.0", "69.3", "0.6rc1", "69.3.0"], ["0.6c1", "1.0", "69.3"]),
        # no list (HTML, or JSON without one): the filenames' versions, each once
        (True, None, ["1.0", "0.6rc1", "69.3.0"]),
        (False, None, ["1.0", "0.6rc1", "69.3.0"]),
    ],
    ids=["json-list", "html", "json-without-list"],
)
def test_pep700_versions_are_the_upstreams_list_each_once(
    make_mirror: MirrorFactory, index: Index, html: bool, versions: list[str] | None, expected: list[str]
) -> None:
    index.html, index.versions = html, versions
    for filename in ("pkg-0.6rc1.tar.gz", "pkg-69.3.0.tar.gz", "pkg-69.3-py3-none-any.whl"):
        index.extra.append(
            {"filename": filename, "url": index.server.url(f"/files/{filename}"), "hashes": {}}
        )
    mirror = make_mirror(index_url=index.server.index_url)
    assert listed(mirror)[1] == expected
    mirror.stop()  # a new process reads the page's state back, within its TTL
    assert listed(make_mirror(index_url=index.server.index_url))[1] == expected
    assert index.server.count("/simple/pkg/") == 1


# 9: numbers too large to read ---------------------------------------------------------------


@pytest.mark.parametrize("compatible", [False, True], ids=["all", "compatible_only"])
@pytest.mark.parametrize(
    ("html", "where"),
    [(False, "versions"), (False, "filenames"), (True, "filenames")],
    ids=["json-versions", "json-filenames", "html-filenames"],
)
def test_a_huge_version_is_ignored_and_the_page_keeps_answering(
    make_mirror: MirrorFactory, index: Index, html: bool, where: str, compatible: bool
) -> None:
    agent = PIP_AGENT if compatible else None
    mirror = make_mirror(index_url=index.server.index_url, ttl=0.0, compatible_only=compatible)
    index.html = html
    if where == "versions":
        # a good page first; the TTL is over at once, and the next one lists huge versions
        assert listed(mirror, agent) == (index.good, ["1.0"])
        index.versions = ["1.0", HUGE, f"2.{HUGE}"]
    else:  # the first page asked for: there is no good one to fall back on
        for filename in (f"pkg-{HUGE}.tar.gz", f"pkg-{HUGE}-py3-none-any.whl", f"pkg-1.{HUGE}.zip"):
            url = index.server.url(f"/files/{filename}")
            index.extra.append({"filename": filename, "url": url, "hashes": {}})
    assert listed(mirror, agent) == (index.good, ["1.0"])
    assert_ui_answers(mirror, "1.0")
    wheel = next(name for name in index.good if name.endswith(".whl"))
    answer = get(mirror, f"/files/pkg/{wheel}", agent=agent)
    assert answer.status_code == 200
    assert answer.content == index.files[wheel]
    for filename in (f"pkg-{HUGE}.tar.gz", f"pkg-1.{HUGE}.zip", f"pkg-1.{HUGE}.zip.metadata"):
        assert get(mirror, f"/files/pkg/{filename}").status_code == 404


def test_huge_numbers_in_requires_python_and_wheel_tags_under_compatible_only(
    make_mirror: MirrorFactory, index: Index
) -> None:
    mirror = make_mirror(index_url=index.server.index_url, compatible_only=True)
    # Requires-Python that cannot be read: kept, as pip ignores one it cannot parse
    for spec in (f">=3.{HUGE}", f"<{HUGE}", f"==3.11.{HUGE}.*"):
        filename = f"pkg-0.{len(index.extra)}.tar.gz"
        url = index.server.url(f"/files/{filename}")
        index.extra.append({"filename": filename, "url": url, "hashes": {}, "requires-python": spec})
    unreadable = ["pkg-0.0.tar.gz", "pkg-0.1.tar.gz", "pkg-0.2.tar.gz"]
    # numbers in tags as long as a filename allows (MAX_FILENAME): no Python, no glibc has them
    digits = "1" * 180
    newer = [
        f"pkg-1.0-cp3{digits}-none-any.whl",  # a Python minor
        f"pkg-1.0-py3-none-manylinux_{digits}_17_x86_64.whl",  # a glibc major
        f"pkg-1.0-py3-none-manylinux_2_{digits}_x86_64.whl",  # a glibc minor
    ]
    index.extra += [{"filename": f, "url": index.server.url(f"/files/{f}"), "hashes": {}} for f in newer]
    for html in (False, True):
        index.html = html
        mirror.repository.mirror.refresh_all()
        assert listed(mirror, PIP_AGENT)[0] == sorted(index.good + unreadable)
        assert listed(mirror)[0] == sorted(index.good + unreadable + newer)  # another client: all


def _agent(**changes: Any) -> str:
    data = json.loads(PIP_AGENT.partition(" ")[2])
    data.update(changes)
    return "pip/24.0 " + json.dumps(data)


def _rendered_files(mirror: Mirror) -> list[Path]:
    """The renderings on disk once every answer's work is done: pip's new pages are written after
    their answers (``later``)."""
    wait_until(lambda: busy_workers(mirror._server) == 0, "the answers' work done")
    return [path for path in mirror.repository.pages.folder.rglob("*") if path.is_file()]


def test_made_up_user_agents_leave_the_rendered_pages_bounded(
    make_mirror: MirrorFactory, index: Index
) -> None:
    mirror = make_mirror(index_url=index.server.index_url, compatible_only=True)
    index.extra.append(
        {
            "filename": "pkg-0.9.tar.gz",
            "url": index.server.url("/f"),
            "hashes": {},
            "requires-python": ">=3.11.5",
        }
    )
    everything = sorted([*index.good, "pkg-0.9.tar.gz"])
    assert listed(mirror, PIP_AGENT)[0] == everything  # pip on 3.11.9 takes it: kept for every 3.11
    assert listed(mirror, _agent(python="3.10.12"))[0] == index.good
    # values no wheel tag knows make the kind of page of unknown ones: one rendering for them all
    for i in range(40):
        agent = _agent(
            cpu=f"cpu-{i}",
            implementation={"name": f"Python-{i}"},
            distro={"libc": {"lib": "glibc", "version": f"2.{1000 + i}"}},
        )
        assert listed(mirror, agent)[0] == everything
    # JSON and HTML (not gzip encoded: the client is on this machine), for 3 kinds of installer
    # (3.11, 3.10, unknown)
    assert len(_rendered_files(mirror)) == 2 * 3
    # a Python out of range is no installer the rules know: the page of every file, one rendering
    # for them all (pip's: no metadata of cached wheels)
    assert listed(mirror)[0] == everything
    assert listed(mirror, _agent(python="3.100"))[0] == everything
    before = sorted(_rendered_files(mirror))
    for python in ("9.1", "1.0", "3.11.7" + "1" * 40):
        assert listed(mirror, _agent(python=python))[0] == everything
    assert sorted(_rendered_files(mirror)) == before
    # every Python minor is a kind of installer: a page keeps the renderings of a few of them
    for minor in range(60):
        answer = get(mirror, "/simple/pkg/", JSON, _agent(python=f"3.{minor}.1"))
        assert answer.status_code == 200, answer.text
        assert get(mirror, "/simple/pkg/", HTML, _agent(python=f"3.{minor}.1")).status_code == 200
    assert len(_rendered_files(mirror)) <= 2 * (1 + pagefiles.MAX_CLIENTS)
    assert len(mirror.repository.refresher._kinds[NormalizedName("pkg")]) <= refresh.MAX_KINDS
    # and what is kept is still right
    assert listed(mirror, PIP_AGENT)[0] == everything


def test_a_page_that_cannot_be_read_never_replaces_the_good_one(
    make_mirror: MirrorFactory,
    index: Index,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mirror = make_mirror(index_url=index.server.index_url, ttl=0.0)
    assert listed(mirror) == (index.good, ["1.0"])
    for filename in index.good:  # served in the upstream's place, a page lists what is cached
        assert get(mirror, f"/files/pkg/{filename}").status_code == 200

    def unforeseen(*_args: object, **_kwargs: object) -> ProjectPage:
        raise RecursionError("a page no parser foresaw")

    # any failure to read the page, not only those the parser names: the good page stays
    monkeypatch.setattr("nestegg_core.index.upstream.parse_project_stream", unforeseen)
    index.versions = ["1.0"]  # another body: parsed (the same one would be known by its digest)
    with caplog.at_level(logging.WARNING, logger="nestegg_core.index.mirror"):
        assert listed(mirror) == (index.good, ["1.0"])
    failed = "cannot read the upstream page of 'pkg' (RecursionError: a page no parser foresaw)"
    assert caplog.messages == [
        f"{failed}; serving the cached page of 'pkg'",
        f"serving the page of 'pkg' with its cached files only (2) while the upstream failed: {failed}",
        f"{failed}; serving the cached page of 'pkg'",
    ]
    # without a page to fall back on: a 502 that says why, not a 500
    other = make_mirror(index_url=index.server.index_url, nestegg_dir=mirror.config.nestegg_dir / "other")
    answer = get(other, "/simple/pkg/")
    assert answer.status_code == 502
    assert answer.text == (
        "cannot read the upstream page of 'pkg' (RecursionError: a page no parser foresaw)\n"
    )


def test_the_ui_reads_huge_versions_an_older_cache_holds(make_mirror: MirrorFactory, index: Index) -> None:
    """A page state written before versions were checked (or by a hostile hand) still shows."""
    mirror = make_mirror(index_url=index.server.index_url)
    store = mirror.repository.store
    page = ProjectPage.build("pkg", (), ["1.0", HUGE])
    store.write_page(PageState(page=page, checked=0.0))
    assert_ui_answers(mirror, "1.0")


def test_the_ui_orders_versions_it_cannot_read_as_other_text() -> None:
    assert web._latest(["1.0", HUGE, "2.0rc1"]) == "1.0"
    assert sorted(["1.0", HUGE, "2.0"], key=web._version_key) == [HUGE, "1.0", "2.0"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/?page=\u00b2", 400),  # "²".isdigit() is true, int() refuses it
        ("/ui/?per_page=\u00b3", 400),
        (f"/ui/?page={HUGE}", 400),  # past int()'s limit on digits
        ("/ui/?page=\u0661", 400),  # an Arabic-Indic one: int() reads it, no ASCII digit though
        ("/ui/project/x?page=\u00b9", 400),
        ("/ui/ci?page=\u00b2", 400),
        (f"/ui/ci?per_page={HUGE}", 400),
        ("/ui/ci/x/\u00b2", 404),  # a run id is a path: no such page
        ("/ui/ci/x/\u00b2/log", 404),
        (f"/ui/ci/x/{HUGE}", 404),
    ],
)
def test_the_ui_answers_numbers_it_cannot_read_with_400_or_404(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session, path: str, status: int
) -> None:
    upstream.add("x", "1.0")
    mirror = make_mirror()
    assert http.get(f"{mirror.url}/simple/x/").status_code == 200
    answer = http.get(mirror.url + path)
    assert answer.status_code == status, answer.text
    assert len(answer.text) < 300  # a line naming the value, cut short


@pytest.fixture
def server(make_mirror: MirrorFactory, tmp_path: Path) -> Mirror:
    users = tmp_path / "users.txt"
    set_password(users, USER, PASSWORD)
    return make_mirror(credentials_file=users)


def upload(server: Mirror, path: Path, *, filename: str | None = None, **fields: str) -> requests.Response:
    """``path`` uploaded as twine sends it (as ``filename`` if given), with ``fields`` changed."""
    sent = {":action": "file_upload", "protocol_version": "1", "name": "up-pkg", "version": "1.0", **fields}
    with requests.Session() as session:
        session.trust_env = False
        files = {"content": (filename or path.name, path.read_bytes(), "application/octet-stream")}
        return session.post(
            f"{server.url}/legacy/", data=sent, files=files, auth=(USER, PASSWORD), timeout=30
        )


@pytest.mark.parametrize(
    ("spec", "filename", "fields", "message"),
    [
        ({}, None, {"version": HUGE}, "missing or invalid version '" + "1" * 59 + "... (5000 characters)"),
        # a filename of 5000 digits is over the form's header limit: long ones get to the version
        ({}, f"up_pkg-{LONG}-py3-none-any.whl", {}, "its version is over 256 characters"),
        ({}, f"up_pkg-{LONG}.tar.gz", {}, "its version is over 256 characters"),
        ({"requires_python": f">=3.{HUGE}"}, None, {}, "has an invalid Requires-Python '>=3.111"),
    ],
    ids=["version-field", "wheel-filename", "sdist-filename", "requires-python"],
)
def test_uploads_with_huge_numbers_are_400(
    server: Mirror,
    tmp_path: Path,
    spec: dict[str, Any],
    filename: str | None,
    fields: dict[str, str],
    message: str,
) -> None:
    made = PackageSpec(name="up-pkg", version="1.0", **spec)
    path = (make_sdist if filename and filename.endswith(".tar.gz") else make_wheel)(made, tmp_path / "dists")
    answer = upload(server, path, filename=filename, **fields)
    assert answer.status_code == 400, answer.text
    assert message in answer.text
    assert len(answer.text) < 400  # one line naming the value, not all its digits
    assert get(server, "/simple/up-pkg/").status_code == 404  # nothing published, no name made private


def test_commands_and_configs_with_huge_versions_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nest = tmp_path / "nest"
    config = tmp_path / "nestegg.yml"
    config.write_text("nestegg: {}\n")
    base = ["--config", str(config), "--cache-dir", str(nest)]
    assert main([*base, "yank", "pkg", "--version", HUGE]) == 2
    assert capsys.readouterr().err.startswith("error: no private project 'pkg'")
    PrivateStore(nest / "private").add(make_wheel(PackageSpec(name="pkg", version="1.0"), tmp_path / "d"))
    assert main([*base, "yank", "pkg", "--version", HUGE]) == 2
    assert capsys.readouterr().err == f"error: invalid version {HUGE!r}\n"
    assert main([*base, "export", str(tmp_path / "out"), "--project", f"pkg>={HUGE}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: 'pkg>={HUGE}' is not a project name or requirement")
    config.write_text(
        "nestegg: {source_builds: [{name: a, repo_type: git, repo_url: x, versions: [{version: '"
        + HUGE
        + "'}]}]}\n"
    )
    assert main([*base, "list"]) == 2
    assert capsys.readouterr().err.endswith(f"versions[0].version: {HUGE!r} is not a valid version\n")


# 11: a distribution whose metadata names another version ----------------------------------------


def with_metadata_version(path: Path, version: str, dest: Path) -> Path:
    """A copy of the wheel or sdist at ``path`` (same filename, in ``dest``) whose METADATA or
    PKG-INFO says ``version``; nothing else changes."""

    def edited(data: bytes) -> bytes:
        return re.sub(rb"(?m)^Version: .*$", f"Version: {version}".encode(), data, count=1)

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / path.name
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as copy:
            for info in source.infolist():
                data = source.read(info)
                copy.writestr(info, edited(data) if info.filename.endswith("/METADATA") else data)
        return target
    with tarfile.open(path) as original, tarfile.open(target, "w:gz") as tar_copy:
        for member in original.getmembers():
            handle = original.extractfile(member) if member.isfile() else None
            data = b"" if handle is None else handle.read()
            if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                data = edited(data)
                member.size = len(data)
            tar_copy.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return target


@pytest.mark.parametrize("make", [make_wheel, make_sdist], ids=["wheel", "sdist"])
def test_metadata_of_another_version_is_refused(server: Mirror, tmp_path: Path, make: Any) -> None:
    made = make(PackageSpec(name="up-pkg", version="1.0"), tmp_path / "dists")
    crafted = with_metadata_version(made, "2.0", tmp_path / "crafted")
    # the form names the filename's version, as a client that does not read the metadata sends it
    answer = upload(server, crafted)
    assert answer.status_code == 400, answer.text
    assert answer.text == f"{made.name!r} holds metadata of version '2.0', not '1.0' as its filename says\n"
    assert get(server, "/simple/up-pkg/").status_code == 404  # nothing published, no name made private
    # the same version spelled otherwise is the same version (packaging's equality)
    same = with_metadata_version(made, "1.0.0", tmp_path / "same")
    answer = upload(server, same)
    assert answer.status_code == 200, answer.text
    assert get(server, "/simple/up-pkg/").status_code == 200


@pytest.mark.slow
def test_twine_upload_of_a_wheel_whose_metadata_names_another_version(server: Mirror, tmp_path: Path) -> None:
    made = make_wheel(PackageSpec(name="up-pkg", version="1.0"), tmp_path / "dists")
    crafted = with_metadata_version(made, "2.0", tmp_path / "crafted")
    command = [
        sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
        "--repository-url", f"{server.url}/legacy/", "--username", USER, "--password", PASSWORD, str(crafted),
    ]  # fmt: skip
    env = installer_env(PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    env = {k: v for k, v in env.items() if not k.startswith("TWINE_")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "400" in done.stdout + done.stderr
    assert get(server, "/simple/up-pkg/").status_code == 404


# 10: private_read_auth on mounted upstreams ---------------------------------------------------


def test_read_auth_guards_private_names_under_mounted_upstreams(
    make_mirror: MirrorFactory, upstream: PrivateIndex, index: Index, tmp_path: Path
) -> None:
    users = tmp_path / "users.txt"
    set_password(users, USER, PASSWORD)
    mirror = make_mirror(
        index_url=index.server.index_url,
        credentials_file=users,
        private_read_auth=True,
        private_names=["secret-*"],
    )
    wheel = make_wheel(PackageSpec(name="hidden-thing", version="1.0"), tmp_path / "d")
    mirror.repository.private.add(wheel)
    upstream.add("public-thing", "1.0")
    # the upstream names the private project too: a mount must not answer for it anyway
    upstream.add("hidden-thing", "6.6")
    mounted = UpstreamMounts(mirror).index_url(upstream.index_url)
    assert mounted.startswith(f"{mirror.url}/upstreams/")
    metadata = f"{wheel.name}.metadata"
    base = mounted.removesuffix("simple/")
    with requests.Session() as session:
        session.trust_env = False
        for url in (
            f"{mounted}hidden-thing/",
            f"{mounted}Hidden.Thing/",  # redirected to the normalized name, once credentials are shown
            f"{mounted}secret-anything/",  # private by pattern before anything is uploaded
            f"{base}files/hidden-thing/{wheel.name}",
            f"{base}files/hidden-thing/{metadata}",
        ):
            for accept in (HTML, JSON):
                anonymous = session.get(url, headers={"Accept": accept}, allow_redirects=False, timeout=30)
                assert anonymous.status_code == 401, url
                assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
                wrong = session.get(url, headers={"Accept": accept}, auth=(USER, "wrong"), timeout=30)
                assert wrong.status_code == 401, url
        known = session.get(
            f"{mounted}hidden-thing/", headers={"Accept": JSON}, auth=(USER, PASSWORD), timeout=30
        )
        assert known.status_code == 200
        assert [f["filename"] for f in known.json()["files"]] == [wheel.name]  # the private file only
        served = session.get(f"{base}files/hidden-thing/{wheel.name}", auth=(USER, PASSWORD), timeout=30)
        assert served.content == wheel.read_bytes()
        # the public name of the mounted index needs no credentials
        public = session.get(f"{mounted}public-thing/", headers={"Accept": JSON}, timeout=30)
        assert public.status_code == 200
        # the mounted root index lists private names only to a client with credentials
        for accept in (HTML, JSON):
            anonymous = session.get(mounted, headers={"Accept": accept}, timeout=30)
            assert anonymous.status_code == 200
            assert "public-thing" in anonymous.text
            assert "hidden-thing" not in anonymous.text
            known = session.get(mounted, headers={"Accept": accept}, auth=(USER, PASSWORD), timeout=30)
            assert "hidden-thing" in known.text


# 14: memory for names asked once ----------------------------------------------------------------


class _Nothing:
    """An upstream that has no project at all, answered at once (no sockets: 7,000 names)."""

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        raise NotFound(f"project {name!r} is not on the upstream index")

    def open(self, url: str) -> FileStream:
        raise NotFound(url)


def test_names_asked_once_leave_memory_bounded_by_the_caps(tmp_path: Path) -> None:
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.invalid/simple/")
    repository = Repository(config, fetcher=_Nothing())
    app = create_app(config, repository=repository)
    mirror = repository.mirror
    mirror.max_entries = 500  # a small cap: what it holds is far from what 7,000 names would

    def ask(path: str) -> str:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "HTTP_ACCEPT": HTML,
            "wsgi.input": io.BytesIO(),
        }
        seen: list[str] = []
        body = app(environ, lambda status, _headers, _exc_info=None: seen.append(status))
        b"".join(body)
        getattr(body, "close", lambda: None)()
        return seen[0]

    def names(start: int, count: int) -> None:
        for i in range(start, start + count):
            assert ask(f"/simple/unknown-{i}/").startswith("404")
            if i % 100 == 0:  # files and metadata of names nobody has, too
                assert ask(f"/files/unknown-{i}/unknown_{i}-1.0.tar.gz").startswith("404")
                assert ask(f"/files/unknown-{i}/unknown_{i}-1.0-py3-none-any.whl.metadata").startswith("404")

    names(0, 3_000)  # past every cap a name fills (the largest: 1,024 names refreshed)
    assert len(mirror._entries) == 500
    # CPython's table of interned strings (pathlib interns each name it joins) grows once under
    # churn, to a size set by the strings alive: churned first, it is not measured
    for i in range(300_000):
        sys.intern(f"churn-{i}")
    # traced from here on, so that a structure at its cap, churned, counts as what it holds
    tracemalloc.start()
    try:
        names(3_000, 1_000)  # whatever is made once is made now
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        names(4_000, 3_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(mirror._entries) == 500
    assert len(repository.refresher._kinds) <= refresh.MAX_NAMES
    assert not repository._metadata_locks
    # without the cap of the names refreshed, these 3,000 grew it by 1.2 MB (5 KB with it)
    assert grown < 100_000, grown
    # and the disk: a note of a few bytes (a block) each, 7,000 left without the trim
    notes = list(repository.store.missing.iterdir())
    assert 0 < len(notes) <= mirror_module.MAX_MISSING_NOTES + mirror_module.TRIM_MISSING_EVERY


class _Held:
    """An upstream whose page of ``x`` is held until released; every other name is not there, or
    (``empty``) an empty page. Counts the fetches of ``x`` and how many ran at once."""

    def __init__(self, *, empty: bool = False) -> None:
        self.empty = empty
        self.started = threading.Event()
        self.release = threading.Event()
        self.fetches = 0
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        if name != "x":
            if self.empty:
                return Fetched(page=ProjectPage.build(name, ()))
            raise NotFound(f"project {name!r} is not on the upstream index")
        with self.lock:
            self.fetches += 1
            self.running += 1
            self.most = max(self.most, self.running)
        self.started.set()
        self.release.wait(30)
        with self.lock:
            self.running -= 1
        return Fetched(
            page=ProjectPage.build(name, [DistFile(filename="x-1.0.tar.gz", url="https://example.invalid/x")])
        )

    def open(self, url: str) -> FileStream:
        raise NotFound(url)


def test_a_name_being_fetched_or_waited_for_is_never_forgotten(tmp_path: Path) -> None:
    fetcher = _Held()
    index = MirrorIndex(CacheStore(tmp_path, "https://example.invalid/simple/"), fetcher, max_entries=2)
    pages: list[ProjectPage] = []

    def ask() -> None:
        pages.append(index.page(NormalizedName("x")))

    first = threading.Thread(target=ask)
    first.start()
    assert fetcher.started.wait(10)  # the first holds the lock of x, asking the upstream
    second = threading.Thread(target=ask)
    second.start()
    deadline = time.monotonic() + 10
    while index._entries["x"].users < 2:  # the second waits for that lock
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for i in range(50):  # names past the cap, each remembered as a 404: the others are forgotten
        with pytest.raises(NotFound):
            index.page(NormalizedName(f"other-{i}"))
    assert set(index._entries) == {"x", "other-49"}
    third = threading.Thread(target=ask)  # it finds the same lock, not a new one
    third.start()
    fetcher.release.set()
    for thread in (first, second, third):
        thread.join(10)
    assert len(pages) == 3
    assert (fetcher.fetches, fetcher.most) == (1, 1)


def test_empty_pages_count_against_the_pages_held(tmp_path: Path) -> None:
    fetcher = _Held(empty=True)
    index = MirrorIndex(CacheStore(tmp_path, "https://example.invalid/simple/"), fetcher, max_files=10)
    for i in range(3_000):
        assert index.page(NormalizedName(f"empty-{i}")).files == ()
    assert len(index._loaded) <= 10
    assert len(index._entries) <= index.max_entries


class _WithMetadata:
    """An upstream with one project of ``files`` wheels, each with its PEP 658 metadata."""

    def __init__(self, files: int) -> None:
        self.files = [f"meta-{n}.0-py3-none-any.whl" for n in range(files)]

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        made = [
            DistFile(
                filename=f, url=f"https://example.invalid/{f}", core_metadata={"sha256": sha256(f.encode())}
            )
            for f in self.files
        ]
        return Fetched(page=ProjectPage.build(name, made))

    def open(self, url: str) -> FileStream:
        return Served(url.rsplit("/", 1)[-1].removesuffix(".metadata").encode())


def test_metadata_fetched_once_leaves_no_lock_behind(tmp_path: Path) -> None:
    fetcher = _WithMetadata(200)
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.invalid/simple/")
    repository = Repository(config, fetcher=fetcher)
    for filename in fetcher.files:
        path = repository.open_metadata(NormalizedName("meta"), filename)
        assert path.read_bytes() == filename.encode()
    assert repository._metadata_locks == {}


def test_metadata_asked_by_many_at_once_is_fetched_once(tmp_path: Path) -> None:
    fetcher = _WithMetadata(1)
    opened: list[str] = []
    release = threading.Event()
    served = fetcher.open

    def held(url: str) -> FileStream:
        opened.append(url)
        release.wait(30)
        return served(url)

    fetcher.open = held  # type: ignore[method-assign]
    config = Config(nestegg_dir=tmp_path / "nest", index_url="https://example.invalid/simple/")
    repository = Repository(config, fetcher=fetcher)
    filename = fetcher.files[0]
    with ThreadPoolExecutor(8) as pool:
        paths = [pool.submit(repository.open_metadata, NormalizedName("meta"), filename) for _ in range(8)]
        deadline = time.monotonic() + 10
        while repository._metadata_locks.get(f"meta/{filename}", (None, 0))[1] < 8:  # all of them in
            assert time.monotonic() < deadline
            time.sleep(0.001)
        release.set()
        assert {future.result(30).read_bytes() for future in paths} == {filename.encode()}
    assert len(opened) == 1
    assert repository._metadata_locks == {}


# archives (attack round 2, findings 2 and 8) and filenames that are not ASCII -------------------


def tar_gz(members: dict[str, bytes], dest: Path, filename: str) -> Path:
    """An sdist named ``filename`` in ``dest`` holding ``members`` (name: bytes), nothing else."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest / filename, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return dest / filename


def twine_upload(server: Mirror, path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
        "--repository-url", f"{server.url}/legacy/", "--username", USER, "--password", PASSWORD, str(path),
    ]  # fmt: skip
    env = installer_env(PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    env = {k: v for k, v in env.items() if not k.startswith("TWINE_")}
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)


PKG_INFO = b"Metadata-Version: 2.1\nName: up-pkg\nVersion: 1.0\n"
NO_PKG_INFO = (
    "has no metadata: no PKG-INFO in a top-level folder, where an sdist has it (<name>-<version>/PKG-INFO)"
)
NO_VERSION = PKG_INFO.replace(b"Version: 1.0", b"")
ANOTHER_FIRST = {"other-1.0/PKG-INFO": PKG_INFO, "up_pkg-1.0/PKG-INFO": PKG_INFO.replace(b"1.0", b"6.6")}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"up_pkg-1.0/setup.py": b""}, NO_PKG_INFO),
        ({"up_pkg-1.0/src/PKG-INFO": PKG_INFO}, NO_PKG_INFO),
        ({"up_pkg-1.0/PKG-INFO": PKG_INFO.replace(b"up-pkg", b"other")}, "holds metadata of project 'other'"),
        ({"up_pkg-1.0/PKG-INFO": NO_VERSION}, "holds metadata without a Name and a Version"),
        # the one where the sdist format puts it is read, not the first in the archive
        (ANOTHER_FIRST, "holds metadata of version '6.6', not '1.0' as its filename says"),
    ],
    ids=["no-pkg-info", "nested-only", "other-name", "no-version", "elsewhere-first"],
)
def test_an_sdist_without_its_pkg_info_is_refused(
    server: Mirror, tmp_path: Path, members: dict[str, bytes], message: str
) -> None:
    path = tar_gz(members, tmp_path / "dists", "up_pkg-1.0.tar.gz")
    answer = upload(server, path)
    assert answer.status_code == 400, answer.text
    assert answer.text == f"'up_pkg-1.0.tar.gz' {message}\n"
    assert get(server, "/simple/up-pkg/").status_code == 404  # nothing published, no name made private


def test_an_sdist_of_many_members_in_xz_is_refused_at_once(server: Mirror) -> None:
    # the attack's upload: an xz stream under a .tar.gz name, of tar members and no PKG-INFO
    # (2,000,000 members took 58 s and 897 MB before it was published; 20,000 here)
    header = tarfile.TarInfo("up_pkg-1.0/x").tobuf(format=tarfile.USTAR_FORMAT)
    blob = lzma.compress(header * 20_000 + b"\0" * 1024, format=lzma.FORMAT_XZ, preset=0)
    started = time.monotonic()
    with requests.Session() as session:
        session.trust_env = False
        answer = session.post(
            f"{server.url}/legacy/",
            data={":action": "file_upload", "protocol_version": "1", "name": "up-pkg", "version": "1.0"},
            files={"content": ("up_pkg-1.0.tar.gz", blob, "application/octet-stream")},
            auth=(USER, PASSWORD),
            timeout=120,
        )
    assert answer.status_code == 400, answer.text
    assert answer.text == "'up_pkg-1.0.tar.gz' is not gzip-compressed, as a .tar.gz file must be\n"
    assert time.monotonic() - started < 5
    assert get(server, "/simple/up-pkg/").status_code == 404


def test_an_sdist_of_too_many_members_is_refused(
    server: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distmeta, "MAX_TAR_MEMBERS", 5000)
    members = {f"up_pkg-1.0/{n}": b"" for n in range(6000)} | {"up_pkg-1.0/PKG-INFO": PKG_INFO}
    answer = upload(server, tar_gz(members, tmp_path / "dists", "up_pkg-1.0.tar.gz"))
    assert answer.status_code == 400, answer.text
    assert answer.text == "'up_pkg-1.0.tar.gz' has over 5,000 members: nestegg reads no more\n"
    assert get(server, "/simple/up-pkg/").status_code == 404


def claiming_a_million_members(wheel: Path, dest: Path) -> Path:
    """A copy of ``wheel`` whose end of central directory (Zip64) claims 1,000,000 members:
    zipfile, and so pip and twine, read it as before (they go by the directory's size)."""
    data = wheel.read_bytes()
    at = data.rfind(b"PK\x05\x06")
    _, _, _, _, _, size, offset, _ = struct.unpack_from("<4s4H2LH", data, at)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 10**6, 10**6, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / wheel.name).write_bytes(data[:at] + record + locator + end)
    with zipfile.ZipFile(dest / wheel.name) as archive:
        assert archive.testzip() is None
    return dest / wheel.name


@pytest.mark.slow
def test_twine_is_told_a_wheel_of_a_million_members_is_refused(server: Mirror, tmp_path: Path) -> None:
    made = make_wheel(PackageSpec(name="up-pkg", version="1.0"), tmp_path / "dists")
    crafted = claiming_a_million_members(made, tmp_path / "crafted")
    done = twine_upload(server, crafted)
    assert done.returncode != 0
    output = " ".join((done.stdout + done.stderr).split())
    assert "400" in output
    assert "lists 1,000,000 members in a central directory" in output, output
    assert get(server, "/simple/up-pkg/").status_code == 404


def test_a_mirrored_wheel_past_the_bounds_is_served_without_metadata(
    make_mirror: MirrorFactory, index: Index, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wheel = next(name for name in index.files if name.endswith(".whl"))
    original = tmp_path / wheel
    original.write_bytes(index.files[wheel])
    crafted = claiming_a_million_members(original, tmp_path / "crafted").read_bytes()
    index.files[wheel] = crafted
    mirror = make_mirror(index_url=index.server.index_url)
    with caplog.at_level(logging.WARNING):
        answer = get(mirror, f"/files/pkg/{wheel}")
        assert answer.status_code == 200
        assert answer.content == crafted  # the wheel itself is served as the index has it
        entries = {f["filename"]: f for f in get(mirror, "/simple/pkg/", JSON).json()["files"]}
        assert entries[wheel].get("core-metadata", False) is False
        assert get(mirror, f"/files/pkg/{wheel}.metadata").status_code == 404
        result = export(mirror.config, tmp_path / "exported")
    assert [d.filename for d in result.projects[NormalizedName("pkg")] if d.core_metadata] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings  # the download's, then the export's
    assert warnings[0].startswith(f"no PEP 658 metadata for pkg/{wheel}: '{wheel}' lists 1,000,000 members")
    assert warnings[1].startswith(f"no PEP 658 metadata for {wheel}: '{wheel}' lists 1,000,000 members")


KELVIN_K, FULLWIDTH_K = "\u212a", "\uff4b"


@pytest.mark.slow
def test_a_filename_that_is_not_ascii_is_refused_at_upload(server: Mirror, tmp_path: Path) -> None:
    made = make_sdist(PackageSpec(name="k", version="1.0"), tmp_path / "dists")
    for letter in (KELVIN_K, FULLWIDTH_K):
        renamed = tmp_path / letter / f"{letter}-1.0.tar.gz"  # k once normalized (NFKC)
        renamed.parent.mkdir()
        renamed.write_bytes(made.read_bytes())
        answer = upload(server, renamed, name="k", version="1.0")
        assert answer.status_code == 400, answer.text
        assert answer.text == f"invalid distribution filename {renamed.name!r}: not printable ASCII\n"
        done = twine_upload(server, renamed)  # twine sends the name its PKG-INFO gives: k
        assert done.returncode != 0
        assert "400" in done.stdout + done.stderr
    assert get(server, "/simple/k/").status_code == 404
    assert upload(server, made, name="k", version="1.0").status_code == 200  # the ASCII one is k's


def test_an_upstream_filename_that_is_not_ascii_is_left_off(make_mirror: MirrorFactory, index: Index) -> None:
    for name in (f"{KELVIN_K}-1.0.tar.gz", f"p{FULLWIDTH_K}g-1.0.tar.gz", "pkg-1.0\u2024tar.gz"):
        index.extra.append({"filename": name, "url": index.server.url(f"/files/{name}"), "hashes": {}})
    mirror = make_mirror(index_url=index.server.index_url)
    for html in (False, True):
        index.html = html
        assert listed(mirror)[0] == index.good
    assert get(mirror, f"/files/pkg/{KELVIN_K}-1.0.tar.gz").status_code == 404
