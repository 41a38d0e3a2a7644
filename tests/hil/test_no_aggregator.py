"""A charger without an aggregator (``mqtt: null``) on the rig, driven by its command line.

- the EV charges at the configured ``local_limit_a``;
- ``evse-agent limit`` changes the duty on the (virtual) wire, bad input exits 2 and changes
  nothing, the limit survives an agent restart and ``limit none`` restores the configured one;
- ``evse-agent status --json`` says which limit is in force and where it came from;
- the session (one plug-in, across the restart) is listed by ``evse-agent sessions --json`` with
  its energy from the meter's register, its max current and the limits that applied;
- when an aggregator is configured later, the local history stays local (listed, never sent)
  and the next session is reported as usual.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hil.agent_process import AgentProcess
from hil.broker import Mosquitto
from hil.poll import wait_until
from hil.recorder import Recorder
from hil.rig import Rig, RigOptions
from tests.hil.orderly_harness import agent_config, run_cli

pytestmark = pytest.mark.hil
CONFIGURED_A = 13.0
WAIT_S = 20.0


async def cli(cfg: Path, *args: str) -> tuple[int, str, str]:
    done = await run_cli(sys.executable, "-m", "agent.cli", *args, "-c", str(cfg))
    return done.returncode, done.stdout, done.stderr


async def status(cfg: Path) -> dict[str, Any]:
    code, out, err = await cli(cfg, "status", "--json")
    assert code == 0, err
    reply: dict[str, Any] = json.loads(out)
    return reply


async def wait_offer(rig: Rig, amps: float) -> None:
    await wait_until(lambda: abs(rig.offered_a() - amps) <= 0.5, WAIT_S,
                     f"offer {amps} A on the wire (now {rig.offered_a():.1f} A)")


async def start(cfg: Path, log: Path) -> AgentProcess:
    agent = AgentProcess(cfg, log)
    agent.start()
    await agent.wait_ready()
    return agent


async def test_local_limit_applies_persists_and_shows_in_status(tmp_path: Path) -> None:
    config = agent_config("CN-LOCAL-0001", {"mqtt": None},
                          connector={"local_limit_a": CONFIGURED_A})
    assert config.mqtt is None
    async with Rig(config, tmp_path / "run", options=RigOptions()) as rig:
        cfg = await asyncio.to_thread(rig.write_patched_config)
        agent = await start(cfg, tmp_path / "agent-1.log")
        try:
            rig.ev_action("plug_in", cable_a=32.0)
            rig.ev_action("close_s2")
            await wait_until(rig.contactor_closed, WAIT_S, "contactor closed")
            await wait_offer(rig, CONFIGURED_A)
            lim = (await status(cfg))["connectors"][0]["limit"]
            assert (lim["limitA"], lim["source"], lim["layer"]) == (CONFIGURED_A, "config",
                                                                    "local")

            code, _, err = await cli(cfg, "limit", "10", "--connector", "1")
            assert code == 0, err
            await wait_offer(rig, 10.0)
            lim = (await status(cfg))["connectors"][0]["limit"]
            assert (lim["limitA"], lim["source"]) == (10.0, "installer")
            assert lim["since"] and "local-limits.json" in lim["ref"]

            code, _, err = await cli(cfg, "limit", "ten")
            assert code == 2 and "number of amperes" in err
            code, _, err = await cli(cfg, "limit", "99")
            assert code == 2 and "between 0 and 80" in err
            assert (await status(cfg))["connectors"][0]["limit"]["limitA"] == 10.0

            await asyncio.to_thread(agent.stop)
            agent = await start(cfg, tmp_path / "agent-2.log")  # the limit was stored
            await wait_until(rig.contactor_closed, WAIT_S, "contactor closed after restart")
            await wait_offer(rig, 10.0)
            assert (await status(cfg))["connectors"][0]["limit"]["source"] == "installer"
            text = (await cli(cfg, "status"))[1]
            assert "limit 10 A from installer" in text

            code, _, err = await cli(cfg, "limit", "none")
            assert code == 0, err
            await wait_offer(rig, CONFIGURED_A)
            lim = (await status(cfg))["connectors"][0]["limit"]
            assert (lim["limitA"], lim["source"]) == (CONFIGURED_A, "config")

            # the session (one plug-in across the restart) is in the local record
            await wait_until(lambda: rig.connector(1).energy_wh > 5.0, WAIT_S, "5 Wh charged")
            rig.ev_action("unplug")
            register_wh = rig.connector(1).energy_wh  # no more energy flows after the unplug
            sessions: list[dict[str, Any]] = []
            for _ in range(100):
                code, out, err = await cli(cfg, "sessions", "--json")
                assert code == 0, err
                sessions = json.loads(out)
                if sessions and sessions[-1]["end"] is not None:
                    break
                await asyncio.sleep(0.1)
            [s] = sessions
            assert s["end"] is not None and s["connector"] == 1
            assert s["energyWh"] == s["meterStopWh"] - s["meterStartWh"] > 0
            assert abs(s["meterStopWh"] - register_wh) <= 2  # read from the meter's register
            assert 9.0 <= s["maxCurrentA"] <= CONFIGURED_A + 0.5
            assert s["stopReason"] and s["reportedUpstream"] is False
            limits = [(c["installer"], c["limit"]["value"]) for c in s["curtailments"]]
            assert limits == [("local_limit_a", CONFIGURED_A), ("evse-agent limit", 10.0),
                              ("local_limit_a", CONFIGURED_A)]
            code, out, _ = await cli(cfg, "sessions", "--since", "1h", "--connector", "1")
            assert code == 0 and "kWh" in out and len(out.splitlines()) == 2  # header, one row
        finally:
            await asyncio.to_thread(agent.stop)


async def charge_once(rig: Rig, cfg: Path, sessions_before: int) -> dict[str, Any]:
    """Plug in, charge a few Wh, unplug; the closed session as `sessions --json` lists it."""
    start_wh = rig.connector(1).energy_wh
    rig.ev_action("plug_in", cable_a=32.0)
    rig.ev_action("close_s2")
    await wait_until(rig.contactor_closed, WAIT_S, "contactor closed")
    await wait_until(lambda: rig.connector(1).energy_wh > start_wh + 2.0, WAIT_S, "2 Wh")
    rig.ev_action("unplug")
    for _ in range(100):
        code, out, err = await cli(cfg, "sessions", "--json")
        assert code == 0, err
        listed: list[dict[str, Any]] = json.loads(out)
        if len(listed) > sessions_before and listed[-1]["end"] is not None:
            return listed[-1]
        await asyncio.sleep(0.1)
    raise AssertionError("the session was not listed as closed")


async def test_local_history_stays_local_when_an_aggregator_is_configured_later(
        tmp_path: Path, broker: Mosquitto) -> None:
    device = "CN-LOCAL-0002"
    config = agent_config(device, {"mqtt": None})
    async with Rig(config, tmp_path / "run", options=RigOptions()) as rig:
        local_cfg = await asyncio.to_thread(rig.write_patched_config)
        agent = await start(local_cfg, tmp_path / "agent-local.log")
        try:
            local = await charge_once(rig, local_cfg, 0)
        finally:
            await asyncio.to_thread(agent.stop)
        assert local["reportedUpstream"] is False

        data = rig.patched_config()  # the owner joins an aggregator: same state directory
        data["mqtt"] = {"host": broker.host, "port": broker.port, "tls": False,
                        "random_delay_max_s": 0, "telemetry_period_s": 2, "keepalive_s": 5}
        mqtt_cfg = tmp_path / "agent-mqtt.yaml"
        mqtt_cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        recorder = Recorder(broker.host, broker.port, [f"evse/v1/{device}/#"])
        await recorder.connect()
        agent = await start(mqtt_cfg, tmp_path / "agent-mqtt.log")
        try:
            reported = await charge_once(rig, mqtt_cfg, 1)
            evt = f"evse/v1/{device}/evt"
            await wait_until(lambda: any(e.get("type") == "sessionEnded"
                                         for e in recorder.json_on(evt)), WAIT_S, "sessionEnded")
            await asyncio.sleep(1.0)  # a resend of the local one would come with it
            ended = [e["body"]["sessionId"] for e in recorder.json_on(evt)
                     if e.get("type") == "sessionEnded"]
            code, out, err = await cli(mqtt_cfg, "sessions", "--json")
            assert code == 0, err
            listed = json.loads(out)
        finally:
            await asyncio.to_thread(agent.stop)
            await recorder.close()
    assert set(ended) == {reported["sessionId"]}  # the local session was never sent
    assert [s["sessionId"] for s in listed] == [local["sessionId"], reported["sessionId"]]
    assert [s["reportedUpstream"] for s in listed] == [False, True]
    assert listed[0]["energyWh"] == local["energyWh"] > 0
