"""P3: the agent's footprint while charging with 1 s telemetry, and its start-up time.

RSS is ``VmRSS`` of /proc/<pid>/status sampled every second (and ``VmHWM``, the kernel's peak);
CPU share is (utime + stime) from /proc/<pid>/stat over the wall time of the window, as a share
of one core. Start-up: spawn -> the agent's ``agent_ready`` log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiomqtt

from hil.bench.common import (
    NO_DELAY,
    Progress,
    bench_config,
    proc_cpu_s,
    proc_status_kb,
    start_charging,
    station,
)
from hil.bench.stats import BenchResult, Goal, summarize
from hil.broker import Broker


async def run(out_dir: Path, progress: Progress, *, window_s: float) -> BenchResult:
    res = BenchResult("P3", "footprint while charging, start-up", (
        f"Whole agent on the default topology with MQTT (telemetry_period_s 1), charging at "
        f"32 A; after 5 s of settling, VmRSS sampled every 1 s for {window_s:.0f} s, VmHWM at "
        "the end, CPU = utime+stime over the window's wall time (share of one core). READY = "
        "the agent's agent_ready log time minus the wall time just before it was spawned."))
    with Broker(out_dir / "broker") as broker:
        cfg = bench_config(mqtt={"host": broker.host, "port": broker.port,
                                 "telemetry_period_s": 1})
        tel: list[float] = []
        async with station(cfg, out_dir / "agent") as st, \
                aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as sub:
            await sub.subscribe(f"evse/v1/{cfg.device_id}/tel", qos=1)

            async def count() -> None:
                async for _ in sub.messages:
                    tel.append(time.monotonic())

            counter = asyncio.create_task(count())
            if not await start_charging(st.rig):
                raise RuntimeError("the vehicle did not start charging")
            await asyncio.sleep(5.0)
            pid = st.pid
            rss: list[float] = []
            cpu0, w0 = proc_cpu_s(pid), time.monotonic()
            tel_before = len(tel)
            while time.monotonic() - w0 < window_s:
                await asyncio.sleep(1.0)
                kb = proc_status_kb(pid, "VmRSS")
                if kb is not None:
                    rss.append(kb / 1024)
                progress.update("P3", f"{time.monotonic() - w0:.0f}/{window_s:.0f} s, "
                                f"RSS {rss[-1] if rss else 0:.1f} MB")
            cpu1, w1 = proc_cpu_s(pid), time.monotonic()
            hwm = proc_status_kb(pid, "VmHWM")
            charging = st.rig.contactor_closed()
            tel_count = len(tel) - tel_before
            faults = [e.get("code") for e in st.agent.log_events()
                      if e.get("event") == "fault_raised"]
            counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counter
            ready = st.ready_s
    assert cpu0 is not None and cpu1 is not None
    share = (cpu1 - cpu0) / (w1 - w0) * 100
    s = summarize(rss)
    res.add("RSS while charging (max of 1 s samples)", s.max, "MB", Goal("<=", 45, "MB"), s.n,
            note=f"median {s.median:.1f} MB")
    res.add("VmHWM (peak RSS since start)", None if hwm is None else hwm / 1024, "MB",
            Goal("<=", 45, "MB"))
    res.add("CPU share while charging", share, "% of one core", Goal("<=", 3, "%"),
            note=f"{cpu1 - cpu0:.1f} s CPU in {w1 - w0:.0f} s")
    res.add("start -> READY", ready, "s", Goal("<=", 1.5, "s"))
    res.add("telemetry messages received", tel_count / (w1 - w0), "msg/s",
            note=f"{tel_count} in the window; charging at the end: {charging}; faults "
            f"raised: {', '.join(str(f) for f in faults) or 'none'}")
    res.raw = {"rss_mb": rss, "hwm_mb": None if hwm is None else hwm / 1024,
               "cpu_s": cpu1 - cpu0, "wall_s": w1 - w0, "ready_s": [ready]}
    return res
