"""waitress's worker threads, let loose a few at a time while the tasks they run keep finishing.

waitress wakes an idle worker for every request. With sixteen workers (a cold install waits on
the upstream in many requests at once) a warm load of 8 clients kept 8 threads running on 2
cores, each taking the interpreter lock in turn, with the wake-up and hand-over of a thread for
every request: at 8 clients, 2 workers answered 10% more requests per second than 16, with a p99
latency of 13 ms instead of 20.

So :class:`PacedDispatcher` keeps the threads but runs at most ``running`` tasks at a time while
they make progress: a worker that finishes a task takes the next one queued without sleeping, and
the queue is served in order. Tasks that wait rather than work do not hold the others back:

- code that is about to wait on the network (the upstream, a download another thread makes)
  says so with :func:`nestegg_core.waits.blocking` (each worker registers its dispatcher as the
  thread's :class:`~nestegg_core.waits.Waiter`), and another queued task starts at once;
- when tasks are queued and none has started or finished for ``stall`` seconds (a wait nobody
  declared: a lock, a build), one more worker is let loose, and again after each ``stall``, up to
  every thread;
- when a task could run but every thread is busy while some of them wait in ``blocking()`` (on
  slow clients, on a slow upstream), an extra thread is started for it, up to ``extra`` of them;
  an extra thread ends once it has had nothing to do for ``EXTRA_IDLE`` seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from waitress.task import ThreadedTaskDispatcher

from nestegg_core import waits

#: tasks run at a time while they make progress
RUNNING = 2
#: seconds without a task started or finished, while tasks wait, before one more may run
STALL = 0.005
#: seconds an extra thread (started beside waiting workers) stays without a task before it ends
EXTRA_IDLE = 10.0


class PacedDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]  # waitress has no type hints
    """A waitress task dispatcher that runs at most ``running`` tasks at a time while they make
    progress (see the module's documentation)."""

    def __init__(
        self, *, running: int = RUNNING, stall: float = STALL, extra: int = 0, extra_idle: float = EXTRA_IDLE
    ) -> None:
        super().__init__()
        self.running = running
        self.stall = stall
        #: threads that may be started beyond :meth:`set_thread_count`'s while workers wait
        self.extra = extra
        self.extra_idle = extra_idle
        #: workers inside ``blocking()``
        self._blocked = 0
        #: extra threads alive
        self._extras = 0
        #: tasks being served by a worker and not waiting in ``blocking()``
        self._serving = 0
        #: workers the watchdog let loose beyond ``running``, not yet taken up
        self._allowance = 0
        self._progress_at = time.monotonic()
        self._watch_cv = threading.Condition(self.lock)
        self._watcher: threading.Thread | None = None
        #: the watchdog sleeps until a task is queued (not merely until its next look)
        self._watcher_idle = False
        #: workers woken for a task that have not taken one yet
        self._waking = 0
        self._closing = False

    # waitress's interface -----------------------------------------------------------------

    def add_task(self, task: Any) -> None:
        with self.lock:
            self.queue.append(task)
            if self._serving + self._waking < self.running:
                self._wake()
            else:
                self._watched()

    def handler_thread(self, thread_no: int, extra: bool = False) -> None:
        waits.register(self)  # told of its waits (waits.blocking): another task may run
        with self.lock:
            if extra:  # started for a queued task: it was counted as a worker woken for it
                self._waking = max(0, self._waking - 1)
        while True:
            with self.lock:
                while not self._may_take() and self.stop_count == 0:
                    if self.queue:
                        # a task this worker may not take yet (it was woken for it, and a task
                        # back from a wait took the place): the watchdog sees that it gets run
                        self._watched()
                    # idle while waiting, as waitress counts it
                    self.active_count -= 1
                    woken = self.queue_cv.wait(self.extra_idle if extra else None)
                    self.active_count += 1
                    if woken:
                        self._waking = max(0, self._waking - 1)
                    elif not self._may_take() and self.stop_count == 0:
                        self._retire(thread_no)
                        return
                if self.stop_count > 0:
                    self.active_count -= 1
                    self.stop_count -= 1
                    self.threads.discard(thread_no)
                    if extra:
                        self._extras -= 1
                    self.thread_exit_cv.notify()
                    break
                if self._serving >= self.running:
                    self._allowance -= 1
                task = self.queue.popleft()
                if not self.queue:
                    self._allowance = 0
                self._serving += 1
                self._progress_at = time.monotonic()
            try:
                task.service()
            except BaseException:
                self.logger.exception("Exception when servicing %r", task)
            finally:
                with self.lock:
                    self._serving -= 1
                    self._progress_at = time.monotonic()

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        with self.lock:
            self._closing = True
            self._watch_cv.notify()
        cancelled: bool = super().shutdown(cancel_pending=cancel_pending, timeout=timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)
        return cancelled

    # internals ----------------------------------------------------------------------------

    def _may_take(self) -> bool:
        return bool(self.queue) and (self._serving < self.running or self._allowance > 0)

    def _watched(self) -> None:
        """Make sure the watchdog looks at the queue: started, or woken if it sleeps until a task
        comes (call with the lock held)."""
        if self._watcher is None and not self._closing:
            self._watcher = threading.Thread(target=self._watch, name="nestegg-pacing", daemon=True)
            self._watcher.start()
        elif self._watcher_idle:
            self._watcher_idle = False
            self._watch_cv.notify()

    def _wake(self) -> None:
        """Wake an idle worker for a queued task, or start an extra thread when there is none and
        workers wait in ``blocking()`` (call with the lock held)."""
        if len(self.threads) - self.stop_count - self.active_count > self._waking:
            self._waking += 1
            self.queue_cv.notify()
        elif self._may_grow():
            self._waking += 1
            self._extras += 1
            thread_no = max(self.threads, default=-1) + 1
            self.threads.add(thread_no)
            self.active_count += 1
            thread = threading.Thread(
                target=self.handler_thread, args=(thread_no, True), name=f"waitress-{thread_no}", daemon=True
            )
            thread.start()

    def _may_grow(self) -> bool:
        return bool(self._blocked) and self._extras < self.extra and not self._closing and not self.stop_count

    def _retire(self, thread_no: int) -> None:
        """An extra thread idle for ``extra_idle`` ends (call with the lock held)."""
        self.active_count -= 1
        self._extras -= 1
        self.threads.discard(thread_no)
        self.thread_exit_cv.notify()

    # a wait begun or over is no progress: a reader of a download toggles them for every block it
    # sends, which would hide tasks stuck elsewhere from the watchdog
    def block(self) -> None:
        with self.lock:
            self._serving -= 1
            self._blocked += 1
            if self.queue and self._serving + self._waking < self.running:
                self._wake()

    def unblock(self) -> None:
        with self.lock:
            self._serving += 1
            self._blocked -= 1

    def _watch(self) -> None:
        """Let one more worker loose whenever tasks wait and none started or finished for
        ``stall`` seconds."""
        with self.lock:
            while not self._closing:
                if not self.queue:
                    self._watcher_idle = True
                    self._watch_cv.wait()  # until a task is queued that no worker takes at once
                    self._watcher_idle = False
                    continue
                late = self._progress_at + self.stall - time.monotonic()
                if late > 0:
                    self._watch_cv.wait(late)
                    continue
                idle = len(self.threads) - self.stop_count - self.active_count
                free = idle - self._waking
                if self._allowance < free or (free <= 0 and not self._waking and self._may_grow()):
                    # an idle worker, or else an extra thread beside the workers that wait
                    self._allowance += 1
                    self._wake()
                # counted as progress: the next worker is let loose a ``stall`` later
                self._progress_at = time.monotonic()
                self._watch_cv.wait(self.stall)
