"""What the tox plugin needs before anything runs: which commands install, the user's settings,
the variables that point installers at an index, whether tox is about to provision. Standard library
and packaging only (tox loads both anyway): ``tox -l`` imports this and nothing of the mirror.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from packaging.requirements import Requirement

#: tox sub-commands that create environments, as typed (argparse keeps aliases as typed)
INSTALLING_COMMANDS = frozenset({"legacy", "le", "run", "r", "run-parallel", "p", "exec", "e", "devenv", "d"})
#: how to go without the mirror, for every message that stops a run
DISABLE_HINT = "run with --no-nestegg or TOX_NO_NESTEGG=1 to install without it"
#: the distribution of the tox plugin, as `[tox] requires` names it to have it in a provisioned tox
PLUGIN_DISTRIBUTION = "tox-nestegg"


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
    #: the nestegg.yml to read; None means the core's lookup (``NESTEGG_CONFIG``, the tox root,
    #: ./, ~, the config dir)
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


# provisioning ------------------------------------------------------------------------------


def installed_version(name: str) -> str | None:
    """The version of the distribution ``name`` this interpreter has, None if it has none."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet_requires(
    requires: Iterable[Requirement],
    version_of: Callable[[str], str | None] = installed_version,
    environment: Mapping[str, str] | None = None,
) -> list[Requirement]:
    """The requirements of ``[tox] requires`` this interpreter does not meet: tox provisions for them.

    Judged as tox judges them: a marker that does not hold drops its requirement, a pre-release
    meets a specifier. A URL requirement is met by any installed version (tox also compares the
    recorded origin: a different one provisions and goes unsaid here).
    """
    unmet = []
    for requirement in requires:
        if requirement.marker is not None and not requirement.marker.evaluate(
            None if environment is None else dict(environment)
        ):
            continue
        version = version_of(canonicalize_name(requirement.name))
        if version is None or (
            requirement.url is None and not requirement.specifier.contains(version, prereleases=True)
        ):
            unmet.append(requirement)
    return unmet


def provision_warning(
    requires: Iterable[Requirement],
    version_of: Callable[[str], str | None] = installed_version,
    *,
    no_provision: bool | str = False,
    environment: Mapping[str, str] | None = None,
) -> str | None:
    """The line to say when tox is about to re-run itself in a provisioned tox without this plugin.

    ``no_provision`` is tox's ``--no-provision`` (tox then fails instead of provisioning).
    """
    requires = list(requires)
    if no_provision or any(canonicalize_name(r.name) == PLUGIN_DISTRIBUTION for r in requires):
        return None
    unmet = unmet_requires(requires, version_of, environment)
    if not unmet:
        return None
    return (
        f"nestegg: [tox] requires {', '.join(map(str, unmet))}, so tox provisions itself and the "
        f"provisioned tox runs without the nestegg mirror; adding {PLUGIN_DISTRIBUTION} to requires gives it"
    )
