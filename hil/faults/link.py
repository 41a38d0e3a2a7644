"""Fault cases of the aggregator link: broker killed, broker refusing us, a silent partition.

In all three the charger's own control must not notice (the contactor does not move), the agent
must reconnect by itself, and every journaled ``evt``/``tel`` must reach the aggregator once the
link is back (deduplicated by ``seq``, no gap), including a session that ended while offline.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from hil.faults.case_report import CaseReport
from hil.faults.devices import continue_charging, finish_data_check, start_charging
from hil.faults.testbed import Testbed


async def wait_log(b: Testbed, event: str, count: int, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while len(b.log_events(event)) < count:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def log_time(entry: dict[str, object]) -> float:
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


async def offline_activity(b: Testbed, o: CaseReport, seconds: float) -> None:
    """While the link is down: charge on, curtail locally, end the session."""
    await b.command("limit", limit_a=16)
    await continue_charging(b, o, seconds)
    await b.command("limit", limit_a=None)
    await end_session(b)


async def end_session(b: Testbed) -> None:
    b.r.ev_action("open_s2")
    await asyncio.sleep(0.5)
    b.r.ev_action("unplug")
    await asyncio.sleep(0.5)


async def sessions_check(b: Testbed, o: CaseReport, limit_s: float = 10.0) -> None:
    """Every session of the ledger reported, and received once per sessionId after dedupe."""
    assert b.sub is not None
    sub = b.sub
    ledger = b.ledger_sessions()
    ids = {s["sessionId"] for s in ledger if s["stopReason"] is not None}
    await sub.wait_for(lambda: ids <= set(sub.sessions_ended()), limit_s)
    got = sub.sessions_ended()
    missing = ids - set(got)
    o.check(not missing, f"sessionEnded received for every closed session ({len(missing)} "
                         "missing)")
    unknown = set(got) - {s["sessionId"] for s in ledger}
    o.check(not unknown, "no sessionEnded for a session the ledger does not know")
    for sid in ids & set(got):
        rec = got[sid]
        o.check(rec["energyWh"] == rec["meterStopWh"] - rec["meterStartWh"]
                and rec["stopReason"] and rec["plugInAt"] <= rec["plugOutAt"],
                f"sessionEnded {sid[:8]} has consistent fields")
    o.data_detail = f"{len(ids)} session(s), {len(missing)} missing"


async def broker_killed(b: Testbed, o: CaseReport) -> None:
    assert b.broker is not None
    if not await start_charging(b, o):
        return
    await wait_log(b, "mqtt_connected", 1, 10.0)
    b.broker.kill()
    t_kill = time.time()
    detected = await wait_log(b, "mqtt_disconnected", 1, 5.0)
    o.check(detected, "the agent notices the lost connection")
    await offline_activity(b, o, 3.0)
    await b.restart_broker()
    back = await wait_log(b, "mqtt_connected", 2, 60.0)
    o.check(back, "reconnects by itself once the broker is back")
    o.recovered, o.recovery = back, f"by itself ({time.time() - t_kill:.1f} s outage)"
    await sessions_check(b, o)
    o.say("kept charging (no contactor move), curtailed locally, journaled the session end "
          "offline; reconnected with backoff and drained the backlog")
    await finish_data_check(b, o)


async def broker_refuses(b: Testbed, o: CaseReport) -> None:
    """The broker refuses anonymous clients (as after a credential rotation we missed)."""
    assert b.broker is not None
    if not await start_charging(b, o):
        return
    refused = await wait_log(b, "mqtt_connect_failed", 3, 20.0)
    o.check(refused, "connection attempts refused and retried (3 seen)")
    await offline_activity(b, o, 2.0)
    delays = [float(str(e.get("delay_s", 0))) for e in b.log_events("mqtt_reconnect_scheduled")]
    attempts = [int(str(e.get("attempt", 0))) for e in b.log_events("mqtt_reconnect_scheduled")]
    o.check(attempts == sorted(attempts) and len(set(attempts)) == len(attempts),
            "backoff attempt counter grows while refused")
    reasons = {str(e.get("error")) for e in b.log_events("mqtt_connect_failed")}
    b.broker.reconfigure(refuse_anonymous=False)
    t_fix = time.time()
    back = await wait_log(b, "mqtt_connected", 1, 60.0)
    o.check(back, "connects by itself once the broker accepts it")
    o.recovered = back
    o.recovery = f"by itself, {time.time() - t_fix:.1f} s after the broker accepted it"
    await sessions_check(b, o)
    o.say(f"refused {len(attempts)}x ({'; '.join(sorted(reasons))[:80]}), retried with "
          f"full-jitter backoff (delays {', '.join(f'{d:.1f}' for d in delays[:5])} s ...); "
          "charged and curtailed locally meanwhile")
    await finish_data_check(b, o)


async def partition(b: Testbed, o: CaseReport) -> None:
    """The path to the broker goes silent: no FIN, no RST; only the keepalive can tell."""
    assert b.proxy is not None
    if not await start_charging(b, o):
        return
    await wait_log(b, "mqtt_connected", 1, 10.0)
    keepalive = b.r.config.mqtt.keepalive_s if b.r.config.mqtt else 0
    b.proxy.blackhole()
    t_cut = time.time()
    await b.command("limit", limit_a=16)
    detected = await wait_log(b, "mqtt_disconnected", 1, 4.0 * keepalive)
    o.check(detected, f"partition detected (keepalive {keepalive} s)")
    after = log_time(b.log_events("mqtt_disconnected")[0]) - t_cut if detected else None
    if after is not None:
        o.check(after <= 2.5 * keepalive, f"detected within 2.5 x keepalive ({after:.1f} s)")
    await continue_charging(b, o, 1.0)
    await b.command("limit", limit_a=None)
    await end_session(b)
    b.proxy.resume()
    t_resume = time.time()
    back = await wait_log(b, "mqtt_connected", 2, 60.0)
    o.check(back, "reconnects by itself after the partition")
    o.recovered = back
    o.recovery = f"by itself, {time.time() - t_resume:.1f} s after the path returned"
    await sessions_check(b, o)
    o.say(f"kept charging; keepalive ({keepalive} s) detected the dead path after "
          f"{after if after is None else round(after, 1)} s; messages without PUBACK stayed "
          "unsent in the journal and were sent again")
    await finish_data_check(b, o)
