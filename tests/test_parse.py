from __future__ import annotations

import json

import pytest

from nestegg_core.errors import UpstreamError
from nestegg_core.parse import parse_project_page

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
        (b'{"files": [{"filename": "a/../b", "url": "x"}]}', "application/vnd.pypi.simple.v1+json"),
        (b'{"files": [{"url": "x"}]}', "application/vnd.pypi.simple.v1+json"),
        (b"[]", "application/json"),
        (b"\x89PNG", "image/png"),
    ],
)
def test_garbage_is_an_upstream_error(body: bytes, content_type: str) -> None:
    with pytest.raises(UpstreamError, match="upstream"):
        parse_project_page("pkg", body, content_type, BASE)
