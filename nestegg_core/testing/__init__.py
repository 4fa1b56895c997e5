"""For tests of any project: pytest fixtures, generated packages, isolated installers."""

from __future__ import annotations

from nestegg_core.installers import find_uv, installer_env, make_venv, venv_python

__all__ = ["find_uv", "installer_env", "make_venv", "venv_python"]
