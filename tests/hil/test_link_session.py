"""The MQTT link against a real mosquitto: birth/LWT, re-subscribe, replies, persistent session."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hil.broker import Mosquitto
from hil.poll import wait_until
from hil.recorder import Recorder
from tests.conftest import LinkFactory

pytestmark = pytest.mark.mqtt

ROOT = "evse/v1"
DEV = "CN-TEST-0001"
STATUS, STATE = f"{ROOT}/{DEV}/status", f"{ROOT}/{DEV}/state"
CMD, RSP = f"{ROOT}/{DEV}/cmd", f"{ROOT}/{DEV}/rsp"
REPO = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, sys
from agent.link import Link, LinkSettings, MemoryOutbox

async def main() -> None:
    host, port, device, boot = sys.argv[1:5]
    async def handler(cmd):
        return None
    link = Link(LinkSettings(host=host, port=int(port), device_id=device), outbox=MemoryOutbox(),
                on_command=handler, boot_id=boot, birth=lambda: {"connectors": [1]},
                on_connected=lambda outage: print("CONNECTED", flush=True))
    await link.run()

asyncio.run(main())
"""


def command(cid: str) -> bytes:
    return json.dumps({"v": 1, "id": cid, "type": "setLimit", "issuer": "agg-1"}).encode()


async def test_birth_and_state_are_retained(broker: Mosquitto,
                                            link_factory: LinkFactory) -> None:
    h = await link_factory(broker.host, broker.port)
    await h.wait_connected()
    assert h.outages == [None]  # first connection of the process: no outage to report
    async with Recorder(broker.host, broker.port, [STATUS, STATE]) as rec:
        await rec.wait_for(lambda: bool(rec.on(STATUS) and rec.on(STATE)),
                           what="retained birth/state")
        birth = rec.json_on(STATUS)[0]
        assert rec.on(STATUS)[0].retain and rec.on(STATE)[0].retain
    assert birth["online"] is True and birth["apiVersion"] == 1
    assert birth["bootId"] == h.link.boot_id and birth["deviceId"] == DEV
    assert birth["connectors"] == [1] and "capabilities" in birth


async def test_will_is_published_when_the_agent_process_is_sigkilled(
    broker: Mosquitto,
) -> None:
    boot = "boot-child-1"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, broker.host, str(broker.port), DEV, boot,
        stdout=asyncio.subprocess.PIPE, cwd=REPO,
    )
    try:
        assert child.stdout is not None

        async def connected() -> None:  # structlog's default output shares stdout
            assert child.stdout is not None
            while (line := await child.stdout.readline()).strip() != b"CONNECTED":
                assert line, "child exited before connecting"

        await asyncio.wait_for(connected(), 20)
        async with Recorder(broker.host, broker.port, [STATUS]) as rec:
            await rec.wait_for(lambda: len(rec.on(STATUS)) >= 1, what="retained birth")
            assert rec.json_on(STATUS)[0]["online"] is True
            os.kill(child.pid, signal.SIGKILL)
            await rec.wait_for(lambda: len(rec.on(STATUS)) >= 2, what="last will")
            will = rec.json_on(STATUS)[1]
        assert will == {"online": False, "deviceId": DEV, "bootId": boot}
        async with Recorder(broker.host, broker.port, [STATUS]) as late:  # and it is retained
            await late.wait_for(lambda: bool(late.on(STATUS)), what="retained will")
            assert late.json_on(STATUS)[0]["online"] is False
    finally:
        if child.returncode is None:
            os.kill(child.pid, signal.SIGKILL)
        await child.wait()


async def test_resubscribes_after_a_broker_restart(broker: Mosquitto,
                                                   link_factory: LinkFactory) -> None:
    h = await link_factory(broker.host, broker.port)
    await h.wait_connected()
    broker.stop()  # no persistence: the broker forgets the session and its subscriptions
    await wait_until(lambda: not h.link.connected, what="link noticing the outage")
    assert h.link.disconnected_since is not None
    broker.start()
    await h.wait_connected(2)
    assert h.disconnects == 1 and h.outages[1] is not None and h.outages[1] >= 0
    async with Recorder(broker.host, broker.port, [RSP]) as rec:
        await rec.publish(CMD, command("after-restart"))
        await rec.publish(f"{ROOT}/group/tx-7/cmd", command("group-after-restart"))
        await rec.wait_for(lambda: len(rec.on(RSP)) >= 2, what="two replies")
    assert [c.group for c in h.commands] == [None, "tx-7"]
    assert {r["commandId"] for r in rec.json_on(RSP)} == {"after-restart", "group-after-restart"}


async def test_v5_reply_goes_to_response_topic_with_correlation_data(
    broker: Mosquitto, link_factory: LinkFactory
) -> None:
    h = await link_factory(broker.host, broker.port)
    await h.wait_connected()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = "agg/replies/agg-1"
    props.CorrelationData = b"req-0042"
    async with Recorder(broker.host, broker.port, ["agg/replies/#", RSP]) as rec:
        await rec.publish(CMD, command("c-1"), properties=props)
        await rec.wait_for(lambda: bool(rec.on("agg/replies/agg-1")), what="reply")
        reply = rec.on("agg/replies/agg-1")[0]
        assert reply.properties is not None
        assert getattr(reply.properties, "CorrelationData", None) == b"req-0042"
        assert json.loads(reply.payload)["commandId"] == "c-1"
        assert rec.on(RSP) == []
    assert h.commands[0].response_topic == "agg/replies/agg-1"


@pytest.mark.parametrize("agent_protocol", ["5", "3.1.1"])
async def test_v311_command_gets_its_reply_on_rsp(
    broker: Mosquitto, link_factory: LinkFactory, agent_protocol: str
) -> None:
    h = await link_factory(broker.host, broker.port, protocol=agent_protocol)
    await h.wait_connected()
    async with Recorder(broker.host, broker.port, [RSP], v5=False) as rec:
        await rec.publish(CMD, command("c-311"))
        await rec.wait_for(lambda: bool(rec.on(RSP)), what="reply on rsp")
    assert rec.json_on(RSP)[0]["commandId"] == "c-311"
    assert h.commands[0].response_topic is None and h.commands[0].correlation_data is None


@pytest.mark.parametrize("agent_protocol", ["5", "3.1.1"])
async def test_command_sent_while_agent_is_away_arrives_on_reconnect(
    broker: Mosquitto, link_factory: LinkFactory, agent_protocol: str
) -> None:
    first = await link_factory(broker.host, broker.port, protocol=agent_protocol)
    await first.wait_connected()
    await first.stop()  # clean DISCONNECT; the session stays on the broker
    async with Recorder(broker.host, broker.port, [STATUS, RSP]) as rec:
        await rec.wait_for(lambda: bool(rec.on(STATUS)), what="retained status")
        assert rec.json_on(STATUS)[-1]["online"] is False  # said goodbye before leaving
        await rec.publish(CMD, command("queued-while-away"))
        second = await link_factory(broker.host, broker.port, protocol=agent_protocol)
        await wait_until(lambda: bool(second.commands), what="queued command")
        await rec.wait_for(lambda: bool(rec.on(RSP)), what="reply to the queued command")
    assert [json.loads(c.payload)["id"] for c in second.commands] == ["queued-while-away"]
    assert first.commands == []


async def test_retained_command_is_not_executed(broker: Mosquitto,
                                                link_factory: LinkFactory) -> None:
    async with Recorder(broker.host, broker.port, []) as rec:
        await rec.publish(CMD, command("stale-retained"), retain=True)
        h = await link_factory(broker.host, broker.port)
        await h.wait_connected()
        await rec.publish(CMD, command("fresh"))
        await wait_until(lambda: bool(h.commands), what="fresh command")
    assert [json.loads(c.payload)["id"] for c in h.commands] == ["fresh"]


async def test_publish_state_while_offline_goes_out_on_connect_and_decommission_clears_it(
    broker: Mosquitto, link_factory: LinkFactory
) -> None:
    h = await link_factory(broker.host, broker.port, start=False, with_state=False)
    h.link.publish_state({"connectors": [{"connector": 1, "pilot": "A"}]})  # superseded
    h.link.publish_state({"connectors": [{"connector": 1, "pilot": "B"}]})
    async with Recorder(broker.host, broker.port, [STATE, STATUS]) as rec:
        h.task = asyncio.create_task(h.link.run())
        await h.wait_connected()
        h.link.publish_state({"connectors": [{"connector": 1, "pilot": "C"}]})
        await rec.wait_for(lambda: len(rec.on(STATE)) >= 2, what="two state snapshots")
        assert [s["connectors"][0]["pilot"] for s in rec.json_on(STATE)] == ["B", "C"]
        await h.link.decommission()
        await asyncio.wait_for(h.task, 10)  # run() returns: no reconnect, no birth again
        await rec.wait_for(lambda: rec.on(STATE)[-1].payload == b"", what="state cleared")
        final = rec.json_on(STATUS)[-1]
    assert final["online"] is False and final["decommissioned"] is True
    async with Recorder(broker.host, broker.port, [STATE, STATUS]) as late:
        await late.wait_for(lambda: bool(late.on(STATUS)), what="retained final status")
        assert late.json_on(STATUS)[0]["decommissioned"] is True
        assert late.on(STATE) == []  # nothing retained any more


async def test_a_burst_of_state_changes_publishes_one_snapshot_built_when_sent(
    broker: Mosquitto, link_factory: LinkFactory
) -> None:
    built: list[int] = []
    pilot = ["A"]

    def state() -> dict[str, Any]:  # what the reporter's state_payload stands for
        built.append(len(built) + 1)
        return {"connectors": [{"connector": 1, "pilot": pilot[0]}], "n": len(built)}

    h = await link_factory(broker.host, broker.port, state=state)
    await h.wait_connected()
    async with Recorder(broker.host, broker.port, [STATE]) as rec:
        await rec.wait_for(lambda: bool(rec.on(STATE)), what="the retained birth state")
        for letter in "BCDEF":  # the notes of one CP event, handled in one go
            pilot[0] = letter
            h.link.state_changed()
        await rec.wait_for(lambda: len(rec.on(STATE)) >= 2, what="the state after the burst")
        snapshot = rec.json_on(STATE)[1]
    assert snapshot["connectors"][0]["pilot"] == "F"  # built at publish time: the latest
    assert built == [1, 2]  # the birth's and one for the five changes


async def test_a_failing_command_handler_does_not_take_the_link_down(
    broker: Mosquitto, link_factory: LinkFactory
) -> None:
    h = await link_factory(broker.host, broker.port)
    await h.wait_connected()
    async with Recorder(broker.host, broker.port, [RSP]) as rec:
        await rec.publish(CMD, command("raise"))
        await rec.publish(CMD, command("after-the-bug"))
        await rec.wait_for(lambda: bool(rec.on(RSP)), what="reply to the next command")
    assert [r["commandId"] for r in rec.json_on(RSP)] == ["after-the-bug"]
    assert h.connects == 1 and h.link.connected
