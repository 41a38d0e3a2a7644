"""Draining the outbox: backlog oldest first, live rows at once, marked only after PUBACK.

Why a window: one QoS 1 publish at a time waits a round trip per row (~2,000 msg/s is out of
reach); a bounded number in flight keeps order on the wire (paho writes in call order) and caps
memory. Marking may complete out of order, but every query starts after the last row handed to a
publisher, so no row is ever skipped; a row whose publish failed stays unsent and goes out again
on the next connection (a duplicate, which consumers drop by (deviceId, seq)).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from agent.errors import JournalError
from agent.link.ports import BatchMarking, OutboxEntry, OutboxSource

log = structlog.get_logger("agent.link")

MARK_BATCH_S = 0.02  # PUBACKs gathered into one mark transaction (one fsync per batch)

Publish = Callable[[OutboxEntry], Awaitable[bool]]  # False: unroutable, do not mark


class OutboxDrainer:
    """One per link; ``drain()`` runs for the life of one connection."""

    def __init__(self, outbox: OutboxSource, *, window: int, batch: int) -> None:
        self.outbox = outbox
        self.window = window
        self.batch = batch
        self._batch_marking = isinstance(outbox, BatchMarking)
        self._wake = asyncio.Event()
        self._acked: list[int] = []
        self._acked_event = asyncio.Event()

    def notify(self) -> None:
        self._wake.set()

    async def drain(self, publish: Publish, upto: int) -> None:
        """Rows with seq <= ``upto`` are the backlog; rows above it are live and go first."""
        live_cursor, backlog_cursor, backlog_open = upto, 0, upto > 0
        window = asyncio.Semaphore(self.window)
        handed = 0
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._mark_acked(), name="mqtt-outbox-marker")

                async def hand_over(entry: OutboxEntry) -> None:
                    await window.acquire()
                    tg.create_task(self._send(publish, entry, window))

                while True:
                    self._wake.clear()
                    live = self.outbox.pending(self.batch, after_seq=live_cursor)
                    for entry in live:
                        await hand_over(entry)
                        live_cursor = entry.seq
                    if backlog_open:
                        rows = self.outbox.pending(self.batch, after_seq=backlog_cursor)
                        backlog = [e for e in rows if e.seq <= upto]
                        if not backlog:
                            backlog_open = False
                            log.info("outbox_backlog_handed_over", upto=upto, rows=handed)
                        for entry in backlog:
                            await hand_over(entry)
                            backlog_cursor = entry.seq
                            handed += 1
                    elif not live:
                        await self._wake.wait()
        finally:
            self.flush_marks()

    async def _send(self, publish: Publish, entry: OutboxEntry, window: asyncio.Semaphore) -> None:
        try:
            routed = await publish(entry)  # QoS 1: returns after the PUBACK
        finally:
            window.release()
        if routed:
            self._acked.append(entry.seq)
            self._acked_event.set()

    async def _mark_acked(self) -> None:
        while True:
            await self._acked_event.wait()
            await asyncio.sleep(MARK_BATCH_S)
            self._acked_event.clear()
            self.flush_marks()

    def flush_marks(self) -> None:
        seqs, self._acked = self._acked, []
        if not seqs:
            return
        try:
            if self._batch_marking:
                self.outbox.mark_sent_many(seqs)  # type: ignore[attr-defined]
            else:
                for seq in seqs:
                    self.outbox.mark_sent(seq)
        except JournalError as exc:  # rows stay unsent and go out again later: duplicates only
            log.error("outbox_mark_failed", rows=len(seqs), error=str(exc))
