"""CI of source builds: settings, the run history, polling, runs, the trigger URL and ``nestegg ci``."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nestegg_core import Mirror
from nestegg_core.builds.ci import Runner, remote_head, tox_results
from nestegg_core.builds.ci import service as ci_service
from nestegg_core.builds.runs import MAX_LOG, EnvResult, Run, RunStore, cap_log
from nestegg_core.builds.vcs import MAX_OUTPUT, Git, Mercurial, failure_line, find_hg
from nestegg_core.cli import main
from nestegg_core.config.config import CISettings, Config, SourceBuild, load_config, parse_config
from nestegg_core.errors import BuildError, ConfigError
from nestegg_core.http.trigger import TriggerHandler
from nestegg_core.storage.locks import FileLock

TOKEN = "s3cret-token-for-tests"  # noqa: S105 - a test token
GIT = [
    "git",
    "-c",
    "user.name=nestegg",
    "-c",
    "user.email=nestegg@example.invalid",
    "-c",
    "init.defaultBranch=main",
]
TOX_INI = """\
[tox]
env_list = check
[testenv:check]
skip_install = true
commands = python -c "import pathlib, sys; sys.exit(pathlib.Path('verdict').read_text().strip() != 'pass')"
"""


# settings -----------------------------------------------------------------------------------------


def _build_config(ci: object, **top: object) -> dict[str, object]:
    build = {"name": "demo", "repo_type": "git", "repo_url": "/nowhere", "ci": ci}
    return {"nestegg": {"source_builds": [build], **top}}


def test_ci_settings_parse() -> None:
    config = parse_config(
        _build_config({"command": "tox -e py", "watch": ["main", "1.0"], "interval": 60, "timeout": 10}),
    )
    assert config.source_builds[0].ci == CISettings(
        command="tox -e py", watch=("main", "1.0"), interval=60.0, timeout=10.0
    )
    assert parse_config(_build_config(True)).source_builds[0].ci == CISettings()
    assert parse_config(_build_config(False)).source_builds[0].ci is None
    assert parse_config(_build_config({"watch": "main"})).source_builds[0].ci == CISettings(watch=("main",))
    top = parse_config(_build_config(True, ci_token=TOKEN, ci_jobs=2))
    assert (top.ci_token, top.ci_jobs) == (TOKEN, 2)


@pytest.mark.parametrize(
    ("ci", "top", "message"),
    [
        ({"command": "tox 'unclosed"}, {}, "nestegg.source_builds[0].ci.command: cannot split"),
        ({"command": ""}, {}, "nestegg.source_builds[0].ci.command: expected a non-empty string"),
        (
            {"watch": ["ok", "-bad"]},
            {},
            "nestegg.source_builds[0].ci.watch[1]: '-bad' is not a branch or tag",
        ),
        ({"interval": "soon"}, {}, "nestegg.source_builds[0].ci.interval: expected a number of seconds"),
        ({"timeout": 0}, {}, "nestegg.source_builds[0].ci.timeout: expected a number of seconds > 0"),
        ({"when": "daily"}, {}, "nestegg.source_builds[0].ci.when: unknown key 'when'"),
        ("often", {}, "nestegg.source_builds[0].ci: expected a mapping, got str 'often'"),
        (True, {"ci_token": "short"}, "nestegg.ci_token: expected a token of at least 16 characters, got 5"),
        (True, {"ci_jobs": 0}, "nestegg.ci_jobs: expected an integer >= 1, got 0"),
    ],
)
def test_ci_settings_errors_name_file_key_and_value(
    tmp_path: Path, ci: object, top: dict[str, object], message: str
) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(json.dumps(_build_config(ci, **top)))  # JSON is YAML
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: {message}")
    assert "\n" not in text
    assert "short" not in text  # a token is never shown


# pure parts -----------------------------------------------------------------------------------------


def test_tox_results(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(
        json.dumps(
            {
                "testenvs": {
                    ".pkg": {},
                    "py": {"result": {"success": True, "exit_code": 0, "duration": 1.5}},
                    "lint": {"result": {"success": False, "exit_code": 3, "duration": 0.25}},
                    "old": {"result": {"success": True, "exit_code": 0, "skipped": True}},
                }
            }
        )
    )
    assert tox_results(path) == (
        EnvResult(name="py", outcome="passed", exit_code=0, duration=1.5),
        EnvResult(name="lint", outcome="failed", exit_code=3, duration=0.25),
        EnvResult(name="old", outcome="skipped", exit_code=0, duration=None),
    )
    # tox's result holds every command's output again: past its limit it is not read at all
    assert tox_results(path, limit=path.stat().st_size) != ()
    assert tox_results(path, limit=path.stat().st_size - 1) == ()
    path.write_text("not json")
    assert tox_results(path) == ()
    assert tox_results(tmp_path / "missing.json") == ()


def test_cap_log_keeps_head_and_tail() -> None:
    assert cap_log("short") == "short"
    text = "a" * MAX_LOG + "b" * 1000
    capped = cap_log(text)
    assert len(capped) < len(text)
    assert capped.startswith("a" * 1000)
    assert capped.endswith("b" * 1000)
    assert "characters cut" in capped


def test_run_store_history_survives_reopening(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first, new = store.queue("demo", "main", "a" * 40, "poll")
    assert new
    again, new = store.queue("demo", "main", "b" * 40, "poll")
    assert (again.id, new) == (first.id, False)  # one queued run per project and ref
    store.start(first.id)
    store.finish(first.id, outcome="passed", log="all good\n", duration=1.0, exit_code=0,
                 envs=[EnvResult(name="py", outcome="passed", exit_code=0)])  # fmt: skip
    second, _ = store.queue("demo", "main", "b" * 40, "trigger")
    store.start(second.id)
    store.finish(second.id, outcome="failed", log="boom\n", duration=2.0, exit_code=1)
    assert store.tested("demo", "main", "a" * 40)
    # a second poller (another process) never queues a tested commit again
    assert store.queue("demo", "main", "a" * 40, "poll", untested=True) == (store.get(first.id), False)
    assert not store.tested("demo", "main", "c" * 40)
    store.close()

    reopened = RunStore(tmp_path)
    assert reopened.count() == reopened.count("demo") == 2
    assert [run.outcome for run in reopened.runs("demo")] == ["failed", "passed"]
    assert reopened.latest(["demo", "other"])["demo"].id == second.id
    assert reopened.log(first.id) == "all good\n"
    assert reopened.get(first.id).envs == (EnvResult(name="py", outcome="passed", exit_code=0),)  # type: ignore[union-attr]
    # a run left running by a process that is gone is interrupted when CI starts again
    stale, _ = reopened.queue("demo", "main", "d" * 40, "poll")
    with reopened._write() as db:
        db.execute("UPDATE runs SET owner = '999999999:dead' WHERE id = ?", (stale.id,))
    assert reopened.interrupt_unfinished() == 1
    assert reopened.get(stale.id).outcome == "interrupted"  # type: ignore[union-attr]
    assert not reopened.tested("demo", "main", "d" * 40)  # so that it is tested again
    reopened.close()


# a real repository ------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _commit(repo: Path, verdict: str) -> str:
    (repo / "verdict").write_text(verdict + "\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", f"tests {verdict}")
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    subprocess.run([*GIT, "init", "--quiet", str(repo)], check=True)
    (repo / "tox.ini").write_text(TOX_INI)
    return repo


def _seed_config(tmp_path: Path, repo: Path, ci: str) -> Path:
    """A config in the shape of the seed's README, with the CI keys added."""
    path = tmp_path / "nestegg.yml"
    path.write_text(
        textwrap.dedent(f"""\
            nestegg:
              nestegg_dir: {tmp_path / "nest"}
              port: 0
              offline: yes
              index-url: http://127.0.0.1:9/simple
              ci_token: {TOKEN}
              source_builds:
                - name: My_Package
                  repo_type: git
                  repo_url: {repo}
                  private: yes
                  versions:
                    - version: 1.0.0
                      tag: 1.0.0
                      dist_file: my_package-1.0.0.tar.gz
                  ci: {ci}
            """)
    )
    return path


def _wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def _runs(http: requests.Session, mirror: Mirror) -> list[dict[str, Any]]:
    response = http.get(f"{mirror.url}/ui/ci/my-package?format=json")
    assert response.status_code == 200
    return response.json()["runs"]  # type: ignore[no-any-return]


def _envs(run: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(env["name"], env["outcome"], env["exit_code"]) for env in run["envs"]]


def _finished(http: requests.Session, mirror: Mirror, count: int) -> Callable[[], bool]:
    def check() -> bool:
        runs = _runs(http, mirror)
        return len(runs) >= count and all(run["outcome"] not in ("queued", "running") for run in runs)

    return check


@pytest.fixture
def mirrors() -> Iterator[list[Mirror]]:
    started: list[Mirror] = []
    yield started
    for mirror in started:
        mirror.stop()


@pytest.mark.slow
def test_polled_commits_trigger_and_restart(
    tmp_path: Path, git_repo: Path, http: requests.Session, mirrors: list[Mirror]
) -> None:
    passing = _commit(git_repo, "pass")
    config_path = _seed_config(tmp_path, git_repo, '{command: "tox -e check", watch: [main], interval: 0.2}')
    mirror = Mirror(load_config(config_path)).start()
    mirrors.append(mirror)

    _wait_for(_finished(http, mirror, 1))
    failing = _commit(git_repo, "fail")
    _wait_for(_finished(http, mirror, 2))
    second, first = _runs(http, mirror)
    assert (first["commit"], first["ref"], first["trigger"], first["outcome"]) == (
        passing,
        "main",
        "poll",
        "passed",
    )
    assert _envs(first) == [("check", "passed", 0)]
    assert (second["commit"], second["outcome"], second["exit_code"]) == (failing, "failed", 1)
    assert _envs(second) == [("check", "failed", 1)]
    log = http.get(f"{mirror.url}/ui/ci/my-package/{second['id']}/log").text
    assert f"# commit {failing}" in log
    assert "check: FAIL" in log
    assert f"installs from {mirror.index_url}" in log

    # the trigger URL: a token is needed, and the name must be a source build
    trigger = f"{mirror.url}/ci/trigger/My_Package"
    assert http.post(trigger).status_code == 403
    assert http.post(trigger, headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 403
    assert http.post(f"{mirror.url}/ci/trigger/nope", headers={"X-Nestegg-Token": TOKEN}).status_code == 404
    refused = http.post(trigger + "?ref=other", headers={"X-Nestegg-Token": TOKEN})
    assert refused.status_code == 400
    assert "'other' is not watched" in refused.text
    answer = http.post(trigger, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 202
    (queued,) = answer.json()["runs"]
    assert queued["url"] == f"/ui/ci/my-package/{queued['id']}"
    _wait_for(_finished(http, mirror, 3))
    third = _runs(http, mirror)[0]
    assert (third["id"], third["trigger"], third["commit"], third["outcome"]) == (
        queued["id"],
        "trigger",
        failing,
        "failed",
    )

    # a restart keeps the history, and tests nothing it tested before
    mirror.stop()
    again = Mirror(load_config(config_path)).start()
    mirrors.append(again)
    time.sleep(1.0)  # a few polls
    runs = _runs(http, again)
    assert [run["outcome"] for run in runs] == ["failed", "failed", "passed"]
    badge = http.get(f"{again.url}/ui/badge/my-package.svg")
    assert badge.headers["Content-Type"].startswith("image/svg+xml")
    assert "failing" in badge.text


class _Queues:
    """A CI service that queues run 7 of whatever it is asked to."""

    def trigger(self, name: str, ref: str | None = None) -> list[Run]:
        return [Run(id=7, project=name, ref=ref or "main", commit=None, trigger="trigger", queued=0.0)]


@pytest.mark.parametrize(
    ("public_url", "script_name", "url"),
    [
        (None, "", "/ui/ci/my-package/7"),
        (None, "/mirror/", "/mirror/ui/ci/my-package/7"),
        ("https://example.com/pypi", "", "/pypi/ui/ci/my-package/7"),
        ("https://example.com/pypi", "/mirror", "/pypi/ui/ci/my-package/7"),  # the front server's path
        ("https://example.com", "/mirror", "/ui/ci/my-package/7"),
    ],
)
def test_the_trigger_answers_with_the_runs_url_under_the_public_urls_path(
    public_url: str | None, script_name: str, url: str
) -> None:
    handler = TriggerHandler(_Queues(), TOKEN, public_url=public_url)  # type: ignore[arg-type]
    seen: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/ci/trigger/my-package", "SCRIPT_NAME": script_name,
        "HTTP_AUTHORIZATION": f"Bearer {TOKEN}",
    }  # fmt: skip
    body = b"".join(handler(environ, lambda status, _headers: seen.append(status)))
    assert seen == ["202 Accepted"]
    assert json.loads(body)["runs"][0]["url"] == url


@pytest.mark.slow
def test_hanging_run_times_out_while_serving_goes_on(
    tmp_path: Path, git_repo: Path, http: requests.Session, mirrors: list[Mirror]
) -> None:
    _commit(git_repo, "pass")
    pid_file = tmp_path / "hanging.pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    command = shlex.join([sys.executable, "-c", script])
    config_path = _seed_config(
        tmp_path, git_repo, json.dumps({"command": command, "timeout": 1.5, "interval": 0})
    )
    mirror = Mirror(load_config(config_path)).start()
    mirrors.append(mirror)
    assert (
        http.post(f"{mirror.url}/ci/trigger/my-package", headers={"X-Nestegg-Token": TOKEN}).status_code
        == 202
    )
    _wait_for(pid_file.exists, 30)
    started = time.monotonic()
    assert http.get(f"{mirror.url}/health").status_code == 200  # serving does not wait for the run
    assert http.get(f"{mirror.url}/ui/").status_code == 200
    assert time.monotonic() - started < 1.0
    _wait_for(_finished(http, mirror, 1), 30)
    (run,) = _runs(http, mirror)
    assert run["outcome"] == "timeout"
    assert run["message"] == "stopped after the time limit of 1.5s"
    pid = int(pid_file.read_text())
    _wait_for(lambda: not _alive(pid), 10)  # the whole process group was stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_cli_runs_and_records(
    tmp_path: Path,
    git_repo: Path,
    capsys: pytest.CaptureFixture[str],
    http: requests.Session,
    mirrors: list[Mirror],
) -> None:
    commit = _commit(git_repo, "pass")
    config_path = _seed_config(tmp_path, git_repo, "{command: tox -e check, interval: 0}")
    assert main(["--config", str(config_path), "ci", "my_package"]) == 0
    out = capsys.readouterr().out
    assert f"my-package HEAD {commit[:12]}: passed" in out
    assert "check:passed" in out
    assert main(["--config", str(config_path), "ci", "--new"]) == 0
    assert "tested before" in capsys.readouterr().out
    _commit(git_repo, "fail")
    assert main(["--config", str(config_path), "ci"]) == 1
    assert ": failed" in capsys.readouterr().out
    assert main(["--config", str(config_path), "ci", "unknown"]) == 2
    assert "'unknown' is not a source build" in capsys.readouterr().err
    # the server shows what the command line recorded
    mirror = Mirror(load_config(config_path)).start()
    mirrors.append(mirror)
    assert [run["trigger"] for run in _runs(http, mirror)] == ["cli", "cli"]


@pytest.mark.slow
def test_a_chatty_run_keeps_the_head_and_tail_of_its_output_in_bounded_memory(
    tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _commit(git_repo, "pass")
    chatty = 96 * 1024 * 1024  # far more than the 2 MiB kept
    script = (
        "import sys; out = sys.stdout.buffer; out.write(b'FIRST-LINE\\n'); line = b'x' * 1023 + b'\\n'\n"
        f"for _ in range({chatty // 1024}): out.write(line)\n"
        "out.write(b'LAST-LINE\\n')"
    )
    command = shlex.join([sys.executable, "-c", script])
    config_path = _seed_config(tmp_path, git_repo, json.dumps({"command": command, "interval": 0}))
    tracemalloc.start()
    try:
        assert main(["--config", str(config_path), "ci", "my-package"]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ": passed" in capsys.readouterr().out
    # the output is read as it comes, never whole: the cap and the log made of it, a few times over
    assert peak < 24 * 1024 * 1024, peak
    store = RunStore(tmp_path / "nest")
    try:
        (run,) = store.runs()
        log = store.log(run.id)
    finally:
        store.close()
    assert "FIRST-LINE" in log
    assert log.rstrip().endswith("LAST-LINE") or "LAST-LINE\n[exit 0" in log
    cut = re.search(r"\[\.\.\. (\d+) bytes of output cut \.\.\.\]", log)
    assert cut is not None
    assert int(cut.group(1)) > chatty - 2 * MAX_OUTPUT
    assert "characters cut" not in log  # cut once, as it was read
    assert len(log) < MAX_LOG + 64 * 1024


def _ignoring_nothing() -> None:
    # a child of a process that ignores SIGINT (a test worker may) would ignore it too
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
# killed by SIGTERM once its run is recorded, as systemd counts a clean stop (an exit status of
# 130 or 143 it counts a failure); Ctrl-C's 130 as a shell says it
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)])
def test_a_stopped_nestegg_ci_stops_its_run_and_records_it_interrupted(
    tmp_path: Path, git_repo: Path, sig: signal.Signals, code: int
) -> None:
    _commit(git_repo, "pass")
    pid_file = tmp_path / "run.pid"
    script = (
        "import os, time; print('said before', 'it was stopped', flush=True); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    command = shlex.join([sys.executable, "-c", script])
    config_path = _seed_config(tmp_path, git_repo, json.dumps({"command": command, "interval": 0}))
    process = subprocess.Popen(
        [sys.executable, "-m", "nestegg_core", "--config", str(config_path), "ci"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignoring_nothing,  # noqa: PLW1509 - no threads of the test's in the child
    )
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60)
        process.send_signal(sig)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == code, output
    assert b"Traceback" not in output
    _wait_for(lambda: not _alive(int(pid_file.read_text())), 10)  # ended with its group
    store = RunStore(tmp_path / "nest")
    try:
        (run,) = store.runs()
        log = store.log(run.id)
    finally:
        store.close()
    assert (run.outcome, run.message) == ("interrupted", "interrupted")
    assert "said before it was stopped" in log


def test_nestegg_ci_tests_again_a_commit_whose_run_a_killed_process_left_running(
    tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit = _commit(git_repo, "pass")
    config_path = _seed_config(
        tmp_path, git_repo, json.dumps({"command": shlex.join([sys.executable, "-c", "pass"]), "interval": 0})
    )
    store = RunStore(tmp_path / "nest")
    left, _ = store.queue("my-package", "HEAD", commit, "cli")
    store.start(left.id)
    store.close()
    # its process is gone (the id of none alive): killed with -9 before it recorded the end
    with sqlite3.connect(tmp_path / "nest" / "ci.sqlite3") as db:
        db.execute("UPDATE runs SET owner = ? WHERE id = ?", (f"{2**22 + 1}:dead", left.id))
    db.close()
    assert main(["--config", str(config_path), "ci", "--new"]) == 0
    assert f"my-package HEAD {commit[:12]}: passed" in capsys.readouterr().out
    store = RunStore(tmp_path / "nest")
    try:
        assert [run.outcome for run in store.runs()] == ["passed", "interrupted"]
    finally:
        store.close()


def test_a_run_removes_the_checkouts_runs_of_its_project_left(
    tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _commit(git_repo, "pass")
    command = shlex.join([sys.executable, "-c", "pass"])
    config_path = _seed_config(tmp_path, git_repo, json.dumps({"command": command, "interval": 0}))
    work = tmp_path / "nest" / "tmp" / "ci"
    # runs killed with -9: their checkouts and tox environments (named as runs name them, and as
    # they named them before)
    left = [work / "my-package.k1ll3d_x", work / "my-package-k1ll3d_y"]
    for checkout in left:
        (checkout / "source" / ".tox").mkdir(parents=True)
    others = [
        work / "my-package-two.abcd1234",
        work / "my-package-two-abcd1234",
        work / "other.abcd1234",
        work / "my-package.notmine",
    ]
    for other in others:
        other.mkdir()
    assert main(["--config", str(config_path), "ci"]) == 0
    assert not any(checkout.exists() for checkout in left)
    assert all(other.is_dir() for other in others)


def test_nestegg_ci_new_goes_on_past_a_repository_out_of_reach(
    tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit = _commit(git_repo, "pass")
    ci = {"command": shlex.join([sys.executable, "-c", "pass"]), "interval": 0}
    config_path = _seed_config(tmp_path, git_repo, json.dumps(ci))
    text = config_path.read_text()
    gone = (
        text[text.index("    - name: My_Package") :]
        .replace("My_Package", "Gone")
        .replace(str(git_repo), str(tmp_path / "gone"))
    )
    config_path.write_text(text + gone)
    assert main(["--config", str(config_path), "ci", "--new", "gone", "my-package"]) == 1
    out = capsys.readouterr().out
    assert "gone HEAD: cannot poll: " in out
    assert f"my-package HEAD {commit[:12]}: passed" in out


def test_a_build_named_twice_is_tested_once(
    tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _commit(git_repo, "pass")
    ci = {"command": shlex.join([sys.executable, "-c", "pass"]), "interval": 0}
    config_path = _seed_config(tmp_path, git_repo, json.dumps(ci))
    assert main(["--config", str(config_path), "ci", "My_Package", "my-package"]) == 0
    assert capsys.readouterr().out.count(": passed") == 1


def test_nestegg_ci_says_it_waits_for_another_processs_run_of_the_project(
    tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _commit(git_repo, "pass")
    ci = {"command": shlex.join([sys.executable, "-c", "pass"]), "interval": 0}
    config_path = _seed_config(tmp_path, git_repo, json.dumps(ci))
    (tmp_path / "nest" / "ci" / "locks").mkdir(parents=True)
    other = FileLock(tmp_path / "nest" / "ci" / "locks" / "my-package.lock")
    other.acquire()  # a server's run of it
    release = threading.Timer(1.0, other.release)
    release.start()
    try:
        assert main(["--config", str(config_path), "ci"]) == 0
    finally:
        release.join()
    captured = capsys.readouterr()
    assert "CI of my-package: waiting for the run another process makes of it to end" in captured.err
    assert ": passed" in captured.out


def test_a_queued_run_made_by_another_is_not_made_again(tmp_path: Path, git_repo: Path) -> None:
    _commit(git_repo, "pass")
    made = tmp_path / "made.txt"
    script = f"open({str(made)!r}, 'a').write('made\\n')"
    ci = {"command": shlex.join([sys.executable, "-c", script]), "interval": 0}
    config = load_config(_seed_config(tmp_path, git_repo, json.dumps(ci)))
    (build,) = config.source_builds
    store = RunStore(config.nestegg_dir)
    try:
        # a server queued it; nestegg ci took it (the one queued run of the ref), then the server's
        # worker, which had seen it queued, got its turn
        queued, _ = store.queue(build.name, "HEAD", None, "poll")
        runner = Runner(config, store, index_url=lambda: "http://127.0.0.1:9/simple/")
        first = runner.run(queued, build)
        second = runner.run(queued, build)
    finally:
        store.close()
    assert made.read_text() == "made\n"
    assert (first.outcome, second.outcome, second.id) == ("passed", "passed", first.id)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_nestegg_ci_stopped_as_it_waits_its_turn_leaves_no_queued_run(
    tmp_path: Path, git_repo: Path, sig: signal.Signals
) -> None:
    _commit(git_repo, "pass")
    config_path = _seed_config(tmp_path, git_repo, json.dumps({"command": "true", "interval": 0}))
    (tmp_path / "nest" / "ci" / "locks").mkdir(parents=True)
    other = FileLock(tmp_path / "nest" / "ci" / "locks" / "my-package.lock")
    other.acquire()  # a server's run of the project
    process = subprocess.Popen(
        [sys.executable, "-m", "nestegg_core", "--config", str(config_path), "-v", "ci"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignoring_nothing,  # noqa: PLW1509 - no threads of the test's in the child
    )
    try:

        def queued() -> bool:
            store = RunStore(tmp_path / "nest")
            try:
                return store.exists() and bool(store.runs())
            finally:
                store.close()

        _wait_for(queued, 60)
        time.sleep(0.5)  # and waiting for the lock
        process.send_signal(sig)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
        other.release()
    # stopped by SIGTERM, it ends killed by SIGTERM; by Ctrl-C, exit 130
    assert process.returncode == (-signal.SIGTERM if sig == signal.SIGTERM else 130), output
    store = RunStore(tmp_path / "nest")
    try:
        (run,) = store.runs()
        assert (run.outcome, run.message) == ("interrupted", "nestegg ci was stopped before it ran")
        # a server's CI queues its own run of the ref, which it then makes
        again, new = store.queue("my-package", "HEAD", None, "trigger")
    finally:
        store.close()
    assert (new, again.id != run.id) == (True, True)


def test_a_run_a_killed_process_left_running_is_made_by_the_worker_that_reaches_it(
    tmp_path: Path, git_repo: Path
) -> None:
    _commit(git_repo, "pass")
    ci = {"command": shlex.join([sys.executable, "-c", "pass"]), "interval": 0}
    config = load_config(_seed_config(tmp_path, git_repo, json.dumps(ci)))
    (build,) = config.source_builds
    store = RunStore(config.nestegg_dir)
    try:
        # a server queued it, nestegg ci took it and was killed with -9 as it ran it; the server's
        # worker, which had seen it queued, gets its turn
        queued, _ = store.queue(build.name, "HEAD", None, "poll")
        store.start(queued.id)
        with sqlite3.connect(config.nestegg_dir / "ci.sqlite3") as db:
            db.execute("UPDATE runs SET owner = ? WHERE id = ?", (f"{2**22 + 1}:dead", queued.id))
        db.close()
        done = Runner(config, store, index_url=lambda: "http://127.0.0.1:9/simple/").run(queued, build)
        # one a process alive runs is its own
        store.start(queued.id)
        assert not store.runnable(queued.id)[1]
    finally:
        store.close()
    assert (done.id, done.outcome) == (queued.id, "passed")


def test_a_servers_worker_makes_a_run_a_killed_process_left_running(tmp_path: Path, git_repo: Path) -> None:
    _commit(git_repo, "pass")
    ci = {"command": shlex.join([sys.executable, "-c", "pass"]), "interval": 0}
    config = load_config(_seed_config(tmp_path, git_repo, json.dumps(ci)))
    service = ci_service(config, index_url=lambda: "http://127.0.0.1:9/simple/")
    assert service is not None
    service.start()
    try:
        # the server queued it; nestegg ci took it, then was killed with -9 before the worker came
        run, _ = service.store.queue("my-package", "HEAD", None, "poll")
        service.store.start(run.id)
        with sqlite3.connect(config.nestegg_dir / "ci.sqlite3") as db:
            db.execute("UPDATE runs SET owner = ? WHERE id = ?", (f"{2**22 + 1}:dead", run.id))
        db.close()
        service._ensure_workers()
        service._queue.put(run.id)  # as the server queued it
        _wait_for(lambda: (got := service.store.get(run.id)) is not None and got.finished, 60)
        assert service.store.get(run.id).outcome == "passed"  # type: ignore[union-attr]
    finally:
        service.stop()


def test_a_damaged_ci_history_is_one_line(
    tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = _seed_config(tmp_path, git_repo, "{interval: 0}")
    (tmp_path / "nest").mkdir()
    (tmp_path / "nest" / "ci.sqlite3").write_bytes(b"not a database, " * 1024)
    assert main(["--config", str(config_path), "ci"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot use the CI history {str(tmp_path / 'nest' / 'ci.sqlite3')!r}: ")
    assert err.count("\n") == 1


def test_checkout_failure_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = _seed_config(tmp_path, tmp_path / "no-such-repo", "{interval: 0}")
    assert main(["--config", str(config_path), "ci", "my-package"]) == 1
    assert ": error" in capsys.readouterr().out
    store = RunStore(tmp_path / "nest")
    (run,) = store.runs()
    assert run.outcome == "error"
    assert "no-such-repo" in store.log(run.id)
    store.close()


# polling --------------------------------------------------------------------------------------------


def test_remote_head_git(git_repo: Path) -> None:
    first = _commit(git_repo, "pass")
    _git(git_repo, "tag", "-a", "v1", "-m", "annotated")
    second = _commit(git_repo, "fail")
    build = SourceBuild(name="demo", repo_type="git", repo_url=str(git_repo))  # type: ignore[arg-type]
    assert remote_head(build, "HEAD") == second
    assert remote_head(build, "main") == second
    assert remote_head(build, "v1") == first  # the commit, not the annotated tag object
    with pytest.raises(BuildError, match="no branch or tag 'nope'"):
        remote_head(build, "nope")


def test_a_repository_that_is_none_says_why_in_gits_words(tmp_path: Path) -> None:
    build = SourceBuild(name="demo", repo_type="git", repo_url=str(tmp_path / "none"))  # type: ignore[arg-type]
    with pytest.raises(BuildError, match=r"failed \(exit 128\): fatal: '.*none' does not appear to be a git"):
        remote_head(build, "HEAD")


@pytest.mark.parametrize(
    ("output", "line"),
    [
        ("fatal: 'x' does not appear to be a git repository\nfatal: Could not read\n\nPlease make sure\n"
         "and the repository exists.\n", "fatal: 'x' does not appear to be a git repository"),
        ("searching\nabort: repository /x not found\n", "abort: repository /x not found"),
        ("warning: a\nsomething broke\n", "something broke"),
        ("error: https://alice:pw@example.com/r refused\n", "error: https://alice:***@example.com/r refused"),
        ("\n  \n", "no output"),
        # a build: the backend's exception, not the frontend's closing words
        ('  File "<string>", line 2\n    setup(name="bad"\n         ^\n'
         "SyntaxError: '(' was never closed\n\nTIP pass --env-dir\n"
         "ERROR Backend subprocess exited when trying to invoke get_requires_for_build_sdist\n",
         "SyntaxError: '(' was never closed"),
        ("Traceback (most recent call last):\n  File \"setup.py\", line 1\n"
         "ModuleNotFoundError: No module named 'numpy'\nERROR Backend subprocess exited\n",
         "ModuleNotFoundError: No module named 'numpy'"),
        ("build.BuildBackendException: Backend 'x' is not available.\nERROR Backend 'x' is not available.\n",
         "build.BuildBackendException: Backend 'x' is not available."),
        # a command that failed says why in its own lines, not in the exception that wraps it
        ("ERROR: No matching distribution found for nope\nsubprocess.CalledProcessError: Command 'pip' "
         "returned non-zero exit status 1.\n", "ERROR: No matching distribution found for nope"),
        ("ValueError: https://alice:pw@example.com/r\n", "ValueError: https://alice:***@example.com/r"),
        ("Note: this is fine\nWarning: so is this\n", "Warning: so is this"),
        ("RuntimeError: " + "x" * 1000, "RuntimeError: " + "x" * 383 + "..."),
    ],
)  # fmt: skip
def test_the_line_that_says_why_a_command_failed(output: str, line: str) -> None:
    assert failure_line(output) == line


@pytest.mark.slow
def test_remote_head_hg(tmp_path: Path) -> None:
    hg = [find_hg(), "--config", "ui.username=nestegg <nestegg@example.invalid>"]
    repo = tmp_path / "hgrepo"
    env = {**os.environ, "HGPLAIN": "1"}
    subprocess.run([*hg, "init", str(repo)], check=True, env=env)
    (repo / "verdict").write_text("pass\n")
    subprocess.run([*hg, "-R", str(repo), "commit", "-A", "-q", "-m", "one"], check=True, env=env)
    node = subprocess.run([*hg, "-R", str(repo), "log", "-r", ".", "-T", "{node}"], check=True, env=env,
                          capture_output=True, text=True).stdout  # fmt: skip
    build = SourceBuild(name="demo", repo_type="hg", repo_url=str(repo))  # type: ignore[arg-type]
    assert remote_head(build, "default") == node
    with pytest.raises(BuildError, match="unknown revision 'nope'"):
        remote_head(build, "nope")


def test_no_ci_no_service(tmp_path: Path) -> None:
    mirror = Mirror(Config(nestegg_dir=tmp_path, port=0, offline=True))
    # pages made again and kept, no CI
    assert mirror.nest.services == [mirror.repository.refresher, mirror.repository.keeper]
    assert "ci" not in mirror.nest.post_routes


# what a run tests -----------------------------------------------------------------------------------

HG_ENV = {"HGPLAIN": "1", "HGUSER": "nestegg <nestegg@example.invalid>"}


def _hg(repo: Path, *args: str) -> str:
    return subprocess.run(
        [find_hg(), "--cwd", str(repo), *args], check=True, capture_output=True, text=True,
        env={**os.environ, **HG_ENV},
    ).stdout.strip()  # fmt: skip


def _repository(path: Path, kind: str, *verdicts: str) -> list[str]:
    """A git or hg repository at ``path`` of a commit per verdict: their ids, oldest first."""
    if kind == "git":
        subprocess.run([*GIT, "init", "--quiet", str(path)], check=True)
        return [_commit(path, verdict) for verdict in verdicts]
    path.mkdir(parents=True)
    _hg(path, "init")
    commits = []
    for verdict in verdicts:
        (path / "verdict").write_text(verdict + "\n")
        _hg(path, "commit", "--addremove", "--quiet", "-m", f"tests {verdict}")
        commits.append(_hg(path, "log", "-r", ".", "--template", "{node}"))
    return commits


def _recording_runner(tmp_path: Path, kind: str, repo: Path) -> tuple[Runner, SourceBuild, RunStore, Path]:
    """A runner of a build of ``repo`` whose command notes each commit it tests in ``made``."""
    made = tmp_path / "made.txt"
    script = f"open({str(made)!r}, 'a').write(open('verdict').read())"
    ci = {"command": shlex.join([sys.executable, "-c", script]), "interval": 0}
    path = _seed_config(tmp_path, repo, json.dumps(ci))
    path.write_text(path.read_text().replace("repo_type: git", f"repo_type: {kind}"))
    config = load_config(path)
    store = RunStore(config.nestegg_dir)
    return (
        Runner(config, store, index_url=lambda: "http://127.0.0.1:9/simple/"),
        config.source_builds[0],
        store,
        made,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["git", "hg"])
@pytest.mark.parametrize("watch", ["first(all())", "PREFIX", "max(all())"])
def test_a_run_tests_the_commit_its_ref_names_never_a_revset_nor_a_commit_id(
    tmp_path: Path, kind: str, watch: str
) -> None:
    """hg identify, which CI polls with, runs a revset (of a local repository) and looks a commit
    id's prefix up: the run tested what it named. The run looks its ref up as builds do."""
    commits = _repository(tmp_path / "repo", kind, "first", "second")
    ref = commits[0][:12] if watch == "PREFIX" else watch
    runner, build, store, made = _recording_runner(tmp_path, kind, tmp_path / "repo")
    if kind == "hg" and watch == "PREFIX":
        assert remote_head(build, ref) == commits[0]  # what a poll finds
    try:
        queued, _ = store.queue(build.name, ref, commits[watch == "max(all())"], "poll")
        done = runner.run(queued, build)
    finally:
        store.close()
    missing = "tag or branch" if kind == "git" else "tag, bookmark or branch"
    expected = (
        f"'{ref}' is not a branch or tag name: a name holding '()' reads as an hg revset, not a tag"
        if kind == "hg" and watch != "PREFIX"
        else f"no {missing} '{ref}' in {str(tmp_path / 'repo')!r}"
    )
    assert (done.outcome, done.message) == ("error", expected)
    assert not made.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["git", "hg"])
def test_a_ref_that_moved_since_its_poll_tests_its_head_and_says_so(tmp_path: Path, kind: str) -> None:
    """A run that waited behind another finds its ref moved: it ended as an error, which counts
    as tested, so on a busy branch CI tested almost nothing. Its head runs, recorded on the run."""
    polled, head = _repository(tmp_path / "repo", kind, "first", "second")
    runner, build, store, made = _recording_runner(tmp_path, kind, tmp_path / "repo")
    ref = "HEAD" if kind == "git" else "default"
    try:
        queued, _ = store.queue(build.name, ref, polled, "poll")
        done = runner.run(queued, build)
        tested = (store.tested(build.name, ref, head), store.tested(build.name, ref, polled))
        log = store.log(done.id)
    finally:
        store.close()
    assert (done.outcome, done.commit) == ("passed", head)
    assert made.read_text() == "second\n"
    assert tested == (True, False)  # the next poll of the head queues nothing
    assert f"# {ref!r} moved since its poll from {polled}: testing its head" in log


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["git", "hg"])
def test_ci_notes_the_url_its_clone_was_fetched_from_and_asks_the_clone_no_more(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI asked the clone's own remote on every run (a git or hg process), which git rewrote by
    the user's insteadOf rules: the clone read as another URL's, cloned afresh each run."""
    (commit,) = _repository(tmp_path / "repo", kind, "first")
    runner, build, store, made = _recording_runner(tmp_path, kind, tmp_path / "repo")
    ref = "HEAD" if kind == "git" else "default"
    try:
        first = runner.run(store.queue(build.name, ref, None, "trigger")[0], build)
        note = tmp_path / "nest" / "ci" / "repos" / "my-package.fetched-from"
        assert note.read_text() == str(tmp_path / "repo")

        def asked(*args: object) -> str | None:
            pytest.fail("the clone's remote was asked although the fetch was noted")

        monkeypatch.setattr(Git, "origin", asked)
        monkeypatch.setattr(Mercurial, "origin", asked)
        second = runner.run(store.queue(build.name, ref, None, "trigger")[0], build)
    finally:
        store.close()
    assert [(run.outcome, run.commit) for run in (first, second)] == [("passed", commit)] * 2
    assert made.read_text() == "first\nfirst\n"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["git", "hg"])
def test_a_changed_repo_url_is_cloned_afresh_for_ci(tmp_path: Path, kind: str) -> None:
    """CI kept its clone: hg pulled the new repository into it (an unrelated one aborted every
    run, a fork's commits mixed with the old), git kept the old one's commits."""
    (old,) = _repository(tmp_path / "old", kind, "old")
    (new,) = _repository(tmp_path / "new", kind, "new")
    runner, build, store, made = _recording_runner(tmp_path, kind, tmp_path / "old")
    ref = "HEAD" if kind == "git" else "default"
    try:
        first = runner.run(store.queue(build.name, ref, None, "trigger")[0], build)
        build = dataclasses.replace(build, repo_url=str(tmp_path / "new"))
        second = runner.run(store.queue(build.name, ref, None, "trigger")[0], build)
    finally:
        store.close()
    assert [(run.outcome, run.commit) for run in (first, second)] == [("passed", old), ("passed", new)]
    assert made.read_text() == "old\nnew\n"
    clone = tmp_path / "nest" / "ci" / "repos" / "my-package"
    look = (
        ["git", "-C", str(clone), "cat-file", "-e", old]
        if kind == "git"
        else [find_hg(), "-R", str(clone), "log", "-r", old]
    )
    assert subprocess.run(look, capture_output=True, check=False).returncode != 0
