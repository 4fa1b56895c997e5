"""The WSGI application: routing, HTTP semantics of the Simple API, errors to statuses.

:class:`NesteggApp` is made of its pieces (the upload handler, the read guard, more routes and
background services), which the composition root (:mod:`nestegg_core.serve.compose`) makes and
hands to its constructor; :meth:`NesteggApp.add_route` and :meth:`NesteggApp.add_service` add
more to a running one (the upstreams a tox run mounts).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol
from urllib.parse import quote

from packaging.utils import canonicalize_name

from nestegg_core.errors import (
    BodyTooLarge,
    LoopDetected,
    NesteggError,
    NotCached,
    NotFound,
    no_files_left,
    out_of_files,
)
from nestegg_core.index import later
from nestegg_core.index.ahead import PageRequest
from nestegg_core.index.downloads import ClientGone
from nestegg_core.index.repository import Repository
from nestegg_core.index.upstream import hops_of, loop_in
from nestegg_core.simple.clients import (
    answered_before_writing,
    downloads_after_metadata,
    lists_cached_metadata,
    profile_from_user_agent,
)
from nestegg_core.simple.distmeta import metadata_fields
from nestegg_core.simple.jsonapi import find_release, latest_release, project_json, releases_of
from nestegg_core.simple.models import is_valid_name
from nestegg_core.simple.render import accepts_gzip, negotiate, quote_filename
from nestegg_core.storage.pagefiles import PageFile, PageStream, etag

from .answers import MOUNT, error, etag_matches, failed, json_answer, redirect, status_line
from .files import BLOCK, FileRange, Files
from .metrics import answer as metrics_answer
from .middleware import loggable
from .types import Admission, Environ, ReadGuard, Service, StartResponse, WSGIApp

logger = logging.getLogger(__name__)

PAGE_CACHE_CONTROL = "max-age=0, must-revalidate"
#: the most bytes of body a request other than an upload may send (the CI trigger sends none)
SMALL_BODY = 64 * 1024
UPLOAD_PATHS = ("/", "/legacy", "/legacy/")
#: rendered pages up to this size are read whole; larger ones are sent a block at a time
_READ_WHOLE = 64 * 1024
#: a Host header fit to start a URL with: a name or an IPv4 or bracketed IPv6 address, and a port
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?")


class Upload(Protocol):
    """The handler of upload POSTs (``/``, ``/legacy``, ``/legacy/``)."""

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]: ...

    def admit(self, environ: Environ) -> Admission:
        """Whether to read the body of an upload whose headers are all in."""
        ...


class NesteggApp:
    """Routes requests to the :class:`Repository`; the only place errors become statuses."""

    def __init__(
        self,
        repository: Repository,
        *,
        upload: Upload | None = None,
        guard: ReadGuard | None = None,
        routes: Mapping[str, WSGIApp] | None = None,
        post_routes: Mapping[str, WSGIApp] | None = None,
        services: Sequence[Service] = (),
        last_index: bool = True,
    ) -> None:
        self.repository = repository
        #: whether clients ask this index last (the mirror's own, which pip and uv get as their
        #: default index): a project it has nothing of while it cannot ask its upstream is a 410,
        #: whose reason uv shows; an extra index (a mount) answers 404, on which uv goes on to
        #: the next index where it would stop at a 410
        self.last_index = last_index
        #: POST handler for uploads (``/``, ``/legacy``, ``/legacy/``)
        self.upload = upload
        #: called before every GET/HEAD; answers the requests it refuses (401), None lets them on
        self.guard = guard
        #: more GET routes by first path segment (web pages, mounted upstreams)
        self.routes: dict[str, WSGIApp] = dict(routes or {})
        #: more POST routes by first path segment (the CI trigger)
        self.post_routes: dict[str, WSGIApp] = dict(post_routes or {})
        #: background work (page refreshes, CI), started once the server listens and stopped with it
        self.services: list[Service] = list(services)
        self.files = Files(repository)

    def add_route(self, prefix: str, handler: WSGIApp, *, method: str = "GET") -> None:
        """Serve the paths under ``/<prefix>/`` with ``handler`` (GET and HEAD, or POST)."""
        routes = self.post_routes if method == "POST" else self.routes
        if prefix in routes:
            raise ValueError(f"the route {prefix!r} is taken")
        routes[prefix] = handler

    def add_service(self, service: Service) -> None:
        """Stop ``service`` with the others (a service added once they run is not started here)."""
        self.services.append(service)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            via = environ.get("HTTP_VIA")
            loop = loop_in(via, self.repository.via_token)
            if loop is not None:
                raise LoopDetected(f"refused: {loop}; an index's file URL may point back at a mirror")
            # the upstream requests made for it (and the downloads it starts) carry its hops on
            with hops_of(via):
                return self._route(environ, start_response)
        except ClientGone:
            raise  # nobody to answer: the server ends the request
        except NesteggError as exc:
            if isinstance(exc, NotCached) and not self.last_index:
                exc.status = 404
            return failed(environ, start_response, exc)
        except Exception as exc:
            if out_of_files(exc):  # a 503 the client may retry, not an error of ours
                logger.warning("cannot answer %s: %s", loggable(environ.get("PATH_INFO")), exc)
                return failed(environ, start_response, no_files_left("answer"))
            logger.exception("error answering %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return error(environ, start_response, 500, "internal error; see the server log")

    def start_services(self) -> None:
        """Start the background services (the server calls this once it listens)."""
        for service in self.services:
            service.start()

    def stop_services(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def _route(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = _path_info(environ)
        parts = path.split("/")
        if method not in ("GET", "HEAD"):
            post_handler = self._post_handler(path, parts)
            if method == "POST" and post_handler is not None:
                return post_handler(environ, start_response)
            # a 405 says what is allowed (RFC 9110, 15.5.6)
            allow = "GET, HEAD" if post_handler is None else "GET, HEAD, POST"
            said = f"method {method!r} is not allowed"
            if method == "POST":
                said = "only uploads are accepted by POST"
            return error(environ, start_response, 405, said, allow=allow)
        if ".." in parts:
            # tools derive the JSON API's URL from an index URL: <index>/../pypi/<name>/json
            target = _json_api_path(path)
            if target is not None:
                return self._redirect(environ, start_response, target)
        if ".." in parts or "" in parts[1:-1]:
            raise NotFound(f"no such path {path!r}")
        if self.guard is not None:
            refused = self.guard(environ, start_response)
            if refused is not None:
                return refused
        head = parts[1] if len(parts) > 1 else ""
        if head == "simple":
            if len(parts) == 2:  # /simple
                return self._redirect(environ, start_response, "/simple/")
            if len(parts) == 3 and parts[2] == "":
                return self._index(environ, start_response)
            if len(parts) in (3, 4) and (len(parts) == 3 or parts[3] == ""):
                return self._project(environ, start_response, parts[2], trailing=len(parts) == 4)
        elif head == "pypi" and len(parts) in (4, 5) and parts[-1] == "json":
            return self._json_api(environ, start_response, parts[2], parts[3] if len(parts) == 5 else None)
        elif head == "files" and len(parts) == 4:
            return self.files(environ, start_response, parts[2], parts[3])
        elif head == "health" and len(parts) == 2:
            return json_answer(environ, start_response, {"status": "ok"})
        elif head == "metrics" and len(parts) == 2:
            return metrics_answer(environ, start_response, self.repository.counters)
        elif head == "" and len(parts) == 2 and "" not in self.routes:
            return self._home(environ, start_response)
        handler = self.routes.get(head)
        if handler is not None:
            return handler(environ, start_response)
        raise NotFound(f"no such path {path!r}")

    def _post_handler(self, path: str, parts: list[str]) -> WSGIApp | Upload | None:
        """What answers a POST to ``path``: the upload handler, or a POST route (the CI trigger)."""
        if path in UPLOAD_PATHS and self.upload is not None:
            return self.upload
        return self.post_routes.get(parts[1] if len(parts) > 1 else "")

    def _redirect(self, environ: Environ, start_response: StartResponse, path: str) -> Iterable[bytes]:
        # under the path of the public URL, if one is set: the front server's, not the app's
        return redirect(environ, start_response, path, public_url=self.repository.config.public_url)

    # pages -------------------------------------------------------------------------------

    def _index(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        content_type = negotiate(environ.get("HTTP_ACCEPT"))
        if content_type is None:
            return error(environ, start_response, 406, _NOT_ACCEPTABLE)
        # with private_read_auth, the names of private projects are private too
        guard = self.guard
        shows = (lambda: guard.allows(environ)) if guard is not None else None
        rendered = self.repository.index(content_type, shows_private=shows)
        return self._page(environ, start_response, content_type, rendered.body, rendered.etag)

    def _project(
        self, environ: Environ, start_response: StartResponse, raw: str, *, trailing: bool
    ) -> Iterable[bytes]:
        if not is_valid_name(raw):
            raise NotFound(f"{raw!r} is not a valid project name")
        name = canonicalize_name(raw)
        if raw != name or not trailing:
            return self._redirect(environ, start_response, f"/simple/{name}/")
        content_type = negotiate(environ.get("HTTP_ACCEPT"))
        if content_type is None:
            return error(environ, start_response, 406, _NOT_ACCEPTABLE)
        asked_at = time.monotonic()
        # pip and other clients get other metadata, and with compatible_only other files
        vary, client = "Accept, Accept-Encoding, User-Agent", None
        agent = environ.get("HTTP_USER_AGENT")
        if self.repository.config.compatible_only:
            client = profile_from_user_agent(agent)
        public_url = self.repository.config.public_url
        gzip = accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING")) and not same_machine(environ, public_url)
        base = base_url(environ, public_url)
        cached_metadata = lists_cached_metadata(agent)
        request = PageRequest(
            content_type=content_type, client=client, gzip=gzip, base=base, cached_metadata=cached_metadata
        )
        self.files.page_asked(agent, request)
        # a page fetched just now is written once an installer has its answer: it waits for no disk
        with later.collecting(answered_before_writing(agent)) as work:
            try:
                rendered = self.repository.rendered(
                    name,
                    content_type,
                    client,
                    gzip=gzip,
                    base=base,
                    cached_metadata=cached_metadata,
                )
            except BaseException:
                later.run(work)
                raise
        try:
            if environ["REQUEST_METHOD"] == "GET" and downloads_after_metadata(agent):
                # pip asks next for the file it takes: guessed, and fetched ahead, after the answer
                # (and the page's writing, if left for then); before it, if cheap, for a page sent
                # from its file with nothing left for after: the server gets that file whole
                with later.collecting() as more:
                    self.repository.guess_file(
                        name, agent, request, since=asked_at, page=rendered.page,
                        now=not work and rendered.file is not None,
                    )  # fmt: skip
                work += more
            body = rendered.stream or rendered.file or rendered.body
            answer = self._page(
                environ, start_response, content_type, body, rendered.etag, vary=vary, gzip=rendered.gzip
            )
        except BaseException:
            rendered.close()
            later.run(work)
            raise
        return later.after(answer, work)

    def _json_api(
        self, environ: Environ, start_response: StartResponse, raw: str, asked: str | None
    ) -> Iterable[bytes]:
        """Warehouse's JSON API of a project (``/pypi/<name>/json``) or of one of its releases
        (``/pypi/<name>/<version>/json``), made of its page and the metadata nestegg holds."""
        if not is_valid_name(raw):
            raise NotFound(f"{raw!r} is not a valid project name")
        name = canonicalize_name(raw)
        if raw != name:
            tail = "json" if asked is None else f"{asked}/json"
            return self._redirect(environ, start_response, f"/pypi/{name}/{tail}")
        page = self.repository.project(name)
        releases = releases_of(page)
        version = latest_release(releases) if asked is None else find_release(releases, asked)
        if version is None:
            if asked is None:
                raise NotFound(f"project {name!r} has no releases")
            raise NotFound(f"project {name!r} has no version {asked!r}")
        files = releases[version]
        held = self.repository.held_metadata(name, files)
        try:
            metadata = None if held is None else metadata_fields(held)
        except ValueError:  # unreadable headers: said as unknown, as if not held
            metadata = None
        sized = {
            key: [d.with_changes(size=self.repository.held_size(name, d)) for d in dists]
            for key, dists in releases.items()
        }
        base = base_url(environ, self.repository.config.public_url) + f"/files/{quote(name)}/"
        body = project_json(
            page,
            version,
            sized,
            metadata=metadata,
            url_for=lambda dist: base + quote_filename(dist.filename),
            with_releases=asked is None,
        )
        return self._page(environ, start_response, "application/json", body, etag(body))

    def _page(
        self,
        environ: Environ,
        start_response: StartResponse,
        content_type: str,
        body: bytes | PageFile | PageStream,
        etag: str,
        *,
        vary: str = "Accept",
        gzip: bool = False,
    ) -> Iterable[bytes]:
        """A page's answer; a body that is a rendered file or made as it is sent is closed, or
        handed to the server. A ``gzip`` body is sent with that ``Content-Encoding``."""
        headers = [
            ("Vary", vary),
            ("ETag", etag),
            ("Cache-Control", PAGE_CACHE_CONTROL),
        ]
        if gzip:
            headers.append(("Content-Encoding", "gzip"))
        if etag_matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
            if not isinstance(body, bytes):
                body.close()
            start_response(status_line(304), headers)
            return []
        media = content_type if content_type.endswith("json") else f"{content_type}; charset=utf-8"
        size = len(body) if isinstance(body, bytes) else body.size
        headers += [("Content-Type", media), ("Content-Length", str(size))]
        start_response(status_line(200), headers)
        if isinstance(body, bytes):
            return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]
        if isinstance(body, PageStream):
            if environ["REQUEST_METHOD"] == "HEAD":
                body.close()
                return []
            return body
        if environ["REQUEST_METHOD"] == "HEAD" or size <= _READ_WHOLE:
            data = b"" if environ["REQUEST_METHOD"] == "HEAD" else body.handle.readall()
            body.close()
            return [data] if data else []
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(body.handle, BLOCK)  # type: ignore[no-any-return]
        return FileRange(body.handle, body.handle.tell(), body.handle.tell() + size)

    def _home(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = (
            b"<!DOCTYPE html><html><head><title>nestegg</title></head><body>"
            b'<h1>nestegg</h1><p>Use <a href="simple/">simple/</a> as the index URL.</p>'
            b"</body></html>"
        )
        start_response(
            status_line(200),
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]


_NOT_ACCEPTABLE = (
    "none of the accepted types is served; ask for application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html or text/html"
)


def _json_api_path(path: str) -> str | None:
    """``path`` with its dot segments resolved if it is then one of the JSON API (at the root or
    under a mounted upstream), else None: no other path is reached through ``..``."""
    resolved: list[str] = []
    for part in path.split("/")[1:]:
        if part == "..":
            if resolved:
                resolved.pop()
        elif part != ".":
            resolved.append(part)
    at = 2 if resolved[:1] == ["upstreams"] else 0
    if resolved[at : at + 1] != ["pypi"] or "" in resolved or len(resolved) - at not in (3, 4):
        return None
    return "/" + "/".join(resolved)


def base_url(environ: Environ, public_url: str | None) -> str:
    """The URL of the app's root as the client reached it, which pages' absolute file URLs start
    with: ``public_url`` (the mirror's root behind a proxy), else the request's scheme and Host
    (else the server's name and port, when the Host is missing or no host), with the app's mount.

    pip reads absolute URLs a third faster than relative ones; made from each request's own Host,
    a mirror reached at another address (a new port, a proxy) never sends clients elsewhere.
    """
    mount = str(environ.get(MOUNT, ""))
    if public_url is not None:
        return public_url + mount
    host = str(environ.get("HTTP_HOST", "")).lower()
    if not _HOST.fullmatch(host):
        host = f"{environ.get('SERVER_NAME', '127.0.0.1')}:{environ.get('SERVER_PORT', '80')}".lower()
        if not _HOST.fullmatch(host):
            host = "127.0.0.1"
    scheme = "https" if environ.get("wsgi.url_scheme") == "https" else "http"
    # SCRIPT_NAME is the bytes the client sent, read as latin-1 (PEP 3333): escaped as they came
    # (given as text, quote keeps its fast way out for the empty one most deployments have)
    script_name = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
    return f"{scheme}://{host}{quote(script_name, encoding='latin-1', errors='replace')}"


def same_machine(environ: Environ, public_url: str | None) -> bool:
    """Whether the client runs on this machine and reached the app directly: its address and the
    host it asked for are loopback ones, and no ``public_url`` says a front server is in between.
    Its pages are sent as they are, whatever it accepts: gzip costs both ends more time than the
    bytes it saves take over loopback (a tox run's mirror, a desktop one)."""
    if public_url is not None or not _loopback(str(environ.get("REMOTE_ADDR", ""))):
        return False
    host = str(environ.get("HTTP_HOST", "")).lower()
    if not _HOST.fullmatch(host):
        return False
    name = host[1 : host.index("]")] if host.startswith("[") else host.partition(":")[0]
    return name == "localhost" or _loopback(name)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _path_info(environ: Environ) -> str:
    # PEP 3333 hands PATH_INFO over as latin-1; undo that to get the UTF-8 the client sent
    raw = environ.get("PATH_INFO", "") or "/"
    try:
        return str(raw.encode("latin-1").decode("utf-8"))
    except UnicodeError:
        raise NotFound("path is not valid UTF-8") from None


class BodyGate:
    """What the server asks before it reads a request's body: an upload's handler decides for
    uploads; any other request may send :data:`SMALL_BODY` bytes."""

    def __init__(self, upload: Upload | None) -> None:
        self.upload = upload

    def __call__(self, environ: Environ) -> Admission:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        if method == "POST" and path in UPLOAD_PATHS and self.upload is not None:
            return self.upload.admit(environ)
        length = str(environ.get("CONTENT_LENGTH") or "0")
        if length.isdigit() and int(length) > SMALL_BODY:
            return Admission(
                SMALL_BODY,
                refusal=BodyTooLarge(
                    f"a request body of {int(length)} bytes is over the limit of {SMALL_BODY} bytes "
                    f"for {method} {path!r}"
                ),
            )
        return Admission(SMALL_BODY)
