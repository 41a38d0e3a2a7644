"""P1W: setLimit published -> a retrofitted wallbox's current-register write complete on the wire.

The same measurement as P1, on a Heidelberg Energy Control connector (``hardware: wallbox``,
config/retrofit-heidelberg.example.yaml) on the wallbox rig: 19200 baud 8E1 (11 bits a
character on the virtual wire), the wallbox's state poll and its energy read sharing the bus.
t0 is read just before the PUBLISH is handed to the client, t1 is the rig's stamp of the last
byte of the FC16 write of register 261. The floor: a plain client's hop through the same broker
plus the line time of that 11-byte write frame at 19200 8E1.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiomqtt
import yaml

from hil.bench.common import (
    NO_DELAY,
    Progress,
    bench_config,
    set_limit,
    station,
    wait_frame,
)
from hil.bench.p1_latency import broker_hop
from hil.bench.stats import BenchResult, summarize
from hil.broker import Mosquitto
from hil.poll import poll_until
from hil.ptybridge import LineSettings
from hil.scenario_runner import REPO_ROOT

RETROFIT = REPO_ROOT / "config" / "retrofit-heidelberg.example.yaml"
WRITE_FRAME_BYTES = 11  # FC16 of one register: unit, fc, addr(2), count(2), bytes, value(2), crc(2)
AMPS = (10.0, 16.0)


async def run(out_dir: Path, progress: Progress, *, commands: int, hops: int) -> BenchResult:
    res = BenchResult("P1W", "setLimit -> wallbox current register on the wire", (
        "Whole agent (separate process) driving a retrofitted Heidelberg Energy Control "
        "(config/retrofit-heidelberg.example.yaml: 19200 8E1, state poll 500 ms, energy read "
        f"1 s) on the wallbox rig, charging; {commands} setLimit commands (QoS 1, alternately "
        "10 A and 16 A, 20-60 ms apart); latency = rig time the FC16 write of the current "
        "register (261) completes on the virtual wire minus the monotonic time just before "
        f"publish. Floor: {hops} publish->receive hops of a plain client through the same "
        "broker + the line time of the 11-byte write frame at 19200 8E1. Decreases go out at "
        "SAFETY_WRITE priority, increases as ordinary control writes; both wait for a "
        "transaction already on the wire (a state read or the 13-register energy read)."))
    base = yaml.safe_load(RETROFIT.read_text(encoding="utf-8"))
    with Mosquitto(out_dir / "broker", throughput=True) as broker:
        cfg = bench_config(mqtt={"host": broker.host, "port": broker.port}, base=base)
        dev = cfg.device_id
        bus = cfg.buses["wallbox"]
        line = LineSettings(bus.baudrate, bus.parity, bus.stopbits)  # type: ignore[union-attr]
        line_s = line.frame_time(WRITE_FRAME_BYTES)
        async with station(cfg, out_dir / "agent") as st:
            rig = st.rig
            rig.ev_action("plug_in")
            rig.ev_action("close_s2")
            if not await poll_until(rig.contactor_closed, 10.0, 0.005):
                raise RuntimeError("the wallbox did not start charging")
            await asyncio.sleep(1.0)
            progress.update("P1W", "floor: plain client hops", force=True)
            hop = await broker_hop(broker, hops)
            lat: list[float] = []
            missed = 0
            async with aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as pub:
                for i in range(commands):
                    payload = set_limit(f"p1w-{i}", i + 1, AMPS[i % 2])
                    t0 = rig.now()
                    await pub.publish(f"evse/v1/{dev}/cmd", payload, qos=1)
                    frame = await wait_frame(rig, t0, "wallbox_current", 2.0)
                    if frame is None:
                        missed += 1
                    else:
                        lat.append(frame.t - t0)
                    progress.update("P1W", f"setLimit {i + 1}/{commands}")
                    await asyncio.sleep(random.uniform(0.02, 0.06))
            faults = [str(e.get("code")) for e in st.agent.log_events()
                      if e.get("event") == "fault_raised"]
    ms = [v * 1000 for v in lat]
    hop_ms = [v * 1000 for v in hop]
    h = summarize(hop_ms)
    res.add_summary("setLimit -> wallbox current write", summarize(ms) if ms else None, "ms",
                    note="; ".join(
                        ([f"{missed} of {commands} without a write within 2 s"] if missed
                         else []) + ([f"agent faults: {', '.join(faults)}"] if faults else [])))
    res.add("floor: broker hop median + write frame line time", h.median + line_s * 1000, "ms",
            n=h.n, note=f"hop median {h.median:.2f} ms + line {line_s * 1000:.2f} ms "
            f"({WRITE_FRAME_BYTES} B at {line.baud} Bd 8{line.parity}{line.stopbits})")
    res.add("floor: broker hop p99 + write frame line time", h.p99 + line_s * 1000, "ms", n=h.n)
    res.raw = {"latency_ms": ms, "hop_ms": hop_ms, "missed": missed, "line_ms": line_s * 1000}
    return res
