"""The session ledger: charging sessions written through at every change, recovered after a crash.

Why its own file (``sessions.db``, not the journal's): the journal's size budget and its
corruption recovery must never touch a session, and the ledger stays tiny. The ``sessionEnded``
record (mqtt-api.md, "Events") is built here; the caller journals it and then calls
``mark_reported``. A crash between the two leaves the session in ``unreported()``, so the record is
journaled again: at least once, and consumers can dedupe on ``sessionId``.

Off the loop: open sessions live in memory; each change is computed there and the session's whole
row handed to the store writer (``agent.writer``), so the caller never waits on an fsync. Reads
see the rows still queued (read-your-writes) over the committed ones. The writer runs jobs
in order across every store, so an event journaled after a change (``sessionStarted`` after
``open_session``, ``sessionEnded`` after ``close``) is never committed, and so never published,
before the change itself. A write that fails is logged; the next change of the same session
writes the whole row again.

Energy is always the difference of the meter's cumulative register, never integrated power.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.errors import LedgerError
from agent.ledger_bound import bound_curtailments, bound_delays
from agent.ledger_rows import (
    ADDED_COLUMNS,
    COLUMNS,
    POWER_LOSS,
    SCHEMA,
    Curtailment,
    RandomDelay,
    RecoveredSession,
    Session,
    closed_session,
    from_row,
    insert_marks,
    listing_query,
    store_row,
    to_row,
)
from agent.store import Database, Quarantine, to_store_error
from agent.writer import StoreWriter, log_failure

__all__ = ["POWER_LOSS", "Curtailment", "Ledger", "RandomDelay", "RecoveredSession", "Session",
           "read_sessions"]


class Ledger:
    def __init__(self, path: str | os.PathLike[str], *, writer: StoreWriter | None = None) -> None:
        self._db = Database(path, schema=SCHEMA, error=LedgerError, writer=writer)
        self.quarantine: Quarantine | None = self._db.quarantine
        self._db.write(self._add_columns)
        rows = self._db.query(f"SELECT {COLUMNS} FROM sessions WHERE stop_reason IS NULL")
        self._open: dict[str, Session] = {r[0]: from_row(r, "") for r in rows}
        self._queued: dict[str, Session] = {}  # handed to the writer, not yet committed

    def _add_columns(self) -> None:
        with self._db.transaction("adding ledger columns") as conn:
            have = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
            for name, decl in ADDED_COLUMNS:
                if name not in have:
                    conn.execute(f"ALTER TABLE sessions ADD COLUMN {name} {decl}")

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], object],
               **context: str | int) -> Future[None]:
        """Queue one transaction; a failure is logged (``store_write_failed``)."""
        def job() -> None:
            with self._db.transaction(what, durable=True, **context) as conn:
                fn(conn)
        fut = self._db.submit(job)
        fut.add_done_callback(log_failure(what, **context))
        return fut

    def _put(self, what: str, s: Session, *, insert: bool = False) -> Session:
        sid = s.session_id
        if s.closed:
            self._open.pop(sid, None)
        else:
            self._open[sid] = s
        self._queued[sid] = s

        def row(conn: sqlite3.Connection) -> None:
            if insert:  # a second open session on the connector is refused, never replaced
                conn.execute(f"INSERT INTO sessions({COLUMNS}) VALUES ({insert_marks()})",
                             to_row(s))
            else:
                store_row(conn, s)

        def committed(_: Future[None]) -> None:
            if self._queued.get(sid) is s:
                self._queued.pop(sid, None)
        self._write(what, row, session_id=sid).add_done_callback(committed)
        return s

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
        if self.open_on(connector) is not None:
            raise ValueError(f"connector {connector} already has an open session")
        session = Session(
            session_id=session_id or str(uuid.uuid4()), connector=connector,
            plug_in_at=plug_in_at, meter_start_wh=meter_wh, id_tag=id_tag, offline=offline,
            last_seen_at=plug_in_at, last_meter_wh=meter_wh,
        )
        return self._put("opening session", session, insert=True)

    def _current(self, session_id: str) -> Session:
        s = self._open.get(session_id)
        if s is None:
            if self.get(session_id).closed:  # KeyError when there is no such session
                raise ValueError(f"session {session_id} is closed")
            raise KeyError(f"no open session {session_id!r}")
        return s

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
        s = self._current(session_id)
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
            entries, merged = bound_curtailments((*kept, curtailment), s.curtailments_merged)
            s = replace(s, curtailments=entries, curtailments_merged=merged)
        if random_delay is not None:
            delays, folded = bound_delays((*s.random_delays, random_delay),
                                          s.random_delays_merged, lambda d: d.s)
            s = replace(s, random_delays=delays, random_delays_merged=folded)
        if idle_occupancy_s is not None:
            s = replace(s, idle_occupancy_s=idle_occupancy_s)
        if id_tag is not None:
            s = replace(s, id_tag=id_tag)
        return self._put("updating session", s)

    def close(
        self, session_id: str, plug_out_at: float, meter_stop_wh: int, stop_reason: str
    ) -> dict[str, Any]:
        """Close the session and return its ``sessionEnded`` record."""
        s = self._current(session_id)
        s = closed_session(s, plug_out_at, meter_stop_wh, stop_reason,
                           charge_end_at=plug_out_at if s.charging else s.charge_end_at)
        return self._put("closing session", s).record()

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
        Waits for the writer: call it at start-up, off the event loop.
        """
        out: list[RecoveredSession] = []
        for s in sorted(self._open.values(), key=lambda s: s.plug_in_at):
            reading = meter_wh.get(s.connector)
            stop = s.last_meter_wh if reading is None else max(reading, s.last_meter_wh)
            end_charge = s.last_seen_at if s.charging else s.charge_end_at
            if s.connector in plugged:
                s = replace(s, charge_end_at=end_charge, charging=False, last_meter_wh=stop,
                            last_seen_at=max(s.last_seen_at, now))
                out.append(RecoveredSession(s, resumed=True))
            else:
                s = closed_session(s, s.last_seen_at, stop, POWER_LOSS, charge_end_at=end_charge)
                out.append(RecoveredSession(s, resumed=False))
        for r in out:
            self._put("recovering sessions", r.session)
        self._db.write(lambda: None)  # durable before anything is reported about them
        return out

    def mark_local(self, session_id: str) -> None:
        """Closed without an aggregator: kept for ``evse-agent sessions``, never reported."""
        self._put("marking session local", replace(self.get(session_id), local_only=True))

    def mark_reported(self, session_id: str, seq: int) -> None:
        """The sessionEnded record was journaled as ``seq``."""
        self._put("marking session reported", replace(self.get(session_id), reported_seq=seq))

    def prune(self, before: float) -> int:
        """Forget reported sessions that ended before ``before`` (waits for the writer)."""
        def job() -> int:
            with self._db.transaction("pruning sessions") as conn:
                return int(conn.execute("DELETE FROM sessions WHERE reported_seq IS NOT NULL"
                                        " AND plug_out_at < ?", (before,)).rowcount)
        return self._db.write(job)

    def flush(self) -> None:
        """Wait until every queued change is committed (tools and tests; not on the loop)."""
        self._db.write(lambda: None)

    # -- reading (committed rows; the open sessions from memory) ---------------------------

    def sessions(self, *, since: float | None = None,
                 connector: int | None = None) -> list[Session]:
        """Sessions still open or ended at or after ``since``, oldest first."""
        sql, args = listing_query(since, connector)
        return self._overlay(sql, args, lambda s: (
            (connector is None or s.connector == connector)
            and (since is None or s.plug_out_at is None or s.plug_out_at >= since)))

    def unreported(self) -> list[Session]:
        """Closed sessions whose record has not been journaled yet (journal them again)."""
        return self._overlay(f"SELECT {COLUMNS} FROM sessions WHERE stop_reason IS NOT NULL"
                             " AND reported_seq IS NULL AND local_only = 0", (), lambda s: (
            s.closed and s.reported_seq is None and not s.local_only))

    def get(self, session_id: str) -> Session:
        s = self._open.get(session_id) or self._queued.get(session_id)
        if s is not None:
            return s
        rows = self._db.query(f"SELECT {COLUMNS} FROM sessions WHERE session_id = ?",
                              (session_id,))
        return from_row(rows[0] if rows else None, session_id)

    def open_on(self, connector: int) -> Session | None:
        return next((s for s in self._open.values() if s.connector == connector), None)

    def recent(self, limit: int) -> list[Session]:
        """The latest sessions (open or closed), newest first: the status page's list."""
        return self._overlay(f"SELECT {COLUMNS} FROM sessions ORDER BY plug_in_at DESC LIMIT ?",
                             (limit,), lambda s: True)[::-1][:limit]

    def _overlay(self, sql: str, args: tuple[Any, ...], keep: Callable[[Session], bool]
                 ) -> list[Session]:
        """Committed rows, replaced by what is queued or open in memory; oldest first. The
        queue is read before the database: a session leaves it only after its commit, so one
        committed between the two reads is in the rows (the other order lost it from both)."""
        queued = dict(self._queued)
        found = {s.session_id: s for s in (from_row(r, "") for r in self._db.query(sql, args))}
        found.update(queued)
        found.update(self._open)
        return sorted((s for s in found.values() if keep(s)), key=lambda s: s.plug_in_at)

    def close_db(self) -> None:
        self._db.close()


def read_sessions(path: Path, *, since: float | None = None,
                  connector: int | None = None) -> list[Session]:
    """The sessions of a ledger no agent is running on, read without writing anything (no
    -wal/-shm created, no schema change: ``evse-agent sessions`` with the agent stopped).

    An agent that stopped without a checkpoint (SIGKILL, power loss, or simply never closing its
    connection) leaves its latest commits in ``sessions.db-wal``. ``immutable=1`` would ignore
    that file and miss exactly the newest sessions, so a non-empty WAL is read read-only instead.
    """
    if not path.exists():
        raise LedgerError("no session ledger", path=str(path), cause="io")
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() and wal.stat().st_size > 0 else "immutable=1"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as exc:
        raise to_store_error(exc, "reading sessions", path, error=LedgerError) from exc
    try:
        have = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
        if any(name not in have for name, _ in ADDED_COLUMNS):
            raise LedgerError("the ledger predates this agent version: start the agent once",
                              path=str(path), cause="schema")
        sql, args = listing_query(since, connector)
        return [from_row(r, "") for r in conn.execute(sql, args).fetchall()]
    except sqlite3.Error as exc:
        raise to_store_error(exc, "reading sessions", path, error=LedgerError) from exc
    finally:
        conn.close()
