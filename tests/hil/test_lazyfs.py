"""hil/lazyfs.py forgets exactly what was not fsynced, and SQLite in WAL mode works on it.

The power-cut rows of the fault matrix rest on this: if the file system kept unsynced writes, a
"cut" would prove nothing; if it lost synced ones, every cut would look like a bug.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.lazymount import LazyMount, fuse_missing


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[LazyMount]:
    if why := fuse_missing():
        pytest.skip(f"{why}: run `make fuse`")
    mount = LazyMount(tmp_path / "backing", tmp_path / "mnt")
    mount.mount()
    try:
        yield mount
    finally:
        mount.unmount()


def test_a_cut_keeps_fsynced_bytes_and_drops_the_rest(disk: LazyMount) -> None:
    synced, unsynced = disk.mountpoint / "synced", disk.mountpoint / "unsynced"
    with open(synced, "wb") as fh:
        fh.write(b"kept")
        fh.flush()
        os.fsync(fh.fileno())
        fh.write(b" and lost")  # after the fsync: not on the disk
    unsynced.write_bytes(b"gone")
    assert synced.read_bytes() == b"kept and lost"  # readers see it before the cut
    disk.cut()
    disk.mount()
    assert synced.read_bytes() == b"kept"
    assert unsynced.read_bytes() == b""  # the name is metadata (kept), the bytes were not synced


def test_sqlite_wal_commits_survive_a_cut_and_unsynced_ones_do_not(disk: LazyMount) -> None:
    db = disk.mountpoint / "t.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)  # -shm mmap works
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t(x)")
        for i in range(50):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.execute("PRAGMA synchronous=OFF")  # no fsync at all: lost at the cut
        for i in range(50, 60):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        disk.cut()  # with the connection still open, as the killed agent's are
    disk.mount()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*), max(x) FROM t").fetchone() == (50, 49)
