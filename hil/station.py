"""One charger on the bench: the rig process and the agent process that drives it.

Tests (``tests/hil/orderly_harness.AgentOnRig``), the benchmarks (``hil.bench.common.station``),
the fault matrix (``hil.faults.testbed.Testbed``) and the scenario runner build on this one
harness, each adding what it watches with (a recorder on the broker, the aggregator's subscriber,
the scenario's expectations).

    async with Station(config, run_dir, mqtt={...}) as s:   # rig started, agent not yet
        await s.start_agent()                                # READY (agent_ready in its log)
        s.rig.ev_action("plug_in"); ...
        s.kill_agent(); await s.start_agent()                # agent-2.log

The agent runs on the rig's patched config (``<rig>/agent.yaml``), or with ``mqtt`` on a copy
whose MQTT section it replaces (``<run_dir>/agent-mqtt.yaml``). It is stopped (SIGTERM, then
SIGKILL) or killed by its PID only, always before the rig, which keeps answering the agent's
safe-state writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml

from agent.config import AgentConfig
from hil.agent_process import AgentProcess
from hil.rig import Rig, RigOptions


class StationHarness:
    """Base of the harnesses built around a Station (``Testbed``, ``AgentOnRig``): ``async
    with`` runs ``open``, and ``close`` also when ``open`` fails part-way, so a failed start
    leaves no broker, rig or agent process behind. ``close`` copes with what never opened."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Station:
    def __init__(self, config: AgentConfig, run_dir: Path, *, options: RigOptions | None = None,
                 mqtt: Mapping[str, Any] | None = None, rig_dir: str = "rig",
                 agent_log: str = "agent-{n}.log") -> None:
        self.run_dir = run_dir
        self.config = config
        self.rig = Rig(config, run_dir / rig_dir, options=options or RigOptions())
        self.mqtt = dict(mqtt) if mqtt is not None else None
        self.config_path = (self.rig.patched_config_path if mqtt is None
                            else run_dir / "agent-mqtt.yaml")
        self.agent: AgentProcess | None = None
        self.boots = 0
        self.returncodes: list[int | None] = []
        self._agent_log = agent_log

    async def __aenter__(self) -> Station:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> Station:
        await asyncio.to_thread(self.run_dir.mkdir, parents=True, exist_ok=True)
        await self.rig.start()
        if self.mqtt is not None:  # the rig wrote its patched config; this one adds the link
            data = self.rig.patched_config()
            data["mqtt"] = self.mqtt
            self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        return self

    async def close(self) -> None:
        if self.agent is not None and self.agent.proc is not None \
                and self.agent.proc.poll() is None:
            with contextlib.suppress(Exception):
                await self.stop_agent()
        await self.rig.stop()
        with contextlib.suppress(OSError):
            self.rig.timeline.save(self.run_dir / "timeline.json")  # evidence when it failed

    # --- the agent -----------------------------------------------------------------------

    def log_path(self, boot: int) -> Path:
        return self.run_dir / self._agent_log.format(n=boot)

    async def start_agent(self, *, wait: bool = True) -> AgentProcess:
        self.boots += 1
        self.agent = AgentProcess(self.config_path, self.log_path(self.boots))
        self.agent.start()
        if wait:
            await self.agent.wait_ready()
        return self.agent

    async def stop_agent(self) -> int | None:
        assert self.agent is not None
        code = await asyncio.to_thread(self.agent.stop)
        self.returncodes.append(code)
        return code

    def kill_agent(self) -> None:
        """SIGKILL by PID: a crash, nothing flushed, no safe-state drive."""
        assert self.agent is not None and self.agent.proc is not None
        self.agent.proc.send_signal(signal.SIGKILL)
        self.agent.proc.wait(5)
        self.returncodes.append(self.agent.proc.returncode)

    def log_events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every boot's JSON log events (of one ``name``), in boot order."""
        out: list[dict[str, Any]] = []
        for boot in range(1, self.boots + 1):
            events = AgentProcess(self.config_path, self.log_path(boot)).log_events()
            out += [e for e in events if name is None or e.get("event") == name]
        return out
