"""The command line: which sub-command an argv names, and the modules each one loads."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from nestegg_core import cli
from nestegg_core.serve.server import Mirror
from nestegg_core.testing.pytest_plugin import PrivateIndex


@pytest.mark.parametrize("module", sorted(set(cli.COMMANDS.values())))
def test_the_table_names_what_each_module_adds(module: str) -> None:
    commands = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).add_commands(commands)
    assert sorted(commands.choices) == sorted(name for name, owner in cli.COMMANDS.items() if owner == module)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        ([], ""),
        (["-q"], ""),
        (["serve"], "serve"),
        (["-q", "--cache-dir", "list", "serve", "--port", "0"], "serve"),
        (["--config", "a.yml", "-vv", "list", "name"], "list"),
        (["--offline", "prune", "--max-size", "1G"], "prune"),
        (["yank", "--reason", "serve", "x", "1.0"], "yank"),
        (["yank", "x", "--version", "1.0"], "yank"),
        (["-q", "list", "--help"], "list"),
        (["--index-url", "https://example.com/simple/"], ""),
        # what the whole parser must answer, with every command: help, the version, errors
        (["--version"], None),
        (["--help"], None),
        (["--he"], None),
        (["-vh"], None),
        (["--cache-dir"], None),
        (["--bogus", "list"], None),
        (["--port", "0"], None),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert cli.command_of(argv) == command


#: the options of every command, and a value for each (None: a flag)
GLOBAL_OPTIONS = [
    ("--cache-dir", "nest"),
    ("--index-url", "https://example.com/simple/"),
    ("--offline", None),
    ("--config", "nestegg.yml"),
    ("-q", None),
    ("-v", None),
]


@pytest.mark.parametrize(("option", "value"), GLOBAL_OPTIONS, ids=[o for o, _ in GLOBAL_OPTIONS])
@pytest.mark.parametrize(
    "command", [["serve", "--port", "0"], ["prune", "--dry-run"], ["list"], ["export", "out"], ["ci"]]
)
def test_an_option_of_every_command_reads_alike_before_and_after_the_command(
    command: list[str], option: str, value: str | None
) -> None:
    given = [option] if value is None else [option, value]

    def parsed(argv: list[str]) -> dict[str, object]:
        namespace = cli.build_parser(cli.command_of(argv)).parse_args(argv)
        args = {key: value for key, value in vars(namespace).items() if key not in ("func", "verbose_after")}
        return {**args, "verbose": cli.verbosity(namespace)}  # -v after the name is counted apart

    before, after = parsed([*given, *command]), parsed([*command, *given])
    assert before == after
    assert before != parsed(command)  # the option was read, either way


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_the_help_of_a_command_shows_the_options_of_every_command(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    shown = capsys.readouterr().out
    for option, _ in GLOBAL_OPTIONS:
        assert f"{option} " in shown or f"{option}," in shown, (
            f"nestegg {command} --help does not show {option}"
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "--dry-run", "--max-size", "1G", "--cache-dir", "{nest}"],
        ["--cache-dir", "{nest}", "prune", "--dry-run", "--max-size", "1G"],
    ],
    ids=["after", "before"],
)
def test_a_global_option_configures_the_command(tmp_path: Path, argv: list[str]) -> None:
    argv = [arg.format(nest=tmp_path / "nest") for arg in argv]
    args = cli.build_parser(cli.command_of(argv)).parse_args(argv)
    assert cli.config_from(args).nestegg_dir == tmp_path / "nest"
    assert cli.main(argv) == 0


#: the modules of commands that a serving mirror does not use
NOT_SERVING = (
    "nestegg_core.cli.manage",
    "nestegg_core.cli.export",
    "nestegg_core.cli.ci",
    "nestegg_core.cli.prune",
)


@pytest.mark.parametrize(
    ("command", "loaded"),
    [
        ("serve", set()),
        ("prune", {"nestegg_core.cli.prune"}),
        ("list", {"nestegg_core.cli.manage"}),
        ("export", {"nestegg_core.cli.export"}),
        (None, set(NOT_SERVING)),
    ],
)
def test_build_parser_loads_the_module_of_its_command_only(command: str | None, loaded: set[str]) -> None:
    script = (
        "import sys; from nestegg_core import cli; "
        f"cli.build_parser({command!r}); "
        f"print(sorted({{m for m in {NOT_SERVING!r} if m in sys.modules}}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr(sorted(loaded))


@pytest.mark.parametrize(
    ("argv", "out"),
    [
        (["--help"], "\n    ci  "),
        (["--help"], "\n    serve  "),
        (["--he"], "\n    ci  "),
        (["-vh"], "\n    ci  "),
        (["list", "--help"], "usage: nestegg list"),
        (["serve", "--help"], "--port-file FILE"),
        (["--version"], "nestegg "),
    ],
)
def test_help_and_version(argv: list[str], out: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 0
    assert out in capsys.readouterr().out


def test_the_version_is_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.count("nestegg ") == 1


@pytest.mark.parametrize(
    ("argv", "variables", "nest"),
    [
        (["prune", "--dry-run", "--max-size", "1G"], {"NESTEGG_CACHE_DIR": "{tmp}/env"}, "env"),
        (["--cache-dir", "{tmp}/option", "prune", "--dry-run", "--max-size", "1G"],
         {"NESTEGG_CACHE_DIR": "{tmp}/env"}, "option"),
        (["prune", "--dry-run", "--max-size", "1G", "--config", "{tmp}/nestegg.yml"], {}, "file"),
        (["prune", "--dry-run", "--max-size", "1G", "--config", "{tmp}/nestegg.yml"],
         {"NESTEGG_CACHE_DIR": "{tmp}/env"}, "env"),
    ],
)  # fmt: skip
def test_nestegg_variables_set_every_command_over_the_file_and_under_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], variables: dict[str, str], nest: str
) -> None:
    (tmp_path / "nestegg.yml").write_text(f"nestegg:\n  nestegg_dir: {tmp_path / 'file'}\n")
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    args = cli.build_parser(cli.command_of(argv)).parse_args(argv)
    assert cli.config_from(args).nestegg_dir == tmp_path / nest
    assert cli.main(argv) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--cache-dir", "{file}"], "error: cannot use '{file}/"),
        (["prune", "--max-size", "1G", "--cache-dir", "{file}"], "error: cannot use '{file}'"),
        (["export", "{tmp}/out", "--cache-dir", "{file}"], "error: cannot use '{file}'"),
        (["export", "{file}", "--cache-dir", "{tmp}/nest"], "error: cannot use '{file}/"),
        (["serve", "--port", "0", "--port-file", "{tmp}"], "error: --port-file: '{tmp}' is a directory"),
        (["serve", "--port", "0", "--port-file", "{file}/port"], "error: --port-file: '{file}' is not a dir"),
        (["serve", "--cache-dir", ""], "error: --cache-dir: expected a directory, got ''"),
    ],
)
def test_a_path_that_cannot_be_used_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "a-file").write_text("")
    names = {"tmp": tmp_path, "file": tmp_path / "a-file"}
    argv = [arg.format(**names) for arg in argv]
    assert cli.main([*argv, "--index-url", "http://127.0.0.1:9/simple/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**names)), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "--threads", "512", "--port", "0"], {"threads": 512, "port": 0}),
        (["serve", "--public-url", "https://example.com/pypi/"], {"public_url": "https://example.com/pypi"}),
        (["--offline", "serve"], {"offline": True}),
    ],
)
def test_serve_options_set_their_settings(argv: list[str], expected: dict[str, object]) -> None:
    config = cli.config_from(cli.build_parser("serve").parse_args(argv))
    assert {key: getattr(config, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        ([], 0),
        (["-v"], 1),
        (["-vv"], 2),
        (["-v", "serve", "-v"], 2),
        (["serve", "-v"], 1),
        (["list", "-vv"], 2),
    ],
)
def test_every_v_counts_wherever_it_is(argv: list[str], count: int) -> None:
    args = cli.build_parser(cli.command_of(argv) or "serve").parse_args(argv)
    assert cli.verbosity(args) == count


def test_a_bad_nestegg_variable_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NESTEGG_INDEX_URL", "http://example.com:99999/simple/")
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "$NESTEGG_INDEX_URL: 'http://example.com:99999/simple/' is not" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-command"], "invalid choice: 'no-such-command' (choose from 'serve', 'build',"),
        (["--cache-dir"], "argument --cache-dir: expected one argument"),
        (["list", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--bogus", "list"], "unrecognized arguments: --bogus"),
        (["--port", "0"], "invalid choice: '0' (choose from 'serve', 'build',"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_serving_process_loads_no_other_command(tmp_path: Path, upstream: PrivateIndex) -> None:
    """The real ``serve`` command, its imports listed by ``-X importtime``, after a cold page."""
    upstream.add("demo", "1.0")
    (tmp_path / "none.yml").write_text("nestegg: {}\n")
    port_file = tmp_path / "port"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NESTEGG_", "PYTHON"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    command = [
        sys.executable, "-X", "importtime", "-m", "nestegg_core", "--config", str(tmp_path / "none.yml"),
        "--cache-dir", str(tmp_path / "nest"), "--index-url", upstream.index_url,
        "serve", "--port", "0", "--port-file", str(port_file),
    ]  # fmt: skip
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen(command, stderr=log, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert port_file.exists(), (tmp_path / "log").read_text()
        with requests.Session() as session:
            session.trust_env = False
            page = session.get(f"http://127.0.0.1:{int(port_file.read_text())}/simple/demo/", timeout=30)
        assert page.status_code == 200
        assert "demo-1.0" in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0  # a server stopped by SIGTERM stops cleanly (waitress ends its loop)
    imported = set(re.findall(r"^import time:.*\|\s*([\w.]+)$", (tmp_path / "log").read_text(), re.MULTILINE))
    assert {
        "nestegg_core.serve.server",
        "nestegg_core.index.upstream",
    } <= imported  # the log lists the imports
    assert imported.isdisjoint(
        {*NOT_SERVING, "nestegg_core.builds.sources", "nestegg_core.builds.ci", "sqlite3"}
    )
    # nor requests' character detector (cli/_requests.py; an import refused is listed, its
    # submodules are not), nor filelock where flock serves
    unwanted = ("charset_normalizer.", "chardet.", *(() if os.name == "nt" else ("filelock",)))
    assert not [name for name in imported if name.startswith(unwanted)]
    assert "requests.adapters" in imported


_WITHOUT_DETECTOR = """
import sys
from nestegg_core.cli._requests import import_without_detector
import_without_detector()
import requests
assert "charset_normalizer" not in sys.modules and "chardet" not in sys.modules, "a detector was loaded"
import warnings, urllib3  # the filters urllib3 adds as it is imported are still there
assert any(f[2] is urllib3.exceptions.DependencyWarning for f in warnings.filters), warnings.filters
response = requests.Response()
response._content = "caf\u00e9".encode()
print(response.apparent_encoding, response.text)
try:
    import charset_normalizer  # this process may still import it
except ImportError:
    pass
import_without_detector()  # imported already: no change
"""


def test_requests_without_a_character_detector() -> None:
    """The fence of cli/_requests.py: requests takes a process without charset_normalizer or chardet
    (warnings as errors: the one it gives is silenced), and decodes a body naming no charset as UTF-8.
    If this fails, requests no longer accepts it: drop ``import_without_detector``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _WITHOUT_DETECTOR],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["utf-8", "caf\u00e9"]


def test_serve_logs_an_unreachable_upstream_once_per_outage(tmp_path: Path, upstream: PrivateIndex) -> None:
    """The real ``serve`` command behind an upstream gone: one line when it goes, not one per page."""
    for name in ("one", "two", "three"):
        upstream.add(name, "1.0")
    (tmp_path / "nestegg.yml").write_text("nestegg:\n  ttl: 0\n")  # every page asks the upstream
    port_file = tmp_path / "port"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NESTEGG_", "PYTHON"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    command = [
        sys.executable, "-m", "nestegg_core", "--config", str(tmp_path / "nestegg.yml"),
        "--cache-dir", str(tmp_path / "nest"), "--index-url", upstream.index_url,
        "serve", "--port", "0", "--port-file", str(port_file),
    ]  # fmt: skip
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen(command, stderr=log, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert port_file.exists(), (tmp_path / "log").read_text()
        base = f"http://127.0.0.1:{int(port_file.read_text())}/simple/"
        with requests.Session() as session:
            session.trust_env = False
            for name in ("one", "two", "three"):
                page = session.get(
                    f"{base}{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=30
                )
                assert page.status_code == 200
                wheel = next(f["url"] for f in page.json()["files"] if f["filename"].endswith(".whl"))
                assert session.get(requests.compat.urljoin(page.url, wheel), timeout=30).status_code == 200
            upstream.stop()  # refused from now on
            for _ in range(3):
                for name in ("one", "two", "three"):
                    assert session.get(f"{base}{name}/", timeout=30).status_code == 200  # stale
                assert session.get(f"{base}never-cached/", timeout=30).status_code == 410
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    log_text = (tmp_path / "log").read_text()
    assert log_text.count("is unreachable (connection refused): serving cached pages") == 1, log_text
    # and each page, which lists its cached file alone, says so once
    assert log_text.count("with its cached files only (1) while upstream") == 3, log_text


def test_serve_leaves_what_it_started_with_out_of_full_collections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen: list[int] = []

    def serve_forever(mirror: Mirror) -> None:
        frozen.append(gc.get_freeze_count())
        mirror.stop()

    monkeypatch.setattr(Mirror, "serve_forever", serve_forever)
    gc.unfreeze()
    try:
        assert cli.main(["serve", "--port", "0", "--cache-dir", str(tmp_path / "nest")]) == 0
    finally:
        gc.unfreeze()
    # the modules and the app at least: tens of thousands of objects
    assert len(frozen) == 1
    assert frozen[0] > 10_000, frozen


FORGED = "2024-01-01 00:00:00,000 INFO nestegg_core.access: forged line"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (f"pkg\n{FORGED}", "pkg\\x0a2024-01-01"),
        (f"pkg\r{FORGED}", "pkg\\x0d2024-01-01"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("a\x00b\x7fc\x85d", "a\\x00b\\x7fc\\x85d"),
        ("line\u2028sep\u202eevil", "line\\u2028sep\\u202eevil"),
        ("café-1.0.tar.gz", "café-1.0.tar.gz"),  # printable text is left alone
    ],
)
def test_log_lines_escape_control_characters(
    value: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging  # noqa: PLC0415 - only this test needs it

    undo = cli._configure_logging(0, False)
    try:
        logging.getLogger("nestegg_core.test").warning("refused %r and %s", "x", value)
        try:
            raise ValueError(f"bad\x1b[0m {value}")
        except ValueError:
            logging.getLogger("nestegg_core.test").exception("failed")
    finally:
        undo()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert f"refused 'x' and {shown}" in lines[0], lines[0]
    # only the records' own first lines start at the margin: two records, two such lines
    assert len([line for line in lines if not line.startswith(" ")]) == 2, err
    assert not [line for line in lines if line.startswith(FORGED[:10]) and "forged" in line]
    assert not {"\x1b", "\r", "\u2028"} & set(err)
    assert "  Traceback (most recent call last):" in lines  # a traceback keeps its lines


@pytest.mark.parametrize("command", ["ci", "export", "list", "remove", "prune"])
def test_a_commands_help_says_what_it_does(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    paragraphs = capsys.readouterr().out.split("\n\n")
    assert paragraphs[0].startswith(f"usage: nestegg {command}")
    assert not paragraphs[1].startswith(("positional arguments", "options")), paragraphs[1]


def _sigterm(_args: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)  # the handler raises in this thread first


def _ctrl_c(_args: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(("stop", "code"), [(_sigterm, 143), (_ctrl_c, 130)])
def test_a_stopped_command_returns_128_and_its_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: Callable[[object], None], code: int
) -> None:
    monkeypatch.setattr(cli, "config_from", stop)
    before, started = signal.getsignal(signal.SIGTERM), time.monotonic()
    assert cli.main(["--config", str(tmp_path / "none.yml"), "list"]) == code
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is before  # the handler before it is back
