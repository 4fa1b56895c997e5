"""Virtual environments for tests, made offline (uv and this interpreter's own pip wheel), and uv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from nestegg_core.installers import installer_env

__all__ = ["find_uv", "make_venv", "venv_python"]


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
