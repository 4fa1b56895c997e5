"""Uploads as ``twine upload`` and ``uv publish`` send them: the legacy PyPI upload API.

A ``multipart/form-data`` POST to ``/``, ``/legacy`` or ``/legacy/`` (never redirected: twine
aborts on a redirect) with ``:action=file_upload``, ``name``, ``version``, the file as ``content``
and its digests (``sha256_digest``, ``blake2_256_digest``, ``md5_digest``: each checked when sent).
The file streams to a temporary file in the nestegg dir, under ``max_upload_size``.

Answers are PyPI's: 200 for a new file and for the same bytes again, 400 "File already exists"
for other bytes under a known filename, 403 for missing or wrong credentials, 413 for too large,
400 for anything else wrong, with the message as both the reason phrase (twine shows it) and the
body (uv shows that).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import multipart
from packaging.utils import canonicalize_name

from nestegg_core.config.credentials import Credentials, refusal
from nestegg_core.errors import (
    AuthError,
    InsufficientStorage,
    NesteggError,
    UnsafePath,
    UploadError,
    UploadTooLarge,
    disk_full,
)
from nestegg_core.simple.distmeta import parse_dist_filename
from nestegg_core.simple.models import is_valid_name, parse_version
from nestegg_core.storage.fs import temp_file
from nestegg_core.storage.private import PrivateStore

from .answers import status_line
from .auth import require_upload_user, upload_credentials
from .types import Admission, Environ, StartResponse

logger = logging.getLogger(__name__)


#: room for the form fields (description, classifiers, ...) besides the file itself
FIELDS_ALLOWANCE = 4 * 1024 * 1024
_CHUNK = 64 * 1024
_FILETYPES = {"sdist": "an sdist", "bdist_wheel": "a wheel"}
_DIGESTS = {"sha256_digest": "sha256", "blake2_256_digest": "blake2_256", "md5_digest": "md5"}


@dataclass
class UploadForm:
    """The parsed upload: text fields (each may repeat) and the file, on disk."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    path: Path | None = None
    filename: str | None = None
    size: int = 0
    #: our own digests of the received bytes, by ``_DIGESTS`` value
    digests: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        values = self.fields.get(key)
        return values[-1] if values else None


class UploadHandler:
    """The WSGI handler of upload POSTs (``NesteggApp.upload``)."""

    def __init__(
        self,
        store: PrivateStore,
        *,
        credentials: Credentials | None,
        tmp_dir: Path,
        max_size: int,
        nest: Path | None = None,
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.tmp_dir = tmp_dir
        self.max_size = max_size
        #: the nestegg dir, if ``tmp_dir`` is in it: no link below it is followed
        self.nest = nest

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        form: UploadForm | None = None
        try:
            user = require_upload_user(self.credentials, environ)
            form = parse_upload(environ, tmp_dir=self.tmp_dir, max_size=self.max_size, nest=self.nest)
            message = self._publish(form, user)
            return _answer(environ, start_response, 200, "OK", message)
        except NesteggError as exc:
            # a full disk, a link planted in the nest: the server's to fix, not the client's
            level = logging.WARNING if isinstance(exc, (InsufficientStorage, UnsafePath)) else logging.INFO
            logger.log(level, "upload refused (%d): %s", exc.status, exc)
            return _answer(environ, start_response, exc.status, str(exc), str(exc))
        finally:
            if form is not None and form.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    form.path.unlink()

    def admit(self, environ: Environ) -> Admission:
        """Before the body is read: refused at once without credentials, after a password check
        (on a worker) with wrong ones; over the size limit, refused without reading it."""
        limit = self.max_size + FIELDS_ALLOWANCE
        try:
            credentials, sent = upload_credentials(self.credentials, environ)
            length = _content_length(environ)
        except NesteggError as exc:
            return Admission(limit, refusal=exc)
        too_large = None
        if length is not None and length > limit:
            too_large = UploadTooLarge(_too_large(self.max_size, length))

        def check() -> NesteggError | None:
            # an unknown user costs a check too (see Credentials.check): timing tells no names
            if credentials.user_of(*sent) is None:
                return AuthError(refusal(sent))
            return too_large

        return Admission(limit, check=check)

    def _publish(self, form: UploadForm, user: str) -> str:
        action = form.get(":action")
        if action != "file_upload":
            raise UploadError(f"unsupported :action {action!r}: only 'file_upload' is accepted")
        protocol = form.get("protocol_version")
        if protocol not in (None, "1"):
            raise UploadError(f"unsupported protocol_version {protocol!r}: expected '1'")
        raw_name, raw_version = form.get("name"), form.get("version")
        if not raw_name or not is_valid_name(raw_name):
            raise UploadError(f"missing or invalid project name {raw_name!r}")
        version = parse_version(raw_version or "")
        if version is None:
            raise UploadError(f"missing or invalid version {_shown(raw_version)}")
        if form.path is None or not form.filename:
            raise UploadError("no file: upload the distribution as the 'content' field")
        filename = os.path.basename(form.filename.replace("\\", "/"))
        name = canonicalize_name(raw_name)
        file_name, file_version = parse_dist_filename(filename)
        if file_name != name or file_version != version:
            raise UploadError(
                f"filename {filename!r} does not match project {raw_name!r} version {raw_version!r}, "
                "as sent with it (twine and uv send those of the file's metadata)"
            )
        filetype = form.get("filetype")
        kind = "bdist_wheel" if filename.endswith(".whl") else "sdist"
        if filetype is not None and filetype != kind:
            raise UploadError(
                f"filetype {filetype!r} does not match {filename!r}, which is {_FILETYPES[kind]}"
            )
        if form.size == 0:
            raise UploadError(f"{filename!r} is empty")
        for key, algorithm in _DIGESTS.items():
            sent = form.get(key)
            if sent and sent.strip().lower() != form.digests[algorithm]:
                raise UploadError(f"{key} {sent!r} does not match the {algorithm} of {filename!r}")
        record, new = self.store.add(form.path, filename=filename, move=True)
        logger.info("upload of %s/%s by %r: %s", name, filename, user, "published" if new else "unchanged")
        if new:
            return f"published {record.filename}"
        return f"{record.filename} was already published with these bytes; nothing changed"


def parse_upload(environ: Environ, *, tmp_dir: Path, max_size: int, nest: Path | None = None) -> UploadForm:
    """Read the multipart body: fields into memory, the ``content`` file into ``tmp_dir`` (in
    ``nest``, if given: reached without following a link)."""
    content_type, options = multipart.parse_options_header(environ.get("CONTENT_TYPE", ""))
    boundary = options.get("boundary")
    if content_type != "multipart/form-data" or not boundary:
        raise UploadError(
            f"expected a multipart/form-data body with a boundary, got {environ.get('CONTENT_TYPE')!r}"
        )
    length = _content_length(environ)
    limit = max_size + FIELDS_ALLOWANCE
    if length is not None and length > limit:
        raise UploadTooLarge(_too_large(max_size, length))
    stream: IO[bytes] = environ["wsgi.input"]
    form = UploadForm()
    reader = _FormReader(form, tmp_dir, max_size, nest)
    try:
        parser = multipart.PushMultipartParser(
            boundary, content_length=-1 if length is None else length, max_segment_count=1000
        )
        remaining = length
        received = 0
        while not parser.closed:
            size = _CHUNK if remaining is None else min(_CHUNK, remaining)
            chunk = stream.read(size) if size else b""
            received += len(chunk)
            if remaining is not None:
                remaining -= len(chunk)
            if received > limit:
                raise UploadTooLarge(_too_large(max_size, received))
            # an empty chunk (the body ended) closes the parser, which raises if the stream is cut
            for event in parser.parse(chunk):
                reader.feed(event)
    except multipart.MultipartError as exc:
        reader.discard()
        raise UploadError(f"malformed multipart/form-data body: {exc}") from None
    except OSError as exc:
        reader.discard()
        if disk_full(exc):
            raise InsufficientStorage(
                f"the disk is full: the upload of {form.filename!r} was not kept"
            ) from None
        raise
    except BaseException:
        reader.discard()
        raise
    reader.finish()
    return form


class _FormReader:
    """Consumes parser events: text fields into ``form.fields``, the file into a temporary file."""

    def __init__(self, form: UploadForm, tmp_dir: Path, max_size: int, nest: Path | None = None) -> None:
        self.form = form
        self.tmp_dir = tmp_dir
        self.nest = nest
        self.max_size = max_size
        self.field_bytes = 0
        self._name: str | None = None
        self._text: bytearray | None = None
        self._file: IO[bytes] | None = None
        self._hashers: dict[str, Any] = {}

    def feed(self, event: Any) -> None:
        if isinstance(event, multipart.MultipartSegment):
            self._start(event)
        elif event is None:
            self._end()
        elif self._file is not None:
            self.form.size += len(event)
            if self.form.size > self.max_size:
                raise UploadTooLarge(_too_large(self.max_size, self.form.size))
            self._file.write(event)
            for hasher in self._hashers.values():
                hasher.update(event)
        elif self._text is not None:
            self.field_bytes += len(event)
            if self.field_bytes > FIELDS_ALLOWANCE:
                raise UploadTooLarge(f"the form fields are over {FIELDS_ALLOWANCE} bytes")
            self._text += event

    def _start(self, segment: Any) -> None:
        self._name = segment.name or ""
        if self._name == "content" and segment.filename is None:
            raise UploadError("the 'content' field has no filename: send the distribution as a file")
        if self._name == "content":
            if self.form.path is not None:
                raise UploadError("more than one 'content' file in the upload")
            # the store reads metadata by the kind of file its name says
            suffix = next((s for s in (".whl", ".zip") if segment.filename.endswith(s)), ".tar.gz")
            self._file, self.form.path = self._new_file(suffix)
            self.form.filename = segment.filename
            self._hashers = {
                "sha256": hashlib.sha256(),
                "blake2_256": hashlib.blake2b(digest_size=32),
                "md5": hashlib.md5(usedforsecurity=False),
            }
        else:
            self._text = bytearray()

    def _new_file(self, suffix: str) -> tuple[IO[bytes], Path]:
        """A new temporary file for the upload's content, open for writing, and its path."""
        if self.nest is None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix=".upload-", suffix=suffix)
            return os.fdopen(fd, "wb"), Path(tmp)
        fd, path = temp_file(self.nest, self.tmp_dir, prefix=".upload-", suffix=suffix)
        return os.fdopen(fd, "wb"), path

    def _end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.form.digests = {name: hasher.hexdigest() for name, hasher in self._hashers.items()}
        elif self._text is not None and self._name is not None:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(f"form field {self._name!r} is not UTF-8 text") from None
            self.form.fields.setdefault(self._name, []).append(value)
            self._text = None

    def finish(self) -> None:
        if self._file is not None:  # the parser closed cleanly, so this cannot happen; be safe
            self.discard()
            raise UploadError("the upload ended inside the file")

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # what it still held may not fit on the disk either
                self._file.close()
            self._file = None
        if self.form.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.form.path.unlink()
            self.form.path = None


def _content_length(environ: Environ) -> int | None:
    raw = environ.get("CONTENT_LENGTH") or ""
    if not raw.strip():
        return None
    try:
        length = int(raw)
    except ValueError:
        raise UploadError(f"invalid Content-Length {raw!r}") from None
    if length < 0:
        raise UploadError(f"invalid Content-Length {raw!r}")
    return length


def _shown(value: str | None) -> str:
    """``value`` for a message: its repr, cut short (a 5000-digit version is not echoed whole)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(value or '')} characters)"


def _too_large(limit: int, size: int) -> str:
    return f"upload too large: {size} bytes is over the limit of {limit} bytes (max_upload_size)"


def _answer(
    environ: Environ, start_response: StartResponse, status: int, reason: str, message: str
) -> Iterable[bytes]:
    body = (" ".join(message.split()) + "\n").encode()
    start_response(
        status_line(status, reason),
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
