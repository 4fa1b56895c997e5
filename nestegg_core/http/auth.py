"""Credentials over HTTP: Basic auth, the checks of an upload, and the read guard of private projects."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable

from packaging.utils import NormalizedName, canonicalize_name

from nestegg_core.config.config import Config
from nestegg_core.config.credentials import Credentials, refusal
from nestegg_core.errors import AuthError
from nestegg_core.simple.models import is_normalized
from nestegg_core.storage.private import PrivateStore

from .types import Environ, StartResponse

logger = logging.getLogger(__name__)

REALM = "nestegg"


def basic_credentials(environ: Environ) -> tuple[str, str] | None:
    """The user and password of an ``Authorization: Basic`` header, or None."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


def environ_user(credentials: Credentials, environ: Environ) -> str | None:
    """The user whose valid Basic credentials ``environ`` carries (for a token, the user it
    names), else None."""
    sent = basic_credentials(environ)
    if sent is None:
        return None
    return credentials.user_of(*sent)


def require_upload_user(credentials: Credentials | None, environ: Environ) -> str:
    """The user allowed to upload by ``environ``'s credentials, else :class:`AuthError` (403)."""
    credentials, sent = upload_credentials(credentials, environ)
    user = credentials.user_of(*sent)
    if user is None:
        raise AuthError(refusal(sent))
    return user


def upload_credentials(
    credentials: Credentials | None, environ: Environ
) -> tuple[Credentials, tuple[str, str]]:
    """The checks of :func:`require_upload_user` that cost nothing (no password check): the
    credentials to check against and the user and password sent, else :class:`AuthError`."""
    if credentials is None:
        raise AuthError(
            "uploads are disabled: set credentials_file in nestegg.yml and add a user with "
            "'nestegg passwd USER'"
        )
    sent = basic_credentials(environ)
    if sent is None:
        raise AuthError("uploads need credentials: send a user and password (or __token__ and a token)")
    return credentials, sent


def read_guard(config: Config, private: PrivateStore, credentials: Credentials | None) -> ReadGuard | None:
    """With ``private_read_auth``, the guard that asks for credentials before private projects."""
    if not config.private_read_auth:
        return None
    if credentials is None:
        logger.warning(
            "private_read_auth is on but no credentials_file is set: private projects are unreadable"
        )
    return ReadGuard(
        credentials,
        lambda name: private.is_private(NormalizedName(name)) or private.is_merged(NormalizedName(name)),
    )


class ReadGuard:
    """Asks for credentials (401) before private projects' pages and files are served.

    The app's ``guard``: called with each GET/HEAD request, it answers those it
    refuses and returns None for the rest.
    """

    def __init__(self, credentials: Credentials | None, is_protected: Callable[[str], bool]) -> None:
        self.credentials = credentials
        self.is_protected = is_protected

    def allows(self, environ: Environ) -> bool:
        """Whether ``environ`` carries valid credentials (see :meth:`Credentials.user_of`)."""
        return self.credentials is not None and environ_user(self.credentials, environ) is not None

    def visible(self, environ: Environ) -> Callable[[str], bool]:
        """Which project names ``environ``'s request may see listed (the root index, the web UI).

        Its credentials are checked when a protected name is first asked about, if ever: a list
        of public names costs no password check, whatever credentials come with it.
        """
        allowed: list[bool] = []

        def visible(name: str) -> bool:
            if not self.is_protected(name):
                return True
            if not allowed:
                allowed.append(self.allows(environ))
            return allowed[0]

        return visible

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes] | None:
        name = _project_of_path(environ.get("PATH_INFO", ""))
        if name is None or not self.is_protected(name):
            return None
        if self.allows(environ):
            return None
        sent = basic_credentials(environ)
        if self.credentials is None:
            message = "private projects need credentials, but no credentials_file is configured"
        elif sent is None:
            message = f"project {name!r} is private: send credentials"
        else:
            message = refusal(sent)
        body = (message + "\n").encode()
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _project_of_path(path: str) -> str | None:
    """The normalized project a ``/simple/<name>/``, ``/files/<name>/...`` or ``/pypi/<name>/...``
    path is about."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] in ("simple", "files", "pypi") and parts[2]:
        name = parts[2] if is_normalized(parts[2]) else canonicalize_name(parts[2])
        return name if is_normalized(name) else None
    return None
