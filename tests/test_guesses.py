"""How the guesses of pip's next file fare, per client, and when they are acted on."""

from __future__ import annotations

import pytest
from packaging.version import Version

from nestegg_core.index import guesses as module
from nestegg_core.index.guesses import GUESS_FOR, MAX_MISSES, OUTCOMES, Guesses
from nestegg_core.simple.clients import ClientProfile
from nestegg_core.simple.models import DistFile, ProjectPage

PIP = "pip/26.3 a"
OTHER = "pip/26.3 b"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(guesses: Guesses, clock: Clock, steps: list[tuple[str, ...]]) -> list[bool]:
    """Steps: ("guess", agent, name, file) -> whether it is acted on; ("take", agent, name, file);
    ("wait", seconds)."""
    acted = []
    for step in steps:
        if step[0] == "guess":
            # its page was asked for just before the step before
            acted.append(guesses.guessed(step[1], step[2], step[3], since=clock.now - 0.0015))
        elif step[0] == "take":
            guesses.taken(step[1], step[2], step[3])
        else:
            clock.now += float(step[1])
        clock.now += 0.001
    return acted


def pinned(n: int, agent: str = PIP) -> list[tuple[str, ...]]:
    """``n`` pages whose guess is wrong: pip takes another version."""
    steps: list[tuple[str, ...]] = []
    for i in range(n):
        steps += [("guess", agent, f"p{i}", f"p{i}-2.0.whl"), ("take", agent, f"p{i}", f"p{i}-1.0.whl")]
    return steps


def unpinned(n: int, agent: str = PIP, start: int = 100) -> list[tuple[str, ...]]:
    steps: list[tuple[str, ...]] = []
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
    steps: list[tuple[str, ...]], acted: list[bool], right: int, wrong: int
) -> None:
    clock = Clock()
    guesses = Guesses(clock=clock)
    assert run(guesses, clock, steps) == acted
    assert (guesses.right, guesses.wrong) == (right, wrong)


def test_a_guess_taken_before_its_page_was_asked_for_is_no_answer_to_it() -> None:
    clock = Clock()
    guesses = Guesses(clock=clock)
    guesses.taken(PIP, "a", "a-1.0.whl")  # an earlier run's request
    clock.now += 1
    assert guesses.guessed(PIP, "a", "a-2.0.whl", since=clock.now)
    assert (guesses.right, guesses.wrong) == (0, 0)


def test_a_pick_is_worked_out_once_per_page_and_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counted(page: ProjectPage, profile: ClientProfile) -> DistFile | None:
        calls.append(page.name)
        return page.files[0]

    monkeypatch.setattr(module, "likely_pick", counted)
    guesses = Guesses()
    profile = ClientProfile(implementation="CPython", python=Version("3.11"))
    first = ProjectPage.build("a", [DistFile(filename="a-1.0-py3-none-any.whl", url="https://example.com/a")])
    second = ProjectPage.build(
        "a", [DistFile(filename="a-2.0-py3-none-any.whl", url="https://example.com/a")]
    )
    assert guesses.pick("a", profile, first) == first.files[0]
    assert guesses.pick("a", profile, first) == first.files[0]
    assert guesses.pick("a", profile, second) == second.files[0]  # a new page: worked out again
    assert calls == ["a", "a"]
