"""Declared waits (``waits.py``): which threads work for a client, and background work giving way."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from nestegg_core import waits


@contextlib.contextmanager
def in_thread(steps: Callable[[], contextlib.AbstractContextManager[object]]) -> Iterator[None]:
    """While it lasts, another thread is within the context managers ``steps()`` enters."""
    inside, leave = threading.Event(), threading.Event()

    def run() -> None:
        with steps():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert inside.wait(10)
        yield
    finally:
        leave.set()
        thread.join(10)


@contextlib.contextmanager
def nested(*managers: contextlib.AbstractContextManager[object]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield


@pytest.mark.parametrize(
    ("steps", "busy"),
    [
        (nested, False),
        (lambda: nested(waits.serving()), True),
        (lambda: nested(waits.serving(), waits.serving()), True),  # nested: counted once
        (lambda: nested(waits.serving(), waits.blocking()), False),  # waits on another thread
        (lambda: nested(waits.serving(), waits.blocking(working=True)), True),  # parses as it reads
        (lambda: nested(waits.serving(), waits.blocking(), waits.blocking(working=True)), False),
        (lambda: nested(waits.blocking()), False),
        (lambda: nested(waits.blocking(working=True)), False),  # no client: background work
    ],
    ids=["idle", "serving", "serving-twice", "waiting", "reading", "waiting-nested", "bg-wait", "bg-read"],
)
def test_a_thread_works_for_a_client_while_it_serves_it_and_waits_on_nobody(
    steps: Callable[[], contextlib.AbstractContextManager[object]], busy: bool
) -> None:
    assert not waits.busy()
    with in_thread(steps):
        assert waits.busy() is busy
    assert not waits.busy()


def took(action: Callable[[], object]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def test_giving_way_to_nobody_takes_no_time() -> None:
    assert took(lambda: waits.give_way(5.0)) < 0.5


def test_giving_way_waits_for_the_client_then_goes_on() -> None:
    ended = threading.Event()

    def serve() -> None:
        with waits.serving():
            time.sleep(0.3)
        ended.set()

    thread = threading.Thread(target=serve)
    thread.start()
    time.sleep(0.05)
    waited = took(lambda: waits.give_way(10.0))
    thread.join(10)
    assert ended.is_set()
    assert 0.15 < waited < 5


@pytest.mark.parametrize(
    ("limit", "unless", "least", "most"),
    [
        (0.3, None, 0.25, 5),  # a client worked on for longer: no longer than the limit
        (10.0, lambda: True, 0, 0.5),  # a client waits for this work: no wait
    ],
    ids=["limit", "awaited"],
)
def test_giving_way_is_bounded(
    limit: float, unless: Callable[[], bool] | None, least: float, most: float
) -> None:
    with in_thread(waits.serving):
        waited = took(lambda: waits.give_way(limit, unless))
    assert least <= waited < most
