"""Parsing of upstream Simple API pages (PEP 691 JSON and PEP 503 HTML) into models.

A page is parsed as its answer arrives: the largest pages (pydantic-core: 15,000 files, 7 MB of
JSON) would otherwise be held whole, as bytes and as text, next to the model they become.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from html.parser import HTMLParser
from typing import Any, NoReturn
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from nestegg_core.errors import UpstreamError

from .models import (
    MAX_FILENAME,
    NO_HASHES,
    DistFile,
    Hashes,
    ProjectPage,
    can_check,
    compact_hashes,
    is_dist_filename,
    well_formed,
)

logger = logging.getLogger(__name__)

#: what makes a decoded JSON document not a page; RecursionError: "[[[[..." of a few kilobytes
_PAGE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RecursionError)
_WHITESPACE = " \t\n\r"  # JSON's
_NOT_WHITESPACE = re.compile(f"[^{_WHITESPACE}]")
#: Python 3.13 names a trailing comma where earlier versions complain about what follows it
_TRAILING_COMMA_NAMED = sys.version_info >= (3, 13)
#: the members of a JSON page that are kept once read (the rest are read and dropped): the files,
#: the versions, and what makes the page's object look like a file entry (not a page)
_KEPT_MEMBERS = frozenset({"files", "versions", "filename", "url"})
#: the attributes of a link that make a file of it
_LINK_ATTRIBUTES = frozenset(
    {"href", "data-requires-python", "data-yanked", "data-core-metadata", "data-dist-info-metadata"}
)


class PageTooLarge(Exception):
    """A page over a limit its reader set (see :func:`parse_project_stream`); the message says which."""


def parse_project_page(name: str, body: bytes | str, content_type: str, base_url: str) -> ProjectPage:
    """A page from a whole upstream answer; file URLs become absolute (resolved against ``base_url``).

    ``body`` is the answer's bytes, or its text. Raises :class:`UpstreamError` for a body that is not
    a Simple API page.
    """
    if isinstance(body, bytes):
        return parse_project_stream(name, (body,), content_type, base_url)
    media = _media(content_type)
    if _is_json(media) and body.startswith("\ufeff"):
        # json.loads refuses a BOM at the start of text (in bytes, it goes with their encoding)
        raise _not_json(base_url, "Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)")
    return _parse(name, (body,), media, base_url)


def parse_project_stream(
    name: str,
    chunks: Iterable[bytes],
    content_type: str,
    base_url: str,
    *,
    max_files: int | None = None,
    max_value: int | None = None,
) -> ProjectPage:
    """The page of an upstream answer whose body comes in ``chunks``, as :func:`parse_project_page`
    parses it whole; only the model and about a chunk of text are held at any time.

    An exception raised by ``chunks`` (a broken connection) passes through unchanged. The page's
    errors come once ``chunks`` is exhausted, as after a read of the whole body: which error a bad
    body gives does not depend on how it is cut.

    What a page costs in memory grows with its files and with the longest value held whole (a
    file entry, the versions, an HTML tag), up to many times their text: past ``max_files`` files
    (a file counting once for each of its hashes), a value of ``max_value`` characters or an HTML
    tag of a sixteenth of that, :class:`PageTooLarge` is raised at once.
    """
    media = _media(content_type)
    texts = _json_texts(chunks, base_url) if _is_json(media) else _html_texts(chunks)
    return _parse(name, texts, media, base_url, _Limits(max_files, max_value))


@dataclass(frozen=True)
class _Limits:
    max_files: int | None = None
    max_value: int | None = None

    def files(self, count: int) -> None:
        if self.max_files is not None and count > self.max_files:
            raise PageTooLarge(f"lists more than {self.max_files:,} files (counted once per hash)")

    def value(self, length: int) -> None:
        if self.max_value is not None and length > self.max_value:
            raise PageTooLarge(
                f"holds a value (a file entry, the versions) of more than {self.max_value:,} characters"
            )

    def tag(self, length: int) -> None:
        # an unclosed tag is matched again with every piece, by regular expressions whose memory
        # grows with it (a tag of 1 MiB of attributes took 250 MB): real tags are a few hundred bytes
        if self.max_value is not None and length > self.max_value // 16:
            raise PageTooLarge(f"holds a tag of more than {self.max_value // 16:,} characters")


_NO_LIMITS = _Limits()


def _parse(
    name: str, texts: Iterable[str], media: str, base_url: str, limits: _Limits = _NO_LIMITS
) -> ProjectPage:
    if _is_json(media):
        return _parse_json(name, texts, base_url, limits)
    if media.endswith("html") or media in ("", "text/plain"):
        return _parse_html(name, texts, base_url, limits)
    raise UpstreamError(f"upstream answered {base_url} with unexpected content type {media!r}")


def _media(content_type: str) -> str:
    return content_type.split(";", maxsplit=1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media.endswith("+json") or media == "application/json"


def _json_texts(chunks: Iterable[bytes], base_url: str) -> Iterator[str]:
    """The text of a JSON body, decoded as ``json.loads`` decodes bytes, piece by piece.

    The encoding is the one ``json.detect_encoding`` sees in the first bytes; lone surrogates pass.
    """
    pieces = iter(chunks)
    head = b""
    for piece in pieces:
        head += piece
        if len(head) >= 4:  # all that detect_encoding looks at
            break
    encoding = json.detect_encoding(head)
    if encoding == "utf-8-sig":
        # bytes.decode("utf-8-sig") drops the BOM first: positions in its errors count after it
        encoding, head = "utf-8", head.removeprefix(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder(encoding)("surrogatepass")
    given = len(head)
    yield _decoded(decoder, head, 0, base_url)
    del head  # not held while the rest arrives
    for piece in pieces:
        yield _decoded(decoder, piece, given, base_url)
        given += len(piece)
    yield _decoded(decoder, b"", given, base_url, final=True)


def _decoded(
    decoder: codecs.IncrementalDecoder, data: bytes, given: int, base_url: str, *, final: bool = False
) -> str:
    """``data`` decoded, after ``given`` bytes of the body; errors say where they are in the body."""
    try:
        return decoder.decode(data, final)
    except UnicodeDecodeError as exc:
        # the decoder tried what it held back of the bytes before, then data
        offset = given - len(decoder.getstate()[0])
        raise UpstreamError(
            f"upstream page {base_url} is not valid PEP 691 JSON: {_decode_message(exc, offset)}"
        ) from None


def _decode_message(exc: UnicodeDecodeError, offset: int) -> str:
    """The message of ``exc`` as if its bytes began ``offset`` bytes later (UnicodeDecodeError's own)."""
    start = offset + exc.start
    if exc.end == exc.start + 1:
        byte = exc.object[exc.start]
        return f"'{exc.encoding}' codec can't decode byte 0x{byte:02x} in position {start}: {exc.reason}"
    end = offset + exc.end - 1
    return f"'{exc.encoding}' codec can't decode bytes in position {start}-{end}: {exc.reason}"


def _html_texts(chunks: Iterable[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    for chunk in chunks:
        yield decoder.decode(chunk)
    yield decoder.decode(b"", final=True)


def _not_json(base_url: str, exc: BaseException | str) -> UpstreamError:
    return UpstreamError(f"upstream page {base_url} is not valid PEP 691 JSON: {exc}")


def _parse_json(name: str, texts: Iterable[str], base_url: str, limits: _Limits) -> ProjectPage:
    try:
        data, error = _JsonReader(texts, base_url, limits).document()
    except _Invalid as exc:
        raise _not_json(base_url, exc) from None
    try:
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise TypeError("no files list")
        if error is not None:
            raise error
        versions = data.get("versions")
        if versions is not None and not isinstance(versions, list):
            raise TypeError("versions is not a list")
        listed = None if versions is None else (str(v) for v in versions)
        return ProjectPage.build(name, _distributions(name, data["files"]), listed)
    except _PAGE_ERRORS as exc:
        raise _not_json(base_url, exc) from None


def _scanner(decoder: json.JSONDecoder) -> Callable[[str, int], tuple[Any, int]]:
    """The scanner ``decoder.raw_decode`` calls: ``(value, end)`` of the JSON value at an index,
    StopIteration or ValueError where none can be read (StopIteration too for a bad value in an
    object). Not in the json module's docs (tests/test_fences.py names it)."""
    scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
    return scan


class _Invalid(Exception):
    """The text is not JSON; the message is the one ``json.loads`` gives for the whole of it."""


class _JsonReader:
    """The top-level object of a JSON document that arrives in pieces of text.

    Its "files" array is walked entry by entry: each entry becomes a DistFile as soon as it is
    complete, and only that entry and the rest of the current piece are held as text. Every other
    value is decoded whole (the name, meta, versions: small). Objects outside the files go through
    the same hook as in a whole decode, so the result is what ``json.loads`` with that hook would
    give; an entry is decoded as plain JSON, then made a file (a hook on its hashes' objects too
    cost a tenth of the parse).
    """

    def __init__(self, texts: Iterable[str], base_url: str, limits: _Limits = _NO_LIMITS) -> None:
        self._texts = iter(texts)
        self._base_url = base_url
        self._limits = limits
        self._decoder = json.JSONDecoder(object_hook=partial(_file_or_dict, base_url))
        self._entries = json.JSONDecoder()
        self._text = ""
        self._pos = 0  # in _text: what lies before is consumed
        self._ended = False  # the last piece is in _text
        # where _text starts in the document, for the positions in error messages
        self._offset = 0
        self._lines = 0
        self._last_newline = -1
        #: a text in which no run of entries was found (see _run)
        self._tried: str | None = None

    def document(self) -> tuple[Any, BaseException | None]:
        """The decoded document, and the error of the first bad entry of its "files" array if any.

        The files array holds only the DistFiles before that entry: the page fails anyway.
        """
        if self._peek() == "{":
            data, error = self._object()
        else:  # not a page: decoded whole, for the error json.loads gives
            data, error = self._value(), None
        if self._peek():
            self._fail("Extra data", self._pos)
        return data, error

    def _object(self) -> tuple[Any, BaseException | None]:
        members: dict[str, Any] = {}
        error: BaseException | None = None
        self._pos += 1
        more = self._peek() != "}"
        while more:
            key = self._key()
            if key == "files" and self._peek() == "[":
                members[key], error = self._files()
            else:
                value = self._value()
                # another member is read (it must be JSON) but not held: many large ones would add up
                members[key] = value if key in _KEPT_MEMBERS else None
                if key == "files":  # the last one counts, as in a dict
                    error = None
            more = self._next("}", "object")
        self._pos += 1
        # the hook sees the top-level object too: one that looks like a file entry is not a page
        return _file_or_dict(self._base_url, members), error

    def _files(self) -> tuple[list[DistFile], BaseException | None]:
        files: list[DistFile] = []
        error: BaseException | None = None
        self._pos += 1
        more = self._peek() != "]"
        counted = 0  # files, once for each hash: a file's hashes cost memory as files do
        scan = _scanner(self._entries)
        while more:
            entries = self._run()
            single = entries is None
            if entries is None:
                entries = [self._entry(scan)]
            if error is None:
                # as a whole decode would fail on it: after the whole document is known to be JSON
                for entry in entries:
                    try:
                        dist = _json_file(entry, self._base_url)
                    except _PAGE_ERRORS as exc:
                        error = exc
                        break
                    files.append(dist)
                    counted += max(1, len(dist.hashes))
            self._limits.files(counted)
            if single:
                more = self._after_entry()
        self._pos += 1
        return files, error

    def _run(self) -> list[Any] | None:
        """The entries from the position up to the last "},{" (or "}, {") of the text held,
        decoded in one call (coverage's page of 9,674 files parsed in 50-54 ms, against 60 ms an
        entry at a time); the position is then at the entry after them. None when there are none,
        or they do not decode: that text is not looked through again. Cut inside a string or a
        nested value, the text cannot decode as entries."""
        text, pos = self._text, self._pos
        if text is self._tried or not text.startswith("{", pos):
            return None
        cut = max(text.rfind("},{", pos), text.rfind("}, {", pos))
        try:
            entries = self._entries.decode("[" + text[pos : cut + 1] + "]") if cut > pos else None
        except (ValueError, RecursionError):
            entries = None
        if entries is None:
            self._tried = text
            return None
        self._pos = text.index("{", cut + 1)
        return entries  # type: ignore[no-any-return]

    def _entry(self, scan: Callable[[str, int], tuple[Any, int]]) -> Any:
        """The entry at the position: an object whose text is all held by the decoder's own
        scanner, what _value calls (the steps around it were a tenth of a page's parse); anything
        else (cut short, not an object, bad) by _value."""
        text, pos = self._text, self._pos
        if text.startswith("{", pos):
            try:
                entry, self._pos = scan(text, pos)
            except (StopIteration, ValueError, RecursionError):
                pass
            else:
                return entry
        return self._value(self._entries)

    def _after_entry(self) -> bool:
        """Past the "," after an entry: whether another follows (else at the "]")."""
        text, pos = self._text, self._pos
        if text.startswith(",{", pos):  # another entry, as most pages put it: not a trailing comma
            self._pos = pos + 1
            return True
        if text.startswith(", {", pos):
            self._pos = pos + 2
            return True
        return self._next("]", "array")

    def _key(self) -> Any:
        """The name of an object's member, and the ":" after it."""
        if self._peek() != '"':
            self._fail("Expecting property name enclosed in double quotes", self._pos)
        key = self._value()
        if self._peek() != ":":
            self._fail("Expecting ':' delimiter", self._pos)
        self._pos += 1
        return key

    def _next(self, end: str, kind: str) -> bool:
        """After a member or an element: whether another follows (past the ","), else at ``end``."""
        char = self._peek()
        if char == end:
            return False
        if char != ",":
            self._fail("Expecting ',' delimiter", self._pos)
        comma = self._pos
        self._pos += 1
        if _TRAILING_COMMA_NAMED and self._peek() == end:
            self._fail(f"Illegal trailing comma before end of {kind}", comma)
        return True

    def _value(self, decoder: json.JSONDecoder | None = None) -> Any:
        """The JSON value after the position (and whitespace), decoded whole (by ``decoder``, else
        with the hook)."""
        decoder = decoder or self._decoder
        self._peek()
        while True:
            ended = self._ended
            try:
                value, end = decoder.raw_decode(self._text, self._pos)
            except (ValueError, RecursionError) as exc:
                if ended:
                    self._fail_with(exc)
                # cut short, most likely: more text, and the value tried again
                self._limits.value(len(self._text) - self._pos)
                self._more()
                continue
            # a number near the end of the text may go on in the next piece ("1" + "2", "1." + "5",
            # "1e+" + "5"): three characters after it show that it does not
            if end + 3 <= len(self._text) or ended:
                self._pos = end
                return value
            self._more()

    def _more(self) -> None:
        """More text after a value that did not decode yet: at least as much again as it has now.

        Growing by a factor, not by a piece, keeps a value cut into many small pieces from being
        decoded again once per piece (quadratic time).
        """
        self._fill(2 * (len(self._text) - self._pos) + 1)

    def _peek(self) -> str:
        """The next character after whitespace, at which the position stops ("" at the end)."""
        if self._pos < len(self._text) and self._text[self._pos] not in _WHITESPACE:
            return self._text[self._pos]  # the usual case, without a search
        while True:
            found = _NOT_WHITESPACE.search(self._text, self._pos)
            if found:
                self._pos = found.start()
                return found.group()
            self._pos = len(self._text)
            if not self._fill(1):
                return ""

    def _fill(self, size: int) -> bool:
        """At least ``size`` characters from the position on, unless the document ends first.

        What lies before the position is dropped first: the text held is the value being read and
        the rest of the last piece, whatever the size of the document.
        """
        if len(self._text) - self._pos >= size:
            return True
        if self._ended:
            return False
        self._drop()
        parts = [self._text]
        held = len(self._text)
        while held < size:
            piece = next(self._texts, None)
            if piece is None:
                self._ended = True
                break
            parts.append(piece)
            held += len(piece)
        self._text = "".join(parts)
        return held >= size

    def _drop(self) -> None:
        consumed = self._pos
        self._lines += self._text.count("\n", 0, consumed)
        newline = self._text.rfind("\n", 0, consumed)
        if newline >= 0:
            self._last_newline = self._offset + newline
        self._offset += consumed
        self._text = self._text[consumed:]
        self._pos = 0

    def _fail_with(self, exc: ValueError | RecursionError) -> NoReturn:
        if isinstance(exc, json.JSONDecodeError):
            self._fail(exc.msg, exc.pos)
        raise _Invalid(str(exc)) from None

    def _fail(self, message: str, pos: int) -> NoReturn:
        """Raises the error at ``pos`` in the text, as json.loads words it for the whole document.

        The rest of the document is read first: bytes that do not decode, anywhere, are the error
        of a whole decode, which decodes all before it parses.
        """
        offset = self._offset + pos
        line = self._lines + self._text.count("\n", 0, pos) + 1
        newline = self._text.rfind("\n", 0, pos)
        column = offset - (self._offset + newline if newline >= 0 else self._last_newline)
        self._text, self._pos = "", 0
        for _ in self._texts:
            pass
        self._ended = True
        raise _Invalid(f"{message}: line {line} column {column} (char {offset})")


def _file_or_dict(base_url: str, entry: dict[str, Any]) -> Any:
    """A JSON object outside the files list that looks like a file entry as its DistFile (a
    top-level object that does, is no page); any other object as it is, and so is one that fails
    to convert. The entries of the files list are made files by the reader (``_files``)."""
    if "filename" not in entry or "url" not in entry:
        return entry
    try:
        return _json_file(entry, base_url)
    except (ValueError, TypeError, KeyError, AttributeError):
        return entry


def _json_file(entry: Mapping[str, Any], base_url: str) -> DistFile:
    """The file of a decoded entry. Its values are as JSON decodes them, never a subclass of str,
    int or dict: ``type(value) is`` tells them apart, faster than isinstance (a tenth of a parse)."""
    filename = entry["filename"]
    url = entry["url"]
    if type(filename) is not str or type(url) is not str:
        raise TypeError(f"bad file entry {entry!r}")
    hashes = entry.get("hashes")
    if hashes:
        if type(hashes) is not dict:
            raise TypeError(f"bad hashes in {filename!r}")
        hashes = _hashes(hashes)
    else:
        hashes = NO_HASHES
    yanked = entry.get("yanked", False)
    metadata = entry.get("core-metadata", entry.get("dist-info-metadata", False))
    size = entry.get("size")
    upload_time = entry.get("upload-time")
    requires_python = entry.get("requires-python")
    # a name that is no file's (``../x.whl``) is left off by _distributions, as on an HTML page
    return DistFile.listed(
        filename,
        # the usual URL, absolute and without a fragment, without a call
        url if url.startswith(("https://", "http://")) and "#" not in url else _absolute(base_url, url),
        hashes,
        # shared by most files of a page: one copy each
        sys.intern(requires_python) if type(requires_python) is str else None,
        (yanked or "") if type(yanked) is str else ("" if yanked else None),
        size if type(size) is int and size >= 0 else None,
        upload_time if type(upload_time) is str else None,
        _hashes(metadata) if type(metadata) is dict else (NO_HASHES if metadata is True else None),
    )


def _hashes(value: dict[Any, Any]) -> Mapping[str, str]:
    """The hashes a file can be checked with (see ``models.can_check``); others are left out."""
    if len(value) == 1:
        # the usual entry, {"sha256": "<lowercase hex>"}: no new dict on the way
        digest = value.get("sha256")
        if type(digest) is str and digest:
            return Hashes("sha256", digest.lower())
        ((algorithm, digest),) = value.items()
        if type(algorithm) is str and type(digest) is str and digest:
            algorithm = algorithm.lower()
            return Hashes(algorithm, digest.lower()) if _checkable(algorithm) else NO_HASHES
    hashes = {
        sys.intern(algorithm): str(digest).lower()
        for algorithm, digest in ((str(k).lower(), v) for k, v in value.items())
        if digest and _checkable(algorithm)
    }
    for algorithm, digest in hashes.items():
        if not well_formed(algorithm, digest):
            break
    else:  # the usual case, every digest sound: no second dict (a loop, not all(): a third less)
        return compact_hashes(hashes)
    # a digest that is none (``"md5": "zz"``) beside one that is: checked as pip checks, by those
    # that can match; alone, it stays, and no bytes match it
    sound = {algorithm: digest for algorithm, digest in hashes.items() if well_formed(algorithm, digest)}
    return compact_hashes(sound or hashes)


def _checkable(algorithm: str) -> bool:
    return algorithm == "sha256" or can_check(algorithm)


def _absolute(base_url: str, url: str) -> str:
    """``url`` resolved against the page, without its fragment.

    Most indexes give absolute URLs, which ``urljoin`` would only take apart and put back together:
    for the 15,000 files of a large page (pydantic-core) that was 40% of its parse.
    """
    if not url.startswith(("https://", "http://")):
        url = urljoin(base_url, url)
    return urldefrag(url)[0] if "#" in url else url


class _LinkParser(HTMLParser):
    def __init__(self, limits: _Limits = _NO_LIMITS) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str | None]] = []
        self.base: str | None = None
        self.limits = limits

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.limits.files(len(self.links) + 1)
            # a link of real pages has a few attributes; a hostile one thousands, each held
            many = len(attrs) > len(_LINK_ATTRIBUTES)
            self.links.append({k: v for k, v in attrs if k in _LINK_ATTRIBUTES} if many else dict(attrs))
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")


def _parse_html(name: str, texts: Iterable[str], base_url: str, limits: _Limits = _NO_LIMITS) -> ProjectPage:
    parser = _LinkParser(limits)
    pieces = iter(texts)
    said = False
    for text in pieces:
        said = said or (bool(text) and not text.isspace())
        _feed(parser, text, pieces, base_url)
        limits.tag(len(parser.rawdata))  # a tag not yet closed, held
    _feed(parser, None, pieces, base_url)
    if not said:  # a 200 with nothing in it (an answer cut off before its body) lists no file
        raise UpstreamError(f"upstream page {base_url} is empty: no HTML, not even a page without links")
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
        metadata = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        files.append(
            DistFile(
                filename=filename,
                url=url,
                hashes=_fragment_hashes(fragment) if fragment else NO_HASHES,
                requires_python=sys.intern(attrs.get("data-requires-python") or "") or None,
                yanked=(attrs["data-yanked"] or "") if "data-yanked" in attrs else None,
                core_metadata=None if metadata is None else _html_metadata(metadata),
            )
        )
    return ProjectPage.build(name, _distributions(name, files))


def _distributions(name: str, files: list[DistFile]) -> list[DistFile]:
    """The files whose names are distributions' (see ``is_dist_filename``) at http(s) URLs, each
    name once: the others are left off. A name a store could take for its own files
    (``<file>.json``, ``<file>.metadata``) is no distribution's; a ``file:`` or other URL is not
    nestegg's to fetch; a name listed again would have the page show one entry's hashes and the
    download follow another's, so the first entry is the file."""
    kept = [dist for dist in files if is_dist_filename(dist.filename)]
    if len(kept) < len(files):
        left = [dist.filename for dist in files if not is_dist_filename(dist.filename)]
        # a name with a path in it is no index's mistake of form: said louder than a directory link
        paths = [filename for filename in left if "/" in filename or "\\" in filename]
        if paths:
            logger.warning(
                "left %d files off the page of %r, their names hold a path: %s",
                len(paths), name, _some(paths),
            )  # fmt: skip
        long = [f for f in left if len(f) > MAX_FILENAME and "/" not in f and "\\" not in f]
        if long:
            logger.warning(
                "left %d files off the page of %r, their names are over the %d characters nestegg stores: %s",
                len(long), name, MAX_FILENAME, _some(long),
            )  # fmt: skip
        logger.debug(
            "left %d links off the page of %r, not named as a distribution is: %s",
            len(left), name, _some(left),
        )  # fmt: skip
    # resolved against the page, every http(s) URL starts so (urljoin lowercases the scheme)
    fetchable = [dist for dist in kept if dist.url.startswith(("https://", "http://"))]
    if len(fetchable) < len(kept):
        left = [dist.url for dist in kept if not dist.url.startswith(("https://", "http://"))]
        logger.debug(
            "left %d files off the page of %r, not at an http(s) URL: %s", len(left), name, _some(left)
        )
    unique: dict[str, DistFile] = {}
    again = []
    for dist in fetchable:
        if unique.setdefault(dist.filename, dist) is not dist:
            again.append(dist.filename)
    if again:
        logger.debug(
            "left %d entries off the page of %r, of files it lists before them: %s",
            len(again),
            name,
            _some(again),
        )
    return list(unique.values())


def _some(texts: list[str]) -> str:
    return ", ".join(repr(text[:100]) for text in texts[:5]) + (", ..." if len(texts) > 5 else "")


def _feed(parser: _LinkParser, text: str | None, rest: Iterator[str], base_url: str) -> None:
    """One piece of the page into the parser, or its end (None)."""
    try:
        if text is None:
            parser.close()
        else:
            parser.feed(text)
    except (ValueError, AssertionError) as exc:  # html.parser raises these on broken markup
        for _ in rest:  # the rest read first, as by a read of the whole body
            pass
        raise UpstreamError(f"upstream page {base_url} is not valid HTML: {exc}") from None


def _fragment_hashes(fragment: str) -> Mapping[str, str]:
    """The hash of a link's fragment, read as pip reads it: the first ``<algorithm>=<digest>`` of
    an algorithm that can be checked among its ``&``-separated parts (``egg=x&sha256=...``)."""
    for part in fragment.split("&"):
        algorithm, _, digest = part.partition("=")
        algorithm = algorithm.lower()
        if digest and _checkable(algorithm):
            return Hashes(algorithm, digest.lower())
    return NO_HASHES


def _html_metadata(value: str) -> Mapping[str, str] | None:
    value = value.strip()
    if value.lower() == "true" or value == "":
        return NO_HASHES
    algorithm, _, digest = value.partition("=")
    if digest and _checkable(algorithm.lower()):
        return Hashes(algorithm.lower(), digest.lower())
    return None
