"""Sizes as people write and read them: ``500M``, ``20G`` in settings; ``64 MiB`` in messages."""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?$", re.IGNORECASE | re.ASCII)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: object) -> int:
    """Bytes from ``500M``, ``10G``, ``1.5TiB``, ``200kb`` or a plain number of bytes.

    Units are powers of 1024 whatever their spelling; raises :class:`ValueError` with a message.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]) if match else 0
    if size <= 0:
        shown = "nothing" if value is None else f"{type(value).__name__} {value!r}"
        raise ValueError(f"expected a size like 500M or 20G, got {shown}")
    return size


def format_size(size: int) -> str:
    """``size`` bytes as a person reads them: ``64 MiB``, ``1.5 GiB``, ``512 bytes``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + " " + unit
    return f"{size} bytes"
