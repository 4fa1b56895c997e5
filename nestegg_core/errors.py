"""The one exception hierarchy of nestegg.

Library code raises these; only the edges turn them into outcomes (the CLI into ``error: ...`` and an
exit code, the WSGI app into an HTTP status, the tox plugin into tox's failure).
"""

from __future__ import annotations

import errno

#: the most characters of a message an answer shows (a client's 60,000-letter name came back whole)
MAX_MESSAGE = 1000


def cut(text: str, limit: int = 200) -> str:
    """``text`` as a message shows it: whole, or its first ``limit`` characters ending in "..."
    (a message names the bad value, not all 5000 digits of it)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NesteggError(Exception):
    """Base of every error nestegg raises on purpose; its message is one line for a user."""

    #: the HTTP status the WSGI layer answers with
    status = 500
    #: the message is the answer's reason phrase too: pip shows that of a failed page, not its body
    in_reason = False


class ConfigError(NesteggError):
    """A configuration value is missing, of the wrong type or unknown; the message names file and key."""


class NotFound(NesteggError):
    """A project or file that neither the private store, the cache nor the upstream has."""

    status = 404


class NotCached(NotFound):
    """A project the cache has nothing of while the upstream cannot be asked (offline): the
    reason phrase says so, as pip shows that and not the body. A 410, not a 404: of a 404 uv
    says only that the package is not in the registry, of another 4xx it shows the reason phrase
    (and neither client retries a 4xx, as both retry a 5xx)."""

    status = 410
    in_reason = True


class UnsafePath(NesteggError):
    """A symbolic link (or a file of another kind) where the nest keeps a folder or file of its own:
    nestegg never follows a link below its dir, so another user of a shared cache cannot make it
    read, write or remove anything elsewhere. Answered as a missing file."""

    status = 404


class UpstreamError(NesteggError):
    """The upstream index could not be reached or answered with an error or garbage."""

    status = 502
    #: why the upstream could not be reached at all ("timed out", "connection refused", "name not
    #: resolved", "connection failed"); None when it answered, however badly
    unreachable: str | None = None
    #: the URL whose host failed, when not the one asked (a redirect's); None: the one asked
    failed_url: str | None = None


class UpstreamTimeout(UpstreamError):
    """The upstream index did not answer in time."""

    status = 504


class UpstreamDown(UpstreamError):
    """An upstream that could not be reached moments ago is not asked again yet (its circuit is
    open): answered at once, 504 after a time-out, 502 otherwise."""

    in_reason = True

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.unreachable = reason
        self.status = 504 if reason == TIMED_OUT else 502


#: the reasons an upstream could not be reached, as :attr:`UpstreamError.unreachable` gives them
TIMED_OUT = "timed out"
REFUSED = "connection refused"
NOT_RESOLVED = "name not resolved"
CONNECTION_FAILED = "connection failed"


def unreachable(error: UpstreamError, reason: str) -> UpstreamError:
    """``error``, marked as a failure to reach the upstream for ``reason``."""
    error.unreachable = reason
    return error


class IntegrityError(UpstreamError):
    """A downloaded file does not match the size or hash its index page promised; never cached."""


class UploadError(NesteggError):
    """An upload was refused: the message says why (PyPI answers these with 400)."""

    status = 400


class ArchiveError(UploadError):
    """A wheel or sdist whose metadata nestegg will not read: not the archive its name says, damaged,
    or past a bound on its members, central directory or unpacked bytes (an upload is refused with
    it; a mirrored wheel is served without PEP 658 metadata)."""


class UploadTooLarge(UploadError):
    """An upload over the configured ``max_upload_size``."""

    status = 413


class InsufficientStorage(NesteggError):
    """The disk (or the user's quota) is full: what was being written is removed, nothing half
    of it stays listed. Answered as RFC 4918's 507."""

    status = 507
    #: the reason phrase of the status
    reason = "Insufficient Storage"


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says that the disk, or the user's quota on it, is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class Unavailable(NesteggError):
    """The server cannot take the request now (as many downloads as it runs at once, no file
    descriptor left): answered 503 with a Retry-After; the same request may work shortly."""

    status = 503
    #: seconds the client is told to wait before it asks again
    retry_after = 5


class Busy(Unavailable):
    """Too much of one kind of work is in hand to take more now (password checks, large pages):
    answered 503 with ``Retry-After``, which pip and uv wait for and retry."""

    retry_after = 1


class LoopDetected(NesteggError):
    """A request that came round a loop of mirrors (its Via names this server): RFC 5842's 508."""

    status = 508


def out_of_files(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it: requests and urllib3 wrap it twice) says that the
    process, or the system, has no file descriptor left."""
    for _ in range(8):  # a chain of causes is short; a loop of them must not hang us
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            return True
        cause = exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
        if cause is None and exc.args and isinstance(exc.args[0], BaseException):
            cause = exc.args[0]  # requests' ConnectionError holds urllib3's error as its argument
        if not isinstance(cause, BaseException):
            return False
        exc = cause
    return False


def no_files_left(what: str) -> Unavailable:
    """What a client is told when no file descriptor was left for ``what`` (:func:`out_of_files`)."""
    return Unavailable(f"the server has too many open files to {what} now; try again shortly")


class AuthError(NesteggError):
    """Missing or wrong credentials."""

    status = 403


class BadRequest(NesteggError):
    """A request the client must fix (a bad query parameter, a ref CI does not watch)."""

    status = 400


class BodyTooLarge(BadRequest):
    """A request body over what its route accepts (uploads have their own, :class:`UploadTooLarge`)."""

    status = 413


class BuildError(NesteggError):
    """A source build failed; the message gives the path of its log."""

    status = 502
    in_reason = True
