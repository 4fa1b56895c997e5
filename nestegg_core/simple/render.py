"""Rendering of the Simple Repository API (PEP 503 HTML, PEP 691 JSON, api-version 1.1).

Pure functions from models to bytes, and the content negotiation that picks between them.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from .models import DistFile, ProjectPage

API_VERSION = "1.1"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}
# the server's preference between candidates a client values equally
_PREFERENCE = (JSON_V1, HTML_V1, TEXT_HTML)

UrlFor = Callable[[DistFile], str]
#: the PEP 658 metadata a page lists for a file (its hashes, or None for none), where it is not
#: the file's own ``core_metadata``: what a mirror offers, or not, for a client (no copy of the page)
MetadataFor = Callable[[DistFile], Mapping[str, str] | None]

# a JSON string literal of a str, as json.dumps writes it (ASCII, escaped)
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii
# what urllib.parse.quote leaves as it is: most filenames, which need no call to it
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


def quote_filename(filename: str) -> str:
    """``urllib.parse.quote(filename)``, quickly for the usual filename that needs no quoting."""
    return filename if _URL_SAFE.fullmatch(filename) else quote(filename)


def negotiate(accept: str | None) -> str | None:
    """The content type to answer with for an ``Accept`` header, or None (406) if none fits.

    Follows the q-value rules of RFC 9110: the most specific range that matches a type gives its
    weight. A client that only says ``*/*`` (or nothing) gets ``text/html``, as PEP 691 advises.
    """
    ranges = _parse_accept(accept or "*/*")
    if not ranges:
        return TEXT_HTML
    best: tuple[float, int, int] | None = None
    chosen = None
    for rank, candidate in enumerate(reversed(_PREFERENCE)):
        q, specificity = _weight(candidate, ranges)
        key = (q, specificity, rank)
        if q > 0 and (best is None or key > best):
            best, chosen = key, candidate
    if best is not None and best[1] == 0:
        return TEXT_HTML
    return chosen


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header lets a page be sent gzip encoded (RFC 9110): ``gzip``
    (or ``x-gzip``) with a weight above 0, or ``*`` while gzip has no weight of its own. Without
    the header a page is sent as it is, as most servers do.
    """
    if not accept_encoding:
        return False
    named: float | None = None
    anything = 0.0
    for part in accept_encoding.split(","):
        coding, *params = (piece.strip() for piece in part.split(";"))
        q = _q(params)
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            anything = q
    return (named if named is not None else anything) > 0


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for part in header.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        media = media.lower()
        if "/" not in media:
            continue
        ranges.append((_ALIASES.get(media, media), _q(params)))
    return ranges


def _q(params: list[str]) -> float:
    """The weight among a header element's parameters: 1 if none, 0 if unreadable."""
    q = 1.0
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                q = 0.0
    return q


def _weight(candidate: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    major = candidate.split("/", maxsplit=1)[0]
    found: tuple[float, int] = (0.0, -1)
    for media, q in ranges:
        if media == candidate:
            specificity = 2
        elif media == f"{major}/*":
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if specificity > found[1]:
            found = (q, specificity)
    return found if found[1] >= 0 else (0.0, 0)


def is_json(content_type: str) -> bool:
    return content_type == JSON_V1


def render_project(
    page: ProjectPage, content_type: str, url_for: UrlFor, metadata_for: MetadataFor | None = None
) -> bytes:
    """The page as one body; :func:`project_pieces` for writing it out a piece at a time.

    Written piece by piece into one buffer: the text of a page of 15,000 files is never held
    twice (as a list of pieces and joined, or as a str and as bytes).
    """
    out = io.BytesIO()
    for piece in project_pieces(page, content_type, url_for, metadata_for):
        out.write(piece)
    return out.getvalue()


def project_pieces(
    page: ProjectPage, content_type: str, url_for: UrlFor, metadata_for: MetadataFor | None = None
) -> Iterator[bytes]:
    """The bytes of the page in pieces, a file at a time; joined they are :func:`render_project`.
    Each file's PEP 658 metadata is ``metadata_for(file)``, if given, else its ``core_metadata``."""
    if is_json(content_type):
        return _project_json(page, url_for, metadata_for)
    return _project_html(page, url_for, metadata_for)


def rebased(pieces: Iterable[bytes], content_type: str, old: str, new: str) -> Iterator[bytes]:
    """The bytes of a page rendered (:func:`project_pieces`) with file URLs that start with ``old``,
    in pieces, with those URLs starting with ``new`` instead: the page for another base URL,
    without its model. Only the start of a file URL can match: in JSON a ``"url"`` key can only
    follow a string's closing quote, which no string holds unescaped; in HTML no text or value
    holds ``<`` unescaped."""
    before, after = _url_starts(content_type, old, new)
    held = b""
    for piece in pieces:
        data = held + piece
        cut = _settled(data, before)
        held = data[cut:]
        if cut:
            yield data[:cut].replace(before, after)
    if held:
        yield held.replace(before, after)


def rebased_length(pieces: Iterable[bytes], content_type: str, old: str, new: str) -> int:
    """The length of :func:`rebased`'s bytes for the same arguments, counted without making them:
    an answer's Content-Length, known before its first byte is made (that of ``pieces`` when
    :func:`url_growth` is none)."""
    before, after = _url_starts(content_type, old, new)
    length = found = 0
    held = b""
    for piece in pieces:
        length += len(piece)
        data = held + piece
        found += data.count(before)  # what is held back holds none whole: each is counted once
        held = data[_settled(data, before) :]
    return length + found * (len(after) - len(before))


def url_growth(content_type: str, old: str, new: str) -> int:
    """How many bytes longer :func:`rebased` makes each file URL: none for another port of as many
    digits, so that the page is as long as the one it is made from."""
    before, after = _url_starts(content_type, old, new)
    return len(after) - len(before)


def _url_starts(content_type: str, old: str, new: str) -> tuple[bytes, bytes]:
    if is_json(content_type):
        return _json_url_start(old), _json_url_start(new)
    return _html_url_start(old), _html_url_start(new)


def _settled(data: bytes, before: bytes) -> int:
    """Where the bytes held can be cut: what may be the start of a URL that the next piece ends
    is held back for it."""
    cut = len(data) - len(before) + 1
    last = data.rfind(before)
    if last >= 0 and last + len(before) > cut:
        cut = last + len(before)
    return max(cut, 0)


def _json_url_start(prefix: str) -> bytes:
    # the end of the filename's string, then the URL's key and the start of its string
    return b'","url":' + _quote(prefix)[:-1].encode()


def _html_url_start(prefix: str) -> bytes:
    return b'\n<a href="' + escape(prefix).encode()


def render_index(names: Iterable[str], content_type: str) -> bytes:
    if is_json(content_type):
        return render_index_json(names)
    return render_index_html(names)


def render_project_json(page: ProjectPage, url_for: UrlFor) -> bytes:
    """The PEP 691 page, as ``json.dumps`` of the document would write it (compact, ASCII)."""
    return render_project(page, JSON_V1, url_for)


def _project_json(page: ProjectPage, url_for: UrlFor, metadata_for: MetadataFor | None) -> Iterator[bytes]:
    # no dict per file: for a page of 15,000 files that was most of the time
    yield b'{"meta":{"api-version":"' + API_VERSION.encode() + b'"},"name":'
    yield _ascii(page.name) + b',"files":['
    first = True
    for dist in page.files:
        # only sha256 is advertised: every client checks it, and weaker ones invite downgrade
        sha256 = dist.hashes.get("sha256")
        entry = (
            ('{"filename":' if first else ',{"filename":')
            + _quote(dist.filename)
            + ',"url":'
            + _quote(url_for(dist))
            + (',"hashes":{"sha256":' + _quote(sha256) + "}" if sha256 else ',"hashes":{}')
        )
        first = False
        if dist.requires_python is not None:
            entry += ',"requires-python":' + _quote(dist.requires_python)
        if dist.size is not None:
            entry += ',"size":' + str(dist.size)
        if dist.upload_time is not None:
            entry += ',"upload-time":' + _quote(dist.upload_time)
        if dist.yanked is not None:
            entry += ',"yanked":' + (_quote(dist.yanked) if dist.yanked else "true")
        listed = dist.core_metadata if metadata_for is None else metadata_for(dist)
        if listed is not None:
            metadata = listed.get("sha256")
            entry += ',"core-metadata":' + ('{"sha256":' + _quote(metadata) + "}" if metadata else "true")
        yield (entry + "}").encode()
    yield b'],"versions":' + json.dumps(list(page.versions), separators=(",", ":")).encode() + b"}"


def _ascii(text: str) -> bytes:
    return _quote(text).encode()


def render_project_html(page: ProjectPage, url_for: UrlFor) -> bytes:
    return render_project(page, HTML_V1, url_for)


def _project_html(page: ProjectPage, url_for: UrlFor, metadata_for: MetadataFor | None) -> Iterator[bytes]:
    name = escape(page.name)
    head = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        f"<title>Links for {name}</title>",
        "</head>",
        "<body>",
        f"<h1>Links for {name}</h1>",
    ]
    yield "\n".join(head).encode()
    for dist in page.files:
        href = url_for(dist)
        sha256 = dist.sha256
        if sha256:
            href += f"#sha256={sha256}"
        line = f'\n<a href="{escape(href)}"'
        if dist.requires_python is not None:
            line += f' data-requires-python="{escape(dist.requires_python)}"'
        if dist.yanked is not None:
            line += f' data-yanked="{escape(dist.yanked)}"'
        listed = dist.core_metadata if metadata_for is None else metadata_for(dist)
        if listed is not None:
            value = _metadata_attribute(listed)
            # the old attribute too, for pip releases that predate PEP 714's rename
            line += f' data-core-metadata="{value}" data-dist-info-metadata="{value}"'
        yield f"{line}>{escape(dist.filename)}</a><br>".encode()
    yield b"\n</body>\n</html>\n"


def render_index_json(names: Iterable[str]) -> bytes:
    document = {
        "meta": {"api-version": API_VERSION},
        "projects": [{"name": name} for name in names],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def render_index_html(names: Iterable[str]) -> bytes:
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        "<title>Simple index</title>",
        "</head>",
        "<body>",
    ]
    lines += [f'<a href="{escape(name)}/">{escape(name)}</a><br>' for name in names]
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines).encode()


def _metadata_attribute(hashes: Any) -> str:
    sha256 = hashes.get("sha256")
    return f"sha256={escape(sha256)}" if sha256 else "true"
