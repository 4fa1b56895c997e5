"""How the guesses of pip's next file fare, per client, and when they are acted on."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from packaging.version import Version

from nestegg_core.index import guesses as module
from nestegg_core.index.guesses import GUESS_FOR, LARGE, MAX_MISSES, OUTCOMES, Guesses
from nestegg_core.simple.clients import ClientProfile
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.picks import Picks

PIP = "pip/26.3 a"
OTHER = "pip/26.3 b"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def dist(filename: str | None, uploaded: str | None = None) -> DistFile | None:
    """A wheel of ``LARGE`` bytes, or of no size known if its name says "large"."""
    if filename is None:
        return None
    size = None if "large" in filename else LARGE
    return DistFile(filename=filename, url=f"https://example.com/{filename}", upload_time=uploaded, size=size)


def picks(newest: str | None, dated: str | None = None) -> Picks:
    return Picks(newest=dist(newest), dated=dist(dated))


def run(guesses: Guesses, clock: Clock, steps: list[tuple[str | None, ...]]) -> list[str | None]:
    """Steps: ("guess", agent, name, newest, dated=None) -> the file acted on, if any; ("take",
    agent, name, file, uploaded=None); ("wait", seconds)."""
    acted = []
    for step in steps:
        if step[0] == "guess":
            # its page was asked for just before the step before
            guess = picks(*step[3:])
            acted_on = guesses.guessed(step[1], str(step[2]), guess, since=clock.now - 0.0015)
            acted.append(None if acted_on is None else acted_on.filename)
        elif step[0] == "take":
            filename, uploaded = str(step[3]), step[4] if len(step) > 4 else None
            guesses.taken(step[1], str(step[2]), filename, dist(filename, uploaded))
        else:
            clock.now += float(str(step[1]))
        clock.now += 0.001
    return acted


def pinned(n: int, agent: str = PIP) -> list[tuple[str | None, ...]]:
    """``n`` pages whose guess is wrong: pip takes another version."""
    steps: list[tuple[str | None, ...]] = []
    for i in range(n):
        steps += [("guess", agent, f"p{i}", f"p{i}-2.0.whl"), ("take", agent, f"p{i}", f"p{i}-1.0.whl")]
    return steps


def unpinned(n: int, agent: str = PIP, start: int = 100) -> list[tuple[str | None, ...]]:
    steps: list[tuple[str | None, ...]] = []
    for i in range(start, start + n):
        steps += [("guess", agent, f"p{i}", f"p{i}-2.0.whl"), ("take", agent, f"p{i}", f"p{i}-2.0.whl")]
    return steps


@pytest.mark.parametrize(
    ("steps", "acted", "right", "wrong"),
    [
        # guesses right are acted on, on and on
        (unpinned(10), [True] * 10, 10, 0),
        # a pinned install: acted on while at most MAX_MISSES of the last were wrong
        (pinned(5), [True] * (MAX_MISSES + 1) + [False] * (4 - MAX_MISSES), 0, 5),
        # a client whose guesses turn right again gets them acted on once the misses age out
        (
            pinned(3) + unpinned(OUTCOMES),
            [True, True, False] + [False] * (OUTCOMES - MAX_MISSES) + [True] * MAX_MISSES,
            OUTCOMES,
            3,
        ),
        # one client's misses are not another's
        (pinned(3) + unpinned(2, OTHER), [True, True, False, True, True], 2, 3),
        # the file's metadata names it as well as the file does
        ([("guess", PIP, "a", "a-2.0.whl"), ("take", PIP, "a", "a-2.0.whl")], [True], 1, 0),
        # no request for a file of the project within GUESS_FOR: wrong (pip had what it needed)
        (
            [("guess", PIP, "a", "a-2.0.whl"), ("wait", GUESS_FOR), ("guess", PIP, "b", "b-2.0.whl")],
            [True, True],
            0,
            1,
        ),
        (
            [("guess", PIP, "a", "a-2.0.whl"), ("wait", GUESS_FOR / 2), ("take", PIP, "a", "a-2.0.whl")],
            [True],
            1,
            0,
        ),
        # pip's request came before the guess was noted (its page asked just before): judged at once
        ([("take", PIP, "a", "a-2.0.whl"), ("guess", PIP, "a", "a-2.0.whl")], [False], 1, 0),
        ([("take", PIP, "a", "a-1.0.whl"), ("guess", PIP, "a", "a-2.0.whl")], [False], 0, 1),
        # a second guess of the same project replaces the first
        (
            [
                ("guess", PIP, "a", "a-2.0.whl"),
                ("guess", PIP, "a", "a-3.0.whl"),
                ("take", PIP, "a", "a-3.0.whl"),
            ],
            [True, True],
            1,
            0,
        ),
        # a request for a project never guessed judges nothing
        ([("take", PIP, "z", "z-1.0.whl")], [], 0, 0),
    ],
    ids=[
        "right",
        "pinned",
        "right-again",
        "per-client",
        "metadata",
        "none-came",
        "came-late-enough",
        "taken-first",
        "taken-first-wrong",
        "replaced",
        "unguessed",
    ],
)
def test_guesses_are_acted_on_while_they_were_right(
    steps: list[tuple[str | None, ...]], acted: list[bool], right: int, wrong: int
) -> None:
    clock = Clock()
    guesses = Guesses(clock=clock)
    assert [file is not None for file in run(guesses, clock, steps)] == acted
    assert (guesses.right, guesses.wrong) == (right, wrong)


def dated(n: int, agent: str = PIP) -> list[tuple[str | None, ...]]:
    """``n`` pages of an install pinned to the releases newest in 2024: pip takes the dated guess."""
    steps: list[tuple[str | None, ...]] = []
    for i in range(n):
        steps += [
            ("guess", agent, f"d{i}", f"d{i}-2.0.whl", f"d{i}-1.0.whl" if i else None),
            ("take", agent, f"d{i}", f"d{i}-1.0.whl", f"2024-0{i % 9 + 1}-01T00:00:00Z"),
        ]
    return steps


@pytest.mark.parametrize(
    ("steps", "acted", "right", "wrong"),
    [
        # a pinned install: the newest way is wrong from the first page on, the dated way right
        (dated(6), ["d0-2.0.whl", *(f"d{i}-1.0.whl" for i in range(1, 6))], 5, 1),
        # an unpinned one: where the ways differ, the newest way is trusted (a tie goes to it)
        (
            [
                ("guess", PIP, "a", "a-2.0.whl", "a-1.0.whl"),
                ("take", PIP, "a", "a-2.0.whl"),
                ("guess", PIP, "b", "b-2.0.whl", "b-1.0.whl"),
                ("take", PIP, "b", "b-2.0.whl"),
            ],
            ["a-2.0.whl", "b-2.0.whl"],
            2,
            0,
        ),
        # the same file both ways: acted on, judged right both ways
        (
            [("guess", PIP, "a", "a-2.0.whl", "a-2.0.whl"), ("take", PIP, "a", "a-2.0.whl")],
            ["a-2.0.whl"],
            1,
            0,
        ),
        # only the dated way guesses (the newest release has only an sdist): it is acted on
        ([("guess", PIP, "a", None, "a-1.0.whl"), ("take", PIP, "a", "a-1.0.whl")], ["a-1.0.whl"], 1, 0),
        # neither guesses: nothing noted
        ([("guess", PIP, "a", None, None), ("take", PIP, "a", "a-1.0.whl")], [None], 0, 0),
        # both ways wrong, again and again: no more downloads past MAX_MISSES of each
        (
            [
                step
                for i in range(4)
                for step in (
                    ("guess", PIP, f"p{i}", f"p{i}-3.0.whl", f"p{i}-2.0.whl"),
                    ("take", PIP, f"p{i}", f"p{i}-1.0.whl"),
                )
            ],
            ["p0-3.0.whl", "p1-3.0.whl", None, None],
            0,
            4,
        ),
        # a wheel over LARGE bytes (or of no size known): only once the way's last OUTCOMES were right
        (
            [
                ("guess", PIP, "a", "a-large-2.0.whl"),
                ("take", PIP, "a", "a-large-2.0.whl"),
                *unpinned(OUTCOMES - 2),
                ("guess", PIP, "b", "b-large-2.0.whl"),
                ("take", PIP, "b", "b-large-2.0.whl"),
            ],
            [None, *[f"p{i}-2.0.whl" for i in range(100, 100 + OUTCOMES - 2)], None],
            OUTCOMES,
            0,
        ),
        (
            [
                *unpinned(OUTCOMES),
                ("guess", PIP, "a", "a-large-2.0.whl"),
                ("take", PIP, "a", "a-large-2.0.whl"),
            ],
            [*[f"p{i}-2.0.whl" for i in range(100, 100 + OUTCOMES)], "a-large-2.0.whl"],
            OUTCOMES + 1,
            0,
        ),
    ],
    ids=["pinned", "unpinned", "agree", "dated-only", "neither", "both-wrong", "large", "large-proven"],
)
def test_the_way_acted_on_is_the_one_right_more_often_lately(
    steps: list[tuple[str | None, ...]], acted: list[str | None], right: int, wrong: int
) -> None:
    clock = Clock()
    guesses = Guesses(clock=clock)
    assert run(guesses, clock, steps) == acted
    assert (guesses.right, guesses.wrong) == (right, wrong)


@pytest.mark.parametrize(
    ("uploads", "horizon"),
    [
        ([], None),
        ([None], None),  # a page that dates no file tells nothing
        (["2024-03-01T00:00:00Z"], datetime(2024, 3, 1, tzinfo=timezone.utc)),
        (
            ["2024-03-01T00:00:00Z", "2023-01-01T10:00:00.5Z", "2024-03-02T00:00:00+01:00", None],
            datetime(2024, 3, 1, 23, tzinfo=timezone.utc),
        ),
        (["not a time"], None),
    ],
)
def test_the_horizon_is_the_latest_upload_of_the_files_taken(
    uploads: list[str | None], horizon: datetime | None
) -> None:
    guesses = Guesses()
    for i, uploaded in enumerate(uploads):
        guesses.taken(PIP, f"p{i}", f"p{i}-1.0.whl", dist(f"p{i}-1.0.whl", uploaded))
    guesses.taken(PIP, "z", "z-1.0.whl")  # no page in memory
    assert guesses.horizon(PIP) == horizon
    assert guesses.horizon(OTHER) is None


def test_a_guess_taken_before_its_page_was_asked_for_is_no_answer_to_it() -> None:
    clock = Clock()
    guesses = Guesses(clock=clock)
    guesses.taken(PIP, "a", "a-1.0.whl")  # an earlier run's request
    clock.now += 1
    assert guesses.guessed(PIP, "a", picks("a-2.0.whl"), since=clock.now) is not None
    assert (guesses.right, guesses.wrong) == (0, 0)


def test_a_pick_is_worked_out_once_per_page_profile_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counted(page: ProjectPage, profile: ClientProfile, *, uploaded_by: datetime | None = None) -> Picks:
        calls.append(page.name)
        return Picks(newest=page.files[0], dated=page.files[0] if uploaded_by else None)

    monkeypatch.setattr(module, "likely_picks", counted)
    guesses = Guesses()
    profile = ClientProfile(implementation="CPython", python=Version("3.11"))
    first = ProjectPage.build("a", [DistFile(filename="a-1.0-py3-none-any.whl", url="https://example.com/a")])
    second = ProjectPage.build(
        "a", [DistFile(filename="a-2.0-py3-none-any.whl", url="https://example.com/a")]
    )
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert guesses.pick("a", profile, first).newest == first.files[0]
    assert guesses.pick("a", profile, first).newest == first.files[0]
    assert guesses.pick("a", profile, second).newest == second.files[0]  # a new page: worked out again
    assert guesses.pick("a", profile, second, uploaded_by=when).dated == second.files[0]  # another time
    assert guesses.pick("a", profile, second, uploaded_by=when).dated == second.files[0]
    assert calls == ["a", "a", "a"]
