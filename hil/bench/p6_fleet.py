"""P6: N agents with their rigs on one broker: a group setLimit, and a broker restart.

Rigs run in helper processes (``hil.bench.fleet_worker``, a few rigs each, every agent its own
process). A group setLimit's latency per agent is publish (bench monotonic time) -> that agent's
new duty frame complete on its rig's virtual wire (the same system-wide monotonic clock). After
a broker restart, recovery is broker listening again -> the last agent's birth (online) seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from hil.bench.common import ISSUER, NO_DELAY, Progress, set_limit
from hil.bench.stats import BenchResult, Goal, summarize
from hil.broker import Mosquitto
from hil.scenario_runner import REPO_ROOT

GROUP = "bench-fleet"
READY_TIMEOUT_S = 90.0
SETTLE_S = 30.0


class Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.agent_pids: list[int] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hil.bench.fleet_worker", json.dumps(self.spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT)

    async def expect(self, tag: str, timeout_s: float) -> Any:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"fleet worker {self.spec['first']} exited early")
                if line.startswith(tag + " "):
                    return json.loads(line[len(tag) + 1:])

    async def send(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def terminate(self) -> None:
        """SIGTERM: the helper's handler stops its agents by PID (they may not be READY)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 90.0)
        except TimeoutError:
            os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> dict[str, Any]:
        if self.proc is None or self.proc.returncode is not None:
            return {}
        try:
            await self.send("stop")
            out: dict[str, Any] = await self.expect("STOPPED", 60.0)
            await asyncio.wait_for(self.proc.wait(), 10.0)
            return out
        except (TimeoutError, RuntimeError, BrokenPipeError, ConnectionResetError):
            for pid in [*self.agent_pids, self.proc.pid]:  # never leave an agent behind
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await self.proc.wait()
            return {}


def _cpu_busy() -> tuple[float, float]:
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def _group_rounds(broker: Mosquitto, workers: list[Worker], rounds: int, first_seq: int,
                        progress: Progress, tag: str) -> tuple[list[float], int]:
    lat: list[float] = []
    missing = 0
    async with aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as pub:
        for i in range(rounds):
            seq = first_seq + i
            payload = set_limit(f"p6-{seq}", seq, 10.0 if seq % 2 == 0 else 16.0,
                                connector=None)
            t0 = time.monotonic()
            await pub.publish(f"evse/v1/group/{GROUP}/cmd", payload, qos=1)
            for w in workers:
                await w.send(f"duty {t0!r} 5.0")
            for w in workers:
                got = await w.expect("DUTY", 30.0)
                for t in got.values():
                    if t is None:
                        missing += 1
                    else:
                        lat.append(t - t0)
            progress.update("P6", f"{tag}: group setLimit {i + 1}/{rounds}", force=True)
            await asyncio.sleep(0.5)
    return lat, missing


async def _settle(workers: list[Worker], timeout_s: float) -> int:
    """Wait (bounded) until every vehicle is offered current again: a fleet growing on 2 cores
    starves some rigs, their agents rightly fault and recover; commands are measured after."""
    for w in workers:
        await w.send(f"settle {timeout_s!r}")
    total = 0
    for w in workers:
        total += int((await w.expect("SETTLED", timeout_s + 30.0))["offering"])
    return total


async def _busy_pct(seconds: float) -> float:
    b0 = _cpu_busy()
    await asyncio.sleep(seconds)
    b1 = _cpu_busy()
    return (b1[0] - b0[0]) / (b1[1] - b0[1]) * 100


async def run(out_dir: Path, progress: Progress, *, agents: list[int], per_worker: int,
              rounds: int, poll_ms: float) -> BenchResult:
    """The fleet grows through the sizes in ``agents`` (helpers added, nobody restarted); each
    size gets ``rounds`` group commands; the broker restart is done at the largest size."""
    res = BenchResult("P6", "fleet on one broker", (
        f"Fleet sizes {', '.join(map(str, agents))}: agent processes, each with its own rig "
        f"(line timing on), {per_worker} rigs per helper process (helpers started one after "
        f"another), rig tick 100 ms, pilot poll {poll_ms:g} ms, vehicles plugged (state 2, PWM "
        f"on), one mosquitto. At each size, {rounds} group setLimit commands (10/16 A "
        "alternately) on evse/v1/group/bench-fleet/cmd; latency per agent = its new duty frame "
        "complete on its rig - publish time (5 s limit). Machine load = share of both CPUs busy "
        "over 5 s with the fleet idle. At the largest size the broker is stopped for 3 s and "
        "started on the same port; recovery = broker up -> the last agent's birth (online)."))
    broker = Mosquitto(out_dir / "broker", throughput=True).start()
    workers: list[Worker] = []
    devices: list[str] = []
    sizes: dict[str, Any] = {}
    recovery: float | None = None
    births = 0
    held: int | None = None
    seq = 1
    try:
        t_start = time.monotonic()
        for size in agents:
            while len(devices) < size and held is None:  # one helper at a time: many agents
                first = len(devices) + 1  # importing at once starve the rigs' answers
                w = Worker({"base_dir": str(out_dir / f"w{len(workers)}"), "host": broker.host,
                            "port": broker.port, "group": GROUP, "poll_ms": poll_ms,
                            "first": first, "count": min(per_worker, size - len(devices)),
                            "ready_timeout_s": READY_TIMEOUT_S})
                await w.start()
                try:
                    ready = await w.expect("READY", READY_TIMEOUT_S + 30.0)
                except (RuntimeError, TimeoutError) as exc:
                    held = len(devices)
                    res.notes.append(f"growing to {len(devices) + w.spec['count']} agents failed "
                                     f"({exc}): its agents did not reach READY within "
                                     f"{READY_TIMEOUT_S:.0f} s; the machine holds {held}")
                    await w.terminate()
                    break
                workers.append(w)
                w.agent_pids = [int(p) for p in ready["pids"]]
                devices += ready["devices"]
                progress.update("P6", f"{len(devices)}/{agents[-1]} agents READY", force=True)
            if held is not None and size > held:
                break
            up_s = time.monotonic() - t_start
            await asyncio.sleep(3.0)
            offering = await _settle(workers, SETTLE_S)
            busy = await _busy_pct(5.0)
            lat, missing = await _group_rounds(broker, workers, rounds, seq, progress,
                                               f"{len(devices)} agents")
            seq += rounds
            s = summarize(lat) if lat else None
            res.add_summary(f"{len(devices)} agents: group setLimit -> duty frame", s, "s",
                            Goal("<=", 1.0, "s"),
                            note=(f"{missing} of {len(devices) * rounds} without a duty "
                                  "frame in 5 s; " if missing else "")
                            + f"machine {busy:.0f} % busy idle; {offering} of {len(devices)} "
                            "offering before the commands")
            sizes[str(len(devices))] = {"latency_s": lat, "missing": missing,
                                        "busy_pct": busy, "ready_after_s": up_s,
                                        "offering_before": offering}
        recovery, births = await _restart(broker, devices, progress)
    finally:
        stats = [await w.stop() for w in workers]
        broker.stop()
    res.add("agents on the broker", len(devices), "processes", Goal(">=", 50, ""),
            note=f"each with its rig; {sizes.get(str(len(devices)), {}).get('busy_pct', 0):.0f}"
            " % of the machine busy with the fleet idle")
    res.add(f"{len(devices)} agents: recovery after broker restart (last birth)", recovery, "s",
            note=f"{births} of {len(devices)} births seen; full-jitter backoff base 0.5 s, "
            "cap 60 s")
    res.raw = {"sizes": sizes, "recovery_s": recovery, "births": births,
               "rig_stalls": sum(int(x.get("stalls", 0)) for x in stats), "issuer": ISSUER}
    return res


async def _restart(broker: Mosquitto, devices: list[str], progress: Progress,
                   ) -> tuple[float | None, int]:
    broker.stop()
    await asyncio.sleep(3.0)
    broker.start()
    t_up = time.monotonic()
    online: dict[str, float] = {}
    async with aiomqtt.Client(broker.host, broker.port, socket_options=NO_DELAY) as sub:
        await sub.subscribe("evse/v1/+/status", qos=1)
        deadline = t_up + 120.0

        async def collect() -> None:
            async for msg in sub.messages:
                with contextlib.suppress(ValueError, TypeError):
                    body = json.loads(bytes(msg.payload))
                    if body.get("online") is True:
                        online.setdefault(str(body.get("deviceId")), time.monotonic())

        task = asyncio.create_task(collect())
        while len(online) < len(devices) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            progress.update("P6", f"after broker restart: {len(online)}/{len(devices)} online")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if len(online) < len(devices):
        return None, len(online)
    return max(online.values()) - t_up, len(online)
