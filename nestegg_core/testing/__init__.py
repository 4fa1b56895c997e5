"""For tests of any project: pytest fixtures (``pytest_plugin``), generated packages (``dists``),
virtual environments made offline (``venvs``), and installers cut off from the machine's own
settings (``installer_env``)."""

from __future__ import annotations

from nestegg_core.installers import installer_env

from .venvs import find_uv, make_venv, venv_python

__all__ = ["find_uv", "installer_env", "make_venv", "venv_python"]
