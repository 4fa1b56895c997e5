"""Helpers of the recipe tests (tests/test_recipes.py): real clients installed once per client
version, an environment cut off from the machine's settings, and a proxy that refuses and records
every request that tries to leave 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nestegg_core.storage.locks import FileLock
from nestegg_core.testing import installer_env, make_venv, venv_python

# Settings of the other clients: each would override what the recipe configures.
_CLIENT_PREFIXES = ("POETRY_", "PDM_", "HATCH_", "PIPENV_", "TWINE_", "PIP_TOOLS_", "CUSTOM_COMPILE_")
# What makes a client use another environment or interpreter than the one the test gives it.
_ENVIRONMENT_NAMES = ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME", "PYENV_VERSION")
_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY")
# How long installing a client from the package index may take before the recipe is skipped.
_INSTALL_TIMEOUT = 600


def clients_cache() -> Path:
    """Where installed clients are kept between test sessions (``$NESTEGG_TEST_CLIENTS``, else the
    temporary directory): one virtualenv per client version and Python."""
    configured = os.environ.get("NESTEGG_TEST_CLIENTS")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "nestegg-test-clients"


@dataclass(frozen=True, kw_only=True)
class Client:
    """A client installed in its own virtualenv."""

    requirement: str
    venv: Path

    @property
    def python(self) -> Path:
        return venv_python(self.venv)

    def bin(self, name: str) -> str:
        return str(self.python.parent / name)


def install_client(*requirements: str) -> Client:
    """``requirements`` installed from the package index (this machine's pip settings) into a
    virtualenv kept in :func:`clients_cache`; skips the test when it cannot be installed."""
    requirement = " ".join(requirements)
    key = re.sub(r"[^A-Za-z0-9.=_-]", "_", requirement) + f"-py{sys.version_info[0]}.{sys.version_info[1]}"
    root = clients_cache()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / key
    done = venv / ".nestegg-installed"
    # Two sessions at once (xdist, two checkouts) install each client once.
    with FileLock(root / f"{key}.lock", timeout=_INSTALL_TIMEOUT):
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            try:
                python = make_venv(venv)
                env = {k: v for k, v in os.environ.items() if k not in _ENVIRONMENT_NAMES}
                result = subprocess.run(
                    [str(python), "-m", "pip", "install", "--quiet", *requirements],
                    env=env, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False,
                )  # fmt: skip
            except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
                pytest.skip(f"{requirement} could not be installed from the package index: {error}")
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
                pytest.skip(f"{requirement} could not be installed from the package index: {last}")
            done.write_text(requirement + "\n")
    return Client(requirement=requirement, venv=venv)


@dataclass
class RefusingProxy:
    """An HTTP proxy on 127.0.0.1 that answers every request 403 and records its first line: a
    client given it for HTTP_PROXY/HTTPS_PROXY/ALL_PROXY cannot reach any host but loopback (which
    NO_PROXY sends direct), and the test sees that it did not try."""

    tried: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="refusing-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    first = "(nothing read)"
                with self._lock:
                    self.tried.append(first)
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 403 No request may leave 127.0.0.1\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")  # fmt: skip

    def attempts(self) -> list[str]:
        with self._lock:
            return list(self.tried)

    def reset(self) -> None:
        with self._lock:
            self.tried.clear()

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        self._thread.join(5)


@contextlib.contextmanager
def refusing_proxy() -> Iterator[RefusingProxy]:
    proxy = RefusingProxy()
    try:
        yield proxy
    finally:
        proxy.close()


def client_env(
    home: Path,
    proxy: RefusingProxy,
    *,
    path: Sequence[Path] = (),
    index_url: str | None = None,
    keep_uv_config: bool = False,
    **extra: str,
) -> dict[str, str]:
    """An environment for a client that reads none of this machine's settings: pip and uv cut off
    (``installer_env``), every other client's variables dropped, HOME and the XDG directories in
    ``home``, and every request that is not to loopback sent to ``proxy``.

    ``keep_uv_config`` lets uv read the project's pyproject.toml (``UV_NO_CONFIG`` would ignore its
    ``[tool.uv]``); the user's and the system's uv.toml are still out of reach, under ``home``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(_CLIENT_PREFIXES)
        and k.upper() not in _ENVIRONMENT_NAMES
        and k.upper() not in _PROXY_NAMES
    }
    env = installer_env(index_url, base=base)
    if keep_uv_config:
        del env["UV_NO_CONFIG"]
    for name in ("config", "cache", "data", "state"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CONFIG_DIRS=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        PATH=os.pathsep.join([*(str(p) for p in path), env.get("PATH", os.defpath)]),
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = proxy.url
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def run(
    command: Sequence[str | Path], *, env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``command`` run to its end; a failure shows both outputs."""
    result = subprocess.run(
        [str(c) for c in command], env=dict(env), cwd=cwd, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result
