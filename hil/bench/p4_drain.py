"""P4: the agent drains a 100k-message journal backlog to the broker.

The backlog is written with the agent's own ``Journal`` into the agent's state directory before
the agent starts (as if it had been offline), so the agent finds it on start-up and drains it
through its real link. A subscriber in the bench counts unique ``seq`` values; the rate is
backlog / (last - first backlog message received); RSS growth is the agent's peak RSS during the
drain minus its RSS at READY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import aiomqtt

from agent.journal import Journal
from hil.bench.common import NO_DELAY, Progress, bench_config, proc_status_kb, station
from hil.bench.stats import BenchResult, Goal
from hil.broker import Mosquitto
from hil.scenario_runner import REPO_ROOT

TEL_BODY = {"connectors": [{"connector": 1, "pilot": "C", "contactor": "closed",
                            "currentA": [16.02], "voltageV": [229.8], "powerW": 3681.5,
                            "energyWh": 123456.7, "offeredA": 16.0, "limitA": 16.0}]}


DEVICE_ID = "CN-BENCH-0001"


def journal_path(out_dir: Path) -> Path:
    """Where the agent of this benchmark will find its journal (the rig's state dir)."""
    return out_dir / "agent" / "rig" / "state" / "journal.db"


def prefill(path: Path, device_id: str, rows: int, progress: Progress | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with Journal(path, device_id=device_id, budget_bytes=500_000_000) as journal:
        t = time.time() - rows
        for i in range(rows):
            journal.append("tel", TEL_BODY, t + i)
            if progress is not None and i % 1000 == 0:
                progress.update("P4", f"writing backlog {i}/{rows}")


async def start_prefill(out_dir: Path, rows: int) -> asyncio.subprocess.Process:
    """Write the backlog in a separate process (~0.5 ms per committed row: 50 s for 100k), so
    the run can overlap it with a benchmark that leaves a core idle."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil.bench.p4_drain", str(journal_path(out_dir)), DEVICE_ID,
        str(rows), stdin=asyncio.subprocess.DEVNULL, cwd=REPO_ROOT)


async def run(out_dir: Path, progress: Progress, *, rows: int,
              writer: asyncio.subprocess.Process | None = None) -> BenchResult:
    res = BenchResult("P4", "drain of a journal backlog", (
        f"{rows:,} telemetry rows committed with the agent's Journal into its state dir while "
        "it is not running; then broker up, a QoS 1 subscriber on .../tel, agent started "
        "(default topology, no vehicle). Rate = backlog / (last - first backlog message "
        "received); RSS growth = peak VmRSS (sampled every 100 ms) during the drain - VmRSS at "
        "READY; loss = backlog seqs never received."))
    broker = Mosquitto(out_dir / "broker", throughput=True)
    cfg = bench_config(mqtt={"host": broker.host, "port": broker.port,
                             "journal_budget_mb": 500}, device_id=DEVICE_ID)
    run_dir = out_dir / "agent"
    t_fill = time.monotonic()
    if writer is not None:
        progress.update("P4", "waiting for the backlog writer", force=True)
        if await writer.wait() != 0:
            raise RuntimeError(f"backlog writer exited with {writer.returncode}")
    else:
        await asyncio.to_thread(prefill, journal_path(out_dir), DEVICE_ID, rows, progress)
    fill_s = time.monotonic() - t_fill
    seen: set[int] = set()
    first = last = 0.0
    with broker.start():
        async with aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY,
                                  max_queued_incoming_messages=0) as sub:
            await sub.subscribe(f"evse/v1/{cfg.device_id}/tel", qos=1)

            async def collect() -> None:
                nonlocal first, last
                async for msg in sub.messages:
                    seq = int(json.loads(bytes(msg.payload))["seq"])
                    if seq <= rows:
                        now = time.monotonic()
                        first = first or now
                        last = now
                        seen.add(seq)

            task = asyncio.create_task(collect())
            async with station(cfg, run_dir) as st:
                base = proc_status_kb(st.pid, "VmRSS") or 0
                peak = base
                deadline = time.monotonic() + max(60.0, rows / 500)
                while len(seen) < rows and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    peak = max(peak, proc_status_kb(st.pid, "VmRSS") or 0)
                    progress.update("P4", f"drained {len(seen):,}/{rows:,}")
                await asyncio.sleep(0.5)
                hwm = proc_status_kb(st.pid, "VmHWM") or 0
                ready = st.ready_s
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    rate = len(seen) / (last - first) if last > first else None
    lost = rows - len(seen)
    res.add("drain rate", rate, "msg/s", Goal(">=", 2000, "msg/s"), len(seen),
            note=f"{len(seen):,} messages in {last - first:.1f} s")
    res.add("RSS growth during the drain", (peak - base) / 1024, "MB", Goal("<=", 10, "MB"),
            note=f"{base / 1024:.1f} MB at READY, peak {peak / 1024:.1f} MB, "
            f"VmHWM {hwm / 1024:.1f} MB")
    res.add("backlog messages lost", lost, "msg", Goal("<=", 0, "msg"))
    res.raw = {"rows": rows, "received": len(seen), "drain_s": last - first,
               "rss_base_mb": base / 1024, "rss_peak_mb": peak / 1024, "hwm_mb": hwm / 1024,
               "prefill_s": fill_s, "ready_s": [ready]}
    return res


if __name__ == "__main__":
    prefill(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
