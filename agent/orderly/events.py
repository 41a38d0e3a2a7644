"""Journaled events and telemetry: validated against the API models, committed, then published.

Every ``evt``/``tel`` goes through ``EventLog``: the body is built with the pydantic body model
of ``agent.api.models`` (so what leaves the charger is what the JSON Schemas promise), committed to
the journal, and only then the link is nudged to publish it. A full disk is logged and counted;
the control loop never waits on it (charging safety does not depend on reporting).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel

from agent.errors import JournalError
from agent.journal import Entry, Journal
from agent.pilot import CpLevel, PilotState

log = structlog.get_logger("agent.events")


M = TypeVar("M", bound=BaseModel)

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
        self.failures = 0

    def attach(self, notify: Callable[[], None]) -> None:
        """The link's ``notify``: called after every commit so live messages go out at once."""
        self._notify = notify

    def event(self, type_: str, body: BaseModel | Mapping[str, Any],
              connector: int | None = None) -> Entry | None:
        payload: dict[str, Any] = {"type": type_}
        if connector is not None:
            payload["connector"] = connector
        payload["body"] = wire(body) if isinstance(body, BaseModel) else dict(body)
        return self._append("evt", payload, event_type=type_)

    def telemetry(self, connectors: list[BaseModel]) -> Entry | None:
        return self._append("tel", {"connectors": [wire(c) for c in connectors]})

    def _append(self, kind: str, payload: dict[str, Any], event_type: str = "") -> Entry | None:
        try:
            entry = self.journal.append(kind, payload, self._clock())  # type: ignore[arg-type]
        except JournalError as exc:
            self.failures += 1
            log.error("journal_append_failed", kind=kind, event_type=event_type, error=str(exc))
            return None
        if self._notify is not None:
            self._notify()
        return entry

    @property
    def last_seq(self) -> int:
        return self.journal.last_seq
