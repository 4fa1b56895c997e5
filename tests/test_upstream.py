"""The upstream client over TLS: a CA bundle named by the environment is loaded once for every
connection made with it (ahead of the first one, as a mirror starts), and still verifies what the
upstream says it is; a file's body comes in pieces joined from its TLS records, none of them
waiting for bytes the upstream has not sent."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from nestegg_core import Config, Mirror
from nestegg_core.errors import UpstreamError, UpstreamTimeout
from nestegg_core.index import upstream
from nestegg_core.index.repository import PREPARE_QUIET
from nestegg_core.index.upstream import CHUNK, HttpFetcher, in_background
from tests.loopback import Answer, RawUpstream

trustme = pytest.importorskip("trustme", reason="trustme makes the test CA (pip install -e '.[test]')")

JSON = "application/vnd.pypi.simple.v1+json"
WHEEL_NAME = "pkg-1.0-py3-none-any.whl"
PAGE = {
    "meta": {"api-version": "1.1"},
    "name": "pkg",
    "files": [{"filename": WHEEL_NAME, "url": f"/files/{WHEEL_NAME}", "hashes": {}}],
}
WHEEL = b"not really a wheel" * 100
#: the most one read of a TLS socket gives: one record
RECORD = 16 * 1024
#: a file of 128 records
LARGE = bytes(range(256)) * 8192


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections are kept: each new one is a new TLS handshake

    def do_GET(self) -> None:
        if self.path.startswith("/simple/pkg/"):
            body, kind = json.dumps(PAGE).encode(), "application/vnd.pypi.simple.v1+json"
        elif self.path == "/files/large":
            body, kind = LARGE, "application/octet-stream"
        else:
            body, kind = WHEEL, "application/octet-stream"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


class TlsIndex(ThreadingHTTPServer):
    """An index over HTTPS on 127.0.0.1:0 with a certificate of ``ca``; it counts connections."""

    daemon_threads = True

    def __init__(self, ca: Any) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.connections = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def verify_request(self, *_args: Any) -> bool:
        self.connections += 1
        return True

    @property
    def index_url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/simple/"

    def __enter__(self) -> TlsIndex:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


@pytest.fixture
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
def index(ca: Any) -> Iterator[TlsIndex]:
    with TlsIndex(ca) as served:
        yield served


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The CA bundles loaded into a TLS context from now on, by anyone."""
    loaded: list[Any] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loaded.append(args or kwargs)
        load(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    return loaded


@pytest.fixture
def bundle(ca: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bundle.pem"
    ca.cert_pem.write_to_path(str(path))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return path


@pytest.mark.parametrize("prepared", [False, True], ids=["by-the-first-connection", "prepared"])
@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_is_loaded_once_for_every_connection(
    index: TlsIndex,
    bundle: Path,
    loads: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    prepared: bool,
) -> None:
    monkeypatch.setenv(variable, str(bundle))
    fetcher = HttpFetcher(index.index_url)
    try:
        if prepared:  # ahead of any connection, as a mirror does when it starts: nothing is sent
            fetcher.prepare()
            assert (len(loads), index.connections) == (1, 0)
        for _ in range(3):
            assert fetcher.project("pkg", etag=None, last_modified=None).page is not None
            fetcher.close()  # the next request opens a new connection
        with in_background():  # and a connection of the other pool
            stream = fetcher.open(f"https://127.0.0.1:{index.server_address[1]}/files/{WHEEL_NAME}")
            assert b"".join(stream.chunks()) == WHEEL
            stream.close()
    finally:
        fetcher.close()
    assert index.connections == 4
    assert len(loads) == 1


@pytest.mark.parametrize("gather", [0.0, 0.5], ids=["a-record-a-piece", "gathered"])
def test_a_file_over_tls_comes_in_pieces_joined_from_its_records(
    index: TlsIndex, bundle: Path, monkeypatch: pytest.MonkeyPatch, gather: float
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setattr(upstream, "GATHER", gather)
    fetcher = HttpFetcher(index.index_url)
    try:
        stream = fetcher.open(f"https://127.0.0.1:{index.server_address[1]}/files/large")
        time.sleep(0.2)  # the records sent meanwhile are at hand
        pieces = list(stream.chunks())
        stream.close()
    finally:
        fetcher.close()
    assert b"".join(pieces) == LARGE
    records = len(LARGE) // RECORD
    if gather:
        assert max(map(len, pieces)) <= CHUNK
        assert len(pieces) < records
    else:
        assert max(map(len, pieces)) <= RECORD
        assert len(pieces) >= records


#: what the holding upstream sends first: not a whole number of pieces
FIRST = len(LARGE) // 2 + 100


class _Holding(BaseHTTPRequestHandler):
    """Sends ``FIRST`` bytes of ``LARGE``, and the rest once ``release`` is set (5 s at most)."""

    protocol_version = "HTTP/1.1"
    release: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(LARGE)))
        self.end_headers()
        self.wfile.write(LARGE[:FIRST])
        self.wfile.flush()
        self.release.wait(5)
        self.wfile.write(LARGE[FIRST:])

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.mark.parametrize("gather", [0.0, upstream.GATHER, 5.0], ids=["none", "default", "long"])
def test_the_bytes_received_are_handed_on_while_the_upstream_holds_the_rest(
    monkeypatch: pytest.MonkeyPatch, gather: float
) -> None:
    """However long the window, no byte waits in a piece for bytes the upstream has not sent: a
    reader of the download (a client, a range) gets what came so far."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setattr(upstream, "GATHER", gather)
    release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Holding", (_Holding,), {"release": release}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    fetcher = HttpFetcher(f"http://127.0.0.1:{port}/simple/")
    try:
        stream = fetcher.open(f"http://127.0.0.1:{port}/files/large")
        pieces = stream.chunks()
        got, started = b"", time.monotonic()
        while len(got) < FIRST:
            got += next(pieces)
        assert time.monotonic() - started < 2.5  # not once the upstream sent the rest
        release.set()
        got += b"".join(pieces)
        stream.close()
    finally:
        release.set()
        fetcher.close()
        server.shutdown()
        server.server_close()
    assert got == LARGE


def test_a_bundle_without_the_upstreams_ca_still_refuses_it(
    index: TlsIndex, bundle: Path, loads: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    fetcher = HttpFetcher(index.index_url)
    try:
        assert fetcher.project("pkg", etag=None, last_modified=None).page is not None
        fetcher.close()
        trustme.CA().cert_pem.write_to_path(str(bundle))  # rewritten with another CA only
        with pytest.raises(UpstreamError, match=r"127\.0\.0\.1"):
            fetcher.project("pkg", etag=None, last_modified=None)
    finally:
        fetcher.close()
    assert len(loads) == 2  # once for each bundle


@pytest.mark.parametrize(
    "value",
    [
        "missing.pem",  # requests says what is wrong at the first request, as before
        ".",  # a folder of CAs: OpenSSL reads what it needs as it verifies
    ],
)
def test_prepare_leaves_what_it_cannot_load_to_the_first_request(
    index: TlsIndex, bundle: Path, loads: list[Any], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle.parent / value))
    fetcher = HttpFetcher(index.index_url)
    try:
        fetcher.prepare()  # quietly
    finally:
        fetcher.close()
    assert (len(loads), index.connections) == (0, 0)


@pytest.mark.parametrize(("offline", "loaded"), [(False, 1), (True, 0)])
def test_a_mirror_prepares_its_upstream_client_as_it_starts(
    index: TlsIndex,
    bundle: Path,
    loads: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    offline: bool,
    loaded: int,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    config = Config(nestegg_dir=tmp_path / "nest", index_url=index.index_url, port=0, offline=offline)
    with Mirror(config) as mirror:
        deadline = time.monotonic() + 10
        while len(loads) < loaded and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (len(loads), index.connections) == (loaded, 0)
        assert (mirror.repository.prepare() is None) is offline


def test_a_mirror_prepares_once_no_request_has_come_for_a_moment(
    index: TlsIndex, bundle: Path, loads: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A warm run's first pages, asked at once, do not share the cores with the bundle's load."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    config = Config(nestegg_dir=tmp_path / "nest", index_url=index.index_url, port=0)
    with Mirror(config) as mirror:
        repository = mirror.repository
        asking_until = time.monotonic() + 0.5
        while time.monotonic() < asking_until:  # pages asked for, one every 10 ms
            repository._asked = time.monotonic()
            time.sleep(0.01)
        assert loads == []
        deadline = time.monotonic() + 10
        while not loads and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(loads) == 1
        assert time.monotonic() - repository._asked >= PREPARE_QUIET


class _Recorder(BaseHTTPRequestHandler):
    """Answers any GET with 2 bytes, recording its request target (a proxy gets a whole URL)."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def _fetched(fetcher: HttpFetcher, host: str, port: int, bodies: list[bytes]) -> None:
    stream = fetcher.open(f"http://{host}:{port}/files/demo-1.0.tar.gz")
    try:
        bodies.append(b"".join(stream.chunks()))
    finally:
        stream.close()


def test_the_environment_is_read_once_an_origin_each_with_its_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NO_PROXY names one host: its requests go straight, the other's through the proxy, however
    many there are; requests reads the environment for the first request to each origin only."""
    seen: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Recorder", (_Recorder,), {"seen": seen}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    reads: list[object] = []
    environ_proxies = requests.sessions.get_environ_proxies

    def counted(url: str, no_proxy: str | None = None) -> dict[str, str]:
        reads.append(url)
        return environ_proxies(url, no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    fetcher = HttpFetcher(f"http://127.0.0.1:{port}/simple/")
    try:
        for _ in range(3):
            for host in ("127.0.0.1", "localhost"):
                # in a thread of its own, as a download is: its session is new, not what it knows
                bodies: list[bytes] = []
                thread = threading.Thread(target=_fetched, args=(fetcher, host, port, bodies))
                thread.start()
                thread.join(30)
                assert bodies == [b"ok"]
    finally:
        fetcher.close()
        server.shutdown()
        server.server_close()
    assert seen == ["/files/demo-1.0.tar.gz", f"http://localhost:{port}/files/demo-1.0.tar.gz"] * 3
    assert len(reads) == 2


def _files_page(name: str, files: int) -> bytes:
    entries = [
        {"filename": f"{name}-{i}.0.tar.gz", "url": f"{name}-{i}.0.tar.gz", "hashes": {}}
        for i in range(files)
    ]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": entries}).encode()


#: files of a page well past LARGE_PAGE_BYTES (about 80 bytes each), of one just past it, and of
#: one well under it
LARGE_FILES, MEDIUM_FILES, SMALL_FILES = 8000, 4000, 100
#: what the held page sends before it waits: past LARGE_PAGE_BYTES, so that it takes the gate
HELD_PART = upstream.LARGE_PAGE_BYTES + 2 * upstream.PAGE_CHUNK


class _HeldPage:
    """An upstream whose page ``held`` stops past ``LARGE_PAGE_BYTES`` until ``go`` is set (or,
    ``broken``, breaks off there), every other page ``<name>`` sent whole at once, with the ETag
    ``SAME``."""

    def __init__(self, *, broken: bool = False) -> None:
        self.go = threading.Event()
        self.broken = broken
        self.body = _files_page("held", LARGE_FILES)
        assert len(self.body) > HELD_PART

    def _drip(self) -> Iterator[bytes]:
        yield self.body[:HELD_PART]
        self.go.wait(30)
        if not self.broken:
            yield self.body[HELD_PART:]

    def __call__(self, _method: str, path: str) -> Answer:
        name = path.strip("/").split("/")[-1]
        if name == "held":
            # broken: the connection closes short of the length it gave
            length = len(self.body) if self.broken else None
            return Answer(pieces=self._drip, headers={"Content-Type": JSON}, length=length)
        files = {"small": SMALL_FILES, "medium": MEDIUM_FILES}.get(name, LARGE_FILES)
        return Answer(body=_files_page(name, files), headers={"Content-Type": JSON, "ETag": SAME})


SAME = '"same"'


def _fetch_in_thread(
    fetcher: HttpFetcher, name: str, into: dict[str, Any], *, background: bool = False, spooled: bool = False
) -> threading.Thread:
    # spooled: asked by a digest other than its own, with the ETag it has: read whole, then parsed
    known = {"etag": SAME, "digest": "0" * 64} if spooled else {"etag": None}

    def fetch() -> None:
        try:
            with in_background() if background else contextlib.nullcontext():
                into[name] = fetcher.project(name, last_modified=None, **known).page
        except Exception as exc:  # noqa: BLE001 - what the test looks at
            into[name] = exc

    thread = threading.Thread(target=fetch, name=f"fetch-{name}", daemon=True)
    thread.start()
    return thread


def _until_held(fetcher: HttpFetcher) -> None:
    deadline = time.monotonic() + 10
    while not fetcher._large_pages.locked():  # the held page is past LARGE_PAGE_BYTES
        assert time.monotonic() < deadline, "the held page never took the gate"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("other", "waits"),
    [
        ("large", True),  # one large page's model grows at a time, as uv asks for every page at once
        ("small", False),  # a page that stays under LARGE_PAGE_BYTES never waits
        ("background", False),  # nor one fetched ahead: few at once, and no client waits on it
        ("spooled", False),  # nor one read whole before it is parsed: no model grows as it is read
        ("past-the-wait", False),  # nor any longer than LARGE_PAGE_WAIT, however slow the other
    ],
)
def test_a_large_page_is_parsed_for_a_client_while_no_other_large_one_is(
    other: str, waits: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "LARGE_PAGE_WAIT", 0.3 if other == "past-the-wait" else 30.0)
    script = _HeldPage()
    pages: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    with RawUpstream(script) as server:
        fetcher = HttpFetcher(server.index_url, timeout=30)
        try:
            threads.append(held := _fetch_in_thread(fetcher, "held", pages))
            _until_held(fetcher)
            started = time.monotonic()
            second = _fetch_in_thread(
                fetcher, other, pages, background=other == "background", spooled=other == "spooled"
            )
            threads.append(second)
            second.join(1.5 if waits else 10)
            assert second.is_alive() is waits
            assert "held" not in pages
            script.go.set()
            held.join(10)
            second.join(10)
            assert not held.is_alive()
            assert not second.is_alive()
            if other == "past-the-wait":
                assert time.monotonic() - started >= upstream.LARGE_PAGE_WAIT
        finally:
            script.go.set()
            for thread in threads:
                thread.join(10)
            fetcher.close()
    assert [file.filename for file in pages["held"].files] == [
        f"held-{i}.0.tar.gz" for i in range(LARGE_FILES)
    ]
    assert len(pages[other].files) == (SMALL_FILES if other == "small" else LARGE_FILES)
    assert not fetcher._large_pages.locked()


def test_a_large_page_that_breaks_off_lets_the_next_one_through() -> None:
    script = _HeldPage(broken=True)
    pages: dict[str, Any] = {}
    with RawUpstream(script) as server:
        fetcher = HttpFetcher(server.index_url, timeout=30)
        held = _fetch_in_thread(fetcher, "held", pages)
        try:
            _until_held(fetcher)
            script.go.set()
            held.join(10)
            assert isinstance(pages["held"], UpstreamError)
            assert not fetcher._large_pages.locked()
            page = fetcher.project("large", etag=None, last_modified=None).page
            assert page is not None
            assert len(page.files) == LARGE_FILES
        finally:
            script.go.set()
            held.join(10)
            fetcher.close()


def test_a_large_page_refused_midway_lets_the_next_one_through_while_its_error_is_kept() -> None:
    # the error's traceback holds the fetch's frames, and with them the page's reader
    with RawUpstream(_HeldPage()) as server:
        # past 5,000 files, refused as they are parsed: after the gate was taken at about 3,300
        fetcher = HttpFetcher(server.index_url, timeout=30, max_page_size=5000 * upstream._BYTES_PER_FILE)
        try:
            with pytest.raises(UpstreamError, match="more than 5,000 files") as refused:
                fetcher.project("large", etag=None, last_modified=None)
            assert refused.value.__context__ is not None  # kept, with its traceback
            assert not fetcher._large_pages.locked()
            page = fetcher.project("medium", etag=None, last_modified=None).page
        finally:
            fetcher.close()
    assert page is not None
    assert len(page.files) == MEDIUM_FILES


def test_the_wait_for_the_gate_is_not_counted_against_the_page_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream, "LARGE_PAGE_WAIT", 1.0)
    script = _HeldPage()
    pages: dict[str, Any] = {}
    with RawUpstream(script) as server:
        # the other page waits out LARGE_PAGE_WAIT, longer than its whole deadline
        fetcher = HttpFetcher(server.index_url, timeout=30, page_deadline=0.5)
        held = _fetch_in_thread(fetcher, "held", pages)
        try:
            _until_held(fetcher)
            started = time.monotonic()
            page = fetcher.project("large", etag=None, last_modified=None).page
            assert time.monotonic() - started >= upstream.LARGE_PAGE_WAIT
        finally:
            script.go.set()
            held.join(10)
            fetcher.close()
    assert page is not None
    assert len(page.files) == LARGE_FILES


class DrippingHead:
    """An upstream on 127.0.0.1:0 that answers every request with a status line, then a header
    field a byte every ``pace`` seconds, never ending its head (for ``bound`` seconds at most)."""

    def __init__(self, pace: float = 0.05, bound: float = 20.0) -> None:
        self.pace, self.bound = pace, bound
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.index_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/simple/"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DrippingHead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # wakes the accept
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                client, _ = self._sock.accept()
                threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            client.recv(65536)
            client.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            ends = time.monotonic() + self.bound
            while not self._stop.is_set() and time.monotonic() < ends:
                client.sendall(b"a")
                self._stop.wait(self.pace)


@pytest.mark.parametrize("what", ["page", "file"])
def test_an_answer_whose_head_drips_is_a_timeout_within_the_read_timeout(what: str) -> None:
    with DrippingHead() as server:
        fetcher = HttpFetcher(server.index_url, timeout=1)
        file_url = server.index_url.replace("/simple/", "/files/demo-1.0.tar.gz")

        def ask() -> object:
            if what == "page":
                return fetcher.project("demo", etag=None, last_modified=None)
            return fetcher.open(file_url)

        started = time.monotonic()
        try:
            with pytest.raises(UpstreamTimeout, match=r"did not answer in 1s"):
                ask()
        finally:
            fetcher.close()
        # a byte every 50 ms kept each read of the socket under 1 s; the head as a whole is not
        assert time.monotonic() - started < 4


def test_an_answer_cut_off_in_its_head_is_no_page() -> None:
    # http.client takes the head for whole at the end of the connection: a 200 without a body
    with RawUpstream(lambda _method, _path: Answer(raw=b"Content-Type: text/html\r\nX-Cut: b")) as server:
        fetcher = HttpFetcher(server.index_url, timeout=5)
        try:
            with pytest.raises(UpstreamError, match=r"is empty"):
                fetcher.project("demo", etag=None, last_modified=None)
        finally:
            fetcher.close()
