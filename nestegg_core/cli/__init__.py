"""The ``nestegg`` command (also ``python -m nestegg_core``).

Each concern registers its sub-commands in :data:`COMMANDS`: the command's name and the module
whose ``add_commands(subparsers)`` adds it; a sub-command parser sets ``func`` (``(args) -> int``)
as default. Only the module of the command given is imported: ``serve``, the command that must
start fast and stay small, loads none but upkeep, which the server itself uses (``ci`` alone
would bring builds, git and sqlite).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from nestegg_core._version import __version__
from nestegg_core.config.config import Config, load_config
from nestegg_core.errors import NesteggError
from nestegg_core.serve.server import Mirror, describe
from nestegg_core.storage.store import write_atomic

logger = logging.getLogger(__name__)

#: sub-commands by name, and the module that adds each (``serve`` is here)
COMMANDS: dict[str, str] = {
    "build": "nestegg_core.cli.manage",
    "list": "nestegg_core.cli.manage",
    "remove": "nestegg_core.cli.manage",
    "yank": "nestegg_core.cli.manage",
    "passwd": "nestegg_core.cli.manage",
    "prune": "nestegg_core.storage.usage",
    "export": "nestegg_core.cli.export",
    "ci": "nestegg_core.builds.ci",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given a command's name, of that one alone."""
    parser = _global_parser()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the mirror (the default command)")
    _add_serve_options(serve)
    serve.set_defaults(func=_serve)
    if command == "serve":
        return parser
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command]).add_commands(commands)
    else:  # help, or an unknown command to report with the list of known ones
        for module in dict.fromkeys(COMMANDS.values()):
            importlib.import_module(module).add_commands(commands)
    return parser


def _global_parser(
    kind: type[argparse.ArgumentParser] = argparse.ArgumentParser, **options: Any
) -> argparse.ArgumentParser:
    parser = kind(
        prog="nestegg", description="On-demand, lightweight, package-building PyPI mirror.", **options
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (twice: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="nestegg.yml to read (default: $NESTEGG_CONFIG, ./nestegg.yml, ~/nestegg.yml, "
        "then the user config dir)",
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="the nest: cache and private store (nestegg_dir)")
    parser.add_argument(
        "--index-url", metavar="URL", help="upstream Simple API (default: the index pip uses)"
    )
    parser.add_argument("--offline", action="store_true", default=None, help="never ask the upstream")
    return parser


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port to listen on (default 7654; 0 picks a free one)")
    serve.add_argument("--threads", type=int, help="worker threads (default 16)")
    serve.add_argument(
        "--compatible-only",
        action="store_true",
        default=None,
        help="list to pip only the files that fit its interpreter and platform (compatible_only)",
    )
    serve.add_argument(
        "--port-file",
        metavar="FILE",
        help="once listening, write the port to FILE (for scripts that start it with --port 0)",
    )


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
    """The config the global options (and ``serve``'s) name."""
    return load_config(
        args.config,
        nestegg_dir=args.cache_dir,
        index_url=args.index_url,
        offline=args.offline,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        threads=getattr(args, "threads", None),
        compatible_only=getattr(args, "compatible_only", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for errors a user can fix)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_of(argv)
    parser = build_parser(command or ("serve" if command == "" else None))
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*argv, "serve"])
    undo = _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args))
    except NesteggError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        undo()


def _serve(args: argparse.Namespace) -> int:
    _tune_malloc()
    mirror = Mirror(config_from(args)).bind()
    logger.info("%s", describe(mirror))
    if args.port_file:
        # atomically: a reader polling for the file never sees it empty
        write_atomic(Path(args.port_file).absolute(), f"{mirror.port}\n".encode())
    mirror.serve_forever()
    logger.info("nestegg stopped")
    return 0


def _tune_malloc() -> None:
    """Set glibc's malloc for a server of 16 threads that moves pages of megabytes.

    By default each thread may get a heap of its own, each keeping what was freed in it, so the
    text and model of every large page parsed stay resident somewhere: two heaps take the
    benchmark's pip workload from 131 to 78 MB at its peak. Blocks up to 32 MiB come from those
    heaps rather than fresh mappings: a lower mmap threshold (256 KiB) made 16 concurrent
    downloads of one wheel take 1.7 s instead of 0.7 s, and 1 MiB raised the p99 of warm pages
    at 8 clients from 11-13 to 17-21 ms, when waitress still read 4 MiB at a time. Free memory
    above 1 MiB at the top of a heap goes back to the system (glibc's default: 128 KiB; ours
    had kept 32 MiB): the benchmark's peak fell from 74 to 70 MB with no change in the p99.
    Done by the command, not the library: it is the whole process's setting.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl has no arenas to tune)
    mallopt(_M_ARENA_MAX, 2)
    mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)


# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


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
