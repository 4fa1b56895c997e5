"""The workloads, each a function of a running server (or a baseline) that returns measurements.

Installers run with :func:`nestegg_core.testing.installer_env`, so no setting of this machine
(a site-wide find-links, a cache dir, another index) leaks into what is timed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import load
import servers
from packaging.utils import parse_wheel_filename
from servers import Instance, server_env

from nestegg_core.simple.clients import marker_environment
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.simple.requires import required_names
from nestegg_core.testing import find_uv, installer_env

#: the pinned package sets of the pip and uv workloads, closed under their dependencies: ``large``,
#: projects with large pages (numpy, pydantic-core...); ``small``, small and medium projects
#: (requests, click, rich, tox...), whose pages pip reads faster than it downloads them
PACKAGE_SETS = {
    "large": Path(__file__).with_name("requirements.txt"),
    "small": Path(__file__).with_name("requirements-small.txt"),
}

#: the interpreter whose pip the pip workloads run (``run.py --pip-python``): this one's by default
PIP_PYTHON = sys.executable

_HREF = re.compile(r'href="([^"]+)"')
#: loopback only: no proxy of this machine's environment in between
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def requirement_names(requirements: Path) -> list[str]:
    """The normalized project names of a requirements file (``name==version`` lines)."""
    names = []
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
            names.append(re.sub(r"[-_.]+", "-", name).lower())
    return names


def _timed(command: Sequence[str], env: dict[str, str], what: str, timeout: float) -> float:
    return _run_timed(command, env, what, timeout)[0]


def _run_timed(command: Sequence[str], env: dict[str, str], what: str, timeout: float) -> tuple[float, str]:
    """Seconds ``command`` took, and what it printed (raises if it failed)."""
    started = time.perf_counter()
    result = subprocess.run(
        list(command), env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{tail}")
    return elapsed, result.stdout + result.stderr


def startup_floor(python: Path, page_url: str, timeout: float = 60) -> float:
    """Seconds from launching a fresh ``python`` that imports requests and GETs ``page_url`` (pip's
    ``Accept``) to its having the answer: the clock stops at a line it prints then, not at its exit.

    The least a server in Python that fetches a page with requests can take from launch to
    answering it: no server, no import of its own, no work on the page.
    """
    code = (
        "import sys, requests; "
        "requests.get(sys.argv[1], headers={'Accept': sys.argv[2]}, timeout=30).raise_for_status(); "
        "print('answered', flush=True)"
    )
    command = [str(python), "-c", code, page_url, load.PIP_ACCEPT]
    started = time.perf_counter()
    child = subprocess.Popen(
        command, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # the answer is in: the exit that follows is not counted
        elapsed = time.perf_counter() - started
        _, errors = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if line.strip() != "answered" or child.returncode != 0:
        raise RuntimeError(f"start-up floor failed ({child.returncode}): {errors.strip()[-500:]}")
    return elapsed


def pip_download(
    requirements: Path,
    dest: Path,
    *,
    index_url: str | None = None,
    find_links: Path | None = None,
    timeout: float = 600,
    proxy: str | None = None,
    roots: Sequence[str] = (),
) -> float:
    """Seconds for ``pip download --no-deps --no-cache-dir -r requirements`` into an empty ``dest``
    (through ``proxy`` to an HTTPS index, if given); with ``roots``, ``pip download ROOTS -c
    requirements`` instead: pip finds their dependencies on the way, as an install does."""
    shutil.rmtree(dest, ignore_errors=True)
    command = [PIP_PYTHON, "-m", "pip", "download", "--quiet", "--no-cache-dir", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(dest)]  # fmt: skip
    command += [*roots, "-c", str(requirements)] if roots else ["--no-deps", "-r", str(requirements)]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    env = installer_env(index_url) if proxy is None else installer_env(index_url, HTTPS_PROXY=proxy)
    elapsed = _timed(command, env, f"pip download from {index_url or find_links}", timeout)
    expected = len(requirement_names(requirements))
    got = len(list(dest.iterdir()))
    # with roots, the set's projects that only another platform or Python needs are left out
    if got != expected and not (roots and len(roots) <= got <= expected):
        raise RuntimeError(f"pip download from {index_url or find_links}: {got} files, expected {expected}")
    return elapsed


def roots_of(wheels: Path) -> list[str]:
    """The projects of the wheels in ``wheels`` (a package set downloaded) that none of the others
    requires on this interpreter and platform: what a user would install, the rest coming along."""
    required: set[str] = set()
    names = []
    for wheel in sorted(wheels.glob("*.whl")):
        name = parse_wheel_filename(wheel.name)[0]
        names.append(name)
        required.update(required_names(wheel_metadata(wheel) or b"", marker_environment(None), of=name))
    return [name for name in names if name not in required]


def uv_install(
    requirements: Path,
    venv: Path,
    *,
    index_url: str | None = None,
    find_links: Path | None = None,
    timeout: float = 600,
) -> float:
    """Seconds for ``uv pip install --no-cache -r requirements`` into a fresh virtualenv."""
    uv = find_uv()
    if uv is None:
        raise RuntimeError("uv is not installed")
    shutil.rmtree(venv, ignore_errors=True)
    env = installer_env(index_url)
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], env=env, check=True)
    command = [
        uv,
        "pip",
        "install",
        "--quiet",
        "--no-cache",
        "--python",
        str(venv / "bin" / "python"),
        "-r",
        str(requirements),
    ]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    elapsed = _timed(command, env, f"uv pip install from {index_url or find_links}", timeout)
    shutil.rmtree(venv, ignore_errors=True)
    return elapsed


def startup_inprocess(cache: Path, upstream: str, project: str) -> dict[str, float]:
    """nestegg's in-process start-up, timed inside a fresh interpreter (see ``inprocess.py``)."""
    script = Path(__file__).with_name("inprocess.py")
    result = subprocess.run(
        [sys.executable, str(script), str(cache), upstream, project],
        env=installer_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"in-process start-up failed:\n{result.stdout}\n{result.stderr}")
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


@dataclass
class PageTimes:
    cold: float
    warm_json: float
    warm_html: float
    files: int


def large_page(instance: Instance, project: str, *, warm_requests: int, max_seconds: float) -> PageTimes:
    """The first request for a very large page (cold), then the median of repeated ones (warm)."""
    url = instance.page_url(project)
    started = time.perf_counter()
    response = load.fetch(url, load.JSON)
    cold = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{instance.server.name}: {url} answered {response.status}")
    files = len(page_links(url))
    warm = {}
    for accept in (load.JSON, load.HTML):
        result = load.load(
            instance.base_url,
            [urlsplit(url).path],
            accept=accept,
            clients=1,
            max_requests=warm_requests,
            max_seconds=max_seconds,
        )
        if result.errors or not result.latencies:
            raise RuntimeError(f"{instance.server.name}: warm large page failed ({result.errors} errors)")
        warm[accept] = load.median(result.latencies)
    return PageTimes(cold, warm[load.JSON], warm[load.HTML], files)


def page_links(url: str) -> dict[str, str]:
    """Filename to absolute URL of every file on a project page (JSON if served, else HTML)."""
    request = urllib.request.Request(url, headers={"Accept": f"{load.JSON}, {load.HTML};q=0.5"})
    with _OPENER.open(request, timeout=120) as answer:
        body = answer.read()
        content_type = answer.headers.get("Content-Type", "")
        final_url = answer.geturl()
    links: dict[str, str] = {}
    if "json" in content_type:
        for entry in json.loads(body)["files"]:
            links[entry["filename"]] = urljoin(final_url, entry["url"]).split("#", 1)[0]
    else:
        for href in _HREF.findall(body.decode("utf-8", "replace")):
            absolute = urljoin(final_url, href.replace("&amp;", "&")).split("#", 1)[0]
            links[absolute.rsplit("/", 1)[-1]] = absolute
    return links


@dataclass
class Concurrent:
    seconds: float
    ok: int
    failed: int
    upstream_downloads: int


def concurrent_cold(instance: Instance | None, upstream: dict[str, Any], *, clients: int) -> Concurrent:
    """``clients`` simultaneous requests for one large uncached wheel, and the upstream's count.

    ``instance`` None asks the upstream directly (the baseline). The project page is read first,
    as an installer would, and is not timed.
    """
    wheel = upstream["bigwheel"]
    if instance is None:
        url = upstream["url"] + wheel["path"]
    else:
        links = page_links(instance.page_url(wheel["name"]))
        if wheel["filename"] not in links:
            raise RuntimeError(f"{instance.server.name}: the big wheel is not on its page")
        url = links[wheel["filename"]]
    load.fetch(upstream["url"] + "/_bench/reset")
    result = load.concurrent_get(url, clients, wheel["size"])
    counts = json.loads(_body(upstream["url"] + "/_bench/counts"))
    check = load.fetch(url, digest=True, encoding="identity")
    if check.sha256 != wheel["sha256"]:
        raise RuntimeError(f"{url}: served bytes whose sha256 does not match the upstream's")
    return Concurrent(result.seconds, result.ok, result.failed, int(counts.get(wheel["path"], 0)))


def _body(url: str) -> bytes:
    with _OPENER.open(url, timeout=30) as answer:
        return bytes(answer.read())


def throughput(
    instance: Instance,
    projects: Sequence[str],
    *,
    accept: str,
    clients: int,
    max_requests: int,
    max_seconds: float,
) -> load.LoadResult:
    """Warm project pages, round-robin, from ``clients`` concurrent keep-alive connections: each
    page is asked for once before (not timed), so that a kind of page no installer asked for
    before (HTML) is measured warm too."""
    paths = [urlsplit(instance.page_url(project)).path for project in projects]
    connection = load.Connection(instance.base_url)
    try:
        for path in paths:
            connection.get(path, accept)
    finally:
        connection.close()
    return load.load(
        instance.base_url,
        paths,
        accept=accept,
        clients=clients,
        max_requests=max_requests,
        max_seconds=max_seconds,
    )


def fresh_first_pages(instance: Instance, projects: Sequence[str], *, timeout: float = 120) -> list[float]:
    """Seconds a fresh process of ``instance``'s server (stopped, then started again on its cache
    and port) takes to answer each project page the first time, as pip asks for it (its Accept,
    gzip and User-Agent, a new connection each), in the order of ``projects``."""
    instance.process.stop()
    instance.process = instance.server.restart(instance, timeout=timeout)
    times = []
    for project in projects:
        connection = load.Connection(instance.base_url, user_agent=load.PIP_USER_AGENT)
        try:
            started = time.perf_counter()
            response = connection.get(urlsplit(instance.page_url(project)).path, load.PIP_ACCEPT)
            times.append(time.perf_counter() - started)
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"{instance.page_url(project)} answered {response.status} when fresh")
    return times


def fresh_port_first_pages(
    instance: Instance, projects: Sequence[str], *, timeout: float = 120
) -> list[float]:
    """:func:`fresh_first_pages` for a fresh process started on another port (a test's mirror on
    port 0, another project's tox run): each page was rendered before for the first port only.
    The server is started again on its own port after."""
    port = servers.free_port()
    old = instance.base_url.rsplit(":", 1)[1]
    moved = dataclasses.replace(
        instance,
        base_url=instance.base_url.removesuffix(old) + str(port),
        index_url=instance.index_url.replace(f":{old}/", f":{port}/", 1),
    )
    try:  # the process on its own port stopped, one started on the other
        return fresh_first_pages(moved, projects, timeout=timeout)
    finally:
        moved.process.stop()
        instance.process = instance.server.restart(instance, timeout=timeout)


#: the TTL of the run past it: a TTL of 0 would have every request ask the upstream again, by
#: configuration, where a real one lets what asks a run's pages together keep them fresh for it
PAST_TTL = 10.0


def past_ttl_download(instance: Instance, requirements: Path, dest: Path, work: Path) -> float:
    """Seconds for ``pip download`` from a fresh process of ``instance``'s nestegg (stopped, then
    started again on its cache and port with ``ttl: PAST_TTL``, that long ago) whose pages are all
    past their TTL: the next tox run after the TTL, which asks the upstream for every page again
    and finds none changed."""
    config = work / "nestegg-past-ttl.yml"
    config.write_text(f"nestegg:\n  ttl: {PAST_TTL:g}\n")
    instance.process.stop()
    instance.process = instance.server.restart(instance, extra=["--config", str(config)])
    time.sleep(PAST_TTL)  # every page was last had before the restart
    return pip_download(requirements, dest, index_url=instance.index_url)


TOX_INI = """\
[tox]
env_list = uv, pip
skip_missing_interpreters = false

[testenv]
skip_install = true
deps = -r {requirements}
commands = python -c "import numpy, pandas, requests, yaml, pytest"

[testenv:uv]
runner = uv-venv-runner

[testenv:pip]
runner = virtualenv
"""


def tox_compare(
    upstream: str, requirements: Path, root: Path, *, repeats: int = 1
) -> dict[str, list[float]] | str:
    """``tox -r`` of a sample project with the plugin (warm cache) and without it (``--no-nestegg``).

    Once with tox-uv's runner (uv installs), once with tox's own (pip installs), the latter also
    with ``compatible_only``. Installers get no cache of their own (``PIP_NO_CACHE_DIR``,
    ``UV_NO_CACHE``), as on a fresh CI machine: with the plugin the packages come from nestegg's
    warm cache, without it from the upstream. Returns why not, as text, when it cannot be measured.
    """
    # this interpreter's tox (where the plugin is installed) before any other on the PATH
    beside = Path(sys.executable).with_name("tox")
    tox = str(beside) if beside.exists() else shutil.which("tox")
    if tox is None:
        return "tox is not installed"
    env = installer_env(upstream, PIP_NO_CACHE_DIR="1", UV_NO_CACHE="1")
    probe = subprocess.run([tox, "--help"], env=env, capture_output=True, text=True, check=False)
    if "--no-nestegg" not in probe.stdout:
        return "the tox plugin (tox_nestegg) does not register its options yet"
    if importlib.util.find_spec("tox_uv") is None:
        return "tox-uv is not installed"
    project = root / "sample"
    project.mkdir(parents=True, exist_ok=True)
    (project / "requirements.txt").write_text(requirements.read_text())
    (project / "tox.ini").write_text(TOX_INI.format(requirements="requirements.txt"))
    config = root / "nestegg.yml"
    config.write_text(f"nestegg:\n  nestegg_dir: {root / 'nest'}\n  index_url: {upstream}\n")
    # the same nest, with pages for pip trimmed to what fits its interpreter
    compatible = root / "nestegg-compatible.yml"
    compatible.write_text(config.read_text() + "  compatible_only: yes\n")
    env["NESTEGG_CONFIG"] = str(config)
    env_compatible = {**env, "NESTEGG_CONFIG": str(compatible)}

    def run(name: str) -> list[str]:
        return [tox, "-c", str(project / "tox.ini"), "-r", "-e", name, "--workdir", str(root / "work")]

    timings: dict[str, list[float]] = defaultdict(list)

    def measure(key: str, command: list[str], environment: dict[str, str], what: str) -> None:
        elapsed, output = _run_timed(command, environment, what, 900)
        timings[key].append(elapsed)
        setup = _TOX_SETUP.search(output)
        if setup is not None:
            timings[f"{key}:setup"].append(float(setup.group(1)))

    _timed(run("uv,pip"), env, "tox with the plugin (warming its cache)", 900)
    for _ in range(repeats):
        for runner in ("uv", "pip"):
            measure(f"tox-{runner}-plugin", run(runner), env, f"tox -e {runner}, plugin")
            if runner == "pip":
                measure("tox-pip-compat", run(runner), env_compatible, "tox -e pip, plugin, compatible_only")
            measure(f"tox-{runner}-plain", [*run(runner), "--no-nestegg"], env, f"tox -e {runner}, no plugin")
    return dict(timings)


#: tox's report of an environment: ``uv: OK (4.13=setup[2.07]+cmd[2.06] seconds)``; the setup is
#: all but the commands (removing the old environment, making it, installing into it): the part
#: the mirror takes part in
_TOX_SETUP = re.compile(r"OK \([0-9.]+=setup\[([0-9.]+)\]")
