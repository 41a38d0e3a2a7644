"""What every benchmark needs: configs, a rig with its agent, /proc readings, MQTT commands.

Clocks: the rig stamps frames with ``time.monotonic`` when their last byte completes on the
virtual wire, in the rig process; the benchmarks read the same clock just before they act
(publish, EV action). ``CLOCK_MONOTONIC`` is one clock for every process of the machine, so both
ends of every latency come from one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from agent.config import AgentConfig, parse_config
from hil.agent_process import AgentProcess
from hil.envelope import encode, envelope
from hil.ev import EvParams
from hil.poll import poll_until
from hil.report import Event
from hil.rig import Rig, RigOptions
from hil.scenario_runner import DEFAULT_CONFIG
from hil.station import Station

CLK_TCK = os.sysconf("SC_CLK_TCK")
ISSUER = "bench"
NO_DELAY = ((6, 1, 1),)  # (IPPROTO_TCP, TCP_NODELAY, 1) for the bench's own MQTT clients


# --- /proc -----------------------------------------------------------------------------------

def proc_status_kb(pid: int, key: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` (kB) from ``/proc/<pid>/status``; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of the process (s) from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                            "kernel": os.uname().release}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gb"] = round(int(line.split()[1]) / 1e6, 1)
    return info


# --- progress --------------------------------------------------------------------------------

class Progress:
    """One status line, rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self._last = 0.0
        self._width = 0

    def update(self, bench: str, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        line = f"[{now - self.t0:6.1f} s] {bench}: {text}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self, bench: str, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(f"[{time.monotonic() - self.t0:6.1f} s] {bench}: {text}\n")
        self.stream.flush()


# --- configs ---------------------------------------------------------------------------------

def default_config_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    return data


def bench_config(*, mqtt: dict[str, Any] | None = None, device_id: str = "CN-BENCH-0001",
                 base: dict[str, Any] | None = None, cycling: bool = False,
                 ) -> AgentConfig:
    """The example config; ``mqtt`` adds a plain loopback link with no random delay;
    ``cycling`` lifts anti-flapping so a benchmark may close the contactor hundreds of times."""
    data = copy.deepcopy(base) if base is not None else default_config_data()
    data["device_id"] = device_id
    if cycling:
        data.setdefault("safety", {}).update(contactor_min_off_s=0,
                                             contactor_max_cycles_per_hour=600)
    if mqtt is not None:
        data["mqtt"] = {"tls": False, "random_delay_max_s": 0, "random_seed": 1, **mqtt}
    return parse_config(data, source="bench")


def single_bus_data(baud: int = 19200) -> dict[str, Any]:
    """Both boards and the meter on one serial bus (the topology check-config warns about)."""
    data = default_config_data()
    control = data["buses"]["control"]
    data["buses"] = {"rs485": {**control, "baudrate": baud, "timeout_ms": 60,
                               "device_latency_ms": 1.0}}
    conn = data["connectors"][0]
    conn["pilot_board"]["bus"] = "rs485"
    conn["relay_board"]["bus"] = "rs485"
    conn["meter"].update(bus="rs485", unit=3)
    # run refuses a bound over the budget; the bench measures this topology on purpose
    data.setdefault("safety", {})["accept_reaction_bound_over_budget"] = True
    return data


def fast_ev() -> RigOptions:
    """A vehicle that closes S2 quickly after PWM, so cycles of charge/stop are short."""
    return RigOptions(ev=EvParams(s2_close_delay_s=0.05, start_delay_s=0.05))


# --- the rig and its agent -------------------------------------------------------------------

@dataclass
class BenchStation:
    rig: Rig
    agent: AgentProcess
    ready_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.agent.pid is not None
        return self.agent.pid


def _ready_wall(agent: AgentProcess) -> float | None:
    for e in agent.log_events():
        if e.get("event") == "agent_ready" and isinstance(e.get("timestamp"), str):
            return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
    return None


@contextlib.asynccontextmanager
async def station(config: AgentConfig, run_dir: Path, options: RigOptions | None = None,
                  *, prepare: Any = None, on_start: Any = None) -> AsyncIterator[BenchStation]:
    """Rig started, agent started and READY (``hil.station.Station``); both stopped (agent by
    PID) on exit.

    ``on_start(pid)`` runs right after the agent is spawned (P7 confines it there).
    ``ready_s`` is the agent's own ``agent_ready`` log time minus the wall time just before the
    process was spawned (both ``time.time()`` of this machine).
    """
    async with Station(config, run_dir, options=options, agent_log="agent.log") as s:
        if prepare is not None:
            prepare(s.rig)
        t_spawn = time.time()
        agent = await s.start_agent(wait=False)
        if on_start is not None and agent.pid is not None:
            on_start(agent.pid)
        await agent.wait_ready()
        wall = _ready_wall(agent)
        yield BenchStation(s.rig, agent, (wall - t_spawn) if wall is not None else float("nan"))


def recent_frame(rig: Rig, since: float, what: str) -> Event | None:
    """The first ``frame`` tagged ``what`` at or after ``since`` (scanning back from the newest:
    polled every few ms over minutes of charging)."""
    return rig.timeline.recent("frame", since, what=what)


async def wait_frame(rig: Rig, since: float, what: str, timeout_s: float,
                     poll_s: float = 0.002) -> Event | None:
    """The first ``frame`` event tagged ``what`` at or after rig time ``since``."""
    deadline = time.monotonic() + timeout_s
    while True:
        frame = recent_frame(rig, since, what)
        if frame is not None or time.monotonic() > deadline:
            return frame
        await asyncio.sleep(poll_s)


async def start_charging(rig: Rig, timeout_s: float = 10.0) -> bool:
    """Plug in a vehicle that wants to charge; True once the contactor is closed."""
    if not rig.ev.plugged:
        rig.ev_action("plug_in", cable_a=32.0, wants_charge=True)
    elif not rig.ev.s2_closed:
        rig.ev_action("close_s2")
    return await poll_until(rig.contactor_closed, timeout_s, 0.005)


@contextlib.asynccontextmanager
async def telemetry_arrivals(sub: aiomqtt.Client, device_id: str) -> AsyncIterator[list[float]]:
    """``sub`` subscribed to the device's telemetry; the list holds each message's monotonic
    arrival time until the block ends (P3 and P7 count telemetry over their windows)."""
    tel: list[float] = []
    await sub.subscribe(f"evse/v1/{device_id}/tel", qos=1)

    async def count() -> None:
        async for _ in sub.messages:
            tel.append(time.monotonic())

    counter = asyncio.create_task(count())
    try:
        yield tel
    finally:
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter


# --- commands --------------------------------------------------------------------------------

def set_limit(command_id: str, seq: int, amps: float, *, connector: int | None = 1,
              duration_s: int = 3600) -> bytes:
    """A setLimit envelope (unsigned: the bench agents run without issuer keys)."""
    return encode(envelope("setLimit", {"limit": {"value": amps, "unit": "A"},
                                        "durationS": duration_s},
                           connector=connector, issuer=ISSUER, id=command_id, seq=seq))
