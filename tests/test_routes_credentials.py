"""The credentials of a routed index: from its URL, ``.netrc`` or the keyring, sent to its own
origin only (not to the file host it redirects to), and shown nowhere."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from nestegg_core import Config, Mirror
from nestegg_core.config.config import Upstream
from nestegg_core.http.types import WSGIApp
from nestegg_core.index.logins import index_credentials
from nestegg_core.index.upstream import HttpFetcher
from nestegg_core.serve.server import describe
from nestegg_core.testing import installer_env, make_venv
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, pip_download
from .loopback import install_command, refused_url

SECRET = "S3cret-of-the-internal-index"  # noqa: S105 - the test's own
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def redirect_files(app: WSGIApp) -> WSGIApp:
    """Files asked of the index at ``localhost`` are sent on to ``127.0.0.1``: another host."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "")
        if environ["PATH_INFO"].startswith("/files/") and host.startswith("localhost:"):
            target = f"http://127.0.0.1:{host.rpartition(':')[2]}{environ['PATH_INFO']}"
            start_response("302 Found", [("Location", target), ("Content-Length", "0")])
            return [b""]
        return app(environ, start_response)

    return wrapped


@pytest.fixture
def internal_faults() -> Faults:
    return Faults()


@pytest.fixture
def internal(tmp_path: Path, internal_faults: Faults) -> Iterator[PrivateIndex]:
    index = PrivateIndex(tmp_path / "internal", middleware=lambda app: internal_faults(redirect_files(app)))
    index.start()
    index.add("acme-tools", "1.0")
    try:
        yield index
    finally:
        index.stop()


def localhost(index: PrivateIndex, *, login: str = "") -> str:
    return index.index_url.replace("127.0.0.1", f"{login}localhost")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def requiring(authorization: str) -> Callable[[WSGIApp], WSGIApp]:
    """The middleware of an index that answers 401 to a request without ``authorization``."""

    def middleware(app: WSGIApp) -> WSGIApp:
        def guard(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("HTTP_AUTHORIZATION") != authorization:
                start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="x"')])
                return [b"who are you\n"]
            return app(environ, start_response)

        return guard

    return middleware


def fetch_everything(mirror: Mirror) -> list[bytes]:
    """A page, its file, the root index, /metrics and the web UI: what a secret could leak into."""
    page = requests.get(f"{mirror.index_url}acme-tools/", headers=JSON, timeout=10)
    assert page.status_code == 200, page.reason
    bodies = [page.content, requests.get(f"{mirror.index_url}acme-tools/", timeout=10).content]
    for dist in page.json()["files"]:
        got = requests.get(requests.compat.urljoin(page.url, dist["url"]), timeout=10)
        assert got.status_code == 200, got.reason
    for path in ("/simple/", "/metrics", "/ui/", "/ui/project/acme-tools", "/ui/?format=json"):
        answer = requests.get(mirror.url + path, timeout=10)
        bodies.append(answer.content + repr(answer.headers).encode())
    return bodies


def assert_kept_secret(
    tmp_path: Path, bodies: list[bytes], log: str, sent: str = basic("alice", SECRET)
) -> None:
    encoded = sent.removeprefix("Basic ").encode()
    for secret in (SECRET.encode(), encoded):
        assert not any(secret in body for body in bodies)
        assert secret.decode() not in log
        for path in (tmp_path / "nest").rglob("*"):
            assert not (path.is_file() and secret in path.read_bytes()), path


def assert_only_its_origin(
    internal_faults: Faults, faults: Faults, sent: str = basic("alice", SECRET)
) -> None:
    to_index = [s for s in internal_faults.seen if s.headers.get("host", "").startswith("localhost:")]
    to_file_host = [s for s in internal_faults.seen if s.headers.get("host", "").startswith("127.0.0.1:")]
    assert to_index, "the index was asked"
    assert to_file_host, "the files were redirected to the other host"
    assert all(s.headers.get("authorization") == sent for s in to_index)
    assert not any("authorization" in s.headers for s in to_file_host)
    assert not any("authorization" in s.headers for s in faults.seen)


def mirror_of(tmp_path: Path, upstream: PrivateIndex, url: str) -> Mirror:
    config = Config(
        nestegg_dir=tmp_path / "nest",
        port=0,
        index_url=upstream.index_url,
        upstreams=(Upstream(url=url, projects=("acme-*",)),),
    )
    return Mirror(config)


#: how the index is given its credentials: its URL's login (a token alone, as pip takes it: as the
#: user, with an empty password), or .netrc; and the Authorization it must be sent
SOURCES = {
    "url": (f"alice:{SECRET}@", basic("alice", SECRET)),
    "token": (f"{SECRET}@", basic(SECRET, "")),
    "token-colon": (f"{SECRET}:@", basic(SECRET, "")),
    "netrc": ("", basic("alice", SECRET)),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_credentials_reach_the_routed_index_only_and_are_shown_nowhere(
    tmp_path: Path,
    upstream: PrivateIndex,
    faults: Faults,
    internal: PrivateIndex,
    internal_faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    source: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    login, sent = SOURCES[source]
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine localhost login alice password {SECRET}\n" if source == "netrc" else "")
    netrc.chmod(0o600)
    url = localhost(internal, login=login)
    monkeypatch.setenv("NETRC", str(netrc))
    upstream.add("public-lib", "1.0")
    with mirror_of(tmp_path, upstream, url) as mirror:
        bodies = fetch_everything(mirror)
        bodies.append(requests.get(f"{mirror.index_url}public-lib/", timeout=10).content)
        internal_faults.status = 503  # a failure names the index, never its password
        down = requests.get(f"{mirror.index_url}acme-x/", timeout=10)
        assert down.status_code == 502
        bodies.append(down.content + down.reason.encode())
    assert_only_its_origin(internal_faults, faults, sent)
    assert_kept_secret(tmp_path, bodies, "\n".join(r.getMessage() for r in caplog.records), sent)


@pytest.mark.parametrize(
    ("login", "masked"),
    [(f"{SECRET}@", "***@"), (f"{SECRET}:@", "***@"), (f"alice:{SECRET}@", "alice:***@")],
    ids=["token", "token-colon", "password"],
)
def test_an_index_that_cannot_be_reached_is_named_without_its_credentials(
    tmp_path: Path, upstream: PrivateIndex, caplog: pytest.LogCaptureFixture, login: str, masked: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url = refused_url().replace("http://", f"http://{login}")
    shown_as = f"http://{masked}127.0.0.1:{urlsplit(url).port}/simple/"
    with mirror_of(tmp_path, upstream, url) as mirror:
        down = requests.get(f"{mirror.index_url}acme-x/", timeout=10)
    assert down.status_code == 410  # the cache has nothing for it: pip and uv go on at once
    assert shown_as in down.reason
    with Mirror(Config(nestegg_dir=tmp_path / "default", port=0, index_url=url)) as default:
        serving = describe(default)  # the line the server starts with
    assert f"upstream {shown_as}" in serving
    shown = [down.reason, down.text, caplog.text, serving]
    assert not any(SECRET in text for text in shown), shown


def test_netrc_is_read_for_the_index_host_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine index.example.com login alice password {SECRET}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setitem(sys.modules, "keyring", None)  # no keyring: an ImportError
    assert index_credentials("https://index.example.com/simple/") == ("alice", SECRET)
    assert index_credentials("https://files.example.com/simple/") is None
    # a URL's own credentials come first
    assert index_credentials("https://bob:pw@index.example.com/simple/") == ("bob", "pw")


def test_the_keyring_is_asked_when_it_can_be_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    asked: list[str] = []

    def get_credential(service: str, username: str | None) -> object:
        asked.append(service)
        if service == "keyring.example.com":  # pip asks by URL, then by host
            return types.SimpleNamespace(username="carol", password=SECRET)
        return None

    fake = types.ModuleType("keyring")
    fake.get_credential = get_credential  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)
    assert index_credentials("https://keyring.example.com/simple/") == ("carol", SECRET)
    assert asked == ["https://keyring.example.com/simple/", "keyring.example.com"]
    assert index_credentials("https://other.example.com/simple/") is None

    def broken(service: str, username: str | None) -> object:
        raise RuntimeError("no backend")

    fake.get_credential = broken  # type: ignore[attr-defined]
    assert index_credentials("https://keyring.example.com/simple/") is None


def test_a_redirect_to_another_host_reads_no_netrc_for_it(
    tmp_path: Path, internal: PrivateIndex, internal_faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests, left alone, reads .netrc again for the host a redirect leads to
    netrc = tmp_path / "netrc"
    netrc.write_text(
        f"machine localhost login alice password {SECRET}\nmachine 127.0.0.1 login bob password x\n"
    )
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    fetcher = HttpFetcher(localhost(internal))
    page = fetcher.project("acme-tools", etag=None, last_modified=None).page
    assert page is not None
    for dist in page.files:
        stream = fetcher.open(dist.url)
        assert b"".join(stream.chunks())
        stream.close()
    assert_only_its_origin(internal_faults, Faults())


def test_the_keyring_is_asked_only_once_the_index_asks_for_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As pip does: a keyring backend may take a fraction of a second to load, or ask its user to
    unlock it, so an index that never answers 401 never has it asked; one that does, once."""
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    asked: list[str] = []
    token = base64.b64encode(f"carol:{SECRET}".encode()).decode()

    def get_credential(service: str, username: str | None) -> object:
        asked.append(service)
        return types.SimpleNamespace(username="carol", password=SECRET)

    fake = types.ModuleType("keyring")
    fake.get_credential = get_credential  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)

    with (
        PrivateIndex(tmp_path / "open") as open_index,
        PrivateIndex(tmp_path / "shut", middleware=requiring(f"Basic {token}")) as shut,
    ):
        open_index.add("pkg", "1.0")
        shut.add("pkg", "1.0")
        fetcher = HttpFetcher(open_index.index_url)
        assert fetcher.project("pkg", etag=None, last_modified=None).page is not None
        assert asked == []  # made and used without a look at the keyring
        fetcher = HttpFetcher(shut.index_url)
        assert asked == []
        for _ in range(2):
            assert fetcher.project("pkg", etag=None, last_modified=None).page is not None
        assert len(asked) == 1  # asked by the index's URL, once, after its first 401


@pytest.mark.slow
@pytest.mark.parametrize("login", [f"{SECRET}@", f"{SECRET}:@"], ids=["token", "token-colon"])
def test_pip_installs_through_the_mirror_from_an_index_that_takes_a_token_alone(
    tmp_path: Path, upstream: PrivateIndex, caplog: pytest.LogCaptureFixture, login: str
) -> None:
    """A token as the user name of the URL, as pip sends it: Basic ``TOKEN:``, from the first request."""
    caplog.set_level(logging.DEBUG)
    with PrivateIndex(tmp_path / "tokened", middleware=requiring(basic(SECRET, ""))) as index:
        index.add("acme-tools", "1.0")
        url = index.index_url.replace("http://", f"http://{login}")
        pip_download(url, tmp_path / "direct", "acme-tools")  # pip, straight to the index, is let in
        python = make_venv(tmp_path / "venv")
        with mirror_of(tmp_path, upstream, url) as mirror:
            done = subprocess.run(
                install_command("pip", python, "acme-tools==1.0"),
                env=installer_env(mirror.index_url),
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET not in caplog.text + done.stdout + done.stderr
