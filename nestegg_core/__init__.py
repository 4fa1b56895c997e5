"""nestegg: an on-demand, lightweight, package-building PyPI mirror.

The public face: build a :class:`Config` (or :func:`load_config`), then serve it with a
:class:`Mirror` in-process, or mount :func:`create_app` in any WSGI server.
"""

from __future__ import annotations

from ._version import __version__
from .config.config import Config, load_config
from .errors import NesteggError
from .serve.compose import create_app
from .serve.server import Mirror

__all__ = ["Config", "Mirror", "NesteggError", "__version__", "create_app", "load_config"]
