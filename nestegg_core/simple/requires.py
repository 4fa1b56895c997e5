"""The projects a wheel's metadata requires, for one environment: what its installer asks next.

The metadata comes from upstreams, so it is read within bounds: only its headers (up to the first
empty line, in its first ``MAX_HEADERS`` bytes), one line at a time, lines of up to ``MAX_LINE``
characters, and at most ``limit`` names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

from .models import is_valid_name

__all__ = ["MAX_HEADERS", "MAX_LINE", "MAX_NAMES", "required_names"]

#: the longest Requires-Dist line read (real ones are under 200 characters)
MAX_LINE = 1000
#: the most names taken from one wheel (the largest real lists are about 60 long, extras included)
MAX_NAMES = 64
#: the bytes of a metadata file read for its headers (a folded Description of old ones included)
MAX_HEADERS = 1024 * 1024

_FIELD = b"requires-dist:"
#: what a marker packaging cannot evaluate raises; such a requirement is not taken
_UNDECIDED = (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName, TypeError, ValueError)


def required_names(
    metadata: bytes, environment: Mapping[str, str], *, of: str | None = None, limit: int = MAX_NAMES
) -> tuple[NormalizedName, ...]:
    """The names the ``Requires-Dist`` fields of ``metadata`` (a METADATA or PKG-INFO file)
    require in ``environment`` (see ``clients.marker_environment``) with no extra, in their
    order, each once, without ``of`` (the distribution's own name) and at most ``limit`` of them.
    A field that does not parse, or whose marker cannot be evaluated, is left out."""
    names: dict[NormalizedName, None] = {}
    own = canonicalize_name(of) if of is not None else None
    context = {**environment, "extra": ""}
    for line in _headers(metadata[:MAX_HEADERS]):
        if len(line) > MAX_LINE or line[: len(_FIELD)].lower() != _FIELD:
            continue
        try:
            requirement = Requirement(line[len(_FIELD) :].decode("utf-8").strip())
            if requirement.marker is not None and not requirement.marker.evaluate(context):
                continue
        except (InvalidRequirement, UnicodeDecodeError, *_UNDECIDED):
            continue
        if not is_valid_name(requirement.name):
            continue
        name = canonicalize_name(requirement.name)
        if name != own:
            names[name] = None
            if len(names) >= limit:
                break
    return tuple(names)


def _headers(metadata: bytes) -> Iterator[bytes]:
    """The lines of ``metadata`` up to the first empty one (the description follows it), one at a
    time: a hostile file of short lines would make a list many times its size."""
    start = 0
    while start < len(metadata):
        end = metadata.find(b"\n", start)
        if end < 0:
            end = len(metadata)
        line = metadata[start:end].rstrip(b"\r")
        if not line:
            return
        yield line
        start = end + 1
