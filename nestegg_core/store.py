"""The on-disk cache: where pages, files and their records live, written so a crash loses nothing.

Layout under the nestegg dir (one dir shared by every process of the user), with one ``<upstream>``
folder per upstream index (see :func:`upstream_key`), so that two indexes never mix::

    mirror/<upstream>/pages/<name>.json            page state (validators, time, files)
    mirror/<upstream>/files/<name>/<filename>      cached distribution files, complete and verified
    mirror/<upstream>/files/<name>/<filename>.json the record of a cached file (hashes, size, ...)
    mirror/<upstream>/files/<name>/<filename>.metadata   PEP 658 core metadata of a cached file
    mirror/<upstream>/files/<name>/.<filename>.<pid>.<n>.part   a download in progress
    locks/<upstream>/<name>/<filename>.lock        inter-process locks (filelock)

Every write goes to a temporary file in the same directory and is renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock
from filelock import Timeout as LockTimeout
from packaging.utils import NormalizedName

from .errors import NesteggError, NotFound
from .models import DistFile, ProjectPage, is_normalized

logger = logging.getLogger(__name__)

_counter = itertools.count()


def check_filename(filename: str) -> str:
    """``filename`` if it is safe as one path component, else :class:`NotFound`."""
    if (
        not filename
        or filename.startswith(".")
        or "/" in filename
        or "\\" in filename
        or "\x00" in filename
        or len(filename) > 255
    ):
        raise NotFound(f"no file {filename!r}")
    return filename


def check_name(name: str) -> NormalizedName:
    if not is_normalized(name) or len(name) > 200:
        raise NotFound(f"no project {name!r}")
    return NormalizedName(name)


def write_atomic(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def copy_atomic(source: Path, target: Path, *, move: bool = False) -> None:
    """Copy (or move) ``source`` to ``target`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if move:
            shutil.move(str(source), tmp)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class PageState:
    """What the cache knows of an upstream project page."""

    page: ProjectPage
    etag: str | None = None
    last_modified: str | None = None
    checked: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.page.name,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "checked": self.checked,
            "versions": list(self.page.versions),
            "files": [dist.to_json() for dist in self.page.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PageState:
        page = ProjectPage.build(
            data["name"],
            (DistFile.from_json(entry) for entry in data["files"]),
            (str(v) for v in data.get("versions", ())),
        )
        return cls(
            page=page,
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
            checked=float(data.get("checked", 0.0)),
        )


def upstream_key(url: str) -> str:
    """A folder name for an upstream index: readable, and unique by a hash of the URL.

    Credentials are left out, so a changed password keeps the cache.
    """
    parts = urlsplit(url)
    netloc = parts.hostname or "local"
    if parts.port:
        netloc += f"_{parts.port}"
    path = parts.path.rstrip("/")
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", f"{netloc}{path}").strip("-.")[:60]
    digest = hashlib.sha256(f"{parts.scheme}://{netloc}{path}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def _part_of(entry: str) -> str | None:
    """The filename a part file (``.<filename>.<pid>.<n>.part``) belongs to, or None."""
    if not (entry.startswith(".") and entry.endswith(".part")):
        return None
    filename, _, rest = entry[1 : -len(".part")].rpartition(".")
    filename, _, pid = filename.rpartition(".")
    return filename if filename and pid.isdigit() and rest.isdigit() else None


class CacheStore:
    """Paths and atomic reads and writes of the mirror cache of one upstream."""

    def __init__(self, root: Path, upstream: str = "", *, key: str | None = None) -> None:
        self.root = root
        #: the folder of this upstream; upkeep, which works on every upstream's cache, passes it
        self.key = upstream_key(upstream) if key is None else key
        self.pages = root / "mirror" / self.key / "pages"
        self.files = root / "mirror" / self.key / "files"
        self.locks = root / "locks" / self.key

    # pages -------------------------------------------------------------------------------

    def page_path(self, name: NormalizedName) -> Path:
        return self.pages / f"{name}.json"

    def read_page(self, name: NormalizedName) -> PageState | None:
        path = self.page_path(name)
        try:
            data = json.loads(path.read_bytes())
            return PageState.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # a damaged state file is a cache miss, never an outage; it is rewritten on next fetch
            logger.warning("ignoring damaged cache state %s: %s", path, exc)
            return None

    def write_page(self, state: PageState) -> None:
        data = json.dumps(state.to_json(), separators=(",", ":")).encode()
        write_atomic(self.page_path(state.page.name), data)

    def page_mtime(self, name: NormalizedName) -> float | None:
        try:
            return self.page_path(name).stat().st_mtime
        except OSError:
            return None

    # files -------------------------------------------------------------------------------

    def file_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / check_filename(filename)

    def metadata_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f"{check_filename(filename)}.metadata"

    def record_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f"{check_filename(filename)}.json"

    def part_path(self, name: NormalizedName, filename: str) -> Path:
        return self.files / name / f".{check_filename(filename)}.{os.getpid()}.{next(_counter)}.part"

    def lock(self, name: NormalizedName, filename: str, *, timeout: float = -1) -> FileLock:
        path = self.locks / name / f"{check_filename(filename)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(path, timeout=timeout)

    def remove_parts(self, name: NormalizedName, filename: str) -> None:
        """Remove leftover partial downloads of one file; call only while holding its lock."""
        folder = self.files / name
        prefix = f".{filename}."
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                if entry.name.startswith(prefix) and entry.name.endswith(".part"):
                    logger.info("removing partial download %s", entry.path)
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def prepare(self) -> None:
        """Check that the nest can be written and remove partial downloads a crash left behind.

        Called when a server starts: it fails at once on an unusable nest rather than on every
        request, and what a killed process was downloading is not left on disk until that file
        is asked for again. Every upstream's cache is swept, not only this one's.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            reason = exc.strerror or exc
            raise NesteggError(f"cannot use {str(self.root)!r} as the nestegg dir: {reason}") from None
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / "mirror"):
                if entry.is_dir():
                    removed += CacheStore(self.root, key=entry.name).sweep_parts()
        if removed:
            logger.info("removed %d partial downloads left by a crash", removed)

    def sweep_parts(self) -> int:
        """Remove the partial downloads no process is writing; returns how many.

        A download holds its file's lock from its first byte until the rename, so a part file
        whose lock is free is abandoned, however young.
        """
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for folder in os.scandir(self.files):
                if not folder.is_dir() or not is_normalized(folder.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    for entry in os.scandir(folder.path):
                        filename = _part_of(entry.name)
                        if filename is None:
                            continue
                        try:
                            with self.lock(NormalizedName(folder.name), filename, timeout=0):
                                os.unlink(entry.path)
                                removed += 1
                        except (LockTimeout, NotFound, OSError):
                            continue  # being downloaded, already gone, or not ours to judge
        return removed

    def read_record(self, name: NormalizedName, filename: str) -> DistFile | None:
        try:
            return DistFile.from_json(json.loads(self.record_path(name, filename).read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring damaged record of %s/%s: %s", name, filename, exc)
            return None

    def write_record(self, name: NormalizedName, dist: DistFile) -> None:
        data = json.dumps(dist.to_json(), separators=(",", ":")).encode()
        write_atomic(self.record_path(name, dist.filename), data)

    def kept_files(self, name: NormalizedName) -> list[DistFile]:
        """Records of every complete cached file of a project (those stay listed forever)."""
        kept = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(self.files / name), key=lambda e: e.name):
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    filename = entry.name[: -len(".json")]
                    if (self.files / name / filename).is_file():
                        record = self.read_record(name, filename)
                        if record is not None:
                            kept.append(record)
        return kept

    def project_names(self) -> Iterator[str]:
        """Every project the cache holds a page or a file of."""
        seen: set[str] = set()
        for folder, suffix in ((self.pages, ".json"), (self.files, "")):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    name = entry.name[: -len(suffix)] if suffix else entry.name
                    if entry.name.endswith(suffix) and is_normalized(name) and name not in seen:
                        seen.add(name)
                        yield name
