"""The index pip would use: ``PIP_INDEX_URL``, pip's configuration files, else pip's default.

The files are read as pip reads them, without importing pip (which is not a requirement of
nestegg); only pip's built-in default comes from pip itself, through :mod:`._pip`.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from . import _pip

__all__ = ["pip_config_value", "pip_index_setting", "pip_index_url"]


def pip_index_url(environ: Mapping[str, str] | None = None) -> str:
    """The index URL pip would use: ``PIP_INDEX_URL``, pip's config files, else pip's default.

    The config files are read in pip's order (site-wide, user, the interpreter's, ``PIP_CONFIG_FILE``),
    later ones winning and an ``[install]`` section over ``[global]``; ``PIP_CONFIG_FILE`` set to
    the null device turns them all off, as in pip.
    """
    return pip_index_setting(environ)[0]


def pip_index_setting(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """:func:`pip_index_url`, and where it is set, for people: ``$PIP_INDEX_URL``, a config
    file's ``index-url``, or pip's default."""
    env = os.environ if environ is None else environ
    if env.get("PIP_INDEX_URL"):
        return env["PIP_INDEX_URL"], "$PIP_INDEX_URL (the index pip uses)"
    found = _pip_config_setting("index-url", env)
    if found is not None:
        return found[0], f"{found[1]}: index-url (the index pip uses)"
    return _pip.default_index(), "pip's default index"


def pip_config_value(option: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of ``option`` (like ``extra-index-url``) in pip's config files, or None.

    Files and sections are read as :func:`pip_index_url` describes; environment variables are
    not looked at.
    """
    found = _pip_config_setting(option, os.environ if environ is None else environ)
    return None if found is None else found[0]


def _pip_config_setting(option: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """:func:`pip_config_value`, and the file it is read from."""
    found = None
    for path in _pip_config_files(env):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    if key.replace("_", "-") == option and value.strip():
                        found = (value.strip(), path)
    return found


def _pip_config_files(env: Mapping[str, str]) -> list[str]:
    env_file = env.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    xdg_dirs = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [os.path.join(d, "pip", "pip.conf") for d in xdg_dirs.split(os.pathsep) if d]
    files.append("/etc/pip.conf")
    home = Path(env.get("HOME") or Path.home())
    files.append(str(home / ".pip" / "pip.conf"))
    xdg_home = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    files.append(os.path.join(xdg_home, "pip", "pip.conf"))
    files.append(os.path.join(sys.prefix, "pip.conf"))
    if env_file:
        files.append(env_file)
    return [f for f in files if os.path.isfile(f)]
