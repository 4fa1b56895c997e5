"""Results: samples per metric and target, the table of medians and ratios, the targets, BENCHMARKS.rst."""

from __future__ import annotations

import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

SERVERS = ("nestegg", "nestegg-compat", "devpi", "proxpi")
BASELINES = ("direct", "bare", "static", "static-absolute", "find-links")
COLUMNS = (*SERVERS, *BASELINES)
_HEADERS = {
    "nestegg": "nestegg",
    "nestegg-compat": "nestegg compatible_only",
    "devpi": "devpi-server",
    "proxpi": "proxpi",
    "direct": "upstream direct",
    "bare": "bare proxy",
    "static": "static pages",
    "static-absolute": "static, absolute URLs",
    "find-links": "--find-links (limit)",
}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "s", "ms", "/s", "MB", "n"
    #: for throughput rows: the keys of the p50 and p99 latencies shown beside the rate
    latency: tuple[str, str] | None = None
    #: for tox rows: the key of the setup time of the environments (tox's own figure), shown beside the total
    setup: str | None = None


METRICS = (
    Metric("startup", "start-up: launch to first 200 on a page", "ms"),
    Metric("startup-inprocess", "start-up: in-process Mirror(...).start() to first 200", "ms"),
    Metric("import", "  (import nestegg_core, before the above)", "ms"),
    Metric("cold", "cold: pip download --no-deps, {packages} packages", "s"),
    Metric("warm", "warm: pip download again, fresh directory", "s"),
    Metric("again", "  the same, at once after the cold run", "s"),
    Metric("uv", "warm: uv pip install --no-cache, fresh venv", "s"),
    Metric("uv-cold", "cold: uv pip install --no-cache, fresh venv, each server afresh", "s"),
    Metric("small-cold", "small set: cold pip download --no-deps, {small_packages} packages", "s"),
    Metric("small-warm", "small set: warm pip download again, fresh directory", "s"),
    Metric("small-again", "  the same, at once after the cold run", "s"),
    Metric("small-uv", "small set: warm uv pip install --no-cache, fresh venv", "s"),
    Metric("small-uv-cold", "small set: cold uv pip install, each server afresh", "s"),
    Metric("small-latest-cold", "small set unpinned (newest releases): cold pip download --no-deps", "s"),
    Metric("distant-cold", "cold, upstream {rtt} ms farther: pip download --no-deps", "s"),
    Metric("small-distant-cold", "small set: the same", "s"),
    Metric("small-distant-deps", "  its roots, pip finding the rest (pip download ROOTS -c SET)", "s"),
    Metric(
        "pages-1-html", "pages/s, 1 client, HTML (p50/p99 ms)", "/s", ("pages-1-html:p50", "pages-1-html:p99")
    ),
    Metric(
        "pages-8-html",
        "pages/s, 8 clients, HTML (p50/p99 ms)",
        "/s",
        ("pages-8-html:p50", "pages-8-html:p99"),
    ),
    Metric(
        "pages-1-json", "pages/s, 1 client, JSON (p50/p99 ms)", "/s", ("pages-1-json:p50", "pages-1-json:p99")
    ),
    Metric(
        "pages-8-json",
        "pages/s, 8 clients, JSON (p50/p99 ms)",
        "/s",
        ("pages-8-json:p50", "pages-8-json:p99"),
    ),
    Metric("fresh-max", "fresh process, pages rendered before: first answer (slowest page)", "ms"),
    Metric("fresh-median", "  the same, median page", "ms"),
    Metric("small-fresh-max", "small set: fresh process, first answer (slowest page)", "ms"),
    Metric("fresh-port-max", "fresh process on another port: first answer (slowest page)", "ms"),
    Metric("fresh-port-median", "  the same, median page", "ms"),
    Metric("small-fresh-port-max", "small set: fresh process on another port (slowest page)", "ms"),
    Metric("past-ttl", "warm pip download past the TTL: fresh process, every page asked again", "s"),
    Metric("small-past-ttl", "small set: the same", "s"),
    Metric("bigpage-cold", "large page ({files} files): cold, JSON", "ms"),
    Metric("bigpage-json", "large page: warm, JSON", "ms"),
    Metric("bigpage-html", "large page: warm, HTML", "ms"),
    Metric("concurrent", "16 concurrent cold GETs of a {mb} MB wheel", "s"),
    Metric("concurrent-upstream", "  upstream downloads for those 16 (max)", "n"),
    Metric("rss", "peak RSS of the server (max)", "MB"),
    Metric("rss-local", "  of which synthetic workloads only (max)", "MB"),
    Metric("rss-uv-cold", "peak RSS in the cold uv installs, both sets (max, not above)", "MB"),
    *(
        Metric(key, label, "s", setup=f"{key}:setup")
        for key, label in (
            ("tox-uv-plugin", "tox -r, tox-uv: warm nestegg (plugin)"),
            ("tox-uv-plain", "tox -r, tox-uv: no plugin (upstream, no installer cache)"),
            ("tox-pip-plugin", "tox -r, pip: warm nestegg (plugin)"),
            ("tox-pip-compat", "tox -r, pip: warm nestegg (plugin, compatible_only)"),
            ("tox-pip-plain", "tox -r, pip: no plugin (upstream, no installer cache)"),
        )
    ),
)
#: metrics whose summary is the maximum over rounds, not the median
_MAX_OF = {"concurrent-upstream", "rss", "rss-local", "rss-uv-cold"}


@dataclass
class Results:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, column: str, value: float) -> None:
        self.samples[(key, column)].append(value)

    def value(self, key: str, column: str) -> float | None:
        values = self.samples.get((key, column))
        if not values:
            return None
        return max(values) if key in _MAX_OF else statistics.median(values)

    def ratio(self, key: str, column: str) -> float | None:
        """``column``'s value divided by nestegg's (same metric)."""
        mine, theirs = self.value(key, "nestegg"), self.value(key, column)
        if mine is None or theirs is None or mine == 0:
            return None
        return theirs / mine


def _format(value: float, unit: str) -> str:
    if unit == "ms":
        scaled = value * 1000
        return f"{scaled:.0f} ms" if scaled >= 100 else f"{scaled:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "/s":
        return f"{value:.0f}/s"
    if unit == "MB":
        return f"{value / 1e6:.0f} MB"
    return f"{value:.0f}"


def cells(results: Results, metric: Metric) -> list[str]:
    row = []
    for column in COLUMNS:
        value = results.value(metric.key, column)
        if value is None:
            row.append("")
            continue
        text = _format(value, metric.unit)
        if metric.latency is not None:
            p50 = results.value(metric.latency[0], column)
            p99 = results.value(metric.latency[1], column)
            if p50 is not None and p99 is not None:
                text += f" ({p50 * 1000:.1f}/{p99 * 1000:.1f})"
        setup = None if metric.setup is None else results.value(metric.setup, column)
        if setup is not None:
            text += f" (setup {_format(setup, metric.unit)})"
        ratio = results.ratio(metric.key, column)
        if column != "nestegg" and ratio is not None and metric.unit != "n":
            text += f" x{ratio:.2f}"
        row.append(text)
    return row


def table(results: Results) -> str:
    """An RST simple table (also readable as plain text) of medians and ratios to nestegg."""
    labels = {
        "files": results.facts.get("bigpage_files", "?"),
        "mb": results.facts.get("bigwheel_mb", "?"),
        "rtt": results.facts.get("rtt_ms", "?"),
        # the sets of --requirements and --small-requirements, whichever they are
        "packages": results.facts.get("packages", "?"),
        "small_packages": results.facts.get("small_packages", "?"),
    }
    rows = [["workload", *(_HEADERS[c] for c in COLUMNS)]]
    for metric in METRICS:
        row = cells(results, metric)
        if any(row):
            rows.append([metric.label.format(**labels), *row])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)

    def line(row: Sequence[str]) -> str:
        # a leading space keeps RST from reading an indented label as a continuation
        return "  ".join(
            (cell or "..").ljust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [rule, line(rows[0]), rule]
    out += [line(row) for row in rows[1:]]
    out.append(rule)
    return "\n".join(out)


@dataclass(frozen=True)
class Target:
    text: str
    held: bool | None  # None: not measured
    detail: str


def targets(results: Results) -> list[Target]:
    v, r = results.value, results.ratio
    found: list[Target] = []

    def add(text: str, check: Callable[[], tuple[bool, str] | None]) -> None:
        outcome = check()
        found.append(Target(text, None, "not measured") if outcome is None else Target(text, *outcome))

    def startup_inprocess() -> tuple[bool, str] | None:
        value = v("startup-inprocess", "nestegg")
        return None if value is None else (value <= 0.050, f"{value * 1000:.1f} ms")

    def startup_devpi() -> tuple[bool, str] | None:
        ratio, devpi, floor = r("startup", "devpi"), v("startup", "devpi"), v("startup", "direct")
        if ratio is None:
            return None
        detail = f"devpi-server takes {ratio:.1f}x nestegg's CLI start-up"
        if devpi is not None and floor:
            side = "below" if devpi / 6 < floor else "above"
            detail += (
                f"; a start 6x faster than devpi-server's would take {devpi / 6 * 1000:.0f} ms, {side} the"
                f" {floor * 1000:.0f} ms a bare interpreter takes to import requests and fetch the page"
            )
        return ratio >= 6, detail

    def warm_peer(column: str) -> tuple[bool, str] | None:
        mine = v("warm", column)
        peers = [x for x in (v("warm", "devpi"), v("warm", "proxpi")) if x is not None]
        if mine is None or not peers:
            return None
        detail = f"the fastest peer takes {min(peers) / mine:.2f}x its time"
        return min(peers) / mine >= 1.5, detail + _static(column, mine, "its time", min(peers))

    def warm_limit(column: str) -> tuple[bool, str] | None:
        mine, limit = v("warm", column), v("warm", "find-links")
        if mine is None or limit is None:
            return None
        detail = f"it takes {mine / limit:.2f}x the --find-links time"
        return mine / limit <= 1.15, detail + _static(column, limit, "the --find-links time")

    def _static(column: str, base: float, what: str, peer: float | None = None) -> str:
        """The static copies of the plain nestegg's pages, beside the plain nestegg's figure (and
        the fastest ``peer``'s time against the copy with absolute URLs)."""
        static, absolute = v("warm", "static"), v("warm", "static-absolute")
        if column != "nestegg" or static is None:
            return ""
        detail = f"; its pages served as static files take {static / base:.2f}x {what}"
        if absolute is not None:
            detail += f", {absolute / base:.2f}x with absolute file URLs"
            if peer is not None:
                detail += f", which the fastest peer takes {peer / absolute:.2f}x"
        return detail

    def pages_devpi() -> tuple[bool, str] | None:
        ratios = [r(f"pages-8-{kind}", "devpi") for kind in ("html", "json")]
        known = [x for x in ratios if x]
        if not known:
            return None
        worst = min(1 / x for x in known)
        return worst >= 3, f"nestegg serves {worst:.1f}x devpi-server's pages/s (worse of HTML, JSON)"

    def pages_p99() -> tuple[bool, str] | None:
        values = [v(f"pages-8-{kind}:p99", "nestegg") for kind in ("html", "json")]
        known = [x for x in values if x is not None]
        if not known:
            return None
        return max(known) <= 0.020, f"p99 {max(known) * 1000:.1f} ms (worse of HTML, JSON)"

    def bigpage() -> tuple[bool, str] | None:
        values = [v(f"bigpage-{kind}", "nestegg") for kind in ("html", "json")]
        known = [x for x in values if x is not None]
        if not known:
            return None
        return max(known) <= 0.020, f"{max(known) * 1000:.1f} ms (worse of HTML, JSON)"

    def cold(column: str) -> tuple[bool, str] | None:
        mine, direct = v("cold", column), v("cold", "direct")
        if mine is None or direct is None:
            return None
        detail = f"it takes {mine / direct:.2f}x the direct time"
        # pip's extra work on relative URLs, which every page of the mirror gives, cold or warm:
        # the static pages against the same with absolute URLs, the median of each round's gap
        cost = v("relative-urls", "nestegg")
        if column == "nestegg" and cost is not None:
            if cost > 0:
                detail += (
                    f"; relative file URLs alone cost pip {cost:.2f} s (the static pages against the"
                    f" same with absolute URLs), {cost / direct:.0%} of the direct time (the target"
                    " allows 10%)"
                )
            else:
                detail += "; relative file URLs cost pip no measurable time in this run"
        return mine / direct <= 1.1, detail

    def one_download() -> tuple[bool, str] | None:
        value = v("concurrent-upstream", "nestegg")
        return None if value is None else (value == 1, f"at most {value:.0f} upstream download(s)")

    def rss(column: str) -> tuple[bool, str] | None:
        value = v("rss", column)
        return None if value is None else (value <= 60e6, f"{value / 1e6:.0f} MB")

    def each(check: Callable[[str], tuple[bool, str] | None], text: str) -> None:
        for column, label in (("nestegg", "nestegg"), ("nestegg-compat", "nestegg with compatible_only")):
            add(f"{text} ({label})", lambda column=column: check(column))  # type: ignore[misc]

    def versus(key: str, column: str, most: float, what: str) -> tuple[bool, str] | None:
        """nestegg's ``key`` at most ``most`` times ``column``'s (a time)."""
        mine, theirs = v(key, "nestegg"), v(key, column)
        if mine is None or theirs is None:
            return None
        detail = f"{mine:.2f} s, {mine / theirs:.2f}x {what}'s {theirs:.2f} s"
        floor = v(key, "bare")
        if floor is not None:  # the cold rows: what any proxy on nestegg's stack takes
            detail += f"; the bare proxy took {floor:.2f} s, {floor / theirs:.2f}x"
        return mine / theirs <= most, detail

    def fresh(prefix: str) -> tuple[bool, str] | None:
        slowest, median = v(prefix + "fresh-max", "nestegg"), v(prefix + "fresh-median", "nestegg")
        if slowest is None:
            return None
        detail = f"slowest page {slowest * 1000:.1f} ms"
        if median is not None:
            detail += f", median {median * 1000:.1f} ms"
        return slowest <= 0.005, detail

    add("start-up ≤ 50 ms in-process", startup_inprocess)
    for prefix, label in (("small-", "small set"), ("", "own set")):
        for text, key, column, most, what in (
            ("warm pip download ≤ 0.8x the upstream direct", "warm", "direct", 0.8, "the upstream direct"),
            ("warm pip download ≥ 1.3x faster than proxpi", "warm", "proxpi", 1 / 1.3, "proxpi"),
            ("cold pip download ≤ 1.2x the upstream direct", "cold", "direct", 1.2, "the upstream direct"),
            (
                "warm uv install no slower than from the upstream direct",
                "uv",
                "direct",
                1.0,
                "the upstream direct",
            ),
        ):
            add(f"{text} ({label})", partial(versus, prefix + key, column, most, what))

    def again(prefix: str) -> tuple[bool, str] | None:
        """The warm run at once after the cold one (tox's next environment) against a later one."""
        mine, later = v(prefix + "again", "nestegg"), v(prefix + "warm", "nestegg")
        if mine is None or later is None:
            return None
        return mine <= later * 1.05, f"{mine:.2f} s, {mine / later:.2f}x the later warm run's {later:.2f} s"

    for prefix, label in (("", "own set"), ("small-", "small set")):
        text = f"a warm run at once after the cold one ≤ 1.05x a later warm run ({label})"
        add(text, partial(again, prefix))

    add(
        "cold pip download of the newest releases ≤ 1.2x the upstream direct (small set unpinned)",
        partial(versus, "small-latest-cold", "direct", 1.2, "the upstream direct"),
    )
    rtt = results.facts.get("rtt_ms", "?")
    for prefix, label in (("small-", "small set"), ("", "own set")):
        add(
            f"cold pip download ≤ 1.2x the upstream direct, both {rtt} ms farther from it ({label})",
            partial(versus, prefix + "distant-cold", "direct", 1.2, "the upstream direct"),
        )
    add(
        f"cold pip download of the roots with their dependencies ≤ 1.2x the upstream direct, both {rtt} ms"
        " farther from it (small set)",
        partial(versus, "small-distant-deps", "direct", 1.2, "the upstream direct"),
    )

    def past_ttl(prefix: str) -> tuple[bool, str] | None:
        """The warm run past the TTL, which asks the upstream for every page, against the direct's."""
        mine, direct = v(prefix + "past-ttl", "nestegg"), v(prefix + "warm", "direct")
        if mine is None or direct is None:
            return None
        return mine <= direct, f"{mine:.2f} s, {mine / direct:.2f}x the upstream direct's {direct:.2f} s"

    add("warm pip download past the TTL no slower than the upstream direct (own set)", partial(past_ttl, ""))
    add("the same (small set)", partial(past_ttl, "small-"))
    add("a fresh process answers each page rendered before in ≤ 5 ms (own set)", partial(fresh, ""))
    add("a fresh process answers each page rendered before in ≤ 5 ms (small set)", partial(fresh, "small-"))
    add("start-up ≥ 6x faster than devpi-server (its fastest settings)", startup_devpi)
    each(warm_peer, "warm pip download ≥ 1.5x faster than the fastest peer")
    each(warm_limit, "warm pip download ≤ 1.15x the --find-links limit")
    add("warm pages/s at 8 clients ≥ 3x devpi-server", pages_devpi)
    add("warm page p99 at 8 clients ≤ 20 ms", pages_p99)
    add("large page ≤ 20 ms warm", bigpage)
    each(cold, "cold downloads ≤ 1.1x direct")
    add("16 concurrent cold requests → one upstream download", one_download)
    each(rss, "peak RSS ≤ 60 MB")
    return found


def format_targets(found: Sequence[Target]) -> str:
    marks = {True: "held", False: "MISSED", None: "n/a"}
    return "\n".join(f"- **{marks[t.held]}** — {t.text}: {t.detail}" for t in found)


def machine(versions: dict[str, str]) -> list[tuple[str, str]]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    described = [
        ("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        ("system", platform.platform()),
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores"),
        ("memory", memory),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
    ]
    described += list(versions.items())
    return described


def tool_version(command: Sequence[str]) -> str:
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        return "not installed"
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0] if result.returncode == 0 else "?"


def write_rst(
    path: Path, results: Results, *, command: str, described: list[tuple[str, str]], method: str, closing: str
) -> None:
    title = "Benchmarks: nestegg beside devpi-server and proxpi"
    found = targets(results)
    facts = "\n".join(f"   * - {key}\n     - {value}" for key, value in described)
    text = f"""{"=" * len(title)}
{title}
{"=" * len(title)}

.. This file is written by ``{command}``; edit the script, not this file.

Regenerate with::

    {command}

Machine
=======

.. list-table::
   :widths: 20 80

{facts}

Results
=======

Medians over {results.facts.get("rounds", "?")} alternating rounds (every server, then the next, in
a rotated order each round, so that drift of the machine or the network hits all alike). A cell
reads ``value xratio``, the ratio being that column's value divided by nestegg's: above 1 nestegg
is faster for times, below 1 nestegg serves more for pages/s. Empty cells (``..``) were not
measured for that column.

{table(results)}

Targets
=======

{format_targets(found)}

Method
======

{method}

Notes
=====

{closing}
"""
    path.write_text(text, encoding="utf-8")


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
