"""The projects a wheel's metadata requires (``simple/requires.py``)."""

from __future__ import annotations

import pytest

from nestegg_core.simple import requires
from nestegg_core.simple.clients import marker_environment
from nestegg_core.simple.requires import required_names

LINUX = dict(
    marker_environment(None), sys_platform="linux", python_version="3.11", python_full_version="3.11.7"
)
HEAD = b"Metadata-Version: 2.1\nName: Top\nVersion: 1.0\n"


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        (b"", ()),
        (b"Requires-Dist: b>=1\nRequires-Dist: a\n", ("b", "a")),  # in their order
        (b"requires-dist: Foo_Bar (>=1.0)\n", ("foo-bar",)),  # any case of the field; old-style
        (b"Requires-Dist: a\r\nRequires-Dist: b\r\n", ("a", "b")),  # CRLF
        (b"Requires-Dist: a\nRequires-Dist: A\nRequires-Dist: a[x]>2\n", ("a",)),  # each once
        (b"Requires-Dist: top\nRequires-Dist: a\n", ("a",)),  # not the wheel's own name
        (b'Requires-Dist: a; sys_platform == "win32"\nRequires-Dist: b; sys_platform == "linux"\n', ("b",)),
        (b'Requires-Dist: a; python_version < "3"\nRequires-Dist: b; python_version >= "3.8"\n', ("b",)),
        (b'Requires-Dist: a; extra == "socks"\nRequires-Dist: b\n', ("b",)),  # extras not guessed
        (b'Requires-Dist: a; os_name == "nt" or extra == "x"\n', ()),
        (b"Requires-Dist: !!bad\nRequires-Dist: a; nonsense ==\nRequires-Dist: b\n", ("b",)),
        (b'Requires-Dist: a; python_version ~= "three"\nRequires-Dist: b\n', ("b",)),  # undecidable
        (b"Requires-Dist: \xff\xfe\nRequires-Dist: b\n", ("b",)),  # not UTF-8
        (b"Requires-Dist: " + b"a" * 2000 + b"\nRequires-Dist: b\n", ("b",)),  # a line too long
        (b"Requires-Dist: a\n\nRequires-Dist: b\n", ("a",)),  # the description is not read
        (b"Requires-External: libfoo\nProvides-Extra: x\nRequires-Dist: a\n", ("a",)),
    ],
)
def test_required_names(fields: bytes, names: tuple[str, ...]) -> None:
    assert required_names(HEAD + fields, LINUX, of="Top") == names


def test_required_names_are_bounded() -> None:
    many = b"".join(b"Requires-Dist: name-%d\n" % i for i in range(1000))
    found = required_names(HEAD + many, LINUX)
    assert len(found) == requires.MAX_NAMES
    assert found[:2] == ("name-0", "name-1")
    assert required_names(HEAD + many, LINUX, limit=3) == ("name-0", "name-1", "name-2")


def test_only_the_first_headers_are_read() -> None:
    # past MAX_HEADERS bytes of headers, a field is not read; a file of short lines costs no list
    filler = b"Classifier: x\n" * (requires.MAX_HEADERS // 14 + 1)
    assert required_names(HEAD + b"Requires-Dist: a\n" + filler + b"Requires-Dist: b\n", LINUX) == ("a",)
    assert required_names(b"x\n" * 5_000_000, LINUX) == ()
