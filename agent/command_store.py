"""The command store: persisted command dedupe and per-issuer seq marks, on ``agent.store``.

Its own small SQLite file, so the journal's size budget and corruption recovery never touch it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING

from agent.errors import CommandStoreError
from agent.store import Database
from agent.writer import StoreWriter

if TYPE_CHECKING:  # the API models cost ~1.5 MB: load them with the first command, not at start
    from agent.api.models import Reply

_COMMAND_SCHEMA = """
CREATE TABLE IF NOT EXISTS command_ids(
    issuer TEXT NOT NULL, id TEXT NOT NULL, hash TEXT NOT NULL, reply TEXT NOT NULL,
    expires_at REAL, recorded_at REAL NOT NULL, PRIMARY KEY (issuer, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS issuer_high_water(
    issuer TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""
DEFAULT_COMMAND_RETENTION_S = 30 * 86400.0


class CommandStore:
    """Persisted command dedupe (issuer, id -> content hash + reply) and per-issuer seq marks.

    Implements ``agent.api.envelope.CommandStore``. Its own small file, so the journal's size
    budget and corruption recovery never touch it. High-water marks only rise. A corrupt file is
    moved aside and the marks restart empty (the commands' ``expiresAt`` bounds what could then be
    replayed); ``quarantine`` says so.

    Writes go to the store writer and return at once; what is queued is answered from memory
    until it is committed. ``await durable()`` before a reply goes out: the reply is only sent
    once what it promises is on disk (a failure there raises, and no reply is sent).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, retention_s: float = DEFAULT_COMMAND_RETENTION_S,
        writer: StoreWriter | None = None,
    ) -> None:
        self._db = Database(path, schema=_COMMAND_SCHEMA, error=CommandStoreError, writer=writer)
        self.quarantine = self._db.quarantine
        self.retention_s = retention_s
        self._queued: dict[tuple[str, str], tuple[str, str]] = {}  # not yet committed
        self._queued_marks: dict[str, int] = {}
        self._failed: BaseException | None = None

    def get_reply(self, issuer: str, command_id: str) -> tuple[str, Reply] | None:
        queued = self._queued.get((issuer, command_id))
        if queued is not None:
            found: tuple[str, str] | None = queued
        else:
            rows = self._db.query("SELECT hash, reply FROM command_ids WHERE issuer = ? AND id = ?",
                                  (issuer, command_id))
            found = (str(rows[0][0]), str(rows[0][1])) if rows else None
        if found is None:
            return None
        from agent.api.models import Reply

        return found[0], Reply.model_validate_json(found[1])

    def record(
        self,
        issuer: str,
        command_id: str,
        content_hash: str,
        reply: Reply,
        *,
        expires_at: datetime | None,
        seq: int | None = None,
    ) -> None:
        """Remember the reply; with ``seq``, raise the issuer's mark in the same transaction."""
        expiry = None if expires_at is None else expires_at.timestamp()
        body, key = reply.model_dump_json(), (issuer, command_id)
        self._queued[key] = (content_hash, body)
        if seq is not None:
            self._queue_mark(issuer, seq)

        def write() -> None:
            with self._db.transaction("recording command", issuer=issuer, id=command_id) as conn:
                conn.execute("INSERT OR REPLACE INTO command_ids VALUES (?, ?, ?, ?, ?, ?)",
                             (issuer, command_id, content_hash, body, expiry, time.time()))
                if seq is not None:
                    _raise_mark(conn, issuer, seq)
        self._track(self._db.submit(write), key, issuer if seq is not None else None)

    def high_water(self, issuer: str) -> int | None:
        # The queued mark first: it leaves the queue only after its commit, so a mark not queued
        # now is in the database for the read below. Read the other way round, a commit between
        # the two reads hid the mark from both (a replayed seq would pass).
        queued = self._queued_marks.get(issuer)
        rows = self._db.query("SELECT seq FROM issuer_high_water WHERE issuer = ?", (issuer,))
        marks = [int(rows[0][0])] if rows else []
        if queued is not None:
            marks.append(queued)
        return max(marks) if marks else None

    def set_high_water(self, issuer: str, seq: int) -> None:
        self._queue_mark(issuer, seq)

        def write() -> None:
            with self._db.transaction("raising issuer high-water mark", issuer=issuer) as conn:
                _raise_mark(conn, issuer, seq)
        self._track(self._db.submit(write), None, issuer)

    async def durable(self) -> None:
        """Every write queued so far is committed; raises the first failure since the last call."""
        await self._db.writer.flushed()
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def prune_expired(self, now: float) -> int:
        """Forget ids past ``expiresAt`` (or, without one, older than the retention)."""
        def write() -> int:
            with self._db.transaction("pruning expired command ids", durable=False) as conn:
                return int(conn.execute(
                    "DELETE FROM command_ids WHERE expires_at < ?"
                    " OR (expires_at IS NULL AND recorded_at < ?)", (now, now - self.retention_s)
                ).rowcount)
        return self._db.write(write)

    def close(self) -> None:
        self._db.close()

    def _queue_mark(self, issuer: str, seq: int) -> None:
        self._queued_marks[issuer] = max(seq, self._queued_marks.get(issuer, seq))

    def _track(self, fut: Future[None], key: tuple[str, str] | None, issuer: str | None) -> None:
        """Once committed (or failed) the database answers again; a failure is kept for
        ``durable``. Runs on the writer's thread: dict updates are single operations."""
        mark = self._queued_marks.get(issuer) if issuer is not None else None
        queued = self._queued.get(key) if key is not None else None

        def done(f: Future[None]) -> None:
            if key is not None and self._queued.get(key) is queued:
                self._queued.pop(key, None)
            if issuer is not None and self._queued_marks.get(issuer) == mark:
                self._queued_marks.pop(issuer, None)
            exc = f.exception()
            if exc is not None and self._failed is None:
                self._failed = exc
        fut.add_done_callback(done)


def _raise_mark(conn: sqlite3.Connection, issuer: str, seq: int) -> None:
    conn.execute(
        "INSERT INTO issuer_high_water VALUES (?, ?)"
        " ON CONFLICT(issuer) DO UPDATE SET seq = max(seq, excluded.seq)",
        (issuer, seq),
    )
