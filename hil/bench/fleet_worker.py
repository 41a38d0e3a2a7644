"""A helper process of P6: several rigs, each with its own agent process, on one broker.

    python -m hil.bench.fleet_worker SPEC_JSON

Protocol on stdin/stdout, one JSON line each way:
    -> READY {"devices": [...], "ready_s": [...]}        all agents READY, vehicles plugged (B)
    <- duty T TIMEOUT   -> DUTY {"device": t_abs|null}   first duty frame at/after monotonic T
    <- stop             -> STOPPED {"stalls": n}         agents stopped by PID, rigs closed
``time.monotonic`` is one system-wide clock, so the parent compares T and the rigs' stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hil.agent_process import AgentProcess
from hil.bench.common import bench_config, default_config_data, wait_frame
from hil.poll import poll_until
from hil.rig import Rig, RigOptions


def fleet_config_data(poll_ms: float) -> dict[str, Any]:
    data = default_config_data()
    conn = data["connectors"][0]
    conn["pilot_board"]["poll_ms"] = poll_ms
    # the idle poll may not be faster than the poll (check-config refuses it): same period
    conn["pilot_board"]["idle_poll_ms"] = max(poll_ms, conn["pilot_board"].get("idle_poll_ms", 0))
    conn["relay_board"]["poll_ms"] = max(100.0, poll_ms * 2)
    data["safety"].update(pilot_lost_ms=max(60.0, poll_ms * 5),  # lost = several polls missed
                          pilot_frozen_ms=max(100.0, poll_ms * 5))
    # 50 agents and their Python rigs oversubscribe 2 cores: a simulated board may answer tens
    # of ms late because its process waits for a CPU, not because the board is slow. P6
    # measures the fleet's MQTT path; the safety timings are P2's (default timeouts there).
    data["buses"]["control"]["timeout_ms"] = 50
    data["safety"]["accept_reaction_bound_over_budget"] = True  # ~154 ms: run refuses it else
    return data


async def _first_duty(rig: Rig, t_abs: float, timeout_s: float) -> float | None:
    frame = await wait_frame(rig, rig.timeline.rel(t_abs), "duty", timeout_s, 0.01)
    return None if frame is None else rig.timeline.t0 + frame.t


def _say(tag: str, obj: Any) -> None:
    sys.stdout.write(f"{tag} {json.dumps(obj)}\n")
    sys.stdout.flush()


async def main(spec: dict[str, Any]) -> None:
    base = Path(spec["base_dir"])
    data = fleet_config_data(float(spec["poll_ms"]))
    tick_s = float(spec.get("tick_s", 0.1))
    rigs: dict[str, Rig] = {}
    agents: dict[str, AgentProcess] = {}
    try:
        for i in range(int(spec["first"]), int(spec["first"]) + int(spec["count"])):
            dev = f"CN-FLEET-{i:04d}"
            cfg = bench_config(base=data, device_id=dev, mqtt={
                "host": spec["host"], "port": spec["port"], "groups": [spec["group"]],
                "telemetry_period_s": 10})
            rig = await Rig(cfg, base / dev / "rig", options=RigOptions(tick_s=tick_s)).start()
            rigs[dev] = rig
            agents[dev] = AgentProcess(rig.patched_config_path, base / dev / "agent.log")
        t_spawn = time.time()
        for agent in agents.values():
            agent.start()
        await asyncio.gather(*(a.wait_ready(float(spec.get("ready_timeout_s", 120.0)))
                               for a in agents.values()))
        ready_s = time.time() - t_spawn
        for rig in rigs.values():
            rig.ev_action("plug_in", cable_a=32.0)
        await asyncio.gather(*(poll_until(lambda r=r: r.offered_a() > 0, 30.0, 0.005)
                               for r in rigs.values()))
        _say("READY", {"devices": list(rigs), "ready_all_s": ready_s,
                       "pids": [a.pid for a in agents.values()]})
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            parts = line.split()
            if parts[0] == "duty":
                t_abs, timeout = float(parts[1]), float(parts[2])
                found = await asyncio.gather(*(_first_duty(r, t_abs, timeout)
                                               for r in rigs.values()))
                _say("DUTY", dict(zip(rigs, found, strict=True)))
            elif parts[0] == "settle":  # every vehicle offered again (no fault being cleared)
                timeout = float(parts[1])
                ok = await asyncio.gather(*(poll_until(lambda r=r: r.offered_a() > 0,
                                                       timeout, 0.005)
                                            for r in rigs.values()))
                _say("SETTLED", {"offering": sum(ok), "of": len(ok)})
            elif parts[0] == "stop":
                break
    finally:
        await asyncio.gather(*(asyncio.to_thread(a.stop) for a in agents.values()),
                             return_exceptions=True)
        stalls = sum(len(r.timeline.events("rig_stall")) for r in rigs.values())
        for rig in rigs.values():
            with contextlib.suppress(Exception):
                await rig.stop()
        _say("STOPPED", {"stalls": stalls})


async def _guarded(spec: dict[str, Any]) -> None:
    """SIGTERM cancels the work, so the ``finally`` still stops every agent by PID."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main(spec)


if __name__ == "__main__":
    asyncio.run(_guarded(json.loads(sys.argv[1])))
