"""The one writer: every commit of the agent's durable state runs on this thread, never on the loop.

Why: the event loop also runs the 10 ms pilot poll, and one fsync on a Pi's SD card takes tens of
milliseconds (hundreds when the card is busy). The journal, the session ledger, the command store
and ``limits.json`` hand their writes to this thread and go on; whoever must not go ahead before a
write is durable (the outbox publishing a row, a command reply) awaits that write's future.

Jobs run one at a time in the order they were submitted, across every store. So a job that has
completed implies every job submitted before it has completed too: a ``sessionEnded`` row that is
committed (and so may be published) has its ledger ``close`` committed before it, and a command
reply that waits for its own record also waits for the events and ``limits.json`` written before.

Reads do not come here: each database keeps a second connection for readers (WAL lets readers
go on while this thread commits), so a stalled disk delays acknowledgements, not the control loop.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("agent.writer")
T = TypeVar("T")

_Job = tuple[Callable[[], Any], "Future[Any]"]


class StoreWriter:
    """A thread that runs submitted jobs one at a time, in order."""

    def __init__(self, name: str = "store-writer") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()
        atexit.register(self.close)  # after the main thread: queued commits still land

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn``; its future completes (result or exception) once it has run."""
        fut: Future[T] = Future()
        if self._closed and not self.on_thread():  # on it: a follow-up, run before the stop
            raise RuntimeError("the store writer is closed")
        self._jobs.put((fn, fut))
        return fut

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer and wait (start-up, tools, tests; inline on the writer)."""
        if self.on_thread():
            return fn()
        return self.submit(fn).result()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer; the awaiting task waits, the event loop does not."""
        return await asyncio.wrap_future(self.submit(fn))

    async def flushed(self) -> None:
        """Every job submitted before this call has finished."""
        await self.run(_nothing)

    @property
    def queued(self) -> int:
        """Jobs waiting (not counting the one running): how far the disk is behind."""
        return self._jobs.qsize()

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # handed to whoever awaits the future
                    fut.set_exception(exc)

    def close(self) -> None:
        """Finish what is queued, then stop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        if not self.on_thread():
            self._thread.join()


def _nothing() -> None:
    return None


_shared: StoreWriter | None = None
_shared_lock = threading.Lock()


def shared_writer() -> StoreWriter:
    """The process's one writer, which every store uses unless given another."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed:
            _shared = StoreWriter()
        return _shared


def log_failure(what: str, **context: object) -> Callable[[Future[Any]], None]:
    """A done-callback for fire-and-forget writes: a failure is logged, not lost silently."""
    def done(fut: Future[Any]) -> None:
        exc = fut.exception()
        if exc is not None:
            log.error("store_write_failed", what=what, error=str(exc), **context)
    return done
