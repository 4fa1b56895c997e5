"""Rendered mirror pages kept on disk: a warm page costs at most two stats and a read, in any process.

A page of the mirror is made from what two places on disk hold: the state file of the upstream's
page and the records of the cached files beside them. :func:`disk_token` names that pair (inode,
mtime and size of the state file; mtime of the project's change marker, which a process touches
when a file it caches or removes changes the page: a file cached just as the index lists it does
not), and a rendering saved under the token it was made from is the page any process would
render while the token stays the same. So a process that has never parsed a page (a tox run's
fresh mirror, a worker of a pre-forking server) serves it straight from its rendered file, and
one that dropped the page's model to save memory does not make it again to answer a warm request.

A rendered file starts with one line -- format, token, the state's check time (for the TTL), the
ETag, the length of the body and the base URL its file URLs start with (``-`` if not known),
padded with spaces when it was written before the body was known -- followed by the bytes as
served. Beside each rendering lies its gzip encoding (``.gz``, a file of the same form, made in
the same pass) for clients that accept it: the large pages of the index compress about five
times. Files are replaced atomically; a damaged, cut short or foreign one is a miss. When the
token cannot be trusted (the marker changed within the last second, so a second change may hide
in the same clock tick) nothing is read or saved. The repository takes the token's stats only
when its store's generation changed (``generation``).

The renderings for one kind of installer (``compatible_only``: kinds ``json-<client>``) or for
one base URL (``json-@<base>``) lie in a folder of their page, ``<name>.clients``, which keeps
those of at most ``MAX_CLIENTS`` of them: each User-Agent or Host may make one, and made-up ones
must not fill the disk. :meth:`RenderedPages.elsewhere` lists those of another base, from which
the repository makes a new base's without the page (``render.rebased``).
:meth:`RenderedPages.sweep` (``nestegg prune``, the size limit) removes the renderings that can
never be served again: those of a page whose state is gone, and those older than their page's
state or change marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import BinaryIO

from packaging.utils import NormalizedName

from nestegg_core._version import __version__
from nestegg_core.errors import UnsafePath
from nestegg_core.simple.models import is_normalized

from . import store as _store
from .fs import atomic_file, open_below, rename_below, scan_below, temp_file, unlink_below

logger = logging.getLogger(__name__)

#: the format, and the release that rendered: another release may render differently
_MAGIC = f"nestegg-page-1/{__version__}".encode()
_MAX_HEADER = 512
#: the room a page written a piece at a time keeps for its header, filled in once the body is known
_HEADER_ROOM = 384
#: the longest base URL a header keeps (a longer one, a proxy's public URL, goes unsaid)
_MAX_BASE = 200
#: zlib's fastest level: it runs while a cold page is answered, and level 6 makes files only an
#: eighth smaller for twice the time (most of a page is sha256 digests, which do not compress)
_GZIP_LEVEL = 1
#: the suffix of a rendering's gzip encoding
GZIP = ".gz"
#: a rendering is written (and compressed) in blocks of about this size
_BLOCK = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: the folder of a page's renderings for kinds of installer, beside its own (no name has a dot)
CLIENTS = ".clients"
#: the kinds of installer whose renderings a page keeps; past it, the oldest written go
MAX_CLIENTS = 8
#: a temporary file of a rendering older than this (seconds) was left by a crash
_STALE_TEMP = 24 * 3600.0


def etag(body: bytes) -> str:
    """The strong ETag of a page's bytes."""
    return _etag(hashlib.sha256(body))


def _etag(digest: hashlib._Hash) -> str:
    return '"' + digest.hexdigest()[:32] + '"'


def rebased_etag(etag: str, old: str, new: str) -> str:
    """The strong ETag of the page whose bytes are those of ETag ``etag`` with the file URLs' start
    ``old`` made ``new`` (``render.rebased``): known before those bytes are made, without hashing
    them. It is not the ETag the same bytes get when rendered from the page's state; a client
    reaching the mirror at the new base has no copy under the other anyway."""
    return _etag(hashlib.sha256(f"{etag} {old} {new}".encode()))


def compressor() -> zlib._Compress:
    """A gzip encoder of rendered pages: the same bytes in, the same bytes out, in every process."""
    return zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


def disk_token(state_file: str | Path, *markers: str | Path) -> str | None:
    """What the page on disk is made from (its state file and the change ``markers`` a rendering
    depends on), or None when there is no state or a marker is unsettled."""
    try:
        state = os.lstat(state_file)  # a link is not followed (and is read as no state: ``store``)
    except OSError:
        return None
    token = f"{state.st_ino:x}.{state.st_mtime_ns:x}.{state.st_size:x}"
    for marker in markers:
        try:
            changed = os.lstat(marker).st_mtime_ns
        except FileNotFoundError:
            changed = 0
        except OSError:
            return None
        if changed and time.time_ns() - changed < _store.SETTLE_NS:
            return None
        token += f".{changed:x}"
    return token


@dataclass(frozen=True, slots=True)
class PageFile:
    """An open rendered page: its body is ``size`` bytes of ``handle`` from the current position."""

    handle: FileIO
    size: int
    etag: str
    checked: float
    token: str
    #: the base URL its file URLs start with, if the header says it (see ``render.rebased``)
    base: str | None = None
    #: where in the file the body starts
    start: int = 0

    def close(self) -> None:
        self.handle.close()

    def blocks(self) -> Iterator[bytes]:
        """The body a block at a time, read where it lies (again at each call, the handle's
        position untouched); OSError if it is not ``size`` bytes (cut short or grown since it was
        opened), so that nothing is made of it."""
        fd, at, end = self.handle.fileno(), self.start, self.start + self.size
        while at < end:
            block = os.pread(fd, min(end - at, _BLOCK), at)
            if not block:
                raise OSError(f"a rendering of {self.size} bytes ended {end - at} bytes short")
            at += len(block)
            yield block
        if os.pread(fd, 1, end):
            raise OSError(f"a rendering of {self.size} bytes has grown")


class PageStream:
    """An answer's body of ``size`` bytes made a piece at a time from a rendering (``source``) and
    sent as it is made: a page rebased from another base's rendering (``render.rebased``). A piece
    goes out once the next one is made, the last once the whole is known to be ``size`` bytes:
    a body that comes out longer or shorter is cut short (its client sees the answer fail), never
    sent whole-looking and wrong. Closing it closes ``source``."""

    def __init__(self, source: PageFile, size: int, pieces: Iterator[bytes]) -> None:
        self.source = source
        self.size = size
        self._pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        made, held = 0, b""
        try:
            for piece in self._pieces:
                made += len(piece)
                if made > self.size:
                    break
                if held:
                    yield held
                held = piece
            if made == self.size:
                if held:
                    yield held
            else:
                logger.warning(
                    "a page made from a rendering of %d bytes was not the %d bytes said",
                    self.source.size,
                    self.size,
                )
        except OSError as exc:
            logger.warning("cannot send a page made from its rendering for another base: %s", exc)
        finally:
            self.close()

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        self.source.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingPage:
    """A rendering written before its state is on disk (:meth:`RenderedPages.pending`): sent from
    :attr:`file` meanwhile, then kept under the state's token (:meth:`keep`) or dropped
    (:meth:`drop`). Its temporary file goes either way; a crash leaves it for ``sweep``."""

    pages: RenderedPages
    name: NormalizedName
    kind: str
    #: where it is kept, and where it is written meanwhile
    target: Path
    temp: Path
    #: the body, open at its start (the sender closes it)
    file: PageFile
    #: the base URL its file URLs start with (see :meth:`RenderedPages.write`)
    base: str | None = None

    def keep(self, token: str, checked: float) -> bool:
        """Keep the page as rendered from ``token``'s state (checked at ``checked``): its header
        written in the room left for it (the write makes the file newer than the state, or
        ``sweep`` would take it for stale), then put in place. False (and dropped) if it cannot."""
        root = self.pages._root
        try:
            header = _header_room(token, checked, self.file.etag, self.file.size, self.base)
            fd = open_below(root, self.temp, os.O_WRONLY)
            try:
                os.pwrite(fd, header, 0)
            finally:
                os.close(fd)
            rename_below(root, self.temp, self.target)
        except (OSError, UnsafePath) as exc:
            logger.warning("cannot keep the rendered page of %r: %s", self.name, exc)
            self.drop()
            return False
        if "-" in self.kind:
            self.pages._bound_clients(self.name, self.kind.partition("-")[2])
        return True

    def drop(self) -> None:
        """Remove the temporary file (the body sent from it may still be read)."""
        with contextlib.suppress(OSError, UnsafePath):
            unlink_below(self.pages._root, self.temp)


class RenderedPages:
    """The rendered pages of one mirror, one file per project and kind (``json``, ``html``, ...)."""

    def __init__(self, folder: Path, *, root: Path | None = None) -> None:
        self.folder = folder
        #: the nest, below which writes follow no link (``store.atomic_file``)
        self.root = root

    def path(self, name: NormalizedName, kind: str) -> Path:
        if "-" in kind:  # a kind of installer's: ``json-<client>``, ``html-<client>.gz``
            return self.folder / f"{name}{CLIENTS}" / kind
        return self.folder / f"{name}.{kind}"

    def open(self, name: NormalizedName, kind: str, token: str) -> PageFile | None:
        """The page rendered from ``token``'s state, or None (not saved, older, or damaged)."""
        try:
            # unbuffered: the position after the header is the file descriptor's own, which is
            # where servers that send the file themselves (sendfile) start. A link is a miss, and
            # a FIFO planted in its place does not block the thread
            fd = _open_file(self.path(name, kind), nested="-" in kind)
        except OSError:
            return None
        try:
            handle = FileIO(fd, "rb")
        except OSError:  # a folder
            os.close(fd)
            return None
        try:
            head = handle.read(_MAX_HEADER)
            end = head.find(b"\n") + 1
            parts = head[:end].split()
            if not end or len(parts) not in (5, 6) or parts[0] != _MAGIC:
                handle.close()
                return None
            found, checked, etag = parts[1].decode(), float(parts[2]), parts[3].decode()
            base = parts[5].decode() if len(parts) == 6 and parts[5] != b"-" else None
            status = os.fstat(handle.fileno())
            size = status.st_size - end
            # cut short (or grown), or no file at all: not what was saved
            if size != int(parts[4]) or not stat.S_ISREG(status.st_mode):
                handle.close()
                return None
            handle.seek(end)
        except (OSError, ValueError, UnicodeDecodeError):
            handle.close()
            return None
        if found != token:
            handle.close()
            return None
        return PageFile(
            handle=handle, size=size, etag=etag, checked=checked, token=token, base=base, start=end
        )

    def write(
        self,
        name: NormalizedName,
        kind: str,
        *,
        token: str,
        checked: float,
        pieces: Iterable[bytes],
        gzip: bool = False,
        base: str | None = None,
        etag: str | None = None,
    ) -> PageFile | None:
        """Keep the page of ``pieces`` as rendered from ``token``, in the encoding asked for
        (``gzip``), written as it comes (a large page is never whole in memory), and open it. The
        other encoding is made when a client asks for it: one on this machine never asks for
        gzip (``same_machine``), one across a network always does. ``base`` is the base URL its
        file URLs start with, kept in its header (unless too long for it); ``etag`` the ETag of
        the bytes written, if one was given for them already (:func:`rebased_etag`), else their
        digest's. None when it could not be written.
        """
        wanted = kind + GZIP if gzip else kind
        packer = compressor() if gzip else None
        try:
            with atomic_file(self.path(name, wanted), root=self.root) as out:
                body = _Body(out, etag)
                for block in _blocks(pieces):
                    body.add(block if packer is None else packer.compress(block))
                if packer is not None:
                    body.add(packer.flush())
                body.finish(token, checked, base)
        except (OSError, UnsafePath) as exc:
            logger.warning("cannot keep the rendered page of %r: %s", name, exc)
            return None
        if "-" in kind:
            self._bound_clients(name, kind.partition("-")[2])
        return self.open(name, wanted, token)

    def pending(
        self,
        name: NormalizedName,
        kind: str,
        pieces: Iterable[bytes],
        *,
        gzip: bool = False,
        base: str | None = None,
    ) -> PendingPage | None:
        """The page of ``pieces`` written as :meth:`write` writes it, before the state it is made
        from is on disk (a page fetched just now, its state written after the answer): in a
        temporary file beside where it is kept, open to be sent (:attr:`PendingPage.file`), and
        kept or dropped later. None when it could not be written."""
        target = self.path(name, kind + GZIP if gzip else kind)
        packer = compressor() if gzip else None
        try:
            fd, temp = temp_file(self._root, target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except (OSError, UnsafePath) as exc:
            logger.warning("cannot write the rendered page of %r: %s", name, exc)
            return None
        try:
            with os.fdopen(fd, "wb") as out:
                body = _Body(out)
                for block in _blocks(pieces):
                    body.add(block if packer is None else packer.compress(block))
                if packer is not None:
                    body.add(packer.flush())
            handle = FileIO(open_below(self._root, temp, os.O_RDONLY | _NONBLOCK), "rb")
            handle.seek(_HEADER_ROOM)
        except (OSError, UnsafePath) as exc:
            with contextlib.suppress(OSError, UnsafePath):
                unlink_below(self._root, temp)
            logger.warning("cannot write the rendered page of %r: %s", name, exc)
            return None
        except BaseException:
            with contextlib.suppress(OSError, UnsafePath):
                unlink_below(self._root, temp)
            raise
        etag = body.tag()
        page = PageFile(handle=handle, size=body.size, etag=etag, checked=0.0, token="", start=_HEADER_ROOM)
        return PendingPage(pages=self, name=name, kind=kind, target=target, temp=temp, file=page, base=base)

    def elsewhere(self, name: NormalizedName, kind: str) -> list[str]:
        """The kinds of the renderings of ``name`` saved for the installer of ``kind`` as reached at
        other base URLs (``<format>-<client>@<base>``, another ``<base>``), the newest first; not
        their gzip encodings. None of them is read."""
        prefix, at, _ = kind.rpartition("@")
        if not at or "-" not in prefix:
            return []
        written: list[tuple[int, str]] = []
        try:
            with scan_below(self._root, self.folder / f"{name}{CLIENTS}") as entries:
                for entry in entries:
                    other = entry.name
                    if other != kind and other.startswith(prefix + "@") and not other.endswith(GZIP):
                        with contextlib.suppress(OSError):
                            written.append((entry.stat(follow_symlinks=False).st_mtime_ns, other))
        except OSError:
            return []
        return [other for _, other in sorted(written, reverse=True)]

    def _bound_clients(self, name: NormalizedName, kept: str) -> None:
        """Remove the renderings of the installers of ``name`` written longest ago while there are
        more than ``MAX_CLIENTS``; never those of ``kept``, the one just written."""
        folder = self.folder / f"{name}{CLIENTS}"
        written: dict[str, float] = {}
        files: dict[str, list[str]] = {}
        with scan_below(self._root, folder) as entries:
            for entry in entries:
                client = _client_of(entry.name)
                if client is None:
                    continue
                with contextlib.suppress(OSError):
                    status = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(status.st_mode):
                        written[client] = max(written.get(client, 0.0), status.st_mtime)
                        files.setdefault(client, []).append(entry.name)
        if len(written) <= MAX_CLIENTS:
            return
        oldest = sorted((when, client) for client, when in written.items() if client != kept)
        for _, client in oldest[: len(written) - MAX_CLIENTS]:
            for entry_name in files[client]:
                with contextlib.suppress(OSError, UnsafePath):
                    unlink_below(self._root, folder / entry_name)

    @property
    def _root(self) -> Path:
        """Where reads and removals start, following no link below it: the nest, else the folder."""
        return self.folder if self.root is None else self.root

    def sweep(
        self, state_of: Callable[[NormalizedName], tuple[Path, Path]], *, now: float | None = None
    ) -> int:
        """Remove the renderings that can never be served again, and temporary files a crash left;
        returns how many files went. ``state_of(name)`` is the page's state file and change marker:
        a rendering is stale once its page has no state, or one newer than it (or a newer marker).
        """
        abandoned = int(((time.time() if now is None else now) - _STALE_TEMP) * 1e9)
        removed = 0
        with scan_below(self._root, self.folder) as entries:
            found = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for entry_name, is_folder in found:
            name, dot, _ = entry_name.partition(".")
            if not dot:
                continue
            if not name:  # ``.<file>.<random>.tmp``: a write, or one a crash cut short
                removed += self._remove_older(self.folder / entry_name, abandoned)
                continue
            if not is_normalized(name):
                continue
            newest = _newest(*state_of(NormalizedName(name)))
            if not is_folder:
                removed += self._remove_older(self.folder / entry_name, newest)
                continue
            if entry_name != f"{name}{CLIENTS}":
                continue
            folder = self.folder / entry_name
            with scan_below(self._root, folder) as inner:
                names = [e.name for e in inner]
            for inner_name in names:
                before = abandoned if inner_name.startswith(".") else newest
                removed += self._remove_older(folder / inner_name, before)
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # once empty; a link in its place is no folder, and stays
        return removed

    def _remove_older(self, path: Path, before: int | None) -> int:
        """Remove the regular file ``path`` if it was written before ``before`` (ns; None: whenever);
        1 if it went. A link or a folder is left alone."""
        try:
            status = os.lstat(path)
            if not stat.S_ISREG(status.st_mode) or (before is not None and status.st_mtime_ns >= before):
                return 0
            return int(unlink_below(self._root, path))
        except (OSError, UnsafePath):
            return 0


def _open_file(path: Path, *, nested: bool) -> int:
    """A descriptor of the rendered file ``path``, a link at it refused; ``nested``: in a folder of
    its page's, which must not be a link either (another user of a shared nest could plant one)."""
    flags = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC
    if not nested or os.open not in os.supports_dir_fd:
        return os.open(path, flags)
    folder = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC)
    try:
        return os.open(path.name, flags, dir_fd=folder)
    finally:
        os.close(folder)


def _client_of(entry: str) -> str | None:
    """The installer a rendering's file is for (``json-<client>.gz``: ``<client>``), or None."""
    if entry.startswith("."):
        return None  # a temporary file
    kind = entry.removesuffix(GZIP)
    _, dash, client = kind.partition("-")
    return client if dash and client else None


def _newest(state: Path, marker: Path) -> int | None:
    """The time (ns) of the latest change of a page, its state file's or its change marker's; None
    without a state: every rendering of it is stale."""
    try:
        newest = os.lstat(state).st_mtime_ns
    except OSError:
        return None
    with contextlib.suppress(OSError):
        newest = max(newest, os.lstat(marker).st_mtime_ns)
    return newest


def _blocks(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``pieces`` joined into blocks of at least ``_BLOCK`` bytes (the last one shorter): a page
    comes a file entry at a time, and compressing, hashing and writing 15,000 small pieces one by
    one took a third longer than in blocks."""
    held: list[bytes] = []
    size = 0
    for piece in pieces:
        held.append(piece)
        size += len(piece)
        if size >= _BLOCK:
            yield b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)


class _Body:
    """A rendered file being written: room for the header, the body, then the header."""

    def __init__(self, handle: BinaryIO, etag: str | None = None) -> None:
        #: the ETag given for the bytes, if any: else they are hashed as they are written
        self.known = etag
        self.digest = hashlib.sha256()
        self.size = 0
        self.handle = handle
        handle.write(b" " * (_HEADER_ROOM - 1) + b"\n")

    def add(self, data: bytes) -> None:
        if data:
            if self.known is None:
                self.digest.update(data)
            self.size += len(data)
            self.handle.write(data)

    def tag(self) -> str:
        """The ETag of the bytes written so far (all of them, once done)."""
        return _etag(self.digest) if self.known is None else self.known

    def finish(self, token: str, checked: float, base: str | None = None) -> None:
        header = _header_room(token, checked, self.tag(), self.size, base)
        self.handle.seek(0)
        self.handle.write(header)


def _header(token: str, checked: float, etag: str, size: int, base: str | None = None) -> bytes:
    fields = (_MAGIC, token.encode(), repr(checked).encode(), etag.encode(), b"%d" % size, _base_field(base))
    return b" ".join(fields) + b"\n"


def _base_field(base: str | None) -> bytes:
    """``base`` as the header holds it: ``-`` when there is none, or one a header cannot hold."""
    if not base or not base.isascii() or not base.isprintable() or " " in base or len(base) > _MAX_BASE:
        return b"-"
    return base.encode()


def _header_room(token: str, checked: float, etag: str, size: int, base: str | None = None) -> bytes:
    """The header padded to fill the room a file written a piece at a time kept for it."""
    header = _header(token, checked, etag, size, base)
    if len(header) > _HEADER_ROOM:  # a long base is left out: the page is only not made for others
        header = _header(token, checked, etag, size)
    if len(header) > _HEADER_ROOM:  # a token of another shape: never made by disk_token
        raise OSError(f"header of {len(header)} bytes")
    return header[:-1].ljust(_HEADER_ROOM - 1) + b"\n"
