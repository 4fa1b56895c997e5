"""The page models: hashes held compactly, and read back exactly as given."""

from __future__ import annotations

import sys

import pytest

from nestegg_core.models import Hashes, is_dist_filename

SHA256 = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("digest", "packed"),
    [
        (SHA256, True),
        ("ab", True),
        (SHA256.upper(), False),  # read back as given, not lowercased
        (SHA256[:-1], False),
        ("ab cd", False),
        ("not-hex", False),
        ("", True),
    ],
    ids=["sha256", "short", "uppercase", "odd", "spaced", "not-hex", "empty"],
)
def test_a_digest_reads_back_as_given(digest: str, packed: bool) -> None:
    hashes = Hashes("sha256", digest)
    assert hashes["sha256"] == digest
    assert hashes.get("sha256") == digest
    assert hashes.get("md5", "none") == "none"
    assert dict(hashes) == {"sha256": digest}
    assert hashes == {"sha256": digest}
    assert hashes == Hashes("sha256", digest)
    assert hash(hashes) == hash(Hashes("sha256", digest))
    assert isinstance(hashes._digest, bytes) == packed


def test_a_sha256_is_held_in_less_than_half_the_memory_of_its_text() -> None:
    held = Hashes("sha256", SHA256)._digest
    assert sys.getsizeof(held) < sys.getsizeof(SHA256) * 0.6


def test_no_hashes_is_empty() -> None:
    assert dict(Hashes()) == {}
    assert Hashes().get("sha256") is None
    with pytest.raises(KeyError):
        Hashes()["sha256"]


@pytest.mark.parametrize(
    ("filename", "dist"),
    [
        ("pkg-1.0-py3-none-any.whl", True),
        ("pkg-1.0.tar.gz", True),
        ("pkg-1.0.zip", True),
        ("PKG-1.0.TAR.GZ", True),  # old uploads in capitals
        ("pkg-1.0.tar.bz2", True),
        ("pkg-1.0.tgz", True),
        ("pkg-1.0.tar.xz", True),
        ("pkg-1.0.tar", True),
        ("pkg-1.0.tar.Z", True),
        ("pkg-1.0-py2.7.egg", True),
        ("pkg-1.0.win32.exe", True),
        ("pkg-1.0.win32.msi", True),
        ("pkg-1.0-1.noarch.rpm", True),
        ("pkg-1.0.dmg", True),
        ("python-pkg_1.0_all.deb", True),
        ("pkg-1.0.tar.gz.json", False),  # a record
        ("pkg-1.0-py3-none-any.whl.metadata", False),  # core metadata
        ("pkg-1.0.tar.gz.JSON", False),
        (".pkg-1.0.tar.gz.123.4.part", False),  # a download in progress
        (".pkg-1.0.tar.gz.abcd.tmp", False),  # a write in progress
        (".changed", False),
        (".generation", False),
        ("pkg-1.0.tar.gz.lock", False),
        (".pkg-1.0.tar.gz", False),
        ("README", False),
        ("index.html", False),
        ("pkg.json", False),
        ("", False),
        ("a/pkg-1.0.tar.gz", False),
        ("a\\pkg-1.0.tar.gz", False),
        ("pkg\x00-1.0.tar.gz", False),
        ("p" * 250 + ".whl", True),
        ("p" * 252 + ".whl", False),  # over 255 bytes: no file system takes it
    ],
)
def test_only_distribution_filenames_are_files_of_a_store(filename: str, dist: bool) -> None:
    assert is_dist_filename(filename) is dist
