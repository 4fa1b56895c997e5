"""Credentials: a file of ``user:hash`` lines, its password hashes, and tokens.

The file (``credentials_file`` in the config) holds one line per user::

    alice:scrypt$16384$8$1$<salt>$<hash>

Salt and hash are unpadded URL-safe base64. ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` lines are
accepted too. ``nestegg passwd USER`` writes the file.

A token is a password made by ``nestegg passwd USER --generate``: ``nestegg.<user>.<secret>``, the
user in URL-safe base64. ``twine``/``uv publish`` send it with the user name ``__token__``; the user
inside says whose hash to check, so a login costs one check however many users there are.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from nestegg_core.errors import Busy, ConfigError
from nestegg_core.waits import blocking

logger = logging.getLogger(__name__)

#: the user name twine and uv send with an API token
TOKEN_USER = "__token__"  # noqa: S105 - a user name, not a password

# scrypt at n=2**14, r=8: about 16 MiB and some tens of milliseconds per check
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_VERIFIED_CACHE = 1024
#: wrong (user, password) pairs remembered, so that one sent again costs no second check
_REFUSED_CACHE = 4096
#: password checks run at once in the process (each some tens of milliseconds of a core): a flood
#: of made-up credentials leaves the other cores to pages, and to remembered credentials
CHECKS_AT_ONCE = 1
#: seconds a check waits for its turn before it is answered 503 (Retry-After)
CHECK_WAIT = 5.0
#: a token: the prefix, the user in URL-safe base64, a dot, the secret (neither base64 part has a dot)
_TOKEN = re.compile(r"^nestegg\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{16,})$")
NOT_A_TOKEN = (
    f"the password sent with {TOKEN_USER} is not a nestegg token: make one with "
    "'nestegg passwd USER --generate', or log in with your user name"
)


def hash_password(password: str, *, n: int = _SCRYPT_N, r: int = _SCRYPT_R, p: int = _SCRYPT_P) -> str:
    """A salted scrypt hash of ``password`` in the file's self-describing form."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (from :func:`hash_password`); False if malformed."""
    parts = encoded.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            salt, expected = _unb64(parts[4]), _unb64(parts[5])
            actual = _scrypt(password, salt, n, r, p, length=len(expected))
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            salt, expected = _unb64(parts[2]), _unb64(parts[3])
            actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, len(expected))
        else:
            return False
    except (ValueError, binascii.Error, OverflowError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, *, length: int = _HASH_BYTES) -> bytes:
    # maxmem above the 32 MiB default leaves room for a stronger n than ours in hand-made files
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * 1024**2)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(user: str) -> str:
    """A new random token for ``user`` (to store as its password): ``nestegg.<user>.<secret>``.

    The user inside lets a ``__token__`` login check that user's hash alone. The dots set it apart
    from an ordinary password, and from the tokens made before (URL-safe base64, which has none).
    """
    return f"nestegg.{_b64(user.encode('utf-8'))}.{secrets.token_urlsafe(32)}"


def token_user(token: str) -> str | None:
    """The user a token of :func:`make_token` names, or None for anything else."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    try:
        return _unb64(match.group(1)).decode("utf-8") or None
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def check_user_name(user: str) -> str:
    """``user`` if it can be a line of the file, else :class:`ConfigError` naming it."""
    if not user or ":" in user or user != user.strip() or any(c in user for c in "\r\n\x00"):
        raise ConfigError(f"invalid user name {user!r}: it must be non-empty, without ':' or spaces around")
    if user == TOKEN_USER:
        raise ConfigError(f"{TOKEN_USER!r} is the name clients send with a token; choose another user name")
    return user


def open_credentials(path: Path) -> Credentials:
    """The users of ``path``, read once now: a file that cannot be read or parsed is an error
    when the server starts, not a 500 at the first upload; one that does not exist yet is said
    (``nestegg passwd`` makes it, and it is read once it exists)."""
    credentials = Credentials(path)
    if not os.path.lexists(path):
        logger.warning(
            "credentials file %r does not exist: uploads are refused until 'nestegg passwd USER' "
            "adds a user to it",
            str(path),
        )
    else:
        credentials.users()
    return credentials


class Credentials:
    """The users of a credentials file, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        # (user, password) already checked against a hash, keyed by an HMAC under a per-process key,
        # so that a client sending the same credentials with every request pays for scrypt once;
        # wrong ones too, apart (made-up ones never push out the right ones), with the hash they
        # were checked against ("" for no user): a change of the user's line checks them again
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._refused: OrderedDict[bytes, str] = OrderedDict()

    def users(self) -> dict[str, str]:
        """User name to encoded hash, as the file says now (empty if it does not exist)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read credentials file {str(self.path)!r}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._users = read_credentials(self.path)
                self._stamp = stamp
            return self._users

    def check(self, user: str, password: str) -> bool:
        """Whether ``user``/``password`` are valid (``__token__`` with a token of a user is)."""
        return self.user_of(user, password) is not None

    def user_of(self, user: str, password: str) -> str | None:
        """The user whose password ``password`` is: ``user``, or for ``__token__`` the user the
        token names; None when the credentials are wrong. One password check at most."""
        if user == TOKEN_USER:
            owner = token_user(password)
            if owner is None:
                return None  # no token: refused without a check (see NOT_A_TOKEN)
            user = owner
        encoded = self.users().get(user)
        key = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        known = self._known(key, encoded)
        if known is not None:
            return user if known else None
        with _turn():
            known = self._known(key, encoded)  # the same credentials checked while this one waited
            if known is not None:
                return user if known else None
            # an unknown user is checked as slowly as a known one: timing tells no names
            valid = verify_password(password, _DUMMY_HASH if encoded is None else encoded)
            valid = valid and encoded is not None
        with self._lock:
            cache, size = (self._verified, _VERIFIED_CACHE) if valid else (self._refused, _REFUSED_CACHE)
            cache[key] = encoded or ""
            cache.move_to_end(key)
            while len(cache) > size:
                cache.popitem(last=False)
        return user if valid else None

    def _known(self, key: bytes, encoded: str | None) -> bool | None:
        """Whether the credentials of ``key`` were found right (or wrong) against ``encoded``
        before; None if they were not checked against it."""
        if encoded is not None and self._verified.get(key) == encoded:
            return True
        if self._refused.get(key) == (encoded or ""):
            return False
        return None


#: taken by a password check while it runs (process-wide: both credentials objects of an app, and
#: every app, share the cores)
_CHECKS = threading.BoundedSemaphore(CHECKS_AT_ONCE)


@contextlib.contextmanager
def _turn() -> Iterator[None]:
    """Held while a password is checked: waits (a declared wait) up to ``CHECK_WAIT`` seconds for
    one of the ``CHECKS_AT_ONCE`` places, then :class:`Busy`."""
    with blocking():
        if not _CHECKS.acquire(timeout=CHECK_WAIT):
            raise Busy("too many password checks at once: try again in a moment")
    try:
        yield
    finally:
        _CHECKS.release()


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def refusal(sent: tuple[str, str]) -> str:
    """Why the credentials ``sent`` (user, password) were refused, in one line."""
    user, password = sent
    if user == TOKEN_USER and token_user(password) is None:
        return NOT_A_TOKEN
    return f"invalid credentials for user {user!r}"


def read_credentials(path: Path) -> dict[str, str]:
    """Parse a credentials file; :class:`ConfigError` names the line of a malformed entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read credentials file {str(path)!r}: {reason}") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user or not encoded.startswith(("scrypt$", "pbkdf2_sha256$")):
            raise ConfigError(
                f"{path}:{number}: expected 'user:scrypt$...' (made by 'nestegg passwd USER'), "
                f"got {_shorten(line)!r}"
            )
        users[user] = encoded
    return users


def _shorten(line: str) -> str:
    user, _, rest = line.partition(":")
    return f"{user}:{rest[:12]}..." if len(rest) > 12 else line


def set_password(path: Path, user: str, password: str | None) -> bool:
    """Add or change ``user`` in the file (``password=None`` deletes it); whether it existed.

    The file is rewritten through a temporary file and a rename, readable by its owner only;
    comments and other users' lines are kept as they are.
    """
    check_user_name(user)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read credentials file {str(path)!r}: {reason}") from None
    kept = [line for line in lines if line.strip().partition(":")[0] != user or line.lstrip().startswith("#")]
    existed = len(kept) != len(lines)
    if password is not None:
        if not password:
            raise ConfigError("the password is empty")
        kept.append(f"{user}:{hash_password(password)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in kept))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return existed
