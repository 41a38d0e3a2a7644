"""Acceptance, point 1: every command type is applied (reply and effect), every refusal answered.

Real mosquitto on a free port, the agent as a separate process, the HIL rig for the hardware;
effects are read on the rig (offered current from the accepted PWM duty, the contactor's mirror
contact) and on the broker (events, retained status/state), never from the agent's own log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hil.broker import Mosquitto
from hil.envelope import envelope, now_iso
from hil.recorder import Recorder
from tests.hil.orderly_harness import AgentOnRig

pytestmark = [pytest.mark.mqtt, pytest.mark.hil]

LIMIT_10A = {"limit": {"value": 10, "unit": "A"}, "durationS": 600}


def accepted(reply: dict[str, Any]) -> bool:
    return bool(reply["status"] == "accepted" and reply["reason"] == "OK")


async def test_limits_profiles_composite_config_and_resync_are_applied(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with AgentOnRig(tmp_path, broker) as a:
        await a.plug_and_charge()
        await a.wait_offer(32)

        lim = await a.send("setLimit", LIMIT_10A)
        assert accepted(lim)
        await a.wait_offer(10)
        started = await a.wait_event("commandStarted",
                                     lambda e: e["body"].get("commandId") == lim["commandId"])
        assert started["body"]["appliedLimit"] == {"value": 10.0, "unit": "A"}

        comp = await a.send("getComposite", {"horizonS": 3600, "unit": "A"})
        assert accepted(comp)
        (schedule,) = comp["composite"]
        assert schedule["connector"] == 1 and schedule["unit"] == "A"
        first, *later = schedule["periods"]
        assert (first["offsetS"], first["limit"], first["source"]) == (0, 10.0, "grid")
        assert later and later[0]["limit"] == 32.0  # the lease lapses within the horizon
        assert 595 <= later[0]["offsetS"] <= 600

        prof = await a.send("setProfile", {
            "profileId": "evening-cap", "layer": "default", "stackLevel": 1,
            "kind": "absolute", "schedule": {"unit": "A", "startAt": now_iso(-1),
                                             "periods": [{"offsetS": 0, "limit": 8}]}})
        assert accepted(prof)
        await a.wait_offer(8)
        await a.wait(lambda: (a.state() or {}).get("connectors", [{}])[0].get("limitSource")
                     == "default", "state names the default layer")

        cleared = await a.send("clearProfile", {"profileId": "evening-cap"})
        assert accepted(cleared)
        await a.wait_offer(10)
        await a.wait_event("commandCleared", lambda e: e["body"].get("profileId") == "evening-cap")
        lease = await a.send("clearProfile", {"profileId": lim["commandId"]})
        assert accepted(lease)
        await a.wait_offer(32)
        nothing = await a.send("clearProfile", {"profileId": "no-such-profile"})
        assert nothing["status"] == "unknown"

        cfg = await a.send("setConfig", {"telemetryPeriodS": 3, "idleOccupancyS": 120})
        assert accepted(cfg) and cfg["configVersion"] == 1
        changed = await a.wait_event("configChanged")
        assert changed["body"]["configVersion"] == 1
        assert changed["body"]["config"]["telemetryPeriodS"] == 3
        assert changed["body"]["config"]["idleOccupancyS"] == 120
        await a.wait(lambda: (a.state() or {}).get("configVersion") == 1, "state configVersion")

        births = len(a.recorder.on(f"{a.base}/status"))
        upto = a.events()[-1]["seq"]
        resync = await a.send("resync", {"fromSeq": 1})
        assert accepted(resync)

        def twice(seq: int) -> bool:
            return sum(1 for e in a.events() if e["seq"] == seq) >= 2
        evt_seqs = {e["seq"] for e in a.events() if e["seq"] <= upto}
        await a.wait(lambda: all(twice(s) for s in evt_seqs), "every evt republished")
        assert len(a.recorder.on(f"{a.base}/status")) > births  # status republished too
        assert min(evt_seqs) == 1


async def test_remote_start_and_stop_session(broker: Mosquitto, tmp_path: Path) -> None:
    async with AgentOnRig(tmp_path, broker, connector={"authorisation": "remote"}) as a:
        early = await a.send("startSession", {"idTag": "RFID-0001"})
        assert (early["status"], early["reason"]) == ("rejected", "NO_ACTIVE_SESSION")

        a.rig.ev_action("plug_in", cable_a=32)
        a.rig.ev_action("close_s2")
        session = await a.wait_event("sessionStarted")
        assert not a.rig.contactor_closed() and a.rig.offered_a() == 0  # waits for the start

        start = await a.send("startSession", {"idTag": "RFID-0001"})
        assert accepted(start)
        await a.wait(a.rig.contactor_closed, "contactor closed after startSession")
        await a.wait_offer(32)
        await a.wait_event("contactorChanged", lambda e: e["body"]["feedback"] == "closed")

        stop = await a.send("stopSession", {})
        assert accepted(stop)
        await a.wait(lambda: not a.rig.contactor_closed(), "contactor open after stopSession")
        assert a.rig.offered_a() == 0

        a.rig.ev_action("unplug")
        ended = await a.wait_event("sessionEnded")
        record = ended["body"]
        assert record["sessionId"] == session["body"]["sessionId"]
        assert record["stopReason"] == "Remote" and record["idTag"] == "RFID-0001"
        assert record["chargeStartAt"] and record["chargeEndAt"] and record["plugOutAt"]
        assert record["energyWh"] == record["meterStopWh"] - record["meterStartWh"]

        late = await a.send("stopSession", {})
        assert (late["status"], late["reason"]) == ("rejected", "NO_ACTIVE_SESSION")

        # authorised and stopped at once, before any current flowed: still names the idTag
        a.rig.ev_action("plug_in", cable_a=32)
        a.rig.ev_action("close_s2")
        await a.wait(lambda: len(a.events("sessionStarted")) == 2, "second session")
        assert accepted(await a.send("startSession", {"idTag": "RFID-0002"}))
        assert accepted(await a.send("stopSession", {}))
        await a.wait(lambda: not a.rig.contactor_closed() and a.rig.offered_a() == 0, "stopped")
        a.rig.ev_action("unplug")
        await a.wait(lambda: len(a.events("sessionEnded")) == 2, "second record")
        second = a.events("sessionEnded")[1]["body"]
        assert (second["stopReason"], second.get("idTag")) == ("Remote", "RFID-0002")


async def test_decommission_stops_charging_and_retires_the_charger(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with AgentOnRig(tmp_path, broker) as a:
        await a.plug_and_charge()
        await a.wait(lambda: a.state() is not None, "retained state")

        wrong = await a.send("decommission", {"confirm": "CN-OTHER-0002"})
        assert (wrong["status"], wrong["reason"]) == ("rejected", "LOCAL_CONSTRAINT")
        assert a.rig.contactor_closed()

        done = await a.send("decommission", {"confirm": a.device_id})
        assert accepted(done)
        await a.wait(lambda: not a.rig.contactor_closed(), "contactor open")
        assert a.rig.offered_a() == 0
        await a.wait(lambda: any(s.get("decommissioned") for s in
                                 a.recorder.json_on(f"{a.base}/status")), "final status")

        async with Recorder(broker.host, broker.port,
                            [f"{a.base}/status", f"{a.base}/state"]) as fresh:
            await fresh.wait_for(lambda: bool(fresh.on(f"{a.base}/status")), 5.0, "retained")
            retained = fresh.json_on(f"{a.base}/status")
            assert retained[-1]["online"] is False and retained[-1]["decommissioned"] is True
            assert retained[-1]["deviceId"] == a.device_id
            assert not fresh.on(f"{a.base}/state")  # retained state cleared

        ignored = envelope("setLimit", LIMIT_10A)  # the link is gone: nobody answers
        await a.publish(ignored)
        await a.wait(lambda: not a.rig.contactor_closed(), "still open")
        assert not a.replies(ignored["id"])


async def test_every_refusal_is_answered_with_its_reason(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with AgentOnRig(tmp_path, broker) as a:
        await a.plug_and_charge()
        await a.wait_offer(32)

        async def refused(env: dict[str, Any] | bytes, status: str, reason: str,
                          command_id: str | None = None) -> dict[str, Any]:
            cid = command_id or (env["id"] if isinstance(env, dict) else None)
            before = len(a.replies(cid))
            await a.publish(env)
            reply = await a.reply(cid, before + 1) if cid else None
            assert reply is not None
            assert (reply["status"], reply["reason"]) == (status, reason), reply
            return reply

        await refused(json.dumps({"v": 1, "id": "bad-1", "type": "setLimit"}).encode(),
                      "rejected", "INVALID_SCHEMA", "bad-1")
        await refused(envelope("setLimit", {"limit": {"value": 10, "unit": "kWh"},
                                            "durationS": 60}), "rejected", "UNIT_UNSUPPORTED")
        await refused(envelope("setProfile", {
            "profileId": "p", "layer": "grid", "stackLevel": 0, "kind": "absolute",
            "schedule": {"unit": "A", "startAt": now_iso(),
                         "periods": [{"offsetS": 60, "limit": 8}]}}),
            "rejected", "INVALID_SCHEDULE")
        await refused(envelope("setProfile", {
            "profileId": "p", "layer": "grid", "stackLevel": 0, "kind": "absolute",
            "schedule": {"unit": "A", "startAt": now_iso(),
                         "periods": [{"offsetS": 60 * i, "limit": 8} for i in range(673)]}}),
            "rejected", "TOO_MANY_PERIODS")
        await refused(envelope("setLimit", LIMIT_10A, issuedAt=now_iso(-120),
                               expiresAt=now_iso(-60)), "rejected", "EXPIRED")
        await refused(envelope("setLimit", LIMIT_10A, issuedAt=now_iso(3600)),
                      "rejected", "CLOCK_SKEW")
        await refused(envelope("setLimit", {"limit": {"value": -5, "unit": "A"},
                                            "durationS": 60}),
                      "notSupported", "LOCAL_CONSTRAINT")

        first = envelope("setLimit", {"limit": {"value": 16, "unit": "A"}, "durationS": 600})
        await a.publish(first)
        assert accepted(await a.reply(first["id"]))
        await a.wait_offer(16)
        conflict = {**first, "body": LIMIT_10A}
        await refused(conflict, "rejected", "ID_CONFLICT")
        replay = envelope("setLimit", LIMIT_10A, seq=first["seq"])
        await refused(replay, "rejected", "REPLAY")
        sec = await a.wait_event("securityReject",
                                 lambda e: e["body"].get("commandId") == replay["id"])
        assert sec["body"]["reason"] == "REPLAY" and sec["body"]["issuer"] == "agg-1"

        assert a.rig.offered_a() == pytest.approx(16, abs=0.5)  # no refusal changed anything
        limited = [e for e in a.events("commandStarted")]
        assert [e["body"]["commandId"] for e in limited] == [first["id"]]
