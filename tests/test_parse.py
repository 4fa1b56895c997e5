from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nestegg_core.errors import UpstreamError
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.parse import PageTooLarge, parse_project_page, parse_project_stream

BASE = "https://example.com/simple/pkg/"


def test_json_page() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": "pkg",
            "files": [
                {
                    "filename": "pkg-1.0-py3-none-any.whl",
                    "url": "../../files/pkg-1.0-py3-none-any.whl",
                    "hashes": {"sha256": "AB" * 32},
                    "requires-python": ">=3.8",
                    "yanked": "bad",
                    "core-metadata": {"sha256": "cd" * 32},
                    "size": 10,
                    "upload-time": "2024-01-01T00:00:00Z",
                },
                {
                    "filename": "pkg-0.1.tar.gz",
                    "url": "https://files.example.com/pkg-0.1.tar.gz",
                    "hashes": {},
                    "dist-info-metadata": True,
                    "yanked": False,
                },
            ],
            "versions": ["0.1", "1.0", "2.0"],
        }
    ).encode()
    page = parse_project_page("pkg", body, "application/vnd.pypi.simple.v1+json", BASE)
    wheel, sdist = page.files
    assert wheel.url == "https://example.com/files/pkg-1.0-py3-none-any.whl"
    assert wheel.sha256 == "ab" * 32
    assert wheel.yanked == "bad"
    assert wheel.core_metadata == {"sha256": "cd" * 32}
    assert wheel.size == 10
    assert sdist.yanked is None
    assert sdist.core_metadata == {}
    assert page.versions == ("0.1", "1.0", "2.0")


def test_html_page() -> None:
    body = b"""<!DOCTYPE html><html><body>
    <a href="../../files/pkg-1.0-py3-none-any.whl#sha256=ABCD" data-requires-python="&gt;=3.8"
       data-dist-info-metadata="sha256=ef">pkg-1.0-py3-none-any.whl</a>
    <a href="/f/pkg-0.9.tar.gz" data-yanked>pkg-0.9.tar.gz</a>
    <a href="/f/pkg-0.8.tar.gz#md5=11" data-yanked="why" data-core-metadata="true">x</a>
    <a href="/f/pkg%2B1-0.7.zip">pkg+1-0.7.zip</a>
    <a>no href</a>
    <a href="../">up</a>
    </body></html>"""
    page = parse_project_page("pkg", body, "text/html; charset=utf-8", BASE)
    names = [d.filename for d in page.files]
    assert names == ["pkg-1.0-py3-none-any.whl", "pkg-0.9.tar.gz", "pkg-0.8.tar.gz", "pkg+1-0.7.zip"]
    first, second, third, _ = page.files
    assert first.hashes == {"sha256": "abcd"}
    assert first.requires_python == ">=3.8"
    assert first.core_metadata == {"sha256": "ef"}
    assert first.url == "https://example.com/files/pkg-1.0-py3-none-any.whl"
    assert second.yanked == ""
    assert third.yanked == "why"
    assert third.hashes == {"md5": "11"}
    assert third.core_metadata == {}
    assert page.versions == ("1.0", "0.9", "0.8", "0.7")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/vnd.pypi.simple.v1+json"),
        (b'{"files": 3}', "application/vnd.pypi.simple.v1+json"),
        (b'{"files": [{"url": "x"}]}', "application/vnd.pypi.simple.v1+json"),
        (b"[]", "application/json"),
        (b"\x89PNG", "image/png"),
        (b"", ""),  # a 200 cut off before its body: no page, not one without files
        (b" \r\n\t", "text/html"),
        (b"", "application/vnd.pypi.simple.v1+json"),
    ],
)
def test_garbage_is_an_upstream_error(body: bytes, content_type: str) -> None:
    with pytest.raises(UpstreamError, match="upstream"):
        parse_project_page("pkg", body, content_type, BASE)


# streaming -----------------------------------------------------------------------------------

JSON = "application/vnd.pypi.simple.v1+json"
#: a page whose strings hold escapes (\u00e9, a surrogate pair), raw multi-byte UTF-8 and numbers
#: of every form, so that cuts fall inside each of them (in what a page keeps: URLs, yank
#: reasons; a filename is ASCII or its file is left off)
TRICKY_JSON = (
    '{"meta": {"api-version": "1.1", "x": [1.5e+3, -0.25, 0, 1E-2, 12345678901234567890]},\n'
    ' "name": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/",\n'
    ' "files": [\n'
    '  {"filename": "cafe_pkg-1.0-py3-none-any.whl",\n'
    '   "url": "../f/caf\\u00e9_pkg-1.0-py3-none-any.whl",\n'
    '   "hashes": {"sha256": "AB12"}, "requires-python": ">=3.8", "size": 1234,\n'
    '   "yanked": "\u20ac \U0001f600 \\ud83d\\ude00", "core-metadata": {"sha256": "cd"}},\n'
    '  {"filename": "pkg-2.0.tar.gz", "url": "https://example.com/f/pkg-2.0.tar.gz#sha256=00",\n'
    '   "hashes": {}, "dist-info-metadata": true, "yanked": false, "upload-time": "2024-01-01T00:00:00Z"}\n'
    ' ],\n'
    ' "versions": ["1.0", "2.0", "3.0\u00e9"], "serial": 12.5e+3}\n'
)  # fmt: skip
TRICKY_HTML = (
    '<!DOCTYPE html><html><head><base href="/simple/pkg/"><title>caf\u00e9 \U0001f600</title></head><body>\n'
    '<!-- <a href="/c/pkg-9.whl"> --><script>var a = "<a href=/s/pkg-8.whl>";</script>\n'
    '<a href="../../f/caf%C3%A9/cafe-1.0.tar.gz#sha256=AB"\n'
    ' data-requires-python="&gt;=3.8">caf\u00e9-1.0.tar.gz</a>\n'
    "<a href='/f/pkg-2.0.zip' data-yanked data-core-metadata=\"sha256=EF\">\u20ac</a>\n"
    "<A HREF=/f/pkg-3.0.tar.gz>x</A></body></html>\n"
)


def chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (TRICKY_JSON.encode(), JSON),
        (TRICKY_JSON.encode("utf-8-sig"), JSON),
        (TRICKY_JSON.encode("utf-16"), JSON),
        (TRICKY_HTML.encode(), "text/html"),
    ],
    ids=["json", "json-bom", "json-utf16", "html"],
)
def test_a_page_in_pieces_parses_as_the_whole(body: bytes, content_type: str) -> None:
    whole = parse_project_page("pkg", body, content_type, BASE)
    assert len(whole.files) in (2, 3)
    for size in (1, 2, 3, 5, 7, 11, 64, 4096):
        assert parse_project_stream("pkg", chunks(body, size), content_type, BASE) == whole, size
    # every cut in two, so that one falls inside each string, escape and multi-byte character
    for cut in range(len(body) + 1):
        pieces = iter([body[:cut], b"", body[cut:]])
        assert parse_project_stream("pkg", pieces, content_type, BASE) == whole, cut


@pytest.mark.parametrize(
    "layout",
    [{"separators": (",", ":")}, {}, {"indent": 1}, {"indent": "\t", "separators": (" ,", " : ")}],
    ids=["compact", "spaced", "indented", "odd"],
)
def test_a_page_reads_the_same_however_its_json_is_laid_out(layout: dict[str, object]) -> None:
    # the usual entries take a shorter way than the others (after ",{" or ", {", all held):
    # every layout, and every cut in two of it, reads as the one page
    document = json.loads(TRICKY_JSON)
    document["files"] += [dict(document["files"][0], filename=f"pkg-{n}.0.tar.gz") for n in (3, 4)]
    expected = parse_project_page("pkg", json.dumps(document).encode(), JSON, BASE)
    assert len(expected.files) == 4
    body = json.dumps(document, **layout).encode()  # type: ignore[arg-type]
    for cut in range(len(body) + 1):
        pieces = iter([body[:cut], body[cut:]])
        assert parse_project_stream("pkg", pieces, JSON, BASE) == expected, cut


#: entries whose strings and nested values hold what separates entries ("},{", "}, {"), and
#: one that is no file: entries held together are decoded at once up to the last separator
SEPARATED_ENTRIES: list[dict[str, Any]] = [
    {"filename": "pkg-1.0.tar.gz", "url": "https://example.com/a},{b/pkg-1.0.tar.gz", "yanked": "no}, {"},
    {"filename": "pkg-1.1.tar.gz", "url": "/f/pkg-1.1.tar.gz", "x": [{"a": 1}, {"b": [{"c": "}, {"}, {}]}]},
    {"filename": "pkg-1.2.tar.gz", "url": "/f/pkg-1.2.tar.gz", "hashes": {"sha256": "AB"}, "y": '"}, {"\\'},
    {"filename": "pkg-1.3.tar.gz", "url": "/f/pkg-1.3.tar.gz", "core-metadata": {"sha256": "},{"}},
]


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
@pytest.mark.parametrize("bad", [None, 0, 5, 11], ids=["good", "bad-first", "bad-inside", "bad-last"])
def test_entries_read_together_read_as_each_alone(separators: tuple[str, str], bad: int | None) -> None:
    entries = [
        dict(entry, filename=entry["filename"].replace("pkg-1", f"pkg-{n}"))
        for n in range(3)
        for entry in SEPARATED_ENTRIES
    ]
    if bad is not None:
        entries[bad] = dict(entries[bad], filename=1)
    body = json.dumps({"files": entries}, separators=separators).encode()
    expected: list[DistFile] | str = []
    try:
        expected = [
            parse_project_page("pkg", json.dumps({"files": [entry]}).encode(), JSON, BASE).files[0]
            for entry in entries
        ]
    except UpstreamError as exc:
        expected = str(exc)
    for size in (1, 7, 64, 200, 4096, len(body)):
        try:
            read: list[DistFile] | str = list(
                parse_project_stream("pkg", chunks(body, size), JSON, BASE).files
            )
        except UpstreamError as exc:
            read = str(exc)
        assert read == expected, size


def test_a_pages_errors_do_not_depend_on_its_pieces() -> None:
    good = TRICKY_JSON.encode()
    bodies = [
        b"",
        b"{not json",
        b'{"files": 3}',
        b'{"files": [], "files": [{"url": "x"}]}',
        b'{"files": [{"url": "x"}, 1], "versions": {}}',
        b'{"files": [1e5, 01]}',
        b'{"files": [], "versions": 3}',
        b'{"files": []}\n\n  x',
        b"[" * 50_000,
        b'{"files": ' + b"[" * 50_000,
        good.replace(b'"size": 1234', b'"size": 12.'),
        good.replace(b"\xc3\xa9", b"\xc3", 1),  # a UTF-8 character cut short
        good.replace(b'"yanked": false', b'"yanked": false,'),
        # bytes that do not decode are the error, wherever they are: a whole decode comes first
        b'{"files": 1 2, "x": "\xff"}',
        b'{"files": [{"filename": 3,, "url": "x"}], "y": "\xff"}',
        good.replace(b"AB12", b"AB12\xff"),
    ]
    for body in bodies:
        with pytest.raises(UpstreamError, match="upstream") as whole:
            parse_project_page("pkg", body, JSON, BASE)
        for size in (1, 3, 7, 4096):
            with pytest.raises(UpstreamError) as streamed:
                parse_project_stream("pkg", chunks(body, size), JSON, BASE)
            assert str(streamed.value) == str(whole.value), (body[:40], size)


def test_a_json_page_cut_short_anywhere_is_an_upstream_error() -> None:
    body = TRICKY_JSON.encode()
    for cut in range(len(body.rstrip())):
        with pytest.raises(UpstreamError, match="not valid PEP 691 JSON"):
            parse_project_stream("pkg", chunks(body[:cut], 7), JSON, BASE)


def large_page(files: int) -> bytes:
    entries = []
    for i in range(files):
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        filename = f"pkg-{i // 50}.{i % 50}-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        entries.append(
            {
                "filename": filename,
                "url": f"https://files.example.com/packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}",
                "hashes": {"sha256": digest},
                "requires-python": ">=3.8",
                "core-metadata": {"sha256": digest[::-1]},
                "size": 1_000_000 + i,
                "upload-time": "2024-09-17T19:13:57.254153Z",
                "yanked": False,
            }
        )
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "pkg", "files": entries}).encode()


def test_a_large_page_is_never_held_whole() -> None:
    body = large_page(5_000)
    assert len(body) > 2_000_000
    gc.collect()
    tracemalloc.start()
    try:
        page = parse_project_stream("pkg", chunks(body, 64 * 1024), JSON, BASE)
        model, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(page.files) == 5_000
    # beyond the model: a chunk, its text and an entry; the body whole, as bytes or text, is far more
    assert peak - model < len(body) // 8, (peak, model, len(body))


_ABSENT = object()


@pytest.mark.parametrize(
    ("member", "value", "field", "expected"),
    [
        ("size", 12, "size", 12),
        ("size", 0, "size", 0),
        ("size", -1, "size", None),
        ("size", True, "size", None),  # a bool is no size, though Python counts it an int
        ("size", 12.0, "size", None),
        ("size", "12", "size", None),
        ("size", None, "size", None),
        ("yanked", True, "yanked", ""),
        ("yanked", "why", "yanked", "why"),
        ("yanked", "", "yanked", ""),
        ("yanked", 1, "yanked", ""),
        ("yanked", 0, "yanked", None),
        ("yanked", False, "yanked", None),
        ("yanked", None, "yanked", None),
        ("requires-python", ">=3.8", "requires_python", ">=3.8"),
        ("requires-python", 3, "requires_python", None),
        ("upload-time", "2024-01-01T00:00:00Z", "upload_time", "2024-01-01T00:00:00Z"),
        ("upload-time", 1704067200, "upload_time", None),
        ("core-metadata", True, "core_metadata", {}),
        ("core-metadata", {"sha256": "AB"}, "core_metadata", {"sha256": "ab"}),
        ("core-metadata", False, "core_metadata", None),
        ("core-metadata", "yes", "core_metadata", None),
        ("core-metadata", [], "core_metadata", None),
        ("dist-info-metadata", True, "core_metadata", {}),  # the name before PEP 714
        ("hashes", {"SHA256": "AB"}, "hashes", {"sha256": "ab"}),
        ("hashes", None, "hashes", {}),
        ("hashes", [], "hashes", {}),
        ("hashes", 0, "hashes", {}),
        ("hashes", ["ab"], "hashes", TypeError),
        ("hashes", "ab", "hashes", TypeError),
        ("filename", 1, "filename", TypeError),
        ("url", None, "url", TypeError),
    ],
)
def test_each_member_of_an_entry_is_read_by_its_json_type(
    member: str, value: object, field: str, expected: object
) -> None:
    entry: dict[str, object] = {"filename": "pkg-1.0.tar.gz", "url": "/f/pkg-1.0.tar.gz", member: value}
    body = json.dumps({"files": [entry]}).encode()
    if expected is TypeError:
        with pytest.raises(UpstreamError, match="not valid PEP 691 JSON: bad "):
            parse_project_page("pkg", body, JSON, BASE)
        return
    (dist,) = parse_project_page("pkg", body, JSON, BASE).files
    assert getattr(dist, field) == expected


def test_core_metadata_given_null_is_no_metadata_whatever_the_older_name_says() -> None:
    entry = {"filename": "pkg-1.0.tar.gz", "url": "/f/pkg-1.0.tar.gz", "core-metadata": None}
    body = json.dumps({"files": [{**entry, "dist-info-metadata": True}]}).encode()
    (dist,) = parse_project_page("pkg", body, JSON, BASE).files
    assert dist.core_metadata is None


# hashes and limits ---------------------------------------------------------------------------


def test_every_hash_a_page_gives_that_hashlib_computes_is_kept() -> None:
    entry = {
        "filename": "pkg-1.0.tar.gz",
        "url": "/f/pkg-1.0.tar.gz",
        "hashes": {
            "SHA256": "AB",
            "sha3_256": "cd",
            "blake2s": "ef",
            "md5": "01",
            "shake_128": "23",
            "foo": "45",
        },
    }
    body = json.dumps({"files": [entry]}).encode()
    (dist,) = parse_project_page("pkg", body, JSON, BASE).files
    # the rest cannot be checked: kept, they would only take memory
    assert dist.hashes == {"sha256": "ab", "sha3_256": "cd", "blake2s": "ef", "md5": "01"}
    html = b"".join(
        b'<a href="/f/pkg-%d.tar.gz#%s=AB" data-core-metadata="%s=cd">x</a>' % (i, algorithm, algorithm)
        for i, algorithm in enumerate([b"sha3_256", b"blake2b", b"sha512", b"shake_256", b"foo"])
    )
    files = parse_project_page("pkg", html, "text/html", BASE).files
    assert [(dict(d.hashes), d.core_metadata) for d in files] == [
        ({"sha3_256": "ab"}, {"sha3_256": "cd"}),
        ({"blake2b": "ab"}, {"blake2b": "cd"}),
        ({"sha512": "ab"}, {"sha512": "cd"}),
        ({}, None),
        ({}, None),
    ]


def endless(head: bytes, entry: bytes) -> Iterator[bytes]:
    """A body that never ends: ``head``, then ``entry`` again and again."""
    yield head
    piece = entry * max(1, 8192 // len(entry))
    while True:
        yield piece


@pytest.mark.parametrize(
    ("head", "entry", "content_type", "message"),
    [
        (b'{"files": [', b'{"filename": "a-1.tar.gz", "url": "a"},', JSON, "lists more than 1,000 files"),
        (b"<html><body>", b"<a href=a>a</a>", "text/html", "lists more than 1,000 files"),
        # a file counts once for each of its hashes: they cost memory as files do
        (
            b'{"files": [',
            b'{"filename": "a", "url": "a", '
            b'"hashes": {"md5": "a", "sha1": "a", "sha256": "a", "sha224": "a"}},',
            JSON,
            "lists more than 1,000 files",
        ),
        (
            b'{"files": [{"filename": "a", "url": "',
            b"a",
            JSON,
            "a value (a file entry, the versions) of more than 65,536",
        ),
        (
            b'{"files": [], "versions": [',
            b'"1.0",',
            JSON,
            "a value (a file entry, the versions) of more than 65,536",
        ),
        (b'{"files": [], "x": [', b"[],", JSON, "a value (a file entry, the versions) of more than 65,536"),
        (b"[", b"[],", JSON, "a value (a file entry, the versions) of more than 65,536"),
        (b"<html><body><a ", b"x=1 ", "text/html", "a tag of more than 4,096 characters"),
        (b'<html><body><a href="', b"a", "text/html", "a tag of more than 4,096 characters"),
    ],
    ids=[
        "files",
        "links",
        "hashes",
        "string",
        "versions",
        "other-member",
        "not-a-page",
        "attributes",
        "href",
    ],
)
def test_a_page_over_its_limits_stops_at_once(
    head: bytes, entry: bytes, content_type: str, message: str
) -> None:
    with pytest.raises(PageTooLarge, match=re.escape(message)):
        parse_project_stream(
            "pkg", endless(head, entry), content_type, BASE, max_files=1_000, max_value=65_536
        )


def test_members_of_a_json_page_it_does_not_use_are_not_held() -> None:
    member = b"[" + b"[]," * 20_000 + b"[]]"  # 60 kB of text, megabytes as lists
    body = b'{"files": []' + b"".join(b', "m%d": %s' % (i, member) for i in range(40)) + b"}"
    gc.collect()
    tracemalloc.start()
    try:
        page = parse_project_stream("pkg", chunks(body, 64 * 1024), JSON, BASE, max_value=65_536)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert page.files == ()
    # one member's lists at a time (a few MB), not forty of them
    assert peak < 12 * 1024**2, peak


def test_a_real_page_is_within_the_limits_of_its_size() -> None:
    body = large_page(5_000)
    # as the fetcher sets them for a max_page_size of the page's own size
    limits = {"max_files": len(body) // 256, "max_value": len(body) // 64}
    assert len(parse_project_stream("pkg", chunks(body, 64 * 1024), JSON, BASE, **limits).files) == 5_000


def json_page(*entries: tuple[str, str, dict[str, str]]) -> bytes:
    files = [{"filename": name, "url": url, "hashes": hashes} for name, url, hashes in entries]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "pkg", "files": files}).encode()


def html_page(*entries: tuple[str, str, dict[str, str]]) -> bytes:
    links = "".join(
        f'<a href="{url}{"".join(f"#{k}={v}" for k, v in hashes.items())}">{name}</a>'
        for name, url, hashes in entries
    )
    return f"<html><body>{links}</body></html>".encode()


@pytest.mark.parametrize(("make", "content_type"), [(json_page, JSON), (html_page, "text/html")])
def test_a_file_listed_twice_is_its_first_entry(
    make: Callable[..., bytes], content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The page, the download and the check use one entry (issue 20, second round, finding 6)."""
    caplog.set_level(logging.DEBUG, logger="nestegg_core.simple.parse")
    good = (
        "pkg-1.0-py3-none-any.whl",
        "https://example.com/good/pkg-1.0-py3-none-any.whl",
        {"sha256": "ab" * 32},
    )
    no_hashes: dict[str, str] = {}
    evil = ("pkg-1.0-py3-none-any.whl", "https://example.com/evil/pkg-1.0-py3-none-any.whl", no_hashes)
    other = ("pkg-1.0.tar.gz", "https://example.com/good/pkg-1.0.tar.gz", no_hashes)
    page = parse_project_page("pkg", make(good, other, evil, evil), content_type, BASE)
    assert [(d.filename, d.url, dict(d.hashes)) for d in page.files] == [good, other]
    assert page.file(good[0]) is page.files[0]
    (line,) = [r.getMessage() for r in caplog.records if "lists before" in r.getMessage()]
    assert "left 2 entries off the page of 'pkg'" in line


@pytest.mark.parametrize(("make", "content_type"), [(json_page, JSON), (html_page, "text/html")])
@pytest.mark.parametrize(
    "url",
    ["file:///srv/pkg-1.0.tar.gz", "ftp://example.com/pkg-1.0.tar.gz", "gopher://example.com/pkg-1.0.tar.gz"],
)
def test_a_file_not_at_an_http_url_is_left_off(
    make: Callable[..., bytes], content_type: str, url: str
) -> None:
    """nestegg fetches files over HTTP(S) only (issue 20, second round, finding 11)."""
    entries: list[tuple[str, str, dict[str, str]]] = [
        ("pkg-1.0.tar.gz", url, {}),
        ("pkg-1.0-py3-none-any.whl", "HTTPS://example.com/pkg-1.0-py3-none-any.whl", {}),
    ]
    page = parse_project_page("pkg", make(*entries), content_type, BASE)
    assert [d.filename for d in page.files] == ["pkg-1.0-py3-none-any.whl"]


@pytest.mark.parametrize(
    ("make", "content_type", "filename", "url"),
    [
        (json_page, JSON, "../pkg-1.0.tar.gz", "https://example.com/f/pkg-1.0.tar.gz"),
        (json_page, JSON, "sub/pkg-1.0.tar.gz", "https://example.com/f/pkg-1.0.tar.gz"),
        (json_page, JSON, "..\\pkg-1.0.tar.gz", "https://example.com/f/pkg-1.0.tar.gz"),
        (html_page, "text/html", "", "https://example.com/f/..%2Fpkg-1.0.tar.gz"),
        (html_page, "text/html", "", "https://example.com/f/sub%5Cpkg-1.0.tar.gz"),
    ],
)
def test_a_file_whose_name_holds_a_path_is_left_off_with_a_warning(
    make: Callable[..., bytes], content_type: str, filename: str, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One such entry costs its file, not the page, in either format (it failed a JSON page whole)."""
    good: tuple[str, str, dict[str, str]] = (
        "pkg-1.0-py3-none-any.whl",
        "https://example.com/f/pkg-1.0-py3-none-any.whl",
        {},
    )
    page = parse_project_page("pkg", make((filename, url, {}), good), content_type, BASE)
    assert [d.filename for d in page.files] == [good[0]]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("left 1 files off the page of 'pkg', their names hold a path: ")


SHA256 = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    ("hashes", "kept"),
    [
        # a digest that can be no digest of its algorithm beside one that can: the sound one is kept
        ({"sha256": SHA256, "md5": "zz"}, {"sha256": SHA256}),
        ({"sha256": SHA256, "sha512": SHA256}, {"sha256": SHA256}),
        ({"sha256": "zz", "md5": "ab" * 16}, {"md5": "ab" * 16}),
        ({"sha256": SHA256.upper(), "md5": "zz"}, {"sha256": SHA256}),
        # alone, it is kept: no bytes match it, so the file is never served (mismatch)
        ({"sha256": "zz"}, {"sha256": "zz"}),
        ({"sha256": "zz", "md5": "yy"}, {"sha256": "zz", "md5": "yy"}),
        (
            {"sha256": SHA256, "md5": "cd" * 16},
            {"sha256": SHA256, "md5": "cd" * 16},
        ),
    ],
)
def test_a_malformed_digest_beside_a_sound_one_is_left_out(
    hashes: dict[str, str], kept: dict[str, str]
) -> None:
    entry = {"filename": "pkg-1.0.tar.gz", "url": "/f/pkg-1.0.tar.gz", "hashes": hashes}
    (dist,) = parse_project_page("pkg", json.dumps({"files": [entry]}).encode(), JSON, BASE).files
    assert dict(dist.hashes) == kept


@pytest.mark.parametrize(
    ("fragment", "hashes"),
    [
        (f"sha256={SHA256}", {"sha256": SHA256}),
        (f"egg=pkg&sha256={SHA256}", {"sha256": SHA256}),  # the first hash among its parts, as pip reads it
        (f"sha256={SHA256}&md5=00", {"sha256": SHA256}),
        (f"foo=1&MD5={SHA256[:32].upper()}", {"md5": SHA256[:32]}),
        (f"sha256={SHA256}#sha256=00", {"sha256": f"{SHA256}#sha256=00"}),  # pip keeps it whole too
        ("egg=pkg", {}),
        ("sha256=", {}),
    ],
)
def test_a_links_hash_is_read_from_its_fragment_as_pip_reads_it(
    fragment: str, hashes: dict[str, str]
) -> None:
    html = f'<a href="/f/pkg-1.0.tar.gz#{fragment}">pkg-1.0.tar.gz</a>'.encode()
    (dist,) = parse_project_page("pkg", html, "text/html", BASE).files
    assert dict(dist.hashes) == hashes


def test_a_state_that_lists_a_file_twice_answers_with_its_first_entry() -> None:
    first, second = DistFile(filename="pkg-1.0.tar.gz", url="a"), DistFile(filename="pkg-1.0.tar.gz", url="b")
    assert ProjectPage.build("pkg", [first, second]).file("pkg-1.0.tar.gz") is first
