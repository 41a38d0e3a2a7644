"""The outbox journal: every ``evt`` and ``tel`` is committed here before it is published.

Why: the API promises that nothing recorded is lost and that the journaled stream is numbered by
one device-wide ``seq`` without gaps (mqtt-api.md, "Delivery"). A row is committed (fsynced, see
``agent.store``) before ``append`` returns, so whatever the caller publishes exists on disk.

Off the loop: every write runs on the store writer's thread (``agent.writer``). ``submit`` queues
an append and returns a future; the seq is allocated when the row is committed, so a row that
could not be stored never takes a seq (no gap), and ``last_seq`` and ``pending`` only ever show
committed rows: whatever the outbox publishes is on disk. ``append`` is the same, waiting (tools,
tests, start-up).

Seq continuity: the high-water mark lives in the ``meta`` table (so deleting rows never lowers it)
and a *reserved ceiling* is mirrored in a sidecar file ``<db>.seq`` written atomically before any
seq above it is issued (in blocks of ``SEQ_BLOCK``, so one fsync per block, not per row). If the
database is found corrupt or missing at start-up, the fresh one continues above
max(sidecar ceiling, high-water salvaged from the corrupt file): a seq is never reused for another
message; the jump is an honest gap that tells consumers data was lost.

Draining without re-reading rows in flight (the shell's loop)::

    upto = journal.last_seq              # on (re)connect: older unsent rows are the backlog
    cursor = None
    while batch := journal.pending(100, after_seq=cursor, through_seq=upto):
        publish(batch); cursor = batch[-1].seq
    # live: rows committed after upto (seq > upto) are read as they come, never in the backlog

Space: over ``budget_bytes`` the oldest telemetry is dropped (sent first, then unsent; counted),
never events. On a real "disk full" sent events are pruned early (oldest first, counted) to make
room for an unsent one; only when nothing can be freed does ``append`` raise ``JournalError``.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from agent.errors import JournalError
from agent.store import Database, Quarantine, atomic_write, rfc3339
from agent.writer import StoreWriter, log_failure

Kind = Literal["evt", "tel"]
KINDS: frozenset[str] = frozenset(get_args(Kind))
RESERVED_KEYS = frozenset({"v", "deviceId", "bootId", "seq", "ts"})
SEQ_BLOCK = 1024
PRUNE_EVERY = 1000
DROP_BATCH = 64
DEFAULT_RETENTION_S = 30 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('seq_hw', 0), ('tel_dropped_total', 0),
    ('tel_dropped_unreported', 0), ('evt_pruned_early_total', 0);
CREATE TABLE IF NOT EXISTS entries(
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('evt', 'tel')),
    ts REAL NOT NULL, sent INTEGER NOT NULL DEFAULT 0, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS entries_unsent ON entries(seq) WHERE sent = 0;
CREATE INDEX IF NOT EXISTS entries_by_kind ON entries(kind, sent, seq);
"""
_SALVAGE_SQL = (
    "SELECT max(v) FROM (SELECT value AS v FROM meta WHERE key = 'seq_hw'"
    " UNION ALL SELECT max(seq) FROM entries)"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled message: publish ``payload`` to ``{root}/{id}/{topic_suffix}``."""

    seq: int
    kind: Kind
    ts: float
    payload: bytes
    sent: bool = False

    @property
    def topic_suffix(self) -> str:
        return self.kind


@dataclass(frozen=True, slots=True)
class JournalStats:
    last_seq: int
    pending_evt: int
    pending_tel: int
    oldest_pending_ts: float | None
    held_sent_evt: int
    used_bytes: int
    budget_bytes: int
    over_budget: bool
    tel_dropped_total: int
    evt_pruned_early_total: int

    @property
    def pending(self) -> int:
        return self.pending_evt + self.pending_tel


@dataclass(frozen=True, slots=True)
class LinkReport:
    """Counts for the ``linkRestored`` event (``buffered`` = unsent rows at reconnection)."""

    buffered: int
    tel_dropped: int
    oldest_pending_age_s: float | None


class Journal:
    """Durable, numbered outbox of ``evt``/``tel`` messages; writes run on the store writer."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device_id: str,
        budget_bytes: int,
        retention_s: float = DEFAULT_RETENTION_S,
        boot_id: str | None = None,
        hard_limit_bytes: int | None = None,
        writer: StoreWriter | None = None,
    ) -> None:
        self.path = Path(path)
        self.device_id = device_id
        self.boot_id = boot_id or str(uuid.uuid4())
        self.budget_bytes = budget_bytes
        self.retention_s = retention_s
        self._sidecar = self.path.with_name(self.path.name + ".seq")
        ceiling = self._read_sidecar()
        self._db = Database(
            self.path, schema=_SCHEMA, salvage_sql=_SALVAGE_SQL, hard_limit_bytes=hard_limit_bytes,
            error=JournalError, writer=writer,
        )
        self.writer = self._db.writer
        self.quarantine: Quarantine | None = self._db.quarantine
        rows = self._db.query(
            "SELECT max((SELECT value FROM meta WHERE key = 'seq_hw'),"
            " coalesce((SELECT max(seq) FROM entries), 0))"
        )
        high_water = int(rows[0][0])
        if self._db.fresh:
            salvaged = self.quarantine.salvaged if self.quarantine else None
            high_water = max(high_water, ceiling or 0, salvaged or 0)
            self._db.write(lambda: self._set_floor(high_water))
        self._last_seq = high_water
        self._ceiling = ceiling if ceiling is not None and ceiling >= high_water else high_water
        self._seq_lock = threading.Lock()
        self._appends_since_prune = 0
        self._tel_rejected = 0
        self._over_budget = False

    def _set_floor(self, high_water: int) -> None:
        with self._db.transaction("setting seq floor") as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'seq_hw'", (high_water,))

    # -- writing -----------------------------------------------------------------------------

    def submit(self, kind: Kind, body: Mapping[str, Any], ts: float) -> Future[Entry]:
        """Queue one message; the future gives the committed entry (or the JournalError)."""
        _check(kind, body)
        return self._db.submit(lambda: self.commit(kind, body, ts))

    def append(self, kind: Kind, body: Mapping[str, Any], ts: float) -> Entry:
        """Commit one message and return it, waiting for the writer (not on the event loop)."""
        _check(kind, body)
        return self._db.write(lambda: self.commit(kind, body, ts))

    def commit(self, kind: Kind, body: Mapping[str, Any], ts: float) -> Entry:
        """On the writer's thread: allocate the seq, commit, enforce the budget."""
        with self._seq_lock:  # seq allocation and insert are one step, whatever the thread
            seq = self._last_seq + 1
            if seq > self._ceiling:
                self._reserve(seq + SEQ_BLOCK - 1)
            message = {"v": 1, "deviceId": self.device_id, "bootId": self.boot_id, "seq": seq,
                       "ts": rfc3339(ts), **body}
            payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
            self._insert(Entry(seq, kind, ts, payload))
            self._last_seq = seq
        self._appends_since_prune += 1
        if self._appends_since_prune >= PRUNE_EVERY:
            self.prune(ts)
        self._enforce_budget()
        return Entry(seq, kind, ts, payload)

    def _insert(self, entry: Entry) -> None:
        while True:
            try:
                with self._db.transaction("journal append", seq=entry.seq, kind=entry.kind) as c:
                    c.execute(
                        "INSERT INTO entries(seq, kind, ts, payload) VALUES (?, ?, ?, ?)",
                        (entry.seq, entry.kind, entry.ts, entry.payload),
                    )
                    c.execute("UPDATE meta SET value = ? WHERE key = 'seq_hw'", (entry.seq,))
                return
            except JournalError as exc:
                if exc.context.get("cause") != "disk_full":
                    raise
                # Older telemetry goes first; then sent events (already delivered, kept only for
                # resync) give way, so a drained journal takes new telemetry again.
                if self._drop_telemetry() or self._prune_sent_early():
                    continue
                if entry.kind == "tel":
                    self._tel_rejected += 1
                what = (
                    "telemetry not stored (counted as dropped)" if entry.kind == "tel"
                    else "event not stored; only unsent events are left"
                )
                raise JournalError(
                    f"journal disk full: {what}; previously committed rows are intact",
                    cause="disk_full", seq=entry.seq, kind=entry.kind, path=str(self.path),
                ) from exc

    def mark_sent(self, seq: int) -> Future[None]:
        return self.mark_sent_many((seq,))

    def mark_sent_many(self, seqs: Iterable[int]) -> Future[None]:
        """On PUBACK: telemetry is deleted, events are kept (sent) for ``resync``. Queued; a
        failure is logged (the rows stay unsent and go out again: duplicates only)."""
        params = [(s,) for s in seqs]

        def write() -> None:
            with self._db.transaction("marking sent", durable=False) as conn:
                conn.executemany("DELETE FROM entries WHERE seq = ? AND kind = 'tel'", params)
                conn.executemany("UPDATE entries SET sent = 1 WHERE seq = ? AND sent = 0", params)
        fut = self._db.submit(write)
        fut.add_done_callback(log_failure("journal mark sent", rows=len(params)))
        return fut

    def prune(self, now: float) -> int:
        """Delete sent events older than the retention; returns how many."""
        def write() -> int:
            self._appends_since_prune = 0
            with self._db.transaction("pruning sent events", durable=False) as conn:
                return int(conn.execute(
                    "DELETE FROM entries WHERE sent = 1 AND ts < ?", (now - self.retention_s,)
                ).rowcount)
        return self._db.write(write)

    # -- space -------------------------------------------------------------------------------

    def _enforce_budget(self) -> None:
        if self._db.used_bytes() <= self.budget_bytes:
            self._over_budget = False
            return
        target = self.budget_bytes * 15 // 16
        while self._db.used_bytes() > target:
            if not self._drop_telemetry():
                self._over_budget = True  # only events left: keep them (soft limit)
                return
        self._over_budget = False

    def _drop_telemetry(self) -> int:
        """Drop the oldest telemetry (sent before unsent), counted; 0 when none is left."""
        with self._db.transaction("dropping telemetry", durable=False) as conn:
            dropped = conn.execute(
                "DELETE FROM entries WHERE seq IN (SELECT seq FROM entries WHERE kind = 'tel'"
                " ORDER BY sent DESC, seq LIMIT ?)", (DROP_BATCH,)
            ).rowcount
            if dropped:
                conn.execute(
                    "UPDATE meta SET value = value + ?"
                    " WHERE key IN ('tel_dropped_total', 'tel_dropped_unreported')", (dropped,)
                )
        return dropped

    def _prune_sent_early(self) -> int:
        """Disk full: sent events give way to an unsent one (oldest first, counted)."""
        with self._db.transaction("pruning sent events early", durable=False) as conn:
            pruned = conn.execute(
                "DELETE FROM entries WHERE seq IN (SELECT seq FROM entries WHERE kind = 'evt'"
                " AND sent = 1 ORDER BY seq LIMIT ?)", (DROP_BATCH,)
            ).rowcount
            if pruned:
                conn.execute(
                    "UPDATE meta SET value = value + ? WHERE key = 'evt_pruned_early_total'",
                    (pruned,),
                )
        return pruned

    # -- reading -----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The last seq issued (``atSeq`` of status/state/replies)."""
        return self._last_seq

    def pending(
        self, limit: int, after_seq: int | None = None, through_seq: int | None = None
    ) -> list[Entry]:
        """Unsent rows with after_seq < seq <= through_seq, oldest first."""
        rows = self._db.query(
            "SELECT seq, kind, ts, payload, sent FROM entries WHERE sent = 0 AND seq > ?"
            " AND seq <= ? ORDER BY seq LIMIT ?",
            (after_seq or 0, self._last_seq if through_seq is None else through_seq, limit),
        )
        return [_entry(r) for r in rows]

    def resync(self, from_seq: int, limit: int | None = None) -> list[Entry]:
        """Every event still held (sent or not) with seq >= from_seq, oldest first."""
        rows = self._db.query(
            "SELECT seq, kind, ts, payload, sent FROM entries WHERE kind = 'evt' AND seq >= ?"
            " ORDER BY seq LIMIT ?", (from_seq, -1 if limit is None else limit),
        )
        return [_entry(r) for r in rows]

    def stats(self) -> JournalStats:
        counts: dict[str, int] = dict(self._db.query("SELECT key, value FROM meta"))
        rows = self._db.query(
            "SELECT sum(kind = 'evt' AND sent = 0), sum(kind = 'tel' AND sent = 0),"
            " min(CASE WHEN sent = 0 THEN ts END), sum(kind = 'evt' AND sent = 1) FROM entries"
        )
        pending_evt, pending_tel, oldest, held = rows[0]
        return JournalStats(
            last_seq=self._last_seq,
            pending_evt=int(pending_evt or 0),
            pending_tel=int(pending_tel or 0),
            oldest_pending_ts=None if oldest is None else float(oldest),
            held_sent_evt=int(held or 0),
            used_bytes=self._db.used_bytes(),
            budget_bytes=self.budget_bytes,
            over_budget=self._over_budget,
            tel_dropped_total=int(counts["tel_dropped_total"]) + self._tel_rejected,
            evt_pruned_early_total=int(counts["evt_pruned_early_total"]),
        )

    def take_link_report(self, now: float) -> LinkReport:
        """Counts for ``linkRestored``; resets the dropped-since-last-report counter (on the
        writer: call it from a writer job, e.g. a lazy event body, not from the loop)."""
        return self._db.write(lambda: self._take_link_report(now))

    def _take_link_report(self, now: float) -> LinkReport:
        with self._db.transaction("taking link report") as conn:
            dropped = int(conn.execute(
                "SELECT value FROM meta WHERE key = 'tel_dropped_unreported'").fetchone()[0])
            conn.execute("UPDATE meta SET value = 0 WHERE key = 'tel_dropped_unreported'")
            buffered, oldest = conn.execute(
                "SELECT count(*), min(ts) FROM entries WHERE sent = 0").fetchone()
        dropped += self._tel_rejected
        self._tel_rejected = 0
        age = None if oldest is None else max(0.0, now - float(oldest))
        return LinkReport(buffered=int(buffered), tel_dropped=dropped, oldest_pending_age_s=age)

    # -- seq sidecar -------------------------------------------------------------------------

    def _read_sidecar(self) -> int | None:
        try:
            return int(json.loads(self._sidecar.read_bytes())["seqCeiling"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable mirror: the database's own mark is used (and rewritten)

    def _reserve(self, ceiling: int) -> None:
        """Persist the ceiling before any seq above the old one can exist."""
        data = json.dumps({"seqCeiling": ceiling, "deviceId": self.device_id, "at": time.time()})
        try:
            atomic_write(self._sidecar, data.encode())
        except OSError as exc:
            cause = "disk_full" if exc.errno == errno.ENOSPC else "io"
            raise JournalError(
                "cannot write seq sidecar", cause=cause, path=str(self._sidecar)
            ) from exc
        self._ceiling = ceiling

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check(kind: str, body: Mapping[str, Any]) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'evt' or 'tel', not {kind!r}")
    clash = RESERVED_KEYS & body.keys()
    if clash:
        raise ValueError(f"body may not set envelope fields {sorted(clash)}")


def _entry(row: tuple[Any, ...]) -> Entry:
    seq, kind, ts, payload, sent = row
    return Entry(int(seq), kind, float(ts), bytes(payload), bool(sent))
