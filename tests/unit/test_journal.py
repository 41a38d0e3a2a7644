"""Behaviour of the outbox journal and the command store on real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.api.envelope import CommandStore as ApiCommandStore
from agent.api.models import Reply
from agent.api.reasons import Reason, ReplyStatus
from agent.command_store import CommandStore
from agent.journal import Journal, Kind

T0 = 1_790_000_000.0  # 2026-09-21T..Z
BIG = 50_000_000
EXP = datetime(2026, 11, 26, 8, 5, tzinfo=UTC)


def open_journal(path: Path, **kw: Any) -> Journal:
    kw.setdefault("device_id", "CN-BJ-0001")
    kw.setdefault("budget_bytes", BIG)
    return Journal(path, **kw)


def evt(i: int) -> dict[str, Any]:
    return {"type": "pilotStateChanged", "connector": 1, "body": {"from": "A", "to": "B", "n": i}}


def tel(i: int, pad: int = 0) -> dict[str, Any]:
    return {"connectors": [{"connector": 1, "pilot": "C", "powerW": 7000 + i, "pad": "x" * pad}]}


def all_seqs(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM entries ORDER BY seq")]
    finally:
        conn.close()


def test_seq_starts_at_one_and_is_gapless_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    with open_journal(db) as j:
        assert [j.append("evt", evt(i), T0 + i).seq for i in range(5)] == [1, 2, 3, 4, 5]
    with open_journal(db) as j:
        assert j.last_seq == 5
        assert [j.append("tel", tel(i), T0 + i).seq for i in range(3)] == [6, 7, 8]
    assert all_seqs(db) == list(range(1, 9))


def test_seq_survives_every_row_being_deleted(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    with open_journal(db) as j:
        j.mark_sent_many([j.append("tel", tel(i), T0).seq for i in range(4)]).result()
        assert all_seqs(db) == []
    with open_journal(db) as j:
        assert j.append("evt", evt(0), T0).seq == 5


def test_payload_is_the_api_envelope_plus_body(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.db", boot_id="boot-1") as j:
        e = j.append("evt", evt(7), T0 + 0.25)
        t = j.append("tel", tel(1), T0 + 1)
    assert (e.topic_suffix, t.topic_suffix) == ("evt", "tel")
    msg = json.loads(e.payload)
    assert list(msg)[:5] == ["v", "deviceId", "bootId", "seq", "ts"]
    assert msg == {"v": 1, "deviceId": "CN-BJ-0001", "bootId": "boot-1", "seq": 1,
                   "ts": "2026-09-21T14:13:20.250Z", **evt(7)}
    assert json.loads(t.payload)["connectors"][0]["powerW"] == 7001


def test_body_may_not_override_envelope_and_kind_is_checked(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.db") as j:
        with pytest.raises(ValueError, match="seq"):
            j.append("evt", {"seq": 99}, T0)
        with pytest.raises(ValueError, match="kind"):
            j.append("rsp", {}, T0)  # type: ignore[arg-type]
        assert j.append("evt", evt(0), T0).seq == 1  # refused calls used no number


def test_append_is_committed_before_it_returns(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with open_journal(db) as j:
        entry = j.append("evt", evt(1), T0)
        other = sqlite3.connect(db)  # an independent reader sees only committed data
        try:
            row = other.execute("SELECT payload, sent FROM entries WHERE seq = ?",
                                (entry.seq,)).fetchone()
        finally:
            other.close()
    assert row == (entry.payload, 0)


def test_mark_sent_deletes_telemetry_and_keeps_events_for_resync(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with open_journal(db) as j:
        e1, t2, e3 = j.append("evt", evt(1), T0), j.append("tel", tel(2), T0), \
            j.append("evt", evt(3), T0)
        j.mark_sent(t2.seq).result()
        j.mark_sent_many([e1.seq]).result()
        assert [p.seq for p in j.pending(10)] == [e3.seq]
        assert [(r.seq, r.sent) for r in j.resync(1)] == [(1, True), (3, False)]
        assert all_seqs(db) == [1, 3]
        s = j.stats()
        assert (s.pending_evt, s.pending_tel, s.held_sent_evt) == (1, 0, 1)


def test_backlog_drains_oldest_first_without_rereading_rows_in_flight(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.db") as j:
        for i in range(10):
            j.append("evt" if i % 3 == 0 else "tel", evt(i) if i % 3 == 0 else tel(i), T0 + i)
        upto, cursor, drained = j.last_seq, None, []
        while batch := j.pending(3, after_seq=cursor, through_seq=upto):
            drained += [b.seq for b in batch]  # published, PUBACK not yet received
            cursor = batch[-1].seq
            live = j.append("tel", tel(100), T0 + 100)  # live traffic keeps flowing
            j.mark_sent(live.seq).result()
        assert drained == list(range(1, 11))
        j.mark_sent_many(drained[:4]).result()
        assert [p.seq for p in j.pending(100)] == list(range(5, 11))


def test_budget_drops_oldest_telemetry_first_and_never_events(tmp_path: Path) -> None:
    budget = 96 * 1024
    with open_journal(tmp_path / "j.db", budget_bytes=budget) as j:
        kinds: dict[int, Kind] = {}
        for i in range(600):
            kind: Kind = "evt" if i % 5 == 0 else "tel"
            e = j.append(kind, evt(i) if kind == "evt" else tel(i, pad=400), T0 + i)
            kinds[e.seq] = kind
        s = j.stats()
        held = {p.seq: p.kind for p in j.pending(10_000)}
        assert s.used_bytes <= budget
        assert not s.over_budget
        assert [q for q, k in kinds.items() if k == "evt"] == [q for q, k in held.items()
                                                                if k == "evt"]
        sent_tel = [q for q, k in kinds.items() if k == "tel"]
        kept_tel = [q for q, k in held.items() if k == "tel"]
        assert 0 < len(kept_tel) < len(sent_tel)
        assert kept_tel == sent_tel[-len(kept_tel):]  # the newest survive
        dropped = len(sent_tel) - len(kept_tel)
        assert s.tel_dropped_total == dropped
        report = j.take_link_report(T0 + 600)
        assert report.tel_dropped == dropped
        assert report.buffered == len(held)
        assert report.oldest_pending_age_s == 600.0
        assert j.take_link_report(T0 + 600).tel_dropped == 0


def test_budget_keeps_events_when_only_events_remain(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.db", budget_bytes=16 * 1024) as j:
        for i in range(300):
            j.append("evt", {**evt(i), "pad": "y" * 200}, T0 + i)
        s = j.stats()
    assert s.pending_evt == 300
    assert s.over_budget
    assert s.tel_dropped_total == 0


def test_dropped_counter_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with open_journal(db, budget_bytes=32 * 1024) as j:
        for i in range(200):
            j.append("tel", tel(i, pad=400), T0 + i)
        dropped = j.stats().tel_dropped_total
    assert dropped > 0
    with open_journal(db, budget_bytes=32 * 1024) as j:
        assert j.take_link_report(T0).tel_dropped == dropped


def test_retention_prunes_only_sent_events_older_than_retention(tmp_path: Path) -> None:
    day = 86400.0
    with open_journal(tmp_path / "j.db", retention_s=30 * day) as j:
        old_sent = j.append("evt", evt(1), T0)
        old_unsent = j.append("evt", evt(2), T0)
        new_sent = j.append("evt", evt(3), T0 + 20 * day)
        j.mark_sent_many([old_sent.seq, new_sent.seq]).result()
        assert j.prune(T0 + 29 * day) == 0
        assert j.prune(T0 + 31 * day) == 1
        assert [r.seq for r in j.resync(0)] == [old_unsent.seq, new_sent.seq]


def test_resync_returns_held_events_from_seq(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.db") as j:
        seqs = [j.append("evt" if i % 2 else "tel", evt(i), T0 + i).seq for i in range(10)]
        j.mark_sent_many(seqs).result()
        got = j.resync(4)
        assert [r.seq for r in got] == [4, 6, 8, 10]
        assert all(r.kind == "evt" and r.sent for r in got)
        assert [r.seq for r in j.resync(4, limit=2)] == [4, 6]


def test_backlog_from_a_previous_boot_keeps_its_boot_id(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with open_journal(db, boot_id="boot-A") as j:
        j.append("evt", evt(1), T0)
    with open_journal(db, boot_id="boot-B") as j:
        j.append("evt", evt(2), T0)
        assert [json.loads(p.payload)["bootId"] for p in j.pending(10)] == ["boot-A", "boot-B"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.tuples(st.just("append"), st.sampled_from(["evt", "tel"])),
    st.tuples(st.just("ack"), st.integers(0, 5)),
    st.tuples(st.just("reopen"), st.just("")),
), max_size=40))
def test_journal_properties_under_random_operations(ops: list[tuple[str, Any]]) -> None:
    """Seq is gapless, unsent rows are never lost, sent events stay, sent telemetry goes."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "j.db"
        j = open_journal(db)
        issued: dict[int, str] = {}
        acked: set[int] = set()
        try:
            for op, arg in ops:
                if op == "append":
                    e = j.append(arg, evt(0), T0)
                    assert e.seq == len(issued) + 1
                    issued[e.seq] = arg
                elif op == "ack":
                    unsent = [p.seq for p in j.pending(1000)]
                    if unsent:
                        j.mark_sent(unsent[arg % len(unsent)]).result()
                        acked.add(unsent[arg % len(unsent)])
                else:
                    j.close()
                    j = open_journal(db)
            assert j.last_seq == len(issued)
            assert [p.seq for p in j.pending(1000)] == [q for q in issued if q not in acked]
            expected = [q for q, k in issued.items() if k == "evt" or q not in acked]
            assert all_seqs(db) == expected
        finally:
            j.close()


# -- command store ---------------------------------------------------------------------------


def reply(command_id: str, status: ReplyStatus = ReplyStatus.ACCEPTED) -> Reply:
    return Reply(command_id=command_id, device_id="CN-BJ-0001", status=status,
                 reason=Reason.OK, at_seq=88)


def test_command_store_is_the_api_protocol(tmp_path: Path) -> None:
    store: ApiCommandStore = CommandStore(tmp_path / "commands.db")
    store.set_high_water("agg-1", 1)
    assert store.high_water("agg-1") == 1


def test_command_store_dedupes_by_issuer_and_id_across_restart(tmp_path: Path) -> None:
    db = tmp_path / "commands.db"
    store = CommandStore(db)
    assert store.get_reply("agg-1", "c1") is None
    store.record("agg-1", "c1", "h1", reply("c1"), expires_at=EXP, seq=10)
    store.close()
    store = CommandStore(db)
    try:
        assert store.get_reply("agg-1", "c1") == ("h1", reply("c1"))
        assert store.get_reply("agg-2", "c1") is None
        assert store.high_water("agg-1") == 10
        assert store.high_water("agg-2") is None
    finally:
        store.close()


def test_a_mark_that_commits_between_the_two_reads_is_still_seen(tmp_path: Path) -> None:
    """Found in clean-clone run cc8 (2026-12-05): ``high_water`` read the database, then the
    queue; a commit in between took the mark out of the queue after the database read had
    missed it, and the mark was gone from both (None: a replayed seq would pass). Here the
    writer is held while the mark is queued and let go right after the database read."""
    store = CommandStore(tmp_path / "commands.db")
    writer, query = store._db.writer, store._db.query
    hold = threading.Event()
    try:
        writer.submit(hold.wait)
        store.set_high_water("agg-1", 5)  # queued behind the held job

        def query_then_commit(*args: Any, **kwargs: Any) -> Any:
            rows = query(*args, **kwargs)
            hold.set()
            writer.call(lambda: None)  # the mark commits and leaves the queue
            return rows

        store._db.query = query_then_commit  # type: ignore[method-assign]
        assert store.high_water("agg-1") == 5
    finally:
        hold.set()
        store.close()


def test_command_high_water_only_rises_and_expired_ids_are_pruned(tmp_path: Path) -> None:
    store = CommandStore(tmp_path / "commands.db", retention_s=3600)
    try:
        store.set_high_water("agg-1", 5)
        store.set_high_water("agg-1", 3)
        assert store.high_water("agg-1") == 5
        store.record("agg-1", "old", "h", reply("old"), expires_at=EXP)
        store.record("agg-1", "new", "h", reply("new"), expires_at=EXP + timedelta(hours=1))
        store.record("agg-1", "forever", "h", reply("forever"), expires_at=None)
        now = EXP.timestamp() + 60
        assert store.prune_expired(now) == 1
        assert store.get_reply("agg-1", "old") is None
        assert store.get_reply("agg-1", "new") == ("h", reply("new"))
        assert store.prune_expired(time.time() + 7200) == 2  # no expiry: kept for the retention
    finally:
        store.close()
