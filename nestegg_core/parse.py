"""Parsing of upstream Simple API pages (PEP 691 JSON and PEP 503 HTML) into models."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from functools import partial
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from .errors import UpstreamError
from .models import NO_HASHES, DistFile, Hashes, ProjectPage, compact_hashes

_HASH_NAMES = ("sha256", "sha384", "sha512", "sha224", "sha1", "md5", "blake2b", "blake2s")


def parse_project_page(name: str, body: bytes | str, content_type: str, base_url: str) -> ProjectPage:
    """A page from an upstream answer; file URLs become absolute (resolved against ``base_url``).

    ``body`` is the answer's bytes, or its text as :func:`page_text` decodes them. Raises
    :class:`UpstreamError` for a body that is not a Simple API page.
    """
    media = _media(content_type)
    if _is_json(media):
        return parse_project_json(name, body, base_url)
    if media.endswith("html") or media in ("", "text/plain"):
        return parse_project_html(name, body, base_url)
    raise UpstreamError(f"upstream answered {base_url} with unexpected content type {media!r}")


def page_text(body: bytes, content_type: str, base_url: str) -> str:
    """The text of an upstream answer, decoded as :func:`parse_project_page` decodes it.

    Lets a caller drop the bytes of a large page before its parse starts.
    """
    if _is_json(_media(content_type)):
        try:
            return body.decode(json.detect_encoding(body), "surrogatepass")
        except UnicodeDecodeError as exc:
            raise UpstreamError(f"upstream page {base_url} is not valid PEP 691 JSON: {exc}") from None
    return body.decode("utf-8", errors="replace")


def _media(content_type: str) -> str:
    return content_type.split(";", maxsplit=1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media.endswith("+json") or media == "application/json"


def parse_project_json(name: str, body: bytes | str, base_url: str) -> ProjectPage:
    try:
        # each file entry becomes a DistFile as soon as the decoder has built it: the dicts of a
        # page of 15,000 files are never all alive at once (they would take twice its model)
        data = json.loads(body, object_hook=partial(_file_or_dict, base_url))
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise TypeError("no files list")
        files = [
            entry if isinstance(entry, DistFile) else _json_file(entry, base_url) for entry in data["files"]
        ]
        versions = data.get("versions") or []
        if not isinstance(versions, list):
            raise TypeError("versions is not a list")
        return ProjectPage.build(name, files, (str(v) for v in versions))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # RecursionError: json.loads of a few kilobytes of "[[[[..." is not a page either
        raise UpstreamError(f"upstream page {base_url} is not valid PEP 691 JSON: {exc}") from None


def _file_or_dict(base_url: str, entry: dict[str, Any]) -> Any:
    """A JSON object that looks like a file entry as its DistFile; any other object as it is.

    An entry that fails to convert stays a dict: if it is in the files list, converting it again
    there raises the error for the page.
    """
    if "filename" not in entry or "url" not in entry:
        return entry
    try:
        return _json_file(entry, base_url)
    except (ValueError, TypeError, KeyError, AttributeError):
        return entry


def _json_file(entry: Mapping[str, Any], base_url: str) -> DistFile:
    filename = entry["filename"]
    url = entry["url"]
    if not isinstance(filename, str) or not isinstance(url, str):
        raise TypeError(f"bad file entry {entry!r}")
    hashes = entry.get("hashes") or {}
    if not isinstance(hashes, dict):
        raise TypeError(f"bad hashes in {filename!r}")
    yanked = entry.get("yanked", False)
    metadata = entry.get("core-metadata", entry.get("dist-info-metadata", False))
    size = entry.get("size")
    upload_time = entry.get("upload-time")
    requires_python = entry.get("requires-python")
    _check_filename(filename)
    return DistFile(
        filename=filename,
        url=_absolute(base_url, url),
        hashes=_hashes(hashes),
        # shared by most files of a page: one copy each
        requires_python=sys.intern(requires_python) if isinstance(requires_python, str) else None,
        yanked=(yanked or "") if isinstance(yanked, str) else ("" if yanked else None),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        upload_time=upload_time if isinstance(upload_time, str) else None,
        core_metadata=_metadata_value(metadata),
    )


def _hashes(value: dict[Any, Any]) -> Mapping[str, str]:
    if len(value) == 1:
        # the usual entry, {"sha256": "<lowercase hex>"}: no new dict on the way
        ((algorithm, digest),) = value.items()
        if type(algorithm) is str and type(digest) is str and digest:
            return Hashes(algorithm.lower(), digest.lower())
    return compact_hashes({str(k).lower(): str(v).lower() for k, v in value.items() if v})


def _absolute(base_url: str, url: str) -> str:
    """``url`` resolved against the page, without its fragment.

    Most indexes give absolute URLs, which ``urljoin`` would only take apart and put back together:
    for the 15,000 files of a large page (pydantic-core) that was 40% of its parse.
    """
    if not url.startswith(("https://", "http://")):
        url = urljoin(base_url, url)
    return urldefrag(url)[0] if "#" in url else url


def _metadata_value(value: Any) -> Mapping[str, str] | None:
    if isinstance(value, dict):
        return _hashes(value)
    return NO_HASHES if value is True else None


def _check_filename(filename: str) -> None:
    if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
        raise ValueError(f"unsafe filename {filename!r}")


def _file(**values: Any) -> DistFile:
    _check_filename(values["filename"])
    return DistFile(**values)


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str | None]] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")


def parse_project_html(name: str, body: bytes | str, base_url: str) -> ProjectPage:
    parser = _LinkParser()
    try:
        parser.feed(body if isinstance(body, str) else body.decode("utf-8", errors="replace"))
        parser.close()
    except (ValueError, AssertionError) as exc:  # html.parser raises these on broken markup
        raise UpstreamError(f"upstream page {base_url} is not valid HTML: {exc}") from None
    try:
        base = urljoin(base_url, parser.base) if parser.base else base_url
    except ValueError:  # an unparsable <base href>, like "http://[": the page's own URL instead
        base = base_url
    files = []
    for attrs in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        try:
            url, fragment = urldefrag(urljoin(base, href))
            filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        except ValueError:
            continue  # an unparsable link (urllib refuses "http://[x"): no file of ours
        hashes = NO_HASHES
        algorithm, _, digest = fragment.partition("=")
        if algorithm.lower() in _HASH_NAMES and digest:
            hashes = Hashes(algorithm.lower(), digest.lower())
        metadata = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        try:
            files.append(
                _file(
                    filename=filename,
                    url=url,
                    hashes=hashes,
                    requires_python=sys.intern(attrs.get("data-requires-python") or "") or None,
                    yanked=(attrs["data-yanked"] or "") if "data-yanked" in attrs else None,
                    core_metadata=None if metadata is None else _html_metadata(metadata),
                )
            )
        except ValueError:
            continue  # a link that names no file (navigation, a directory): not a distribution
    return ProjectPage.build(name, files)


def _html_metadata(value: str) -> Mapping[str, str] | None:
    value = value.strip()
    if value.lower() == "true" or value == "":
        return NO_HASHES
    algorithm, _, digest = value.partition("=")
    if algorithm.lower() in _HASH_NAMES and digest:
        return Hashes(algorithm.lower(), digest.lower())
    return None
