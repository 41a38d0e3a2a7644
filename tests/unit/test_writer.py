"""The store writer: callers go on while the disk is held; nothing is visible before it commits."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.errors import CommandStoreError, JournalError, LedgerError, StoreError
from agent.journal import Entry, Journal
from agent.ledger import Ledger
from agent.writer import StoreWriter

T0 = 1_790_000_000.0


@pytest.fixture
def writer() -> StoreWriter:
    w = StoreWriter(name="test-writer")
    yield w  # type: ignore[misc]
    w.close()


def hold(writer: StoreWriter) -> threading.Event:
    """Stall the writer (as a slow fsync would) until the event is set."""
    release = threading.Event()
    started = threading.Event()

    def stall() -> None:
        started.set()
        release.wait()
    writer.submit(stall)
    started.wait()
    return release


def test_a_held_disk_does_not_hold_the_caller_and_nothing_shows_before_commit(
        tmp_path: Path, writer: StoreWriter) -> None:
    j = Journal(tmp_path / "journal.db", device_id="d", budget_bytes=10**7, writer=writer)
    ledger = Ledger(tmp_path / "sessions.db", writer=writer)
    release = hold(writer)
    s = ledger.open_session(1, T0, 100)          # returns while the writer is held
    first = j.submit("evt", {"type": "a"}, T0)
    second = j.submit("evt", {"type": "b"}, T0)
    assert not first.done() and not second.done()
    assert j.pending(10) == [] and j.last_seq == 0  # not committed: not publishable
    assert ledger.open_on(1) == s                 # the caller reads its own write
    release.set()
    assert (first.result().seq, second.result().seq) == (1, 2)
    assert [e.seq for e in j.pending(10)] == [1, 2]
    writer.call(lambda: None)
    assert Ledger(tmp_path / "sessions.db", writer=writer).open_on(1) == s


def test_jobs_complete_in_submission_order_across_stores(
        tmp_path: Path, writer: StoreWriter) -> None:
    j = Journal(tmp_path / "journal.db", device_id="d", budget_bytes=10**7, writer=writer)
    ledger = Ledger(tmp_path / "sessions.db", writer=writer)
    done: list[str] = []
    release = hold(writer)
    s = ledger.open_session(1, T0, 100)
    record = ledger.close(s.session_id, T0 + 60, 200, "EVDisconnected")
    writer.submit(lambda: done.append("ledger closed"))
    j.submit("evt", {"type": "sessionEnded", "body": record}, T0).add_done_callback(
        lambda _: done.append("journaled"))
    release.set()
    writer.call(lambda: None)
    assert done == ["ledger closed", "journaled"]


def test_a_refused_append_takes_no_seq(tmp_path: Path, writer: StoreWriter,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "journal.db", device_id="d", budget_bytes=10**7, writer=writer)
    insert = j._insert
    refused: list[int] = []

    def full_once(entry: Entry) -> None:
        if b'"b"' in entry.payload and not refused:
            refused.append(entry.seq)
            raise JournalError("disk full", cause="disk_full")
        insert(entry)
    monkeypatch.setattr(j, "_insert", full_once)
    release = hold(writer)
    a, b, c = (j.submit("evt", {"type": t}, T0) for t in "abc")
    release.set()
    with pytest.raises(JournalError):
        b.result()
    assert (a.result().seq, c.result().seq) == (1, 2)  # the refused one took no seq: no gap
    assert [e.seq for e in j.pending(10)] == [1, 2]


def test_each_store_raises_its_own_error_under_one_base() -> None:
    for error in (JournalError, LedgerError, CommandStoreError):
        assert issubclass(error, StoreError)
    assert not issubclass(LedgerError, JournalError)
