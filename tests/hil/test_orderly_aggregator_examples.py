"""The README's "Integrating an aggregator" examples (docs/aggregator-examples.sh) really work.

The script is run as an integrator would run it, with HOST/PORT/DEVICE pointed at the test
broker and a charging agent; its output (the retained status/state and the replies) and the
charger's behaviour on the rig are checked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from hil.broker import Mosquitto
from hil.ev import current_from_duty
from tests.hil.orderly_harness import REPO, AgentOnRig, run_cli

pytestmark = [pytest.mark.mqtt, pytest.mark.hil]

SCRIPT = REPO / "docs" / "aggregator-examples.sh"


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def test_the_aggregator_examples_run_against_a_live_agent(
    broker: Mosquitto, tmp_path: Path
) -> None:
    if not all(shutil.which(c) for c in ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr")):
        pytest.skip("mosquitto-clients not installed")
    async with AgentOnRig(tmp_path, broker, mqtt={"groups": ["tx-7"]}) as a:
        await a.plug_and_charge()
        await a.wait_offer(32)
        env = {**os.environ, "HOST": broker.host, "PORT": str(broker.port),
               "DEVICE": a.device_id, "GROUP": "tx-7", "MQTT_OPTS": ""}
        done = await run_cli("bash", str(SCRIPT), env=env, limit_s=60)
        assert done.returncode == 0, done.stderr
        status, state, set_limit, composite, group, *rest = json_lines(done.stdout)

        assert status["online"] is True and status["deviceId"] == a.device_id
        assert state["connectors"][0]["contactor"] == "closed"
        assert set_limit["status"] == "accepted" and set_limit["commandId"].startswith("setLimit")
        assert composite["status"] == "accepted"
        assert composite["composite"][0]["periods"][0]["limit"] == pytest.approx(15.91, abs=0.1)
        assert (group["status"], group["deviceId"]) == ("accepted", a.device_id)
        events, cleared = rest[:-1], rest[-1]
        assert len(events) == 2 and all(e["deviceId"] == a.device_id for e in events)
        assert cleared["status"] == "accepted"

        started = {e["body"]["commandId"]: e["body"] for e in a.events("commandStarted")}
        applied = started[set_limit["commandId"]]
        assert applied["appliedLimit"] == {"value": 3.5, "unit": "kW"}  # as the script sent it
        assert applied["appliedLimitA"] == pytest.approx(15.91, abs=0.1)
        assert started[group["commandId"]]["appliedLimitA"] == pytest.approx(10, abs=0.5)
        await a.wait(lambda: {e["body"].get("commandId") for e in a.events("commandCleared")}
                     >= {set_limit["commandId"], group["commandId"]}, "both leases cleared")
        await a.wait_offer(32)  # nothing curtails any more
        offers = [current_from_duty(int(e.data["value"]), a.config.profile)
                  for e in a.rig.timeline.events("board_write", register="duty_cmd")]
        assert any(abs(x - 15.9) < 0.5 for x in offers) and any(abs(x - 10) < 0.5 for x in offers)
