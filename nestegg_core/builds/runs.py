"""The history of CI runs: an SQLite database in the nestegg dir (``ci.sqlite3``), kept across restarts.

One row per run (project, ref, commit, trigger, times, outcome, per-environment outcomes) and its
log in a table of its own, so that lists never read logs. The database is in WAL mode, so pages
read while a run is written; every thread has its own connection. Several processes may share
it: SQLite serializes their writes, and a run left "running" by a process that died is marked
"interrupted" when the next one starts its CI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DB_NAME = "ci.sqlite3"
#: a run waiting for a worker, and one being run
QUEUED, RUNNING = "queued", "running"
#: how a run can end: the command exited 0, exited otherwise, ran out of time, could not be run
#: (checkout, missing command), or was stopped with the server
PASSED, FAILED, TIMEOUT, ERROR, INTERRUPTED = "passed", "failed", "timeout", "error", "interrupted"
FINISHED = (PASSED, FAILED, TIMEOUT, ERROR, INTERRUPTED)
#: logs longer than this keep their beginning and their end
MAX_LOG = 2 * 1024 * 1024
_LOG_HEAD = 256 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    ref TEXT NOT NULL,
    commit_id TEXT,
    trigger TEXT NOT NULL,
    queued REAL NOT NULL,
    started REAL,
    duration REAL,
    outcome TEXT NOT NULL,
    exit_code INTEGER,
    envs TEXT NOT NULL DEFAULT '[]',
    message TEXT NOT NULL DEFAULT '',
    owner TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project, id);
CREATE INDEX IF NOT EXISTS runs_by_commit ON runs (project, ref, commit_id);
CREATE TABLE IF NOT EXISTS logs (
    run_id INTEGER PRIMARY KEY REFERENCES runs (id),
    text TEXT NOT NULL
);
"""
_COLUMNS = (
    "id, project, ref, commit_id, trigger, queued, started, duration, outcome, exit_code, envs, message"
)


@dataclass(frozen=True, kw_only=True)
class EnvResult:
    """The outcome of one tox environment of a run, from tox's result JSON."""

    name: str
    outcome: str
    exit_code: int | None = None
    duration: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "duration": self.duration,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EnvResult:
        code, duration = data.get("exit_code"), data.get("duration")
        return cls(
            name=str(data["name"]),
            outcome=str(data["outcome"]),
            exit_code=None if code is None else int(code),
            duration=None if duration is None else float(duration),
        )


@dataclass(frozen=True, kw_only=True)
class Run:
    """One CI run of one commit of a source build."""

    id: int
    project: str
    ref: str
    commit: str | None
    #: what started it: "poll", "trigger" or "cli"
    trigger: str
    queued: float
    started: float | None = None
    duration: float | None = None
    outcome: str = QUEUED
    exit_code: int | None = None
    envs: tuple[EnvResult, ...] = ()
    #: one line on why a run ended as it did (a time-out, a failed checkout)
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.outcome in FINISHED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "ref": self.ref,
            "commit": self.commit,
            "trigger": self.trigger,
            "queued": _iso(self.queued),
            "started": None if self.started is None else _iso(self.started),
            "duration": self.duration,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "envs": [env.to_json() for env in self.envs],
            "message": self.message,
        }

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Run:
        (run_id, project, ref, commit, trigger, queued, started, duration, outcome, code, envs, message) = row
        try:
            parsed = tuple(EnvResult.from_json(item) for item in json.loads(envs))
        except (ValueError, KeyError, TypeError):
            parsed = ()
        return cls(
            id=run_id,
            project=project,
            ref=ref,
            commit=commit,
            trigger=trigger,
            queued=queued,
            started=started,
            duration=duration,
            outcome=outcome,
            exit_code=code,
            envs=parsed,
            message=message,
        )


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def cap_log(text: str, limit: int = MAX_LOG) -> str:
    """``text``, or its first and last parts with a note of what was cut when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    tail = limit - _LOG_HEAD
    cut = len(text) - _LOG_HEAD - tail
    return f"{text[:_LOG_HEAD]}\n[... {cut} characters cut ...]\n{text[-tail:]}"


class RunStore:
    """The run history in ``<nestegg dir>/ci.sqlite3``; safe to use from many threads."""

    def __init__(self, root: Path) -> None:
        self.path = root / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._ready = False
        self._token = secrets.token_hex(4)

    @property
    def owner(self) -> str:
        """Who queued or runs a run: this process and this store (two may share a process)."""
        return f"{os.getpid()}:{self._token}"

    def exists(self) -> bool:
        """Whether there is a history yet; readers need not create one."""
        return self.path.is_file()

    # writes --------------------------------------------------------------------------------

    def queue(
        self, project: str, ref: str, commit: str | None, trigger: str, *, untested: bool = False
    ) -> tuple[Run, bool]:
        """A new queued run, or the one already queued for ``project`` and ``ref``; whether it is new.

        At most one run per project and ref waits at any time, which bounds the queue. With
        ``untested``, a commit that has a run already (see :meth:`tested`) gets that run, not a new
        one: decided in the same transaction, so processes polling one nest never test it twice.
        """
        with self._write() as db:
            if untested and commit is not None:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM runs WHERE project = ? AND ref = ? AND commit_id = ?"  # noqa: S608
                    " AND outcome != ? ORDER BY id DESC LIMIT 1",
                    (project, ref, commit, INTERRUPTED),
                ).fetchone()
                if row is not None:
                    return Run.from_row(row), False
            row = db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE project = ? AND ref = ? AND outcome = ?"  # noqa: S608
                " ORDER BY id LIMIT 1",
                (project, ref, QUEUED),
            ).fetchone()
            if row is not None:
                return Run.from_row(row), False
            cursor = db.execute(
                "INSERT INTO runs (project, ref, commit_id, trigger, queued, outcome, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (project, ref, commit, trigger, time.time(), QUEUED, self.owner),
            )
            run_id = cursor.lastrowid
        run = self.get(int(run_id or 0))
        assert run is not None
        return run, True

    def start(self, run_id: int) -> Run:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET outcome = ?, started = ?, owner = ? WHERE id = ?",
                (RUNNING, time.time(), self.owner, run_id),
            )
        run = self.get(run_id)
        assert run is not None
        return run

    def set_commit(self, run_id: int, commit: str) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET commit_id = ? WHERE id = ?", (commit, run_id))

    def finish(
        self,
        run_id: int,
        *,
        outcome: str,
        log: str,
        duration: float | None = None,
        exit_code: int | None = None,
        envs: Iterable[EnvResult] = (),
        message: str = "",
    ) -> Run:
        if outcome not in FINISHED:
            raise ValueError(f"{outcome!r} is not how a run ends (one of {', '.join(FINISHED)})")
        envs_json = json.dumps([env.to_json() for env in envs])
        with self._write() as db:
            db.execute(
                "UPDATE runs SET outcome = ?, duration = ?, exit_code = ?, envs = ?, message = ?"
                " WHERE id = ?",
                (outcome, duration, exit_code, envs_json, message, run_id),
            )
            db.execute("INSERT OR REPLACE INTO logs (run_id, text) VALUES (?, ?)", (run_id, cap_log(log)))
        run = self.get(run_id)
        assert run is not None
        return run

    def interrupt_unfinished(
        self, *, mine: bool = False, message: str = "stopped before it finished (the server stopped)"
    ) -> int:
        """Mark queued and running runs "interrupted" with ``message``: this store's own (``mine``),
        else those of processes that are no longer alive; returns how many."""
        with self._write() as db:
            rows = db.execute(
                "SELECT id, owner FROM runs WHERE outcome IN (?, ?)", (QUEUED, RUNNING)
            ).fetchall()
            stale = [run_id for run_id, owner in rows if (owner == self.owner if mine else not _alive(owner))]
            for run_id in stale:
                db.execute(
                    "UPDATE runs SET outcome = ?, message = ? WHERE id = ?",
                    (INTERRUPTED, message, run_id),
                )
                db.execute("INSERT OR IGNORE INTO logs (run_id, text) VALUES (?, '')", (run_id,))
        return len(stale)

    # reads ---------------------------------------------------------------------------------

    def runnable(self, run_id: int) -> tuple[Run | None, bool]:
        """The run as stored, and whether a worker may run it: it is queued, or it was left
        running by a process that is gone (``nestegg ci`` killed with -9 while it ran a run a
        server had queued)."""
        query = f"SELECT {_COLUMNS}, owner FROM runs WHERE id = ?"  # noqa: S608 - constants only
        row = self._db().execute(query, (run_id,)).fetchone()
        if row is None:
            return None, False
        run = Run.from_row(row[:-1])
        return run, run.outcome == QUEUED or (run.outcome == RUNNING and not _alive(row[-1]))

    def get(self, run_id: int) -> Run | None:
        query = f"SELECT {_COLUMNS} FROM runs WHERE id = ?"  # noqa: S608 - constants only
        row = self._db().execute(query, (run_id,)).fetchone()
        return None if row is None else Run.from_row(row)

    def log(self, run_id: int) -> str:
        row = self._db().execute("SELECT text FROM logs WHERE run_id = ?", (run_id,)).fetchone()
        return "" if row is None else str(row[0])

    def runs(
        self,
        project: str | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        among: Sequence[str] | None = None,
    ) -> list[Run]:
        """Runs, newest first: of ``project``, or of every project (of those ``among``, if given)."""
        where, args = _where(project, among)
        query = f"SELECT {_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT ? OFFSET ?"  # noqa: S608
        return [Run.from_row(row) for row in self._db().execute(query, (*args, limit, offset))]

    def count(self, project: str | None = None, *, among: Sequence[str] | None = None) -> int:
        """How many runs :meth:`runs` has in all."""
        where, args = _where(project, among)
        row = self._db().execute(f"SELECT COUNT(*) FROM runs {where}", args).fetchone()  # noqa: S608
        return int(row[0])

    def latest(self, projects: Iterable[str], *, finished: bool = True) -> dict[str, Run]:
        """The newest (finished) run of each of ``projects`` that has one."""
        found: dict[str, Run] = {}
        states = FINISHED if finished else (*FINISHED, QUEUED, RUNNING)
        marks = ", ".join("?" for _ in states)
        db = self._db()
        for project in dict.fromkeys(projects):
            row = db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE project = ? AND outcome IN ({marks})"  # noqa: S608
                " ORDER BY id DESC LIMIT 1",
                (project, *states),
            ).fetchone()
            if row is not None:
                found[project] = Run.from_row(row)
        return found

    def tested(self, project: str, ref: str, commit: str) -> bool:
        """Whether ``commit`` of ``ref`` has a run that is queued, running or ended other than interrupted."""
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM runs WHERE project = ? AND ref = ? AND commit_id = ? AND outcome != ? LIMIT 1",
                (project, ref, commit, INTERRUPTED),
            )
            .fetchone()
        )
        return row is not None

    def projects(self) -> list[str]:
        """Every project with runs."""
        return [row[0] for row in self._db().execute("SELECT DISTINCT project FROM runs ORDER BY project")]

    # connections ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close every thread's connection (the store opens new ones if used again)."""
        with self._guard:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def _db(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection per thread; check_same_thread is off only so that close() may close them all
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA busy_timeout = 30000")
            if not self._ready:
                with self._guard:
                    connection.execute("PRAGMA journal_mode = WAL")
                    connection.executescript(_SCHEMA)
                    self._ready = True
            connection.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            connection.close()
            raise
        with self._guard:
            self._connections.append(connection)
        self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _alive(owner: object) -> bool:
    try:
        pid = int(str(owner).split(":", 1)[0])
    except ValueError:
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's
        return True
    return True


def _where(project: str | None, among: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause of the runs of ``project``, else of every project ``among``, else of all."""
    if project is not None:
        return "WHERE project = ?", (project,)
    if among is not None:
        return f"WHERE project IN ({', '.join('?' for _ in among)})", tuple(among)
    return "", ()
