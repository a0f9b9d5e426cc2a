"""Where the store writes peers' batches: a writer the store hands each job to.

``Store.queue_remote`` merges a batch from peers into memory at once and gives its
database transaction to a ``Writer``; the batch's listeners run when the writer says it
is durable (``docs/store-writer.md``).  The daemon's writer is a thread of its own, so
the transaction's work and its waits leave the links' loop; the simulation's runs the
jobs later in virtual time.  Jobs run one at a time, in the order given.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

Job = Callable[[], None]  # never raises: it records its own failure


class Writer(Protocol):
    def submit(self, job: Job, done: Callable[[], None]) -> None:
        """Run ``job`` after every job given before it, then ``done`` on the owner's
        thread."""

    def wait(self) -> None:
        """Return once every job given so far has run (their ``done`` may be pending)."""


class ThreadWriter:
    """One thread that runs the jobs; ``done`` goes back through ``notify`` (the
    daemon's ``loop.call_soon_threadsafe``)."""

    def __init__(self, notify: Callable[[Callable[[], None]], object]) -> None:
        self.notify = notify
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self.pending: list[Future[None]] = []
        self.lock = threading.Lock()

    def submit(self, job: Job, done: Callable[[], None]) -> None:
        future = self.pool.submit(job)
        with self.lock:
            self.pending.append(future)
        future.add_done_callback(lambda f: self._ran(f, done))

    def _ran(self, future: Future[None], done: Callable[[], None]) -> None:
        with self.lock:
            self.pending.remove(future)
        with contextlib.suppress(RuntimeError):  # the loop has closed: flush took it
            self.notify(done)

    def wait(self) -> None:
        with self.lock:
            pending = list(self.pending)
        for future in pending:
            future.exception()  # waits; a job records its own failure

    def close(self) -> None:
        self.pool.shutdown(wait=True)
