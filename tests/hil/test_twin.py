"""A twin charger end to end: config/twin.example.yaml on the rig (two pilot boards, two relay
boards, two meters on three virtual ports), the agent process and a real mosquitto.

- two vehicles charge on both connectors independently;
- S2 open on one opens only its contactor; a fault on one stops only that one (and its fault
  event names it);
- siteMax is the station's: shared equally, reallocated as vehicles come and go, a share below
  6 A pauses the vehicle that arrived last; the sum of the offers (the duty on each simulated
  board) never exceeds it;
- a W limit is converted at each connector's own phases and voltage;
- a group setLimit and a connector-specific one of the same priority: the lower wins; a higher
  priority lifts it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from hil.broker import Mosquitto
from hil.envelope import envelope, now_iso
from tests.hil.orderly_harness import REPO, AgentOnRig

pytestmark = [pytest.mark.mqtt, pytest.mark.hil]

TWIN = REPO / "config" / "twin.example.yaml"
DEVICE = "CN-TWIN-0001"


def twin(tmp_path: Path, broker: Mosquitto) -> AgentOnRig:
    return AgentOnRig(tmp_path, broker, device_id=DEVICE, base=TWIN)


async def plug(a: AgentOnRig, cid: int) -> None:
    a.rig.ev_action("plug_in", connector=cid, cable_a=32.0)
    a.rig.ev_action("close_s2", connector=cid)


async def wait_offer(a: AgentOnRig, cid: int, amps: float, tol: float = 0.5) -> None:
    await a.wait(lambda: abs(a.rig.offered_a(cid) - amps) <= tol,
                 f"connector {cid} offers {amps} A (now {a.rig.offered_a(cid):.1f} A)")


async def wait_contactor(a: AgentOnRig, cid: int, closed: bool) -> None:
    await a.wait(lambda: a.rig.contactor_closed(cid) == closed,
                 f"connector {cid} contactor {'closed' if closed else 'open'}", 30.0)


def site_max(limit: float) -> dict[str, Any]:
    return envelope("setProfile", {
        "profileId": "site", "layer": "siteMax", "stackLevel": 0, "kind": "absolute",
        "schedule": {"unit": "A", "startAt": now_iso(-60),
                     "periods": [{"offsetS": 0, "limit": limit}]}})


def max_offer_sum(a: AgentOnRig, since: float = 0.0) -> float:
    """Largest sum of the two boards' offers at any instant of the rig's timeline."""
    offers = {1: 0.0, 2: 0.0}
    worst = 0.0
    for e in a.rig.timeline.events("signal", name="offered_a"):
        offers[int(e.data["connector"])] = float(e.data["value"])
        if e.t >= since:
            worst = max(worst, sum(offers.values()))
    return worst


async def test_two_vehicles_charge_independently_and_faults_stay_on_their_connector(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with twin(tmp_path, broker) as a:
        await plug(a, 1)
        await plug(a, 2)
        for cid in (1, 2):
            await wait_contactor(a, cid, True)
            await wait_offer(a, cid, 32)
        await a.wait(lambda: all(a.rig.connector(c).ev.current_a() > 20 for c in (1, 2)),
                     "both vehicles draw")

        # S2 open on connector 2: only its contactor opens
        a.rig.ev_action("open_s2", connector=2)
        await wait_contactor(a, 2, False)
        assert a.rig.contactor_closed(1) and a.rig.offered_a(1) == pytest.approx(32, abs=0.5)
        assert a.rig.connector(1).ev.current_a() > 20

        # it closes S2 again and charges again (min off time 0 on this bench)
        a.rig.ev_action("close_s2", connector=2)
        await wait_contactor(a, 2, True)

        # a residual-current trip on connector 1: it stops, connector 2 charges on
        t_fault = a.rig.inject("rcd_trip", True, connector=1)
        await wait_contactor(a, 1, False)
        await a.wait(lambda: a.rig.offered_a(1) == 0, "no PWM on connector 1")
        fault = await a.wait_event("fault", lambda e: e["body"]["code"] == "RCD_TRIP")
        assert fault["connector"] == 1
        await asyncio.sleep(1.0)
        assert a.rig.contactor_closed(2) and a.rig.offered_a(2) == pytest.approx(32, abs=0.5)
        assert not [e for e in a.events("fault") if e.get("connector") == 2]
        opens = a.rig.timeline.events("frame", since=t_fault, what="contactor_open")
        assert opens and all(f.data["bus"] == "control-1" for f in opens)


async def test_site_max_is_shared_between_the_two_connectors(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with twin(tmp_path, broker) as a:
        cmd = site_max(20)
        await a.publish(cmd)
        assert (await a.reply(cmd["id"]))["status"] == "accepted"

        await plug(a, 1)  # alone: the whole of siteMax
        await wait_contactor(a, 1, True)
        await wait_offer(a, 1, 20)
        await plug(a, 2)  # arrival: 10 A each
        await wait_contactor(a, 2, True)
        await wait_offer(a, 1, 10)
        await wait_offer(a, 2, 10)
        assert max_offer_sum(a) <= 20 + 0.5

        cmd = site_max(10)  # 5 A each would not charge: the later arrival (2) pauses
        await a.publish(cmd)
        assert (await a.reply(cmd["id"]))["status"] == "accepted"
        await wait_offer(a, 2, 0)
        await wait_offer(a, 1, 10)
        t_paused = a.rig.now()
        await asyncio.sleep(1.0)
        assert a.rig.offered_a(2) == 0 and a.rig.contactor_closed(1)
        assert max_offer_sum(a, since=t_paused) <= 10 + 0.5

        a.rig.ev_action("unplug", connector=1)  # departure: the paused one resumes
        await wait_offer(a, 2, 10)
        await wait_contactor(a, 2, True)
        assert max_offer_sum(a, since=t_paused) <= 10 + 0.5
        assert max_offer_sum(a) <= 20 + 0.5


async def test_a_w_limit_is_converted_with_each_connectors_own_phases_and_voltage(
    broker: Mosquitto, tmp_path: Path
) -> None:
    data = yaml.safe_load(TWIN.read_text())
    data["connectors"][0].update(nominal_voltage_v=230)  # 1-phase 230 V
    data["connectors"][1].update(phases=3)  # 3 x 220 V
    base = tmp_path / "twin-mixed.yaml"
    base.write_text(yaml.safe_dump(data, sort_keys=False))
    async with AgentOnRig(tmp_path, broker, device_id=DEVICE, base=base) as a:
        cmd = envelope("setLimit", {"limit": {"value": 6.6, "unit": "kW"}, "durationS": 900})
        await a.publish(cmd)  # no connector: both
        assert (await a.reply(cmd["id"]))["status"] == "accepted"
        await plug(a, 1)
        await plug(a, 2)
        await wait_offer(a, 1, 6600 / 230)  # 28.7 A on one phase at 230 V
        await wait_offer(a, 2, 6600 / 660)  # 10 A per phase on 3 x 220 V
        state = a.state()
        assert state is not None
        limits = {c["connector"]: c["limitA"] for c in state["connectors"]}
        assert limits[1] == pytest.approx(6600 / 230, abs=0.05)
        assert limits[2] == pytest.approx(6600 / 660, abs=0.05)  # not at connector 1's volts


async def test_group_and_connector_set_limits_of_one_priority_the_lower_wins(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with AgentOnRig(tmp_path, broker, device_id=DEVICE, base=TWIN,
                          mqtt={"groups": ["tx-9"]}) as a:
        await plug(a, 1)
        await plug(a, 2)
        await wait_offer(a, 1, 32)
        await wait_offer(a, 2, 32)
        group = envelope("setLimit", {"limit": {"value": 10, "unit": "A"}, "durationS": 900})
        await a.publish(group, topic="evse/v1/group/tx-9/cmd")
        assert (await a.reply(group["id"]))["status"] == "accepted"
        mine = envelope("setLimit", {"limit": {"value": 16, "unit": "A"}, "durationS": 900},
                        connector=1)
        await a.publish(mine)
        assert (await a.reply(mine["id"]))["status"] == "accepted"
        await wait_offer(a, 1, 10)
        await wait_offer(a, 2, 10)
        await asyncio.sleep(1.0)  # the connector-specific 16 A does not lift the group's 10 A
        assert a.rig.offered_a(1) == pytest.approx(10, abs=0.5)

        vip = envelope("setLimit", {"limit": {"value": 16, "unit": "A"}, "durationS": 900,
                                    "priority": 1}, connector=1)
        await a.publish(vip)  # a higher priority does
        assert (await a.reply(vip["id"]))["status"] == "accepted"
        await wait_offer(a, 1, 16)
        assert a.rig.offered_a(2) == pytest.approx(10, abs=0.5)
