"""Property-based fuzzing (hypothesis) of name handling, upstream page parsing and routing.

The WSGI app is called directly (no sockets), over a repository whose upstream is an in-memory
fetcher, so thousands of requests take seconds and never touch the network.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from nestegg_core import Config, create_app
from nestegg_core.errors import NotFound, UpstreamError
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import Fetched
from nestegg_core.simple.models import DistFile, ProjectPage, is_normalized, is_valid_name
from nestegg_core.simple.parse import parse_project_page
from nestegg_core.testing.dists import PackageSpec, make_wheel

from .loopback import sha256

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis directory in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# names -------------------------------------------------------------------------------------

NAME_CHARS = st.sampled_from("abcXYZ019._-")
NAMES = st.one_of(st.text(NAME_CHARS, min_size=1, max_size=30), st.text(max_size=30))


@FUZZ
@given(NAMES)
def test_canonical_names_are_normalized_and_stable(raw: str) -> None:
    if not is_valid_name(raw):
        return
    name = canonicalize_name(raw)
    assert is_normalized(name)
    assert canonicalize_name(name) == name
    assert is_valid_name(name)


# parsing -----------------------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from(
    [
        "application/vnd.pypi.simple.v1+json",
        "application/json",
        "text/html",
        "text/html; charset=latin-1",
        "application/vnd.pypi.simple.v1+html",
        "",
        "text/plain",
        "image/png",
        "application/xml+json; q=1",
    ]
)
BASES = st.sampled_from(
    ["https://example.com/simple/pkg/", "http://u:p@127.0.0.1:8080/simple/pkg/", "https://[::1]/s/pkg/"]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
URL_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["http://[x/a.whl", "//[::1", "../../f/a-1.0.tar.gz", "a.whl#sha256=zz", "file:///etc/passwd",
         "http://example.com/%00.whl", "..", ".", "/", "?q=1", "#", "javascript:alert(1)", "http://example.com:99999/a.whl"]
    ),
)  # fmt: skip
FILE_ENTRIES = st.fixed_dictionaries(
    {"filename": st.one_of(st.text(max_size=30), JSON_VALUES), "url": st.one_of(URL_TEXT, JSON_VALUES)},
    optional={
        "hashes": st.one_of(
            st.dictionaries(st.sampled_from(["sha256", "md5", "x"]), JSON_VALUES), JSON_VALUES
        ),
        "yanked": JSON_VALUES,
        "size": JSON_VALUES,
        "core-metadata": JSON_VALUES,
        "requires-python": JSON_VALUES,
        "upload-time": JSON_VALUES,
    },
)
PAGES = st.fixed_dictionaries(
    {"files": st.one_of(st.lists(FILE_ENTRIES, max_size=4), JSON_VALUES)},
    optional={"versions": JSON_VALUES, "meta": JSON_VALUES, "name": JSON_VALUES},
)


def parses_or_refuses(body: bytes, content_type: str, base: str) -> ProjectPage | None:
    """Parse; only :class:`UpstreamError` may come out, and a page must be safe to use."""
    try:
        page = parse_project_page("Some.Pkg", body, content_type, base)
    except UpstreamError as exc:
        message = str(exc)
        assert "\n" not in message
        return None
    assert page.name == "some-pkg"
    for dist in page.files:
        assert dist.filename
        assert "/" not in dist.filename
        assert "\\" not in dist.filename
        assert dist.filename not in (".", "..")
    return page


@FUZZ
@given(st.binary(max_size=500), CONTENT_TYPES, BASES)
def test_parsing_arbitrary_bytes(body: bytes, content_type: str, base: str) -> None:
    parses_or_refuses(body, content_type, base)


@FUZZ
@given(st.one_of(PAGES, JSON_VALUES), BASES)
def test_parsing_arbitrary_json(data: Any, base: str) -> None:
    parses_or_refuses(json.dumps(data).encode(), "application/vnd.pypi.simple.v1+json", base)


def test_parsing_deeply_nested_json() -> None:
    for body in (b"[" * 100_000, b'{"files": ' + b"[" * 50_000, b'{"a":' * 100_000):
        parses_or_refuses(body, "application/vnd.pypi.simple.v1+json", "https://example.com/simple/pkg/")


ATTRS = st.sampled_from(
    ["href", "data-yanked", "data-requires-python", "data-core-metadata", "data-dist-info-metadata"]
)


@st.composite
def html_pages(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        attrs = draw(st.dictionaries(ATTRS, st.one_of(URL_TEXT, st.none()), max_size=4))
        rendered = " ".join(k if v is None else f'{k}="{v}"' for k, v in attrs.items())
        tag = draw(st.sampled_from(["a", "base", "A", "p", "a/", "!--", "script"]))
        parts.append(f"<{tag} {rendered}>{draw(st.text(max_size=10))}</{tag}>")
    noise = draw(st.text(max_size=30))
    return (noise.join(parts) or noise).encode("utf-8", "surrogatepass")


@FUZZ
@given(html_pages(), BASES)
def test_parsing_arbitrary_html(body: bytes, base: str) -> None:
    parses_or_refuses(body, "text/html", base)


# routing -------------------------------------------------------------------------------------


class MemoryFetcher:
    """An upstream in memory: one project with one wheel; every other name is unknown."""

    def __init__(self, wheel: Path) -> None:
        self.data = wheel.read_bytes()
        self.dist = DistFile(
            filename=wheel.name,
            url=f"http://upstream.invalid/files/{wheel.name}",
            hashes={"sha256": sha256(self.data)},
            size=len(self.data),
        )

    def project(self, name: str, *, etag: str | None, last_modified: str | None, **_: object) -> Fetched:  # noqa: ARG002
        if name != "pkg":
            raise NotFound(f"project {name!r} is not on the upstream index")
        return Fetched(page=ProjectPage.build(name, [self.dist]))

    def open(self, url: str) -> _Stream:
        if url != self.dist.url:
            raise NotFound(f"upstream has no file at {url}")
        return _Stream(self.data)


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size: int | None = len(data)

    def chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), 4096):
            yield self.data[start : start + 4096]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("fuzz")
    config = Config(nestegg_dir=root / "nest", port=0, index_url="http://upstream.invalid/simple/", ttl=3600)
    wheel = make_wheel(PackageSpec(name="pkg", version="1.0"), root / "dists")
    repository = Repository(config, fetcher=MemoryFetcher(wheel))
    repository.private.add(make_wheel(PackageSpec(name="mine", version="2.0"), root / "dists"))
    return create_app(config, repository=repository)


def call(app: Any, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One request straight into the WSGI app, as waitress would make it."""
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        assert not set(status) & {"\n", "\r"}, status
        for key, value in response_headers:
            assert not set(value) & {"\n", "\r"}, (key, value)
        seen["status"], seen["headers"] = status, dict(response_headers)

    environ = {
        "REQUEST_METHOD": method,
        # PEP 3333: the URL-decoded path as latin-1 characters of its bytes
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    }
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(seen["status"].split()[0]), seen["headers"], body


SEGMENTS = st.one_of(
    st.sampled_from(
        ["simple", "files", "pkg", "mine", "Pkg", "PKG", "p.k_g", "..", ".", "", "%2e%2e",
         "pkg-1.0-py3-none-any.whl", "pkg-1.0-py3-none-any.whl.metadata", "mine-2.0-py3-none-any.whl",
         "health", "metrics", "ui", "upstreams", "legacy", "\x00", "a" * 300, "..\\x", "caf\u00e9", "\u202e",
         "x.json", ".pkg-1.0-py3-none-any.whl.1.1.part"]
    ),
    st.text(max_size=12),
)  # fmt: skip
PATHS = st.one_of(
    st.lists(SEGMENTS, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=60),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        ["bytes=0-10", "bytes=-5", "bytes=5-", "bytes=9-1", "bytes=0-0,2-3", "*", "W/\"x\"", "text/html",
         "application/vnd.pypi.simple.v1+json", "*/*;q=0", "Basic Zm9vOmJhcg==", "Basic !!!"]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=30),
)  # fmt: skip
HEADERS = st.dictionaries(
    st.sampled_from(["Accept", "Range", "If-None-Match", "If-Range", "Authorization"]),
    HEADER_VALUES,
    max_size=4,
)


def as_wsgi_path(path: str) -> str:
    """What a server hands over for a client's ``path``: percent-decoded UTF-8 bytes as latin-1."""
    return unquote(path, encoding="latin-1")  # any str; this keeps non-latin-1 text for the app to refuse


@settings(FUZZ, max_examples=500)
@given(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]), PATHS, HEADERS)
def test_routing_never_answers_500(app: Any, method: str, path: str, headers: dict[str, str]) -> None:
    for candidate in {path, as_wsgi_path(path), quote(path).encode().decode("latin-1")}:
        status, response_headers, body = call(app, method, candidate, headers)
        assert status != 500, (method, candidate, headers, body[:200])
        assert 200 <= status < 600
        assert b"Traceback" not in body
        if status not in (204, 304):
            assert "Content-Type" in response_headers, (candidate, status)
        if method == "HEAD":
            assert body == b""


@settings(FUZZ, max_examples=300)
@given(NAMES, st.sampled_from(["/simple/{}/", "/simple/{}"]))
def test_project_urls_redirect_once_to_the_canonical_name(app: Any, raw: str, template: str) -> None:
    path = template.format(raw).encode("utf-8", "surrogatepass").decode("latin-1")
    status, headers, _ = call(app, "GET", path, {})
    if not raw:
        return  # the root index
    if "/" in raw or not is_valid_name(raw):
        assert status in (301, 404), (raw, status)
        return
    name = canonicalize_name(raw)
    if raw == name and template.endswith("/"):
        assert status in (200, 404)
        return
    assert status == 301
    assert headers["Location"] == f"/simple/{quote(name)}/"
    again, _, _ = call(app, "GET", headers["Location"], {})
    assert again in (200, 404)  # never a second redirect


def test_known_files_are_served_whole_and_by_range(app: Any) -> None:
    for path in ("/files/pkg/pkg-1.0-py3-none-any.whl", "/files/mine/mine-2.0-py3-none-any.whl"):
        status, _, full = call(app, "GET", path, {})
        assert status == 200
        assert call(app, "GET", path, {"Range": "bytes=0-9"})[2] == full[:10]
        assert call(app, "GET", path, {"Range": "bytes=-9"})[2] == full[-9:]
