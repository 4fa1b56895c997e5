"""Routes: the names each configured index (``upstreams`` of the config) alone serves.

A name a route matches is served by that route's mirror only: the default upstream is never
asked for it, and no other route's index is. Private names come first all the same (the
repository asks its private store before it asks a route).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from packaging.utils import NormalizedName

from nestegg_core.config.config import Upstream
from nestegg_core.simple.patterns import NamePatterns

__all__ = ["Routes"]

T = TypeVar("T")


class Routes(Generic[T]):
    """Each ``upstreams`` entry with its patterns and what serves it (made by ``make``)."""

    def __init__(self, upstreams: Sequence[Upstream], make: Callable[[Upstream], T]) -> None:
        self._entries = [(NamePatterns(u.projects), u, make(u)) for u in upstreams]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def serving(self, name: NormalizedName | str) -> T | None:
        """What serves ``name``, or None for the default upstream's names."""
        for patterns, _, target in self._entries:
            if patterns.matches(name):  # the config lets no name match two entries
                return target
        return None

    def upstream_of(self, name: NormalizedName | str) -> Upstream | None:
        for patterns, upstream, _ in self._entries:
            if patterns.matches(name):
                return upstream
        return None

    def items(self) -> list[tuple[Upstream, T]]:
        return [(upstream, target) for _, upstream, target in self._entries]
