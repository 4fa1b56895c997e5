from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.render import (
    HTML_V1,
    JSON_V1,
    TEXT_HTML,
    accepts_gzip,
    negotiate,
    quote_filename,
    rebased,
    rebased_length,
    render_index_html,
    render_index_json,
    render_project,
    render_project_html,
    render_project_json,
    url_growth,
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT_HTML),
        ("", TEXT_HTML),
        ("*/*", TEXT_HTML),
        ("text/html", TEXT_HTML),
        (JSON_V1, JSON_V1),
        (HTML_V1, HTML_V1),
        # what pip and uv send
        (f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01", JSON_V1),
        (f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.01", JSON_V1),
        (f"{JSON_V1};q=0.1, {HTML_V1}", HTML_V1),
        ("application/vnd.pypi.simple.latest+json", JSON_V1),
        ("application/vnd.pypi.simple.latest+html", HTML_V1),
        ("application/*", JSON_V1),
        ("text/*", TEXT_HTML),
        (f"{JSON_V1};q=0, */*;q=0.5", TEXT_HTML),
        ("image/png", None),
        ("application/vnd.pypi.simple.v2+json", None),
        (f"{JSON_V1};q=0", None),
        ("garbage", TEXT_HTML),
        (f"{JSON_V1};q=abc, text/html;q=0.5", TEXT_HTML),
    ],
)
def test_negotiate(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("gzip, deflate", True),
        ("GZip", True),
        ("x-gzip", True),
        ("deflate, br", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),  # a weight of its own beats the wildcard's
        ("gzip;q=0, gzip", True),
        ("gzip;q=0.5", True),
        ("gzip;q=nonsense", False),
        ("br;q=1, gzip ; q=0.1", True),
        (",,gzip,,", True),
    ],
)
def test_accepts_gzip(accept_encoding: str | None, expected: bool) -> None:
    assert accepts_gzip(accept_encoding) is expected


def _page() -> ProjectPage:
    return ProjectPage.build(
        "my-pkg",
        [
            DistFile(
                filename="my_pkg-1.0-py3-none-any.whl",
                hashes={"sha256": "ab" * 32, "md5": "cd" * 16},
                requires_python=">=3.8,<4",
                size=123,
                upload_time="2024-01-02T03:04:05.000000Z",
                core_metadata={"sha256": "ef" * 32},
            ),
            DistFile(filename="my_pkg-0.9.tar.gz", hashes={}, yanked="broken <b>", size=7),
            DistFile(filename="my_pkg-0.8.tar.gz", yanked="", core_metadata={}),
        ],
    )


def _url(dist: DistFile) -> str:
    return f"../../files/my-pkg/{dist.filename}"


def test_json_page_follows_pep_691_and_700() -> None:
    data = json.loads(render_project_json(_page(), _url))
    assert data["meta"] == {"api-version": "1.1"}
    assert data["name"] == "my-pkg"
    assert data["versions"] == ["1.0", "0.9", "0.8"]
    wheel, sdist, old = data["files"]
    assert wheel == {
        "filename": "my_pkg-1.0-py3-none-any.whl",
        "url": "../../files/my-pkg/my_pkg-1.0-py3-none-any.whl",
        "hashes": {"sha256": "ab" * 32},  # sha256 only
        "requires-python": ">=3.8,<4",
        "size": 123,
        "upload-time": "2024-01-02T03:04:05.000000Z",
        "core-metadata": {"sha256": "ef" * 32},
    }
    assert "dist-info-metadata" not in wheel
    assert sdist["yanked"] == "broken <b>"
    assert sdist["hashes"] == {}
    assert old["yanked"] is True
    assert old["core-metadata"] is True


def test_html_page_escapes_and_marks_yanked_and_metadata() -> None:
    html = render_project_html(_page(), _url).decode()
    assert '<meta name="pypi:repository-version" content="1.1">' in html
    assert (
        '<a href="../../files/my-pkg/my_pkg-1.0-py3-none-any.whl#sha256=' + "ab" * 32 + '" '
        'data-requires-python="&gt;=3.8,&lt;4" '
        f'data-core-metadata="sha256={"ef" * 32}" data-dist-info-metadata="sha256={"ef" * 32}">'
        "my_pkg-1.0-py3-none-any.whl</a>"
    ) in html
    assert 'data-yanked="broken &lt;b&gt;"' in html
    # a yank without reason still carries a value: pip ignores a bare attribute
    assert '<a href="../../files/my-pkg/my_pkg-0.8.tar.gz" data-yanked="" data-core-metadata="true"' in html
    assert "md5" not in html


OLD = "http://old.example.com:8080/files/my-pkg/"
#: a base that each format escapes (no Host gives one, but the functions take any)
ODD = "http://old.example.com/p&q='x\"<y>/files/my-pkg/"


def _tricky_page() -> ProjectPage:
    """A page whose texts hold what a file URL starts with in either format, escaped as rendered."""
    return ProjectPage.build(
        "my-pkg",
        [
            *_page().files,
            DistFile(filename="my_pkg-1.1+local.tar.gz", yanked=f'","url":"{OLD}\n<a href="{OLD}', size=9),
            DistFile(filename="my_pkg-1.2.tar.gz", requires_python=f'"{OLD}', hashes={"sha256": "12" * 32}),
            DistFile(filename="my_pkg-1.3.tar.gz", yanked=f'","url":"{ODD}\n<a href="{ODD}'),
        ],
    )


@pytest.mark.parametrize("content_type", [JSON_V1, HTML_V1])
@pytest.mark.parametrize("old", [OLD, ODD, "../../files/my-pkg/"])
@pytest.mark.parametrize(
    "new",
    [
        "http://127.0.0.1:5/files/my-pkg/",
        OLD.replace("/files/", "/nest/files/"),
        OLD.replace("8080", "8081"),  # as long: another port of as many digits
        ODD,
        "../../files/my-pkg/",
    ],
)
@pytest.mark.parametrize("piece", [1, 3, 17, 1000, None])
@pytest.mark.parametrize("empty", [False, True])
def test_rebased_is_the_page_rendered_for_the_new_base(
    content_type: str, old: str, new: str, piece: int | None, empty: bool
) -> None:
    page = ProjectPage.build("my-pkg", []) if empty else _tricky_page()
    before = render_project(page, content_type, lambda dist: old + quote_filename(dist.filename))
    after = render_project(page, content_type, lambda dist: new + quote_filename(dist.filename))
    size = piece or len(before)
    pieces = [before[start : start + size] for start in range(0, len(before), size)]
    assert b"".join(rebased(pieces, content_type, old, new)) == after
    # and its length is known before it is made (an answer's Content-Length)
    assert rebased_length(pieces, content_type, old, new) == len(after)
    assert len(after) - len(before) == url_growth(content_type, old, new) * len(page.files)
    # out as the pieces come: no more is held back than a URL's start (escaped) may be cut
    taken = 0

    def given() -> Iterator[bytes]:
        nonlocal taken
        for given_piece in pieces:
            taken += 1
            yield given_piece

    next(rebased(given(), content_type, old, new))
    assert taken <= (6 * len(old) + 64) // size + 2


def test_index_pages() -> None:
    assert json.loads(render_index_json(["a", "b-c"])) == {
        "meta": {"api-version": "1.1"},
        "projects": [{"name": "a"}, {"name": "b-c"}],
    }
    html = render_index_html(["a", "b-c"]).decode()
    assert '<a href="a/">a</a>' in html
    assert '<a href="b-c/">b-c</a>' in html
