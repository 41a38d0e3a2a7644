"""The small interfaces the link is written against, and an in-memory outbox.

Why Protocols: the journal (``agent.journal.Journal``) and the command layer (``agent.api``) are
written separately; the link only needs these few members, so either side can change freely.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class OutboxEntry(Protocol):
    """One committed ``evt``/``tel`` row (``agent.journal.Entry`` fits)."""

    @property
    def seq(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def topic_suffix(self) -> str: ...


class OutboxSource(Protocol):
    """Unsent rows, oldest first; marking happens only after the broker's PUBACK."""

    @property
    def last_seq(self) -> int:
        """Highest seq issued so far: rows up to it at (re)connection are the backlog."""
        ...

    def pending(self, limit: int, after_seq: int | None = None) -> Sequence[OutboxEntry]: ...

    def mark_sent(self, seq: int) -> object: ...  # the journal queues it (a future)


@runtime_checkable
class BatchMarking(Protocol):
    """Optional: mark many rows in one transaction (one fsync instead of one per row)."""

    def mark_sent_many(self, seqs: Iterable[int]) -> object: ...


@dataclass(frozen=True, slots=True)
class CommandMessage:
    """A command as it arrived; ``group`` is set when it came through a group topic."""

    topic: str
    payload: bytes
    group: str | None
    response_topic: str | None  # MQTT v5 Response Topic, if any
    correlation_data: bytes | None  # MQTT v5 Correlation Data, echoed in the reply
    received_at: float  # wall clock (time.time())


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back; a mapping is encoded as compact JSON."""

    body: Mapping[str, Any] | bytes

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return encode_json(self.body)


@dataclass(frozen=True, slots=True)
class PendingReply:
    """A command applied whose reply is not ready yet (it waits for storage): the link goes on
    with the next command and sends the replies in the order the commands came.

    ``reply`` is awaited by the link; it must not depend on the link's connection (a reply the
    link cannot send any more is dropped, the command stays applied and recorded)."""

    reply: Callable[[], Awaitable[Reply | None]]


CommandHandler = Callable[[CommandMessage], Awaitable[Reply | PendingReply | None]]
JsonSource = Callable[[], Mapping[str, Any]]


def encode_json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    seq: int
    kind: str
    payload: bytes

    @property
    def topic_suffix(self) -> str:
        return self.kind


class MemoryOutbox:
    """An ``OutboxSource`` in memory (tests, benchmarks); same ordering rules as the journal."""

    def __init__(self) -> None:
        self._rows: dict[int, MemoryEntry] = {}
        self._last_seq = 0
        self.marked: list[int] = []  # in marking order (may differ from seq order)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def append(self, kind: str, payload: bytes) -> MemoryEntry:
        self._last_seq += 1
        entry = MemoryEntry(self._last_seq, kind, payload)
        self._rows[entry.seq] = entry
        return entry

    def pending(self, limit: int, after_seq: int | None = None) -> list[MemoryEntry]:
        floor = after_seq or 0
        rows = sorted(s for s in self._rows if s > floor)[:limit]
        return [self._rows[s] for s in rows]

    def mark_sent(self, seq: int) -> None:
        if self._rows.pop(seq, None) is not None:
            self.marked.append(seq)

    @property
    def unsent(self) -> int:
        return len(self._rows)
