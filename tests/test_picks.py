"""The file pip most likely takes from a page: the rules, and their ranks against packaging's."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone

import pytest
from packaging import tags
from packaging.version import Version

from nestegg_core.simple.clients import ClientProfile
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.picks import likely_pick, likely_picks, supported_tags, uploaded_at

LINUX = ClientProfile(
    implementation="CPython", python=Version("3.11"), system="Linux", cpu="x86_64", glibc=(2, 36)
)
OLD_GLIBC = ClientProfile(
    implementation="CPython", python=Version("3.11"), system="Linux", cpu="x86_64", glibc=(2, 17)
)
ARM = ClientProfile(
    implementation="CPython", python=Version("3.12"), system="Linux", cpu="aarch64", glibc=(2, 39)
)
WINDOWS = ClientProfile(implementation="CPython", python=Version("3.11"), system="Windows", cpu="AMD64")
MACOS = ClientProfile(implementation="CPython", python=Version("3.11"), system="Darwin", cpu="arm64")
PYPY = ClientProfile(
    implementation="PyPy", python=Version("3.10"), system="Linux", cpu="x86_64", glibc=(2, 36)
)


def page(*files: str | DistFile) -> ProjectPage:
    dists = [
        f if isinstance(f, DistFile) else DistFile(filename=f, url=f"https://example.com/{f}") for f in files
    ]
    return ProjectPage.build("pkg", dists)


def dist(filename: str, **fields: object) -> DistFile:
    return DistFile(filename=filename, url=f"https://example.com/{filename}", **fields)  # type: ignore[arg-type]


CP311 = "pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


@pytest.mark.parametrize(
    ("profile", "files", "expected"),
    [
        # the newest release's wheel, whatever the page's order
        (
            LINUX,
            ["pkg-2.0-py3-none-any.whl", "pkg-1.0-py3-none-any.whl", "pkg-1.5.tar.gz"],
            "pkg-2.0-py3-none-any.whl",
        ),
        (LINUX, ["pkg-1.10-py3-none-any.whl", "pkg-1.9-py3-none-any.whl"], "pkg-1.10-py3-none-any.whl"),
        # a pre-release, a yanked release and one for another Python are passed over
        (LINUX, ["pkg-1.0-py3-none-any.whl", "pkg-2.0b1-py3-none-any.whl"], "pkg-1.0-py3-none-any.whl"),
        (
            LINUX,
            ["pkg-1.0-py3-none-any.whl", dist("pkg-2.0-py3-none-any.whl", yanked="broken")],
            "pkg-1.0-py3-none-any.whl",
        ),
        (
            LINUX,
            ["pkg-1.0-py3-none-any.whl", dist("pkg-2.0-py3-none-any.whl", requires_python=">=3.12")],
            "pkg-1.0-py3-none-any.whl",
        ),
        (LINUX, ["pkg-1.0-py3-none-any.whl", "pkg-2.0-py2-none-any.whl"], "pkg-1.0-py3-none-any.whl"),
        # a release whose wheels are all for other systems: the one before, which has one
        (
            LINUX,
            ["pkg-1.0-py3-none-any.whl", "pkg-2.0-cp311-cp311-win_amd64.whl"],
            "pkg-1.0-py3-none-any.whl",
        ),
        # the newest release has only a source distribution: pip builds it (or, binary only, takes
        # an older one): no guess
        (LINUX, ["pkg-1.0-py3-none-any.whl", "pkg-2.0.tar.gz"], None),
        (LINUX, ["pkg-2.0.tar.gz", "pkg-2.0-py3-none-any.whl"], "pkg-2.0-py3-none-any.whl"),
        # a wheel for the interpreter and platform before a pure one, the newest glibc it has first
        (LINUX, ["pkg-2.0-py3-none-any.whl", CP311], CP311),
        (
            LINUX,
            [CP311, "pkg-2.0-cp311-cp311-manylinux_2_28_x86_64.whl"],
            "pkg-2.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        ),
        (OLD_GLIBC, [CP311, "pkg-2.0-cp311-cp311-manylinux_2_28_x86_64.whl"], CP311),
        (
            LINUX,
            ["pkg-2.0-cp39-abi3-manylinux_2_17_x86_64.whl", "pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"],
            "pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        ),
        (
            LINUX,
            [
                "pkg-2.0-cp311-cp311-musllinux_1_2_x86_64.whl",
                "pkg-2.0-cp311-cp311-manylinux_2_5_i686.whl",
                "pkg-2.0-py3-none-any.whl",
            ],
            "pkg-2.0-py3-none-any.whl",
        ),
        (
            ARM,
            [
                "pkg-2.0-cp312-cp312-manylinux_2_17_x86_64.whl",
                "pkg-2.0-cp312-cp312-manylinux_2_17_aarch64.whl",
            ],
            "pkg-2.0-cp312-cp312-manylinux_2_17_aarch64.whl",
        ),
        (
            WINDOWS,
            [
                "pkg-2.0-py3-none-any.whl",
                "pkg-2.0-cp311-cp311-win_amd64.whl",
                "pkg-2.0-cp311-cp311-win32.whl",
            ],
            "pkg-2.0-cp311-cp311-win_amd64.whl",
        ),
        # where the User-Agent does not rank wheels, only a release with one that fits is guessed
        (MACOS, ["pkg-2.0-py3-none-any.whl"], "pkg-2.0-py3-none-any.whl"),
        (MACOS, ["pkg-2.0-py3-none-any.whl", "pkg-2.0-cp311-cp311-macosx_11_0_arm64.whl"], None),
        (PYPY, ["pkg-2.0-py3-none-any.whl", "pkg-2.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl"], None),
        # a name made to cost (its tag sets multiply) is not ranked
        (
            LINUX,
            [
                "pkg-2.0-py3-none-any.whl",
                "pkg-2.0-"
                + ".".join(f"cp3{n}" for n in range(20))
                + "-"
                + ".".join(f"a{n}" for n in range(20))
                + "-manylinux_2_17_x86_64.whl",
            ],
            "pkg-2.0-py3-none-any.whl",
        ),
        (LINUX, [], None),
        (LINUX, ["pkg-2.0b1-py3-none-any.whl"], None),
    ],
)
def test_the_likely_pick_is_the_newest_final_releases_best_wheel(
    profile: ClientProfile, files: list[str | DistFile], expected: str | None
) -> None:
    picked = likely_pick(page(*files), profile)
    assert (picked.filename if picked else None) == expected


def up(filename: str, when: str | None, **fields: object) -> DistFile:
    return dist(filename, upload_time=when, **fields)


DAY = datetime(2024, 6, 1, tzinfo=timezone.utc)
WHEEL = "pkg-2.0-py3-none-any.whl"


@pytest.mark.parametrize(
    ("files", "uploaded_by", "newest", "dated"),
    [
        # the newest release uploaded by then, as a lock file made that day pins it
        (
            [
                up("pkg-3.0-py3-none-any.whl", "2024-09-01T00:00:00Z"),
                up("pkg-2.0-py3-none-any.whl", "2024-05-01T00:00:00.123456Z"),
                up("pkg-1.0-py3-none-any.whl", "2023-01-01T00:00:00Z"),
            ],
            DAY,
            "pkg-3.0-py3-none-any.whl",
            "pkg-2.0-py3-none-any.whl",
        ),
        # uploaded by then: to the second, in any zone; a release is as old as its first file
        ([up("pkg-2.0-py3-none-any.whl", "2024-06-01T00:00:00Z")], DAY, *["pkg-2.0-py3-none-any.whl"] * 2),
        ([up("pkg-2.0-py3-none-any.whl", "2024-06-01T00:00:01Z")], DAY, "pkg-2.0-py3-none-any.whl", None),
        ([up(WHEEL, "2024-06-01T00:00:00.4Z")], DAY.replace(microsecond=500_000), WHEEL, WHEEL),
        ([up(WHEEL, "2024-06-01T00:00:00.6Z")], DAY.replace(microsecond=500_000), WHEEL, None),
        ([up(WHEEL, "2024-05-31T23:59:59.999999Z")], DAY, WHEEL, WHEEL),
        ([up(WHEEL, "0500-01-01T00:00:00Z")], datetime(1, 1, 1, tzinfo=timezone.utc), WHEEL, None),
        ([up(WHEEL, "2024-06-01T01:30:00+02:00")], DAY, WHEEL, WHEEL),
        (
            [
                up("pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", "2024-07-01T00:00:00Z"),
                up("pkg-2.0-py3-none-any.whl", "2024-05-01T00:00:00Z"),
            ],
            DAY,
            *["pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"] * 2,
        ),
        # no time asked, a page that dates no file, or a time no release is as old as: no dated pick
        ([up("pkg-2.0-py3-none-any.whl", "2024-05-01T00:00:00Z")], None, "pkg-2.0-py3-none-any.whl", None),
        (["pkg-2.0-py3-none-any.whl", "pkg-1.0-py3-none-any.whl"], DAY, "pkg-2.0-py3-none-any.whl", None),
        ([up("pkg-2.0-py3-none-any.whl", "yesterday")], DAY, "pkg-2.0-py3-none-any.whl", None),
        ([up("pkg-2.0-py3-none-any.whl", "2025-01-01T00:00:00Z")], DAY, "pkg-2.0-py3-none-any.whl", None),
        # the dated release passes over what the newest does: pre-releases, yanked, other Pythons
        (
            [
                up("pkg-2.0-py3-none-any.whl", "2024-09-01T00:00:00Z"),
                up("pkg-1.5b1-py3-none-any.whl", "2024-05-01T00:00:00Z"),
                up("pkg-1.4-py3-none-any.whl", "2024-04-01T00:00:00Z", yanked=""),
                up("pkg-1.3-py3-none-any.whl", "2024-03-01T00:00:00Z", requires_python=">=3.12"),
                up("pkg-1.2-py3-none-any.whl", "2024-02-01T00:00:00Z"),
            ],
            DAY,
            "pkg-2.0-py3-none-any.whl",
            "pkg-1.2-py3-none-any.whl",
        ),
        # a dated release with only an sdist for it: no file guessed
        (
            [up(WHEEL, "2024-09-01T00:00:00Z"), up("pkg-1.0.tar.gz", "2024-01-01T00:00:00Z")],
            DAY,
            "pkg-2.0-py3-none-any.whl",
            None,
        ),
    ],
    ids=[
        "older",
        "to-the-second",
        "a-second-late",
        "within-the-second",
        "later-in-the-second",
        "the-second-before",
        "years-of-three-digits",
        "other-zone",
        "first-file",
        "no-time",
        "undated-page",
        "unreadable",
        "none-that-old",
        "passed-over",
        "sdist-only",
    ],
)
def test_the_dated_pick_is_the_newest_release_uploaded_by_then(
    files: list[str | DistFile], uploaded_by: datetime | None, newest: str | None, dated: str | None
) -> None:
    picks = likely_picks(page(*files), LINUX, uploaded_by=uploaded_by)
    assert (picks.newest.filename if picks.newest else None) == newest
    assert (picks.dated.filename if picks.dated else None) == dated


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2024-06-01T00:00:00Z", DAY),
        ("2024-06-01T00:00:00.5Z", DAY.replace(microsecond=500_000)),
        ("2024-06-01T02:00:00+02:00", DAY),
        ("2024-06-01T00:00:00", DAY),  # no zone: UTC, as PEP 700 gives it
        ("June 1st", None),
        (None, None),
        # an upstream's times that have no UTC (before the first day, after the last)
        ("0001-01-01T00:00:00+01:00", None),
        ("9999-12-31T23:59:59-01:00", None),
        ("2024-06-01T00:00:00+25:00", None),
    ],
)
def test_upload_times_are_read_in_utc(when: str | None, expected: datetime | None) -> None:
    assert uploaded_at(up("pkg-1.0-py3-none-any.whl", when)) == expected


@pytest.mark.skipif(
    sys.implementation.name != "cpython" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="ranks this interpreter's tags as packaging does: CPython on Linux with glibc",
)
def test_the_ranks_are_packagings_for_this_interpreter() -> None:
    major, minor = (int(n) for n in platform.libc_ver()[1].split(".")[:2])
    machine = platform.machine()
    profile = ClientProfile(
        implementation="CPython",
        python=Version(f"{sys.version_info[0]}.{sys.version_info[1]}"),
        system="Linux",
        cpu=machine,
        glibc=(major, minor),
    )
    ranks = supported_tags(profile)
    assert ranks is not None
    theirs = [str(tag) for tag in tags.sys_tags() if not str(tag).split("-")[1].endswith("t")]
    ours = sorted((tag for tag in theirs if tag in ranks), key=ranks.__getitem__)
    assert ours == [tag for tag in theirs if tag in ranks]
    # all of packaging's but the free-threaded ABI's and the musl ones are there
    assert len(ours) >= 0.95 * len(theirs)


@pytest.mark.parametrize(
    "profile", [MACOS, PYPY, ClientProfile(implementation="CPython", python=Version("3.11"))]
)
def test_no_ranks_where_the_user_agent_does_not_say_enough(profile: ClientProfile) -> None:
    assert supported_tags(profile) is None
