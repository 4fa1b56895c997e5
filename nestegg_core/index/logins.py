"""The credentials of an upstream index, found the way pip finds them: in its URL, else in
``.netrc`` (for the index's host only), else in the user's keyring (when the ``keyring``
package can be imported: it is no dependency of nestegg).

They are sent to the index's own origin only (``upstream.HttpFetcher``); no message shows them.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from nestegg_core.urls import without_credentials

__all__ = ["index_credentials", "keyring_login", "known_credentials"]

logger = logging.getLogger(__name__)

Login = tuple[str, str]


def index_credentials(index_url: str) -> Login | None:
    """The user and password for the index at ``index_url``, or None if none is known."""
    host = urlsplit(index_url).hostname
    return known_credentials(index_url) or (
        keyring_login(without_credentials(index_url), host) if host else None
    )


def known_credentials(index_url: str) -> Login | None:
    """The credentials of its URL, else of ``.netrc``: what is sent from the first request on. The
    keyring is asked only once the index wants credentials (a 401), as pip asks it: a keyring
    backend may take a fraction of a second to load, or ask its user to unlock it."""
    parts = urlsplit(index_url)
    if parts.username is not None:
        return unquote(parts.username), unquote(parts.password or "")
    return netrc_login(parts.hostname) if parts.hostname else None


def netrc_file() -> Path | None:
    """The ``.netrc`` requests and pip read: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    named = os.environ.get("NETRC")
    candidates = [Path(named)] if named else [Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()]
    return next((path for path in candidates if path.is_file()), None)


def netrc_login(host: str) -> Login | None:
    """The ``.netrc`` entry of ``host`` (or its ``default`` entry), read for that host only."""
    path = netrc_file()
    if path is None:
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError) as exc:  # the message names no line's content
        logger.warning("cannot read %s: %s", path, getattr(exc, "msg", None) or type(exc).__name__)
        return None
    if entry is None or not entry[0]:
        return None
    return entry[0], entry[2] or ""


def keyring_login(url: str, host: str) -> Login | None:
    """The keyring's credentials for the index (asked by its URL, then its host, as pip asks),
    if the ``keyring`` package is importable; None without it, or when it has none."""
    try:
        import keyring  # noqa: PLC0415 - optional: only for users who have it
    except ImportError:
        return None
    for service in (url, host):
        try:
            found = keyring.get_credential(service, None)
        except Exception as exc:  # noqa: BLE001 - a keyring backend may fail any way it likes
            logger.debug("the keyring gave no credentials for %s: %s", host, type(exc).__name__)
            return None
        if found is not None and found.password:
            return found.username or "", found.password
    return None
