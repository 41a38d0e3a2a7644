"""Acceptance harness of orderly charging: a HIL rig, the agent process, a real mosquitto.

    async with AgentOnRig(tmp_path, broker, mqtt={"random_delay_max_s": 5}) as a:
        a.rig.ev_action("plug_in", cable_a=32); a.rig.ev_action("close_s2")
        reply = await a.send("setLimit", {"limit": {"value": 10, "unit": "A"}, "durationS": 600})
        await a.wait_offer(10)

Why the parts: the rig simulates the boards, meter and EV on real pty serial ports; the agent
runs as a separate process (``hil.agent_process.AgentProcess``, stopped or killed by PID); the
test watches the broker through a ``Recorder`` subscribed to ``{root}/{id}/#``. Commands get a
fresh id, an increasing ``seq`` and ``issuedAt`` now; replies are matched on ``commandId``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from agent.config import parse_config
from hil.agent_process import AgentProcess
from hil.broker import Mosquitto
from hil.envelope import envelope
from hil.poll import wait_until
from hil.recorder import Recorder
from hil.scenario import deep_merge
from hil.station import Station, StationHarness

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "config" / "evse-agent.example.yaml"
ROOT = "evse/v1"
WAIT_S = 20.0
# The safety timings are not under test here: wider margins keep a busy CI host (the rig shares
# this process's event loop) from raising PILOT_BOARD_LOST in the middle of an orderly test.
LOADED_HOST: dict[str, Any] = {
    "buses": {"control": {"timeout_ms": 40}},
    "safety": {"contactor_min_off_s": 0, "pilot_lost_ms": 400, "pilot_frozen_ms": 600,
               "relay_lost_ms": 3000,
               # the 40 ms timeout puts the bound at ~134 ms: run refuses that without this
               "accept_reaction_bound_over_budget": True},
}


def agent_config(device_id: str, overrides: Mapping[str, Any] | None = None,
                 connector: Mapping[str, Any] | None = None, base: Path = EXAMPLE_CONFIG) -> Any:
    """The example config (or ``base``) with ``overrides`` deep-merged and ``connector`` into
    connector 1; the loaded-host margins go to every control bus."""
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    data["device_id"] = device_id
    loaded = dict(LOADED_HOST, buses={name: LOADED_HOST["buses"]["control"]
                                      for name in data["buses"] if name.startswith("control")})
    data = deep_merge(data, deep_merge(loaded, dict(overrides or {})))
    data["connectors"][0] = deep_merge(data["connectors"][0], dict(connector or {}))
    return parse_config(data, source=str(EXAMPLE_CONFIG))


class AgentOnRig(StationHarness):
    """One charger: rig + agent process + a recorder on its topics (see module docstring)."""

    def __init__(
        self,
        run_dir: Path,
        broker: Mosquitto,
        *,
        device_id: str = "CN-TEST-0001",
        mqtt: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        connector: Mapping[str, Any] | None = None,
        port: int | None = None,
        recorder_session: bool = False,
        base: Path = EXAMPLE_CONFIG,
    ) -> None:
        self.run_dir = run_dir
        self.broker = broker
        self.device_id = device_id
        self.base = f"{ROOT}/{device_id}"
        self.mqtt: dict[str, Any] = {
            "host": broker.host, "port": port or broker.port, "tls": False,
            "random_delay_max_s": 0, "telemetry_period_s": 2, "telemetry_idle_period_s": 5,
            "keepalive_s": 5, **(mqtt or {})}
        self.config = agent_config(device_id, overrides, connector, base)
        self.station = Station(self.config, run_dir, mqtt=self.mqtt)
        self.rig = self.station.rig
        self.recorder = Recorder(broker.host, broker.port, [f"{self.base}/#"],
                                 identifier=f"test-consumer-{device_id}" if recorder_session
                                 else None, session=recorder_session)

    @property
    def agent(self) -> AgentProcess | None:
        return self.station.agent

    @property
    def config_path(self) -> Path:
        return self.station.config_path

    # --- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self.station.open()
        await self.recorder.connect()
        await self.start_agent()

    async def close(self) -> None:
        try:
            await self.station.close()
        finally:
            await self.recorder.close()

    async def start_agent(self, wait_online: bool = True) -> None:
        seen = len(self.recorder.on(f"{self.base}/status"))
        await self.station.start_agent()
        if wait_online:
            await self.wait(lambda: any(s.get("online") for s in
                                        self.recorder.json_on(f"{self.base}/status")[seen:]),
                            "birth status")

    async def stop_agent(self) -> int | None:
        return await self.station.stop_agent()

    def kill_agent(self) -> None:
        """SIGKILL by PID: a crash, nothing flushed."""
        self.station.kill_agent()

    async def broker_down(self, kill: bool = False) -> None:
        """Stop (or SIGKILL) the broker off the event loop: the rig must keep answering."""
        await asyncio.to_thread(self.broker.kill if kill else self.broker.stop)

    async def broker_up(self) -> None:
        await asyncio.to_thread(self.broker.start)
        await self.recorder.reconnect()

    # --- commands ----------------------------------------------------------------------------

    async def publish(self, env: Mapping[str, Any] | bytes, topic: str | None = None) -> None:
        payload = env if isinstance(env, bytes) else json.dumps(env).encode()
        await self.recorder.publish(topic or f"{self.base}/cmd", payload)

    async def send(self, type_: str, body: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        env = envelope(type_, body, **fields)
        await self.publish(env)
        return await self.reply(env["id"])

    async def reply(self, command_id: str, nth: int = 1) -> dict[str, Any]:
        """The ``nth`` reply to ``command_id`` on ``rsp``."""
        await self.wait(lambda: len(self.replies(command_id)) >= nth, f"reply to {command_id}")
        return self.replies(command_id)[nth - 1]

    def replies(self, command_id: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.recorder.json_on(f"{self.base}/rsp")
                if command_id is None or r.get("commandId") == command_id]

    # --- what the charger published ----------------------------------------------------------

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.recorder.json_on(f"{self.base}/evt")
                if type_ is None or e.get("type") == type_]

    def telemetry(self) -> list[dict[str, Any]]:
        return self.recorder.json_on(f"{self.base}/tel")

    def journaled(self) -> dict[int, dict[str, Any]]:
        """evt and tel deduplicated on seq (a consumer's view); the same seq must be equal."""
        out: dict[int, dict[str, Any]] = {}
        for topic in ("evt", "tel"):
            for msg in self.recorder.json_on(f"{self.base}/{topic}"):
                assert msg["deviceId"] == self.device_id
                seen = out.setdefault(msg["seq"], msg)
                assert seen == msg, f"seq {msg['seq']} published with two contents"
        return out

    def state(self) -> dict[str, Any] | None:
        states = self.recorder.on(f"{self.base}/state")
        return json.loads(states[-1].payload) if states and states[-1].payload else None

    async def wait_event(self, type_: str, pred: Callable[[dict[str, Any]], bool] = lambda e: True,
                         limit_s: float = WAIT_S) -> dict[str, Any]:
        await self.wait(lambda: any(pred(e) for e in self.events(type_)), f"event {type_}",
                        limit_s)
        return next(e for e in self.events(type_) if pred(e))

    async def wait(self, pred: Callable[[], bool], what: str, limit_s: float = WAIT_S) -> None:
        await wait_until(pred, limit_s, f"{self.device_id}: {what}")

    # --- hardware ----------------------------------------------------------------------------

    async def plug_and_charge(self, cable_a: float = 32.0) -> None:
        """Plug in, close S2, wait for the contactor (the first start may wait a drawn delay)."""
        self.rig.ev_action("plug_in", cable_a=cable_a)
        self.rig.ev_action("close_s2")
        await self.wait(lambda: self.rig.contactor_closed(), "contactor closed", 30.0)

    async def wait_offer(self, amps: float, tol: float = 0.5, limit_s: float = WAIT_S) -> None:
        await self.wait(lambda: abs(self.rig.offered_a() - amps) <= tol,
                        f"offer {amps} A (now {self.rig.offered_a():.1f} A)", limit_s)


async def run_cli(*args: str, env: Mapping[str, str] | None = None,
                  limit_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """A command line in a subprocess, without blocking the rig's event loop."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None)
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    return subprocess.CompletedProcess(list(args), proc.returncode or 0, out.decode(),
                                       err.decode())


def seq_gaps(seqs: set[int]) -> list[int]:
    """Missing numbers between 1 and max(seqs)."""
    return sorted(set(range(1, max(seqs) + 1)) - seqs) if seqs else []
