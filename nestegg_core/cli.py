"""The ``nestegg`` command (also ``python -m nestegg_core``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._version import __version__
from .config import Config, load_config
from .errors import NesteggError
from .server import Mirror, describe

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nestegg", description="On-demand, lightweight, package-building PyPI mirror."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (twice: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--config", metavar="FILE",
        help="nestegg.yml to read (default: $NESTEGG_CONFIG, ./nestegg.yml, ~/nestegg.yml, "
        "then the user config dir)",
    )  # fmt: skip
    parser.add_argument("--cache-dir", metavar="DIR", help="the nest: cache and private store (nestegg_dir)")
    parser.add_argument(
        "--index-url", metavar="URL", help="upstream Simple API (default: the index pip uses)"
    )
    parser.add_argument("--offline", action="store_true", default=None, help="never ask the upstream")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the mirror (the default command)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port to listen on (default 7654; 0 picks a free one)")
    serve.add_argument("--threads", type=int, help="worker threads (default 16)")
    return parser


def config_from(args: argparse.Namespace) -> Config:
    return load_config(
        args.config,
        nestegg_dir=args.cache_dir,
        index_url=args.index_url,
        offline=args.offline,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        threads=getattr(args, "threads", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        if args.command in (None, "serve"):
            if args.command is None:
                args = parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "serve"])
            return serve(config_from(args))
        parser.error(f"unknown command {args.command!r}")  # argparse exits
    except NesteggError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def serve(config: Config) -> int:
    mirror = Mirror(config).bind()
    logger.info("%s", describe(mirror))
    mirror.serve_forever()
    logger.info("nestegg stopped")
    return 0


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # waitress's own "Serving on" line repeats ours
    logging.getLogger("waitress").setLevel(logging.WARNING if not verbose else level)
