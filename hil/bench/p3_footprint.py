"""P3: the agent's footprint while charging with 1 s telemetry, and its start-up time.

RSS is ``VmRSS`` of /proc/<pid>/status sampled every second (and ``VmHWM``, the kernel's peak);
CPU share is (utime + stime) from /proc/<pid>/stat over the wall time of the window, as a share
of one core. Start-up: spawn -> the agent's ``agent_ready`` log line.

P3a, CPU per safety poll cycle: the agent's own histogram of process CPU time between
consecutive cycle starts (``agent.shell.cyclecpu``), read through the local status request
before and after the window; the mean is /proc CPU over the agent's cycle counter.
P3b, the share of one core in three states of the same session: charging, plugged in and idle
(the vehicle opened S2), no vehicle (unplugged).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from agent import localapi
from agent.shell.cyclecpu import quantile_us
from agent.shell.cyclecpu import window as cpu_window
from hil.bench.common import (
    NO_DELAY,
    BenchStation,
    Progress,
    bench_config,
    proc_cpu_s,
    proc_status_kb,
    start_charging,
    station,
    telemetry_arrivals,
)
from hil.bench.stats import BenchResult, Goal, summarize
from hil.broker import Mosquitto


@dataclass
class CpuWindow:
    """The agent's CPU over one window: /proc time, its cycle counter, its cycle histogram."""

    cpu_s: float
    wall_s: float
    cycles: int
    hist: dict[int, int]

    @property
    def share(self) -> float:
        return self.cpu_s / self.wall_s * 100

    @property
    def per_cycle_us(self) -> float | None:
        return self.cpu_s / self.cycles * 1e6 if self.cycles else None


async def _cycle_state(st: BenchStation) -> tuple[int, dict[str, int]]:
    reply = await asyncio.to_thread(localapi.request, st.rig.control_socket, {"cmd": "status"})
    conns = reply.get("connectors") or reply.get("status", {}).get("connectors") or []
    c = conns[0]
    return int(c["cycles"]), dict(c.get("cycleCpuUs") or {})


class CpuMeter:
    """Start/stop a CPU window of the agent process."""

    def __init__(self, st: BenchStation) -> None:
        self.st = st
        self._t0 = (0.0, 0.0, 0, dict[str, int]())

    async def start(self) -> None:
        cycles, hist = await _cycle_state(self.st)
        cpu = proc_cpu_s(self.st.pid)
        assert cpu is not None
        self._t0 = (cpu, time.monotonic(), cycles, hist)

    async def stop(self) -> CpuWindow:
        cpu, wall = proc_cpu_s(self.st.pid), time.monotonic()
        cycles, hist = await _cycle_state(self.st)
        assert cpu is not None
        cpu0, wall0, cycles0, hist0 = self._t0
        return CpuWindow(cpu - cpu0, wall - wall0, cycles - cycles0, cpu_window(hist0, hist))


async def _idle_window(st: BenchStation, meter: CpuMeter, progress: Progress, what: str,
                       window_s: float) -> CpuWindow:
    await asyncio.sleep(3.0)  # the contactor opens, the machine settles
    await meter.start()
    w0 = time.monotonic()
    while (left := window_s - (time.monotonic() - w0)) > 0:
        await asyncio.sleep(min(1.0, left))
        progress.update("P3", f"{what}: {time.monotonic() - w0:.0f}/{window_s:.0f} s")
    return await meter.stop()


async def run(out_dir: Path, progress: Progress, *, window_s: float,
              idle_window_s: float = 60.0) -> BenchResult:
    res = BenchResult("P3", "footprint while charging, start-up", (
        f"Whole agent on the default topology with MQTT (telemetry_period_s 1), charging at "
        f"32 A; after 5 s of settling, VmRSS sampled every 1 s for {window_s:.0f} s, VmHWM at "
        "the end, CPU = utime+stime over the window's wall time (share of one core). READY = "
        "the agent's agent_ready log time minus the wall time just before it was spawned. "
        "P3a: CPU per safety poll cycle = the agent's own histogram (10 us buckets) of process "
        "CPU time (clock_gettime CLOCK_PROCESS_CPUTIME_ID) from one poll-cycle start to the "
        "next, i.e. everything the process ran in that poll period, over the charging window; "
        "mean = /proc CPU over the agent's cycle counter. P3b: the same session then "
        f"{idle_window_s:.0f} s plugged in and idle (the vehicle opened S2; 3 s settling) and "
        f"{idle_window_s:.0f} s with no vehicle (unplugged; 3 s settling). The rig (simulated "
        "boards, pty line timing) and this bench run in another process."))
    with Mosquitto(out_dir / "broker", throughput=True) as broker:
        cfg = bench_config(mqtt={"host": broker.host, "port": broker.port,
                                 "telemetry_period_s": 1})
        async with station(cfg, out_dir / "agent") as st, \
                aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as sub, \
                telemetry_arrivals(sub, cfg.device_id) as tel:
            if not await start_charging(st.rig):
                raise RuntimeError("the vehicle did not start charging")
            await asyncio.sleep(5.0)
            pid = st.pid
            rss: list[float] = []
            meter = CpuMeter(st)
            await meter.start()
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
            charging_cpu = await meter.stop()
            hwm = proc_status_kb(pid, "VmHWM")
            charging = st.rig.contactor_closed()
            tel_count = len(tel) - tel_before
            faults = [e.get("code") for e in st.agent.log_events()
                      if e.get("event") == "fault_raised"]
            st.rig.ev_action("open_s2")
            idle = await _idle_window(st, meter, progress, "plugged in, idle", idle_window_s)
            st.rig.ev_action("unplug")
            empty = await _idle_window(st, meter, progress, "no vehicle", idle_window_s)
            ready = st.ready_s
    assert cpu0 is not None and cpu1 is not None
    share = (cpu1 - cpu0) / (w1 - w0) * 100
    s = summarize(rss)
    res.add("RSS while charging (max of 1 s samples)", s.max, "MB", Goal("<=", 50, "MB"), s.n,
            note=f"median {s.median:.1f} MB")
    res.add("VmHWM (peak RSS since start)", None if hwm is None else hwm / 1024, "MB",
            Goal("<=", 50, "MB"))
    res.add("CPU share while charging", share, "% of one core", Goal("<=", 2, "%"),
            note=f"P3b; {cpu1 - cpu0:.1f} s CPU in {w1 - w0:.0f} s")
    hist = charging_cpu.hist
    res.add("CPU per poll cycle while charging, median", quantile_us(hist, 0.5), "us",
            Goal("<=", 150, "us"), sum(hist.values()),
            note=f"P3a; mean {charging_cpu.per_cycle_us or 0:.0f} us "
            f"({charging_cpu.cpu_s:.2f} s CPU / {charging_cpu.cycles} cycles)")
    res.add("CPU per poll cycle while charging, p99", quantile_us(hist, 0.99), "us",
            n=sum(hist.values()), note="P3a")
    for label, win, goal in (("plugged in, idle", idle, 1.0), ("no vehicle", empty, 0.5)):
        res.add(f"CPU share {label}", win.share, "% of one core", Goal("<=", goal, "%"),
                note=f"P3b; {win.cpu_s:.2f} s CPU in {win.wall_s:.0f} s; per cycle median "
                f"{quantile_us(win.hist, 0.5) or 0:.0f} us, mean {win.per_cycle_us or 0:.0f} us")
    res.add("start -> READY", ready, "s", Goal("<=", 1.5, "s"))
    res.add("telemetry messages received", tel_count / (w1 - w0), "msg/s",
            note=f"{tel_count} in the window; charging at the end: {charging}; faults "
            f"raised: {', '.join(str(f) for f in faults) or 'none'}")
    res.raw = {"rss_mb": rss, "hwm_mb": None if hwm is None else hwm / 1024,
               "cpu_s": cpu1 - cpu0, "wall_s": w1 - w0, "ready_s": [ready],
               "cycle_cpu_us": {state: {"cpu_s": w.cpu_s, "wall_s": w.wall_s,
                                        "cycles": w.cycles, "hist": w.hist}
                                for state, w in (("charging", charging_cpu), ("idle", idle),
                                                 ("no_vehicle", empty))}}
    return res
