"""The page models: hashes held compactly, and read back exactly as given."""

from __future__ import annotations

import sys

import pytest

from nestegg_core.models import Hashes

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
