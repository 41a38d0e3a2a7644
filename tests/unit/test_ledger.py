"""The session ledger: write-through, the exact sessionEnded record, recovery after power loss."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.ledger import POWER_LOSS, Curtailment, Ledger, RandomDelay, Session

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z
LIMIT = {"value": 3.5, "unit": "kW"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def ledger(db: Path) -> Iterator[Ledger]:
    led = Ledger(db)
    yield led
    led.close_db()


def read_back(db: Path, session_id: str) -> Session:
    """A second instance on the same file: sees exactly what was committed (as after a crash)."""
    other = Ledger(db)
    try:
        return other.get(session_id)
    finally:
        other.close_db()


def test_full_session_produces_the_exact_api_record(ledger: Ledger) -> None:
    s = ledger.open_session(1, T0, 10_000, id_tag="TAG-1", session_id="s-1")
    ledger.update(s.session_id, random_delay=RandomDelay(at=T0 + 1, s=42.5))
    ledger.update(s.session_id, charge_start_at=T0 + 43.5, power_w=7040.4)
    ledger.update(s.session_id, curtailment=Curtailment("commandId", "c-9", T0 + 100, LIMIT))
    ledger.update(s.session_id, curtailment=Curtailment("commandId", "c-9", T0 + 100, LIMIT,
                                                         to_at=T0 + 1000), power_w=3500)
    ledger.update(s.session_id, curtailment=Curtailment("profileId", "p-1", T0 + 2000,
                                                         {"value": 16, "unit": "A"}))
    ledger.update(s.session_id, charge_end_at=T0 + 3600, meter_wh=25_000)
    record = ledger.close(s.session_id, T0 + 4000, 25_010, "EVDisconnected")
    assert record == {
        "sessionId": "s-1",
        "plugInAt": "2026-09-21T14:13:20.000Z",
        "chargeStartAt": "2026-09-21T14:14:03.500Z",
        "chargeEndAt": "2026-09-21T15:13:20.000Z",
        "plugOutAt": "2026-09-21T15:20:00.000Z",
        "meterStartWh": 10_000,
        "meterStopWh": 25_010,
        "energyWh": 15_010,
        "maxPowerW": 7040,
        "stopReason": "EVDisconnected",
        "curtailments": [
            {"commandId": "c-9", "from": "2026-09-21T14:15:00.000Z",
             "to": "2026-09-21T14:30:00.000Z", "limit": LIMIT},
            {"profileId": "p-1", "from": "2026-09-21T14:46:40.000Z",
             "to": "2026-09-21T15:20:00.000Z", "limit": {"value": 16, "unit": "A"}},
        ],
        "randomDelays": [{"at": "2026-09-21T14:13:21.000Z", "s": 42.5}],
        "idleOccupancyS": 400.0,
        "idTag": "TAG-1",
        "offline": False,
    }


def test_record_without_charging_or_id_tag(ledger: Ledger) -> None:
    s = ledger.open_session(2, T0, 500, offline=True)
    record = ledger.close(s.session_id, T0 + 60, 500, "EVDisconnected")
    assert record["chargeStartAt"] is None and record["chargeEndAt"] is None
    assert "idTag" not in record
    assert (record["energyWh"], record["idleOccupancyS"], record["offline"]) == (0, 60.0, True)


def test_every_change_is_written_through(ledger: Ledger, db: Path) -> None:
    s = ledger.open_session(1, T0, 100)
    assert read_back(db, s.session_id) == s
    after = ledger.update(s.session_id, charge_start_at=T0 + 5, power_w=7000, at=T0 + 10,
                          meter_wh=120)
    seen = read_back(db, s.session_id)
    assert seen == after
    assert (seen.charge_start_at, seen.charging, seen.last_meter_wh) == (T0 + 5, True, 120)


def test_resumed_charging_keeps_first_start_and_clears_end(ledger: Ledger) -> None:
    sid = ledger.open_session(1, T0, 0).session_id
    ledger.update(sid, charge_start_at=T0 + 1)
    ledger.update(sid, charge_end_at=T0 + 2)
    s = ledger.update(sid, charge_start_at=T0 + 3)
    assert (s.charge_start_at, s.charge_end_at, s.charging) == (T0 + 1, None, True)
    record = ledger.close(sid, T0 + 9, 50, "Remote")
    assert record["chargeEndAt"] == "2026-09-21T14:13:29.000Z"  # still charging at plug-out


def test_one_open_session_per_connector_and_closed_is_final(ledger: Ledger) -> None:
    s = ledger.open_session(1, T0, 0)
    with pytest.raises(ValueError, match="already has an open session"):
        ledger.open_session(1, T0 + 1, 0)
    ledger.open_session(2, T0, 0)
    ledger.close(s.session_id, T0 + 5, 1, "Local")
    with pytest.raises(ValueError, match="closed"):
        ledger.update(s.session_id, power_w=1)
    with pytest.raises(ValueError, match="closed"):
        ledger.close(s.session_id, T0 + 6, 1, "Local")
    with pytest.raises(KeyError):
        ledger.get("nope")
    assert ledger.open_session(1, T0 + 10, 1).connector == 1


def test_recovery_closes_unplugged_sessions_truthfully_as_power_loss(
    ledger: Ledger, db: Path
) -> None:
    sid = ledger.open_session(1, T0, 1_000, session_id="s-pl").session_id
    ledger.update(sid, charge_start_at=T0 + 10)
    ledger.update(sid, curtailment=Curtailment("commandId", "c-1", T0 + 20, LIMIT))
    ledger.update(sid, at=T0 + 600, meter_wh=1_900, power_w=7200)
    ledger.close_db()  # the process dies here; the next boot recovers
    booted = Ledger(db)
    try:
        [rec] = booted.recover(T0 + 5000, meter_wh={1: 1_950}, plugged=set())
        assert not rec.resumed
        assert rec.record is not None
        assert rec.record == booted.get(sid).record()
        assert {k: rec.record[k] for k in ("stopReason", "chargeEndAt", "plugOutAt",
                                            "meterStopWh", "energyWh", "maxPowerW")} == {
            "stopReason": POWER_LOSS,
            "chargeEndAt": "2026-09-21T14:23:20.000Z",  # last seen, not the boot time
            "plugOutAt": "2026-09-21T14:23:20.000Z",
            "meterStopWh": 1_950,  # the register at recovery
            "energyWh": 950,
            "maxPowerW": 7200,
        }
        assert rec.record["curtailments"][0]["to"] == "2026-09-21T14:23:20.000Z"
        assert booted.open_on(1) is None
        assert [s.session_id for s in booted.unreported()] == [sid]
        booted.mark_reported(sid, 4242)
        assert booted.unreported() == []
        assert booted.recover(T0 + 6000, {}, set()) == []  # nothing is recovered twice
    finally:
        booted.close_db()


def test_recovery_uses_last_known_meter_when_meter_unreadable_or_lower(ledger: Ledger) -> None:
    a = ledger.open_session(1, T0, 100).session_id
    b = ledger.open_session(2, T0, 100).session_id
    ledger.update(a, at=T0 + 60, meter_wh=300)
    ledger.update(b, at=T0 + 60, meter_wh=300)
    recs = ledger.recover(T0 + 999, meter_wh={1: None, 2: 50}, plugged=())
    assert [r.record["meterStopWh"] for r in recs if r.record] == [300, 300]


def test_recovery_resumes_sessions_whose_ev_is_still_plugged(ledger: Ledger) -> None:
    sid = ledger.open_session(1, T0, 1_000).session_id
    ledger.update(sid, charge_start_at=T0 + 10, at=T0 + 300, meter_wh=1_500)
    other = ledger.open_session(2, T0, 7).session_id
    recs = {r.session.session_id: r for r in ledger.recover(T0 + 900, {1: 1_510, 2: 7}, {1})}
    assert recs[sid].resumed and recs[sid].record is None
    assert not recs[other].resumed
    s = ledger.get(sid)
    assert not s.closed
    assert (s.charge_end_at, s.charging, s.last_meter_wh) == (T0 + 300, False, 1_510)
    ledger.update(sid, charge_start_at=T0 + 1000)  # charging restarts after the outage
    record = ledger.close(sid, T0 + 2000, 2_000, "EVDisconnected")
    assert (record["chargeStartAt"], record["energyWh"]) == ("2026-09-21T14:13:30.000Z", 1_000)


def test_prune_forgets_only_reported_sessions(ledger: Ledger) -> None:
    a = ledger.open_session(1, T0, 0).session_id
    b = ledger.open_session(2, T0, 0).session_id
    ledger.close(a, T0 + 1, 0, "Local")
    ledger.close(b, T0 + 1, 0, "Local")
    ledger.mark_reported(a, 1)
    assert ledger.prune(T0 + 100) == 1
    assert [s.session_id for s in ledger.unreported()] == [b]


def test_sessions_of_a_stopped_agent_include_those_still_in_the_wal(db: Path) -> None:
    """`evse-agent sessions` with the agent stopped: a process that ended without a checkpoint
    (SIGKILL, power loss, no close) left its newest commits only in the -wal file."""
    import subprocess
    import sys

    from agent.ledger import read_sessions

    writer = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from agent.ledger import Ledger\n"
        "led = Ledger(Path(sys.argv[1]))\n"
        f"s = led.open_session(1, {T0}, 10_000, session_id='s-wal')\n"
        f"led.close(s.session_id, {T0} + 600, 10_500, 'EVDisconnected')\n"
        "from agent.writer import shared_writer\n"
        "shared_writer().call(lambda: None)  # the commits have landed\n"
        "os._exit(0)  # then no close, no checkpoint\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(db)], check=True, timeout=60)
    wal = db.with_name(db.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the session lives in the WAL only

    [found] = read_sessions(db)
    assert (found.session_id, found.listing()["energyWh"]) == ("s-wal", 500)


def test_reading_a_checkpointed_ledger_creates_no_files(db: Path) -> None:
    from agent.ledger import read_sessions

    led = Ledger(db)
    s = led.open_session(1, T0, 0, session_id="s-1")
    led.close(s.session_id, T0 + 60, 100, "EVDisconnected")
    led.close_db()
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    before = sorted(p.name for p in db.parent.iterdir())
    assert [s.session_id for s in read_sessions(db)] == ["s-1"]
    assert sorted(p.name for p in db.parent.iterdir()) == before


def test_a_session_that_commits_between_the_two_reads_is_still_listed(ledger: Ledger) -> None:
    """The listing reads the writer's queue before the database: a closed session leaves the
    queue only after its commit. Here the writer is held while the close is queued and let go
    right after the database read (the other order lost the session from both)."""
    writer, query = ledger._db.writer, ledger._db.query
    hold = threading.Event()
    try:
        s = ledger.open_session(1, T0, 0)
        ledger.flush()
        writer.submit(hold.wait)
        ledger.close(s.session_id, T0 + 60, 500, "EVDisconnected")  # queued behind the held job

        def query_then_commit(*args: Any, **kwargs: Any) -> Any:
            rows = query(*args, **kwargs)
            hold.set()
            writer.call(lambda: None)  # the close commits and leaves the queue
            return rows

        ledger._db.query = query_then_commit  # type: ignore[method-assign]
        assert [x.session_id for x in ledger.unreported()] == [s.session_id]
    finally:
        hold.set()
