"""Run real installers (pip, uv) in tests, isolated from the machine's own settings.

A test that installs through nestegg proves nothing if pip quietly also reads a site-wide
``find-links`` or extra index: every environment given to pip or uv should come from
:func:`installer_env`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["find_uv", "installer_env", "make_venv"]

_INSTALLER_PREFIXES = ("PIP_", "UV_")


def installer_env(
    index_url: str | None = None, *, base: Mapping[str, str] | None = None, **extra: str
) -> dict[str, str]:
    """An environment for pip and uv that ignores every installer setting of this machine.

    Starts from ``base`` (default ``os.environ``) without any ``PIP_*``/``UV_*`` variable,
    disables all of pip's and uv's configuration files, points both at ``index_url`` when
    given, and applies ``extra`` last. Pass ``--python`` to ``uv pip`` explicitly: uv picks
    its target from ``VIRTUAL_ENV``/``CONDA_PREFIX``, which are left alone.
    """
    source = os.environ if base is None else base
    # Windows environment names are case-insensitive, so compare upper-cased.
    env = {k: v for k, v in source.items() if not k.upper().startswith(_INSTALLER_PREFIXES)}
    env.update(
        # pip: variables override its config files, hence all PIP_* are dropped above. For
        # the files, pip's Configuration._load_config_files returns before reading any of
        # them (global /etc/xdg/pip/pip.conf and /etc/pip.conf, user, and the venv's own
        # site pip.conf) when PIP_CONFIG_FILE is exactly os.devnull; any other nonexistent
        # path would only skip the user file and still load the global ones.
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        # uv never reads pip.conf or PIP_*; it discovers uv.toml / pyproject.toml [tool.uv]
        # from the working directory upwards, the user's $XDG_CONFIG_HOME/uv/uv.toml and the
        # system's $XDG_CONFIG_DIRS/uv/uv.toml or /etc/uv/uv.toml. UV_NO_CONFIG turns all of
        # that discovery off (UV_CONFIG_FILE went with the other UV_* above).
        UV_NO_CONFIG="1",
        # A missing interpreter must fail the test, not download one.
        UV_PYTHON_DOWNLOADS="never",
    )
    if index_url is not None:
        # UV_INDEX_URL too: uv releases before UV_DEFAULT_INDEX only know that one.
        env.update(PIP_INDEX_URL=index_url, UV_DEFAULT_INDEX=index_url, UV_INDEX_URL=index_url)
    env.update(extra)
    return env


def find_uv() -> str | None:
    """The uv executable: on ``PATH``, else the one of the installed ``uv`` package."""
    found = shutil.which("uv")
    if found is not None:
        return found
    try:
        from uv import find_uv_bin  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    try:
        return str(find_uv_bin())
    except FileNotFoundError:
        return None


def venv_python(venv: Path) -> Path:
    """The interpreter of the virtualenv at ``venv``."""
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _bundled_pip() -> Path | None:
    # The pip wheel that ships with this interpreter: lets uv seed pip with no index.
    # Debian-style Pythons strip it, hence the fallback to plain venv below.
    try:
        import ensurepip  # noqa: PLC0415  (only needed here)
    except ImportError:
        return None
    bundled = Path(ensurepip.__file__).parent / "_bundled"
    return bundled if any(bundled.glob("pip-*.whl")) else None


def _run(cmd: Sequence[str], env: Mapping[str, str]) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")


def make_venv(path: Path) -> Path:
    """Create a virtualenv with pip at ``path`` for this interpreter, offline; return its python.

    Uses uv and this interpreter's bundled pip wheel when both exist (a fraction of a
    second), else ``python -m venv`` (several seconds).
    """
    path = path.absolute()
    env = installer_env()
    uv = find_uv()
    pip_wheels = _bundled_pip()
    python = venv_python(path)
    if uv is not None and pip_wheels is not None:
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(path)], env)
        seed = ["--no-index", "--find-links", str(pip_wheels), "pip"]
        _run([uv, "pip", "install", "--quiet", "--python", str(python), *seed], env)
    else:
        # ensurepip runs pip, which must not see this machine's pip settings either.
        _run([sys.executable, "-m", "venv", str(path)], env)
    return python
