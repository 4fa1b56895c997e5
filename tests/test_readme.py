"""The README's examples run as written: each ``nestegg.yml`` loads, each command line parses, and
the two commands are the ones CI runs.

The examples are the README's literal blocks (after ``::`` or a ``code-block`` directive) and, for
commands, its inline literals too. Nothing is served: a command line is parsed by the CLI's own
parser, as ``nestegg_core.cli.main`` parses it, so an option or command that does not exist fails
here, naming the README line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from nestegg_core.cli import build_parser, command_of
from nestegg_core.config.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"

#: the README's first command (install and serve) and second (install for tests, run them)
SERVE_COMMAND = "python -m pip install . && python -m nestegg_core serve"
TEST_COMMAND = 'python -m pip install -e ".[test]" && python -m pytest'

#: hosts an example may name: the reserved example domains and this machine
ALLOWED_HOSTS = re.compile(r"(?:.+\.)?example\.(?:com|invalid)|127\.0\.0\.1|localhost", re.IGNORECASE)
#: a command of nestegg: ``nestegg`` or ``python -m nestegg_core``, then anything but a setting's
#: ``=`` or ``:`` (``nestegg = true`` in tox.ini is no command)
_COMMAND = re.compile(r"^(?:nestegg|python -m nestegg_core)(?:\s+(?![=:])|$)")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'`<>]*", re.IGNORECASE)
_SCP_HOST = re.compile(r"\b[\w.-]+@([\w.-]+):")  # git@host:path


@dataclass(frozen=True)
class Block:
    """A literal block of the README: its first line's number and its text, dedented."""

    line: int
    text: str


def literal_blocks(text: str) -> list[Block]:
    """The literal blocks of reStructuredText ``text``: the indented lines after a paragraph that
    ends with ``::`` or after a ``.. code-block::`` directive (its options skipped)."""
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        line = lines[index]
        opens = line.rstrip().endswith("::") and not line.lstrip().startswith(".. ")
        directive = re.match(r"^\s*\.\. (?:code-block|code|sourcecode)::", line)
        index += 1
        if not (opens or directive):
            continue
        base = len(line) - len(line.lstrip())
        while directive and index < len(lines) and re.match(r"^\s+:\w[\w-]*:", lines[index]):
            index += 1  # the directive's options
        body: list[tuple[int, str]] = []
        while index < len(lines) and (not lines[index].strip() or _indent(lines[index]) > base):
            body.append((index + 1, lines[index]))
            index += 1
        while body and not body[-1][1].strip():
            body.pop()
        while body and not body[0][1].strip():
            body.pop(0)
        if body:
            margin = min(_indent(text) for _, text in body if text.strip())
            blocks.append(Block(body[0][0], "\n".join(text[margin:] for _, text in body)))
    return blocks


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def config_examples(blocks: list[Block]) -> list[Block]:
    """The blocks that are a ``nestegg.yml``: their top key is ``nestegg:``."""
    return [block for block in blocks if re.search(r"^nestegg:\s*(#.*)?$", block.text, re.MULTILINE)]


def command_lines(text: str, blocks: list[Block]) -> list[tuple[int, str]]:
    """Each nestegg command of the README with its line: from literal blocks (continued lines
    joined, ``&&`` chains split) and from inline literals."""
    found = []
    for block in blocks:
        pending: tuple[int, str] | None = None  # a line continued with a backslash, and its number
        for offset, raw in enumerate(block.text.splitlines()):
            number, line = (
                (pending[0], f"{pending[1]} {raw.strip()}") if pending else (block.line + offset, raw)
            )
            pending = (number, line[:-1]) if line.endswith("\\") else None
            if pending is None:
                found += [(number, part.strip()) for part in line.split("&&") if _COMMAND.match(part.strip())]
    for number, line in enumerate(text.splitlines(), 1):
        for inline in re.findall(r"``([^`]+)``", line):
            if _COMMAND.match(inline):
                found.append((number, inline))
    return found


def parse_command(command: str) -> argparse.Namespace:
    """``command`` parsed as ``nestegg_core.cli.main`` parses it; pytest.fail with argparse's
    message if it would not run."""
    words = shlex.split(command, comments=True)
    argv = words[3:] if words[:3] == ["python", "-m", "nestegg_core"] else words[1:]
    chosen = command_of(argv)
    parser = build_parser(chosen or ("serve" if chosen == "" else None))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{command!r} does not parse (exit {exc.code}); argparse said why above")
    if args.command is None:  # as main(): no command is ``serve``
        args = parser.parse_args([*argv, "serve"])
    # argparse takes an abbreviation (--generat): the README spells each option out
    known = options_of(args.command)
    for word in argv:
        option = word.partition("=")[0]
        if option.startswith("-") and option not in known:
            pytest.fail(f"{command!r}: {option!r} is no option of 'nestegg {args.command}' as spelled")
    return args


def options_of(command: str) -> set[str]:
    """The option strings of ``nestegg`` and of its ``command``, read from their help."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser(command).parse_args([command, "--help"])
    text = build_parser(command).format_help() + out.getvalue()
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))


README_TEXT = README.read_text(encoding="utf-8")
BLOCKS = literal_blocks(README_TEXT)
CONFIGS = config_examples(BLOCKS)
COMMANDS = command_lines(README_TEXT, BLOCKS)


# the extraction itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Run::\n\n    nestegg serve\n\nafter\n", [Block(3, "nestegg serve")]),
        ("Run it: ::\n\n    a\n      b\n\n    c\nd\n", [Block(3, "a\n  b\n\nc")]),
        (
            ".. code-block:: yaml\n   :caption: x\n\n   nestegg:\n     port: 0\n",
            [Block(4, "nestegg:\n  port: 0")],
        ),
        ("* item::\n\n    code\n\n* next\n", [Block(3, "code")]),
        (".. contents::\n   :local:\n\nText\n", []),
        ("No block: a colon at the end:\n\n    quoted\n", []),
    ],
    ids=["paragraph", "expanded-form", "code-block", "in-a-list", "directive", "one-colon"],
)
def test_literal_blocks_are_found(text: str, expected: list[Block]) -> None:
    assert literal_blocks(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::\n\n    nestegg serve --port 0  # a comment\n", ["nestegg serve --port 0  # a comment"]),
        (
            "::\n\n    python -m pip install . && python -m nestegg_core serve\n",
            ["python -m nestegg_core serve"],
        ),
        ("::\n\n    nestegg export d \\\n        --project a\n", ["nestegg export d  --project a"]),
        ("::\n\n    [tox]\n    nestegg = true\n", []),
        ("::\n\n    nestegg:\n      port: 0\n", []),
        ("Run ``nestegg prune --dry-run`` or set ``nestegg_dir``.\n", ["nestegg prune --dry-run"]),
        ("Run ``nestegg`` alone.\n", ["nestegg"]),
    ],
    ids=["comment", "chain", "continued", "tox-ini", "yaml", "inline", "bare"],
)
def test_command_lines_are_found(text: str, expected: list[str]) -> None:
    assert [command for _, command in command_lines(text, literal_blocks(text))] == expected


def test_the_readme_has_examples_of_each_kind() -> None:
    # an extraction that finds nothing would check nothing
    assert len(CONFIGS) >= 5, [block.line for block in CONFIGS]
    assert len(COMMANDS) >= 20, COMMANDS


# (a) every nestegg.yml example loads --------------------------------------------------------------


@pytest.mark.parametrize("block", CONFIGS, ids=[f"README.rst:{block.line}" for block in CONFIGS])
def test_a_config_example_loads(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(block.text + "\n", encoding="utf-8")
    config = load_config(path, environ={})
    assert isinstance(config, Config)


# (b) every command line parses --------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [command for _, command in COMMANDS], ids=[f"README.rst:{line}" for line, _ in COMMANDS]
)
def test_a_command_example_parses(command: str) -> None:
    args = parse_command(command)
    assert callable(args.func), f"{command!r} names no command"


@pytest.mark.parametrize(
    "command",
    [
        "nestegg serve --no-such-option",
        "nestegg frobnicate",
        "nestegg prune --max-size",
        "nestegg passwd alice --generat",
        "nestegg --offlin serve",
    ],
    ids=["unknown", "no-command", "no-value", "abbreviated", "abbreviated-global"],
)
def test_a_wrong_command_fails_to_parse(command: str) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"does not parse|no option"):
        parse_command(command)


# (c) the two commands, and what CI runs ----------------------------------------------------------


@pytest.mark.parametrize("command", [SERVE_COMMAND, TEST_COMMAND], ids=["serve", "test"])
def test_the_readme_gives_the_command(command: str) -> None:
    assert any(line == command for block in BLOCKS for line in block.text.splitlines()), (
        f"README.rst has no literal block line {command!r}"
    )


def test_ci_runs_the_readmes_test_command_and_nothing_before_it_changes_pip() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert TEST_COMMAND in commands, f".ci/run does not run {TEST_COMMAND!r}"
    assert commands[-1] == TEST_COMMAND, f".ci/run runs {commands[-1]!r} after the test command"
    upgrades = [line for line in commands if re.search(r"pip install\b.*(-U|--upgrade)\b.*\bpip\b", line)]
    assert not upgrades, f".ci/run upgrades pip before the tests, as no new user does: {upgrades}"


# the hosts examples name ------------------------------------------------------------------------


def _hosts(text: str) -> list[str]:
    hosts = [urlsplit(url).hostname or "" for url in _URL.findall(text)]
    hosts += _SCP_HOST.findall(text)
    return [host for host in hosts if host]  # file:/// names none


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.rst:{block.line}" for block in BLOCKS])
def test_an_example_names_only_example_hosts(block: Block) -> None:
    others = [host for host in _hosts(block.text) if not ALLOWED_HOSTS.fullmatch(host)]
    assert not others, f"README.rst:{block.line} names hosts other than example.com's: {others}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("index-url: https://example.com/simple", []),
        ("repo_url: git@example.com:me/x.git", []),
        ("http://alice:PASSWORD@nestegg.example.com:7654/simple/", []),
        ("pip install --index-url file:///media/usb/index/simple/ x", []),
        ("curl http://127.0.0.1:7654/ci/trigger/x", []),
        ("index-url: https://index.test.org/simple", ["index.test.org"]),
        ("repo_url: git@code.test.org:me/x.git", ["code.test.org"]),
        ("http://example.com.test.org/", ["example.com.test.org"]),
    ],
    ids=["https", "scp", "credentials", "file", "loopback", "other-https", "other-scp", "lookalike"],
)
def test_other_hosts_are_found(text: str, expected: list[str]) -> None:
    assert [host for host in _hosts(text) if not ALLOWED_HOSTS.fullmatch(host)] == expected
