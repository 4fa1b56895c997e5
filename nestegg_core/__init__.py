"""nestegg: an on-demand, lightweight, package-building PyPI mirror.

The public face: build a :class:`Config` (or :func:`load_config`), then serve it with a
:class:`Mirror` in-process, or mount :func:`create_app` in any WSGI server.

Each name is imported on first use (PEP 562): ``import nestegg_core.errors`` loads neither the
server nor the upstream client, nor does the tox plugin's ``tox -l``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._version import __version__
    from .config.config import Config, load_config
    from .errors import NesteggError
    from .serve.compose import create_app
    from .serve.server import Mirror

__all__ = ["Config", "Mirror", "NesteggError", "__version__", "create_app", "load_config"]

#: the module of each public name
_HOMES = {
    "Config": "nestegg_core.config.config",
    "Mirror": "nestegg_core.serve.server",
    "NesteggError": "nestegg_core.errors",
    "__version__": "nestegg_core._version",
    "create_app": "nestegg_core.serve.compose",
    "load_config": "nestegg_core.config.config",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return list(__all__)
