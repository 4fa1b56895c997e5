"""URLs as nestegg shows and compares them: passwords masked for logs and messages, credentials
taken off, index URLs in one form."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["mask_text", "mask_url", "normalize_index_url", "without_credentials"]

#: a URL's scheme, and what stands before it in the same run of scheme characters ("-https://",
#: "1https://"): matched from the start of that run only, the pattern takes time linear in a word's
#: length (tried from every letter, one word of 80,000 letters of build output took 35 s)
_URL_IN_TEXT = re.compile(r"(?<![a-z0-9+.-])[0-9+.-]*([a-z][a-z0-9+.-]*://[^\s'\"]+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, fit for logs and messages.

    A user name without a password, or with an empty one, is masked whole: it is how tokens are
    passed (``https://TOKEN@example.com``, ``https://TOKEN:@example.com``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable ("http://[::1"): all before its last "@" but the scheme is masked
        head, at, tail = url.rpartition("@")
        scheme, slashes, _ = head.partition("://")
        return f"{scheme}{slashes}***@{tail}" if at else url
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    user, _, password = userinfo.partition(":")
    masked = f"{user}:***" if password else "***"
    return urlunsplit(parts._replace(netloc=f"{masked}@{host}"))


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    if "://" not in text:  # most lines of a build's output
        return text
    return _URL_IN_TEXT.sub(
        lambda match: match.group(0)[: match.start(1) - match.start(0)] + mask_url(match.group(1)), text
    )


def without_credentials(url: str) -> str:
    """The URL without any user name or password (the fetcher adds the index's own to its host)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def normalize_index_url(url: str) -> str:
    """The form index URLs are compared and keyed in: surrounding blanks gone, one trailing slash."""
    return url.strip().rstrip("/") + "/"
