"""The session record stays bounded and its totals stay exact, however many changes it sees."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.api import models as m
from agent.ledger import Curtailment, Ledger, RandomDelay
from agent.ledger_bound import MAX_ENTRIES, bound_curtailments, duration_ms
from agent.orderly.events import from_wire

T0 = 1_790_000_000.0

# (start offset, duration or None for still in force, limit A), in the order they are recorded
spans = st.lists(st.tuples(st.floats(0, 86_400), st.none() | st.floats(0, 3_600),
                           st.floats(0, 80)), max_size=120)


@given(spans, st.integers(1, 40))
def test_merge_keeps_count_and_total_duration_exact(items: list[tuple[float, float | None,
                                                                      float]], keep: int) -> None:
    entries: tuple[Curtailment, ...] = ()
    merged = None
    for i, (start, dur, amps) in enumerate(items):
        c = Curtailment("commandId", f"c{i}", T0 + start, {"value": amps, "unit": "A"},
                        None if dur is None else T0 + start + dur)
        entries, merged = bound_curtailments((*entries, c), merged, keep)
        open_now = sum(1 for e in entries if e.to_at is None)
        assert len(entries) <= max(keep, open_now)
    ended = [(s, d, a) for s, d, a in items if d is not None]
    kept_ended = [e for e in entries if e.to_at is not None]
    merged_count = merged.count if merged else 0
    assert merged_count + len(entries) == len(items)
    assert all(e.to_at is None for e in entries) or len(kept_ended) <= len(ended)
    total = sum(duration_ms(T0 + s, T0 + s + d) for s, d, _ in ended)
    kept_total = sum(duration_ms(e.from_at, e.to_at) for e in kept_ended if e.to_at is not None)
    assert (merged.total_ms if merged else 0) + kept_total == total
    if merged is not None:
        assert merged.min_limit_a is not None
        assert merged.min_limit_a >= min(a for _, _, a in ended)


@pytest.mark.parametrize("n", [MAX_ENTRIES + 1, 150])
def test_a_long_session_keeps_32_entries_and_its_record_is_valid(n: int, tmp_path: Path) -> None:
    led = Ledger(tmp_path / "sessions.db")
    try:
        s = led.open_session(1, T0, 0, session_id="s-1")
        for i in range(n):
            at = T0 + 10 * i
            led.update(s.session_id, curtailment=Curtailment(
                "commandId", f"c{i}", at, {"value": 10.0, "unit": "A"}, at + 5))
            led.update(s.session_id, random_delay=RandomDelay(at, 3))
        back = led.get(s.session_id)
        assert len(back.curtailments) == MAX_ENTRIES
        assert len(back.random_delays) == MAX_ENTRIES
        record = led.close(s.session_id, T0 + 10 * n, 100, "EVDisconnected")
    finally:
        led.close_db()
    record["idleOccupancyS"] = round(record["idleOccupancyS"])  # as the tracker reports it
    body = from_wire(m.SessionEndedBody, record)  # what sessionEnded carries
    assert body.curtailments_merged is not None and body.random_delays_merged is not None
    assert body.curtailments_merged.count + len(body.curtailments) == n
    assert body.curtailments_merged.total_s == 5 * (n - MAX_ENTRIES)
    assert body.random_delays_merged.count == n - MAX_ENTRIES
    assert body.random_delays_merged.total_s == 3 * (n - MAX_ENTRIES)
    assert record["curtailments"][-1]["commandId"] == f"c{n - 1}"  # the latest are kept


def test_a_ledger_of_the_previous_release_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    old = sqlite3.connect(path)
    old.executescript("""
CREATE TABLE sessions(
    session_id TEXT PRIMARY KEY, connector INTEGER NOT NULL, plug_in_at REAL NOT NULL,
    meter_start_wh INTEGER NOT NULL, id_tag TEXT, offline INTEGER NOT NULL,
    charge_start_at REAL, charge_end_at REAL, charging INTEGER NOT NULL DEFAULT 0,
    max_power_w INTEGER NOT NULL DEFAULT 0, curtailments TEXT NOT NULL DEFAULT '[]',
    random_delays TEXT NOT NULL DEFAULT '[]', idle_occupancy_s REAL,
    last_seen_at REAL NOT NULL, last_meter_wh INTEGER NOT NULL,
    plug_out_at REAL, meter_stop_wh INTEGER, stop_reason TEXT, reported_seq INTEGER);
INSERT INTO sessions(session_id, connector, plug_in_at, meter_start_wh, offline, last_seen_at,
    last_meter_wh, plug_out_at, meter_stop_wh, stop_reason)
    VALUES ('old-1', 1, 1790000000.0, 100, 0, 1790000100.0, 300, 1790000100.0, 300, 'Local');
""")
    old.close()
    led = Ledger(path)
    try:
        [s] = led.sessions()
        assert (s.session_id, s.max_current_a, s.local_only) == ("old-1", 0.0, False)
        assert s.listing()["energyWh"] == 200
        assert [x.session_id for x in led.unreported()] == ["old-1"]  # still owed upstream
        led.update(led.open_session(2, T0, 0).session_id, current_a=12.5)
        assert led.open_on(2) is not None and led.open_on(2).max_current_a == 12.5  # type: ignore[union-attr]
    finally:
        led.close_db()
