"""storage/blanks.py: empty files made ahead with no name, named where a new file is wanted."""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestegg_core.storage import blanks as blanks_module
from nestegg_core.storage.blanks import Blanks
from nestegg_core.storage.locks import FileLock, LockTimeout

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="O_TMPFILE and linkat through /proc: Linux only"
)


@pytest.fixture
def blanks(tmp_path: Path) -> Iterator[Blanks]:
    made = Blanks(tmp_path, tmp_path / "locks" / "key", keep=3)
    made.fill()
    yield made
    made.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_filled_to_keep_with_nothing_named_in_the_folder(blanks: Blanks) -> None:
    assert blanks.ready == 3
    assert not blanks.wanted()
    blanks.fill()  # nothing more to make
    assert blanks.ready == 3
    assert os.listdir(blanks.folder) == []  # made, the folder too, with no name


@pytest.mark.parametrize(
    ("there", "placed"),
    [
        ("nothing", True),
        ("a file", False),  # never over a file: its lock is taken as it is
        ("a link", False),  # nor over a link, left as it is (the lock then refuses it)
        ("no folder", False),  # its folder is made by who asks, not here
        ("outside", False),  # not below the folder the blanks were made for
    ],
)
def test_placed_only_where_nothing_is(blanks: Blanks, tmp_path: Path, there: str, placed: bool) -> None:
    project = blanks.folder / "demo"
    project.mkdir()
    path = project / "demo-1.0.tar.gz.lock"
    elsewhere = tmp_path / "elsewhere"
    if there == "a file":
        path.write_bytes(b"kept")
    elif there == "a link":
        path.symlink_to(elsewhere)
    elif there == "no folder":
        path = blanks.folder / "other" / "other-1.0.tar.gz.lock"
    elif there == "outside":
        path = tmp_path / "outside.lock"
    fd = blanks.place(path)
    if not placed:
        assert fd is None
        assert blanks.ready == 3  # kept for the next
        assert not elsewhere.exists()
        if there == "a file":
            assert path.read_bytes() == b"kept"
        assert path.is_symlink() is (there == "a link")
        assert not (blanks.folder / "other").exists()
        return
    assert fd is not None
    try:
        named = os.lstat(path)
        assert stat.S_ISREG(named.st_mode)
        assert named.st_size == 0
        assert named.st_ino == os.fstat(fd).st_ino  # the blank's descriptor is the file's
        assert stat.S_IMODE(named.st_mode) == 0o644 & ~_umask()
        os.write(fd, b"x")
        assert path.read_bytes() == b"x"
    finally:
        os.close(fd)
    assert blanks.ready == 2


def test_none_once_all_are_taken_until_filled_again(blanks: Blanks) -> None:
    paths = [blanks.folder / f"f{i}.lock" for i in range(4)]
    fds = [blanks.place(path) for path in paths]
    try:
        assert [fd is not None for fd in fds] == [True, True, True, False]
        assert blanks.wanted()
        blanks.fill()
        again = blanks.place(paths[3])
        assert again is not None
        fds.append(again)
        assert len({os.fstat(fd).st_ino for fd in fds if fd is not None}) == 4  # each its own
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)


def test_closed_they_are_freed_and_none_is_placed(blanks: Blanks) -> None:
    held = list(blanks._fds)
    blanks.close()
    for fd in held:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    assert blanks.place(blanks.folder / "demo.lock") is None
    blanks.fill()
    assert blanks.ready == 0
    assert not (blanks.folder / "demo.lock").exists()


@pytest.mark.parametrize(
    ("error", "warned"),
    [
        (errno.EOPNOTSUPP, False),  # a file system without O_TMPFILE: quietly made otherwise
        (errno.EISDIR, False),  # a kernel older than O_TMPFILE
        (errno.EIO, True),  # anything else is said once
    ],
)
def test_where_none_can_be_made_every_file_is_made_otherwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: int,
    warned: bool,
) -> None:
    real_open = os.open

    def failing(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if flags & blanks_module._TMPFILE == blanks_module._TMPFILE:
            raise OSError(error, os.strerror(error))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing)
    made = Blanks(tmp_path, tmp_path / "locks")
    with caplog.at_level(logging.DEBUG, logger=blanks_module.__name__):
        made.fill()
        made.fill()  # not tried again
    assert (made.usable, made.ready) == (False, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == int(warned)
    assert len(caplog.records) == 1
    monkeypatch.undo()
    path = tmp_path / "locks" / "demo.lock"
    with FileLock(path, timeout=0, blanks=made):  # made as before
        assert path.is_file()


def test_a_forked_child_lets_its_parent_s_blanks_go(blanks: Blanks) -> None:
    parent = {os.fstat(fd).st_ino for fd in blanks._fds}
    pid = os.fork()
    if pid == 0:  # the child: its own blanks, never its parent's (both would name the same ones)
        code = 1
        try:
            none = blanks.place(blanks.folder / "child.lock") is None and blanks.ready == 0
            blanks.fill()
            fd = blanks.place(blanks.folder / "child.lock")
            code = 0 if none and fd is not None and os.fstat(fd).st_ino not in parent else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert {os.fstat(fd).st_ino for fd in blanks._fds} == parent  # the parent's own, still there
    assert (blanks.folder / "child.lock").is_file()


def test_a_lock_file_named_from_a_blank_excludes_as_one_made_anew(blanks: Blanks) -> None:
    path = blanks.folder / "demo" / "demo-1.0.tar.gz.lock"
    path.parent.mkdir()
    with FileLock(path, blanks=blanks):
        assert blanks.ready == 2  # the lock file is a blank, named
        with pytest.raises(LockTimeout):
            FileLock(path, timeout=0).acquire()
        with pytest.raises(LockTimeout):
            FileLock(path, timeout=0, blanks=blanks).acquire()
    assert blanks.ready == 2  # the second found it there and named none
    with FileLock(path, timeout=0, blanks=blanks):  # taken as it is, free again
        pass
    assert path.is_file()
