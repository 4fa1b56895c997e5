"""Warm ``pip download --no-deps`` of one package set: nestegg builds against the upstream directly.

A focused part of ``run.py`` (which takes a quarter of an hour): each nestegg source tree given
(``--tree NAME=PATH``, e.g. the checkout before and after a change) serves the index pip uses from
a cache of its own, warmed by one download; then every round downloads the set from each of them
and from the upstream directly, in an order rotated every round, and the medians are printed::

    python benchmarks/warm.py --tree before=/tmp/base --tree after=. --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import workloads
from servers import Process, free_port, launch, server_env, wait_for

from nestegg_core.config.pipindex import pip_index_url

HERE = Path(__file__).resolve().parent


def start(name: str, tree: Path, work: Path, upstream: str) -> tuple[Process, str]:
    """A nestegg of the source ``tree`` serving ``upstream`` from an empty cache; its index URL."""
    port = free_port()
    command = [sys.executable, "-m", "nestegg_core", "-q", "--cache-dir", str(work / f"cache-{name}")]
    command += ["--index-url", upstream, "serve", "--port", str(port)]
    env = server_env(PYTHONPATH=str(tree.resolve()))
    process = launch(name, command, env=env, log=work / f"{name}.log")
    wait_for(f"http://127.0.0.1:{port}/health", timeout=60, process=process)
    return process, f"http://127.0.0.1:{port}/simple/"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a nestegg source tree")
    parser.add_argument("--requirements", type=Path, default=workloads.PACKAGE_SETS["small"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-direct", action="store_true", help="do not time the upstream directly")
    args = parser.parse_args(argv)
    upstream = pip_index_url().rstrip("/") + "/"
    work = Path(tempfile.mkdtemp(prefix="nestegg-warm-"))
    indexes: dict[str, str] = {}
    processes = []
    cold: dict[str, float] = {}
    try:
        for spec in args.tree:
            name, _, path = spec.partition("=")
            process, indexes[name] = start(name, Path(path or os.curdir), work, upstream)
            processes.append(process)
            cold[name] = workloads.pip_download(args.requirements, work / "dest", index_url=indexes[name])
        if not args.no_direct:
            indexes["direct"] = upstream
        times: dict[str, list[float]] = {name: [] for name in indexes}
        names = list(indexes)
        for number in range(args.rounds):
            for name in names[number % len(names) :] + names[: number % len(names)]:
                seconds = workloads.pip_download(args.requirements, work / "dest", index_url=indexes[name])
                times[name].append(seconds)
                print(f"round {number + 1} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
    finally:
        for process in processes:
            process.stop()
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    print(json.dumps({"warm": medians, "rounds": times, "first (cold)": cold}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
