"""Wall-clock jumps (NTP step, RTC reset) while charging.

Method: control uses ``time.monotonic`` (the pilot machine, the bus, timeouts); wall time
(``time.time``) is only for timestamps, sessions and profiles. Without a test seam in the agent
and without faketime, the agent runs *in this process* against the rig with ``time.time``
patched to jump back one hour and then forward two hours mid-session (every call-time lookup of
``time.time`` in agent code sees the jump; defaults bound at import, e.g. the journal's clock,
keep real time). Expected: the contactor does not move, charging goes on, the stream stays
contiguous and the session is reported with end >= start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from unittest import mock

from agent.config import load_config
from agent.shell.app import AgentApp
from hil.faults.case_report import CaseReport
from hil.faults.devices import continue_charging
from hil.faults.link import end_session, sessions_check
from hil.faults.testbed import Testbed


async def clock_jump(b: Testbed, o: CaseReport) -> None:
    offset = {"s": 0.0}
    real = time.time

    def jumped() -> float:
        return real() + offset["s"]

    config = load_config(b.r.patched_config_path)
    log = (b.out_dir / "agent-inprocess.log").open("w")
    with mock.patch.object(time, "time", jumped), contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        app = AgentApp(config)
        task = asyncio.create_task(app.run(), name="agent-in-process")
        try:
            deadline = real() + 15
            while not app.ready and real() < deadline:  # noqa: ASYNC110 (agent's flag)
                await asyncio.sleep(0.05)
            o.check(app.ready, "in-process agent ready")
            o.check(await b.charge(), "charging before the jump")
            await asyncio.sleep(1.0)
            for jump in (-3600.0, +7200.0):
                offset["s"] += jump
                b.r.timeline.add("inject", b.r.clock(), fault="clock_jump", value=jump)
                await continue_charging(b, o, 2.0)
            await end_session(b)
            await sessions_check(b, o)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.close()
    o.check(b.is_safe(), "safe state after the in-process agent stopped")
    o.say("wall clock -1 h then +2 h mid-session: no contactor move, no fault; control runs on "
          "the monotonic clock")
    o.recovered, o.recovery = True, "nothing to recover"
    o.notes.append("in-process run with time.time patched (no faketime, no seam in the agent)")
    assert b.sub is not None
    hw = b.journal_high_water()
    await b.sub.wait_for(lambda: b.sub is not None and not b.sub.gaps(hw), 5.0)
    gaps = b.sub.gaps(hw)
    o.data_lost = len(gaps)
    o.check(not gaps, f"seq 1..{hw} contiguous across the jumps")
    o.data_detail += f"; seq 1..{hw}: {len(gaps)} missing"
