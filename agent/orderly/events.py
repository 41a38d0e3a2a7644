"""Journaled events and telemetry: validated against the API models, committed, then published.

Every ``evt``/``tel`` goes through ``EventLog``: the body is built with the pydantic body model
of ``agent.api.models`` (so what leaves the charger is what the JSON Schemas promise), committed to
the journal on the store writer's thread, and only then the link is nudged (on the loop) to
publish it. The caller goes on at once and gets a future of the committed entry. A full disk is
logged and counted; the control loop never waits on it (charging safety does not depend on
reporting).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel

from agent.errors import JournalError
from agent.journal import Entry, Journal
from agent.pilot import CpLevel, PilotState

log = structlog.get_logger("agent.events")


M = TypeVar("M", bound=BaseModel)
Body = BaseModel | Mapping[str, Any]

LETTERS = {
    CpLevel.STATE_1: "A", CpLevel.STATE_2: "B", CpLevel.STATE_3: "C", CpLevel.STATE_D: "D",
    CpLevel.SHORT: "E", CpLevel.INVALID: "E", CpLevel.NEGATIVE: "F",
}


def ev_letter(level: CpLevel | None, state: PilotState | None = None) -> str:
    """IEC letter of the EV level (GB state 1/2/3 = A/B/C); F while a fault holds the pilot."""
    if state is PilotState.FAULT:
        return "F"
    return LETTERS.get(level, "A") if level is not None else "A"


def from_wire(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate a wire-shaped dict (camelCase, RFC 3339 strings) as JSON would be."""
    return model.model_validate_json(json.dumps(data))


def wire(model: BaseModel) -> dict[str, Any]:
    """A body model as its wire dict (camelCase, UTC timestamps, no null fields)."""
    data = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert isinstance(data, dict)
    return data


class EventLog:
    """Append-then-publish for ``evt`` and ``tel``."""

    def __init__(self, journal: Journal, *, clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self._clock = clock
        self._notify: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failures = 0  # appends refused (disk full); written on the writer's thread

    def attach(self, notify: Callable[[], None]) -> None:
        """The link's ``notify``: called (on the loop) after every commit so live messages go
        out at once."""
        self._notify = notify
        self._loop = asyncio.get_running_loop() if _in_loop() else None

    def event(self, type_: str, body: Body | Callable[[], Body],
              connector: int | None = None) -> Future[Entry | None]:
        """Queue an event; ``body`` may be a function, called on the writer just before the
        append (for counts that the writer itself keeps, e.g. ``linkRestored``)."""
        def payload() -> dict[str, Any]:
            out: dict[str, Any] = {"type": type_}
            if connector is not None:
                out["connector"] = connector
            b = body() if callable(body) else body
            out["body"] = wire(b) if isinstance(b, BaseModel) else dict(b)
            return out
        return self._append("evt", payload if callable(body) else _const(payload()), type_)

    def telemetry(self, connectors: list[BaseModel]) -> Future[Entry | None]:
        return self._append("tel", _const({"connectors": [wire(c) for c in connectors]}))

    def _append(self, kind: str, payload: Callable[[], dict[str, Any]],
                event_type: str = "") -> Future[Entry | None]:
        ts = self._clock()
        loop = self._loop or (asyncio.get_running_loop() if _in_loop() else None)

        def job() -> Entry | None:  # on the writer's thread
            try:
                entry = self.journal.commit(kind, payload(), ts)  # type: ignore[arg-type]
            except JournalError as exc:
                self.failures += 1
                log.error("journal_append_failed", kind=kind, event_type=event_type,
                          error=str(exc))
                return None
            notify = self._notify
            if notify is not None and loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(notify)
            elif notify is not None and loop is None:
                notify()
            return entry
        return self.journal.writer.submit(job)

    async def settled(self) -> None:
        """Every event queued so far is committed (or refused): ``last_seq`` covers them.
        Awaited by a command handler before its reply names ``atSeq``; the loop goes on."""
        await self.journal.writer.flushed()

    @property
    def last_seq(self) -> int:
        """The last committed seq (``atSeq``)."""
        return self.journal.last_seq


def _const(payload: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: payload


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
