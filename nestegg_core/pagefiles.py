"""Rendered mirror pages kept on disk: a warm page costs two stats and a read, in any process.

A page of the mirror is made from what two places on disk hold: the state file of the upstream's
page and the records of the cached files beside them. :func:`disk_token` names that pair (inode,
mtime and size of the state file; mtime of the files folder), and a rendering saved under the
token it was made from is the page any process would render while the token stays the same. So a
process that has never parsed a page (a tox run's fresh mirror, a worker of a pre-forking server)
serves it straight from its rendered file, and one that dropped the page's model to save memory
does not make it again to answer a warm request.

A rendered file starts with one line -- format, token, the state's check time (for the TTL), the
ETag and the length of the body, padded with spaces when it was written before the body was
known -- followed by the bytes as served. Files are replaced atomically;
a damaged, cut short or foreign one is a miss. When the token cannot be trusted (the files folder
changed within the last second, so a second change may hide in the same clock tick) nothing is
read or saved.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

from packaging.utils import NormalizedName

from . import store as _store
from ._version import __version__
from .store import atomic_file

logger = logging.getLogger(__name__)

#: the format, and the release that rendered: another release may render differently
_MAGIC = f"nestegg-page-1/{__version__}".encode()
_MAX_HEADER = 512
#: the room a page written a piece at a time keeps for its header, filled in once the body is known
_HEADER_ROOM = 256


def etag(body: bytes) -> str:
    """The strong ETag of a page's bytes."""
    return _etag(hashlib.sha256(body))


def _etag(digest: hashlib._Hash) -> str:
    return '"' + digest.hexdigest()[:32] + '"'


def disk_token(state_file: str | Path, files_folder: str | Path) -> str | None:
    """What the page on disk is made from, or None when there is no state or it is unsettled."""
    try:
        state = os.stat(state_file)
    except OSError:
        return None
    try:
        folder = os.stat(files_folder).st_mtime_ns
    except FileNotFoundError:
        folder = 0
    except OSError:
        return None
    if folder and time.time_ns() - folder < _store.SETTLE_NS:
        return None
    return f"{state.st_ino:x}.{state.st_mtime_ns:x}.{state.st_size:x}.{folder:x}"


@dataclass(frozen=True, slots=True)
class PageFile:
    """An open rendered page: its body is ``size`` bytes of ``handle`` from the current position."""

    handle: FileIO
    size: int
    etag: str
    checked: float
    token: str

    def close(self) -> None:
        self.handle.close()


class RenderedPages:
    """The rendered pages of one mirror, one file per project and kind (``json``, ``html``, ...)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: NormalizedName, kind: str) -> Path:
        return self.folder / f"{name}.{kind}"

    def open(self, name: NormalizedName, kind: str, token: str) -> PageFile | None:
        """The page rendered from ``token``'s state, or None (not saved, older, or damaged)."""
        try:
            # unbuffered: the position after the header is the file descriptor's own, which is
            # where servers that send the file themselves (sendfile) start
            handle = open(self.path(name, kind), "rb", buffering=0)  # noqa: SIM115 - caller closes it
        except OSError:
            return None
        try:
            head = handle.read(_MAX_HEADER)
            end = head.find(b"\n") + 1
            parts = head[:end].split()
            if not end or len(parts) != 5 or parts[0] != _MAGIC:
                handle.close()
                return None
            found, checked, etag = parts[1].decode(), float(parts[2]), parts[3].decode()
            size = os.fstat(handle.fileno()).st_size - end
            if size != int(parts[4]):  # cut short (or grown): not what was saved
                handle.close()
                return None
            handle.seek(end)
        except (OSError, ValueError, UnicodeDecodeError):
            handle.close()
            return None
        if found != token:
            handle.close()
            return None
        return PageFile(handle=handle, size=size, etag=etag, checked=checked, token=token)

    def write(
        self, name: NormalizedName, kind: str, *, token: str, checked: float, pieces: Iterable[bytes]
    ) -> PageFile | None:
        """Keep the page of ``pieces`` as rendered from ``token``, written as they come (a large
        page is never whole in memory), and open it; None when it could not be written.
        """
        digest, size = hashlib.sha256(), 0
        try:
            with atomic_file(self.path(name, kind)) as handle:
                handle.write(b" " * (_HEADER_ROOM - 1) + b"\n")
                for piece in pieces:
                    digest.update(piece)
                    size += len(piece)
                    handle.write(piece)
                header = _header(token, checked, _etag(digest), size)
                if len(header) > _HEADER_ROOM:  # a token of another shape: never made by disk_token
                    raise OSError(f"header of {len(header)} bytes")
                handle.seek(0)
                handle.write(header[:-1].ljust(_HEADER_ROOM - 1) + b"\n")
        except OSError as exc:
            logger.warning("cannot keep the rendered page of %r: %s", name, exc)
            return None
        return self.open(name, kind, token)


def _header(token: str, checked: float, etag: str, size: int) -> bytes:
    fields = (_MAGIC, token.encode(), repr(checked).encode(), etag.encode(), b"%d" % size)
    return b" ".join(fields) + b"\n"
