"""``nestegg_core.index.later``: work an answer leaves for after it is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from nestegg_core.index import later


class Body:
    def __init__(self, done: list[str]) -> None:
        self.done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter([b"page"])

    def close(self) -> None:
        self.done.append("body closed")


def test_work_deferred_in_a_request_is_done_in_order_once_the_answer_is_closed() -> None:
    done: list[str] = []
    with later.collecting() as work:
        later.defer(lambda: done.append("state"))
        later.defer(lambda: done.append("rendering"))
        assert later.deferring(1)
    assert not later.deferring(1)
    assert done == []
    body = later.after(Body(done), work)
    assert list(body) == [b"page"]
    assert done == []
    body.close()  # type: ignore[attr-defined]
    assert done == ["body closed", "state", "rendering"]
    assert work == []


@pytest.mark.parametrize(
    ("collect", "active", "files", "deferred"),
    [
        (False, True, 1, False),  # outside a request: done at once
        (True, False, 1, False),  # a request that does not collect (not an installer)
        (True, True, later.MAX_FILES, True),
        (True, True, later.MAX_FILES + 1, False),  # a larger page is written before its answer
    ],
    ids=["outside", "inactive", "at-the-limit", "over-the-limit"],
)
def test_what_is_deferred(collect: bool, active: bool, files: int, deferred: bool) -> None:
    done: list[str] = []

    def write() -> None:
        done.append("written")

    def page() -> None:  # as the mirror and the repository ask
        if later.deferring(files):
            later.defer(write)
        else:
            write()

    if collect:
        with later.collecting(active) as work:
            page()
        assert done == ([] if deferred else ["written"])
        later.run(work)
    else:
        page()
    assert done == ["written"]


def test_a_failure_of_deferred_work_is_logged_and_the_rest_done(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    def fails() -> None:
        raise OSError("No space left on device")

    actions: list[Callable[[], None]] = [fails, lambda: done.append("rendering")]
    with later.collecting() as work:
        for action in actions:
            later.defer(action)
    with caplog.at_level(logging.ERROR, logger="nestegg_core.index.later"):
        later.after([b"page"], work).close()  # type: ignore[attr-defined]
    assert done == ["rendering"]
    assert "work left for after an answer failed" in caplog.text
    assert "No space left on device" in caplog.text


def test_work_done_in_the_background_pauses_before_each_piece() -> None:
    done: list[str] = []
    with later.collecting() as work:
        later.defer(lambda: done.append("state"))
        later.defer(lambda: done.append("rendering"))
    later.run(work, pause=lambda: done.append("pause"))
    assert done == ["pause", "state", "pause", "rendering"]


def test_an_answer_without_work_is_the_body_itself() -> None:
    body = [b"page"]
    assert later.after(body, []) is body


def test_a_closing_body_calls_back_once_even_unread() -> None:
    """The server closes a body it never read (a HEAD, a client gone): the work is done all the
    same, and once however often it is closed."""
    done: list[str] = []
    body = later.Closing(Body(done), lambda: done.append("then"))
    body.close()
    body.close()
    assert done == ["body closed", "then", "body closed"]


def test_a_block_that_does_not_collect_does_the_work_at_once_within_one_that_does() -> None:
    # the background thread that makes a page ahead runs in a copy of a request's context
    done: list[str] = []
    with later.collecting() as outer:
        with later.collecting(active=False) as inner:
            later.defer(lambda: done.append("written"))
        assert done == ["written"]
        assert inner == outer == []
