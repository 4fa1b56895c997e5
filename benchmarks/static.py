"""A static Simple API for the benchmarks: a warm mirror's pages as files, served with no work.

Run as a separate process, as the servers are::

    python benchmarks/static.py ROOT --port PORT [--absolute]

It answers ``/simple/<name>/`` with ``ROOT/pages/<name>.json`` and ``/files/<name>/<filename>``
(and its ``.metadata``) with ``ROOT/files/<filename>``, as :func:`snapshot` saved them from a warm
nestegg, until it gets SIGTERM.

pip reads the same links from it as from the mirror, and the server only reads files: the time an
installer takes against it is the least any server of these pages can give (the "static" column).
With ``--absolute`` the pages give each file's URL whole (``http://127.0.0.1:PORT/files/...``)
instead of relative to the page, as the mirror gives it: the difference is what relative URLs
cost the installer (the "static, absolute URLs" column). Those pages are written to
``ROOT/pages-absolute-PORT`` before the server listens, and removed when it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import load

JSON = "application/vnd.pypi.simple.v1+json"
#: loopback only: no proxy of this machine's environment in between
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def snapshot(index_url: str, names: list[str], downloaded: Path, root: Path) -> None:
    """Save into ``root`` what the static server serves of the Simple API at ``index_url``.

    ``root/pages`` gets the JSON page of each of ``names`` as pip gets it (its User-Agent: a page
    for pip lists other metadata); ``root/files`` gets a copy of each file in ``downloaded`` (what
    pip fetched) and its PEP 658 ``.metadata`` where the page lists one.
    """
    pages, files = root / "pages", root / "files"
    pages.mkdir(parents=True, exist_ok=True)
    files.mkdir(parents=True, exist_ok=True)
    wanted = {path.name for path in downloaded.iterdir()}
    for name in names:
        page_url = f"{index_url}{name}/"
        body = _get(page_url, load.PIP_ACCEPT, JSON, user_agent=load.PIP_USER_AGENT)
        page = json.loads(body)
        # nestegg's file URLs are absolute, to itself: the static server's pages name its files
        # relative to the page, as they are served (absolute_pages makes them absolute again)
        for entry in page["files"]:
            entry["url"] = "../.." + urlsplit(urljoin(page_url, entry["url"])).path
        (pages / f"{name}.json").write_text(json.dumps(page, separators=(",", ":")))
        for entry in page["files"]:
            if entry["filename"] not in wanted:
                continue
            shutil.copyfile(downloaded / entry["filename"], files / entry["filename"])
            if entry.get("core-metadata"):
                metadata = _get(urljoin(page_url, entry["url"]) + ".metadata", "*/*", None)
                (files / f"{entry['filename']}.metadata").write_bytes(metadata)


def _get(url: str, accept: str, content_type: str | None, *, user_agent: str = "nestegg-bench") -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": user_agent})
    with _OPENER.open(request, timeout=60) as response:
        if content_type is not None and response.headers.get_content_type() != content_type:
            raise RuntimeError(f"{url} answered {response.headers['Content-Type']}, not {content_type}")
        return bytes(response.read())


def handler(pages: Path, files: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as pip's session expects
        # the headers and the body go in separate writes: with Nagle's algorithm the body's waits
        # for the client's delayed ACK of the headers (40 ms a response)
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            parts = unquote(urlsplit(self.path).path).strip("/").split("/")
            if len(parts) == 2 and parts[0] == "simple":
                self._send(pages / f"{parts[1]}.json", JSON)
            elif len(parts) == 3 and parts[0] == "files":
                self._send(files / parts[2], "application/octet-stream")
            else:
                self._send(None, "")

        def _send(self, path: Path | None, content_type: str) -> None:
            if path is None or path.name in ("", ".", "..") or not path.is_file():
                self.send_error(404)
                return
            with open(path, "rb") as body:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(os.fstat(body.fileno()).st_size))
                self.end_headers()  # written to the socket: wfile is not buffered
                self.connection.sendfile(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    #: the listen backlog (5 by default): uv opens dozens of connections at once; waitress's is 1024
    request_queue_size = 1024
    daemon_threads = True


def absolute_pages(pages: Path, target: Path, index_url: str) -> None:
    """Each page of ``pages`` into ``target`` with its file URLs made absolute against the page's
    URL under ``index_url``; nothing else changes."""
    target.mkdir(parents=True, exist_ok=True)
    for page in pages.glob("*.json"):
        data = json.loads(page.read_bytes())
        page_url = f"{index_url}{page.stem}/"
        for entry in data["files"]:
            entry["url"] = urljoin(page_url, entry["url"])
        (target / page.name).write_text(json.dumps(data, separators=(",", ":")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("root", type=Path, help="a directory written by snapshot()")
    parser.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    parser.add_argument("--absolute", action="store_true", help="give file URLs whole, not relative")
    args = parser.parse_args(argv)
    if args.absolute and args.port == 0:
        parser.error("--absolute needs the port the URLs name: not 0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pages = args.root / ("pages" if not args.absolute else f"pages-absolute-{args.port}")
    try:
        if args.absolute:  # made before the socket listens: no request finds them missing
            absolute_pages(args.root / "pages", pages, f"http://127.0.0.1:{args.port}/simple/")
        server = _Server(("127.0.0.1", args.port), handler(pages, args.root / "files"))
        try:
            server.serve_forever()
        finally:
            server.server_close()
    finally:
        if args.absolute:
            shutil.rmtree(pages, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
