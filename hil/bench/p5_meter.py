"""P5: meter polling throughput on a saturated 9600-baud bus, against the line-rate limit.

The agent's own drivers (``BusScheduler`` + ``MapMeter``) poll the rig's simulated meter through
the pty bridge with line timing, two readers back to back so a transaction is always queued.
The limit is computed from frame sizes: for each read of the meter's plan, request + response
bytes at 10 bits per character plus two t3.5 silent intervals; its reciprocal is the most
transactions a perfect master could complete per second.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.config import SerialBus, parse_config
from agent.shell.wiring import make_bus
from drivers.linetime import LineTiming, read_bytes
from drivers.meters import MapMeter, resolve_model
from hil.bench.common import Progress, bench_config
from hil.bench.stats import BenchResult, Goal
from hil.rig import Rig

READERS = 2


async def run(out_dir: Path, progress: Progress, *, seconds: float) -> BenchResult:
    res = BenchResult("P5", "meter polling on a saturated 9600-baud bus", (
        f"The agent's BusScheduler + MapMeter (ddsu666 plan, max_words_per_read 16) against "
        f"the rig's meter on the 9600 8N1 bus with line timing; {READERS} readers back to back "
        f"for {seconds:.0f} s so the bus never idles for want of work. Limit = 1 / mean over the "
        "plan of (request + response bytes) x 10 bit / 9600 + 2 x t3.5; efficiency = measured "
        "transactions/s / limit (the rig's 1 ms answer latency is inside the gap, not the limit)."))
    cfg = bench_config()
    async with Rig(cfg, out_dir / "rig") as rig:
        patched = parse_config(rig.patched_config(), source="rig")
        bus_cfg = patched.buses["meter"]
        assert isinstance(bus_cfg, SerialBus)
        conn = patched.connectors[0]
        bus = await make_bus("meter", bus_cfg).start()
        try:
            meter = MapMeter(bus, conn.meter.unit, resolve_model(conn.meter.model, None),
                             max_words_per_read=bus_cfg.max_words_per_read)
            plan = meter.plan()
            timing = LineTiming(bus_cfg.baudrate, bus_cfg.parity, bus_cfg.stopbits)
            sizes = [read_bytes(int(b.function), b.count) for b in plan]
            per_txn = [timing.transaction_time(req, resp) for req, resp in sizes]
            limit_tps = len(per_txn) / sum(per_txn)
            await meter.read()  # connect, warm up
            reads = 0
            stop_at = time.monotonic() + seconds

            async def reader() -> None:
                nonlocal reads
                while time.monotonic() < stop_at:
                    await meter.read()
                    reads += 1
                    progress.update("P5", f"{reads} meter reads")

            ok0, t0 = bus.stats.ok, time.monotonic()
            await asyncio.gather(*(reader() for _ in range(READERS)))
            ok1, t1 = bus.stats.ok, time.monotonic()
            errors = bus.stats.timeouts + bus.stats.garbled + bus.stats.io_errors
        finally:
            await bus.stop()
    tps = (ok1 - ok0) / (t1 - t0)
    bytes_per_txn = sum(r + s for r, s in sizes) / len(sizes)
    res.add("meter transactions", tps, "txn/s", n=ok1 - ok0,
            note=f"{reads} full meter reads ({len(plan)} transactions each), {errors} errors")
    res.add("line-rate limit from frame sizes", limit_tps, "txn/s",
            note=f"{bytes_per_txn:.1f} B per transaction, {sum(per_txn) / len(per_txn) * 1000:.1f}"
            " ms each")
    res.add("throughput / line-rate limit", tps / limit_tps * 100, "%", Goal(">=", 90, "%"))
    res.raw = {"plan": [(int(b.function), b.address, b.count) for b in plan],
               "txn_ms": [t * 1000 for t in per_txn], "ok": ok1 - ok0, "wall_s": t1 - t0,
               "errors": errors}
    return res
