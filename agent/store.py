"""Shared SQLite plumbing for the agent's durable stores (journal, ledger, command store).

Every store (journal, command store, session ledger) needs the same durability settings, the same
conversion of ``sqlite3`` errors into its own :class:`StoreError` (``JournalError``,
``LedgerError``, ``CommandStoreError``), and the same answer to a corrupt file at start-up (move
it aside, start fresh, say so). Keeping that here keeps the stores small.

Durability choice: WAL with ``synchronous=FULL``. In WAL mode ``NORMAL`` keeps the file consistent
but may roll back the last commits on power loss; a journal row that was published and then rolled
back would have its ``seq`` reissued to a different message, which a consumer deduplicating on
(deviceId, seq) would silently discard. ``FULL`` fsyncs the WAL at every commit, so a row returned
to the caller survives power loss. Cost: one fsync per write transaction, paid on the store
writer's thread (``agent.writer``), never on the event loop.

Two connections per file: the writer's (every write transaction, only on the writer thread) and a
reader's (any thread; WAL readers see the last commit and never wait for the writer's fsync).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import StoreError
from agent.writer import StoreWriter, shared_writer

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
T = TypeVar("T")
# Page cache per connection (SQLite's default is 2000 KiB). The start-up quick_check reads every
# page, so a grown journal would fill the default cache at once and keep it for the process's life
# (+1.5 MB RSS measured with a 100k-row backlog); 512 KiB did not slow the backlog drain.
CACHE_KIB = 512


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds, e.g. ``2026-11-26T08:00:00.000Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_cause(exc: sqlite3.Error) -> str:
    """A stable word for what went wrong, kept in ``StoreError.context['cause']``."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "sqlite"
    return _CAUSES.get(code & 0xFF, "sqlite")


def to_store_error(exc: sqlite3.Error, what: str, path: Path, *,
                   error: type[StoreError] = StoreError, **context: object) -> StoreError:
    cause = error_cause(exc)
    hint = {
        "disk_full": "database or disk is full; nothing more can be stored until space is freed",
        "corrupt": "database file is corrupt; it is moved aside at the next start",
        "readonly": "state directory is read-only",
        "busy": "database is locked by another process",
    }.get(cause, str(exc))
    return error(f"{what} failed: {hint}", cause=cause, path=str(path), **context)


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
    """One SQLite file with the agent's settings; writes run on the store writer's thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: str,
        salvage_sql: str | None = None,
        hard_limit_bytes: int | None = None,
        error: type[StoreError] = StoreError,
        writer: StoreWriter | None = None,
    ) -> None:
        self.path = Path(path)
        self.error = error
        self.writer = writer or shared_writer()
        self.quarantine: Quarantine | None = None
        self._rlock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error("cannot create state directory", path=str(self.path)) from exc
        self.fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._conn = self.writer.call(lambda: self._open_or_move_aside(schema, salvage_sql))
        if hard_limit_bytes is not None:
            page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            self._conn.execute(f"PRAGMA max_page_count={max(1, hard_limit_bytes // page_size)}")
        self._reader = self._conn if str(path) == ":memory:" else self._open_reader()

    def _open_or_move_aside(self, schema: str, salvage_sql: str | None) -> sqlite3.Connection:
        try:
            return self._open(schema)
        except _CorruptError as corrupt:
            self.quarantine = self._move_aside(str(corrupt), salvage_sql)
            self.fresh = True
            try:
                return self._open(schema)
            except _CorruptError as again:
                raise self.error("fresh database is corrupt", path=str(self.path)) from again

    def _open(self, schema: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(exc, "opening database") from exc
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
            raise self._error(exc, "opening database") from exc
        except _CorruptError:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute("PRAGMA query_only=1")
            # open the WAL now, at start-up: SQLite running as root fchowns it on open, which
            # waits for an fsync of it in progress; a first read on the loop must not
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "opening database for reading") from exc
        return conn

    def _error(self, exc: sqlite3.Error, what: str, **context: object) -> StoreError:
        return to_store_error(exc, what, self.path, error=self.error, **context)

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
            raise self.error("cannot move corrupt database aside", path=str(self.path)) from exc
        return Quarantine(moved_to=target, reason=reason, salvaged=salvaged)

    @contextmanager
    def transaction(
        self, what: str, *, durable: bool = True, **context: object
    ) -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE); any sqlite3 error rolls back. Only on the
        writer's thread: wrap the caller in ``write``/``submit``.

        ``durable=False`` skips the commit fsync (WAL stays consistent; the commit becomes durable
        with the next durable one). For writes whose loss is harmless: marking rows sent (a lost
        mark means a resend, which consumers dedupe) and dropping/pruning rows.
        """
        if not self.writer.on_thread():
            raise RuntimeError(f"{what}: a write transaction off the store writer's thread")
        try:
            if not durable:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._restore_sync(durable)
            raise self._error(exc, what, **context) from exc
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._error(exc, what, **context) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            self._restore_sync(durable)

    def write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which opens transactions) on the writer and wait for it."""
        return self.writer.call(fn)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn`` on the writer; the caller goes on."""
        return self.writer.submit(fn)

    def _restore_sync(self, durable: bool) -> None:
        if not durable:
            self._conn.execute("PRAGMA synchronous=FULL")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            # SQLite may already have rolled back (e.g. after SQLITE_FULL): nothing more to undo
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def query(self, sql: str, params: tuple[Any, ...] = (), what: str = "reading") -> list[Row]:
        """A read on the reader's connection: the last commit, without waiting for the writer."""
        with self._rlock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, what) from exc

    def used_bytes(self) -> int:
        """Bytes held by live pages (freed pages are reused, so this is what the budget counts)."""
        rows = self.query(
            "SELECT page_count - freelist_count, page_size"
            " FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
        )
        return int(rows[0][0]) * int(rows[0][1])

    def close(self) -> None:
        with self._rlock:
            if self._reader is not self._conn:
                self._reader.close()
        self.writer.call(self._conn.close)


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
