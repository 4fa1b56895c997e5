"""The fence around pip: its built-in default index, the one internal nestegg reads.

pip is not a requirement of nestegg: without pip (or with a pip that moved it) there is no
default upstream, and the error says how to name one. Tested with pip 23.2 to 26;
``tests/test_fences.py`` fails, naming it, when ``pip._internal.models.index.PyPI`` is gone.
"""

from __future__ import annotations

from nestegg_core.errors import ConfigError

__all__ = ["default_index"]


def default_index() -> str:
    """pip's own built-in default index URL, read from pip so that no index host is written here."""
    try:
        from pip._internal.models.index import PyPI  # noqa: PLC0415 - only when no index is configured
    except ImportError:
        raise ConfigError(
            "no upstream index: set index-url in nestegg.yml, pass --index-url, or set PIP_INDEX_URL"
        ) from None
    return str(PyPI.simple_url)
