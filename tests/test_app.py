"""HTTP behaviour of the Simple API and of files, against a real mirror of a fake upstream."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror
from nestegg_core.errors import MAX_MESSAGE
from nestegg_core.http.answers import MOUNT, location
from nestegg_core.http.app import base_url, same_machine
from nestegg_core.index import later, repository
from nestegg_core.index.guesses import MAX_MISSES
from nestegg_core.index.repository import Rendered
from nestegg_core.serve.mounts import UpstreamMounts
from nestegg_core.simple import clients
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage import private
from nestegg_core.storage.pagefiles import MAX_CLIENTS
from nestegg_core.storage.pagestate import PageState
from nestegg_core.storage.store import SETTLE_NS, CacheStore, PageStamp
from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory, pip_download
from .loopback import wait_until

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def pkg(upstream: PrivateIndex) -> list[str]:
    records = upstream.add("My_Pkg", "1.0", requires_python=">=3.8", payload_size=300_000)
    upstream.add("My_Pkg", "0.9", yanked="use 1.0")
    return [r.filename for r in records]


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple", "/simple/"),
        ("/simple/My_Pkg/", "/simple/my-pkg/"),
        ("/simple/my.pkg/", "/simple/my-pkg/"),
        ("/simple/my-pkg", "/simple/my-pkg/"),
        ("/simple/MY--PKG", "/simple/my-pkg/"),
    ],
)
def test_canonical_redirects(mirror: Mirror, http: requests.Session, path: str, location: str) -> None:
    response = http.get(mirror.url + path, allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"] == location


PROXY = "http://proxy.example.com/pypi"  # a front server that serves the mirror under /pypi/


@pytest.mark.parametrize(
    ("public_url", "path", "location"),
    [
        (None, "/simple/My_Pkg/?format=json", "/simple/my-pkg/?format=json"),
        (None, "/pypi/My_Pkg/json", "/pypi/my-pkg/json"),
        (PROXY, "/simple", "/pypi/simple/"),
        (PROXY, "/simple/Alpha/", "/pypi/simple/alpha/"),
        (PROXY, "/simple/alpha", "/pypi/simple/alpha/"),
        (PROXY, "/simple/Foo_Bar/?format=x&q=a%20b", "/pypi/simple/foo-bar/?format=x&q=a%20b"),
        (PROXY, "/pypi/Alpha/json", "/pypi/pypi/alpha/json"),
        (PROXY, "/pypi/Alpha/1.0/json?x=1", "/pypi/pypi/alpha/1.0/json?x=1"),
        (PROXY + "/", "/simple/Alpha/", "/pypi/simple/alpha/"),
        ("https://proxy.example.com", "/simple/Alpha/", "/simple/alpha/"),
    ],
)
def test_redirects_stay_under_the_public_urls_path_with_their_query(
    make_mirror: MirrorFactory, http: requests.Session, public_url: str | None, path: str, location: str
) -> None:
    mirror = make_mirror(public_url=public_url and public_url.rstrip("/"))
    moved = http.get(mirror.url + path, allow_redirects=False)
    assert (moved.status_code, moved.headers["Location"]) == (301, location)
    # a mounted index's own, under its mount
    mounted = UpstreamMounts(mirror).index_url("http://127.0.0.1:9/other/simple/")
    mount = mounted.removeprefix(mirror.url).removesuffix("/simple/")
    moved = http.get(mounted.removesuffix("/simple/") + path, allow_redirects=False)
    prefix = urlsplit(public_url or "").path.rstrip("/")
    assert moved.headers["Location"] == prefix + mount + location.removeprefix(prefix)


@pytest.mark.parametrize(
    ("environ", "public_url", "path", "expected"),
    [
        ({}, None, "/simple/", "/simple/"),
        ({"SCRIPT_NAME": "/mirror/"}, None, "/simple/a/", "/mirror/simple/a/"),
        ({"SCRIPT_NAME": "/a b"}, None, "/simple/a/", "/a%20b/simple/a/"),
        # the bytes of /café as PEP 3333 gives them (read as latin-1), escaped as they came
        ({"SCRIPT_NAME": "/caf\xc3\xa9"}, None, "/simple/a/", "/caf%C3%A9/simple/a/"),
        ({"SCRIPT_NAME": "/mirror"}, "https://example.com/pypi", "/simple/a/", "/pypi/simple/a/"),
        ({"SCRIPT_NAME": "/upstreams/ab", MOUNT: "/upstreams/ab"}, None, "/ui/", "/upstreams/ab/ui/"),
        ({"SCRIPT_NAME": "/upstreams/ab", MOUNT: "/upstreams/ab"}, "https://example.com/pypi", "/ui/",
         "/pypi/upstreams/ab/ui/"),
        ({}, "https://example.com", "/ui/", "/ui/"),
        # a public URL's path escaped as a URL's, once: a Location header is latin-1
        ({}, "https://example.com/日本", "/ui/", "/%E6%97%A5%E6%9C%AC/ui/"),
        ({}, "https://example.com/café/", "/ui/", "/caf%C3%A9/ui/"),
        ({}, "https://example.com/a%20b", "/ui/", "/a%20b/ui/"),
        ({"QUERY_STRING": "q=a%20b&page=2"}, None, "/ui/", "/ui/?q=a%20b&page=2"),
        ({"QUERY_STRING": 'q="<x>"\r\n'}, None, "/ui/", "/ui/?q=%22%3Cx%3E%22%0D%0A"),
    ],
)  # fmt: skip
def test_location(environ: dict[str, str], public_url: str | None, path: str, expected: str) -> None:
    assert location(environ, path, public_url) == expected


@pytest.mark.parametrize(
    ("remote_addr", "host", "public_url", "same"),
    [
        ("127.0.0.1", "127.0.0.1:7654", None, True),  # a tox run's mirror
        ("127.0.0.1", "localhost:7654", None, True),
        ("127.0.0.1", "LocalHost", None, True),
        ("::1", "[::1]:7654", None, True),
        ("127.0.0.2", "127.0.0.5:80", None, True),
        # a front server on this machine that passes the Host on (as the README's nginx does)
        ("127.0.0.1", "pypi.example.com", None, False),
        ("127.0.0.1", "127.0.0.1:7654", "https://example.com/pypi", False),  # behind a proxy
        ("10.0.0.7", "127.0.0.1:7654", None, False),  # another machine, whatever it says
        ("10.0.0.7", "localhost", None, False),
        ("", "127.0.0.1:7654", None, False),  # a server that gives no address
        ("127.0.0.1", "", None, False),
        ("127.0.0.1", "[::1", None, False),
        ("127.0.0.1", "localhost.example.com", None, False),
    ],
)
def test_same_machine(remote_addr: str, host: str, public_url: str | None, same: bool) -> None:
    assert same_machine({"REMOTE_ADDR": remote_addr, "HTTP_HOST": host}, public_url) is same


def test_a_client_on_this_machine_gets_pages_as_they_are(
    mirror: Mirror, http: requests.Session, pkg: list[str]
) -> None:
    """pip and uv accept gzip, which over loopback costs both ends more than the bytes: a page
    is sent plain, and only that rendering is kept."""
    url = mirror.index_url + "my-pkg/"
    for _ in range(2):  # rendered, then as kept
        answer = http.get(url, headers={"Accept": JSON, "Accept-Encoding": "gzip, deflate"}, stream=True)
        raw = answer.raw.read(decode_content=False)
        assert "Content-Encoding" not in answer.headers
        assert {f["filename"] for f in json.loads(raw)["files"]} >= set(pkg)
    [kept] = rendering_files(mirror, "my-pkg")
    assert not kept.endswith(".gz")


@pytest.mark.usefixtures("pkg")
def test_project_page_negotiation_and_caching_headers(mirror: Mirror, http: requests.Session) -> None:
    url = mirror.index_url + "my-pkg/"
    html = http.get(url)
    assert html.status_code == 200
    assert html.headers["Content-Type"] == "text/html; charset=utf-8"
    assert html.headers["Vary"] == "Accept, Accept-Encoding, User-Agent"
    assert "Cache-Control" in html.headers
    etag = html.headers["ETag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    data = http.get(url, headers={"Accept": JSON}).json()
    assert data["meta"]["api-version"] == "1.1"
    assert data["versions"] == ["0.9", "1.0"]
    # absolute, from the Host the client reached: pip reads those a third faster than relative ones
    assert all(f["url"].startswith(mirror.url + "/files/my-pkg/") for f in data["files"])
    assert all(f["url"].rsplit("/", 1)[1] == f["filename"] for f in data["files"])
    assert {f["filename"]: f.get("yanked") for f in data["files"]}["my_pkg-0.9.tar.gz"] == "use 1.0"
    again = http.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert http.get(url, headers={"Accept": "image/png"}).status_code == 406
    head = http.head(url, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["Content-Length"]) == len(html.content)


@pytest.mark.usefixtures("pkg")
@pytest.mark.parametrize(
    ("accept_encoding", "encoded"),
    [
        ("gzip, deflate", True),  # pip's, through requests
        ("gzip, deflate, br, zstd", True),  # uv's
        ("x-gzip", True),
        ("br, *;q=0.5", True),
        ("identity", False),
        ("deflate", False),
        ("gzip;q=0, *", False),
        ("GZIP;q=0.001", True),
    ],
)
@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("accept", [JSON, "text/html"])
@pytest.mark.parametrize("host", ["pypi.example.com", "localhost"])
def test_pages_are_gzip_encoded_for_clients_that_accept_it_across_a_network(
    make_mirror: MirrorFactory,
    http: requests.Session,
    tmp_path: Path,
    host: str,
    accept: str,
    private: bool,
    accept_encoding: str,
    encoded: bool,
) -> None:
    """A client that asked for the mirror by a name of another machine (a front server passed its
    Host on) gets gzip if it accepts it; one on this machine never does (``same_machine``)."""
    mirror = make_mirror()
    http.headers["Host"] = f"{host}:{mirror.port}"
    encoded = encoded and host != "localhost"
    name = "my-pkg"
    if private:  # its page is rendered in memory, never saved
        name = "mine"
        mirror.repository.private.add(make_wheel(PackageSpec(name=name, version="1.0"), tmp_path))
    url = f"{mirror.index_url}{name}/"
    plain = http.get(url, headers={"Accept": accept, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    for _ in range(2):  # as rendered, then as kept
        response = http.get(url, headers={"Accept": accept, "Accept-Encoding": accept_encoding}, stream=True)
        raw = response.raw.read(decode_content=False)
        assert response.headers.get("Content-Encoding") == ("gzip" if encoded else None)
        assert response.headers["Vary"] == "Accept, Accept-Encoding, User-Agent"
        assert int(response.headers["Content-Length"]) == len(raw)
        assert (gzip.decompress(raw) if encoded else raw) == plain.content
        # each encoding is a representation of its own, with its own validator
        assert (response.headers["ETag"] == plain.headers["ETag"]) is not encoded
        again = http.get(
            url,
            headers={
                "Accept": accept,
                "Accept-Encoding": accept_encoding,
                "If-None-Match": response.headers["ETag"],
            },
        )
        assert again.status_code == 304


def test_unknown_project_is_404_not_an_empty_page(mirror: Mirror, http: requests.Session) -> None:
    response = http.get(mirror.index_url + "no-such-thing/")
    assert response.status_code == 404
    assert "no-such-thing" in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/files/my-pkg/..%2F..%2Fetc%2Fpasswd",
        "/files/my-pkg/../../pages/x",
        "/files/../mirror/pages/my-pkg.json",
        "/files/my-pkg/.hidden",
        "/files/My_Pkg/my_pkg-1.0.tar.gz",
        "/files/my-pkg//etc/passwd",
        "/simple/../files/",
        "/simple/%2e%2e/",
        "/files/my-pkg/%00",
        "/simple/" + "a" * 300 + "/",
        "/simple/caf\u00e9/",  # the server refuses a raw non-ASCII URI (400)
        "/simple/caf%C3%A9/",
        "/simple/%C5%BF/",  # the long s: a letter to a case-blind regex, not to the name rules
        "/nothing/here",
    ],
)
@pytest.mark.usefixtures("pkg")
def test_hostile_paths_are_404(mirror: Mirror, path: str) -> None:
    # clients would normalize dots away and refuse raw UTF-8: send the bytes ourselves
    status, body = raw_get(mirror.port, path.encode("utf-8"))
    assert status in (400, 404, 301), body
    assert b"root:" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/simple/" + "a" * 60_000 + "/",
        "/files/" + "a" * 60_000 + "/a-1.0.tar.gz",
        "/files/my-pkg/" + "a" * 60_000 + ".whl",
        "/pypi/" + "a" * 60_000 + "/json",
        "/" + "a" * 60_000,
    ],
)
def test_an_error_shows_a_bounded_part_of_what_the_client_sent(
    mirror: Mirror, http: requests.Session, path: str
) -> None:
    """A 60,000-letter name came back whole in the 404 of any page but the web UI's."""
    response = http.get(mirror.url + path)
    assert 400 <= response.status_code < 500
    assert len(response.content) <= MAX_MESSAGE + 1
    assert "aaaa" in response.text  # the value is named, cut
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def raw_get(port: int, path: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_files_head_range_and_hash(mirror: Mirror, http: requests.Session, pkg: list[str]) -> None:
    wheel = pkg[0]
    page = http.get(mirror.index_url + "my-pkg/", headers={"Accept": JSON}).json()
    entry = next(f for f in page["files"] if f["filename"] == wheel)
    url = urljoin(mirror.index_url + "my-pkg/", entry["url"])
    # the first request is a range on an uncached file: served while it downloads
    first = http.get(url, headers={"Range": "bytes=-100"})
    assert first.status_code == 206
    assert len(first.content) == 100
    assert first.headers["Content-Range"].endswith(f"/{entry['size']}")
    full = http.get(url)
    assert full.status_code == 200
    assert "Content-Encoding" not in full.headers
    assert full.headers["Accept-Ranges"] == "bytes"
    assert int(full.headers["Content-Length"]) == entry["size"] == len(full.content)
    assert hashlib.sha256(full.content).hexdigest() == entry["hashes"]["sha256"]
    assert first.content == full.content[-100:]
    head = http.head(url)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(entry["size"])
    assert head.content == b""
    for header, status, body in [
        ("bytes=0-9", 206, full.content[:10]),
        ("bytes=10-", 206, full.content[10:]),
        ("bytes=5-5", 206, full.content[5:6]),
        ("bytes=0-999999999", 206, full.content),
        ("bytes=0-1,5-6", 200, full.content),  # several ranges: the whole file
        ("lines=1-2", 200, full.content),
        (f"bytes={entry['size']}-", 416, None),
    ]:
        response = http.get(url, headers={"Range": header})
        assert response.status_code == status, header
        if body is not None:
            assert response.content == body, header
        else:
            assert response.headers["Content-Range"] == f"bytes */{entry['size']}"


def test_metadata_file_is_the_wheels_metadata(mirror: Mirror, http: requests.Session, pkg: list[str]) -> None:
    wheel = pkg[0]
    page = http.get(mirror.index_url + "my-pkg/", headers={"Accept": JSON}).json()
    entry = next(f for f in page["files"] if f["filename"] == wheel)
    digest = entry["core-metadata"]["sha256"]
    metadata = http.get(mirror.url + f"/files/my-pkg/{wheel}.metadata")
    assert metadata.status_code == 200
    assert "Content-Encoding" not in metadata.headers
    assert hashlib.sha256(metadata.content).hexdigest() == digest
    assert b"Name: My_Pkg" in metadata.content or b"Name: my-pkg" in metadata.content.lower()
    sdist = pkg[1]
    assert http.get(mirror.url + f"/files/my-pkg/{sdist}.metadata").status_code == 404


@pytest.mark.usefixtures("pkg")
def test_root_lists_known_projects_only(mirror: Mirror, http: requests.Session) -> None:
    assert http.get(mirror.index_url, headers={"Accept": JSON}).json()["projects"] == []
    http.get(mirror.index_url + "my-pkg/")
    assert http.get(mirror.index_url, headers={"Accept": JSON}).json()["projects"] == [{"name": "my-pkg"}]
    assert '<a href="my-pkg/">' in http.get(mirror.index_url).text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/simple/", "GET, HEAD"),
        ("OPTIONS", "/ui/", "GET, HEAD"),
        ("PUT", "/ui/project/my-pkg", "GET, HEAD"),
        ("POST", "/ui/", "GET, HEAD"),
        ("POST", "/simple/my-pkg/", "GET, HEAD"),
        ("PUT", "/legacy/", "GET, HEAD, POST"),
        ("PATCH", "/", "GET, HEAD, POST"),
    ],
)
def test_a_method_not_allowed_says_which_are(
    mirror: Mirror, http: requests.Session, method: str, path: str, allow: str
) -> None:
    """A 405 must say what is allowed (RFC 9110): it said nothing."""
    answer = http.request(method, mirror.url + path)
    assert (answer.status_code, answer.headers.get("Allow")) == (405, allow)


def test_health_and_methods(mirror: Mirror, http: requests.Session) -> None:
    assert http.get(mirror.url + "/health").json() == {"status": "ok"}
    assert http.delete(mirror.index_url).status_code == 405
    assert http.get(mirror.url + "/").status_code == 200


_SERVER = {"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "7654", "wsgi.url_scheme": "http"}


@pytest.mark.parametrize(
    ("environ", "public_url", "expected"),
    [
        ({"HTTP_HOST": "127.0.0.1:7654"}, None, "http://127.0.0.1:7654"),
        ({"HTTP_HOST": "Mirror.Example.com"}, None, "http://mirror.example.com"),
        ({"HTTP_HOST": "[::1]:8080"}, None, "http://[::1]:8080"),
        ({"HTTP_HOST": "x.example.com", "wsgi.url_scheme": "https"}, None, "https://x.example.com"),
        ({"HTTP_HOST": "x.example.com", "SCRIPT_NAME": "/pypi/"}, None, "http://x.example.com/pypi"),
        ({"HTTP_HOST": "x.example.com", "SCRIPT_NAME": "/caf\xc3\xa9"}, None, "http://x.example.com/caf%C3%A9"),
        ({"HTTP_HOST": "x.example.com", "SCRIPT_NAME": "/upstreams/ab", MOUNT: "/upstreams/ab"}, None,
         "http://x.example.com/upstreams/ab"),
        # no Host, or one that is no host: the server's own name and port
        ({}, None, "http://127.0.0.1:7654"),
        ({"HTTP_HOST": "evil.example.com/x?"}, None, "http://127.0.0.1:7654"),
        ({"HTTP_HOST": 'a"><script>'}, None, "http://127.0.0.1:7654"),
        ({"HTTP_HOST": "a b"}, None, "http://127.0.0.1:7654"),
        ({"HTTP_HOST": "x:123456"}, None, "http://127.0.0.1:7654"),
        # behind a proxy: the configured URL, whatever the Host or forwarded headers say
        ({"HTTP_HOST": "10.0.0.5:8000", "HTTP_X_FORWARDED_HOST": "evil.example.com"},
         "https://example.com/pypi", "https://example.com/pypi"),
        ({"HTTP_HOST": "10.0.0.5:8000", MOUNT: "/upstreams/ab"}, "https://example.com",
         "https://example.com/upstreams/ab"),
    ],
)  # fmt: skip
def test_base_url(environ: dict[str, str], public_url: str | None, expected: str) -> None:
    assert base_url({**_SERVER, **environ}, public_url) == expected


@pytest.mark.usefixtures("pkg")
@pytest.mark.parametrize("accept", [JSON, "text/html"])
def test_file_urls_follow_the_host_each_client_reached(
    mirror: Mirror, http: requests.Session, accept: str
) -> None:
    url = mirror.index_url + "my-pkg/"
    port = mirror.url.rsplit(":", 1)[1]
    pages = {}
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"127.0.0.1:{port}"):
        answer = http.get(url, headers={"Accept": accept, "Host": host})
        assert answer.status_code == 200
        assert f"http://{host}/files/my-pkg/my_pkg-1.0-py3-none-any.whl" in answer.text
        other = "localhost" if host.startswith("127") else "127.0.0.1"
        assert f"{other}:{port}" not in answer.text
        pages[host] = answer
    # each kept apart: another Host never gets the first one's URLs, nor its ETag
    assert pages[f"127.0.0.1:{port}"].headers["ETag"] != pages[f"localhost:{port}"].headers["ETag"]
    wheel = http.get(f"http://localhost:{port}/files/my-pkg/my_pkg-1.0-py3-none-any.whl")
    assert wheel.status_code == 200


@pytest.mark.usefixtures("pkg")
def test_a_public_url_starts_the_file_urls_of_every_page(
    make_mirror: MirrorFactory, upstream: PrivateIndex, http: requests.Session
) -> None:
    # the mirror's own upstream is another (unreachable) index: the fake one is mounted
    mirror = make_mirror(public_url="https://example.com/pypi", index_url="http://127.0.0.1:9/simple/")
    mounted = UpstreamMounts(mirror).index_url(upstream.index_url)
    prefix = mounted.removeprefix(mirror.url).removesuffix("/simple/")
    assert prefix.startswith("/upstreams/")
    for accept in (JSON, "text/html"):
        page = http.get(mounted + "my-pkg/", headers={"Accept": accept, "Host": "10.0.0.5:8000"})
        assert page.status_code == 200
        assert f"https://example.com/pypi{prefix}/files/my-pkg/my_pkg-1.0-py3-none-any.whl" in page.text
        assert "10.0.0.5" not in page.text
        assert "../../files" not in page.text


@pytest.mark.usefixtures("pkg")
def test_renderings_for_made_up_hosts_are_bounded(mirror: Mirror, http: requests.Session) -> None:
    url = mirror.index_url + "my-pkg/"
    for number in range(MAX_CLIENTS + 5):
        answer = http.get(url, headers={"Accept": JSON, "Host": f"host{number}.example.com"})
        assert f"http://host{number}.example.com/files/" in answer.text
    folder = mirror.repository.pages.folder / "my-pkg.clients"
    kinds = {path.name.removesuffix(".gz") for path in folder.iterdir()}
    assert len(kinds) <= MAX_CLIENTS


PIP = 'pip/26.3 {"installer":{"name":"pip","version":"26.3"},"python":"3.11.7"}'
#: one that says what pip installs for: the file it takes from a page can be guessed
FULL_PIP = (
    'pip/26.3 {"installer":{"name":"pip","version":"26.3"},"python":"3.11.7","implementation":'
    '{"name":"CPython","version":"3.11.7"},"distro":{"libc":{"lib":"glibc","version":"2.36"}},'
    '"system":{"name":"Linux","release":"6.1.0"},"cpu":"x86_64"}'
)
UV = 'uv/0.9.0 {"installer":{"name":"uv","version":"0.9.0"},"python":"3.11.7"}'


def metadata_listed(http: requests.Session, url: str, accept: str, agent: str) -> dict[str, bool]:
    """Whether the page at ``url`` lists each file with PEP 658 metadata, for ``agent``."""
    answer = http.get(url, headers={"Accept": accept, "User-Agent": agent})
    assert answer.status_code == 200
    assert "User-Agent" in answer.headers["Vary"]
    if accept == JSON:
        return {f["filename"]: "core-metadata" in f for f in answer.json()["files"]}
    lines = [line for line in answer.text.splitlines() if "<a href" in line]
    return {line.split(">")[1].split("<")[0]: "data-core-metadata" in line for line in lines}


@pytest.mark.parametrize("accept", [JSON, "text/html"])
@pytest.mark.parametrize(
    ("large_from", "pip_sees"),
    [
        # the default: these wheels are small, so pip gets no metadata of any
        (
            clients.PIP_METADATA_MIN_SIZE,
            {"meta-1.0-py3-none-any.whl": False, "meta-2.0-py3-none-any.whl": False},
        ),
        # every wheel large: pip gets the metadata of the one not cached
        (1, {"meta-1.0-py3-none-any.whl": False, "meta-2.0-py3-none-any.whl": True}),
    ],
)
def test_pip_gets_metadata_only_of_large_wheels_not_cached_and_uv_of_all(
    mirror: Mirror,
    upstream: PrivateIndex,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    accept: str,
    large_from: int,
    pip_sees: dict[str, bool],
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", large_from)
    upstream.add("meta", "1.0", sdist=False)
    upstream.add("meta", "2.0", sdist=False)
    url = mirror.index_url + "meta/"
    wheel = "meta-1.0-py3-none-any.whl"
    # cached before its page is first rendered: a wheel cached just as its page lists it leaves
    # the renderings be (the change marker is not touched), pip's too
    http.get(f"{mirror.url}/files/meta/{wheel}").raise_for_status()
    for _ in range(2):  # rendered, then served from its file
        assert metadata_listed(http, url, accept, PIP) == pip_sees
        assert metadata_listed(http, url, accept, "uv/0.5.0") == {
            wheel: True,
            "meta-2.0-py3-none-any.whl": True,
        }
        assert metadata_listed(http, url, accept, "") == {wheel: True, "meta-2.0-py3-none-any.whl": True}


@pytest.mark.parametrize(
    ("upstream_lists", "ranged_from", "pip_reads"),
    [
        # the upstream's own metadata of a large wheel: pip reads it, as it would from the upstream
        (True, 10**9, True),
        # none upstream: read by ranges only for the largest wheels, else pip downloads the wheel
        # as it would from the upstream, without the request and the round trips of the ranges
        (False, 10**9, False),
        (False, 1, True),
    ],
)
def test_pip_reads_metadata_the_mirror_reads_by_ranges_only_of_the_largest_wheels(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    upstream_lists: bool,
    ranged_from: int,
    pip_reads: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="nestegg_core.access")
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)  # every wheel is large
    monkeypatch.setattr(clients, "PIP_RANGED_METADATA_MIN_SIZE", ranged_from)
    faults.no_metadata = not upstream_lists
    [wheel] = upstream.add("big", "1.0", sdist=False, payload_size=200_000)
    mirror = make_mirror()
    pip_download(mirror.index_url, tmp_path, "big==1.0")
    assert hashlib.sha256((tmp_path / wheel.filename).read_bytes()).hexdigest() == wheel.hashes["sha256"]
    access = "\n".join(r.getMessage() for r in caplog.records if r.name == "nestegg_core.access")
    assert (f'{wheel.filename}.metadata" 200' in access) is pip_reads
    # the upstream: the wheel whole once, and ranges of it only for metadata read by ranges
    assert len(faults.files(whole=True)) == 1
    assert bool(faults.files(whole=False)) is (pip_reads and not upstream_lists)


@pytest.mark.parametrize(
    ("agent", "method", "changes", "ahead"),
    [
        (PIP, "GET", {}, True),  # pip resolved to the wheel: it asks for it once it resolved the rest
        (PIP, "HEAD", {}, False),
        ("uv/0.5.0", "GET", {}, False),  # uv reads the metadata of versions it never installs
        ("", "GET", {}, False),
        (PIP, "GET", {"fetch_ahead": 0}, False),  # turned off
        (PIP, "GET", {"fetch_ahead": 1000}, False),  # the wheel is larger than that
    ],
)
def test_pips_read_of_a_wheels_metadata_starts_the_wheels_download(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    agent: str,
    method: str,
    changes: dict[str, object],
    ahead: bool,
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)
    [wheel] = upstream.add("big", "1.0", sdist=False, payload_size=200_000)
    mirror = make_mirror(**changes)
    assert http.get(mirror.index_url + "big/", headers={"Accept": JSON, "User-Agent": agent}).ok
    answer = http.request(
        method, f"{mirror.url}/files/big/{wheel.filename}.metadata", headers={"User-Agent": agent}
    )
    assert answer.status_code == 200
    cached = mirror.repository.store.file_path(NormalizedName("big"), wheel.filename)
    if ahead:
        wait_until(cached.is_file, "the wheel cached without a request for it")
        assert mirror.repository.downloads.ahead_count == 1
    else:
        time.sleep(mirror.repository.downloads.ahead_after + 0.5)
        assert not cached.exists()
        assert mirror.repository.downloads.ahead_count == 0
    assert len(faults.files()) == (1 if ahead else 0)
    # the wheel's own request reads that download or the cached file: the upstream sent it once
    got = http.get(f"{mirror.url}/files/big/{wheel.filename}", headers={"User-Agent": agent})
    assert hashlib.sha256(got.content).hexdigest() == wheel.hashes["sha256"]
    assert len(faults.files()) == 1


def test_a_download_ahead_leaves_pips_connection_to_pip(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a download no client waits on takes a connection of its own: pip's next request finds the
    # one it used idle, where it would wait for a new one (three round trips to a far upstream)
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)
    [big] = upstream.add("big", "1.0", sdist=False, payload_size=200_000)
    [small] = upstream.add("small", "1.0", sdist=False)
    mirror = make_mirror()
    mirror.repository.downloads.ahead_after = 0.0
    faults.file_delay = 1.0  # the download ahead is still running when pip asks on
    assert http.get(mirror.index_url + "big/", headers={"Accept": JSON, "User-Agent": PIP}).ok
    metadata = f"/files/big/{big.filename}.metadata"
    assert http.get(mirror.url + metadata, headers={"User-Agent": PIP}).ok
    wait_until(lambda: faults.count(f"/files/big/{big.filename}") == 1, "the download ahead")
    assert http.get(mirror.index_url + "small/", headers={"Accept": JSON, "User-Agent": PIP}).ok
    assert http.get(f"{mirror.url}/files/small/{small.filename}", headers={"User-Agent": PIP}).ok
    port = {s.path: s.port for s in faults.seen}
    assert port[metadata] == port["/simple/small/"] == port[f"/files/small/{small.filename}"]
    assert port[f"/files/big/{big.filename}"] != port[metadata]


@pytest.mark.parametrize(
    ("then", "ahead", "started"),
    [
        ("/files/big/big-1.0-py3-none-any.whl", False, 0),  # rejected 2.0 (backtracking): dropped
        ("/files/big/big-1.0-py3-none-any.whl.metadata", False, 1),  # and 1.0's instead
        ("/files/big/big-2.0-py3-none-any.whl.metadata", True, 1),  # the same file's metadata again
        ("/simple/other/", True, 1),  # on to another project
        ("/files/other/other-1.0-py3-none-any.whl", True, 1),
    ],
)
def test_a_download_ahead_waits_and_is_dropped_when_pip_asks_for_another_file_of_the_project(
    upstream: PrivateIndex,
    faults: Faults,
    mirror: Mirror,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    then: str,
    ahead: bool,
    started: int,
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)
    upstream.add("big", "1.0", sdist=False)
    [rejected] = upstream.add("big", "2.0", sdist=False, payload_size=200_000)
    upstream.add("other", "1.0", sdist=False)
    downloads = mirror.repository.downloads
    downloads.ahead_after = 5.0  # pip's next request comes within it however loaded the machine
    pip = {"User-Agent": PIP, "Accept": JSON}
    assert http.get(mirror.index_url + "big/", headers=pip).ok
    assert http.get(f"{mirror.url}/files/big/{rejected.filename}.metadata", headers=pip).ok
    assert http.get(mirror.url + then, headers=pip).ok
    assert faults.count(f"/files/big/{rejected.filename}") == 0  # nothing started yet
    cached = mirror.repository.store.file_path(NormalizedName("big"), rejected.filename)
    if ahead:
        wait_until(cached.is_file, "the wheel cached without a request for it", timeout=15)
    else:
        time.sleep(downloads.ahead_after + 0.5)
        assert not cached.exists()
    assert faults.count(f"/files/big/{rejected.filename}") == int(ahead)
    wait_until(lambda: downloads.ahead_count == started, "the downloads ahead started")


def test_pip_gets_a_large_wheel_whose_download_ran_while_it_resolved(
    upstream: PrivateIndex,
    faults: Faults,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """pip reads the metadata of the large wheels it resolves to and downloads them only once it
    has resolved everything: those downloads start at the metadata, and pip reads them."""
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 100_000)
    mirror.repository.downloads.ahead_after = 0.0  # pip resolves two projects faster than the wait
    [big] = upstream.add("big", "1.0", sdist=False, payload_size=300_000)
    [small] = upstream.add("small", "1.0", sdist=False)
    pip_download(mirror.index_url, tmp_path / "got", "big", "small")
    for wheel in (big, small):
        got = (tmp_path / "got" / wheel.filename).read_bytes()
        assert hashlib.sha256(got).hexdigest() == wheel.hashes["sha256"]
    # the large one's at its metadata, the small one's (no metadata shown) as pip got its page
    assert mirror.repository.downloads.ahead_count == 2
    assert mirror.repository.guesses.right == 2
    assert sorted(seen.path for seen in faults.files()) == [
        f"/files/big/{big.filename}",
        f"/files/small/{small.filename}",
    ]
    assert faults.count(f"/files/big/{big.filename}.metadata") == 1


@pytest.mark.parametrize(
    ("asked", "changes", "shown", "ahead", "right", "wrong"),
    [
        # unpinned: each wheel pip takes was guessed, its download begun as pip was given its page
        (["a", "b", "c"], {}, False, 3, 3, 0),
        # pinned to older releases: guessed wrong; after MAX_MISSES + 1 downloads none is begun
        # for nothing (those are cached all the same)
        (["a==1.0", "b==1.0", "c==1.0", "d==1.0"], {}, False, MAX_MISSES + 1, 0, 4),
        (["a==2.0", "b==1.0", "c==2.0", "d==2.0"], {}, False, 4, 3, 1),
        # a wheel shown with its metadata is fetched ahead once pip read that (not within the test)
        (["a", "b", "c"], {}, True, 0, 3, 0),
        (["a", "b", "c"], {"fetch_ahead": 0}, False, 0, 0, 0),
        (["a", "b", "c"], {"pages_ahead": False}, False, 3, 3, 0),
    ],
    ids=["unpinned", "pinned", "one-pinned", "metadata-shown", "fetch-ahead-off", "no-pages-ahead"],
)
def test_pip_reads_the_wheel_it_was_guessed_to_take_from_its_download_begun_with_the_page(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    asked: list[str],
    changes: dict[str, object],
    shown: bool,
    ahead: int,
    right: int,
    wrong: int,
) -> None:
    if shown:
        monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)
    taken: dict[str, DistFile] = {}
    guessed: dict[str, DistFile] = {}
    for name in ("a", "b", "c", "d"):
        [old] = upstream.add(name, "1.0", sdist=False)
        [new] = upstream.add(name, "2.0", sdist=False)
        upstream.add(name, "3.0b1", sdist=False)  # a pre-release: neither pip nor the guess takes it
        guessed[name] = new
        taken[name] = old if f"{name}==1.0" in asked else new
    mirror = make_mirror(**changes)
    downloads = mirror.repository.downloads
    downloads.ahead_after = 60.0  # the fetch ahead at a read of the metadata: not within the test
    pip_download(mirror.index_url, tmp_path / "got", *asked)
    names = [a.partition("==")[0] for a in asked]
    for name in names:
        got = (tmp_path / "got" / taken[name].filename).read_bytes()
        assert hashlib.sha256(got).hexdigest() == taken[name].hashes["sha256"]
    assert downloads.ahead_count == ahead
    assert (mirror.repository.guesses.right, mirror.repository.guesses.wrong) == (right, wrong)
    # pip read each download begun ahead (the upstream sent each file once), and those begun for
    # nothing were the first ones guessed wrong
    wrongly = [name for name in names if taken[name] != guessed[name]][: ahead - right]
    files = [f"/files/{n}/{taken[n].filename}" for n in names]
    files += [f"/files/{n}/{guessed[n].filename}" for n in wrongly]
    wait_until(lambda: len(faults.files()) >= len(files), "the downloads begun for nothing")
    assert sorted(seen.path for seen in faults.files()) == sorted(files)


class _Uploads:
    """``datetime`` for the private store that makes the fake upstream: each file it publishes is
    dated with the next of ``times``."""

    def __init__(self, times: list[datetime]) -> None:
        self.times = iter(times)

    def now(self, tz: timezone | None = None) -> datetime:  # noqa: ARG002 - as datetime.now
        return next(self.times)


@pytest.mark.parametrize(
    ("asked", "ahead", "right", "wrong", "wasted"),
    [
        # pinned to the releases newest on 2024-06-01: the first guess is of the newest release,
        # the next ones of the newest uploaded by the time of the first file pip took
        (["a==2.0", "b==2.0", "c==2.0", "d==2.0"], 4, 3, 1, ["a-3.0"]),
        # unpinned: the newest way stays the one acted on
        (["a", "b", "c", "d"], 4, 4, 0, []),
    ],
    ids=["pinned-a-day", "unpinned"],
)
def test_a_pinned_install_has_its_files_guessed_by_the_day_of_the_first_it_took(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    asked: list[str],
    ahead: int,
    right: int,
    wrong: int,
    wasted: list[str],
) -> None:
    names = ["a", "b", "c", "d"]
    # 1.0 in 2023, 2.0 in May 2024 (a's last), 3.0 in 2025: one wheel each
    times = [datetime(2023, 1, 1 + i, tzinfo=timezone.utc) for i in range(4)]
    times += [datetime(2024, 5, 4 - i, tzinfo=timezone.utc) for i in range(4)]
    times += [datetime(2025, 1, 1 + i, tzinfo=timezone.utc) for i in range(4)]
    monkeypatch.setattr(private, "datetime", _Uploads(times))
    wheels = {f"{n}-{v}": upstream.add(n, v, sdist=False)[0] for v in ("1.0", "2.0", "3.0") for n in names}
    mirror = make_mirror()
    pip_download(mirror.index_url, tmp_path / "got", *asked)
    taken = [f"{n}-2.0" if "==" in asked[0] else f"{n}-3.0" for n in names]
    for key in taken:
        got = (tmp_path / "got" / wheels[key].filename).read_bytes()
        assert hashlib.sha256(got).hexdigest() == wheels[key].hashes["sha256"]
    assert mirror.repository.downloads.ahead_count == ahead
    assert (mirror.repository.guesses.right, mirror.repository.guesses.wrong) == (right, wrong)
    # the upstream sent each file pip took once (read from the download begun ahead), and the wrong
    # guess's
    files = sorted(f"/files/{key.partition('-')[0]}/{wheels[key].filename}" for key in [*taken, *wasted])
    wait_until(lambda: len(faults.files()) >= len(files), "the downloads begun for nothing")
    assert sorted(seen.path for seen in faults.files()) == files


def test_a_wheel_guessed_and_whole_before_pip_asks_for_it_leaves_its_page_saved_and_pages_made_ahead(
    upstream: PrivateIndex, faults: Faults, mirror: Mirror, http: requests.Session
) -> None:
    [top] = upstream.add("top", "1.0", sdist=False, requires_dist=["dep>=1"])
    upstream.add("dep", "1.0", sdist=False)
    assert http.get(mirror.index_url + "top/", headers={"Accept": JSON, "User-Agent": FULL_PIP}).ok
    cached = mirror.repository.store.file_path(NormalizedName("top"), top.filename)
    wait_until(cached.is_file, "the guessed wheel cached")
    # no request for it came: the pages it requires are made ahead all the same
    wait_until(lambda: faults.count("/simple/dep/") == 1, "the page of dep made ahead")
    # the page was saved before the download began (a change of its files folder holds it back)
    assert list(mirror.repository.pages.folder.glob("top.*"))
    assert faults.count("/simple/top/") == 1


def test_a_large_page_answered_from_its_file_is_handed_to_the_server_as_a_file_though_guessed(
    upstream: PrivateIndex, mirror: Mirror, http: requests.Session
) -> None:
    # the guess of a page answered from its saved rendering is made before the answer: nothing
    # is left for after it, and the server gets the file (sendfile) rather than an iterable
    for n in range(400):
        upstream.add("big", f"1.{n}", sdist=False)
    pip = {"Accept": JSON, "User-Agent": FULL_PIP}
    assert http.get(mirror.index_url + "big/", headers=pip).ok  # made, then saved
    wait_until(lambda: mirror.repository.downloads.ahead_count == 1, "the guessed wheel's download")

    class Wrapper:
        def __init__(self, handle: object, *_: object) -> None:
            self.handle = handle

    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/simple/big/", "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(mirror.port), "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": f"127.0.0.1:{mirror.port}", "HTTP_ACCEPT": JSON,
        "HTTP_USER_AGENT": FULL_PIP, "wsgi.url_scheme": "http", "wsgi.file_wrapper": Wrapper,
    }  # fmt: skip
    statuses: list[str] = []

    def start_response(status: str, *_: object) -> None:
        statuses.append(status)

    body = mirror.app(environ, start_response)
    try:
        assert statuses == ["200 OK"]
        assert isinstance(body, Wrapper)
    finally:
        body.handle.close()  # type: ignore[attr-defined]
    assert (mirror.repository.guesses.right, mirror.repository.guesses.wrong) == (0, 0)  # none asked yet


@pytest.mark.parametrize("step", ["pick", "taken"])
def test_a_guess_that_fails_leaves_the_page_and_the_file_answered(
    upstream: PrivateIndex, mirror: Mirror, http: requests.Session, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(mirror.repository.guesses, step, broken)
    [wheel] = upstream.add("a", "1.0", sdist=False)
    pip = {"Accept": JSON, "User-Agent": FULL_PIP}
    answer = http.get(mirror.index_url + "a/", headers=pip)
    assert answer.status_code == 200
    assert answer.json()["name"] == "a"
    got = http.get(urljoin(mirror.index_url, answer.json()["files"][0]["url"]), headers=pip)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == wheel.hashes["sha256"]
    if step == "pick":
        assert mirror.repository.downloads.ahead_count == 0


def test_only_pips_page_gets_its_file_guessed(
    upstream: PrivateIndex, faults: Faults, mirror: Mirror, http: requests.Session
) -> None:
    [wheel] = upstream.add("a", "1.0", sdist=False)
    # uv downloads what it resolved, not what it was shown; a pip that says not what it installs
    # for is not guessed for; nor a HEAD
    for agent in (UV, PIP, FULL_PIP):
        assert http.head(mirror.index_url + "a/", headers={"Accept": JSON, "User-Agent": agent}).ok
        assert mirror.repository.downloads.ahead_count == 0
        assert http.get(mirror.index_url + "a/", headers={"Accept": JSON, "User-Agent": agent}).ok
    cached = mirror.repository.store.file_path(NormalizedName("a"), wheel.filename)
    wait_until(cached.is_file, "the download begun as pip was given the page")
    assert mirror.repository.downloads.ahead_count == 1
    assert http.get(f"{mirror.url}/files/a/{wheel.filename}", headers={"User-Agent": FULL_PIP}).ok
    assert (mirror.repository.guesses.right, mirror.repository.guesses.wrong) == (1, 0)
    assert len(faults.files()) == 1


@pytest.mark.parametrize("cached", [False, True], ids=["none-cached", "warm"])
def test_a_page_answered_from_its_rendering_without_its_model_has_its_file_guessed_unless_warm(
    upstream: PrivateIndex, faults: Faults, mirror: Mirror, http: requests.Session, cached: bool
) -> None:
    """A page made before (ahead of pip) and dropped from memory is answered from its rendering;
    with none of its files ever downloaded, its page is read once the answer is out, and pip's file
    guessed from it (pip's request for the file then finds the page in memory). A warm page's
    files are most likely cached: nothing is read."""
    [wheel] = upstream.add("a", "1.0", sdist=False)
    name = NormalizedName("a")
    index = mirror.repository.mirror
    repo = mirror.repository
    file = repo.store.file_path(name, wheel.filename)
    unguessed = {"Accept": JSON, "User-Agent": PIP}  # the same rendering as pip's, never guessed for
    if cached:
        assert http.get(f"{mirror.url}/files/a/{wheel.filename}", headers={"User-Agent": PIP}).ok
        wait_until(file.is_file, "the file cached")
    kind = repository._kind(JSON, None, mirror.url, meta=clients.lists_cached_metadata(PIP))

    def saved() -> bool:
        assert http.get(mirror.index_url + "a/", headers=unguessed).ok
        found = repo.pages.open(name, kind, repo._disk_token(name, meta=False) or "")
        if found is not None:
            found.close()
        return found is not None

    wait_until(saved, "pip's rendering saved, once the change of the cached file settled")
    index.max_files = index.max_ahead_files = 0
    index.trim()
    assert index.held(name) is None
    pip = {"Accept": JSON, "User-Agent": FULL_PIP}
    assert http.get(mirror.index_url + "a/", headers=pip).json()["name"] == "a"
    if cached:
        # the work after that answer is done before this request on the same connection
        assert http.get(f"{mirror.url}/files/a/{wheel.filename}", headers={"User-Agent": FULL_PIP}).ok
        assert (index.held(name), repo.downloads.ahead_count) == (None, 0)
        return
    wait_until(file.is_file, "pip's wheel guessed from the page read after the answer")
    assert repo.downloads.ahead_count == 1
    assert index.held(name) is not None
    assert http.get(f"{mirror.url}/files/a/{wheel.filename}", headers={"User-Agent": FULL_PIP}).ok
    assert (repo.guesses.right, repo.guesses.wrong) == (1, 0)
    assert faults.count("/simple/a/") == 1
    assert len(faults.files()) == 1


def rendering_files(mirror: Mirror, name: str) -> dict[str, int]:
    """The renderings of the page of ``name`` on disk, by file name: their inode and mtime."""
    found = {}
    folder = mirror.repository.pages.folder
    for path in [*folder.glob(f"{name}.*"), *folder.glob(f"{name}.clients/*")]:
        if path.is_file():
            status = path.stat()
            found[str(path.relative_to(mirror.repository.pages.folder))] = hash(
                (status.st_ino, status.st_mtime_ns)
            )
    return found


@pytest.mark.parametrize(
    ("large_from", "pip_made_again"),
    [
        (clients.PIP_RANGED_METADATA_MIN_SIZE, False),  # small: pip listed no metadata, and lists none
        (1, True),  # large: pip listed the metadata read by ranges, and lists none once cached
    ],
)
def test_a_wheel_cached_with_metadata_learned_remakes_pips_rendering_only_if_pip_saw_it(
    upstream: PrivateIndex,
    faults: Faults,
    make_mirror: MirrorFactory,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    large_from: int,
    pip_made_again: bool,
) -> None:
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", large_from)
    monkeypatch.setattr(clients, "PIP_RANGED_METADATA_MIN_SIZE", large_from)
    faults.no_metadata = True  # what the mirror learns from the wheel changes the page
    upstream.add("meta", "1.0", sdist=False)
    mirror = make_mirror()
    url = mirror.index_url + "meta/"
    wheel = "meta-1.0-py3-none-any.whl"
    pip_before = http.get(url, headers={"Accept": JSON, "User-Agent": PIP})
    uv_before = http.get(url, headers={"Accept": JSON, "User-Agent": "uv/0.5.0"})
    assert [f.get("core-metadata") for f in uv_before.json()["files"]] == [True]  # read by ranges
    made = rendering_files(mirror, "meta")
    assert len(made) == 2  # pip's and uv's, not gzip encoded: they run on this machine
    http.get(f"{mirror.url}/files/meta/{wheel}").raise_for_status()
    time.sleep(SETTLE_NS / 1e9 + 0.1)  # the change marker settles
    pip_after = http.get(url, headers={"Accept": JSON, "User-Agent": PIP})
    uv_after = http.get(url, headers={"Accept": JSON, "User-Agent": "uv/0.5.0"})
    [entry] = uv_after.json()["files"]
    assert set(entry["core-metadata"]) == {"sha256"}  # the wheel's own, with its hash
    assert uv_after.headers["ETag"] != uv_before.headers["ETag"]
    assert [f.get("core-metadata") for f in pip_after.json()["files"]] == [None]
    assert (pip_after.headers["ETag"] != pip_before.headers["ETag"]) is pip_made_again
    pip_files = {k: v for k, v in made.items() if "_nm" in k}
    assert len(pip_files) == 1
    # made again by the request, or (when another thread's write of the page moved the disk
    # while it rendered) by the background a moment later
    wait_until(
        lambda: all(
            (rendering_files(mirror, "meta").get(k) != v) is pip_made_again for k, v in pip_files.items()
        ),
        "pip's rendering as expected",
    )


@pytest.mark.parametrize(
    ("agent", "project", "answered_first"),
    [
        (PIP, "pkg", True),  # pip waits on each answer: the page is written once it has it
        ("uv/0.13.9 (x86_64-unknown-linux-gnu)", "pkg", True),
        ("python-requests/2.32.3", "pkg", False),  # a script finds on disk what it was answered
        (None, "pkg", False),
        (PIP, "big", True),  # over later.MAX_FILES: sent from the file it is rendered into
        ("python-requests/2.32.3", "big", False),
    ],
    ids=["pip", "uv", "script", "no-agent", "pip-large-page", "script-large-page"],
)
def test_a_page_fetched_just_now_is_written_after_an_installer_has_its_answer(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    agent: str | None,
    project: str,
    answered_first: bool,
) -> None:
    """The state and the rendering of a page fetched just now cost an installer no wait: they are
    written once the answer is sent, and a process started after serves the page from them."""
    upstream.add("pkg", "1.0")  # two files
    upstream.add("big", "1.0")
    upstream.add("big", "2.0")  # four
    monkeypatch.setattr(later, "MAX_FILES", 2)
    answered = threading.Event()
    seen_at_write: list[bool] = []
    write_page = CacheStore.write_page

    def watched(store: CacheStore, state: PageState) -> PageStamp:
        # an answer sent before the write comes in while the write waits for it (never, if after)
        seen_at_write.append(answered.wait(10 if answered_first else 0.5))
        return write_page(store, state)

    monkeypatch.setattr(CacheStore, "write_page", watched)
    mirror = make_mirror()
    headers = {"Accept": JSON, **({} if agent is None else {"User-Agent": agent})}
    first = http.get(mirror.index_url + f"{project}/", headers=headers)
    answered.set()
    assert first.status_code == 200
    store = mirror.repository.store
    name = NormalizedName(project)
    kind = repository._kind(JSON, None, mirror.url, meta=clients.lists_cached_metadata(agent))
    rendered = mirror.repository.pages.path(name, kind)
    wait_until(lambda: store.page_stamp(name) is not None and rendered.is_file(), "the page written")
    assert seen_at_write == [answered_first]
    assert not [p.name for p in rendered.parent.iterdir() if p.name.endswith(".tmp")]
    port = mirror.port
    mirror.stop()
    # a new process of the nest answers from what was written: the upstream is not asked again
    again = make_mirror(port=port)
    assert http.get(again.index_url + f"{project}/", headers=headers).json() == first.json()
    assert faults.count(f"/simple/{project}/") == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "mirror.example.com"], ids=["this-machine", "gzip"])
def test_a_large_page_fetched_just_now_is_answered_from_the_file_it_is_rendered_into(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
) -> None:
    """A page over ``later.MAX_FILES`` fetched just now for pip is rendered a piece at a time into
    a file (never whole in memory) and answered from it; once its state is written the file is
    kept, and a new process answers the same bytes under the same ETag without the upstream."""
    upstream.add("big", "1.0")
    upstream.add("big", "2.0")  # four files
    monkeypatch.setattr(later, "MAX_FILES", 2)
    mirror = make_mirror()
    whole: list[bytes] = []
    in_memory = mirror.repository._in_memory

    def watched(key: repository._RenderKey, page: ProjectPage, body: bytes, *, gzip: bool) -> Rendered:
        whole.append(body)
        return in_memory(key, page, body, gzip=gzip)

    monkeypatch.setattr(mirror.repository, "_in_memory", watched)
    http.headers["Host"] = f"{host}:{mirror.port}"
    headers = {"Accept": JSON, "User-Agent": PIP, "Accept-Encoding": "gzip"}
    first = http.get(mirror.index_url + "big/", headers=headers, stream=True)
    body = first.raw.read(decode_content=False)
    assert first.status_code == 200
    assert first.headers.get("Content-Encoding") == ("gzip" if host != "127.0.0.1" else None)
    assert int(first.headers["Content-Length"]) == len(body)
    assert whole == []
    folder = mirror.repository.pages.folder
    name = NormalizedName("big")
    wait_until(lambda: mirror.repository.store.page_stamp(name) is not None, "the state written")
    wait_until(lambda: not list(folder.rglob("*.tmp")), "the rendering kept")
    [kept] = [p for p in folder.rglob("*") if p.is_file() and p.name != "big.json" and "big" in str(p)]
    header, _, kept_body = kept.read_bytes().partition(b"\n")
    assert kept_body.lstrip(b" \n") == body  # the bytes sent, under the state's token and the ETag sent
    assert first.headers["ETag"].encode() in header.split()
    # newer than the state it was made from, or a prune would take it for stale
    assert kept.stat().st_mtime_ns >= mirror.repository.store.page_path(name).stat().st_mtime_ns
    port = mirror.port
    mirror.stop()
    again = make_mirror(port=port)
    second = http.get(again.index_url + "big/", headers=headers, stream=True)
    assert second.raw.read(decode_content=False) == body
    assert second.headers["ETag"] == first.headers["ETag"]
    assert faults.count("/simple/big/") == 1
    plain = gzip.decompress(body) if host != "127.0.0.1" else body
    assert len(json.loads(plain)["files"]) == 4


def delay_records(monkeypatch: pytest.MonkeyPatch, wait: Callable[[], object]) -> None:
    """Each downloaded file's record is written once ``wait()`` returns: until then the file is
    checked, and not in place."""
    write_record = CacheStore.write_record

    def delayed(store: CacheStore, name: NormalizedName, dist: DistFile) -> None:
        wait()
        write_record(store, name, dist)

    monkeypatch.setattr(CacheStore, "write_record", delayed)


@pytest.mark.parametrize(
    ("agent", "whole_first"),
    [
        (PIP, True),  # has the last byte once the file is checked, while the cache is written
        ("uv/0.13.9 (x86_64-unknown-linux-gnu)", True),
        ("python-requests/2.32.3", False),  # a script finds the file in the cache once it has it
        (None, False),
    ],
    ids=["pip", "uv", "script", "no-agent"],
)
def test_a_file_fetched_just_now_is_put_in_place_after_an_installer_has_it_whole(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
    agent: str | None,
    whole_first: bool,
) -> None:
    """A page asked for meanwhile, in the same process, waits for the file to be in place: it lists
    what the download learned."""
    (wheel,) = upstream.add("pkg", "1.0", sdist=False)
    served = (upstream.mirror.repository.private.root / "pkg" / wheel.filename).read_bytes()
    faults.html_only = True  # no sizes upstream: the download learns it
    placed = threading.Event()
    delay_records(monkeypatch, lambda: placed.wait(10))
    mirror = make_mirror()
    headers = {} if agent is None else {"User-Agent": agent}
    page_url, json_type = mirror.index_url + "pkg/", {"Accept": JSON, **headers}
    assert "size" not in requests.get(page_url, headers=json_type, timeout=30).json()["files"][0]
    got: dict[str, requests.Response] = {}

    def fetch(what: str, url: str, headers: dict[str, str]) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: got.update({what: requests.get(url, headers=headers, timeout=30)})
        )
        thread.start()
        return thread

    file = fetch("file", f"{mirror.url}/files/pkg/{wheel.filename}", headers)
    file.join(10 if whole_first else 0.5)
    assert file.is_alive() is not whole_first
    page = fetch("page", page_url, json_type)
    page.join(0.5)
    assert page.is_alive()  # the file is checked, not yet in place: the page waits for it
    placed.set()
    for thread in (file, page):
        thread.join(30)
    assert got["file"].content == served
    assert got["page"].json()["files"][0]["size"] == len(served)
    assert mirror.repository.store.file_path(NormalizedName("pkg"), wheel.filename).read_bytes() == served


def test_a_mirror_stopped_once_an_installer_has_a_file_keeps_it(
    make_mirror: MirrorFactory, upstream: PrivateIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tox run's process ends once its mirror stops: the file pip has is in the cache by then."""
    (wheel,) = upstream.add("pkg", "1.0", sdist=False)
    delay_records(monkeypatch, lambda: time.sleep(0.5))
    mirror = make_mirror()
    pip = {"User-Agent": PIP}
    requests.get(mirror.index_url + "pkg/", headers=pip, timeout=30).raise_for_status()
    got = requests.get(f"{mirror.url}/files/pkg/{wheel.filename}", headers=pip, timeout=30)
    placed = mirror.repository.store.file_path(NormalizedName("pkg"), wheel.filename)
    assert not placed.exists()  # pip has it; the cache's record is still being written
    mirror.stop()
    assert placed.read_bytes() == got.content
