"""``nestegg prune``: remove the least recently used cached files, by age or down to a size."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from nestegg_core.config.config import Config
from nestegg_core.config.sizes import format_size, parse_size
from nestegg_core.errors import NesteggError
from nestegg_core.storage.usage import prune


def add_commands(commands: Any) -> None:
    """``nestegg prune``."""
    prune_parser = commands.add_parser(
        "prune",
        help="remove least recently used cached files (private files are never removed)",
        description="Remove the cached files nobody used for DAYS days, or the least recently used down "
        "to SIZE; and what crashes left (partial downloads, uploads cut short). Uploaded and built files "
        "are never removed; a pruned file is downloaded again when asked for.",
    )
    prune_parser.add_argument(
        "--max-size",
        metavar="SIZE",
        help="shrink the cache to SIZE (like 500M or 20G; default max_cache_size)",
    )
    prune_parser.add_argument(
        "--older-than", metavar="DAYS", type=float, help="remove files not used for DAYS days"
    )
    prune_parser.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    prune_parser.set_defaults(func=_prune_command)


def _prune_command(args: argparse.Namespace, config: Config) -> int:
    max_size = config.max_cache_size
    if args.max_size is not None:
        try:
            max_size = parse_size(args.max_size)
        except ValueError:  # its message names the type too, which is always text here
            raise NesteggError(
                f"--max-size: expected a size like 500M or 20G (K, M, G, T), got {args.max_size!r}"
            ) from None
    if args.older_than is not None and not 0 <= args.older_than < math.inf:  # nan, inf too
        raise NesteggError(f"--older-than: expected a number of days >= 0, got {args.older_than!r}")
    if max_size is None and args.older_than is None:
        raise NesteggError(
            "say what to prune: --max-size SIZE, --older-than DAYS, or max_cache_size in the config"
        )
    older_than = None if args.older_than is None else args.older_than * 86400
    result = prune(config.nestegg_dir, max_size=max_size, older_than=older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for cached in result.removed if args.dry_run else ():
        print(f"{cached.name}/{cached.filename} ({format_size(cached.size)}, last used {_ago(cached.used)})")
    print(f"{verb} {len(result.removed)} files ({format_size(result.freed)}); "
          f"kept {result.kept} files ({format_size(result.size)})")  # fmt: skip
    return 0


def _ago(when: float) -> str:
    days = (time.time() - when) / 86400
    return f"{days:.1f} days ago" if days >= 1 else f"{days * 24:.1f} hours ago"
