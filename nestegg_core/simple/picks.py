"""The file pip most likely takes from a page: a guess, for downloading it ahead of pip's request.

pip, given a project page, takes the newest release it may install and, of that release, the
wheel whose tags come first among those its interpreter supports; a source distribution only when
the release has no wheel for it. What pip's requirement allows is not on the request: the guess is
the newest final release, as for a requirement of the name alone (most of an unpinned install; a
pinned one makes the guess wrong, which its caller learns from pip's next request). Where the
User-Agent does not say enough to rank wheels (macOS, musl, PyPy), only a release with one
wheel that may fit is guessed.
"""

from __future__ import annotations

from functools import lru_cache

from packaging import tags
from packaging.version import Version

from .clients import ClientProfile, fits, pip_installs_from, wheel_tag_sets
from .models import DistFile, ProjectPage, parse_version, version_of

__all__ = ["likely_pick", "supported_tags"]

#: the oldest glibc of the manylinux tags of a processor (PEP 600: manylinux1 was x86 only)
_OLDEST_GLIBC = {"x86_64": 5, "i686": 5}
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_WINDOWS = {"AMD64": "win_amd64", "x86": "win32", "ARM64": "win_arm64"}
#: tags a wheel's name may give for it to be ranked; real ones give a few (py2.py3, or four
#: manylinux names of one platform)
_MAX_TAGS = 64


def likely_pick(page: ProjectPage, profile: ClientProfile) -> DistFile | None:
    """The wheel pip installing for ``profile`` most likely takes from ``page`` for a requirement
    of the project's name alone: of the newest final release with a file that may fit, its best
    ranked wheel (:func:`supported_tags`). None when that release has only a source
    distribution for it, or its wheels cannot be ranked, or there is no such release."""
    releases: dict[str, list[DistFile]] = {}
    for dist in page.files:
        version = version_of(dist.filename) if dist.yanked is None else None
        if version is not None:
            releases.setdefault(version, []).append(dist)
    newest_first = sorted(
        ((parsed, text) for text in releases if (parsed := _version(text)) is not None), reverse=True
    )
    for parsed, text in newest_first:
        if parsed.is_prerelease:
            continue
        files = [d for d in releases[text] if pip_installs_from(d) and fits(d, profile)]
        if files:
            wheels = [d for d in files if d.filename.endswith(".whl")]
            return _best_wheel(wheels, profile) if wheels else None
    return None


@lru_cache(maxsize=8192)
def _version(text: str) -> Version | None:
    """``parse_version``, once per version: a page of 300 releases took 1 ms to read them."""
    return parse_version(text)


def _best_wheel(wheels: list[DistFile], profile: ClientProfile) -> DistFile | None:
    ranks = supported_tags(profile)
    if ranks is None:
        return wheels[0] if len(wheels) == 1 else None
    best: tuple[int, DistFile] | None = None
    for dist in wheels:
        rank = _rank(dist.filename, ranks)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, dist)
    return None if best is None else best[1]


def _rank(filename: str, ranks: dict[str, int]) -> int | None:
    """The best rank in ``ranks`` of the wheel ``filename``'s tags; None for none, or for a wheel
    of more than ``_MAX_TAGS`` tags (a name made to cost: each of its compressed tag sets
    multiplies the others)."""
    tag_sets = wheel_tag_sets(filename)
    if tag_sets is None:
        return None
    pythons, abis, platforms = tag_sets
    if len(pythons) * len(abis) * len(platforms) > _MAX_TAGS:
        return None
    found = [ranks.get(f"{p}-{a}-{x}") for p in pythons for a in abis for x in platforms]
    return min((rank for rank in found if rank is not None), default=None)


@lru_cache(maxsize=64)
def supported_tags(profile: ClientProfile) -> dict[str, int] | None:
    """The wheel tags pip supports for ``profile``, each with its rank (0 first, as
    ``packaging.tags.sys_tags`` orders them); None where the User-Agent does not say enough: a
    CPython on Linux with glibc or on Windows only."""
    if profile.implementation != "CPython" or profile.cpu is None:
        return None
    if profile.system == "Linux" and profile.glibc is not None:
        arch, (_, newest) = profile.cpu, profile.glibc
        platforms = [f"linux_{arch}"]  # first in the order pip 26 vendors; indexes refuse those
        for minor in range(newest, _OLDEST_GLIBC.get(arch, 17) - 1, -1):
            platforms.append(f"manylinux_2_{minor}_{arch}")
            if minor in _LEGACY and (minor == 17 or arch in _OLDEST_GLIBC):
                platforms.append(f"{_LEGACY[minor]}_{arch}")
    elif profile.system == "Windows" and profile.cpu in _WINDOWS:
        platforms = [_WINDOWS[profile.cpu]]
    else:
        return None
    python = profile.major_minor
    interpreter = f"cp{python[0]}{python[1]}"
    ranked = [
        *tags.cpython_tags(python, [interpreter], platforms),
        *tags.compatible_tags(python, interpreter, platforms),
    ]
    found: dict[str, int] = {}
    for rank, tag in enumerate(ranked):
        found.setdefault(str(tag), rank)
    return found
