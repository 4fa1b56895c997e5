"""storage/locks.py: flock on a lock file, exclusive across holders, threads and processes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nestegg_core.errors import NesteggError, UnsafePath
from nestegg_core.storage.locks import FileLock, LockTimeout

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock: Windows keeps filelock")
fcntl = pytest.importorskip("fcntl")


def test_taken_and_let_go(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    lock = FileLock(path)
    with lock:
        assert lock.is_locked
        assert path.is_file()
    assert not lock.is_locked
    with FileLock(path, timeout=0):  # free again for another holder
        pass


@pytest.mark.parametrize(
    ("timeout", "least", "most"),
    [
        (0, 0.0, 0.19),  # a single try, not the wait of the next case
        (0.2, 0.2, 0.5),  # tries until the time is up
    ],
)
def test_held_elsewhere_times_out(tmp_path: Path, timeout: float, least: float, most: float) -> None:
    path = tmp_path / "a.lock"
    with FileLock(path):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=r"a\.lock") as raised, FileLock(path, timeout=timeout):
            pass
        took = time.monotonic() - started
    assert raised.value.path == path
    assert isinstance(raised.value, TimeoutError)
    assert least <= took < most


@pytest.mark.parametrize("timeout", [-1, 5.0])
def test_waits_for_the_holder(tmp_path: Path, timeout: float) -> None:
    path = tmp_path / "a.lock"
    holder = FileLock(path)
    holder.acquire()
    threading.Timer(0.1, holder.release).start()
    started = time.monotonic()
    with FileLock(path, timeout=timeout):
        assert time.monotonic() - started >= 0.09


def test_timeout_of_one_acquire(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    lock = FileLock(path)  # waits for ever by default; this acquire says otherwise
    with FileLock(path), pytest.raises(LockTimeout):
        lock.acquire(timeout=0)
    assert not lock.is_locked
    lock.acquire(timeout=0)
    lock.release()
    lock.release()  # twice is no harm


def test_not_reentrant(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "a.lock")
    with lock, pytest.raises(RuntimeError, match="held already"):
        lock.acquire()


def test_two_threads_never_hold_it_at_once(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    inside: list[int] = []
    overlaps: list[int] = []

    def work(number: int) -> None:
        for _ in range(50):
            with FileLock(path):
                if inside:
                    overlaps.append(number)
                inside.append(number)
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not overlaps


_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    {take}
    print("held", flush=True)
    sys.stdin.readline()
    """
)
_OURS = "from nestegg_core.storage.locks import FileLock; lock = FileLock(Path(sys.argv[1])); lock.acquire()"
# an older nestegg sharing the cache takes its locks with filelock
_FILELOCK = "import filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire()"


@pytest.mark.parametrize("take", [_OURS, _FILELOCK], ids=["nestegg", "filelock"])
def test_another_process_excludes_it(tmp_path: Path, take: str) -> None:
    if take == _FILELOCK:
        pytest.importorskip("filelock")
    path = tmp_path / "a.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(take=take), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout), FileLock(path, timeout=0.1):
            pass
    finally:
        holder.communicate("\n", timeout=30)  # it exits, and the lock with it
    with FileLock(path, timeout=5):
        pass


def test_filelock_is_excluded_by_it(tmp_path: Path) -> None:
    filelock = pytest.importorskip("filelock")
    path = tmp_path / "a.lock"
    with FileLock(path), pytest.raises(filelock.Timeout):
        filelock.FileLock(str(path)).acquire(timeout=0.1)


def test_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not a lock")
    path = tmp_path / "a.lock"
    path.symlink_to(target)
    with pytest.raises(UnsafePath, match="a symbolic link"), FileLock(path, timeout=0):
        pass
    assert target.read_bytes() == b"not a lock"


def test_a_failed_open_leaves_nothing_held(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "missing" / "a.lock")
    with pytest.raises(FileNotFoundError):
        lock.acquire()
    assert not lock.is_locked
    assert not os.path.exists(tmp_path / "missing")


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        (errno.EAGAIN, LockTimeout),  # held: the usual word
        (errno.EACCES, LockTimeout),  # held, as some file systems (SMB) say it
        (errno.ENOLCK, NesteggError),  # no locks at all here (an NFS without its lock daemon): at once
    ],
)
def test_what_a_try_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, raised: type) -> None:
    def refused(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refused)  # the module the lock takes it from
    started = time.monotonic()
    with pytest.raises(raised) as caught, FileLock(tmp_path / "a.lock", timeout=0.1):
        pass
    if raised is NesteggError:  # one line that says what to change
        assert str(caught.value) == (
            f"cannot lock {str(tmp_path / 'a.lock')!r}: {os.strerror(code)} (keep the nest on a file "
            "system that gives locks, such as a local disk)"
        )
        assert time.monotonic() - started < 0.09  # no waiting for a lock that cannot be had
