"""waitress's worker threads, let loose a few at a time while the tasks they run keep finishing.

waitress wakes an idle worker for every request. With sixteen workers (a cold install waits on
the upstream in many requests at once) a warm load of 8 clients kept 8 threads running on 2
cores, each taking the interpreter lock in turn, with the wake-up and hand-over of a thread for
every request: at 8 clients, 2 workers answered 10% more requests per second than 16, with a p99
latency of 13 ms instead of 20.

So the dispatcher keeps the threads but runs at most ``running`` tasks at a time while
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

The dispatcher is waitress's own, overridden: :class:`nestegg_core.serve._waitress.PacedDispatcher`.
"""

from __future__ import annotations

#: tasks run at a time while they make progress
RUNNING = 2
#: seconds without a task started or finished, while tasks wait, before one more may run
STALL = 0.005
#: seconds an extra thread (started beside waiting workers) stays without a task before it ends
EXTRA_IDLE = 10.0
