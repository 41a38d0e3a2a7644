"""W1: the status page's cost: the agent with and without the web process, and the web process.

Three windows of the same charging session (MQTT, telemetry_period_s 1, 32 A): the agent alone;
with ``evse-agent web`` running and nobody watching; with one page open (one server-sent-events
stream, as a browser's EventSource holds it, at the default ``poll_ms`` 1000). Per process: CPU
= utime+stime over the window's wall time (share of one core), RSS = max of 1 s VmRSS samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from hil.bench.common import (
    Progress,
    bench_config,
    proc_cpu_s,
    proc_status_kb,
    start_charging,
    station,
)
from hil.bench.stats import BenchResult, Goal
from hil.broker import Mosquitto
from hil.scenario_runner import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _window(pids: dict[str, int], seconds: float, progress: Progress,
                  label: str) -> dict[str, tuple[float, float]]:
    """CPU share (% of one core) and max RSS (MB) of each process over ``seconds``."""
    cpu0 = {k: proc_cpu_s(p) for k, p in pids.items()}
    rss: dict[str, list[float]] = {k: [] for k in pids}
    w0 = time.monotonic()
    while time.monotonic() - w0 < seconds:
        await asyncio.sleep(1.0)
        for k, p in pids.items():
            kb = proc_status_kb(p, "VmRSS")
            if kb is not None:
                rss[k].append(kb / 1024)
        progress.update("W1", f"{label}: {time.monotonic() - w0:.0f}/{seconds:.0f} s")
    wall = time.monotonic() - w0
    out = {}
    for k, p in pids.items():
        c0, c1 = cpu0[k], proc_cpu_s(p)
        if c0 is None or c1 is None or not rss[k]:
            raise RuntimeError(f"{k} (pid {p}) went away during the window")
        out[k] = ((c1 - c0) / wall * 100, max(rss[k]))
    return out


async def _read_events(url: str, seen: list[int]) -> None:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        async for line in r.content:
            if line.startswith(b"event:"):
                seen[0] += 1


async def run(out_dir: Path, progress: Progress, *, window_s: float) -> BenchResult:
    res = BenchResult("W1", "status page: the agent with and without it, the web process", (
        "Whole agent on the default topology with MQTT (telemetry_period_s 1), charging at "
        f"32 A; three {window_s:.0f} s windows of the same session: the agent alone; with "
        "`evse-agent web` (a separate process) running and nobody watching; with one page open "
        "(one server-sent-events stream, what a browser's EventSource holds, poll_ms 1000). "
        "CPU = utime+stime over the window (share of one core), RSS = max of 1 s VmRSS samples. "
        "The agent's figures are P3's measured the same way."))
    with Mosquitto(out_dir / "broker", throughput=True) as broker:
        cfg = bench_config(mqtt={"host": broker.host, "port": broker.port,
                                 "telemetry_period_s": 1})
        async with station(cfg, out_dir / "agent") as st:
            if not await start_charging(st.rig):
                raise RuntimeError("the vehicle did not start charging")
            await asyncio.sleep(5.0)
            alone = await _window({"agent": st.pid}, window_s, progress, "agent alone")
            data: dict[str, Any] = yaml.safe_load(st.rig.patched_config_path.read_text())
            port = _free_port()
            data["web"] = {"port": port, "poll_ms": 1000}
            web_cfg = out_dir / "web.yaml"
            web_cfg.write_text(yaml.safe_dump(data, sort_keys=False))
            web = _spawn_web(web_cfg, out_dir / "web.log")
            reader: asyncio.Task[None] | None = None
            seen = [0]
            try:
                await _wait_http(f"http://127.0.0.1:{port}/metrics", web)
                await asyncio.sleep(3.0)
                pids = {"agent": st.pid, "web": web.pid}
                idle = await _window(pids, window_s, progress, "web idle")
                reader = asyncio.create_task(_read_events(
                    f"http://127.0.0.1:{port}/api/events", seen))
                await asyncio.sleep(3.0)
                watched = await _window(pids, window_s, progress, "one page open")
                charging = st.rig.contactor_closed()
            finally:
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                        await reader
                web.terminate()
                await asyncio.to_thread(web.wait, 10)
    a0, a1, a2 = alone["agent"], idle["agent"], watched["agent"]
    res.add("agent CPU, no web process", a0[0], "% of one core")
    res.add("agent CPU, web process idle", a1[0], "% of one core")
    res.add("agent CPU, one page open", a2[0], "% of one core",
            note=f"{a2[0] - a0[0]:+.2f} points against the agent alone")
    res.add("agent RSS, one page open", a2[1], "MB",
            note=f"{a2[1] - a0[1]:+.1f} MB against the agent alone ({a0[1]:.1f} MB)")
    res.add("web process RSS, idle", idle["web"][1], "MB")
    res.add("web process CPU, idle", idle["web"][0], "% of one core")
    res.add("web process RSS, one page open", watched["web"][1], "MB", Goal("<=", 60, "MB"))
    res.add("web process CPU, one page open", watched["web"][0], "% of one core",
            Goal("<=", 1, "%"), note=f"{seen[0]} events pushed; charging at the end: "
            f"{charging}")
    res.raw = {"alone": alone, "idle": idle, "watched": watched, "events": seen[0]}
    return res


def _spawn_web(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "agent.cli", "web", "-c", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO_ROOT)


async def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError(f"evse-agent web exited ({proc.returncode})")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("evse-agent web never answered")
