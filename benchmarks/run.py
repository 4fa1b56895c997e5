"""Benchmark nestegg side by side with devpi-server and proxpi, and write BENCHMARKS.rst.

One command, from the repository root, with the dev environment's Python (nestegg installed)::

    python benchmarks/run.py            # 3 rounds, about 10 minutes
    python benchmarks/run.py --quick    # 1 round and shorter load loops, about 4 minutes

It installs devpi-server and proxpi (with gunicorn) into virtualenvs of a temporary directory from
the index pip uses (pip's and uv's settings of this machine are turned off, the index URL excepted),
starts a local fake upstream (``upstream.py``) for the synthetic workloads, and then, round after
round, starts every server on 127.0.0.1 with an empty cache and runs each workload against each
server in turn (the order rotated every round). It prints the table and the targets and writes
``BENCHMARKS.rst`` at the repository root (``--output``). Every process it starts is stopped by
its PID at the end, every load loop is bounded in requests and seconds, and all traffic but the
installers' cold downloads stays on loopback. Needs Linux (peak RSS is read from ``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import load
import report
import static
import workloads
from servers import (
    Bare,
    Devpi,
    Instance,
    Nestegg,
    NesteggCompatible,
    Process,
    Proxpi,
    Server,
    free_port,
    launch,
    server_env,
    stop_all,
    wait_for,
)

from nestegg_core.config.pipindex import pip_index_url
from nestegg_core.testing import find_uv, installer_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONCURRENT_CLIENTS = 16
#: the round trip the distant rows add to the upstream (a machine farther from the index)
DEFAULT_RTT_MS = 20.0


class Settings:
    """How long each loop may run: full or ``--quick``."""

    def __init__(self, quick: bool) -> None:
        self.max_requests = 2000 if quick else 5000
        self.max_seconds = 1.5 if quick else 3.0
        self.page_requests = 15 if quick else 40


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one round, shorter load loops")
    parser.add_argument("--rounds", type=int, help="rounds of every workload (default 3, --quick 1)")
    parser.add_argument(
        "--servers", default="nestegg,nestegg-compat,devpi,proxpi", help="comma-separated subset to run"
    )
    parser.add_argument(
        "--requirements",
        type=Path,
        default=workloads.PACKAGE_SETS["large"],
        help="pinned packages for the pip and uv workloads (closed under dependencies)",
    )
    parser.add_argument(
        "--small-requirements",
        type=Path,
        default=workloads.PACKAGE_SETS["small"],
        help="a second set (small and medium projects), measured the same way; 'none' skips it",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.rst", help="the report to write")
    parser.add_argument("--no-write", action="store_true", help="print the results, write no report")
    parser.add_argument("--page-files", type=int, default=3000, help="files on the large page")
    parser.add_argument("--wheel-mb", type=int, default=32, help="size of the wheel asked for concurrently")
    parser.add_argument(
        "--upstream-rate-mb",
        type=float,
        default=50.0,
        help="MB/s per download from the local upstream, like a real link (0: unpaced)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=15.0,
        help="start no new round that would end after this many minutes",
    )
    parser.add_argument(
        "--pip-python",
        type=Path,
        help="the interpreter whose pip the pip download workloads run (default: this one)",
    )
    parser.add_argument(
        "--upstream-rtt-ms",
        type=float,
        default=DEFAULT_RTT_MS,
        help="round trip added to the upstream for the distant cold rows (a proxy on loopback; 0: none)",
    )
    parser.add_argument("--no-tox", action="store_true", help="skip the tox workload")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, caches)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pip_python is not None:
        workloads.PIP_PYTHON = str(args.pip_python)
    # the index pip would use with this machine's settings, read before anything is isolated
    upstream = pip_index_url().rstrip("/") + "/"
    rounds = args.rounds or (1 if args.quick else 3)
    settings = Settings(args.quick)
    wanted = [name.strip() for name in args.servers.split(",") if name.strip()]
    results = report.Results()
    began = time.monotonic()
    results.facts["load_before"] = _loadavg()
    work = Path(tempfile.mkdtemp(prefix="nestegg-bench-"))
    results.facts.update(rounds=str(rounds), bigwheel_mb=str(args.wheel_mb))
    results.facts["packages"] = str(len(workloads.requirement_names(args.requirements)))
    if str(args.small_requirements) != "none":
        results.facts["small_packages"] = str(len(workloads.requirement_names(args.small_requirements)))
    local: subprocess.Popen[str] | None = None
    try:
        kinds: dict[str, Callable[[Path], Server]] = {
            "nestegg": Nestegg,
            "nestegg-compat": NesteggCompatible,
            "devpi": Devpi,
            "proxpi": Proxpi,
        }
        servers: list[Server] = [kinds[name](work) for name in wanted]
        for server in servers:
            _say(f"installing {server.name}")
            server.install(upstream)
        # the cold rows' floor, in nestegg's interpreter
        bare = next((Bare(work, s) for s in servers if isinstance(s, Nestegg) and s.name == "nestegg"), None)
        local, described = start_upstream(work, args)
        results.facts["bigpage_files"] = str(described["bigpage"]["files"])
        for server in servers:
            server.prepare({"pypi": upstream, "local": described["index_url"]})
        findlinks = work / "find-links"
        proxy = start_distance(work, upstream, args.upstream_rtt_ms, results)
        spent: list[float] = []
        for number in range(rounds):
            elapsed = time.monotonic() - began
            if spent and elapsed + max(spent) > args.max_minutes * 60:
                results.notes.append(
                    f"stopped after {number} round(s) to stay within {args.max_minutes:g} minutes"
                )
                break
            round_began = time.monotonic()
            order = servers[number % len(servers) :] + servers[: number % len(servers)]
            _say(f"round {number + 1}/{rounds}: {' '.join(s.name for s in order)}")
            # the synthetic workloads send no pip User-Agent: compatible_only changes nothing there
            synthetic = [s for s in order if s.name != "nestegg-compat"]
            local_round(synthetic, described, results, settings=settings, work=work, number=number)
            remote_round(
                order,
                upstream,
                results,
                requirements=args.requirements,
                findlinks=findlinks,
                settings=settings,
                work=work,
                number=number,
                bare=bare,
            )
            cold_uv_round(order, upstream, results, requirements=args.requirements, work=work)
            if str(args.small_requirements) != "none":
                remote_round(
                    order,
                    upstream,
                    results,
                    requirements=args.small_requirements,
                    findlinks=work / "find-links-small",
                    settings=settings,
                    work=work,
                    number=number,
                    prefix="small-",
                    bare=bare,
                )
                cold_uv_round(
                    order, upstream, results, requirements=args.small_requirements, work=work, prefix="small-"
                )
                # the same projects unpinned: their newest releases, as an install of bare names
                latest = work / "latest-small.txt"
                names = workloads.requirement_names(args.small_requirements)
                latest.write_text("".join(f"{name}\n" for name in names))
                distant_round(
                    order, upstream, results, requirements=latest, proxy=None, work=work,
                    prefix="small-latest-", bare=bare, number=number,
                )  # fmt: skip
            if proxy is not None:
                sets: list[tuple[str, Path, list[str] | None]] = [("distant-", args.requirements, None)]
                if str(args.small_requirements) != "none":
                    # and its roots with their dependencies, as an install finds them (no wheels: none)
                    roots = workloads.roots_of(work / "find-links-small") or None
                    sets.append(("small-distant-", args.small_requirements, roots))
                for prefix, requirements, roots in sets:
                    distant_round(
                        order,
                        upstream,
                        results,
                        requirements=requirements,
                        proxy=proxy,
                        work=work,
                        prefix=prefix,
                        roots=roots,
                        bare=bare,
                        number=number,
                    )
            spent.append(time.monotonic() - round_began)
            results.facts["rounds"] = str(number + 1)  # the rounds run, which the report says
        if not args.no_tox and "nestegg" in wanted:
            tox_workload(upstream, args.requirements, results, work, min(rounds, 2))
    finally:
        stop_all()
        if local is not None:
            stop_upstream(local)
        if args.keep:
            _say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results.facts["load_after"] = _loadavg()
    versions = {s.name: s.version for s in servers}
    finish(args, results, versions, time.monotonic() - began)
    return 0


# rounds ------------------------------------------------------------------------------------


def local_round(
    order: list[Server],
    upstream: dict[str, Any],
    results: report.Results,
    *,
    settings: Settings,
    work: Path,
    number: int,
) -> None:
    """Start-up, the large page and concurrent cold requests, against the local upstream."""
    instances: dict[str, Instance] = {}
    for server in order:
        instance = _attempt(
            results,
            f"{server.name} start-up",
            server.start,
            upstream["index_url"],
            "local",
            probe=upstream["probe"],
        )
        if instance is not None:
            instances[server.name] = instance
            results.add("startup", server.name, instance.started_in)
    nestegg = next((s for s in order if type(s) is Nestegg), None)
    if nestegg is not None:  # on the interpreter of nestegg's virtualenv, as its start-up
        floor = _attempt(
            results,
            "start-up floor",
            workloads.startup_floor,
            nestegg.python,
            f"{upstream['index_url']}{upstream['probe']}/",
        )
        if floor is not None:
            results.add("startup", "direct", floor)
    devpi = next((s for s in order if isinstance(s, Devpi)), None)
    if devpi is not None and number == 0:
        devpi.default_settings = True
        try:
            instance = _attempt(
                results,
                "devpi start-up, default settings",
                devpi.start,
                upstream["index_url"],
                "local",
                probe=upstream["probe"],
            )
        finally:
            devpi.default_settings = False
        if instance is not None:
            instance.process.stop()
            results.notes.append(
                f"devpi-server with its default argon2 settings took {instance.started_in:.1f} s to start "
                f"and peaked at {instance.process.peak_rss / 1e6:.0f} MB (not in the table)"
            )
    if any(s.name == "nestegg" for s in order):
        timing = _attempt(
            results,
            "nestegg in-process start-up",
            workloads.startup_inprocess,
            work / f"inprocess-{number}",
            upstream["index_url"],
            upstream["probe"],
        )
        if timing is not None:
            results.add("startup-inprocess", "nestegg", timing["start"])
            results.add("import", "nestegg", timing["import"])
    for name, instance in instances.items():
        times = _attempt(
            results,
            f"{name} large page",
            workloads.large_page,
            instance,
            upstream["bigpage"]["name"],
            warm_requests=settings.page_requests,
            max_seconds=settings.max_seconds * 2,
        )
        if times is not None:
            results.add("bigpage-cold", name, times.cold)
            results.add("bigpage-json", name, times.warm_json)
            results.add("bigpage-html", name, times.warm_html)
    columns: list[Instance | None] = [*instances.values(), None]
    for instance in _rotate(columns, number):
        name = "direct" if instance is None else instance.server.name
        outcome = _attempt(
            results,
            f"{name} concurrent cold",
            workloads.concurrent_cold,
            instance,
            upstream,
            clients=CONCURRENT_CLIENTS,
        )
        if outcome is not None:
            results.add("concurrent", name, outcome.seconds)
            results.add("concurrent-upstream", name, outcome.upstream_downloads)
            if outcome.failed:
                results.notes.append(
                    f"{name}: {outcome.failed} of {CONCURRENT_CLIENTS} concurrent requests failed"
                )
    for name, instance in instances.items():
        instance.process.stop()
        results.add("rss", name, instance.process.peak_rss)
        results.add("rss-local", name, instance.process.peak_rss)


def remote_round(
    order: list[Server],
    upstream: str,
    results: report.Results,
    *,
    requirements: Path,
    findlinks: Path,
    settings: Settings,
    work: Path,
    number: int,
    prefix: str = "",
    bare: Server | None = None,
) -> None:
    """pip and uv against the real upstream through each server, then page throughput; with a
    ``prefix`` (a second package set), pip and uv only, their results' keys prefixed. ``bare``
    (the floor) runs the cold download only, in a place among the servers that turns each round."""
    instances: dict[str, Instance] = {}
    for server in order:
        instance = _attempt(results, f"{server.name} start", server.start, upstream, "pypi", probe=None)
        if instance is not None:
            instances[server.name] = instance
    names = [s.name for s in order if s.name in instances]
    dest = work / "download"
    cold = [*names]
    if bare is not None:
        cold.insert(number % (len(names) + 1), bare.name)
    for column in [*cold, "direct"]:
        if bare is not None and column == bare.name:
            seconds = _attempt(
                results, "bare proxy cold pip download", bare_download, bare, upstream, requirements, dest
            )
            if seconds is not None:
                results.add(prefix + "cold", column, seconds)
            continue
        index = upstream if column == "direct" else instances[column].index_url

        def download(what: str, column: str = column, index: str = index) -> float | None:
            seconds: float | None = _attempt(
                results, f"{column} {what}", workloads.pip_download, requirements, dest, index_url=index
            )
            return seconds

        seconds = download("cold pip download")
        if seconds is None:
            continue
        results.add(prefix + "cold", column, seconds)
        if column != "direct":
            # at once, as tox's next environment installs: what the cold run left undone is paid
            again = download("pip download at once after the cold one")
            if again is not None:
                results.add(prefix + "again", column, again)
            continue
        size = sum(p.stat().st_size for p in dest.iterdir())
        results.add(prefix + "direct-mb-per-s", column, size / seconds / 1e6)
        results.facts[prefix + "download_mb"] = f"{size / 1e6:.0f}"
        if not findlinks.exists():
            shutil.copytree(dest, findlinks)
    projects = workloads.requirement_names(requirements)
    columns = [*names, "direct"]
    if findlinks.exists():
        columns.append("find-links")
        if "nestegg" in instances:
            # one after the other, their order swapped every round: their difference is a result
            statics = ["static", "static-absolute"]
            columns += statics if number % 2 == 0 else statics[::-1]
    pip_seconds: dict[str, float] = {}
    # the baselines take their turn among the servers, rotated every round as they are
    for column in _rotate(columns, number):
        served: Process | None = None
        if column == "direct":  # pip again too: the warm rows' reference, in turn with the servers
            source: dict[str, Any] = {"index_url": upstream}
        elif column == "find-links":
            source = {"find_links": findlinks}
        elif column in ("static", "static-absolute"):
            started = _attempt(
                results,
                "static pages" + (", absolute URLs" if column == "static-absolute" else ""),
                start_static,
                work / f"{prefix}static",
                instances["nestegg"],
                projects,
                findlinks,
                absolute=column == "static-absolute",
            )
            if started is None:
                continue
            served, source = started[0], {"index_url": started[1]}
        else:
            source = {"index_url": instances[column].index_url}
        try:
            seconds = warm_runs(
                results,
                column,
                source,
                requirements=requirements,
                dest=dest,
                venv=work / "venv",
                prefix=prefix,
                # pip's pages, which uv is not given by nestegg (and http.server has no HEAD)
                uv=column not in ("static", "static-absolute"),
            )
        finally:
            if served is not None:
                served.stop()
        if seconds is not None:
            pip_seconds[column] = seconds
    if "static" in pip_seconds and "static-absolute" in pip_seconds:
        # what relative file URLs cost pip, within one round
        saved = pip_seconds["static"] - pip_seconds["static-absolute"]
        results.add(prefix + "relative-urls", "nestegg", saved)
    for name in names if not prefix else ():
        if name == "nestegg-compat":
            continue  # the load client is not pip: its pages are the plain nestegg's
        for kind, accept in (("html", load.HTML), ("json", load.JSON)):
            for clients in (1, 8):
                outcome = _attempt(
                    results,
                    f"{name} pages {clients} {kind}",
                    workloads.throughput,
                    instances[name],
                    projects,
                    accept=accept,
                    clients=clients,
                    max_requests=settings.max_requests,
                    max_seconds=settings.max_seconds,
                )
                if outcome is None:
                    continue
                key = f"pages-{clients}-{kind}"
                if outcome.errors:
                    results.notes.append(f"{name}: {outcome.errors} failed requests in {key}")
                if outcome.latencies:
                    results.add(key, name, outcome.rate)
                    results.add(f"{key}:p50", name, outcome.percentile(0.50))
                    results.add(f"{key}:p99", name, outcome.percentile(0.99))
    for name, instance in instances.items():
        instance.process.stop()
        results.add(prefix + "rss", name, instance.process.peak_rss)
    nestegg = instances.get("nestegg")
    if nestegg is not None:
        # a tox run's mirror or a new WSGI worker: every page rendered before, the process new
        fresh = _attempt(results, "nestegg fresh process", workloads.fresh_first_pages, nestegg, projects)
        if fresh:
            results.add(prefix + "fresh-max", "nestegg", max(fresh))
            results.add(prefix + "fresh-median", "nestegg", statistics.median(fresh))
        # a test's mirror (port 0) or another project's tox run: rendered before, for another port
        moved = _attempt(
            results,
            "nestegg fresh process on another port",
            workloads.fresh_port_first_pages,
            nestegg,
            projects,
        )
        if moved:
            results.add(prefix + "fresh-port-max", "nestegg", max(moved))
            results.add(prefix + "fresh-port-median", "nestegg", statistics.median(moved))
        past = _attempt(
            results, "nestegg past the TTL", workloads.past_ttl_download, nestegg, requirements, dest, work
        )
        nestegg.process.stop()
        if past is not None:
            results.add(prefix + "past-ttl", "nestegg", past)


def distant_round(
    order: list[Server],
    upstream: str,
    results: report.Results,
    *,
    requirements: Path,
    proxy: str | None,
    work: Path,
    prefix: str,
    roots: list[str] | None = None,
    bare: Server | None = None,
    number: int = 0,
) -> None:
    """The cold pip download through each server started afresh, then straight from the upstream,
    all reaching the upstream through ``proxy`` (farther away by ``--upstream-rtt-ms``; None: as
    this machine does); with ``roots``, then the download of those with their dependencies,
    likewise. ``bare`` (the floor) takes a place among the servers that turns each round."""
    dest = work / "download-distant"
    runs: list[tuple[str, list[str]]] = [("cold", [])]
    if roots:
        runs.append(("deps", roots))
    servers = [*order]
    if bare is not None:
        servers.insert(number % (len(order) + 1), bare)
    for key, names in runs:
        what = "cold pip download" + (" with dependencies" if names else "")
        what += ", upstream farther" if proxy is not None else f" ({prefix.strip('-')})"
        for server in servers:
            instance = _attempt(
                results, f"{server.name} start (distant)", server.start, upstream, "pypi",
                probe=None, proxy=proxy,
            )  # fmt: skip
            if instance is None:
                continue
            try:
                seconds = _attempt(
                    results,
                    f"{server.name} {what}",
                    workloads.pip_download,
                    requirements,
                    dest,
                    index_url=instance.index_url,
                    roots=names,
                )
            finally:
                instance.process.stop()
            if seconds is not None:
                results.add(prefix + key, server.name, seconds)
        seconds = _attempt(
            results, f"direct {what}", workloads.pip_download, requirements, dest, index_url=upstream,
            proxy=proxy, roots=names,
        )  # fmt: skip
        if seconds is not None:
            results.add(prefix + key, "direct", seconds)


def cold_uv_round(
    order: list[Server],
    upstream: str,
    results: report.Results,
    *,
    requirements: Path,
    work: Path,
    prefix: str = "",
) -> None:
    """``uv pip install --no-cache`` of the set into a fresh virtualenv through each server started
    afresh (an empty cache), then straight from the upstream. uv asks for every page at once, then
    for every wheel's metadata, then for the files, and unpacks them as they come: the server's
    work shares the cores with it, where pip waits for one answer at a time."""
    if find_uv() is None:
        return
    venv = work / "venv-cold-uv"
    for server in order:
        if server.name == "nestegg-compat":
            continue  # uv is never filtered: the plain nestegg's row
        instance = _attempt(
            results, f"{server.name} start (cold uv)", server.start, upstream, "pypi", probe=None
        )
        if instance is None:
            continue
        try:
            seconds = _attempt(
                results, f"{server.name} cold uv install", workloads.uv_install, requirements, venv,
                index_url=instance.index_url,
            )  # fmt: skip
        finally:
            instance.process.stop()
        if seconds is not None:
            results.add(prefix + "uv-cold", server.name, seconds)
            results.add("rss-uv-cold", server.name, instance.process.peak_rss)
    seconds = _attempt(
        results, "direct cold uv install", workloads.uv_install, requirements, venv, index_url=upstream
    )
    if seconds is not None:
        results.add(prefix + "uv-cold", "direct", seconds)


def bare_download(bare: Server, upstream: str, requirements: Path, dest: Path) -> float:
    """The cold pip download through the bare proxy, started for it and stopped after."""
    instance = bare.start(upstream, "pypi", probe=None)
    try:
        seconds: float = workloads.pip_download(requirements, dest, index_url=instance.index_url)
    finally:
        instance.process.stop()
    return seconds


def warm_runs(
    results: report.Results,
    column: str,
    source: dict[str, Any],
    *,
    requirements: Path,
    dest: Path,
    venv: Path,
    prefix: str = "",
    uv: bool = True,
) -> float | None:
    """The warm pip download into ``dest`` and uv install into ``venv`` from ``source`` (an index
    URL or a find-links folder); the pip download's seconds, if measured."""
    seconds: float | None = _attempt(
        results,
        f"{column} warm pip download",
        workloads.pip_download,
        requirements,
        dest,
        **source,
    )
    if seconds is not None:
        results.add(prefix + "warm", column, seconds)
    if uv and find_uv() is not None:
        uv_seconds = _attempt(
            results, f"{column} uv install", workloads.uv_install, requirements, venv, **source
        )
        if uv_seconds is not None:
            results.add(prefix + "uv", column, uv_seconds)
    return seconds


def start_static(
    root: Path, nestegg: Instance, projects: list[str], findlinks: Path, *, absolute: bool = False
) -> tuple[Process, str]:
    """The static server of the warm nestegg's pages of ``projects`` kept in ``root`` (saved at the
    first turn of either static column, after nestegg's warm runs in the first round), with
    absolute file URLs if asked; its Simple API URL."""
    if not root.exists():
        staging = root.with_name(root.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        static.snapshot(nestegg.index_url, projects, findlinks, staging)
        staging.rename(root)
    port = free_port()
    command = [sys.executable, str(HERE / "static.py"), str(root), "--port", str(port)]
    if absolute:
        command.append("--absolute")
    process = launch("static", command, env=server_env(), log=root.parent / f"{root.name}.log")
    index_url = f"http://127.0.0.1:{port}/simple/"
    try:
        wait_for(f"{index_url}{projects[0]}/", timeout=30, process=process, accept=load.PIP_ACCEPT)
    except BaseException:
        process.stop()
        raise
    return process, index_url


def tox_workload(
    upstream: str, requirements: Path, results: report.Results, work: Path, repeats: int
) -> None:
    """A sample project's ``tox -r`` with the plugin (warm cache) and without it, alternately."""
    outcome = _attempt(
        results, "tox", workloads.tox_compare, upstream, requirements, work / "tox", repeats=repeats
    )
    if outcome is None:
        return
    if isinstance(outcome, str):
        results.notes.append(f"tox workload pending: {outcome}")
        return
    for key, samples in outcome.items():
        for seconds in samples:
            results.add(key, "nestegg", seconds)
    if any(":" not in key and f"{key}:setup" not in outcome for key in outcome):
        results.notes.append("tox printed no setup figure for some runs (its summary line changed?)")


# the local upstream -------------------------------------------------------------------------


def start_upstream(work: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    _say("generating the local upstream")
    command = [
        sys.executable,
        str(HERE / "upstream.py"),
        str(work / "upstream"),
        "--page-files",
        str(args.page_files),
        "--wheel-mb",
        str(args.wheel_mb),
        "--rate-mb",
        str(args.upstream_rate_mb),
    ]
    log = open(work / "upstream.log", "w")  # noqa: SIM115 - the child holds it; closed on stop
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=installer_env()
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    log.close()
    if not line:
        process.wait(30)
        raise RuntimeError(f"the local upstream failed; see {work / 'upstream.log'}")
    return process, json.loads(line)


def start_distance(work: Path, upstream: str, rtt_ms: float, results: report.Results) -> str | None:
    """The URL of a proxy (``latency.py``) that adds ``rtt_ms`` to every round trip to the
    upstream, or None: none asked, an upstream that is not HTTPS, or a machine that reaches it
    through a proxy of its own (which this one would bypass)."""
    if rtt_ms <= 0:
        return None
    if not upstream.startswith("https://"):
        results.notes.append("no distant rows: the upstream is not reached over HTTPS")
        return None
    if any(key.lower() in ("https_proxy", "all_proxy") for key in os.environ):
        results.notes.append("no distant rows: this machine reaches the upstream through a proxy")
        return None
    port = free_port()
    command = [sys.executable, str(HERE / "latency.py"), "--port", str(port), "--rtt-ms", f"{rtt_ms:g}"]
    launch("latency", command, env=server_env(), log=work / "latency.log")
    for _ in range(500):  # it listens within a second
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        time.sleep(0.01)
    else:
        raise RuntimeError(f"the latency proxy did not listen; see {work / 'latency.log'}")
    results.facts["rtt_ms"] = f"{rtt_ms:g}"
    return f"http://127.0.0.1:{port}"


def stop_upstream(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


# helpers ---------------------------------------------------------------------------------


def _rotate(items: list[Any], by: int) -> list[Any]:
    by %= len(items) or 1
    return items[by:] + items[:by]


def _attempt(results: report.Results, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one measurement; a failure is noted in the report and the run goes on."""
    _say(f"  {what}")
    try:
        return function(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a peer failing a workload is a result, not a crash
        message = str(exc).strip().splitlines()
        results.notes.append(f"{what} failed: {message[0] if message else type(exc).__name__}")
        _say(f"  ! {what} failed:\n{exc}")
        if os.environ.get("NESTEGG_BENCH_DEBUG"):
            traceback.print_exc()
        return None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def finish(
    args: argparse.Namespace, results: report.Results, versions: dict[str, str], seconds: float
) -> None:
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    if args.rounds:
        command += f" --rounds {args.rounds}"
    described = report.machine(
        {
            "nestegg": f"{versions.get('nestegg', '?')} ({_git_revision()})",
            "devpi-server": versions.get("devpi", "not run"),
            "proxpi": f"{versions.get('proxpi', 'not run')} (gunicorn, 1 worker, 16 threads)",
            "pip": report.tool_version([workloads.PIP_PYTHON, "-m", "pip", "--version"]).split(" from ")[0],
            "uv": report.tool_version([find_uv() or "uv", "--version"]),
            "upstream": f"the index pip uses; {results.facts.get('download_mb', '?')} MB of wheels at "
            f"{_rate(results)} MB/s direct (host not recorded)",
            "run": f"{seconds / 60:.1f} minutes; load average {results.facts['load_before']} before, "
            f"{results.facts['load_after']} after (other work on the machine disturbs the numbers)",
        }
    )
    table = report.table(results)
    print()
    print(table)
    print()
    print(report.format_targets(report.targets(results)))
    for note in results.notes:
        print(f"note: {note}")
    if not args.no_write:
        notes = "\n".join(f"- {note}" for note in results.notes) or "- every workload ran on every server."
        report.write_rst(
            args.output,
            results,
            command=command,
            described=described,
            method=METHOD,
            closing=notes + "\n\n" + BOUNDS,
        )
        _say(f"wrote {args.output}")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _rate(results: report.Results) -> str:
    value = results.value("direct-mb-per-s", "direct")
    return "?" if value is None else f"{value:.0f}"


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"
    return f"{head}{' with local changes' if dirty else ''}"


METHOD = f"""\
- **Servers.** Each is installed into a virtualenv of its own (nestegg from this checkout, the peers
  from the index). nestegg runs as its CLI (``python -m nestegg_core -q ... serve``), and again with
  ``--compatible-only`` for the pip and uv workloads (its own column; the synthetic workloads send
  no pip User-Agent, so they would measure the plain nestegg twice); devpi-server with ``devpi-init
  --no-root-pypi`` done beforehand and its mirror indexes created then with
  ``mirror_no_project_list`` (its fastest start: start-up counts only ``devpi-server`` itself),
  logging at WARNING; proxpi under gunicorn with one worker (its cache is per process) and 16
  threads, logging at WARNING. Each starts with an empty cache on 127.0.0.1, twice a round: once
  mirroring the local upstream, once the real one.
- **Local upstream.** A nestegg ``PrivateIndex`` in a process of its own (``benchmarks/upstream.py``)
  with a small project (the start-up probe), a project of thousands of wheels (the large page) and
  a large wheel, whose downloads it counts and paces like a real link (``--upstream-rate-mb``).
- **Start-up** is the time from launching the process to the first 200 on the probe's project page
  (fetched from the local upstream on the way). In-process is ``Mirror(Config(...)).start()`` to
  that first 200, in a fresh interpreter with nestegg already imported (the import is shown apart).
  Its "upstream direct" cell is the floor of a server in Python that uses requests: nestegg's
  interpreter started afresh, importing requests and fetching that page itself (no server).
- **pip and uv** run with ``installer_env`` (no setting of this machine), ``--only-binary=:all:``,
  ``--no-cache-dir``/``--no-cache``, the requirements of ``benchmarks/requirements.txt``. Cold is
  each server's first download (empty cache), and "at once after the cold run" its second, started
  as soon as the first ends (as tox's next environment installs: the work a cold run leaves for
  the quiet after it, such as pages made again, is paid there if anywhere); warm repeats it into a
  fresh directory later, in turn with the other servers; uv installs
  into a fresh virtualenv made beforehand (not timed). "Upstream direct" is the same pip
  download or uv install straight from the upstream, with no cache: the cold row's is the first
  of the round, the warm rows' another one, in turn with the warm servers. The find-links limit is
  ``pip download --no-index --find-links`` (and the same for uv) on a directory holding the same
  files. "Static pages" is the floor for nestegg's pages as pip gets them: the warm nestegg's
  JSON pages for pip's User-Agent (file URLs made relative to the page), the same files and the
  ``.metadata`` those pages list, saved at its first turn and served as files by
  ``benchmarks/static.py`` (``http.server``, keep-alive, ``sendfile``, no work per request), so
  the installer reads the very same links. "Static, absolute URLs" serves the same pages with
  each file's URL given whole, as nestegg gives them: the difference between the two is what
  relative URLs cost the installer. The baselines take their turn among the servers, in the
  order rotated every round. "Bare proxy" is the cold rows' floor: ``benchmarks/bare.py`` in
  nestegg's interpreter, on waitress and requests as nestegg is, each page parsed and written again
  by json's C code with its file URLs made its own, each file streamed from the upstream as it
  comes and written to disk on the way; no lock, no check, no page kept. It runs the cold download
  only, started afresh, in a place among the servers that turns every round.
- **Fresh process**: once a round's installs are done, nestegg is stopped and started again on
  its cache and port (a tox run's mirror, a new WSGI worker); the time each project page of the
  requirements takes to be answered the first time, as pip asks (its Accept, gzip and
  User-Agent, a connection each): the slowest and the median page. Then the same on another
  port (a test's mirror on port 0, another project's tox run), each page rendered before for the
  first port only; then it is started again on its own.
- **Past the TTL**: then it is started again with ``ttl: 10``, and once 10 s have passed, every
  page past its TTL, pip downloads the requirements once more: the next tox run after the TTL,
  in which nestegg asks the upstream for every page again and (the upstream unchanged) makes none
  of them again. Compared with the upstream direct's warm run.
- **Distant rows**: each server started afresh (empty cache), then pip straight from the upstream,
  all reaching the upstream through ``benchmarks/latency.py``, a CONNECT proxy on loopback that
  holds every byte, each way, for half of ``--upstream-rtt-ms`` ({DEFAULT_RTT_MS:g} ms unless
  said): every round trip to the upstream (the TCP connect, the TLS handshake, each request)
  takes that much longer, as from a machine farther from the index. The bandwidth stays the
  machine's. The proxy relays every byte in Python on the same two cores, which weighs on a
  server's run (three processes) more than on pip direct (two). Not run when the upstream is not
  HTTPS, or when this machine reaches it through a proxy of its own. The small set is then
  downloaded a second way: only its roots (the projects none of its wheels requires here), pip
  finding the rest on the way (``pip download ROOTS -c SET``, the set as constraints), as an
  install of a few top-level requirements does.
- **Cold uv rows**: ``uv pip install --no-cache`` of each set into a fresh virtualenv through
  each server started afresh (empty cache), then straight from the upstream. uv asks for every
  page at once, then for every wheel's metadata, then for all the files, and unpacks them as they
  come: the server's work shares the two cores with it, where pip waits for one answer at a time.
- **Unpinned row**: the small set's names without their versions, cold through each server
  started afresh (the bare proxy too), then straight from the upstream: each project's newest
  release, as an install of bare names (``tox``'s ``deps = pytest``) takes. nestegg begins the
  download of the wheel pip most likely takes from a page as it answers the page, while its
  guesses for that pip were right lately: here the newest release's are; in the pinned rows,
  after the first page, the newest release's uploaded by the latest upload time of the files
  pip took (a lock file's day): most of them.
- **Pages/s** come from a small keep-alive HTTP client in threads (``benchmarks/load.py``) cycling
  over the warm project pages of the requirements (each asked once before, not timed), at most
  {Settings(False).max_requests} requests
  or {Settings(False).max_seconds:g} s a run; p50/p99 are per-request latencies seen by the client.
  It asks as pip does (``Accept-Encoding: gzip, deflate``), so each server may compress pages;
  nestegg does, from a gzip file written beside each rendering.
  Client and server share the machine's cores, so rates are relative, not absolute capacities.
- **Large page**: the first request for it (cold: the server fetches and parses the upstream's page)
  and the median of repeated requests (warm), one client.
- **Concurrent cold**: {CONCURRENT_CLIENTS} clients released together ask a server (or the upstream
  itself, "direct") for the large wheel it has not cached; time until the last has every byte; the
  upstream counts its downloads; a further download checks the served sha256.
- **Peak RSS** is the high-water mark (VmHWM) of the server process, children included, read before
  each instance stops; the table shows the largest. The servers of the cold uv installs have a
  row of their own: uv asks for every page at once.
- **tox**: ``tox -r`` of a sample project whose environments install the requirements (one with
  tox-uv's runner, one with tox's own, pip) and import a few of them, with the plugin against its
  warm cache and with ``--no-nestegg``, in turn; installers keep no cache of their own. Beside each
  run's time is tox's own figure for the environment's setup (all but the commands: removing the
  old environment, making it and installing into it, the part the mirror takes part in); the
  commands are the same with or without the plugin."""

BOUNDS = """\
Where a target is missed, what bounds it (profiles of the same workloads with cProfile, py-spy,
strace and tracemalloc):

- *Warm pip download, plain nestegg, vs the upstream direct, the peers and --find-links.* pip
  itself. The "static pages" columns are nestegg's pages for pip served as files: pip takes about
  as long with them as with nestegg, so what is left to a server of whole pages is what the pages
  cost pip. A warm nestegg answers a page or a file in about 0.3 ms of its own (1 ms as pip's
  requests stack sees it, against 2.5-3 ms from the upstream here, on a fast network): the whole
  gain over the upstream direct is those round trips, 0.1-0.2 s of a pinned set. The rest is pip
  parsing and evaluating every file entry of every page (about 49,000 links for the own set,
  9,000 for the small one, against one file a project for ``--find-links``). With pip 23.2 that
  evaluation (``Link.from_json``, and ``Wheel.supported`` scanning its list of ~1,000 tags for
  each wheel) is three quarters of its time, and absolute URLs save it nothing measurable; pip 26
  checks tags against a set and reads absolute URLs a fifth faster (the "static, absolute URLs"
  column), so the server's share, and the gain over the upstream, are larger with it. pip's
  pages list no PEP 658 metadata of a wheel cached, nor of a wheel under 2 MiB (under 16 MiB when
  the upstream lists none: see the distant rows) (``pip_lists_metadata``): pip downloads what it
  resolved to, so for those the metadata was one request more (34 requests a warm run). And a
  wheel cached with only its metadata learned no longer makes pip's renderings stale (a marker of
  its own, ``.changed-metadata``): the warm run right after a cold one no longer makes every page
  again (0.3 s of that run before). Shorter than that floor is ``compatible_only``: pip reads only
  the files that can fit its interpreter.
- *The warm run at once after the cold one* (tox's next environment, a script's second install).
  A cold run leaves work for the quiet after it: the pages its large wheels made stale (their
  metadata, listed for pip while they were not cached, no longer is) are made again in the
  background. That quiet was a second without requests; pip's exit and the next pip's start take
  about 0.45 s, so the next run made them on its own requests: in a set of 34 other projects
  (boto3, botocore, coverage, sphinx, django, aiohttp, lxml, pillow...), 6 pages and 129 ms of the
  first warm run, and 0.15-0.2 s of the own set's (A/B runs, 2-3 rounds: 2.05 -> 1.88 s with the
  background free to work at once). The quiet now starts as soon as the installer closes its
  connections (waitress tells when the last one open, kept over more than one request, closes):
  this row and the later warm run are alike (1.04x and 1.01x here). Letting the background work
  in the gaps of an install (0.2 s without requests) did as much for the warm run but cost the
  cold runs of large pages 2-8%. A page made while the change it shows settled was held in memory
  only, so a new process made it once more (virtualenv's, 9 ms, the small set's slowest fresh
  page before that was fixed; 1.8 ms here).
- *Warm pip download with compatible_only vs --find-links.* Still pip: 68 HTTP requests (34
  pages, 34 wheels) through pip's requests stack, and the remaining links (every sdist and every
  compatible wheel of every version: the server cannot know the pins), against a directory
  listing of 34 files.
- *Cold downloads, plain nestegg.* The same pip work as direct, plus the server's own work on the
  critical path of each first request. Seen from pip (its requests stack timed in its own process,
  the small set, 3 runs): pip's own time between requests is the same through nestegg as direct
  (0.35 s), and its time inside requests is 0.28 s direct, 0.59 s through a cold nestegg and 0.09 s
  through a warm one; the cold server takes 0.52 s from each request to its last byte, about half
  of it the upstream's. Timed in-process, the median small page: the upstream's first byte at
  2.8 ms, parsed as it arrives (1.7 ms more; about 8 us a file entry in Python then, 5.6 us now),
  rendered for pip (0.5 ms) and answered at 5.5 ms; its state and rendering are written after the
  answer for pip and uv (1.4 ms, while pip reads it), for pages of up to 6,000 files (3,000
  before). A larger page is written as it is rendered, before its answer (0.1-0.2 s each for pages
  of 7,000-15,000 files). The median small file: 0.9 ms before the
  upstream is asked (the download's thread, its lock), the upstream's first byte 3 ms later, and
  pip's last byte once its size and hashes are checked; the fsync (0.8 ms), the metadata read from
  the wheel (0.4 ms) and the record follow while pip goes on (other clients wait for them, and a
  page of the project asked meanwhile in the process too). Before, those came before the last byte:
  the own set's cold run went from 3.52 to 3.32 s with that change alone, and answering pages of up
  to 3,000 files before writing them (600 before) took it to 3.30 s against 3.41 s, the small set to
  1.34 against 1.38 s (A/B runs of two trees, 5-6 rounds, not this table's run). What is left is
  spread thin: parsing is about half, then rendering, the thread hand-overs of each download and the
  round trip to the server. Two costs of each cold request came off since: the download's lock,
  which filelock took with 0.2-0.3 ms of Python (670 calls) and is now ``flock`` on the same lock
  file (three system calls), and requests' reading of the whole environment twice for each
  request's proxies, now once for each origin (a request to the upstream 0.74 -> 0.63 ms, median of
  30 files). Against the local replay of the upstream (8 and 6 alternating rounds) the small set
  went from 1.46x to 1.42x the direct time, within the rounds' spread, and the own set stayed at
  1.56-1.57x; on this machine's disk a new folder or file costs 0.03-2 ms from one minute to the
  next, which each cold file met four times before its first byte (the project's lock folder, its
  lock file, the project's files folder, its part file); three are now made while something else
  waits (see *the cold rows' floor*). Of the parse (7.3 us a file entry, the own set's 48,953 entries in
  0.36 s of CPU, which is on the critical path: the bodies themselves came in 0.12-0.16 s in all),
  the C decoder took 1.7 us, making the file's model 3.3 us (its frozen dataclass's ``__init__``
  alone 1.4 us), and checking the names and the rest 2.3 us. It is 5.2 us now (0.25-0.28 s for the
  own set, 0.05 s for the small set's 9,134 entries): each entry is decoded by the json module's
  scanner itself, without the reader's steps around it and without a hook on its hashes' objects,
  the model's own ``__init__`` sets its slots (0.5 us), and an entry's values are told apart by
  ``type(value) is`` (JSON decodes no subclass), not ``isinstance`` (6.0 -> 5.4 us on the held-out
  pages). msgspec, a compiled decoder, decoding many entries at a time straight into structs, took
  it to 4.5 us (a sixth less; tried outside the repo): not worth a compiled
  dependency of the tox plugin. Most of what is left is making the model (its hashes packed as
  bytes, a fifth of the parse) and checking each name. Reading the whole body with
  ``json.loads`` and the same hook instead of entry by entry saved about a fifth then, but holds a
  page whole, and a hostile page of nested empty lists is about 20 times its size in objects.
  pip 26 spends less of its own time per page than pip 23, so the same server work weighs more in
  its ratio.
- *Cold downloads with the upstream farther (the distant rows).* The server's own time on each first
  request stays what it is near the upstream, while every round trip, pip's direct ones and the
  server's alike, grows. 20 ms farther, the small set went from 1.35x to 1.18x direct in one run
  (ab8a872) and from 1.46x to 1.23x in another (9283ecd), the own set from 1.41x to 1.29x and from
  1.43x to 1.28x (8a437cc: 1.42x to 1.18x, and 1.34x to 1.32x; 213e2b3: 1.35x to 1.13x, and
  1.41x to 1.26x; 1d7d2cf: 1.30x to 1.10x, and 1.36x to 1.22x; 7e45714, on a slower machine:
  1.46x to 1.14x, and 1.34x to 1.21x; 4d5fbaa, with the pages ahead below: 1.39x to 1.10x, and
  1.39x to 1.14x; 69cdc65: 1.28x to 1.12x, and 1.46x to 1.14x; 6ad9c2c: 1.28x to 1.08x, and 1.38x
  to 1.18x; the run at da69ac5: 1.28x to 1.09x, and 1.43x to 1.11x). What kept the
  own set above was its pages' parse (0.27-0.31 s of CPU) and its 4 large wheels the index pip uses here lists
  no PEP 658 metadata for: pip's pages listed their metadata (a wheel of 2 MiB or more, see above),
  which nestegg reads by ranges, one round trip each. Those were 14 requests for the 4 wheels with
  the last 8 KiB asked first, and are 9 with the last 64 KiB (the central directory of most wheels,
  and the METADATA of a wheel that puts its ``.dist-info`` last, in one request; no byte asked for
  twice; a member's header and data together). A/B runs of the two trees 20 ms farther, 3 rounds:
  the own set 5.61 -> 5.50 s (direct 4.14 s), the small set 3.32 -> 3.12 s (direct 2.67 s; its
  virtualenv wheel, 3 requests -> 1). The file then comes from the download started ahead once pip
  read its metadata, which near this upstream saves little (its 37 MB come at several hundred MB/s)
  and on a slower link saves the whole download's time. Now pip's pages list the metadata nestegg
  would read by ranges only of wheels of 16 MiB or more (``PIP_RANGED_METADATA_MIN_SIZE``): the
  ranges are round trips pip going to the upstream does not make, on pip's way to each wheel, and
  they save pip a download only of a wheel it then rejects (about 0.8 s for 16 MiB at 20 MB/s).
  The held-out set's cold run made 13 ranges for 6 wheels of 3-13 MB; none now, nor the own set's
  9 (its 4 wheels are 3-16 MB). A/B runs against a local replay of the upstream 20 ms farther (one
  round trip added to each request), 3 rounds, this parse and that change together: the held-out
  set 4.99 -> 4.81 s (direct 3.72 s), the own set 4.56 -> 4.24 s (direct 3.27 s), the small set
  2.67 -> 2.66 s (one range before; direct 2.22 s).
- *The first cold request, and a cold request's fixed time.* The first request a mirror made to
  its upstream loaded the CA bundle requests names to every new connection (nestegg loads it once
  a process): 20-70 ms of CPU on the critical path of the first cold page. A mirror now loads it
  as it starts, in a thread, once no page nor file has been asked for for 50 ms
  (``HttpFetcher.prepare``, ``PREPARE_QUIET``; nothing is sent upstream, an offline mirror does
  nothing), and ``ssl`` lets the GIL go while it reads the bundle. Against a local replay of the
  upstream (its recorded pages, gzip-encoded, and the files pip downloads; the server in a process
  of its own), the first cold page asked 0.2 s after the start took 6-11 ms, against 22-26 ms
  before (5 starts each). Loaded at once as the mirror starts, the bundle's load on the other core
  slowed a fresh process's first pages asked at once, as a warm tox run asks them: the small set's
  slowest from 1.5 to 5.5 ms, the own set's from 3.9 to 5.4 ms (10 and 6 alternating starts). Two
  runs of this table were made so (91d8929, on the same slower machine as this one): their
  fresh-process rows read 5.9 and 6.9 ms, 5.1 and 5.9 ms. The rest of a cold request's fixed time,
  timed on that replay: a small page 2.8 ms against 0.35 ms direct (1.0 ms to requests' answer,
  where http.client alone takes 0.3 ms and requests reads the whole environment twice a request
  for proxies, 0.14-0.25 ms; the parse 0.55 ms; the rendering 0.16 ms; the mirror's own
  bookkeeping 0.5 ms; its state and rendering written after the answer, 0.7 ms, while pip parses
  it); a small file 5.8 ms against about 1 ms direct (0.8 ms to the app, 0.5 ms to the download's
  thread, 0.75-1.3 ms for its lock, of which 0.2-0.5 ms to make a new project's lock folder on
  this disk, 1.2-2.1 ms to the upstream's headers, 0.2-0.3 ms for the part file, 0.7 ms for the
  body). Near the upstream all of it is Python work under one GIL. Tried and not kept, in
  alternating rounds: the upstream's file request made in a thread of its own while the download
  takes its lock (no change: the two threads take turns at the GIL); the work left for after a
  page's answer done by a thread of its own rather than the request's (no change: pip's parse of
  the page hides it already); pages of up to 16,000 files answered before they are written (the
  own set's cold pages 45 ms faster in 0.9 s, peak RSS 53 -> 62 MB); a project's folders made as
  its page is fetched (about 0.3 ms a cold file, within the noise; its lock folder is now made
  once the page is answered, see *the cold rows' floor*); the lock files of all projects
  in one folder (0.3 ms a cold file, and an older nestegg sharing the cache would take other
  locks); pip's rendering written in batches of entries (0.3 us an entry of 1.9).
- *A cold run against the index pip uses here, request by request* (e6be649, pip 26.3's requests
  timed in its own process, the server's steps on the same clock). That index answers a small
  page whole in 3.0-3.4 ms and a small file's headers in 2.8-3.0 ms. The small set's pages took
  pip 0.38 s through a cold nestegg against 0.16 s direct, and its files' headers 0.37 against
  0.15 s: about 6 ms more a page and 6 ms more a file, the whole of the gap.

  - A median small page: the request reaches the app 0.7 ms after pip sends it, whether or not
    other work runs in the server; the upstream's headers come 3.7 ms later (2.9 ms to a bare
    ``requests`` session), its body and parse take 2.0 ms; pip has the page 1.2 ms after the
    app returns it.
  - A median small file: 0.8 ms to the app, 0.3-0.65 ms to the download's thread, its lock
    0.05-0.6 ms, the upstream's headers 3.0-3.8 ms, the part file 0.65-0.75 ms (a new file in a
    new folder costs 0.3-0.4 ms on this disk outside the server). pip has the last byte 2 ms
    after the upstream's headers, against 0.2 ms direct.
  - The own set's gap (0.9 s) is mostly its largest pages. pydantic-core's (15,057 files) took
    232 ms against 27 ms direct: its body read and parsed in 125-165 ms, its state written
    before the answer in 34-38 ms and its rendering in 41-55 ms (a page of more than
    ``later.MAX_FILES`` files).
    sqlalchemy's (6,796 files) took 112 ms against 14 ms.
  - The parse of pydantic-core's page alone took 105-170 ms, and 90-96 ms with the garbage
    collector off. In a whole cold run of the own set the collector ran 221 times for 83 ms,
    45 ms of it in two full collections.
  - The floor of any mirror between pip and this index: a proxy that only passes each page on
    with its file URLs rewritten by a regular expression, and streams each file, with no cache
    and no check, under waitress. Alternating rounds against direct and nestegg (6 on the small
    set, 5 on the own set): 1.13x the direct time on the small set (nestegg 1.25x that hour), and
    1.04x on the own set (nestegg 1.28x). On the small set nestegg is 0.13 s above it. On the own
    set it is 0.68 s above it, which is the parse, state and rendering of its large pages.
  - Decoding a page whole with ``json`` (in C) and writing pip's page from the decoded entries,
    with no model, took pydantic-core's and numpy's pages from 138-170 and 40-46 ms to 100-130
    and 24-32 ms, before any check of the entries. A second renderer for that is not worth it,
    and pydantic-core's page decoded whole is 16 MB of objects (23 MB at the peak of the
    decoding) for its 6.9 MB of text, where the peak RSS allows 60 MB in all.
  - Tried and not kept:

    - the part file made in a thread of its own while the upstream answers: 1.4-1.8 ms less a
      file in 3 of 4 loops of 35 files (0.5 ms more in the fourth); with pip (10 alternating
      rounds) 1.67 against 1.60 s, within the rounds' spread (kept since, made from before the
      lock is taken: see *the cold rows' floor*);
    - a GIL switch interval of 0.5 ms: no change in 3 alternating runs;
    - the collector's first threshold at 20,000: no change. With the collector off, the own set
      took 3.82 against 4.01 s (6 rounds), but a server cannot turn it off in its host's
      process (tox's).

- *A set held out, and the page a client asked for last* (3d2f978). A third set, kept out of
  the repository: 45 projects uploaded before June 2025 and pinned by uv for CPython 3.11 on
  Linux (boto3, botocore, s3transfer, jmespath; sphinx with docutils, babel and its six
  sphinxcontrib packages; coverage, pytest-cov, lxml, pillow, mypy, black, pyyaml, tomli, attrs;
  and their dependencies), measured by ``run.py --requirements`` (3 rounds, no small set, no tox).

  - Warm: 2.12 s, 0.76x the upstream direct (2.77 s) and 1.39x faster than proxpi (2.95 s);
    the static pages with absolute URLs took 1.87 s. The same requests sent one after another
    (10 alternating rounds, one connection) took 0.44 against 0.30 ms a page and 0.52 against
    0.31 ms a file, the median, 19 ms a run in all; 8 alternating pip rounds read 2.28 against
    2.20 s.
  - Cold: 3.22 s against 2.44 s direct (1.32x), 1.08x with the upstream 20 ms farther. Warm uv:
    2.17 s against 4.65 s direct. A fresh process's slowest page: 2.9 ms.
  - Its peak RSS read 63 MB (the synthetic workloads 51 MB). A replay of its cold pip run, the
    same again and the warm uv install in one process peaked at 57 MB (55 MB in the uv install),
    so which workload took the benchmark's process to 63 MB is not known.
  - Timed request by request, its files boto3 and botocore took pip 31-47 and 36-69 ms to
    their headers through a cold nestegg, against 3.2-3.6 ms direct; so did the own set's
    pydantic-core, 65-100 ms. Each had its page read again from its state file: pip had asked
    for that page, and a page made ahead for a wheel got just before (``PagesAhead``, botocore
    for boto3's wheel, typing-extensions for pydantic's) dropped it from memory, the pages in
    memory being held to 1,000 files but the one a client asked for last. Work in the
    background now leaves that page alone, one a request got from its rendering included: 8 ms
    for boto3's and botocore's files, 8-14 ms for pydantic-core's. The tree before and this one,
    in alternating rounds, pip's requests to the files' headers summed: the own set 0.357
    against 0.286 s (6 rounds; the runs 3.670 against 3.546 s); the held-out set 0.385 against
    0.347 s (6 rounds; the runs 3.433 against 3.544 s) and 0.471 against 0.391 s (8 rounds;
    3.994 against 3.801 s). Whole runs alone are too noisy to show it: 8 alternating rounds read
    4.64 against 4.03 s (own set) and 4.16 against 4.11 s (held-out set), each spread over
    3.4-5.1 s. A page made ahead is now held beside the client's, two pages where one was; the
    trim once the mirror is quiet drops both (``MirrorIndex.trim``).
  - Run 16 (52a6d42, the code of that change) came in a slow hour: the upstream
    direct took 2.69 s cold and 2.74 s warm (2.41 and 2.55 s in run 15) and the load average
    rose to 1.28. Its warm run at once after the cold one read 1.21x a later one; the tree
    before and this one, 6 alternating rounds of a cold, an at-once and a later warm run in one
    server, took 4.170 and 4.130 s cold, 2.696 and 2.713 s at once, 2.614 and 2.715 s later.
    That row, and the own set's cold 1.52x, were the hour. The small set's cold row read 1.17x
    the direct time, the first run under 1.2x near the upstream: one run in such an hour
    shows no more than run 15's 1.30x.

- *Pages made ahead give way* (c6430de..4d13ed4). Timed request by request on the held-out set
  cold, boto3's page took pip 98 ms with pages ahead and 56 ms without them (6 alternating
  rounds): a page made ahead (click's, for black's wheel) was parsed beside it under one GIL.
  Pages ahead off took the run from 4.00 to 3.70 s in one set of rounds and from 4.34 to 4.13 s
  in another (6 and 10 rounds): they saved small pages 3-15 ms each and cost the large ones more.

  - A thread now says when it works for a client (``waits.serving``: each request a worker
    serves, a download a client waits on; not while it waits on another thread). A page made
    ahead waits (20 ms at most at a time) between two pieces of the upstream's answer, before its
    rendering and before each piece of work it left for later, while one does, unless a request
    waits for that very page; its request to the upstream is still sent at once.
  - Held-out set, cold, alternating rounds against the tree before: 4.46 against 4.06 s
    (8 rounds; the upstream direct 3.48 s, pages ahead off 4.25 s); with the rendering and the
    work left for later giving way too, 4.27 against 3.87 s (8 rounds; direct 3.04 s). pip's page
    requests summed 0.94 -> 0.80 s and 0.84 -> 0.77 s, its file requests 0.48 -> 0.45 s and
    0.43 -> 0.42 s; boto3's page 109 -> 77 ms and 89 -> 63 ms, botocore's 127 -> 101 ms.
  - The stream parser decodes the entries its text holds whole, up to the last separator, in one
    call, and makes each file by position (``DistFile.listed``): coverage's page 60 -> 50-54 ms,
    botocore's 32 -> 28-30 ms (the best of 40, alternating trees).
  - ``nestegg serve`` freezes what the started process holds (``gc.freeze``): a cold held-out run
    had two full collections of 14-18 ms, one of 1-7 ms after.
  - ``run.py`` on the held-out set at 4d13ed4 (3 rounds, a load average of 1.1-1.6): cold 3.38 s
    against 2.72 s direct, 1.24x (1.32x before); warm 2.21 s, 0.66x the direct 3.36 s and 1.50x
    faster than proxpi (3.31 s); at once after the cold run 0.94x a later one; warm uv 2.28 s
    against 5.51 s; a fresh process's slowest page 3.0 ms; peak RSS 60 MB (62 MB with
    ``compatible_only``). 20 ms farther from the upstream it read 1.16x (1.08x before), as run 17
    read 1.17x and 1.05x (1.07x and 1.01x): alternating rounds through the same latency proxy
    (5 rounds) took 6.12 s before and 6.11 s after, the upstream direct 5.56 s (pip's pages
    1.66 -> 1.54 s), so those readings were the hour. Counting a page's fetch as work only once
    the upstream answers took 6.04 s there, and the held-out set near the upstream from 4.02 to
    4.22 s (6 rounds; pages 0.73 -> 0.82 s): not kept.
  - Tried and not kept: the work a request leaves for after its answer, and a download's once its
    client has every byte, giving way too (4.70 against 4.74 s, 8 rounds); a GIL switch interval
    of 0.5 ms (4.52 against 4.57 s, 5 rounds); a render of the page from plain strings joined once
    (17.9-18.7 against 18.5-19.8 ms for coverage's page).
  - Run 17 (9fdc8eb, whose code is 4d13ed4's) came in a slow hour: nestegg's start
    in-process took 49.3 ms (37.9 ms in run 16), its import 236 ms (199 ms), the upstream direct
    2.97 s cold and 3.40 s warm (2.69 and 2.74 s), and the load average rose to 1.41. The own set
    read 1.33x the direct time cold (1.52x in run 16), the small set 1.29x (1.17x); warm 0.74x and
    0.72x the direct time, 1.23x and 1.27x faster than proxpi (1.39x and 0.99x). Pages/s at 8
    clients read 905 and 877 (1,050 and 980): the tree before and this one, 10 alternating rounds
    of 3 s at 8 clients of the small set's pages, served 1,240 and 1,258 pages/s.

- *A downloaded file in larger pieces* (bb2ad7d). One read of a TLS socket gives one record,
  16 KiB: a cold 13.6 MB wheel (botocore's) came in 834 pieces, each a write, a flush, a hash
  update and a wake-up of its readers, each of them a send. The reads that find their bytes
  already received within 2 ms are now joined, up to 256 KiB (about 52 pieces): no byte waits in a
  piece for bytes the upstream has not sent yet (a first cut that read on regardless held the
  bytes of an upstream that paused, which 4 tests of held downloads caught). That wheel reached a
  client in 76 ms instead of 109 ms (35 ms direct; 4 rounds, a fresh server each), and in 83 ms
  against 119 ms with the reads checked first. In pip's cold runs, alternating rounds against the
  tree before, the time from a file's headers to pip's next request (its body, mostly) summed
  0.450 -> 0.368 s for the own set (numpy's wheel 118 -> 85 ms, pandas' 111 -> 79 ms; direct 60
  and 61 ms; 6 rounds) and 0.514 -> 0.450 s for the held-out set (6 rounds); with the reads
  checked first, 0.404 -> 0.336 s for the own set (numpy's wheel 123 -> 87 ms; whole runs 3.88 ->
  3.85 s, direct 2.93 s; 6 rounds). 256 KiB reads by the readers or a larger waitress watermark
  were no faster (4 rounds each, the three largest wheels).

  - Looked at and not changed: a cold file's request takes 4.5-5 ms more than direct before its
    headers: about 0.7 ms to reach the app, 0.5 ms to start the download's thread, 1 ms of
    folders, lock and part file (each folder walked without following links), then the upstream's
    answer (3.4 ms, as direct), and 2 ms until pip has the headers. A cold page's answer reaches
    pip 1.5-2 ms later when the work left for after it starts at once than when its thread first
    yields the CPU (median of 90 pages, requests as the client), but pip's whole cold run took as
    long either way (4.08 against 4.09 s, 8 rounds): that work then overlaps pip's reading of the
    page instead.
  - Run 18 (15bff39, with the first cut of the joined reads; the table before run 19's) came in
    an hour when the upstream direct was slow for the own set (3.48 s cold, 2.97 s in run 17) and
    fast for the small one (1.22 s, 1.38 s): nestegg took
    3.84 s and 1.67 s cold (3.94 s and 1.78 s in run 17), 1.10x and 1.37x the direct time. Warm,
    the small set read 1.12 s, 0.84x the direct 1.32 s and 0.98x proxpi's 1.09 s, where its pages
    served as static files took 1.25 s and with absolute URLs 1.03 s: pip's floor, within the
    rounds' spread. Pages/s at 8
    clients read 670 and 744 (905 and 877): the tree before and this one, 8 alternating rounds of
    the same load outside the benchmark, served 1,612 and 1,540 pages/s (each round 1,148-2,356).
    The held-out set through ``run.py`` at d6469c1: cold 3.77 s, 1.37x the direct 2.75 s (1.24x at
    4d13ed4); warm 2.12 s, 0.75x the direct 2.81 s and 1.55x faster than proxpi (3.27 s). Cold,
    8 alternating rounds just after on a quiet machine: 3.60 s before this change, 3.63 s after,
    2.48 s direct (medians, pip's exit not counted); its time from a file's headers to its next
    request 0.53 -> 0.42 s, the rest within the rounds' spread. What nestegg adds to a cold run
    is about a second, most of it CPU (7 pages of 2,000-9,700 files parsed and rendered, its share
    of 90 requests; its process used 1.6-1.9 s of CPU in such a run, pip 2.4-2.7 s), so the ratio
    follows the upstream's speed: 1.24-1.45x across these hours.
- *A cold run's fixed time, request by request* (5aa6f6f). Timed on one clock in pip and in the
  server, small set, in pip's order (a page, then its file): a small cold wheel had its headers
  5.9 ms after pip asked (median of 105; direct 1.6-2.9 ms). Before the upstream is asked: 0.6 ms
  to reach the app, 0.3 ms to find the file not cached, 0.2 ms to start the download's thread,
  0.35 ms for its lock and 0.2 ms for leftover parts. After the upstream's answer (2.4 ms): 0.4 ms
  to make the part file, 0.5 ms until the waiting request wakes (the download's thread keeps the
  interpreter until a small file is whole), 0.9 ms until pip has the headers. A small cold page:
  0.6 ms before the upstream is asked, then its parse (5.9 us a file; json's C decoder alone takes
  1.7 us) and its rendering (1.5 us a file), for 260 files a page on average. The server used
  0.4-0.5 s of user and 0.3-0.45 s of system CPU in such a run (pip 0.85-0.9 s, as direct); perf
  put 12% of its samples in ext4's search for a free inode (each lock file, part file and
  project folder), which passes over the inodes freed lately: every round removes a temporary
  cache.

  - Looked at and not changed (alternating rounds against this tree): asking the upstream before
    the file's lock is taken, in a thread of its own, had each file's answer 0.4-1.3 ms sooner
    (files summed 0.335 -> 0.289 s, 8 rounds), but a second process on the same nest then asks
    the upstream for a file the first one is downloading (``tests/test_races.py``'s one download
    a file fails); asked once the lock is taken, with the part file made meanwhile, it came no
    sooner (7.10 against 6.85 ms, 6 rounds). The nest's folders kept open and walked from there,
    a switch interval of 0.5 or 1 ms (5 ms by default), no metadata taken from a cold wheel after
    its answer (1.448 against 1.475 s, 10 rounds) and no fsync were all within the rounds'
    spread.
  - The small set through ``run.py``, nestegg and proxpi only (5 rounds): warm 1.03 s, 1.15x
    faster than proxpi (1.19 s), 0.81x the direct 1.27 s, with its pages as static files 0.99 s:
    1.3x faster than proxpi on this set would be under pip's floor. Cold 1.82 s, 1.33x the direct
    1.37 s; 20 ms farther 1.11x.
- *The cold rows' floor: a bare proxy* (681380d). ``benchmarks/bare.py`` does what any mirror
  made of waitress and requests does cold, and nothing more: each page parsed and written again by
  json's C code, each file streamed as it comes and written to disk; no lock, no check, no page
  kept. In run 19 (681380d) it took 1.18x the direct time for the small set and 1.24x for the
  own set, where nestegg took 1.31x and 1.29x; 20 ms farther, 1.10x and 1.15x against nestegg's
  1.04x and 1.16x, and 1.11x against 0.84x for the small set's roots with their dependencies
  (nestegg fetches their pages ahead). In run 20 (55e4cb0), 1.05x and 1.65x against 1.38x
  and 1.24x (its own set's large pages cost it most: json writes each whole page again), 1.04x
  and 1.15x against 1.06x and 1.09x farther, 1.04x against 0.86x for the roots. In run 21, this
  table's (ad6ad76, a cold file's inodes below), 1.12x and 1.27x against 1.23x and 1.26x, 1.02x
  and 1.31x against 0.99x and 1.22x farther, 1.09x against 0.87x for the roots. In run 22
  (167d942, the lock file below), 1.53x and 1.22x against 1.39x and 1.23x, 1.09x and 1.37x
  against 1.04x and 1.25x farther, 1.07x against 0.84x for the roots. In run 23 (1e58e96), 1.03x
  and 1.47x against 1.28x and 1.39x, 1.09x and 1.20x against 1.02x and 1.09x farther, 1.09x
  against 0.85x for the roots. Three rounds
  each, with nestegg's cold run started with the peers beside it and the bare proxy's alone: the
  runs disagree on the small set by more than its whole difference. The 1.2x goal near the
  upstream lies at that floor. On the small set outside the benchmark, alternating rounds, pip's
  requests timed in its own process:

  - 8 rounds: direct 1.15 s, the bare proxy 1.27 s (1.11x), nestegg 1.25 s (1.09x). nestegg's
    pages came sooner (0.21 s summed, against 0.28 s; direct 0.13 s) and its files' headers later
    (0.21 s against 0.14 s; direct 0.13 s).
  - 6 rounds, each file timed to its last byte: direct 1.20 s, the bare proxy 1.47 s (1.22x),
    nestegg 1.49 s (1.24x). The files took 0.18, 0.22 and 0.32 s in all, nestegg's difference
    all before their headers: the steps of the bullet above, 2-3 ms a file.
  - The bare proxy's fixed time, per request (an earlier cut of it, 3 rounds): 0.5 ms from pip's
    request to the app, the upstream's headers 2.6-2.8 ms after that (pip's whole request direct:
    2.0-2.3 ms), and 0.55-0.75 ms from the app's answer to pip's end of it. That is the hop
    itself, about 2 ms a request of waitress's threads and of requests, which any mirror on this
    stack pays.
  - Tried again and not kept: asking the upstream for a file before its lock is taken, as above,
    over 10 alternating rounds. The files' headers came 12 ms sooner in all (0.212 -> 0.200 s),
    the whole run no sooner (1.318 against 1.326 s).
  - A cold file's inodes (ce725d9, ad6ad76). A new file or folder on this disk took 0.03-0.2 ms
    in a quiet hour and 0.4-0.8 ms (2 ms at worst) in a busy one: ext4's allocator passes over
    the inodes deleted lately (``recently_deleted`` under ``ext4_create`` in ``perf``), and each
    round deletes a nest. Before its first byte a cold file waited for four, where the bare
    proxy makes one: the project's lock folder (0.8 ms timed in the server that hour), its lock
    file (0.5-0.7 ms), the project's files folder and its part file (1.4 ms both). The lock
    folder is now made once the project's page is answered, while pip reads it, and the part file
    with its folder by another thread while the download takes its lock and asks the upstream;
    the lock file is left. Alternating pip rounds of the two trees on the small set: 1.758 ->
    1.685 s (16 rounds; its files 0.360 -> 0.340 s to their last bytes), and 1.610 -> 1.608 s
    in another hour (10 rounds; the files 0.362 -> 0.311 s, direct 0.167 s). In a quiet hour
    the gain is lost in the spread (35 files, 2 loops of each tree: their headers at 7.6 and
    6.2 ms before, 6.3 and 6.8 ms after). The server's CPU over a cold small-set run, before:
    0.31 s in Python and 0.31 s in the kernel, against 0.21 and 0.07 s for the bare proxy (4
    rounds); its walks that open each folder from the nest's root without following a link come
    to 5,400 ``openat`` a run, 17 us a walk, about 17 ms.
  - A cold file's lock file (e434936). Its path is what excludes another process, an older
    nestegg's too, so it stays where it was; it is now a *blank*: a file made with no name
    (``O_TMPFILE``) by the part makers during an earlier download, four kept ready, named with
    ``linkat`` when wanted (``storage.blanks``). Outside nestegg, after 3,000 files made and
    removed, a new lock file took 0.25-0.8 ms (median) and a blank named 0.02-0.04 ms. Timed in
    the server over 10 alternating rounds of the small set (350 cold files a tree), the lock took
    0.37 ms before (median; 0.40 mean) and 0.06 ms after (0.11 mean), in an hour when a new file
    took 0.25-0.4 ms; the files' headers reached pip at 5.59 and 5.39 ms (median), and the whole
    runs moved within their spread (1.073 s before, 1.116 s after; direct 0.948 s, the bare
    proxy 1.064 s). The first cold file of a process still makes its lock file.
- *Past the TTL* (167d942). A fresh mirror past the TTL (the next tox run after it) asked the
  upstream for each page again as pip asked for it: a round trip, and a body whose digest says
  it is the one kept, on pip's way for each page, 7.7 ms a small page (the median) against
  2.1 ms for pip straight from the upstream. In run 21, with ``ttl: 0``, it read 1.03x and 1.07x
  the direct warm run. The first page asked past its TTL now has the pages checked in the same
  run as it asked again in the thread of the pages ahead (``PagesAhead.together``; the times of
  the store's last checks, a minute apart or more parting two runs), and this row is measured
  with ``ttl: 10``, 10 s after the restart: with ``ttl: 0`` every request asks the upstream, as
  configured, and nothing is asked together (a TTL under 5 s). Alternating rounds of the two
  trees outside the benchmark, ``ttl: 5`` and 5 s after the start: the small set 1.123 -> 0.880 s
  (5 rounds, direct 1.054 s; pip's 35 page requests 0.32 -> 0.08 s a run), the own set 2.729 ->
  2.321 s (3 rounds, direct 2.422 s; its pages 0.62 -> 0.12 s a run). In run 22, this table's,
  0.91x and 0.96x the direct warm run.
- *The file pip takes from a page, guessed* (ba0ee1c). pip asks for a small wheel (one shown without
  metadata) as soon as it has read its page; the wheel's download began with that request, a round
  trip to the upstream after pip's own. The wheel pip most likely takes (the newest final release's,
  ranked by tags as pip ranks them; the file pip 26.3 chose for each of the 52 projects it reported
  in a dry run of the two sets' names, unpinned) now begins downloading once the page is answered
  and written, while pip reads it (2 ms after a page sent from its file). Alternating rounds outside
  the benchmark, 8 each: the small set unpinned, files 7.88 -> 5.31 ms from pip's request to their
  last byte (median; direct 2.91 ms), pages 6.25 -> 6.88 ms, the run 1.29x -> 1.17x the direct time
  (the bare proxy 1.20x); its roots unpinned, pip finding the rest, files 6.22 -> 3.52 ms (direct
  1.93 ms), the run 1.28x -> 1.17x. A pinned set's guesses are wrong: after two wrong of its last
  eight none is acted on, and the small set pinned read 1.275 s with guesses and 1.438 s with
  ``fetch_ahead: no`` (10 rounds, medians; pip's requests summed 5.99 s against 6.19 s). In run 23,
  this table's, the unpinned row read 1.40x direct against the bare proxy's 1.32x (3 rounds).

  - *Pinned sets, dated* (d81fbef, 1c6f977). A pinned set's newest releases are not the ones
    pip takes (5 of the small set's 35, 1 of the own set's 34), but a lock file pins most
    projects to the release newest on the day it was made. A second guess takes the newest
    release uploaded by the latest upload time of the files that pip took lately, and the way
    right more often lately is acted on: 33 of the small set's 35 right, 22 of the own set's
    34 (its first files tell the day late). Alternating rounds outside the benchmark (8 each,
    twice for the small set): the small set's files 7.21 -> 5.65 ms and 6.59 -> 4.31 ms from
    pip's request to their last byte (median; direct 2.2 ms), the run 1.33x -> 1.22x and
    1.21x -> 1.13x the direct time (the bare proxy 1.22x and 1.16x); the own set's files 3.09
    -> 2.86 s in all, the run 1.26x -> 1.24x (the bare proxy 1.27x). A wheel over 1 MiB is
    guessed only once its way's last eight were right: a wrong guess of numpy had cost that run
    16 MB. Begun before the page's writing instead, the guess made the small set 1.34x (1.21x
    after it, 8 rounds).
  - Begun before the answer, the download made the project's files folder while the page was
    being written, and a page is not saved while that folder's change settles: pip's rendering
    was left unsaved. It begins after the page is written, a millisecond or so later.
  - Pages made ahead, a dozen at a time (a wheel's requirements), dropped each other from memory
    before pip asked for their files: each cold file then read its page again, 0.94 ms (median,
    8 rounds of the small set's roots), 0.12 ms once they stay (3d0362c, up to 10,000 files).
    Peak RSS of a server through cold, again and uv's warm install of the own set, 2 rounds
    each: 58.8 and 65.6 MB before, 55.9 and 57.7 MB after (uv's run sets the peak, and varies).
- *Large pages, and pages made ahead then dropped* (fbca5b8, eb2db56). A second held-out set, 72
  projects resolved for CPython 3.11 (fastapi, aiohttp, scipy, pyarrow, grpcio, celery, pylint and
  their dependencies; 150 MB of wheels, 4 pages of 9,000-15,000 files), at ab34b05 in 3 rounds:
  cold 1.24x the direct time (the bare proxy 1.34x), warm 0.86x, 1.32x faster than proxpi, peak
  RSS 71 MB. Its cold pages cost 0.78 s a run more than direct, 485 ms of it grpcio's,
  pydantic-core's, aiohttp's and regex's: parsed (grpcio's 11,343 files in 51 ms idle, 15 ms of
  it ``json.loads``), then state written (16 ms) and rendered into its file (18 ms) before the
  answer. Now a page over 6,000 files is answered from a temporary file it is rendered into, its
  state written and the file kept after the answer: those pages 15-22 ms sooner each (three runs
  of 6 rounds), no run-level change seen in the noise. Pages made ahead past 10,000 files of
  them were dropped from memory before pip asked, answered from their renderings unguessed, and
  read again on pip's request for the file (14 reads, 72 ms a run: yarl's 24 ms). With none of
  its files cached, such a page is now read once the answer is out and its file guessed: those
  files 25.8 -> 2.5 ms (yarl), 24.9 -> 3.0 (multidict), 38.2 -> 19.8 ms (sqlalchemy). Both
  changes, 6 alternating rounds twice: medians 6.03 -> 5.45 s and 5.45 -> 5.55 s, means 5.96 ->
  5.47 s and 5.63 -> 5.39 s (direct 4.50 and 4.35 s); the own set unchanged (8 rounds), the small
  set untouched (no such page). Held in memory up to 16,000 files instead, the pages saved as
  much, but a cold run's peak RSS went from 56-68 to 67-77 MB.

  - *That set's cold run, request by request, and what did not move it* (c11ff63). Eleven
    alternating comparisons with the direct run (1-6 rounds each, one hour) put nestegg at
    1.15-1.34x its time, median 1.24x; the bare proxy, in three of them, at 1.24-1.39x. From pip's
    requests (timed in its own process, a dozen runs or more each way): its own time between
    requests is about the same through nestegg (2.6-3.4 s, direct 2.7-3.2 s), its pages take
    0.99-1.26 s (direct 0.24-0.39 s), its files 0.58-0.81 s (direct 0.38-0.49 s). Of the pages'
    775 ms more in one run: grpcio's, pydantic-core's, aiohttp's and regex's 370 ms,
    sqlalchemy's 59, numpy's 34, seven more 10-25 ms each, and 62 pages of under 20 ms 230 ms
    (4.4 ms each, median). Replayed in the process from a local copy of those pages
    (no network), a large page's cold answer takes 7.2-7.5 us a file (grpcio's 11,343 files
    78-85 ms), of which the decoding of its JSON 1.3-1.4 us; its parse, model and rendering are
    the rest. The files' 146 ms are small wheels (9-10 ms against 2-3 ms direct): pip asks for one
    2 ms after its page, and its guessed download begins once the page's folder, state and
    rendering are written (2.5-3 ms after the answer). A request that comes while such writes run
    (35 of 147) waits 2.1 ms (median) for the server to take it, 0.5 ms otherwise. Tried, each
    within the rounds' spread (nestegg's medians, the tree before second): the guess begun before
    the writes (6 rounds: 5.18 against 5.06 s), downloads not synced to disk (4: 5.44 against
    5.37 s), a GIL switch interval of 1 ms and of 0.2 ms (4: 4.96 and 4.95 against 5.04 s), the
    writes after an answer giving way to other requests (4: 4.57 against 4.67 s), the background
    threads at nice 10 (6: 5.33 against 5.28 s), the writes left for 20 ms without requests (6:
    5.46 against 5.37 s; pip's own time rose), ``pages_ahead: no`` (5: 5.13 against 5.12 s); and,
    in the process, a ``Hashes`` made through its slots (341 against 313 ns) and pip's JSON
    written 256 entries at a time (the same). ``fetch_ahead: no`` took 5.66 against 5.12 s: the
    guesses are a tenth of the run. pip's page written straight from the decoded entries, with
    every check the model makes (the same bytes, compared), took as long as the model's own
    parse and rendering or longer: grpcio's 73 against 68 ms, pydantic-core's 105 against 94,
    aiohttp's 80 against 60 (best of 7, in the process). In Python the checks and the writing
    cost what the model does, so a model made after the answer would save nothing.
- *uv cold: pages made again for its files, and beside its downloads* (5f0c070, d1699dc). No row
  measured uv cold before (see *Cold uv rows*). On the second held-out set it took 1.40-1.46x the
  direct time (6 alternating rounds, three times), where pip cold took 1.17x that hour. uv asks
  for all 72 pages at once, then for every wheel's metadata, then for all the files, and unpacks
  them as they come. By its metadata requests every page but the last was dropped from memory
  (``MAX_FILES``), and each metadata and each file request made its page again from its state:
  216 state reads a run, 11.8 s summed over the threads that waited on them, 60-100 ms of the
  GIL for a page of 15,000 files. A file's entry is now read from the state of a page not held,
  within its TTL, without the page (``read_entry``: the filename column decoded until the name is
  found, then the one line of each other column that holds its values): 5.4 ms against 47 ms for
  pydantic-core's whole state, 3.8 against 32 ms for grpcio's, in an idle process; none of those
  216 reads is left but the 72 the pages made again after the install make. Those started a
  second after uv's last request, while it was still reading 72 answers (1.35 s of CPU beside
  its unpacking, py-spy): the background now also waits for a download a client reads
  (``Downloads.serving``) and for an answer not all sent (``Clients.sending``). Alternating
  rounds against the tree before (d687a76), medians: 10.06 -> 9.64 s with the first change
  (6 rounds, direct 7.20 s), 10.45 -> 9.76 s and 9.53 -> 8.49 s with both (6 rounds each, direct
  7.30 and 6.46 s): 1.43-1.48x -> 1.32-1.34x. The small set cold through uv: 1.68 -> 1.60 s (4
  rounds), under uv's own 3.46 s direct. pip's cold run of the held-out set unchanged: 5.21
  against 5.27 s (4 rounds, direct 4.45 s). What is left of uv's cold run is the downloads' own
  work on the two cores uv unpacks on: the server used 2.8 s of user and 1.0 s of system CPU in
  a run of 8-10 s. Through ``run.py`` with its new cold uv rows (2d2edcd, 3 rounds, nestegg and
  proxpi): 5.89 s against 5.51 s direct (1.07x), proxpi 8.54 s; uv's warm install there read
  4.93 s against 3.71 s direct and 5.02 s from ``--find-links``, uv's own time straight from
  the index swinging from 1.5 to 7 s between runs of an hour.
- *Looked at and left* (d1699dc). With the garbage collector off in the server, the held-out
  set's cold pip run took 5.69 against 5.66 s (8 alternating rounds): its 90 ms of collections
  are not on pip's way. With the installers' own caches on (warmed once, as a desktop keeps
  them), the small set's warm pip download took 0.74x the direct time through nestegg (6 rounds;
  pip revalidates each page with both) and uv's warm install 0.63x. A large page passed on with
  its file URLs rewritten by a regular expression, in C, takes 11-18 ms (grpcio's 14 ms, 5 MB)
  against 68-112 ms parsed, modelled and rendered; on the held-out set that is about 0.3 s of a
  5 s cold run, with a second renderer whose pages differ from the model's (the upstream's
  fields and order, no check of what a client never asked for): not taken.
- *Peak RSS, workload by workload, and uv's pages at once* (d18636e, 4efb343, 747fa06). The
  server's VmHWM read after each workload of a run of the own set (3 rounds): 37 MB started, 56-60
  MB after the cold pip download, and in one round of three 56 -> 70 MB in uv's warm install, the
  first to ask for uv's renderings: made from the pages' states, the small ones side by side and
  the 11 pages with states over 256 KiB one at a time (pydantic-core's 5.6 MB state, 15,000
  files, among them), on a heap the cold run left in pieces. Replayed with 3 s of quiet before
  it, the peak rose 0-4 MB in 5 runs of 6 and 14 MB in one; after 25 s of quiet (the peers' cold
  runs in the benchmark) RSS rose 50 -> 60-66 MB in 3 runs of 5. The cold uv installs, whose
  servers no row counted, peaked at 75-82 MB: with 13-15 pages fetched at once, each page's model
  grew as it was parsed, a dozen large ones side by side (tracemalloc at the peak: the models of
  24,000 files, 16 MB, two thirds of it the strings json made), and a 16 MiB buffer, the
  ``read(limit + 1)`` of a metadata file of a few kilobytes (each thread that read one took
  that much up front; ``read_at_most`` takes what the file holds). Now past 256 KiB of its
  answer a client's page is parsed on only while no other large one is (``LARGE_PAGE_BYTES``,
  waiting at most 2 s; pages fetched ahead never wait). Alternating runs against the tree
  before: cold uv of the second held-out set, peak 94.5 -> 80.5 MB (medians of 10), 8.60 ->
  8.53 s; of the own set 72-78 -> 66-72 MB (6 each); pip's cold run of the held-out set 4.56 ->
  4.47 s, 62 MB both (5 each). The same held-out set warm (8 alternating rounds): pip through
  nestegg 2.73 s, its pages served as static files with absolute URLs 2.68 s, direct 3.35 s
  (0.815x and 0.80x); the server's own time in each run 50-90 ms (timed in waitress). uv's warm
  install there: 6.05 s through nestegg, 6.19 s direct, 6.40 s from ``--find-links`` (5 rounds):
  uv's own unpacking. ``MALLOC_ARENA_MAX=2`` changed no peak (54 and 58 against 54-55 MB). Run 29
  (75a43ba): the cold uv installs peaked at 74 MB (proxpi 189 MB, devpi 375 MB), the rest at 74
  MB (not read workload by workload there; by the reads above, uv's warm install). uv's
  renderings made from the states' columns, with no model, would spare that: not done. The
  second held-out set through ``run.py`` (42c328a, 3 rounds, nestegg and proxpi, ``--no-tox``):
  cold uv 7.14 s against 6.45 s direct (1.11x), proxpi 9.75 s, its servers' peak 91 MB (the
  largest of 3; four more runs outside it read 77-83 MB; proxpi 258 MB); the other workloads'
  peak 88 MB (77 MB in the last stop's run of this set); cold pip 1.43x the direct time, the bare
  proxy 1.52x (an hour when proxying cost more); warm pip 0.81x, 1.26x faster than proxpi; warm
  uv 3.66 s against 5.61 s direct.
- *A fresh process on another port* (de6fc9b). A page's file URLs start with the base URL the
  client reached, so a mirror started on another port (a test's on port 0, another project's tox
  run, a server moved) or reached by another host name found no rendering of its own: each page
  was made from its state, the model parsed and rendered again (pydantic-core's 79 ms, and 12 MB
  of peak RSS). It is now made from the rendering saved for another base from the same state
  within its TTL, the start of each file URL replaced a block at a time (``render.rebased``): no
  state read, no model. A server filled by pip, then started on a new port and asked for each
  page once as pip asks (alternating rounds against the tree before, medians): the own set's
  slowest page 79.3 -> 11.6 ms (pydantic-core), the median 3.73 -> 1.25 ms, all 34 pages 320 ->
  71 ms, peak RSS +12 -> +2 MB (6 rounds each); the small set's slowest 21.5 -> 4.1 ms, all 35
  139 -> 56 ms (6 each); the second held-out set's slowest 81.9 -> 11.6 ms, all 72 654 -> 130
  ms, +13 -> +2 MB (4 each). pip's warm download through such a process: the own set 1.90 ->
  1.67 s, peak +14 -> +2 MB (8 each); the small set 0.70 -> 0.60 s, the second held-out set 3.86
  -> 3.37 s (6 each). The new rows *fresh process on another port* measure it in each run (run
  30, df4569b: slowest page 10.7 ms, median 1.0 ms; the small set's slowest 2.9 ms). The
  largest page stays over 5 ms: a 5.5 MB rendering read, its URLs replaced, written and hashed
  for its ETag (the same ETag as a rendering made from the page for that base). The second
  held-out set through ``run.py`` (d0f5b4a, 3 rounds, nestegg and proxpi, ``--no-tox``): on
  another port the slowest page 8.9 ms, the median 0.9 ms; cold pip 1.29x the direct time (the
  bare proxy 1.54x); warm pip 0.84x, 1.46x faster than proxpi; warm uv 6.23 s against 5.07 s
  direct (proxpi 6.70 s); the warm run at once after the cold one 1.21x a later one (4
  alternating runs outside, the tree before and after this change: 3.40 and 3.27 s, cold 4.87
  and 4.83 s); peak RSS 79 MB, the cold uv installs' 84 MB (proxpi 322 and 256 MB).
- *Another port's page answered first* (70cc7d4, 8994423). A page made for a new base was written
  and hashed before its answer (the ETag of its bytes), then sent from its file: pydantic-core's
  took 11-14 ms. To an installer it is now answered first: a large one sent as it is made (its
  length counted first, or the other's when the new base is as long), a small one made whole and
  held; its ETag comes from the other rendering's and the two bases (``rebased_etag``), and it is
  written once the mirror is quiet (written after each answer, it took 1-3 ms of the next
  request's). A server filled by pip, started on a new port, each page asked once back to back
  (alternating rounds against the tree before, medians): the own set's slowest page 12.8 -> 6.6
  ms (pydantic-core), the median 1.57 -> 0.88 ms, all 34 79 -> 46 ms (6 each); the small set's
  slowest 5.9 -> 3.0 ms, all 35 57 -> 34 ms (6 each); the second held-out set's slowest 13.8 ->
  7.1 ms, all 72 146 -> 87 ms, peak RSS +1.4 -> +3.2 MB (4 each). pip's warm download through
  such a process: the own set 1.77 -> 1.70 s (8 each), the small set 0.67 s both (8 each), the
  second held-out set 3.75 -> 3.61 s (6 each). The largest page stays over 5 ms: its 5.5 MB go
  through waitress's buffers a piece at a time (a file of them goes by ``sendfile``: 3.9 ms on
  its own port). Run 31 (e021dbd; the review's fixes after it change only when such a page is
  written): another port's slowest first page 6.6 ms (run 30: 10.7 ms), the median 1.0 ms, the
  small set's slowest 1.8 ms (2.9 ms). Its cold rows missed with the bare proxy as far off (own
  set 1.23x the direct time, the bare proxy 1.25x; small set 1.39x and 1.38x): an hour when
  proxying cost more, on no path this change touches. The second held-out set through
  ``run.py`` (2624301, 3 rounds, nestegg and proxpi, ``--no-tox``; a load average of 2.3-2.7 at
  its end): another port's slowest first page 9.0 ms (8.9 ms at d0f5b4a), the median 1.0 ms;
  the same port's 4.0 ms; cold pip 1.25x the direct time (the bare proxy 1.31x); warm pip 0.87x
  (its pages served as static files with absolute URLs 1.00x nestegg's time), 1.43x faster than
  proxpi; warm uv 5.45 s against 5.96 s direct; the warm run at once after the cold one 1.12x a
  later one; peak RSS 85 MB, the cold uv installs' 83 MB (proxpi 320 and 263 MB).
- *A third held-out set* (7fb0b14). 90 projects resolved for CPython 3.11 (boto3, django,
  flask, sqlalchemy, pandas, matplotlib, pillow, lxml, cryptography, google-api-core,
  opentelemetry-sdk, black, mypy, pytest, hypothesis, coverage, hatchling, setuptools, cython,
  numba, httpx, sphinx and their dependencies; 209 MB of wheels, 95,197 links, 11 pages of
  3,000-9,200 files), through ``run.py`` (3 rounds, nestegg and proxpi, ``--no-tox``): cold pip
  1.08x the direct time (the bare proxy 1.53x), 0.94x with the upstream 20 ms farther; warm pip
  0.88x, 1.24x faster than proxpi, its pages served as static files with absolute URLs 0.93x
  nestegg's time (5 alternating rounds outside the run: 4.17 against 4.19 s, the server's own
  time 60 ms a run by its access log); at once after the cold run 0.99x a later run; past the
  TTL 0.71x; warm uv 12.70 against 12.15 s (eight alternating installs outside took 3.3, 7.5,
  12.2, 14.7, 16.3, 16.4, 16.1 and 16.0 s, each later one slower, nestegg's and direct's
  alike); a fresh process's slowest page 2.1 ms, on another port 3.8 ms; peak RSS 82 MB (a
  replay: 63 MB after the cold pip run, 75 MB after the first uv install on the cache pip
  filled), the cold uv installs 86 MB (proxpi 267 and 249 MB). Its cold run page by page (the
  access log, one run): the 90 pages took 1.29 s, against 0.7-0.8 s for the same pages fetched
  from the upstream one after another; 56 were made on request (31 MB, 1.24 s), the 34 others
  answered in under 3 ms (made ahead); its files 0.34 s for 209 MB (fetched ahead). Each page's
  parse took 8.6 us of CPU a file entry in the server (7.0 us with pages and files ahead off),
  4.8 us outside it (coverage's page, from memory). The small set's cold runs, the same way: 35
  pages in 214-390 ms (3 runs) against 92 ms fetched directly; a tiny page's own cost, on a
  local upstream, 1.3-2.0 ms. Outside the run, cold pip through a fresh nestegg against direct
  in alternating rounds: the own set 2.39 against 2.00 s (1.19x, 6 rounds), the small set 0.98
  against 0.86 s (1.13x, 8 rounds); while another process wrote 128 MB files and synced each in
  a loop (a quarter of a core, and the kernel's writeback), the small set 1.38 against 0.92 s
  (1.50x, 5 rounds), though few of nestegg's own file system calls stalled then (strace: 4 over
  4 ms in a run); right after a uv install of the own set (as the run's order has it), 1.33x (4
  rounds), nestegg's runs slower round after round (1.06 to 1.55 s) where direct's stayed at
  0.91-1.16 s, and 1.20x with a sync between the two. After such an install its own answers
  took longer (4 runs, access log): the small set's pages 361-496 ms a run against 214-235 ms,
  its files 90-198 against 77-83 ms. A cold nestegg's work runs beside pip's on the two cores,
  and whatever else runs then takes from it (here most likely the kernel writing an earlier
  install back: right after one, the cores were idle, with 180 MB left to write); pip alone has
  a core to spare. A sync before each timed run, with 300 MB written 27 s before it, changed
  nothing (4 rounds: 1.21x with it, 1.09x without). Tried on another port's largest page and
  not kept: its pieces made in a thread of their own while the worker sends (6.1 -> 9.3 ms, the
  two passing the GIL), and a piece sent by the worker before it goes into waitress's buffers
  (5.5 MB in a bare waitress 2.8 -> 2.2 ms, the page 6.15 -> 6.06 ms).
- *Run 32, on a slower machine* (3fa12d8). An Intel Xeon of 2 cores where run 31 had an AMD EPYC:
  a bare interpreter took 107 ms to import requests and fetch a page (76 ms in run 31), the
  import of nestegg_core 288 ms (142 ms), its start in-process 43.7 ms (28.7 ms). Cold pip 1.24x
  the direct time for the own set (the bare proxy 1.32x), 1.09x for the small set (1.21x);
  outside the run, a fresh nestegg each time against direct in alternating rounds: the own set
  3.81 against 3.11 s (1.22x, 6 rounds), the small set 1.55 against 1.40 s (1.10x, 6). The own
  set's cold run request by request (access log, one run of 3.77 s): its pages took 1.03 s, its
  files 0.38 s; pydantic-core's page 232 ms, which curl fetches and decompresses in 46-56 ms.
  That page's cold request under cProfile: 450 ms, of which the parse 314 ms and the rendering
  written and sent 121 ms; its state (86 ms) is written after the answer. Its entries decoded by
  ``json.loads``, made into dicts again and dumped, without a check of any of them: 6.0 us an
  entry against 8.6 us parsed and rendered (from memory), the most a second renderer could save.
  Warm uv of the own set 1.19x the direct time in the run, where ``--find-links`` on a directory
  of the same wheels took 2.15 s against direct's 1.87 s; outside it, 6 alternating rounds:
  nestegg 2.13 s, direct 2.23 s, ``--find-links`` 2.34 s. The tox-uv row ran once each way (4.45
  against 3.89 s; run 31 had 4.42 against 5.26 s). Another port's slowest first page 10.4 ms (6.6
  ms in run 31), most likely the largest, pydantic-core's: its 5.5 MB hold 15,057 file URLs, and
  ``bytes.replace`` of their base over the page takes 3.7 ms in CPython 3.11 (a search for 16
  bytes it does not hold, 1.5 ms), ``render.rebased`` a block at a time 5.1-5.6 ms, reading the
  blocks 0.45 ms. A first answer after the machine idled is slower whatever serves it: a bare
  server sending 1.5 MB with ``sendfile`` took a median 1.5 ms back to back, 3.2 ms after 0.2 s
  idle, 4.6 ms after 1 s, 6.7 ms after 2 s and 10.1 ms after 5 s (5 each); the fresh-process rows
  ask at once after the server answered its readiness probe. pip 26.3 reads every link's upload
  time with ``datetime.fromisoformat`` (C; ``--uploaded-prior-to`` needs it). A GET of a tiny
  local page took 1.07 ms through requests, 0.49 ms through urllib3 and 0.34 ms through
  http.client: some 40 ms over the 70 upstream requests of a cold own-set run, not worth
  requests' proxy, netrc and redirect rules.
- *Run 33, after the audits of the edges* (687bf6b, 3 rounds, the Xeon of run 32). No change
  aimed at speed; the page paths gained a check of a file's digests where it lists more than one
  (1.9 us a file against 1.2) and offline renderings of their own. Warm pip 0.71x the direct time
  for the small set (0.83x in run 32) and 0.84x for the own set (0.84x); cold 1.19x and 1.20x
  (1.09x and 1.24x); warm uv of the own set 0.69x (1.19x); a fresh process's slowest page 2.7 ms
  (4.7 ms). Cold pages made in-process from a local copy of the upstream, against the tree before
  the audits (3d2ecbc), 3 alternating rounds of 7: pydantic-core's medians 152.6, 158.9 and 151.1
  ms against 156.1, 158.3 and 156.7 ms; numpy's 51.4, 52.7 and 50.4 against 54.3, 53.6 and 52.5.
- *Pages ahead (the distant rows).* An installer that read a wheel's metadata, or got a wheel
  the mirror downloaded, asks next for the pages of the projects that wheel requires, one round
  trip to the upstream after another. The mirror now fetches those pages in a thread as soon as it
  knows them, rendered as that installer asks (``pages_ahead``, ``PagesAhead``): its requests find
  them made, or join the fetch under way. Near the upstream that changes nothing (the work is CPU
  under one GIL, and pip asks for each page right after); farther away, each page asked later is
  a round trip saved. A/B runs against the local replay of the upstream 20 ms farther, alternating
  rounds (4, 4 and 3): the small set's 7 roots with their dependencies went from 1.25x to 1.00x
  the direct time, the small set from 1.28x to 1.21x, the own set from 1.34x to 1.30x; near it,
  1.56x, 1.63x and 1.47x before, 1.56x, 1.64x and 1.50x after. A page made ahead then left its
  writes for after the request waiting for it had it, as a request's own page does: the roots
  1.17x -> 0.94x, the small set 1.27x -> 1.20x (4 rounds); near it, the small set 1.72x -> 1.74x
  (10 rounds, within their spread). In run 10 (69cdc65) the roots row read 0.89x the direct time
  (2.41 against 2.71 s), where devpi-server took 2.68x and proxpi 2.85x nestegg's; in run 9
  (4d5fbaa, before that change) 0.87x; in run 11 (6ad9c2c) 0.86x (2.37 against 2.74 s;
  devpi-server 2.73x, proxpi 2.99x); in the run at da69ac5 0.87x (2.46 against 2.82 s;
  devpi-server 2.89x, proxpi 2.91x). Warm uv through two warm servers, the tree before
  and this one (8 and 6 alternating rounds): 1.21 against 1.22 s (small set), 3.02 against
  3.06 s (own set); through a fresh process each time (as tox starts one): 1.35 against 1.31 s,
  3.72 against 3.68 s.
- *What the hostile-input fixes cost (issue 20).* Measured where each was made, on the loaded
  machine: warm pages after the server's fixes for slow and gone clients (sends from the event
  loop, send deadlines, the look at a client gone) served 1,611 HTML pages/s against 1,776 before,
  p99 17.5 ms against 14 ms (the look at the socket instead of waitress's lookahead won back
  1,426 -> 1,781 HTML and 1,384 -> 2,184 JSON pages/s); opening a cached file walks its folders
  without following links, 12 system calls (about 25-30 us) a file; a file's last byte still
  waits for its check. The keyring is asked only after a 401 (it cost every start
  190 ms when asked up front).
- *Peak RSS.* About 33 MB is the interpreter with its imports before any request (``requests``,
  ``urllib3`` and ``ssl`` alone ~14 MB: requests is a dependency of the design; ``serve`` loads
  none of the other commands' modules, which took 2 MB more, nor requests' character detector,
  charset_normalizer, 2.7 MB, nor filelock, 1.1 MB). The peaks of the runs before run 11 (58 MB)
  and of runs 18-21 (57-60 MB) were two, each of 59-63 MB: 16 readers of the cold 32 MB wheel (each
  read 256 KiB of the file still downloading and copied it into waitress's buffer for its
  connection, which waited once 256 KiB were queued: 43 -> 57-61 MB; at 128 KiB each, 43 -> 49-50
  MB, in the same 0.70 s from the upstream at 50 MB/s; the synthetic workloads peaked at 49 MB in
  runs 11 and 12), and the own set's cold pip download (40 -> 59 MB). No page is whole
  in memory as bytes or text: upstream pages are parsed as they arrive, rendered into their files
  a piece at a time and sent from them by the kernel (``sendfile``; without it, at most 256 KiB
  read at a time per connection, where waitress read 4 MiB, the socket's send buffer on loopback);
  only pages up to 64 KiB are held in memory,
  and one fetched just now for pip or uv (up to 6,000 files, about 2 MB) while it is answered
  (4 MiB in all). What sets the peak is the largest page's model while it is made: pydantic-core's
  15,000 files, 10.0 MB in tracemalloc. Its state file is written a slice of 2,048 values of a
  column at a time (building its columns first took 4 MB more: pydantic-core's cold page alone
  took a process to 50 MB, now 47) and read a line of at most 2,048 values at a time (11.3 MB at
  the peak; a column at a time 12.3 MB, whole 15.8 MB). No other page's model is held beside it
  (pages past a budget of 1,000 files are dropped before the next page is made, not after), on
  top of what the heap kept from earlier pages: pymalloc keeps an arena while any object in it
  lives, so after the 34 pages a process holds ~9 MB of empty pools in its arenas for 1 MB of
  live objects (a 34 MB process is at ~44 MB when that page comes). The page is made
  again after the cold run, in the background (see above): the index pip uses here lists no PEP
  658 metadata, so its wheel taught the mirror its metadata, which the page then advertises (a
  file cached just as the index lists it leaves the page be). Trimming the heap every 0.2 s did
  not lower the peak. With ``compatible_only`` pip's pages are rendered for its
  interpreter and uv's for any, so the warm uv install after pip's makes every page anew, many
  at once (uv asks in parallel): pages of over ~700 files are made one at a time. Lower still
  would need page models that are never whole in memory (pages rendered from the state file's
  columns), or models without the upstream URLs, which only a download needs (3 MB of that
  model; 48 -> 45 MB when all 34 pages are made from their state).
- *Page p99 at 8 clients.* The client's 8 threads and the server share the 2 cores: the median
  follows from the 8 requests in flight (8 / rate) and the p99 was 3-4 times it, 17-23 ms across
  earlier runs on this machine. Two changes took it to ~16 ms in runs outside the benchmark (the
  same load, 4 rounds each, alternating): (1) a warm request took three stats (the state file, the
  change marker, the private folder), each giving up the GIL and waiting to take it back among
  the threads; it now reads each store's generation, eight bytes every process maps from a file
  that every write stamps, and takes the stats only when that changed or a second has passed:
  ~1,000 -> ~1,400 pages/s, p99 ~24 -> ~20 ms. (2) waitress woke one of its 16 workers for every
  request, so 8 ran at once; 2 workers served the same load with a p99 of 13 ms, but a cold
  install needs many threads waiting on the upstream. Workers now run two tasks at a time while
  tasks keep finishing, one more whenever a task waits on the network, a download or a slow client,
  and one more after every 5 ms in which no task started or finished: p99 ~20 -> ~16 ms, for ~8%
  fewer pages/s than 16 free workers (the hand-over of the dispatcher's own lock and its watchdog's
  wake-ups). A client of 8 processes instead of threads gave the same p99, a GIL switch interval
  of 1 ms or 20 ms instead of 5 did not change it, nor did a larger waitress ``send_bytes`` or the
  cyclic GC switched off. (3) A page over 64 KiB goes out as a file (``wsgi.file_wrapper``), which
  waitress read into memory a block at a time on its event loop, each block twice (once to send
  it, once to move past it); the kernel now sends it (``sendfile``, 6f2791d). The same load, 6
  alternating rounds outside the benchmark: JSON 833 -> 1,165 pages/s, p99 46.8 -> 21.2 ms; HTML
  913 -> 1,287 pages/s, p99 35.2 -> 17.9 ms. Run 20 read 1,358 and 1,200 pages/s, p99 17.5 and
  19.1 ms (714 and 727, 42.6 and 43.6 ms in run 19), run 21 1,222 and 1,276, p99 18.4 and
  16.3 ms. A fresh process's slowest page of the own set, pydantic-core's (5.5 MB as pip gets
  it), over 6 starts: median 4.5 -> 1.8 ms, the slowest 5.9 -> 3.0 ms; asked again of a warm
  process 4.5-5.3 -> 3.0 ms, where ``benchmarks/static.py`` (``http.server`` with ``sendfile``)
  took 2.6-3.4 ms. The fresh-process row of run 20 still read 4.3 ms (4.5 ms in run 19, 3.7 ms
  in run 21): there the nest also holds the pages made for uv and the throughput runs, and
  which page is the slowest was not recorded; not looked into further.
- *Start-up, CLI vs devpi-server.* Every server's virtualenv is compiled at install; runs before
  that left the peers' modules uncompiled on this machine (it sets PYTHONDONTWRITEBYTECODE), and
  devpi-server then took over 1.3 s, twice its time here. The "upstream direct" cell of the
  start-up row is the floor with requests, measured in every run: nestegg's interpreter importing
  only requests and fetching the page, with no server and no import of its own, timed until it
  has the answer (its exit, which with requests loaded takes ~40 ms more, is not counted). A start
  6x faster than devpi-server's is within a few milliseconds of that floor, and below it in most
  runs (the target's line gives both): a server has to import more than requests (waitress,
  packaging and its own modules, ~70 ms measured apart, below), so 6x is out of reach for a server
  that fetches its first page with requests, a dependency of the design. Timed
  inside the process (medians of 7-11 starts, compiled venv): the interpreter ~10 ms; importing
  ``nestegg_core.cli`` ~150 ms, of which requests alone is 84 ms (urllib3, http.client, ssl,
  ``importlib.metadata``; the server's process no longer loads requests' character detector,
  charset_normalizer, 7 ms), waitress, packaging and platformdirs ~40 ms more (filelock, 10 ms,
  is no longer loaded: the cache's locks are ``flock``), nestegg's own modules ~20 ms (``serve``
  loads none of the other commands'; of what it loads, the upload handler with multipart, tarfile
  and the email parser is ~4 ms); then
  ~15 ms to bind and answer the first page (fetch, parse, render). devpi-server is compared with
  its argon2 key derivation made cheap, which by default dominates its start.
- *tox*: the setup is mostly installing: unpacking the wheels (and, for pip, compiling them), which
  the plugin does not change; only the downloads move to the mirror. With tox-uv the plugin's setup
  is within the spread of the runs without it: uv downloads in parallel, and from this machine's
  fast upstream its downloads are a small part of its install. Timed apart, outside tox, the same
  ``uv pip install`` took 1.7-1.9 s from a warm standalone nestegg (started afresh on tox's nest, or
  on a new cache after a cold pip download) and 2.0-2.2 s from the upstream; the uv row of the
  table, where nestegg is faster than that, was not reproduced outside the benchmark's own sequence
  (not explained). With pip the plugin saves the downloads' waiting; ``compatible_only`` changes
  little here because installing dominates. The uv environment's command imports numpy and pandas
  from source (uv does not compile at install, and this machine sets PYTHONDONTWRITEBYTECODE): ~2 s
  of each run, with or without the plugin.
- Load from other work on this machine (see the load average above) widens every spread; the
  ratios within a round are the thing to read."""


if __name__ == "__main__":
    sys.exit(main())
