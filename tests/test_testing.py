"""installer_env really isolates pip and uv from this machine's settings; make_venv works."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nestegg_core.testing import find_uv, installer_env, make_venv

BOGUS_INDEX = "http://127.0.0.1:9/bogus-index"


def test_strips_installer_variables_and_sets_isolation() -> None:
    base = {
        "PATH": "/bin",
        "PIP_FIND_LINKS": "/opt/wheels",
        "PIP_CONSTRAINT": "/etc/c.txt",
        "pip_index_url": "http://lower.example",
        "UV_INDEX": "http://extra.example",
        "UV_CONFIG_FILE": "/etc/uv.toml",
        "PIPX_HOME": "/keep",
        "UVICORN_PORT": "1",
    }
    env = installer_env(base=base)
    assert env == {
        "PATH": "/bin",
        "PIPX_HOME": "/keep",
        "UVICORN_PORT": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
    }
    assert base["PIP_FIND_LINKS"] == "/opt/wheels"  # the caller's mapping is left alone


def test_index_url_and_extra_overrides() -> None:
    env = installer_env("http://127.0.0.1:1/simple/", base={}, UV_PYTHON_DOWNLOADS="manual", PIP_NO_INPUT="0")
    assert env["PIP_INDEX_URL"] == "http://127.0.0.1:1/simple/"
    assert env["UV_DEFAULT_INDEX"] == "http://127.0.0.1:1/simple/"
    assert env["UV_INDEX_URL"] == "http://127.0.0.1:1/simple/"
    assert env["UV_PYTHON_DOWNLOADS"] == "manual"
    assert env["PIP_NO_INPUT"] == "0"


def test_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "/somewhere")
    monkeypatch.setenv("NESTEGG_MARKER", "kept")
    env = installer_env()
    assert "PIP_FIND_LINKS" not in env
    assert env["NESTEGG_MARKER"] == "kept"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.skipif(importlib.util.find_spec("pip") is None, reason="pip is not installed")
def test_pip_reads_no_config_file(tmp_path: Path) -> None:
    # Global (XDG_CONFIG_DIRS, like /etc/xdg/pip/pip.conf), user and PIP_CONFIG_FILE files,
    # plus an environment variable, each setting something a test must never inherit.
    _write(tmp_path / "sys" / "pip" / "pip.conf", f"[global]\nindex-url = {BOGUS_INDEX}/sys\n")
    _write(tmp_path / "home" / "pip" / "pip.conf", f"[global]\nextra-index-url = {BOGUS_INDEX}\n")
    _write(tmp_path / "env.conf", "[install]\nfind-links = /nowhere/env\n")
    base = {
        **os.environ,
        "XDG_CONFIG_DIRS": str(tmp_path / "sys"),
        "XDG_CONFIG_HOME": str(tmp_path / "home"),
        "PIP_CONFIG_FILE": str(tmp_path / "env.conf"),
        "PIP_CONSTRAINT": "/nowhere/constraints.txt",
    }

    def pip_config(env: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    leaky = pip_config({**base, "PIP_CONFIG_FILE": str(tmp_path / "missing.conf")})
    # Proves the probe can see a global file that a merely missing PIP_CONFIG_FILE leaves on.
    assert f"{BOGUS_INDEX}/sys" in leaky
    isolated = pip_config(installer_env(base=base))
    for setting in ("index-url", "find-links", "constraint", "cert", "bogus", "nowhere"):
        assert setting not in isolated


@pytest.mark.parametrize("where", ["project", "user", "system"])
def test_uv_reads_no_config_file(where: str, tmp_path: Path) -> None:
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    # A broken uv.toml makes uv fail loudly if, and only if, it reads that file.
    project = tmp_path / "project"
    project.mkdir()
    config = {
        "project": project / "uv.toml",
        "user": tmp_path / "user" / "uv" / "uv.toml",
        "system": tmp_path / "system" / "uv" / "uv.toml",
    }[where]
    _write(config, "index-url = 5\n")
    base = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "user"),
        "XDG_CONFIG_DIRS": str(tmp_path / "system"),
    }
    cmd = [uv, "pip", "list", "--python", sys.executable]

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, check=False)

    leaky = installer_env(base=base)
    del leaky["UV_NO_CONFIG"]
    failed = run(leaky)
    assert failed.returncode != 0
    assert "uv.toml" in failed.stderr
    isolated = run(installer_env(base=base))
    assert isolated.returncode == 0, isolated.stderr


@pytest.mark.slow
def test_make_venv_has_pip(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    assert python.is_absolute()
    result = subprocess.run(
        [str(python), "-c", "import sys, pip; print(sys.prefix != sys.base_prefix)"],
        env=installer_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "True"
