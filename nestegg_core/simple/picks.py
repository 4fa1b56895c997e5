"""The file pip most likely takes from a page: a guess, for downloading it ahead of pip's request.

pip, given a project page, takes the newest release it may install and, of that release, the
wheel whose tags come first among those its interpreter supports; a source distribution only when
the release has no wheel for it. What pip's requirement allows is not on the request, so two
guesses are made (:class:`Picks`): the newest final release, as for a requirement of the name
alone (most of an unpinned install), and the newest uploaded by a given time, as for a pin made
then: a lock file pins most projects to the release that was newest on the day it was made,
which the upload times of the files the client took tell (its caller keeps them, and learns
from pip's next request which guess was right). Where the User-Agent does not say enough to rank
wheels (macOS, musl, PyPy), only a release with one wheel that may fit is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from packaging import tags
from packaging.version import Version

from .clients import ClientProfile, fits, pip_installs_from, wheel_tag_sets
from .models import DistFile, ProjectPage, parse_version, version_of

__all__ = ["Picks", "likely_pick", "likely_picks", "supported_tags", "uploaded_at"]

#: the oldest glibc of the manylinux tags of a processor (PEP 600: manylinux1 was x86 only)
_OLDEST_GLIBC = {"x86_64": 5, "i686": 5}
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_WINDOWS = {"AMD64": "win_amd64", "x86": "win32", "ARM64": "win_arm64"}
#: tags a wheel's name may give for it to be ranked; real ones give a few (py2.py3, or four
#: manylinux names of one platform)
_MAX_TAGS = 64


@dataclass(frozen=True)
class Picks:
    """The wheel pip most likely takes from a page (see :func:`likely_picks`), two ways."""

    #: for a requirement of the project's name alone
    newest: DistFile | None
    #: for a requirement pinned when the newest release was the newest uploaded by a given time
    dated: DistFile | None


def likely_pick(page: ProjectPage, profile: ClientProfile) -> DistFile | None:
    """The wheel pip installing for ``profile`` most likely takes from ``page`` for a requirement
    of the project's name alone (:attr:`Picks.newest`)."""
    return likely_picks(page, profile).newest


def likely_picks(page: ProjectPage, profile: ClientProfile, *, uploaded_by: datetime | None = None) -> Picks:
    """The wheel pip installing for ``profile`` most likely takes from ``page``: of the newest
    final release with a file that may fit, its best ranked wheel (:func:`supported_tags`); and
    with ``uploaded_by``, the same of the newest such release with a file uploaded by then (none
    of a page that dates no file). None when that release has only a source distribution for
    it, or its wheels cannot be ranked, or there is no such release."""
    releases: dict[str, list[DistFile]] = {}
    for dist in page.files:
        version = version_of(dist.filename) if dist.yanked is None else None
        if version is not None:
            releases.setdefault(version, []).append(dist)
    newest_first = sorted(
        ((parsed, text) for text in releases if (parsed := _version(text)) is not None), reverse=True
    )
    by = None if uploaded_by is None else _Moment(uploaded_by)
    found: list[DistFile | None] = []  # the newest pick, then the dated one
    for parsed, text in newest_first:
        if parsed.is_prerelease:
            continue
        # the releases newer than the dated one are many on a pinned install's pages: their
        # dates are read before their files' tags
        dated = by is not None and by.follows(releases[text])
        if found and not dated:
            continue
        files = [d for d in releases[text] if pip_installs_from(d) and fits(d, profile)]
        if not files:
            continue
        wheels = [d for d in files if d.filename.endswith(".whl")]
        pick = _best_wheel(wheels, profile) if wheels else None
        found += [pick, pick] if dated and not found else [pick]  # the newest may be the dated one
        if by is None or len(found) == 2:
            break
    newest = found[0] if found else None
    return Picks(newest=newest, dated=found[1] if len(found) == 2 else None)


def uploaded_at(dist: DistFile) -> datetime | None:
    """When the page says ``dist`` was uploaded (PEP 700), in UTC; None if it does not, or not
    in a form read here."""
    return None if dist.upload_time is None else _when(dist.upload_time)


class _Moment:
    """A time that upload times are compared with, to the second as text: a page of thousands of
    files dates them in PEP 700's form (``2024-06-01T10:00:00.123456Z``), whose text sorts as
    the times do; others, and those of the same second, are read as times."""

    def __init__(self, when: datetime) -> None:
        self.when = when.astimezone(timezone.utc)
        self.second = self.when.replace(tzinfo=None).isoformat(timespec="seconds")  # years of 4 digits

    def follows(self, files: list[DistFile]) -> bool:
        """Whether one of ``files`` was uploaded by then (a release the newest then, or older)."""
        for dist in files:
            text = dist.upload_time
            if text is None:
                continue
            if len(text) >= 20 and text[10] == "T" and text[19] in ".Z" and text[-1] == "Z":
                second = text[:19]
                if second < self.second:
                    return True
                if second > self.second:
                    continue
            uploaded = _when(text)
            if uploaded is not None and uploaded <= self.when:
                return True
        return False


def _when(text: str) -> datetime | None:
    try:
        # "Z" is read by fromisoformat from Python 3.11 on
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # year 1 an hour east of UTC is before the first day
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
