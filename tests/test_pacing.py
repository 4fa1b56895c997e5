from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from nestegg_core import waits
from nestegg_core.serve._waitress import PacedDispatcher
from nestegg_core.waits import blocking


class Task:
    """A waitress task: ``work`` runs in a worker; the dispatcher's peak of tasks running is noted."""

    running = 0
    peak = 0
    guard = threading.Lock()

    def __init__(self, work: Callable[[], object] = lambda: None) -> None:
        self.work = work
        self.started = threading.Event()
        self.done = threading.Event()
        self.cancelled = False

    def service(self) -> None:
        with Task.guard:
            Task.running += 1
            Task.peak = max(Task.peak, Task.running)
        self.started.set()
        try:
            self.work()
        finally:
            with Task.guard:
                Task.running -= 1
            self.done.set()

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def dispatch() -> Iterator[Callable[..., PacedDispatcher]]:
    made: list[PacedDispatcher] = []

    def make(threads: int = 8, **pacing: float) -> PacedDispatcher:
        Task.running = Task.peak = 0
        dispatcher = PacedDispatcher(**pacing)  # type: ignore[arg-type]
        dispatcher.set_thread_count(threads)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.shutdown(timeout=2)


def test_tasks_that_keep_finishing_run_a_few_at_a_time_in_order(
    dispatch: Callable[..., PacedDispatcher],
) -> None:
    dispatcher = dispatch(threads=8, running=1, stall=5.0)
    order: list[int] = []

    def work(n: int) -> Callable[[], None]:
        def run() -> None:
            time.sleep(0.002)
            order.append(n)

        return run

    tasks = [Task(work(n)) for n in range(40)]
    for task in tasks:
        dispatcher.add_task(task)
    assert all(task.done.wait(10) for task in tasks)
    assert Task.peak == 1
    assert order == list(range(40))


def test_at_most_running_tasks_at_once_while_they_finish(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=8, running=2, stall=5.0)
    tasks = [Task(lambda: time.sleep(0.003)) for _ in range(30)]
    for task in tasks:
        dispatcher.add_task(task)
    assert all(task.done.wait(10) for task in tasks)
    assert Task.peak == 2


def test_a_task_stuck_without_saying_so_holds_the_queue_back_a_stall_at_most(
    dispatch: Callable[..., PacedDispatcher],
) -> None:
    dispatcher = dispatch(threads=4, running=1, stall=0.5)
    release = threading.Event()
    stuck, waiting = Task(lambda: release.wait(10)), Task()
    dispatcher.add_task(stuck)
    assert stuck.started.wait(5)
    queued = time.monotonic()
    dispatcher.add_task(waiting)
    try:
        assert waiting.done.wait(5)
        # it waited for the stall (timed from the stuck task's start, a little before) ...
        assert time.monotonic() - queued >= 0.25
    finally:
        release.set()
    assert Task.peak == 2  # ... then ran beside the stuck one


def test_every_thread_is_let_loose_when_every_task_is_stuck(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=6, running=1, stall=0.01)
    release = threading.Event()
    tasks = [Task(lambda: release.wait(10)) for _ in range(6)]
    for task in tasks:
        dispatcher.add_task(task)
    try:
        assert all(task.started.wait(5) for task in tasks)
    finally:
        release.set()
    assert Task.peak == 6


def test_a_declared_wait_lets_the_next_task_run_at_once(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=4, running=1, stall=30.0)
    release = threading.Event()

    def wait() -> None:
        with blocking():
            release.wait(10)

    waiter, next_one = Task(wait), Task()
    dispatcher.add_task(waiter)
    assert waiter.started.wait(5)
    dispatcher.add_task(next_one)
    try:
        assert next_one.done.wait(5)  # long before the 30 s stall
    finally:
        release.set()
    assert waiter.done.wait(5)


def test_a_declared_wait_counts_again_once_over(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=4, running=1, stall=30.0)
    over, release = threading.Event(), threading.Event()

    def wait_then_work() -> None:
        with blocking():
            pass
        over.set()
        release.wait(10)  # working, as far as the dispatcher knows

    first, second = Task(wait_then_work), Task()
    dispatcher.add_task(first)
    assert over.wait(5)
    dispatcher.add_task(second)
    try:
        assert not second.started.wait(0.2)
    finally:
        release.set()
    assert second.done.wait(5)


def test_waits_begun_and_over_do_not_hide_a_stuck_task(dispatch: Callable[..., PacedDispatcher]) -> None:
    """A reader of a download declares a wait for every block: that is no progress."""
    dispatcher = dispatch(threads=4, running=1, stall=0.05)
    release, last = threading.Event(), Task()

    def toggle() -> None:
        deadline = time.monotonic() + 5
        while not last.started.is_set() and time.monotonic() < deadline:
            with blocking():
                time.sleep(0.001)

    stuck, toggling = Task(lambda: release.wait(10)), Task(toggle)
    dispatcher.add_task(stuck)
    assert stuck.started.wait(5)
    dispatcher.add_task(toggling)  # let loose by the watchdog, beside the stuck one
    assert toggling.started.wait(5)
    try:
        dispatcher.add_task(last)
        assert last.started.wait(2)
    finally:
        release.set()


def test_a_worker_woken_for_a_task_it_may_no_longer_take_leaves_it_to_the_watchdog(
    dispatch: Callable[..., PacedDispatcher],
) -> None:
    """Between a worker's wake-up and its look at the queue, a task back from a declared wait
    may take the place; the task woken for must still run, a stall later."""
    dispatcher = dispatch(threads=2, running=1, stall=0.05)
    task = Task()
    with dispatcher.lock:
        dispatcher.queue.append(task)
        dispatcher._wake()  # as add_task does with a place free ...
        dispatcher._serving += 1  # ... which a task back from its wait takes before the worker looks
    try:
        assert task.done.wait(2)
    finally:
        with dispatcher.lock:
            dispatcher._serving -= 1


def test_blocking_outside_a_worker_does_nothing() -> None:
    with blocking(), blocking():
        pass


def test_shutdown_stops_the_threads_and_cancels_what_is_queued(
    dispatch: Callable[..., PacedDispatcher],
) -> None:
    dispatcher = dispatch(threads=2, running=1, stall=30.0)
    release = threading.Event()
    busy, queued = Task(lambda: release.wait(10)), Task()
    dispatcher.add_task(busy)
    assert busy.started.wait(5)
    dispatcher.add_task(queued)
    stopping = threading.Thread(target=dispatcher.shutdown, kwargs={"timeout": 2})
    stopping.start()
    time.sleep(0.2)
    release.set()  # the busy task finishes while the dispatcher stops
    stopping.join(5)
    assert busy.done.is_set()
    assert not dispatcher.threads
    assert dispatcher._watcher is not None
    assert not dispatcher._watcher.is_alive()
    assert queued.cancelled
    assert not queued.started.is_set()


def test_a_task_runs_at_once_on_an_extra_thread_while_every_worker_waits(
    dispatch: Callable[..., PacedDispatcher],
) -> None:
    """Workers waiting on slow clients or a slow upstream (declared) never starve a quick task."""
    dispatcher = dispatch(threads=2, running=1, stall=30.0, extra=3, extra_idle=0.2)
    release = threading.Event()

    def wait() -> None:
        with blocking():
            release.wait(10)

    waiters = [Task(wait) for _ in range(5)]
    try:
        for waiter in waiters:
            dispatcher.add_task(waiter)
        # two workers and three extra threads, each in a declared wait: no more than that
        assert all(waiter.started.wait(5) for waiter in waiters)
        assert len(dispatcher.threads) == 5
        quick = Task()
        dispatcher.add_task(quick)
        assert not quick.started.wait(0.3)  # every thread waits, and no more may be started
    finally:
        release.set()
    assert quick.done.wait(5)
    assert all(waiter.done.wait(5) for waiter in waiters)
    # the extra threads end once idle; the workers stay
    deadline = time.monotonic() + 5
    while len(dispatcher.threads) > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(dispatcher.threads) == 2
    assert dispatcher._extras == 0


def test_an_extra_thread_starts_only_beside_declared_waits(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=2, running=1, stall=0.01, extra=4)
    release = threading.Event()
    stuck = [Task(lambda: release.wait(10)) for _ in range(2)]
    quick = Task()
    try:
        for task in stuck:
            dispatcher.add_task(task)
        assert all(task.started.wait(5) for task in stuck)
        dispatcher.add_task(quick)
        # a task stuck without saying so may hold a lock the others need: no thread is added
        assert not quick.started.wait(0.3)
        assert len(dispatcher.threads) == 2
    finally:
        release.set()
    assert quick.done.wait(5)


def test_a_quick_task_beside_waiting_workers_runs_at_once(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=4, running=2, stall=30.0, extra=40)
    release = threading.Event()

    def wait() -> None:
        with blocking():
            release.wait(10)

    waiters = [Task(wait) for _ in range(20)]
    try:
        for waiter in waiters:
            dispatcher.add_task(waiter)
        assert all(waiter.started.wait(5) for waiter in waiters)
        quick = Task()
        queued = time.monotonic()
        dispatcher.add_task(quick)
        assert quick.done.wait(5)
        assert time.monotonic() - queued < 1.0  # long before the 30 s stall
    finally:
        release.set()
    assert all(waiter.done.wait(5) for waiter in waiters)


def test_shutdown_stops_extra_threads_too(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=1, running=1, stall=30.0, extra=3)
    release = threading.Event()

    def wait() -> None:
        with blocking():
            release.wait(10)

    waiters = [Task(wait) for _ in range(3)]
    for waiter in waiters:
        dispatcher.add_task(waiter)
    assert all(waiter.started.wait(5) for waiter in waiters)
    release.set()
    assert all(waiter.done.wait(5) for waiter in waiters)
    dispatcher.shutdown(timeout=5)
    assert not dispatcher.threads
    assert dispatcher._extras == 0


def test_a_task_works_for_its_client_except_while_it_waits(dispatch: Callable[..., PacedDispatcher]) -> None:
    dispatcher = dispatch(threads=2)
    seen: list[bool] = []

    def work() -> None:
        seen.append(waits.busy())
        with blocking():
            seen.append(waits.busy())
        seen.append(waits.busy())

    task = Task(work)
    dispatcher.add_task(task)
    assert task.done.wait(10)
    assert seen == [True, False, True]
    assert not waits.busy()
