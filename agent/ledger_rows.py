"""What a charging session is, its ``sessionEnded`` record, and how it is kept as a SQLite row.

Split from ``agent.ledger`` (which writes and reads the rows): the record shapes and the codec
are pure, so tests and the bench use them without a database.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent.ledger_bound import MergedCurtailments, MergedDelays
from agent.store import rfc3339

POWER_LOSS = "PowerLoss"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(
    session_id TEXT PRIMARY KEY, connector INTEGER NOT NULL, plug_in_at REAL NOT NULL,
    meter_start_wh INTEGER NOT NULL, id_tag TEXT, offline INTEGER NOT NULL,
    charge_start_at REAL, charge_end_at REAL, charging INTEGER NOT NULL DEFAULT 0,
    max_power_w INTEGER NOT NULL DEFAULT 0, curtailments TEXT NOT NULL DEFAULT '[]',
    random_delays TEXT NOT NULL DEFAULT '[]', idle_occupancy_s REAL,
    last_seen_at REAL NOT NULL, last_meter_wh INTEGER NOT NULL,
    plug_out_at REAL, meter_stop_wh INTEGER, stop_reason TEXT, reported_seq INTEGER,
    max_current_a REAL NOT NULL DEFAULT 0, local_only INTEGER NOT NULL DEFAULT 0,
    curtailments_merged TEXT, random_delays_merged TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_per_connector ON sessions(connector)
    WHERE stop_reason IS NULL;
"""
COLUMNS = (
    "session_id, connector, plug_in_at, meter_start_wh, id_tag, offline, charge_start_at,"
    " charge_end_at, charging, max_power_w, curtailments, random_delays, idle_occupancy_s,"
    " last_seen_at, last_meter_wh, plug_out_at, meter_stop_wh, stop_reason, reported_seq,"
    " max_current_a, local_only, curtailments_merged, random_delays_merged"
)
# Columns added after the first release: a ledger written by an older agent gains them at open.
ADDED_COLUMNS = (
    ("max_current_a", "REAL NOT NULL DEFAULT 0"),
    ("local_only", "INTEGER NOT NULL DEFAULT 0"),
    ("curtailments_merged", "TEXT"),
    ("random_delays_merged", "TEXT"),
)


@dataclass(frozen=True, slots=True)
class Curtailment:
    """A limit that applied to the session; ``to_at`` is None while it still applies."""

    source: Literal["commandId", "profileId", "installer"]  # installer: local sessions only
    source_id: str
    from_at: float
    limit: Mapping[str, Any]
    to_at: float | None = None

    def record(self) -> dict[str, Any]:
        return {self.source: self.source_id, "from": rfc3339(self.from_at),
                "to": _ts(self.to_at), "limit": dict(self.limit)}


@dataclass(frozen=True, slots=True)
class RandomDelay:
    at: float
    s: float


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    connector: int
    plug_in_at: float
    meter_start_wh: int
    id_tag: str | None
    offline: bool
    last_seen_at: float
    last_meter_wh: int
    charge_start_at: float | None = None
    charge_end_at: float | None = None
    charging: bool = False
    max_power_w: int = 0
    curtailments: tuple[Curtailment, ...] = ()
    random_delays: tuple[RandomDelay, ...] = ()
    idle_occupancy_s: float | None = None
    plug_out_at: float | None = None
    meter_stop_wh: int | None = None
    stop_reason: str | None = None
    reported_seq: int | None = None
    max_current_a: float = 0.0
    local_only: bool = False  # closed without an aggregator: listed locally, never reported
    curtailments_merged: MergedCurtailments | None = None
    random_delays_merged: MergedDelays | None = None

    @property
    def closed(self) -> bool:
        return self.stop_reason is not None

    def record(self) -> dict[str, Any]:
        """The ``sessionEnded`` body of the API (only meaningful once closed)."""
        end = self.plug_out_at if self.plug_out_at is not None else self.last_seen_at
        stop = self.meter_stop_wh if self.meter_stop_wh is not None else self.last_meter_wh
        idle = self.idle_occupancy_s
        if idle is None:
            idle = max(0.0, end - (self.charge_end_at or self.plug_in_at))
        out: dict[str, Any] = {
            "sessionId": self.session_id,
            "plugInAt": rfc3339(self.plug_in_at),
            "chargeStartAt": _ts(self.charge_start_at),
            "chargeEndAt": _ts(self.charge_end_at),
            "plugOutAt": rfc3339(end),
            "meterStartWh": self.meter_start_wh,
            "meterStopWh": stop,
            "energyWh": stop - self.meter_start_wh,
            "maxPowerW": self.max_power_w,
            "stopReason": self.stop_reason,
            "curtailments": [c.record() for c in self.curtailments if c.source != "installer"],
            "randomDelays": [{"at": rfc3339(d.at), "s": d.s} for d in self.random_delays],
            "idleOccupancyS": round(idle, 3),
        }
        if self.id_tag is not None:
            out["idTag"] = self.id_tag
        out["offline"] = self.offline
        if self.curtailments_merged is not None:
            out["curtailmentsMerged"] = self.curtailments_merged.record()
        if self.random_delays_merged is not None:
            out["randomDelaysMerged"] = self.random_delays_merged.record()
        return out

    def listing(self) -> dict[str, Any]:
        """The local view (``evse-agent sessions``): open sessions too, installer limits too."""
        stop = self.meter_stop_wh if self.meter_stop_wh is not None else self.last_meter_wh
        return {
            "sessionId": self.session_id, "connector": self.connector,
            "start": rfc3339(self.plug_in_at), "end": _ts(self.plug_out_at),
            "chargeStartAt": _ts(self.charge_start_at), "chargeEndAt": _ts(self.charge_end_at),
            "meterStartWh": self.meter_start_wh, "meterStopWh": stop,
            "energyWh": stop - self.meter_start_wh,
            "maxCurrentA": round(self.max_current_a, 2), "maxPowerW": self.max_power_w,
            "stopReason": self.stop_reason, "idTag": self.id_tag,
            "curtailments": [c.record() for c in self.curtailments],
            "curtailmentsMerged": None if self.curtailments_merged is None
            else self.curtailments_merged.record(),
            "reportedUpstream": self.reported_seq is not None and not self.local_only,
        }


@dataclass(frozen=True, slots=True)
class RecoveredSession:
    """An open session found at start-up: resumed (EV still plugged) or closed as PowerLoss."""

    session: Session
    resumed: bool

    @property
    def record(self) -> dict[str, Any] | None:
        return None if self.resumed else self.session.record()


def listing_query(since: float | None, connector: int | None) -> tuple[str, tuple[Any, ...]]:
    where, args = ["1"], []
    if since is not None:
        where.append("(plug_out_at IS NULL OR plug_out_at >= ?)")
        args.append(since)
    if connector is not None:
        where.append("connector = ?")
        args.append(connector)
    return (f"SELECT {COLUMNS} FROM sessions WHERE {' AND '.join(where)} ORDER BY plug_in_at",
            tuple(args))


def closed_session(
    s: Session, plug_out_at: float, meter_stop_wh: int, reason: str, *, charge_end_at: float | None
) -> Session:
    ended = tuple(c if c.to_at is not None else replace(c, to_at=plug_out_at)
                  for c in s.curtailments)
    return replace(s, plug_out_at=plug_out_at, meter_stop_wh=meter_stop_wh, stop_reason=reason,
                   charge_end_at=charge_end_at, charging=False, curtailments=ended,
                   last_meter_wh=meter_stop_wh, last_seen_at=max(s.last_seen_at, plug_out_at))


def _ts(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def insert_marks() -> str:
    return ", ".join("?" * len(COLUMNS.split(",")))


def to_row(s: Session) -> tuple[Any, ...]:
    curtailments = [[c.source, c.source_id, c.from_at, dict(c.limit), c.to_at]
                    for c in s.curtailments]
    delays = [[d.at, d.s] for d in s.random_delays]
    return (s.session_id, s.connector, s.plug_in_at, s.meter_start_wh, s.id_tag, int(s.offline),
            s.charge_start_at, s.charge_end_at, int(s.charging), s.max_power_w,
            json.dumps(curtailments), json.dumps(delays), s.idle_occupancy_s, s.last_seen_at,
            s.last_meter_wh, s.plug_out_at, s.meter_stop_wh, s.stop_reason, s.reported_seq,
            s.max_current_a, int(s.local_only),
            None if s.curtailments_merged is None else json.dumps(s.curtailments_merged.to_json()),
            None if s.random_delays_merged is None
            else json.dumps(s.random_delays_merged.to_json()))


def store_row(conn: sqlite3.Connection, s: Session) -> None:
    conn.execute(f"REPLACE INTO sessions({COLUMNS}) VALUES ({insert_marks()})", to_row(s))


def from_row(row: tuple[Any, ...] | None, session_id: str) -> Session:
    if row is None:
        raise KeyError(f"no session {session_id!r}")
    (sid, connector, plug_in, m_start, id_tag, offline, c_start, c_end, charging, max_p,
     curt, delays, idle, seen, m_last, plug_out, m_stop, reason, reported, max_a, local,
     curt_merged, delays_merged) = row
    return Session(
        session_id=sid, connector=connector, plug_in_at=plug_in, meter_start_wh=m_start,
        id_tag=id_tag, offline=bool(offline), charge_start_at=c_start, charge_end_at=c_end,
        charging=bool(charging), max_power_w=max_p,
        curtailments=tuple(Curtailment(src, sid_, f, lim, t) for src, sid_, f, lim, t
                           in json.loads(curt)),
        random_delays=tuple(RandomDelay(a, d) for a, d in json.loads(delays)),
        idle_occupancy_s=idle, last_seen_at=seen, last_meter_wh=m_last, plug_out_at=plug_out,
        meter_stop_wh=m_stop, stop_reason=reason, reported_seq=reported,
        max_current_a=max_a, local_only=bool(local),
        curtailments_merged=MergedCurtailments.from_json(
            json.loads(curt_merged) if curt_merged else None),
        random_delays_merged=MergedDelays.from_json(
            json.loads(delays_merged) if delays_merged else None),
    )
