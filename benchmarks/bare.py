"""A bare caching proxy for the benchmarks: the least a mirror on nestegg's stack does cold.

Run as a separate process, as the servers are, with nestegg's interpreter (waitress, requests)::

    python benchmarks/bare.py --port PORT --upstream INDEX_URL --cache DIR

It answers ``/simple/<name>/`` with the upstream's JSON page, each file's URL made its own
(``http://HOST/files/<name>/<filename>``), and ``/files/<name>/<filename>`` with the upstream's
bytes as they come, written to ``DIR`` on the way; ``/health`` answers 200. It keeps nothing but
where the files it listed are: no lock, no check, no page saved, no second answer from its cache.
The time pip takes through it cold (the "bare proxy" column) is what any mirror made of waitress
and requests adds to the upstream's, the floor of nestegg's cold rows. Pages only in JSON; an
upstream that answers otherwise gets a 502.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin

import requests
import urllib3
from waitress import serve

JSON = "application/vnd.pypi.simple.v1+json"
CHUNK = 64 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Adapter(requests.adapters.HTTPAdapter):
    """One pool of connections for every thread, verified with the CA bundle loaded once, before
    the first request (as nestegg does): a connection per thread, or the bundle read again for
    each, would cost this floor a TLS handshake or tens of ms that nestegg does not pay."""

    def __init__(self, bundle: str) -> None:
        self.context = urllib3.util.create_urllib3_context()
        if os.path.isdir(bundle):
            self.context.load_verify_locations(capath=bundle)
        else:
            self.context.load_verify_locations(cafile=bundle)
        super().__init__(pool_maxsize=16)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self.context, **kwargs)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, ssl_context=self.context, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        conn.ca_certs = conn.ca_cert_dir = None  # in the context already


class Proxy:
    def __init__(self, upstream: str, cache: Path) -> None:
        self.upstream = upstream.rstrip("/") + "/"
        self.cache = cache
        #: each listed file's upstream URL, by project and filename
        self.urls: dict[tuple[str, str], str] = {}
        verify = requests.Session().merge_environment_settings(self.upstream, {}, None, None, None)["verify"]
        self.adapter = _Adapter(verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH)
        # requests' sessions are not thread-safe: one for each of waitress's threads, on one pool
        self.local = threading.local()

    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.mount("https://", self.adapter)
            session.mount("http://", self.adapter)
        return session

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        parts = unquote(environ.get("PATH_INFO", "")).strip("/").split("/")
        if parts == ["health"]:
            return _answer(start_response, "200 OK", b"ok", "text/plain")
        if len(parts) == 2 and parts[0] == "simple":
            return self.page(parts[1], f"http://{environ['HTTP_HOST']}", start_response)
        if len(parts) == 3 and parts[0] == "files":
            return self.file(parts[1], parts[2], start_response)
        return _answer(start_response, "404 Not Found", b"not found", "text/plain")

    def page(self, name: str, base: str, start_response: StartResponse) -> Iterable[bytes]:
        page_url = f"{self.upstream}{quote(name)}/"
        response = self.session().get(page_url, headers={"Accept": JSON})
        if response.status_code != 200:
            return _answer(start_response, f"{response.status_code} Upstream", response.content, "text/plain")
        if response.headers.get("Content-Type", "").split(";")[0].strip() != JSON:
            return _answer(start_response, "502 Bad Gateway", b"the upstream gave no JSON page", "text/plain")
        data = json.loads(response.content)
        for entry in data["files"]:
            filename = entry["filename"]
            self.urls[(name, filename)] = urljoin(page_url, entry["url"]).split("#", 1)[0]
            entry["url"] = f"{base}/files/{quote(name)}/{quote(filename)}"
        return _answer(start_response, "200 OK", json.dumps(data, separators=(",", ":")).encode(), JSON)

    def file(self, name: str, filename: str, start_response: StartResponse) -> Iterable[bytes]:
        url = self.urls.get((name, filename))
        if url is None or filename in (".", ".."):
            return _answer(start_response, "404 Not Found", b"not listed", "text/plain")
        response = self.session().get(url, headers={"Accept-Encoding": "identity"}, stream=True)
        if response.status_code != 200:
            response.close()
            return _answer(start_response, f"{response.status_code} Upstream", b"", "text/plain")
        headers = [("Content-Type", "application/octet-stream")]
        if "Content-Length" in response.headers:
            headers.append(("Content-Length", response.headers["Content-Length"]))
        start_response("200 OK", headers)
        return self._copy(response, self.cache / filename)

    @staticmethod
    def _copy(response: requests.Response, path: Path) -> Iterator[bytes]:
        with response, open(path, "wb") as out:
            for chunk in response.raw.stream(CHUNK, decode_content=False):
                out.write(chunk)
                yield chunk


def _answer(start_response: StartResponse, status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    parser.add_argument("--upstream", required=True, help="the Simple API root to proxy")
    parser.add_argument("--cache", type=Path, required=True, help="folder the files are written to")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    args.cache.mkdir(parents=True, exist_ok=True)
    serve(Proxy(args.upstream, args.cache), host="127.0.0.1", port=args.port, threads=16, _quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
