"""P1: setLimit published -> new duty frame complete on the virtual wire.

The publisher and the rig process share the machine's monotonic clock: t0 is read just before
the PUBLISH is handed to the client, t1 is the rig's stamp of the duty write's last byte. The floor
is measured in the same run: a plain client's hop through the same broker (publish -> the
subscriber has it) plus the line time of the 8-byte FC06 write frame at the control bus's baud.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiomqtt

from hil.bench.common import (
    NO_DELAY,
    Progress,
    bench_config,
    set_limit,
    start_charging,
    station,
    wait_frame,
)
from hil.bench.stats import BenchResult, Goal, summarize
from hil.broker import Mosquitto
from hil.ev import EvParams
from hil.ptybridge import LineSettings
from hil.rig import RigOptions

WRITE_FRAME_BYTES = 8  # FC06: unit, fc, address(2), value(2), crc(2)
AMPS = (10.0, 16.0)


async def broker_hop(broker: Mosquitto, count: int) -> list[float]:
    """Publish -> delivered to a subscriber, through the same broker, QoS 1 (seconds)."""
    topic = "bench/floor"
    got: asyncio.Queue[float] = asyncio.Queue()
    async with aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as sub, \
            aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as pub:
        await sub.subscribe(topic, qos=1)

        async def collect() -> None:
            async for _ in sub.messages:
                got.put_nowait(time.monotonic())

        task = asyncio.create_task(collect())
        out = []
        try:
            for i in range(count):
                t0 = time.monotonic()
                await pub.publish(topic, f"hop {i}".encode(), qos=1)
                out.append(await asyncio.wait_for(got.get(), 5.0) - t0)
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
    return out


async def run(out_dir: Path, progress: Progress, *, commands: int, hops: int) -> BenchResult:
    res = BenchResult("P1", "setLimit -> duty frame on the wire", (
        f"Whole agent (separate process) on the default topology, charging at 32 A; {commands} "
        "setLimit commands (QoS 1, alternately 10 A and 16 A, 20-60 ms apart) published by a "
        "client in the bench process; latency = rig time the FC06 duty write's last byte "
        "completes on the virtual wire minus the monotonic time just before publish. Floor: "
        f"{hops} publish->receive hops of a plain client through the same broker + the line "
        "time of the 8-byte write frame."))
    with Mosquitto(out_dir / "broker", throughput=True) as broker:
        cfg = bench_config(mqtt={"host": broker.host, "port": broker.port})
        dev = cfg.device_id
        line = LineSettings(cfg.buses["control"].baudrate)  # type: ignore[union-attr]
        line_s = line.frame_time(WRITE_FRAME_BYTES)
        # the vehicle follows each new offer within 50 ms: with the default 2 s it would keep
        # drawing the old current while the offer alternates, and trip OVERCURRENT (rightly)
        follow = RigOptions(ev=EvParams(follow_delay_s=0.05))
        async with station(cfg, out_dir / "agent", follow) as st:
            rig = st.rig
            if not await start_charging(rig):
                raise RuntimeError("the vehicle did not start charging")
            await asyncio.sleep(1.0)
            progress.update("P1", "floor: plain client hops", force=True)
            hop = await broker_hop(broker, hops)
            lat: list[float] = []
            missed = 0
            async with aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as pub:
                for i in range(commands):
                    payload = set_limit(f"p1-{i}", i + 1, AMPS[i % 2])
                    t0 = rig.now()
                    await pub.publish(f"evse/v1/{dev}/cmd", payload, qos=1)
                    frame = await wait_frame(rig, t0, "duty", 2.0)
                    if frame is None:
                        missed += 1
                    else:
                        lat.append(frame.t - t0)
                    progress.update("P1", f"setLimit {i + 1}/{commands}")
                    await asyncio.sleep(random.uniform(0.02, 0.06))
            ready = st.ready_s
            faults = [str(e.get("code")) for e in st.agent.log_events()
                      if e.get("event") == "fault_raised"]
    ms = [v * 1000 for v in lat]
    hop_ms = [v * 1000 for v in hop]
    s = summarize(ms) if ms else None
    h = summarize(hop_ms)
    res.add_summary("setLimit -> duty frame", s, "ms", Goal("<=", 15, "ms"),  # issue 12 P1
                    note="; ".join(
                        ([f"{missed} of {commands} without a duty frame within 2 s"] if missed
                         else []) + ([f"agent faults: {', '.join(faults)}"] if faults else [])))
    res.add("floor: broker hop median + write frame line time", h.median + line_s * 1000, "ms",
            n=h.n, note=f"hop median {h.median:.2f} ms + line {line_s * 1000:.2f} ms "
            f"({WRITE_FRAME_BYTES} B at {line.baud} Bd)")
    res.add("floor: broker hop p99 + write frame line time", h.p99 + line_s * 1000, "ms", n=h.n)
    res.raw = {"ready_s": [ready], "latency_ms": ms, "hop_ms": hop_ms, "missed": missed,
               "line_ms": line_s * 1000}
    return res
