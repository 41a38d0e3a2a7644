"""Without an aggregator sessions are recorded in the ledger, listed, and never reported upstream.

The service, its ledger file and its worker-thread writes are real; the connector is the
stand-in of test_local_limits (a real pilot machine and the stats a meter task would fill).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.api.reasons import StopReason
from agent.cli import parse_since, render_sessions
from agent.ledger import Ledger
from agent.orderly import local as local_mod
from agent.orderly.local import TICK_S, LocalService
from agent.pilot import SessionEvent
from drivers.interfaces import MeterReading
from tests.unit.test_local_limits import StandInController, config, service


def meter(wh: float, amps: float) -> MeterReading:
    return MeterReading((230.0,), (amps,), 230.0 * amps, wh)


async def drained(svc: LocalService) -> None:
    """Until every queued note has been written (the consumer runs them one by one)."""
    for _ in range(500):
        if svc._queue.empty():
            await asyncio.sleep(0.05)  # the last one may still be in its worker thread
            if svc._queue.empty():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("notes not consumed")


@pytest.fixture(autouse=True)
def no_recovery_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_mod, "RECOVERY_WAIT_S", 0.0)  # the stand-in has no pilot samples


async def one_session(svc: LocalService, ctl: StandInController) -> None:
    ctl.stats.last_meter = meter(10_000, 0.0)
    svc.note(1, SessionEvent("plugged"), 0.0)
    await drained(svc)  # notes read the meter when they are written
    ctl.stats.last_meter = meter(10_050, 12.9)
    svc.note(1, SessionEvent("charging_started"), 0.0)
    await drained(svc)
    svc.trackers[1].tick(time.time())  # what the 5 s tick does
    await svc.set_limit(1, 10.0)
    ctl.stats.last_meter = meter(12_500, 9.8)
    svc.note(1, SessionEvent("charging_stopped", "S2 opened (state 2)"), 0.0)
    svc.note(1, SessionEvent("unplugged"), 0.0)
    await drained(svc)


async def test_a_session_is_recorded_with_meter_energy_max_current_and_curtailments(
        tmp_path: Path) -> None:
    svc, ctl = service(config(tmp_path, local_limit_a=13.0))
    task = asyncio.create_task(svc.run())
    try:
        await one_session(svc, ctl)
        [s] = await svc.sessions(None, None)
    finally:
        task.cancel()
    assert s["connector"] == 1 and s["end"] is not None
    assert (s["meterStartWh"], s["meterStopWh"], s["energyWh"]) == (10_000, 12_500, 2_500)
    assert s["maxCurrentA"] == 12.9
    assert s["stopReason"] == StopReason.STOPPED_BY_EV.value
    ids = [(c["installer"], c["limit"]["value"]) for c in s["curtailments"]]
    assert ids == [("local_limit_a", 13.0), ("evse-agent limit", 10.0)]
    assert all(c["to"] is not None for c in s["curtailments"])
    assert s["reportedUpstream"] is False
    # a later aggregator finds nothing to report: local sessions stay local
    led = Ledger(tmp_path / "sessions.db")
    try:
        assert led.unreported() == []
        assert [x.session_id for x in led.sessions()] == [s["sessionId"]]
    finally:
        led.close_db()


async def test_filters_since_and_connector(tmp_path: Path) -> None:
    svc, ctl = service(config(tmp_path))
    task = asyncio.create_task(svc.run())
    try:
        await one_session(svc, ctl)
        assert len(await svc.sessions(time.time() - 60, 1)) == 1
        assert await svc.sessions(time.time() + 60, None) == []
        assert await svc.sessions(None, 2) == []
    finally:
        task.cancel()


async def test_a_session_left_open_by_a_crash_is_closed_as_power_loss_and_stays_local(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    svc, ctl = service(cfg)
    ctl.stats.last_meter = meter(500, 0.0)
    task = asyncio.create_task(svc.run())
    svc.note(1, SessionEvent("plugged"), 0.0)
    await drained(svc)
    task.cancel()  # the agent dies with the session open
    svc2, _ = service(cfg)  # restart, EV gone (no pilot level: not plugged)
    task = asyncio.create_task(svc2.run())
    try:
        await drained(svc2)
        for _ in range(100):
            [s] = await svc2.sessions(None, None)
            if s["end"] is not None:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert s["stopReason"] == "PowerLoss" and s["reportedUpstream"] is False
    assert svc2.ledger.unreported() == []


def test_tick_period_is_short_enough_to_see_a_charge() -> None:
    assert 0 < TICK_S <= 10


def test_parse_since_takes_durations_and_iso_times() -> None:
    now = 1_790_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("30m", now) == now - 1800
    assert parse_since("12h", now) == now - 43200
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("2026-12-01T08:00:00Z", now) == datetime(
        2026, 12, 1, 8, tzinfo=UTC).timestamp()
    for bad in ("yesterday", "7x", "", "-3d"):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad, now)


def test_render_sessions_lists_one_line_per_session() -> None:
    row = {"connector": 1, "start": "2026-12-04T13:00:00.000Z", "end": None, "energyWh": 2500,
           "maxCurrentA": 12.9, "stopReason": None, "curtailments": [{}],
           "curtailmentsMerged": {"count": 40}}
    text = render_sessions([row])
    assert "2.500" in text and "(plugged in)" in text and "1 (+40 merged)" in text
    assert render_sessions([]) == "no sessions recorded"


async def test_an_unwritable_ledger_does_not_stop_the_charger(tmp_path: Path) -> None:
    (tmp_path / "sessions.db").mkdir()  # a directory where the file should be: cannot open
    svc, ctl = service(config(tmp_path, local_limit_a=16.0))
    assert ctl.machine.requested_current_a == 16.0  # the limit still applies
    task = asyncio.create_task(svc.run())
    try:
        await one_session(svc, ctl)
        [s] = await svc.sessions(None, None)  # recorded, in memory
        assert s["energyWh"] == 2_500
    finally:
        task.cancel()


def test_sessions_are_listed_read_only_when_the_agent_is_stopped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from agent.cli import main

    led = Ledger(tmp_path / "sessions.db")
    s = led.open_session(1, 1_790_000_000.0, 100, session_id="kept")
    led.update(s.session_id, current_a=15.5)
    led.close(s.session_id, 1_790_000_600.0, 1_600, "EVDisconnected")
    led.mark_local(s.session_id)
    led.close_db()
    before = sorted(p.name for p in tmp_path.iterdir())
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" /
                           "evse-agent.example.yaml").read_text())
    data["state_dir"] = str(tmp_path)
    cfg = tmp_path.parent / f"{tmp_path.name}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["sessions", "--json", "-c", str(cfg)]) == 0  # no agent: no control socket
    out, err = capsys.readouterr()
    [row] = json.loads(out)
    assert (row["sessionId"], row["energyWh"], row["maxCurrentA"]) == ("kept", 1_500, 15.5)
    assert "reading" in err and "directly" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert main(["sessions", "--since", "1d", "-c", str(cfg)]) == 0
    assert "no sessions recorded" in capsys.readouterr().out


async def charging_from(svc: LocalService, ctl: StandInController, wh: float) -> None:
    """Plugged and charging, the meter at ``wh`` and 0 A when both notes were written."""
    ctl.stats.last_meter = meter(wh, 0.0)
    svc.note(1, SessionEvent("plugged"), 0.0)
    svc.note(1, SessionEvent("charging_started"), 0.0)
    await drained(svc)


async def test_a_session_shorter_than_a_tick_records_its_peak_current(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Peaks are sampled every meter period, not only at the 5 s tick: a short session (or a
    peak between two ticks) is not recorded with maxCurrentA 0."""
    monkeypatch.setattr(local_mod, "PEAK_S", 0.02)
    monkeypatch.setattr(local_mod, "TICK_S", 3600.0)
    svc, ctl = service(config(tmp_path))
    task = asyncio.create_task(svc.run())
    try:
        await charging_from(svc, ctl, 10_000)
        ctl.stats.last_meter = meter(10_002, 15.8)  # charging, between two ticks
        for _ in range(200):
            s = svc.trackers[1].session
            if s is not None and s.max_current_a == 15.8:
                break
            await asyncio.sleep(0.01)
        ctl.stats.last_meter = meter(10_004, 0.0)  # the contactor opened before the unplug
        svc.note(1, SessionEvent("charging_stopped", "S2 opened (state 2)"), 0.0)
        svc.note(1, SessionEvent("unplugged"), 0.0)
        await drained(svc)
        [rec] = await svc.sessions(None, None)
    finally:
        task.cancel()
    assert rec["end"] is not None and rec["maxCurrentA"] == 15.8


async def test_the_reading_at_the_unplug_counts_towards_the_peak(tmp_path: Path) -> None:
    svc, ctl = service(config(tmp_path))  # the 5 s tick never comes in this test
    task = asyncio.create_task(svc.run())
    try:
        await charging_from(svc, ctl, 10_000)
        ctl.stats.last_meter = meter(10_001, 7.4)
        svc.note(1, SessionEvent("unplugged"), 0.0)
        await drained(svc)
        [rec] = await svc.sessions(None, None)
    finally:
        task.cancel()
    assert rec["maxCurrentA"] == 7.4
