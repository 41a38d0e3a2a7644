"""Acceptance, point 4: one group command curtails three chargers on one broker.

Three rigs and three agent processes with their own device ids, all configured into group
``tx-7``; one publish on ``{root}/group/tx-7/cmd``; each answers on its own ``rsp`` and offers
the curtailed current on its own (simulated) pilot board.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from hil.broker import Mosquitto
from hil.envelope import envelope
from tests.hil.orderly_harness import ROOT, AgentOnRig

pytestmark = [pytest.mark.mqtt, pytest.mark.hil]

GROUP = "tx-7"
DEVICES = ("CN-GRP-0001", "CN-GRP-0002", "CN-GRP-0003")


async def test_a_group_command_curtails_every_charger_of_the_group(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        chargers = [await stack.enter_async_context(AgentOnRig(
            tmp_path / dev, broker, device_id=dev, mqtt={"groups": [GROUP]}))
            for dev in DEVICES]
        for a in chargers:
            await a.plug_and_charge()
            await a.wait_offer(32)
            status = a.recorder.json_on(f"{a.base}/status")[-1]
            assert status["capabilities"]["groups"] == [GROUP]

        cmd = envelope("setLimit", {"limit": {"value": 2.2, "unit": "kW"}, "durationS": 900,
                                    "reason": "transformer evening peak"})
        await chargers[0].publish(cmd, topic=f"{ROOT}/group/{GROUP}/cmd")

        for a in chargers:
            reply = await a.reply(cmd["id"])
            assert (reply["status"], reply["deviceId"]) == ("accepted", a.device_id)
            await a.wait_offer(10)  # 2.2 kW at 220 V on one phase
            started = await a.wait_event("commandStarted",
                                         lambda e: e["body"].get("commandId") == cmd["id"])
            assert started["body"]["appliedLimitA"] == pytest.approx(10, abs=0.5)
            assert a.rig.contactor_closed()
        # each answered once, on its own topic only
        for a in chargers:
            assert len(a.replies(cmd["id"])) == 1
