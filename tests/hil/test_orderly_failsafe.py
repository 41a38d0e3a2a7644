"""Acceptance, point 5: fail-safe without the aggregator; the randomised delay; dsr at once.

The drawn delays are predictable because the config fixes ``random_seed``: the engine draws from
``random.Random(seed).uniform`` in order, so the test knows each draw before the agent makes it.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil.broker import Mosquitto
from tests.hil.orderly_harness import AgentOnRig

pytestmark = [pytest.mark.mqtt, pytest.mark.hil]


def draws(seed: int, max_s: float, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, max_s) for _ in range(n)]


def failsafe_telemetry_journaled(journal: Path) -> bool:
    """A telemetry sample with the fail-safe as its limit source, journaled (read-only)."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT payload FROM entries WHERE kind = 'tel'").fetchall()
    finally:
        db.close()
    return any(c.get("limitSource") == "failsafe"
               for (payload,) in rows for c in json.loads(payload)["connectors"])


def delays_reported(a: AgentOnRig) -> list[int]:
    return [e["body"]["randomDelayS"] for e in a.events("sessionUpdated")
            if "randomDelayS" in e["body"]]


async def test_failsafe_entered_offline_and_lifted_on_reconnect(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory(persistence=True)
    mqtt = {"failsafe": {"after_s": 3, "value": 8, "unit": "A"}, "telemetry_period_s": 1}
    async with AgentOnRig(tmp_path, broker, mqtt=mqtt, recorder_session=True) as a:
        await a.plug_and_charge()
        await a.wait_offer(32)
        assert not a.events("failsafeEntered")

        await a.broker_down()
        await a.wait_offer(8, limit_s=30)  # the fail-safe joined the minimum, offline
        assert a.rig.contactor_closed()  # ... and still lets the car charge
        # Stay offline until a fail-safe telemetry sample is in the journal: the agent may
        # reconnect less than one telemetry period after the fail-safe began (seen: 0.57 s).
        await a.wait(lambda: failsafe_telemetry_journaled(a.rig.state_dir / "journal.db"),
                     "offline telemetry under the fail-safe in the journal", 30)
        await a.broker_up()

        entered = await a.wait_event("failsafeEntered", limit_s=30)
        assert entered["body"] == {"afterS": 3, "limit": {"value": 8.0, "unit": "A"}}
        exited = await a.wait_event("failsafeExited", limit_s=30)
        assert exited["seq"] > entered["seq"]
        await a.wait_offer(32)
        await a.wait(lambda: (a.state() or {}).get("failsafe", {}).get("active") is False,
                     "state without fail-safe")
        offline_tel = [c for t in a.telemetry() for c in t["connectors"]
                       if c["limitSource"] == "failsafe"]
        assert offline_tel and all(c["limitA"] == 8.0 for c in offline_tel)


async def test_random_delay_is_drawn_reported_and_waited(
    broker: Mosquitto, tmp_path: Path
) -> None:
    seed, max_s = 0, 5
    (drawn,) = draws(seed, max_s, 1)
    assert drawn > 2  # the seed is chosen so that the wait is visible
    mqtt = {"random_delay_max_s": max_s, "random_seed": seed}
    async with AgentOnRig(tmp_path, broker, mqtt=mqtt) as a:
        plugged = a.rig.ev_action("plug_in", cable_a=32)
        a.rig.ev_action("close_s2")
        update = await a.wait_event("sessionUpdated", lambda e: "randomDelayS" in e["body"])
        assert update["body"]["randomDelayS"] == round(drawn)
        assert a.rig.offered_a() == 0 and not a.rig.contactor_closed()  # held, not offered
        await a.wait(a.rig.contactor_closed, "charging after the delay")
        offers = [e for e in a.rig.timeline.events("board_write", register="duty_cmd")
                  if 0 < int(e.data["value"]) < 1000]
        assert offers[0].t - plugged >= drawn - 0.2  # the offer rose only after the draw

        a.rig.ev_action("unplug")
        record = (await a.wait_event("sessionEnded"))["body"]
        assert [d["s"] for d in record["randomDelays"]] == [round(drawn)]


async def test_dsr_limit_applies_at_once_other_increases_wait(
    broker: Mosquitto, tmp_path: Path
) -> None:
    seed, max_s = 139, 60
    start_draw, increase_draw = draws(seed, max_s, 2)
    assert start_draw < 1.5 and increase_draw > 30  # chosen seed: quick start, long hold
    mqtt = {"random_delay_max_s": max_s, "random_seed": seed}

    def lease(value: float, priority: int, **extra: Any) -> dict[str, Any]:
        return {"limit": {"value": value, "unit": "A"}, "durationS": 900,
                "priority": priority, **extra}

    async with AgentOnRig(tmp_path, broker, mqtt=mqtt) as a:
        await a.plug_and_charge()
        assert delays_reported(a) == [round(start_draw)]  # the first start always waits

        assert (await a.send("setLimit", lease(10, 0)))["status"] == "accepted"
        await a.wait_offer(10)  # a decrease: at once
        dsr = await a.send("setLimit", lease(20, 1, dsr=True))
        assert dsr["status"] == "accepted"
        await a.wait_offer(20)  # a grid response: at once, no draw
        assert delays_reported(a) == [round(start_draw)]

        assert (await a.send("clearProfile", {"profileId": dsr["commandId"]}))["status"] \
            == "accepted"
        await a.wait_offer(10)
        assert (await a.send("setLimit", lease(20, 2)))["status"] == "accepted"
        await a.wait(lambda: len(delays_reported(a)) == 2, "the increase's draw")
        assert delays_reported(a)[1] == round(increase_draw)
        assert a.rig.offered_a() == pytest.approx(10, abs=0.5)  # held for the drawn delay
