"""``nestegg ci``: run the tests of source builds now, through a mirror started for them."""

from __future__ import annotations

import argparse
import logging
import sqlite3
from typing import Any

from packaging.utils import canonicalize_name

from nestegg_core.builds.ci import Runner, remote_head, watched
from nestegg_core.builds.runs import PASSED, RunStore
from nestegg_core.config.config import Config, SourceBuild
from nestegg_core.errors import BadRequest, BuildError, NesteggError, NotFound
from nestegg_core.serve.server import Mirror
from nestegg_core.simple.models import is_valid_name

logger = logging.getLogger(__name__)


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "ci",
        help="run the tests of source builds now and record the runs",
        description="Run the tests of the named source builds (default: those with a 'ci' entry) at the "
        "head of each watched branch or tag, through a mirror started for the purpose, and record the runs "
        "in the history the web interface shows.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="source builds to test")
    parser.add_argument("--ref", help="test this watched branch or tag only")
    parser.add_argument(
        "--new", action="store_true", help="only test commits that have no run yet (for cron jobs)"
    )
    parser.set_defaults(func=_ci_command)


def _ci_command(args: argparse.Namespace, config: Config) -> int:

    builds = {b.name: b for b in config.source_builds}
    if args.names:
        chosen = []
        for name in args.names:
            build = builds.get(canonicalize_name(name)) if is_valid_name(name) else None
            if build is None:
                raise NotFound(
                    f"{name!r} is not a source build (source builds: {', '.join(builds) or 'none'})"
                )
            if build not in chosen:  # named twice (My_Package my-package): tested once
                chosen.append(build)
    else:
        chosen = [b for b in config.source_builds if b.ci is not None]
        if not chosen:
            raise BadRequest("no source build has a 'ci' entry: name the builds to test")
    for build in chosen:
        if args.ref and args.ref not in watched(build):
            raise BadRequest(
                f"ref {args.ref!r} is not watched by {build.name!r} (watched: {', '.join(watched(build))})"
            )
    store = RunStore(config.nestegg_dir)
    try:
        return _run_all(config, chosen, store, ref=args.ref, new=args.new)
    except sqlite3.Error as exc:  # a history that is no SQLite database, a full disk
        raise NesteggError(f"cannot use the CI history {str(store.path)!r}: {exc}") from None
    finally:
        store.close()


def _run_all(
    config: Config, chosen: list[SourceBuild], store: RunStore, *, ref: str | None, new: bool
) -> int:
    # runs a process killed before it recorded their end (kill -9, a power cut) were tested by no
    # one: marked interrupted, --new tests their commits again
    recovered = store.interrupt_unfinished()
    if recovered:
        logger.info("marked %d CI runs of stopped processes interrupted", recovered)
    # the mirror the runs install from; it neither polls nor offers the trigger
    served = config.for_one_run().with_changes(port=0)
    try:
        with Mirror(served) as mirror:
            failures = _run_each(config, chosen, store, mirror, ref=ref, new=new)
    except KeyboardInterrupt:
        # a run queued, then stopped as it waited its turn (another process's run of its project):
        # left queued, a server's CI would take it for its own queued run of that ref, never run
        store.interrupt_unfinished(mine=True, message="nestegg ci was stopped before it ran")
        raise
    return 1 if failures else 0


def _run_each(
    config: Config, chosen: list[SourceBuild], store: RunStore, mirror: Mirror, *, ref: str | None, new: bool
) -> int:
    failures = 0
    runner = Runner(config, store, index_url=lambda: mirror.index_url)
    for build in chosen:
        for watched_ref in [ref] if ref else watched(build):
            commit = None
            if new:
                try:
                    commit = remote_head(build, watched_ref)
                except BuildError as exc:  # one repository out of reach stops no other's runs
                    print(f"{build.name} {watched_ref}: cannot poll: {exc}")
                    failures += 1
                    continue
                if store.tested(build.name, watched_ref, commit):
                    print(f"{build.name} {watched_ref} {commit[:12]}: tested before")
                    continue
            run, _ = store.queue(build.name, watched_ref, commit, "cli")
            done = runner.run(run, build)
            envs = " ".join(f"{env.name}:{env.outcome}" for env in done.envs)
            print(
                f"{build.name} {watched_ref} {(done.commit or '?')[:12]}: {done.outcome} in "
                f"{done.duration or 0:.1f}s (run #{done.id}) {envs} {done.message}".rstrip()
            )
            failures += done.outcome != PASSED
    return failures
