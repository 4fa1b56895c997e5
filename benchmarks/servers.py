"""The servers under test: nestegg (its CLI), devpi-server and proxpi, each a process on loopback.

Every process is started by :func:`launch` and stopped by :meth:`Process.stop`, by its PID (and
its children's, for gunicorn's worker); :func:`stop_all` stops whatever is left on the way out.
Peers are installed into their own virtualenvs from the index pip uses, with pip's and uv's
settings of this machine turned off (``nestegg_core.testing.installer_env``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import load
import requests

from nestegg_core.testing import find_uv, installer_env, venv_python

ROOT = Path(__file__).resolve().parents[1]

_started: list[Process] = []


def free_port() -> int:
    # peers take a port number, not a socket: ask the kernel for a free one and hand it over
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A started server process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    peak_rss: int = 0  # bytes, the largest seen by ``sample_rss``
    _children: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def sample_rss(self) -> int:
        """Record the peak RSS of the process and its children (VmHWM, summed) and return it."""
        pids = [self.pid, *_descendants(self.pid)]
        self._children.update(pids[1:])
        total = sum(_vm_hwm(pid) for pid in pids)
        self.peak_rss = max(self.peak_rss, total)
        return self.peak_rss

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL) and any child it left."""
        if self.alive():
            self.sample_rss()
            self._children.update(_descendants(self.pid))
            self.popen.send_signal(signal.SIGINT if self.name == "proxpi" else signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if _is_zombie_or_gone(pid):
                    continue
                os.kill(pid, signal.SIGKILL)
        if self in _started:
            _started.remove(self)


def launch(
    name: str, command: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            list(command),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    process = Process(name, popen, log)
    _started.append(process)
    return process


def stop_all() -> None:
    for process in list(_started):
        with contextlib.suppress(Exception):
            process.stop(timeout=5)


def _descendants(pid: int) -> list[int]:
    found = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in task.read_text().split():
                    found.append(int(child))
                    todo.append(int(child))
    return found


def _vm_hwm(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def wait_for(url: str, *, timeout: float, process: Process | None = None, accept: str = "*/*") -> float:
    """Poll ``url`` until it answers 200; the seconds waited. Raises if the process dies."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        try:
            response = load.fetch(url, accept, timeout=10)
        except (load.HttpError, OSError):
            response = None
        if response is not None and response.status == 200:
            return time.perf_counter() - started
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}; see {process.log}")
        time.sleep(0.002)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g}s")


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a server process: no pip/uv settings of this machine, no proxies."""
    env = installer_env()
    for key in list(env):
        if key.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[key]
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------


@dataclass
class Instance:
    """One running server: its process and URLs."""

    server: Server
    process: Process
    base_url: str
    #: the Simple API root, ending in a slash
    index_url: str
    started_in: float = 0.0
    #: what it was started with: its cache, upstream and role (see :meth:`Server.restart`)
    cache: Path | None = None
    upstream: str = ""
    role: str = ""

    def page_url(self, project: str) -> str:
        return f"{self.index_url}{project}/"


class Server(ABC):
    """A kind of server: how to install it, prepare it once and start instances."""

    name: str

    def __init__(self, work: Path) -> None:
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.version = "?"

    def install(self, index_url: str) -> None:  # noqa: B027 - not every kind needs one
        """Install into a virtualenv of our own."""

    def prepare(self, upstreams: Mapping[str, str]) -> None:  # noqa: B027 - only devpi needs it
        """One-time set-up not counted in start-up (devpi's init): ``upstreams`` by role."""

    @abstractmethod
    def command(self, port: int, cache: Path, upstream: str, role: str) -> tuple[list[str], dict[str, str]]:
        """The command and environment that serve ``upstream`` from the empty ``cache``."""

    @abstractmethod
    def index_path(self, role: str) -> str:
        """The path of the Simple API root of an instance serving the ``role`` upstream."""

    def start(
        self, upstream: str, role: str, *, probe: str | None, timeout: float = 120.0, proxy: str | None = None
    ) -> Instance:
        """Start with an empty cache; time from launch to the first 200 on ``probe``'s page. With a
        ``proxy``, the server reaches an HTTPS upstream through it (``HTTPS_PROXY``)."""
        cache = self.work / f"cache-{role}-{secrets.token_hex(4)}"
        port = free_port()
        command, env = self.command(port, cache, upstream, role)
        if proxy is not None:
            env = {**env, "HTTPS_PROXY": proxy}
        base = f"http://127.0.0.1:{port}"
        index_url = base + self.index_path(role)
        launched = time.perf_counter()
        process = launch(self.name, command, env=env, log=self.work / "server.log")
        if probe:
            wait_for(f"{index_url}{probe}/", timeout=timeout, process=process, accept=load.PIP_ACCEPT)
        else:
            wait_for(base + self.ready_path(), timeout=timeout, process=process)
        elapsed = time.perf_counter() - launched
        return Instance(self, process, base, index_url, elapsed, cache, upstream, role)

    def restart(self, instance: Instance, *, timeout: float = 120.0, extra: Sequence[str] = ()) -> Process:
        """A new process of the stopped ``instance``: its cache as it left it, its port (so that
        pages name the same URLs), ready when it answers; ``extra`` arguments after its command."""
        assert instance.cache is not None
        port = int(instance.base_url.rsplit(":", 1)[1])
        command, env = self.command(port, instance.cache, instance.upstream, instance.role)
        command = [*command, *extra]
        process = launch(self.name, command, env=env, log=self.work / "server.log")
        wait_for(instance.base_url + self.ready_path(), timeout=timeout, process=process)
        return process

    def ready_path(self) -> str:
        return "/"

    def _venv(self, index_url: str, packages: Sequence[str]) -> Path:
        venv = self.work / "venv"
        python = venv_python(venv)
        env = installer_env(index_url)
        uv = find_uv()
        if not python.exists():
            if uv is not None:
                _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], env)
            else:
                _run([sys.executable, "-m", "venv", str(venv)], env)
        if uv is not None:
            # compiled as pip compiles at install: without it, a machine that sets
            # PYTHONDONTWRITEBYTECODE (this one does) compiles every module at every start
            install = [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python)]
            _run([*install, *packages], env)
        else:
            _run([str(python), "-m", "pip", "install", "--quiet", *packages], env)
        return venv


def _run(command: Sequence[str], env: Mapping[str, str]) -> str:
    result = subprocess.run(list(command), env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


class Nestegg(Server):
    name = "nestegg"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        from nestegg_core import __version__  # noqa: PLC0415

        self.version = __version__
        self.python = Path(sys.executable)

    def install(self, index_url: str) -> None:
        # from this checkout into a virtualenv of its own, as the peers are: not this interpreter,
        # whose editable install adds its import hook to every start (12 ms here)
        self.python = venv_python(self._venv(index_url, [str(ROOT)]))

    def command(self, port: int, cache: Path, upstream: str, role: str) -> tuple[list[str], dict[str, str]]:  # noqa: ARG002
        command = [
            str(self.python),
            "-m",
            "nestegg_core",
            "-q",
            "--cache-dir",
            str(cache),
            "--index-url",
            upstream,
            "serve",
            "--port",
            str(port),
        ]
        return command, server_env()

    def index_path(self, role: str) -> str:  # noqa: ARG002
        return "/simple/"

    def ready_path(self) -> str:
        return "/health"


class NesteggCompatible(Nestegg):
    """nestegg with ``compatible_only``: pages for pip list only the files that fit its interpreter."""

    name = "nestegg-compat"

    def command(self, port: int, cache: Path, upstream: str, role: str) -> tuple[list[str], dict[str, str]]:
        command, env = super().command(port, cache, upstream, role)
        return [*command, "--compatible-only"], env


class Bare(Server):
    """``benchmarks/bare.py`` in nestegg's interpreter: the cold rows' floor, not a peer."""

    name = "bare"

    def __init__(self, work: Path, nestegg: Nestegg) -> None:
        super().__init__(work)
        self.nestegg = nestegg
        self.version = "benchmarks/bare.py"

    def command(self, port: int, cache: Path, upstream: str, role: str) -> tuple[list[str], dict[str, str]]:  # noqa: ARG002
        script = str(ROOT / "benchmarks" / "bare.py")
        command = [str(self.nestegg.python), script, "--port", str(port), "--upstream", upstream]
        return [*command, "--cache", str(cache)], server_env()

    def index_path(self, role: str) -> str:  # noqa: ARG002
        return "/simple/"

    def ready_path(self) -> str:
        return "/health"


class Devpi(Server):
    """devpi-server at its fastest: initialised beforehand, mirrors without the project list, and
    the argon2 cost of its login secret lowered (``default_settings`` turns that off)."""

    name = "devpi"
    #: start with devpi-server's own argon2 settings (the measure of its default start-up)
    default_settings = False

    def install(self, index_url: str) -> None:
        venv = self._venv(index_url, ["devpi-server"])
        self.bin = venv / "bin"
        self.version = _run([str(self.bin / "devpi-server"), "--version"], server_env()).strip()
        self.logger_cfg = self.work / "logging.json"
        self.logger_cfg.write_text(
            json.dumps(
                {
                    "version": 1,
                    "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
                    "root": {"handlers": ["console"], "level": "WARNING"},
                }
            )
        )

    def prepare(self, upstreams: Mapping[str, str]) -> None:
        """devpi-init once, and one mirror index per upstream; instances start from copies."""
        self.template = self.work / "template"
        shutil.rmtree(self.template, ignore_errors=True)
        password = secrets.token_urlsafe(12)
        _run(
            [
                str(self.bin / "devpi-init"),
                "--serverdir",
                str(self.template),
                "--no-root-pypi",
                "--root-passwd",
                password,
            ],
            server_env(),
        )
        port = free_port()
        command = self._serve(self.template, port)
        process = launch(self.name, command, env=server_env(), log=self.work / "prepare.log")
        try:
            wait_for(f"http://127.0.0.1:{port}/+api", timeout=120, process=process)
            with requests.Session() as session:
                session.trust_env = False
                session.auth = ("root", password)
                for role, url in upstreams.items():
                    config = {
                        "type": "mirror",
                        "mirror_url": url,
                        "mirror_no_project_list": True,
                        "volatile": False,
                    }
                    response = session.put(f"http://127.0.0.1:{port}/root/{role}", json=config, timeout=60)
                    if response.status_code != 200:
                        raise RuntimeError(
                            f"devpi: creating root/{role}: {response.status_code} {response.text}"
                        )
        finally:
            process.stop()

    def _serve(self, serverdir: Path, port: int, *, fastest: bool = True) -> list[str]:
        command = [
            str(self.bin / "devpi-server"),
            "--serverdir",
            str(serverdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--logger-cfg",
            str(self.logger_cfg),
            "--request-timeout",
            "60",
        ]
        if fastest:
            # the key derivation of its login secret (argon2: 512 MiB, 16 passes) takes seconds at
            # every start; these hidden knobs (meant for its tests) make it instant and small
            command += ["--argon2-memory-cost", "8", "--argon2-parallelism", "1", "--argon2-time-cost", "1"]
        return command

    def command(self, port: int, cache: Path, upstream: str, role: str) -> tuple[list[str], dict[str, str]]:  # noqa: ARG002
        shutil.copytree(self.template, cache)
        return self._serve(cache, port, fastest=not self.default_settings), server_env()

    def index_path(self, role: str) -> str:
        return f"/root/{role}/+simple/"

    def ready_path(self) -> str:
        return "/+api"


class Proxpi(Server):
    """proxpi under gunicorn, as its image runs it: one process (its cache is per process), threads."""

    name = "proxpi"

    def install(self, index_url: str) -> None:
        venv = self._venv(index_url, ["proxpi", "gunicorn"])
        self.bin = venv / "bin"
        python = venv_python(venv)
        self.version = _run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('proxpi'))"], server_env()
        ).strip()

    def command(self, port: int, cache: Path, upstream: str, role: str) -> tuple[list[str], dict[str, str]]:  # noqa: ARG002
        command = [
            str(self.bin / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "16",
            "proxpi.server:app",
        ]
        env = server_env(
            PROXPI_INDEX_URL=upstream, PROXPI_CACHE_DIR=str(cache), PROXPI_LOGGING_LEVEL="WARNING"
        )
        return command, env

    def index_path(self, role: str) -> str:  # noqa: ARG002
        return "/index/"
