"""URLs as nestegg shows them: no password, and no token given as a user name, ever shown."""

from __future__ import annotations

import time

import pytest

from nestegg_core.urls import mask_text, mask_url, without_credentials


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://example.com/simple/", "https://example.com/simple/"),
        ("https://alice:pw@example.com/simple/", "https://alice:***@example.com/simple/"),
        # a token as the user name, with no password or an empty one, as pip takes it: the user is the secret
        ("https://TOKEN@example.com/simple/", "https://***@example.com/simple/"),
        ("https://TOKEN:@example.com/simple/", "https://***@example.com/simple/"),
        ("https://:pw@example.com/simple/", "https://:***@example.com/simple/"),
        ("http://alice:p@ss@127.0.0.1:8080/simple/", "http://alice:***@127.0.0.1:8080/simple/"),
        ("http://TOKEN:@[::1", "http://***@[::1"),  # unparsable
        ("http://[::1", "http://[::1"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_text_masks_a_token_with_an_empty_password() -> None:
    text = "upstream http://TOKEN:@127.0.0.1:1/simple/ is unreachable"
    assert mask_text(text) == "upstream http://***@127.0.0.1:1/simple/ is unreachable"


@pytest.mark.parametrize(
    "url",
    [
        "https://TOKEN@example.com/simple/",
        "https://TOKEN:@example.com/simple/",
        "https://a:b@example.com/simple/",
    ],
)
def test_without_credentials(url: str) -> None:
    assert without_credentials(url) == "https://example.com/simple/"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("git+https://u:secret@example.com/r.git", "git+https://u:***@example.com/r.git"),
        ("word-https://u:secret@example.com/", "word-https://u:***@example.com/"),  # one scheme
        ("(https://u:secret@example.com/)", "(https://u:***@example.com/)"),
        ("-https://u:secret@example.com/", "-https://u:***@example.com/"),
        ("1https://TOKEN@example.com/", "1https://***@example.com/"),
        ("--.+9git+https://u:secret@example.com/", "--.+9git+https://u:***@example.com/"),
        ("a" * 50 + "://u:secret@example.com/", "a" * 50 + "://u:***@example.com/"),
    ],
)
def test_a_url_in_text_is_masked_wherever_it_starts(text: str, masked: str) -> None:
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000 + "://",  # a build that prints one long word
        "ab-" * 70_000 + " https://u:secret@example.com/",
        "a1+." * 50_000 + " x",
        "-" * 100_000 + "https://u:secret@example.com/",
    ],
    ids=["word", "word-then-url", "scheme-letters", "dashes-then-url"],
)
def test_a_long_word_is_masked_in_linear_time(text: str) -> None:
    """Tried from every letter of a word, the pattern took time quadratic in its length: 80,000
    letters took 35 s, so these took minutes. A bound, not a benchmark: linear, they take ms."""
    start = time.monotonic()
    masked = mask_text(text)
    assert time.monotonic() - start < 5
    assert "secret" not in masked
