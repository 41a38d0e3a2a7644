"""Shared SQLite plumbing for the agent's durable stores, and the command store.

Every store (journal, command store, session ledger) needs the same durability settings, the same
conversion of ``sqlite3`` errors into :class:`JournalError`, and the same answer to a corrupt file
at start-up (move it aside, start fresh, say so). Keeping that here keeps the stores small.

Durability choice: WAL with ``synchronous=FULL``. In WAL mode ``NORMAL`` keeps the file consistent
but may roll back the last commits on power loss; a journal row that was published and then rolled
back would have its ``seq`` reissued to a different message, which a consumer deduplicating on
(deviceId, seq) would silently discard. ``FULL`` fsyncs the WAL at every commit, so a row returned
to the caller survives power loss. Cost: one fsync per write transaction.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import JournalError

if TYPE_CHECKING:  # the API models cost ~1.5 MB: load them with the first command, not at start
    from agent.api.models import Reply

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_CAUSES: dict[int, str] = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_CORRUPT: "corrupt",
    sqlite3.SQLITE_NOTADB: "corrupt",
    sqlite3.SQLITE_READONLY: "readonly",
    sqlite3.SQLITE_IOERR: "io",
    sqlite3.SQLITE_CANTOPEN: "io",
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_LOCKED: "busy",
}

Row = tuple[Any, ...]
# Page cache per connection (SQLite's default is 2000 KiB). The start-up quick_check reads every
# page, so a grown journal would fill the default cache at once and keep it for the process's life
# (+1.5 MB RSS measured with a 100k-row backlog); 512 KiB did not slow the backlog drain.
CACHE_KIB = 512


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds, e.g. ``2026-11-26T08:00:00.000Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_cause(exc: sqlite3.Error) -> str:
    """A stable word for what went wrong, kept in ``JournalError.context['cause']``."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "sqlite"
    return _CAUSES.get(code & 0xFF, "sqlite")


def to_journal_error(exc: sqlite3.Error, what: str, path: Path, **context: object) -> JournalError:
    cause = error_cause(exc)
    hint = {
        "disk_full": "database or disk is full; nothing more can be stored until space is freed",
        "corrupt": "database file is corrupt; it is moved aside at the next start",
        "readonly": "state directory is read-only",
        "busy": "database is locked by another process",
    }.get(cause, str(exc))
    return JournalError(f"{what} failed: {hint}", cause=cause, path=str(path), **context)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` so that a crash leaves either the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A corrupt database found at start-up and renamed; ``salvaged`` is what could be read."""

    moved_to: Path
    reason: str
    salvaged: int | None


class _CorruptError(Exception):
    pass


class Database:
    """One SQLite file with the agent's settings; thread-safe (the async shell uses to_thread)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: str,
        salvage_sql: str | None = None,
        hard_limit_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.quarantine: Quarantine | None = None
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError("cannot create state directory", path=str(self.path)) from exc
        self.fresh = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self._conn = self._open(schema)
        except _CorruptError as corrupt:
            self.quarantine = self._move_aside(str(corrupt), salvage_sql)
            self.fresh = True
            try:
                self._conn = self._open(schema)
            except _CorruptError as again:
                raise JournalError("fresh database is corrupt", path=str(self.path)) from again
        if hard_limit_bytes is not None:
            page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            self._conn.execute(f"PRAGMA max_page_count={max(1, hard_limit_bytes // page_size)}")

    def _open(self, schema: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise to_journal_error(exc, "opening database", self.path) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=1048576")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise _CorruptError("quick_check: " + "; ".join(str(r[0]) for r in check[:3]))
            conn.executescript(schema)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPT_CODES:
                raise _CorruptError(str(exc)) from exc
            raise to_journal_error(exc, "opening database", self.path) from exc
        except _CorruptError:
            conn.close()
            raise
        return conn

    def _move_aside(self, reason: str, salvage_sql: str | None) -> Quarantine:
        salvaged = _salvage(self.path, salvage_sql) if salvage_sql else None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, Path(f"{target}{suffix}"))
        except OSError as exc:
            raise JournalError("cannot move corrupt database aside", path=str(self.path)) from exc
        return Quarantine(moved_to=target, reason=reason, salvaged=salvaged)

    @contextmanager
    def transaction(
        self, what: str, *, durable: bool = True, **context: object
    ) -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE); any sqlite3 error rolls back.

        ``durable=False`` skips the commit fsync (WAL stays consistent; the commit becomes durable
        with the next durable one). For writes whose loss is harmless: marking rows sent (a lost
        mark means a resend, which consumers dedupe) and dropping/pruning rows.
        """
        with self._lock:
            try:
                if not durable:
                    self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._restore_sync(durable)
                raise to_journal_error(exc, what, self.path, **context) from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise to_journal_error(exc, what, self.path, **context) from exc
            except BaseException:
                self._rollback()
                raise
            finally:
                self._restore_sync(durable)

    def _restore_sync(self, durable: bool) -> None:
        if not durable:
            self._conn.execute("PRAGMA synchronous=FULL")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            # SQLite may already have rolled back (e.g. after SQLITE_FULL): nothing more to undo
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def query(self, sql: str, params: tuple[Any, ...] = (), what: str = "reading") -> list[Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise to_journal_error(exc, what, self.path) from exc

    def used_bytes(self) -> int:
        """Bytes held by live pages (freed pages are reused, so this is what the budget counts)."""
        rows = self.query(
            "SELECT page_count - freelist_count, page_size"
            " FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
        )
        return int(rows[0][0]) * int(rows[0][1])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _salvage(path: Path, sql: str | None) -> int | None:
    """Best effort: one integer from a corrupt file (e.g. the seq high-water mark)."""
    if sql is None:
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute(sql).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row and row[0] is not None else None


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
    """

    def __init__(
        self, path: str | os.PathLike[str], *, retention_s: float = DEFAULT_COMMAND_RETENTION_S
    ) -> None:
        self._db = Database(path, schema=_COMMAND_SCHEMA)
        self.quarantine = self._db.quarantine
        self.retention_s = retention_s

    def get_reply(self, issuer: str, command_id: str) -> tuple[str, Reply] | None:
        rows = self._db.query(
            "SELECT hash, reply FROM command_ids WHERE issuer = ? AND id = ?", (issuer, command_id)
        )
        if not rows:
            return None
        from agent.api.models import Reply

        return str(rows[0][0]), Reply.model_validate_json(rows[0][1])

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
        with self._db.transaction("recording command", issuer=issuer, id=command_id) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO command_ids VALUES (?, ?, ?, ?, ?, ?)",
                (issuer, command_id, content_hash, reply.model_dump_json(), expiry, time.time()),
            )
            if seq is not None:
                _raise_mark(conn, issuer, seq)

    def high_water(self, issuer: str) -> int | None:
        rows = self._db.query("SELECT seq FROM issuer_high_water WHERE issuer = ?", (issuer,))
        return int(rows[0][0]) if rows else None

    def set_high_water(self, issuer: str, seq: int) -> None:
        with self._db.transaction("raising issuer high-water mark", issuer=issuer) as conn:
            _raise_mark(conn, issuer, seq)

    def prune_expired(self, now: float) -> int:
        """Forget ids past ``expiresAt`` (or, without one, older than the retention)."""
        with self._db.transaction("pruning expired command ids", durable=False) as conn:
            return conn.execute(
                "DELETE FROM command_ids WHERE expires_at < ?"
                " OR (expires_at IS NULL AND recorded_at < ?)", (now, now - self.retention_s)
            ).rowcount

    def close(self) -> None:
        self._db.close()


def _raise_mark(conn: sqlite3.Connection, issuer: str, seq: int) -> None:
    conn.execute(
        "INSERT INTO issuer_high_water VALUES (?, ?)"
        " ON CONFLICT(issuer) DO UPDATE SET seq = max(seq, excluded.seq)",
        (issuer, seq),
    )
