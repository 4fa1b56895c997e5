"""The ``nestegg`` command (also ``python -m nestegg_core``).

Each concern registers its sub-commands in :data:`COMMANDS`: the command's name and the module
whose ``add_commands(subparsers)`` adds it; a sub-command parser sets ``func`` as default: called
with the parsed arguments and the config they name, it returns the exit code. Only the module
of the command given is imported: ``serve``, the command that must start fast and stay small,
loads no other command's module (``ci`` alone would bring builds, git and sqlite).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from nestegg_core._version import __version__
from nestegg_core.config.config import Config, environ_settings, load_config
from nestegg_core.config.settings import add_options, option_values
from nestegg_core.errors import NesteggError
from nestegg_core.signals import end_process, exit_code, stop_on_signals

from ._requests import import_without_detector

logger = logging.getLogger(__name__)

#: sub-commands by name, and the module that adds each
COMMANDS: dict[str, str] = {
    "serve": "nestegg_core.cli.serve",
    "build": "nestegg_core.cli.manage",
    "list": "nestegg_core.cli.manage",
    "remove": "nestegg_core.cli.manage",
    "yank": "nestegg_core.cli.manage",
    "passwd": "nestegg_core.cli.manage",
    "prune": "nestegg_core.cli.prune",
    "export": "nestegg_core.cli.export",
    "ci": "nestegg_core.cli.ci",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given a command's name, of that one alone."""
    parser = _global_parser()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command]).add_commands(commands)
    else:  # help, or an unknown command to report with the list of known ones
        for module in dict.fromkeys(COMMANDS.values()):
            importlib.import_module(module).add_commands(commands)
    # the options of every command are taken after the command's name too, and its --help shows them
    for sub in {id(sub): sub for sub in commands.choices.values()}.values():
        _add_global_options(
            sub.add_argument_group("options of every command (also before it)"), suppress=True
        )
    return parser


def _global_parser(
    kind: type[argparse.ArgumentParser] = argparse.ArgumentParser, **options: Any
) -> argparse.ArgumentParser:
    parser = kind(
        prog="nestegg", description="On-demand, lightweight, package-building PyPI mirror.", **options
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, suppress=False)
    return parser


def _add_global_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, suppress: bool) -> None:
    """-v, -q, --config and the settings' global options (--cache-dir, --index-url, --offline).

    A sub-command's copy (``suppress``) sets only what is given after the command's name, so that
    ``nestegg --cache-dir D serve`` and ``nestegg serve --cache-dir D`` read alike.
    """
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    # counted apart after the command's name, then added (argparse would keep only that count)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest="verbose_after" if suppress else "verbose",
        **(unset or {"default": 0}),
        help="log more (twice: debug)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", **unset, help="log warnings and errors only")
    parser.add_argument(
        "--config",
        metavar="FILE",
        **unset,
        help="nestegg.yml to read (default: $NESTEGG_CONFIG, ./nestegg.yml, ~/nestegg.yml, "
        "then the user config dir)",
    )
    add_options(parser, Config, None, suppress=suppress)


def command_of(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, read past the global options; ``""`` when it names none.

    None when the global options are wrong, or ask for help or the version: the whole parser then
    says so, with every command.
    """
    probe = _global_parser(_Probe, add_help=False)
    # as a sub-command's parser takes them: the command, then all after it (its own --version too)
    probe.add_argument("command", nargs=argparse.REMAINDER)
    try:
        args = probe.parse_args(argv)
    except _NotParsed:
        return None
    return args.command[0] if args.command else ""


class _NotParsed(Exception):
    pass


class _Probe(argparse.ArgumentParser):
    """A parser that neither prints nor exits: it raises :class:`_NotParsed` instead."""

    def error(self, message: str) -> NoReturn:
        raise _NotParsed(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _NotParsed(status, message)

    def _print_message(self, message: str, file: Any = None) -> None:
        pass


def config_from(args: argparse.Namespace) -> Config:
    """The config the file, the ``NESTEGG_*`` variables and the options of ``args`` name (those of
    settings, each command's), each over the one before."""
    given = {key: value for key, value in option_values(args, Config).items() if value is not None}
    return load_config(args.config, **{**environ_settings(os.environ), **given})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for errors a user can fix, 130 when stopped
    by Ctrl-C and 143 by SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_of(argv)
    if command in ("serve", ""):  # the server's process: the leaner requests, before its import
        import_without_detector()
    parser = build_parser(command or ("serve" if command == "" else None))
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*argv, "serve"])
    undo = _configure_logging(verbosity(args), args.quiet)
    try:
        with stop_on_signals():  # killed, a command ends as on Ctrl-C: what it started stopped
            return int(args.func(args, config_from(args)))
    except NesteggError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave that cannot be used (a file for a folder...)
        logger.debug("%s", exc, exc_info=True)
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # 130 for Ctrl-C, 143 for SIGTERM (a service manager's stop)
        return exit_code(exc)
    finally:
        undo()


def run() -> NoReturn:
    """The ``nestegg`` program: :func:`main`, ended as its exit code says (a SIGTERM by SIGTERM)."""
    end_process(main())


def verbosity(args: argparse.Namespace) -> int:
    """How many ``-v`` were given, before the command's name and after it."""
    return int(args.verbose) + int(getattr(args, "verbose_after", 0))


def os_error_message(exc: OSError) -> str:
    """What an OSError says, on one line, with the path (or paths) it names."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    if exc.filename2 is not None:
        return f"cannot use {str(exc.filename)!r} and {str(exc.filename2)!r}: {reason}"
    return f"cannot use {str(exc.filename)!r}: {reason}"


class LogFormatter(logging.Formatter):
    """Log lines with control characters escaped (``\\x0a``, ``\\x1b``): messages carry project
    names, filenames, paths and reasons that clients and upstreams chose, which must not start a
    line of their own nor drive the terminal. A traceback keeps its line breaks, each line indented:
    only the first line of a record starts at the margin."""

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, escaping; a traceback another handler formatted first (and
        # cached on the record) is escaped too
        record.message = _printable(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info:
            text += "\n" + _printable(self.formatException(record.exc_info), keep="\n")
        elif record.exc_text:
            text += "\n" + _printable(record.exc_text, keep="\n")
        if record.stack_info:
            text += "\n" + _printable(self.formatStack(record.stack_info), keep="\n")
        return text.rstrip("\n").replace("\n", "\n  ")


def _printable(text: str, keep: str = "") -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _configure_logging(verbose: int, quiet: bool) -> Callable[[], None]:
    """Log to stderr for this command; returns what puts logging back as it was.

    Undone at the end so that ``main()`` called in-process (tests, other tools) leaves no handler
    on a stream that may be closed by then, and removes none of the caller's.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    root, waitress = logging.getLogger(), logging.getLogger("waitress")
    previous = root.level, waitress.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # waitress's own "Serving on" line repeats ours
    waitress.setLevel(logging.WARNING if not verbose else level)

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(previous[0])
        waitress.setLevel(previous[1])

    return undo
