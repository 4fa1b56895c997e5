"""``nestegg ci``: run the tests of source builds now, through a mirror started for them."""

from __future__ import annotations

import argparse
from typing import Any

from packaging.utils import canonicalize_name

from nestegg_core.builds.ci import Runner, remote_head, watched
from nestegg_core.builds.runs import PASSED, RunStore
from nestegg_core.config.config import Config
from nestegg_core.errors import BadRequest, NotFound
from nestegg_core.serve.server import Mirror
from nestegg_core.simple.models import is_valid_name


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
            chosen.append(build)
    else:
        chosen = [b for b in config.source_builds if b.ci is not None]
        if not chosen:
            raise BadRequest("no source build has a 'ci' entry: name the builds to test")
    # the mirror the runs install from; it neither polls nor offers the trigger
    served = config.for_one_run().with_changes(port=0)
    for build in chosen:
        if args.ref and args.ref not in watched(build):
            raise BadRequest(
                f"ref {args.ref!r} is not watched by {build.name!r} (watched: {', '.join(watched(build))})"
            )
    store = RunStore(config.nestegg_dir)
    failures = 0
    with Mirror(served) as mirror:
        runner = Runner(config, store, index_url=lambda: mirror.index_url)
        try:
            for build in chosen:
                for ref in [args.ref] if args.ref else watched(build):
                    commit = None
                    if args.new:
                        commit = remote_head(build, ref)
                        if store.tested(build.name, ref, commit):
                            print(f"{build.name} {ref} {commit[:12]}: tested before")
                            continue
                    run, _ = store.queue(build.name, ref, commit, "cli")
                    done = runner.run(run, build)
                    envs = " ".join(f"{env.name}:{env.outcome}" for env in done.envs)
                    print(
                        f"{build.name} {ref} {(done.commit or '?')[:12]}: {done.outcome} in "
                        f"{done.duration or 0:.1f}s (run #{done.id}) {envs} {done.message}".rstrip()
                    )
                    failures += done.outcome != PASSED
        finally:
            store.close()
    return 1 if failures else 0
