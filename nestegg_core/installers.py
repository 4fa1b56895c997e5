"""Run real installers (pip, uv) isolated from the machine's own settings: in tests, in the
builds and CI runs of source builds, and in ``nestegg export``.

A test that installs through nestegg proves nothing if pip quietly also reads a site-wide
``find-links`` or extra index: every environment given to pip or uv should come from
:func:`installer_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["installer_env"]

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
