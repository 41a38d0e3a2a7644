"""The journal under faults: SIGKILL mid-write, a full disk, a corrupt or missing file."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.errors import JournalError
from agent.journal import SEQ_BLOCK, Journal, Kind
from agent.ledger import Ledger

T0 = 1_790_000_000.0

# The child "publishes" (prints) each seq only after append returned: commit before publish.
CHILD = """
import sys
from agent.journal import Journal
j = Journal(sys.argv[1], device_id="CN-1", budget_bytes=10_000_000)
i = 0
while True:
    kind = "evt" if i % 3 == 0 else "tel"
    e = j.append(kind, {"type": "x", "n": i, "pad": "p" * (i % 500)}, 1.79e9 + i)
    print(e.seq, flush=True)
    i += 1
"""


def entries(path: Path) -> list[tuple[int, bytes]]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return list(conn.execute("SELECT seq, payload FROM entries ORDER BY seq"))
    finally:
        conn.close()


def test_sigkill_at_random_points_leaves_a_gapless_uncorrupted_prefix(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(18487)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    published = 0
    for _round in range(5):
        child = subprocess.Popen([sys.executable, str(script), str(db)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert child.stdout is not None
            for _ in range(rng.randint(20, 300)):
                seq = int(child.stdout.readline())
                assert seq == published + 1  # continues after the previous kill, no gap
                published = seq
            time.sleep(rng.uniform(0, 0.01))  # land somewhere inside a write
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        if child.stdout is not None:
            published = max([published, *(int(x) for x in child.stdout.read().split())])
            child.stdout.close()
        rows = entries(db)
        seqs = [s for s, _ in rows]
        assert seqs == list(range(1, len(seqs) + 1))  # gapless prefix
        assert len(seqs) >= published  # everything published is on disk
        assert all(json.loads(p)["seq"] == s for s, p in rows)
        published = len(seqs)  # a commit that raced the kill counts as issued
    with Journal(db, device_id="CN-1", budget_bytes=10_000_000) as j:
        assert j.quarantine is None
        assert j.append("evt", {"type": "after"}, T0).seq == published + 1


def fill_until_full(j: Journal, kind: Kind, pad: int = 300) -> tuple[list[int], JournalError]:
    seqs: list[int] = []
    for i in range(5_000):
        try:
            seqs.append(j.append(kind, {"type": "x", "n": i, "pad": "z" * pad}, T0 + i).seq)
        except JournalError as exc:
            return seqs, exc
    raise AssertionError("the database never became full")


def test_full_disk_raises_journal_error_and_keeps_committed_rows(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Journal(db, device_id="CN-1", budget_bytes=10**9, hard_limit_bytes=128 * 1024) as j:
        stored, err = fill_until_full(j, "evt")
        assert err.context["cause"] == "disk_full"
        assert "disk full" in str(err) and "event not stored" in str(err)
        assert isinstance(err.__cause__, JournalError)
        assert j.last_seq == stored[-1]
        assert [p.seq for p in j.pending(10**6)] == stored  # nothing committed was lost
        # space comes back once events are delivered: the next seq follows without a gap
        j.mark_sent_many(stored[:50]).result()
        more = [j.append("evt", {"type": "y", "pad": "z" * 300}, T0).seq for _ in range(20)]
        assert more == list(range(stored[-1] + 1, stored[-1] + 21))
        assert j.stats().evt_pruned_early_total > 0  # sent events made room for unsent ones
    assert [s for s, _ in entries(db)][-1] == more[-1]


def test_full_disk_drops_telemetry_to_store_events(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db", device_id="CN-1", budget_bytes=10**9,
                 hard_limit_bytes=128 * 1024) as j:
        for i in range(400):  # more than fits: the disk-full path drops the oldest ones
            j.append("tel", {"n": i, "pad": "t" * 300}, T0 + i)
        assert 0 < j.stats().tel_dropped_total < 400
        evts, _ = fill_until_full(j, "evt")
        assert len(evts) > 10
        s = j.stats()
        assert (s.pending_evt, s.pending_tel) == (len(evts), 0)
        assert s.tel_dropped_total == 400
        with pytest.raises(JournalError, match="telemetry not stored"):
            j.append("tel", {"n": 0, "pad": "t" * 5000}, T0)  # needs fresh pages
        assert j.stats().tel_dropped_total == 401  # the refused one is counted too
        assert j.take_link_report(T0).tel_dropped == 401


def make_journal_with(db: Path, n: int) -> None:
    with Journal(db, device_id="CN-1", budget_bytes=10**9) as j:
        for i in range(n):
            j.append("evt", {"type": "x", "n": i, "pad": "q" * 200}, T0 + i)


def test_garbage_file_at_startup_is_moved_aside_and_seq_continues(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    make_journal_with(db, 50)
    db.write_bytes(b"this is not an SQLite database" * 100)
    with Journal(db, device_id="CN-1", budget_bytes=10**9) as j:
        assert j.quarantine is not None
        assert j.quarantine.moved_to.exists()
        assert j.quarantine.moved_to.read_bytes().startswith(b"this is not")
        assert j.pending(10) == []
        assert j.append("evt", {"type": "x"}, T0).seq == SEQ_BLOCK + 1  # above the sidecar
    with Journal(db, device_id="CN-1", budget_bytes=10**9) as j:
        assert j.quarantine is None
        assert j.append("evt", {"type": "x"}, T0).seq == SEQ_BLOCK + 2


def test_damaged_pages_are_detected_and_high_water_salvaged(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    make_journal_with(db, 300)
    (tmp_path / "j.db.seq").unlink()  # without the sidecar, the mark is read from the wreck
    page = 4096
    data = bytearray(db.read_bytes())
    assert len(data) > 20 * page
    data[10 * page: 12 * page] = os.urandom(2 * page)
    db.write_bytes(bytes(data))
    with Journal(db, device_id="CN-1", budget_bytes=10**9) as j:
        assert j.quarantine is not None
        assert "quick_check" in j.quarantine.reason or "malformed" in j.quarantine.reason
        assert j.quarantine.salvaged == 300
        assert j.append("evt", {"type": "x"}, T0).seq == 301


def test_missing_database_with_sidecar_never_reuses_a_seq(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    make_journal_with(db, 5)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with Journal(db, device_id="CN-1", budget_bytes=10**9) as j:
        assert j.append("evt", {"type": "x"}, T0).seq == SEQ_BLOCK + 1


def test_corrupt_ledger_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    ledger = Ledger(db)
    ledger.open_session(1, T0, 1000)
    ledger.close_db()
    db.write_bytes(b"\0garbage" * 512)
    ledger = Ledger(db)
    try:
        assert ledger.quarantine is not None
        assert ledger.open_on(1) is None
    finally:
        ledger.close_db()


def test_unwritable_state_directory_is_a_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    kw: dict[str, Any] = {"device_id": "CN-1", "budget_bytes": 10**6}
    with pytest.raises(JournalError):
        Journal(blocker / "sub" / "j.db", **kw)
