"""What the tox plugin needs before anything runs: which commands install, the user's settings,
the variables that point installers at an index. Standard library only: ``tox -l`` imports this
and nothing of the mirror.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: tox sub-commands that create environments, as typed (argparse keeps aliases as typed)
INSTALLING_COMMANDS = frozenset({"legacy", "le", "run", "r", "run-parallel", "p", "exec", "e", "devenv", "d"})
#: how to go without the mirror, for every message that stops a run
DISABLE_HINT = "run with --no-nestegg or TOX_NO_NESTEGG=1 to install without it"


PIP_INDEX_URL = "PIP_INDEX_URL"
PIP_EXTRA_INDEX_URL = "PIP_EXTRA_INDEX_URL"
PIP_FIND_LINKS = "PIP_FIND_LINKS"
UV_DEFAULT_INDEX = "UV_DEFAULT_INDEX"
UV_INDEX_URL = "UV_INDEX_URL"
UV_INDEX = "UV_INDEX"
UV_EXTRA_INDEX_URL = "UV_EXTRA_INDEX_URL"
UV_FIND_LINKS = "UV_FIND_LINKS"
#: every variable read from an environment (and possibly replaced in it)
INDEX_VARIABLES = (
    PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS,
    UV_DEFAULT_INDEX, UV_INDEX_URL, UV_INDEX, UV_EXTRA_INDEX_URL, UV_FIND_LINKS,
)  # fmt: skip


def command_installs(command: str, *, only_lists: bool = False) -> bool:
    """Whether the tox sub-command ``command`` creates environments and so needs the mirror.

    ``only_lists`` is for the legacy command with ``-l``, ``-a`` or ``--showconfig``.
    """
    if command not in INSTALLING_COMMANDS:
        return False
    return not (command in ("legacy", "le") and only_lists)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the user asked of nestegg for this tox run."""

    enabled: bool = True
    #: the nestegg.yml to read; None means the core's lookup (``NESTEGG_CONFIG``, ./, ~, config dir)
    config_file: Path | None = None
    offline: bool = False
    refresh: bool = False


def resolve_settings(
    *,
    no_nestegg: bool = False,
    config_option: Path | None = None,
    offline_option: bool = False,
    refresh_option: bool = False,
    enabled: bool = True,
    config_key: str = "",
    offline_key: bool = False,
    refresh_key: bool = False,
    root: Path,
) -> Settings:
    """Command line (``--no-nestegg``, ``--nestegg-*``) over tox config keys (``nestegg*``).

    A relative ``nestegg_config`` in tox's config is relative to the tox root, a relative
    ``--nestegg-config`` to the current directory.
    """
    if config_option is not None:
        config_file: Path | None = config_option.expanduser()
    elif config_key.strip():
        config_file = root / Path(config_key.strip()).expanduser()
    else:
        config_file = None
    return Settings(
        enabled=enabled and not no_nestegg,
        config_file=config_file,
        offline=offline_option or offline_key,
        refresh=refresh_option or refresh_key,
    )
