"""``nestegg serve``: run the mirror in the foreground (the default command)."""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import sys
from pathlib import Path
from typing import Any

from nestegg_core.config.config import Config
from nestegg_core.config.settings import add_options
from nestegg_core.errors import ConfigError
from nestegg_core.serve.server import Mirror, describe
from nestegg_core.storage.fs import write_atomic

logger = logging.getLogger(__name__)


def add_commands(commands: Any) -> None:
    """``nestegg serve``."""
    serve = commands.add_parser("serve", help="run the mirror (the default command)")
    _add_serve_options(serve)
    serve.set_defaults(func=_serve)


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    add_options(serve, Config, "serve")  # --host, --port, --threads, --compatible-only
    serve.add_argument(
        "--port-file",
        metavar="FILE",
        help="once listening, write the port to FILE (for scripts that start it with --port 0)",
    )


def _serve(args: argparse.Namespace, config: Config) -> int:
    _tune_malloc()
    port_file = _port_file(args.port_file)
    mirror = Mirror(config).bind()
    logger.info("%s", describe(mirror))
    if port_file is not None:
        try:  # atomically: a reader polling for the file never sees it empty
            write_atomic(port_file, f"{mirror.port}\n".encode())
        except OSError as exc:
            mirror.stop()
            reason = exc.strerror or exc
            raise ConfigError(f"--port-file: cannot write {str(port_file)!r}: {reason}") from None
    # what the process holds once started (modules, the app: 32,000 objects) is left out of
    # the collector's full passes: a cold run of 45 projects had two, 14-18 ms each, in requests
    gc.freeze()
    mirror.serve_forever()
    logger.info("nestegg stopped")
    return 0


def _port_file(given: str | None) -> Path | None:
    """The file ``--port-file`` names, checked before the server binds (it is written after)."""
    if not given:
        return None
    path = Path(given).expanduser().absolute()
    if path.is_dir():
        raise ConfigError(f"--port-file: {str(path)!r} is a directory; name a file in it")
    if not path.parent.is_dir():
        raise ConfigError(f"--port-file: {str(path.parent)!r} is not a directory")
    return path


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
# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
