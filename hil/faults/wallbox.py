"""Fault cases of a retrofitted wallbox (``hardware: wallbox``, Heidelberg on the wallbox rig).

Each case charges at an installer limit above the wallbox's fail-safe current, injects the
fault and judges it on the wallbox's side (the rig's timeline): its watchdog expiring and its
fail-safe current applying, a pause written to its current register, the limit re-programmed
after a reset. "Safe" for a wallbox is a defined current: its fail-safe current (the agent is
gone or cannot reach it) or paused through its disable path (the agent saw something wrong);
its contactor and pilot are its own.
"""

from __future__ import annotations

import asyncio

from hil.faults.case_report import CaseReport
from hil.faults.testbed import Testbed

LIMIT_A = 12.0
FAILSAFE_A = 8.0  # RETROFIT_OVERRIDES: wallbox.failsafe_current_a
RETROFIT = {"retrofit": True}


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


def _bus(b: Testbed) -> str:
    return str(b.r.config.wallbox_connectors()[0].wallbox.bus)


def _watchdog_s(b: Testbed) -> float:
    return float(b.r.config.wallbox_connectors()[0].wallbox.watchdog_s)


async def _charging(b: Testbed, o: CaseReport) -> bool:
    await b.start_agent()
    b.r.ev_action("plug_in")
    b.r.ev_action("close_s2")
    ok = await b.wait_rig(lambda: b.r.contactor_closed() and b.r.ev.current_a() > 0, 10.0)
    await b.command("limit", limit_a=LIMIT_A)
    ok = ok and await b.wait_rig(lambda: abs(b.r.offered_a() - LIMIT_A) < 0.01, 5.0)
    return o.check(ok, f"charging at the installer limit {LIMIT_A:g} A before the fault")


async def _failsafe_after(b: Testbed, t0: float, limit_s: float) -> float | None:
    def entered() -> bool:
        return b.r.timeline.first("signal", t0, name="failsafe", value=True) is not None
    await b.wait_rig(entered, limit_s)
    event = b.r.timeline.first("signal", t0, name="failsafe", value=True)
    return None if event is None else event.t - t0


def _logged(b: Testbed, code: str, text: str = "") -> bool:
    return any(e.get("event") == "fault_raised" and code in str(e.get("code", ""))
               and text in str(e.get("detail", "")) for e in b.log_events("fault_raised"))


async def _expect_failsafe(b: Testbed, o: CaseReport, t0: float) -> None:
    watchdog = _watchdog_s(b)
    t = await _failsafe_after(b, t0, watchdog + 3.0)
    at = b.r.offered_a()
    o.check(t is not None and t <= watchdog + 1.0,
            f"the wallbox's fail-safe within its {watchdog:g} s watchdog (+1 s)")
    o.check(abs(at - FAILSAFE_A) < 0.01, f"the wallbox offers its fail-safe {FAILSAFE_A:g} A")
    o.t_safe_s = t
    o.safe_detail = f"wallbox at its fail-safe {at:g} A after {_ms(t)} (its watchdog)"


async def _expect_recovery(b: Testbed, o: CaseReport, how: str, limit_s: float = 10.0) -> None:
    t0 = b.r.now()
    back = await b.wait_rig(lambda: abs(b.r.offered_a() - LIMIT_A) < 0.01 and
                            not b.r.connector().failsafe_active(), limit_s)
    st = await b.wait_status(lambda s: not s.get("faults"), 5.0)
    o.recovered = back and st is not None
    o.recovery = (f"{how}: back at {LIMIT_A:g} A in {_ms(b.r.now() - t0)}" if o.recovered
                  else f"not back at {LIMIT_A:g} A (offers {b.r.offered_a():g} A)")


async def wallbox_silent(b: Testbed, o: CaseReport) -> None:
    if not await _charging(b, o):
        return
    t0 = b.r.inject("wallbox_silent")
    await _expect_failsafe(b, o, t0)
    await asyncio.sleep(1.0)
    o.check(_logged(b, "WALLBOX_LOST"), "WALLBOX_LOST raised")
    o.say(f"WALLBOX_LOST; the wallbox fell back to {FAILSAFE_A:g} A by its own watchdog")
    b.r.inject("wallbox_silent", False)
    await _expect_recovery(b, o, "answers again: limit, watchdog, fail-safe re-programmed")


async def wallbox_slow(b: Testbed, o: CaseReport) -> None:
    if not await _charging(b, o):
        return
    bus = _bus(b)
    timeout = b.r.config.buses[bus].timeout_ms / 1000
    t0 = b.r.inject("wallbox_slow", {"latency_ms": 3 * timeout * 1000})
    await asyncio.sleep(3.0)
    offers = [float(e.data["value"]) for e in b.r.timeline.events("signal", since=t0,
                                                                 name="offered_a")]
    o.check(all(a <= LIMIT_A for a in offers), "never above the limit while answers are late")
    o.check(not _logged(b, "WALLBOX_STATE_INVALID"), "no late answer taken for a state")
    lost = _logged(b, "WALLBOX_LOST")
    o.say(f"late answers ({3 * timeout * 1000:.0f} ms, 3x timeout) dropped, never taken for the "
          f"next; {'WALLBOX_LOST, paused' if lost else 'kept charging'}; offers "
          f"{b.r.offered_a():g} A")
    b.r.inject("wallbox_slow", False)
    await _expect_recovery(b, o, "answers in time again")


async def wallbox_reset(b: Testbed, o: CaseReport) -> None:
    if not await _charging(b, o):
        return
    sim = b.r.connector()
    t0 = b.r.inject("wallbox_reset")
    verify = b.r.config.wallbox_connectors()[0].wallbox.verify_s
    ok = await b.wait_rig(lambda: sim.memory["watchdog_timeout"] == 2000 and
                          sim.memory["standby"] == 4 and sim.memory["failsafe_current"] == 80
                          and abs(b.r.offered_a() - LIMIT_A) < 0.01, verify + 5.0)
    t = b.r.now() - t0
    o.check(ok, "limit, watchdog, fail-safe and standby re-programmed")
    await asyncio.sleep(0.5)  # the log line follows the writes
    o.check(t <= verify + 2.0, f"re-programmed within the read-back period {verify:g} s (+2 s)")
    o.check(bool(b.log_events("wallbox_reprogrammed")), "wallbox_reprogrammed logged")
    o.say(f"defaults (16 A, no watchdog, standby allowed) noticed by the read-back and "
          f"re-programmed in {_ms(t)}")
    o.notes.append("until the read-back (verify_s) the wallbox offers its default current")
    o.recovered, o.recovery = ok, f"by itself in {_ms(t)}"


async def wallbox_state_invalid(b: Testbed, o: CaseReport) -> None:
    if not await _charging(b, o):
        return
    t0 = b.r.inject("wallbox_state", 42)
    paused = await b.wait_rig(lambda: b.r.offered_a() == 0.0, 5.0)
    write = next((e for e in b.r.timeline.events("wallbox_write", since=t0,
                                                  register="max_current") if
                  e.data["value"] == 0), None)
    o.check(paused and write is not None, "paused: current register 0 written")
    await asyncio.sleep(0.5)
    o.check(_logged(b, "WALLBOX_STATE_INVALID", "42"), "WALLBOX_STATE_INVALID with the raw 42")
    o.t_safe_s = None if write is None else write.t - t0
    o.safe_detail = f"paused (current register 0) after {_ms(o.t_safe_s)}"
    o.say("WALLBOX_STATE_INVALID (state value 42 is not in its table); paused")
    b.r.inject("wallbox_state", None)
    await _expect_recovery(b, o, "a state of the table again")


async def wallbox_bus_cut(b: Testbed, o: CaseReport) -> None:
    if not await _charging(b, o):
        return
    t0 = b.r.inject("bus_cut")
    await _expect_failsafe(b, o, t0)
    await asyncio.sleep(1.0)
    o.check(_logged(b, "WALLBOX_LOST"), "WALLBOX_LOST raised")
    o.say(f"RS-485 cut: WALLBOX_LOST; the wallbox fell back to {FAILSAFE_A:g} A by itself")
    b.r.inject("bus_cut", False)
    await _expect_recovery(b, o, "cable back: re-programmed")


async def wallbox_agent_killed(b: Testbed, o: CaseReport) -> None:
    if not await _charging(b, o):
        return
    t0 = b.r.now()
    b.kill_agent()
    b.r.timeline.add("inject", b.r.clock(), fault="sigkill", value=True)
    await _expect_failsafe(b, o, t0)
    o.say(f"agent SIGKILLed: the wallbox fell back to {FAILSAFE_A:g} A by its own watchdog")
    await b.start_agent()
    await _expect_recovery(b, o, "agent restarted (systemd): re-programmed")
