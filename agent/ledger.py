"""The session ledger: charging sessions written through at every change, recovered after a crash.

Why its own file (``sessions.db``, not the journal's): the journal's size budget and its
corruption recovery must never touch a session, and the ledger stays tiny. The ``sessionEnded``
record (mqtt-api.md, "Events") is built here; the caller journals it and then calls
``mark_reported``. A crash between the two leaves the session in ``unreported()``, so the record is
journaled again: at least once, and consumers can dedupe on ``sessionId``.

Energy is always the difference of the meter's cumulative register, never integrated power.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from agent.errors import JournalError
from agent.ledger_bound import MergedCurtailments, MergedDelays, bound_curtailments, bound_delays
from agent.store import Database, Quarantine, rfc3339, to_journal_error

POWER_LOSS = "PowerLoss"

_SCHEMA = """
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
_COLUMNS = (
    "session_id, connector, plug_in_at, meter_start_wh, id_tag, offline, charge_start_at,"
    " charge_end_at, charging, max_power_w, curtailments, random_delays, idle_occupancy_s,"
    " last_seen_at, last_meter_wh, plug_out_at, meter_stop_wh, stop_reason, reported_seq,"
    " max_current_a, local_only, curtailments_merged, random_delays_merged"
)
# Columns added after the first release: a ledger written by an older agent gains them at open.
_ADDED_COLUMNS = (
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


class Ledger:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = Database(path, schema=_SCHEMA)
        self.quarantine: Quarantine | None = self._db.quarantine
        with self._db.transaction("adding ledger columns") as conn:
            have = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
            for name, decl in _ADDED_COLUMNS:
                if name not in have:
                    conn.execute(f"ALTER TABLE sessions ADD COLUMN {name} {decl}")

    def open_session(
        self,
        connector: int,
        plug_in_at: float,
        meter_wh: int,
        id_tag: str | None = None,
        offline: bool = False,
        *,
        session_id: str | None = None,
    ) -> Session:
        session = Session(
            session_id=session_id or str(uuid.uuid4()), connector=connector,
            plug_in_at=plug_in_at, meter_start_wh=meter_wh, id_tag=id_tag, offline=offline,
            last_seen_at=plug_in_at, last_meter_wh=meter_wh,
        )
        if self.open_on(connector) is not None:
            raise ValueError(f"connector {connector} already has an open session")
        with self._db.transaction("opening session", connector=connector) as conn:
            conn.execute(f"INSERT INTO sessions({_COLUMNS}) VALUES ({_marks()})", _row(session))
        return session

    def update(
        self,
        session_id: str,
        *,
        at: float | None = None,
        meter_wh: int | None = None,
        power_w: float | None = None,
        current_a: float | None = None,
        charge_start_at: float | None = None,
        charge_end_at: float | None = None,
        curtailment: Curtailment | None = None,
        random_delay: RandomDelay | None = None,
        idle_occupancy_s: float | None = None,
        id_tag: str | None = None,
    ) -> Session:
        """Write one change through; ``at``/``meter_wh`` are the last-seen time and reading.

        ``charge_start_at`` keeps the first start (a later one means charging resumed and clears
        ``chargeEndAt``); ``charge_end_at`` is the last end. ``power_w`` raises ``maxPowerW``.
        A curtailment with the same source, id and start replaces the earlier entry (to set ``to``).
        """
        with self._db.transaction("updating session", session_id=session_id) as conn:
            s = _load(conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?",
                                   (session_id,)).fetchone(), session_id)
            if s.closed:
                raise ValueError(f"session {session_id} is closed")
            times = [t for t in (at, charge_start_at, charge_end_at) if t is not None]
            if times:
                s = replace(s, last_seen_at=max(s.last_seen_at, *times))
            if meter_wh is not None:
                s = replace(s, last_meter_wh=meter_wh)
            if power_w is not None:
                s = replace(s, max_power_w=max(s.max_power_w, round(power_w)))
            if current_a is not None:
                s = replace(s, max_current_a=max(s.max_current_a, current_a))
            if charge_start_at is not None:
                s = replace(s, charge_start_at=(charge_start_at if s.charge_start_at is None
                                                 else s.charge_start_at),
                            charge_end_at=None, charging=True)
            if charge_end_at is not None:
                s = replace(s, charge_end_at=charge_end_at, charging=False)
            if curtailment is not None:
                kept = tuple(c for c in s.curtailments if (c.source, c.source_id, c.from_at)
                             != (curtailment.source, curtailment.source_id, curtailment.from_at))
                entries, merged = bound_curtailments((*kept, curtailment),
                                                     s.curtailments_merged)
                s = replace(s, curtailments=entries, curtailments_merged=merged)
            if random_delay is not None:
                delays, folded = bound_delays((*s.random_delays, random_delay),
                                              s.random_delays_merged, lambda d: d.s)
                s = replace(s, random_delays=delays, random_delays_merged=folded)
            if idle_occupancy_s is not None:
                s = replace(s, idle_occupancy_s=idle_occupancy_s)
            if id_tag is not None:
                s = replace(s, id_tag=id_tag)
            _store(conn, s)
        return s

    def close(
        self, session_id: str, plug_out_at: float, meter_stop_wh: int, stop_reason: str
    ) -> dict[str, Any]:
        """Close the session and return its ``sessionEnded`` record."""
        with self._db.transaction("closing session", session_id=session_id) as conn:
            s = _load(conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?",
                                   (session_id,)).fetchone(), session_id)
            if s.closed:
                raise ValueError(f"session {session_id} is already closed")
            s = _closed(s, plug_out_at, meter_stop_wh, stop_reason,
                        charge_end_at=plug_out_at if s.charging else s.charge_end_at)
            _store(conn, s)
        return s.record()

    def recover(
        self,
        now: float,
        meter_wh: Mapping[int, int | None],
        plugged: Collection[int],
    ) -> list[RecoveredSession]:
        """After a crash or power loss: resume sessions whose EV is still plugged, close the rest.

        ``plugged``: connectors where the pilot shows an EV now. ``meter_wh``: each connector's
        cumulative register now (None or absent: meter unreadable, the last known one is used).
        A closed session ends at the last time it was seen, as ``PowerLoss``; its meterStopWh is
        the reading now (no energy flows through an open contactor), never below the last known.
        A resumed one that was charging gets ``chargeEndAt`` = last seen (the outage stopped it).
        """
        out: list[RecoveredSession] = []
        with self._db.transaction("recovering sessions") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE stop_reason IS NULL ORDER BY plug_in_at"
            ).fetchall()
            for row in rows:
                s = _load(row, "")
                reading = meter_wh.get(s.connector)
                stop = s.last_meter_wh if reading is None else max(reading, s.last_meter_wh)
                end_charge = s.last_seen_at if s.charging else s.charge_end_at
                if s.connector in plugged:
                    s = replace(s, charge_end_at=end_charge, charging=False, last_meter_wh=stop,
                                last_seen_at=max(s.last_seen_at, now))
                    out.append(RecoveredSession(s, resumed=True))
                else:
                    s = _closed(s, s.last_seen_at, stop, POWER_LOSS, charge_end_at=end_charge)
                    out.append(RecoveredSession(s, resumed=False))
                _store(conn, s)
        return out

    def mark_local(self, session_id: str) -> None:
        """Closed without an aggregator: kept for ``evse-agent sessions``, never reported."""
        with self._db.transaction("marking session local", session_id=session_id) as conn:
            conn.execute("UPDATE sessions SET local_only = 1 WHERE session_id = ?",
                         (session_id,))

    def sessions(self, *, since: float | None = None,
                 connector: int | None = None) -> list[Session]:
        """Sessions still open or ended at or after ``since``, oldest first."""
        sql, args = _listing_query(since, connector)
        return [_load(r, "") for r in self._db.query(sql, args)]

    def mark_reported(self, session_id: str, seq: int) -> None:
        """The sessionEnded record was journaled as ``seq``."""
        with self._db.transaction("marking session reported", session_id=session_id) as conn:
            conn.execute("UPDATE sessions SET reported_seq = ? WHERE session_id = ?",
                         (seq, session_id))

    def unreported(self) -> list[Session]:
        """Closed sessions whose record has not been journaled yet (journal them again)."""
        rows = self._db.query(f"SELECT {_COLUMNS} FROM sessions WHERE stop_reason IS NOT NULL"
                              " AND reported_seq IS NULL AND local_only = 0"
                              " ORDER BY plug_in_at")
        return [_load(r, "") for r in rows]

    def get(self, session_id: str) -> Session:
        rows = self._db.query(f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?",
                              (session_id,))
        return _load(rows[0] if rows else None, session_id)

    def open_on(self, connector: int) -> Session | None:
        rows = self._db.query(f"SELECT {_COLUMNS} FROM sessions WHERE connector = ?"
                              " AND stop_reason IS NULL", (connector,))
        return _load(rows[0], "") if rows else None

    def recent(self, limit: int) -> list[Session]:
        """The latest sessions (open or closed), newest first: the status page's list."""
        rows = self._db.query(f"SELECT {_COLUMNS} FROM sessions ORDER BY plug_in_at DESC"
                              " LIMIT ?", (limit,))
        return [_load(r, "") for r in rows]

    def prune(self, before: float) -> int:
        """Forget reported sessions that ended before ``before``."""
        with self._db.transaction("pruning sessions") as conn:
            return conn.execute("DELETE FROM sessions WHERE reported_seq IS NOT NULL"
                                " AND plug_out_at < ?", (before,)).rowcount

    def close_db(self) -> None:
        self._db.close()


def _listing_query(since: float | None, connector: int | None) -> tuple[str, tuple[Any, ...]]:
    where, args = ["1"], []
    if since is not None:
        where.append("(plug_out_at IS NULL OR plug_out_at >= ?)")
        args.append(since)
    if connector is not None:
        where.append("connector = ?")
        args.append(connector)
    return (f"SELECT {_COLUMNS} FROM sessions WHERE {' AND '.join(where)} ORDER BY plug_in_at",
            tuple(args))


def read_sessions(path: Path, *, since: float | None = None,
                  connector: int | None = None) -> list[Session]:
    """The sessions of a ledger no agent is running on, read without writing anything (no
    -wal/-shm created, no schema change: ``evse-agent sessions`` with the agent stopped)."""
    if not path.exists():
        raise JournalError("no session ledger", path=str(path), cause="io")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise to_journal_error(exc, "reading sessions", path) from exc
    try:
        have = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
        if any(name not in have for name, _ in _ADDED_COLUMNS):
            raise JournalError("the ledger predates this agent version: start the agent once",
                               path=str(path), cause="schema")
        sql, args = _listing_query(since, connector)
        return [_load(r, "") for r in conn.execute(sql, args).fetchall()]
    except sqlite3.Error as exc:
        raise to_journal_error(exc, "reading sessions", path) from exc
    finally:
        conn.close()


def _closed(
    s: Session, plug_out_at: float, meter_stop_wh: int, reason: str, *, charge_end_at: float | None
) -> Session:
    ended = tuple(c if c.to_at is not None else replace(c, to_at=plug_out_at)
                  for c in s.curtailments)
    return replace(s, plug_out_at=plug_out_at, meter_stop_wh=meter_stop_wh, stop_reason=reason,
                   charge_end_at=charge_end_at, charging=False, curtailments=ended,
                   last_meter_wh=meter_stop_wh, last_seen_at=max(s.last_seen_at, plug_out_at))


def _ts(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def _marks() -> str:
    return ", ".join("?" * len(_COLUMNS.split(",")))


def _row(s: Session) -> tuple[Any, ...]:
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


def _store(conn: sqlite3.Connection, s: Session) -> None:
    conn.execute(f"REPLACE INTO sessions({_COLUMNS}) VALUES ({_marks()})", _row(s))


def _load(row: tuple[Any, ...] | None, session_id: str) -> Session:
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
