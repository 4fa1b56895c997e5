"""The page state file: what the cache knows of an upstream project page, and its form on disk.

The files are stored by column (every filename, then every URL, ...), a slice of at most 2,048
values a line, so that a page of 15,000 files is written and read a line at a time: neither its
text nor any whole column is ever in memory beside the page made of it. :class:`CacheStore`
(``store``) keeps these files; this module only reads and writes their bytes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from nestegg_core.simple.models import (
    NO_HASHES,
    DistFile,
    Hashes,
    ProjectPage,
    compact_hashes,
    is_dist_filename,
)


@dataclass(frozen=True, kw_only=True)
class PageState:
    """What the cache knows of an upstream project page.

    On disk the files are stored by column (every filename, then every URL, ...): lists of strings
    are quick to write and read, and reading makes no dict per file, which for a page of 15,000
    files is most of the time and memory. Each column starts a line, with at most 2,048 values a
    line, so a reader takes a line at a time (see :func:`read_state`) and never holds the whole
    text, nor a whole column. The older forms, a line per column, one line, or a list of file
    mappings, are read too.
    """

    page: ProjectPage
    etag: str | None = None
    last_modified: str | None = None
    checked: float = 0.0
    #: the digest of the upstream's answer the page was read from (``Fetched.digest``), if known
    digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self._header(), "columns": _columns(self.page.files)}

    def _header(self) -> dict[str, Any]:
        return {
            "name": self.page.name,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "checked": self.checked,
            **({"digest": self.digest} if self.digest is not None else {}),
            # only the index's own list: versions made from the files are made again on reading
            **({"versions": list(self.page.versions)} if self.page.listed else {}),
        }

    def to_bytes(self) -> Iterator[bytes]:
        """The JSON of :meth:`to_json` in pieces, a slice of a column at a time (a large page is
        never whole)."""
        header = json.dumps(self._header(), separators=(",", ":"))
        yield header[:-1].encode() + _COLUMNS_START
        files = self.page.files
        for index, key in enumerate(_COLUMNS):
            yield (b"," if index else b"") + json.dumps(key).encode() + b":["
            # a slice of a column at a time: a whole column of a large page is megabytes (its
            # URLs, or its hashes as hex text), all of them together a third of its model
            for start in range(0, len(files), _SLICE):
                values = _column_of(key, files[start : start + _SLICE])
                part = json.dumps(values, separators=(",", ":"))
                # a line each, read a line at a time too (JSON allows newlines between values;
                # json.dumps writes none inside one)
                yield (b",\n" if start else b"") + part[1:-1].encode()
            yield b"]\n"
        yield b"}}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PageState:
        if not isinstance(data, dict):
            raise TypeError(f"state is a {type(data).__name__}, not an object")
        columns = data.get("columns")
        files = (
            _from_columns({key: _column(key, columns[key]) for key in _COLUMNS})
            if columns is not None
            else [DistFile.from_json(entry) for entry in data["files"]]
        )
        return cls._of(data, files)

    @classmethod
    def _of(cls, data: dict[str, Any], files: list[DistFile]) -> PageState:
        if not isinstance(data["name"], str):
            raise TypeError(f"state names no project: {data['name']!r}")
        # a state written before such names were left off lists them: not any more
        files = [dist for dist in files if is_dist_filename(dist.filename)]
        versions = data.get("versions")
        listed = None if versions is None else (str(v) for v in versions)
        page = ProjectPage.build(data["name"], files, listed)
        return cls(
            page=page,
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
            checked=float(data.get("checked", 0.0)),
            digest=_digest(data),
        )


@dataclass(frozen=True, kw_only=True)
class StateHeader:
    """A state file's first line: what revalidating its page needs before its files (which a
    page the upstream gives again unchanged never needs, see ``MirrorIndex._revalidate``)."""

    etag: str | None = None
    last_modified: str | None = None
    checked: float = 0.0
    digest: str | None = None


def read_header(handle: BinaryIO) -> StateHeader | None:
    """The header of the state in a file, read from its first line alone; None for a file of an
    older form (one line), which is read whole. Raises as :func:`read_state` does."""
    first = handle.readline(_MAX_HEADER + 1)
    if not first.endswith(_COLUMNS_START):
        return None
    return _header_of(_first_line(first))


def read_entry(handle: BinaryIO, filename: str) -> tuple[StateHeader, DistFile | None] | None:
    """The header of the state in a file and its entry of ``filename`` (None when it lists none),
    as the page :func:`read_state` makes lists it, without making that page: the filename column
    is decoded until ``filename`` is found, and of each other column only the line that holds its
    value (a 15,000-file page is made in 60-100 ms, one entry is read in a few). None for a file
    of an older form (one line), which is read whole. Raises as :func:`read_state` does for what
    it reads (the values on other lines are not looked at), and ValueError when the columns are
    not cut into lines alike.
    """
    first = handle.readline(_MAX_HEADER + 1)
    if not first.endswith(_COLUMNS_START):
        return None
    data = _first_line(first)
    header = _header_of(data)
    if not isinstance(data["name"], str):
        raise TypeError(f"state names no project: {data['name']!r}")
    found: tuple[int, int] | None = None  # the entry's line (in every column) and place on it
    lengths: dict[str, int] = {}  # lines of each column
    fields: dict[str, Any] = {}
    width = 0  # values on the entry's line of the filename column
    for key, text, _ in _column_lines(handle):
        if key not in _CONVERT:
            continue  # a column a later release added: left aside, however it is cut
        line = lengths[key] = lengths.get(key, -1) + 1
        if key == "filename" and found is None:
            names = json.loads(b"[" + text + b"]")
            if filename in names:
                found, width = (line, names.index(filename)), len(names)
                fields[key] = _filename(filename)
        elif found is not None and line == found[0]:
            values = json.loads(b"[" + text + b"]")
            if len(values) != width:
                raise ValueError(f"column {key!r} is cut into lines unlike the filenames")
            fields[key] = _CONVERT[key](values[found[1]])
    if any(count != lengths.get("filename") for count in lengths.values()):
        raise ValueError("columns of different lengths")
    if found is None:
        return header, None
    # the columns are named as the fields they hold
    dist = DistFile(**{key: fields[key] for key in _COLUMNS})
    return header, dist if is_dist_filename(dist.filename) else None


def _first_line(first: bytes) -> dict[str, Any]:
    """The fields of a state file's first line (the one that ends with ``_COLUMNS_START``)."""
    data = json.loads(first[: -len(_COLUMNS_START)] + b"}")
    if not isinstance(data, dict):
        raise TypeError(f"state is a {type(data).__name__}, not an object")
    return data


def _header_of(data: dict[str, Any]) -> StateHeader:
    etag, last_modified = data.get("etag"), data.get("last_modified")
    return StateHeader(
        etag=etag if isinstance(etag, str) else None,
        last_modified=last_modified if isinstance(last_modified, str) else None,
        checked=float(data.get("checked", 0.0)),
        digest=_digest(data),
    )


def _digest(data: dict[str, Any]) -> str | None:
    value = data.get("digest")
    return value if isinstance(value, str) else None


# the columns of the state file, in order; a hash column holds a sha256 digest (a string), or a
# mapping of several hashes; a core metadata column ``true`` for metadata without a hash
_COLUMNS = (
    "filename", "url", "hashes", "requires_python", "yanked", "size", "upload_time", "core_metadata",
    "origin",
)  # fmt: skip


_SLICE = 2048
#: the longest first line :func:`read_header` reads (a page's versions are in it)
_MAX_HEADER = 16 * 1024 * 1024

#: what ends the first line of a state file, the one before its columns
_COLUMNS_START = b',"columns":{\n'
#: what starts the first line of a column: its name (any JSON string: a later release may add
#: columns), and the list of its values
_COLUMN_START = re.compile(rb',?\s*("(?:[^"\\]|\\.)*")\s*:\s*\[')


def read_state(handle: BinaryIO) -> PageState:
    """The state in a file (see :meth:`PageState.to_bytes`) read a line at a time, each made into
    its values before the next is read: the text of a 15,000-file page (5 MB), and any of its
    columns as text or parsed lists, are never whole in memory beside the page made of them.

    Raises ValueError (JSONDecodeError among them), KeyError, TypeError, OverflowError or
    RecursionError on a bad file.
    """
    first = handle.readline()
    if not first.endswith(_COLUMNS_START):  # an older state file, one line
        del first  # the whole text: not twice in memory
        handle.seek(0)
        return PageState.from_json(json.loads(handle.read()))
    data = json.loads(first[: -len(_COLUMNS_START)] + b"}")
    columns: dict[str, list[Any]] = {}
    for key, text, opens in _column_lines(handle):
        if opens:
            columns[key] = []
        convert = _CONVERT.get(key)
        values = json.loads(b"[" + text + b"]")
        if convert is not None:  # else a column a later release added: left aside
            columns[key].extend(convert(value) for value in values)
    return PageState._of(data, _from_columns(columns))


def _column_lines(handle: BinaryIO) -> Iterator[tuple[str, bytes, bool]]:
    """The lines of a state file's columns, after its first line: each one's column, the text of
    its values (without the brackets), and whether it is the column's first line. Raises
    ValueError on a damaged line or a file that ends before its last column."""
    key: str | None = None  # of the column whose lines are being read
    for line in handle:
        if line == b"}}" and key is None:
            return
        if not line.endswith(b"\n"):
            raise ValueError("state file ends before its last column")
        part = line
        opens = key is None
        if key is None:
            start = _COLUMN_START.match(line)
            if start is None:
                raise ValueError(f"state file has a damaged column line {line[:40]!r}")
            key, part = json.loads(start[1]), line[start.end() :]
        if not part.endswith((b",\n", b"]\n")):
            raise ValueError(f"state file has a damaged column line {line[:40]!r}")
        yield key, part[:-2], opens
        if part.endswith(b"]\n"):
            key = None
    raise ValueError("state file ends before its last column")


def _columns(files: tuple[DistFile, ...]) -> dict[str, list[Any]]:
    return {key: _column_of(key, files) for key in _COLUMNS}


def _column_of(key: str, files: tuple[DistFile, ...]) -> list[Any]:
    """The values of one column for ``files``, as the state file holds them."""
    if key == "hashes":
        return [_hash_value(d.hashes) for d in files]
    if key == "core_metadata":
        return [None if d.core_metadata is None else _hash_value(d.core_metadata) or True for d in files]
    return [getattr(d, key) for d in files]


def _hash_value(hashes: Mapping[str, str]) -> str | dict[str, str] | None:
    if not hashes:
        return None
    if len(hashes) == 1 and "sha256" in hashes:
        return hashes["sha256"]
    return dict(hashes)


def _hashes_of(value: Any) -> Mapping[str, str]:
    if value is None or value is True:
        return NO_HASHES
    if isinstance(value, str):
        return Hashes("sha256", value)
    if isinstance(value, dict):
        return compact_hashes({str(k): str(v) for k, v in value.items()})
    raise TypeError(f"bad hashes {value!r}")


def _filename(value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"bad filename {value!r}")
    return value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _interned(value: Any) -> str | None:
    # a handful of values shared by thousands of files
    return None if value is None else sys.intern(str(value))


#: how each column's JSON values become the fields of :class:`DistFile`
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "filename": _filename,
    "url": str,
    "hashes": _hashes_of,
    "requires_python": _interned,
    "yanked": _text,
    "size": lambda value: None if value is None else int(value),
    "upload_time": _text,
    "core_metadata": lambda value: None if value is None else _hashes_of(value),
    "origin": _interned,
}


def _column(key: str, values: Any) -> list[Any]:
    if not isinstance(values, list):
        raise TypeError(f"column {key!r} is not a list")
    convert = _CONVERT[key]
    return [convert(value) for value in values]


def _from_columns(columns: dict[str, list[Any]]) -> list[DistFile]:
    """The files of a state file's columns, each converted by ``_CONVERT``; raises KeyError or
    ValueError."""
    lists = [columns[key] for key in _COLUMNS]
    if any(len(values) != len(lists[0]) for values in lists):
        raise ValueError("columns of different lengths")
    return [
        DistFile(
            filename=filename,
            url=url,
            hashes=hashes,
            requires_python=requires_python,
            yanked=yanked,
            size=size,
            upload_time=upload_time,
            core_metadata=metadata,
            origin=origin,
        )
        for filename, url, hashes, requires_python, yanked, size, upload_time, metadata, origin in zip(
            *lists, strict=True
        )
    ]
