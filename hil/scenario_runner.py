"""Run a scenario: the rig and the agent (``hil.agent_process``) each in a process of its own,
steps in order; the agent is always stopped by PID (SIGTERM, then SIGKILL) and the rig after it.
Expectations are judged from the rig's timeline (rig clock), never from the agent's own log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from agent import localapi
from agent.config import AgentConfig, parse_config
from hil.agent_process import AgentProcess
from hil.aggregator import Aggregator, valley_profile
from hil.broker import Mosquitto, mosquitto_binary
from hil.conditions import Conditions
from hil.ev import EvParams
from hil.report import Timeline, plot_timeline, render_markdown
from hil.rig import Rig, RigOptions
from hil.scenario import Check, RunResult, Scenario, ScenarioStep, StepResult, deep_merge
from hil.station import Station

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "evse-agent.example.yaml"


def rig_options(spec: dict[str, Any]) -> RigOptions:
    """``rig:`` section of a scenario -> RigOptions (``ev:`` -> EvParams)."""
    spec = dict(spec)
    ev = EvParams(**spec.pop("ev", {}))
    return RigOptions(ev=ev, **spec)


def scenario_config(scenario: Scenario, override_path: str | None = None,
                    broker: Mosquitto | None = None) -> AgentConfig:
    source = override_path or scenario.config
    path = Path(source) if source else DEFAULT_CONFIG
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data = deep_merge(data, scenario.config_overrides)
    if broker is not None:  # the private broker of this run: plain MQTT on loopback
        mqtt = {"host": broker.host, "port": broker.port, "tls": False,
                **(scenario.mqtt or {})}
        data = deep_merge(data, {"mqtt": mqtt})
    return parse_config(data, source=str(path))


def _start_broker(scenario: Scenario, out_dir: Path, result: RunResult) -> Mosquitto | None:
    """A private mosquitto when the scenario wants MQTT; without the binary, say so and run
    the local part of the scenario (aggregator steps then fail as 'no broker')."""
    if scenario.mqtt is None:
        return None
    if mosquitto_binary() is None:
        result.notes.append("mosquitto not installed (apt-get install mosquitto): the "
                            "aggregator part of this scenario cannot run")
        return None
    broker = Mosquitto(out_dir / "broker")
    broker.start()
    result.notes.append(f"private mosquitto on {broker.host}:{broker.port} (pid {broker.pid})")
    return broker


class ScenarioRunner(Conditions):
    """Executes steps against a started rig and (optionally) a running agent."""

    def __init__(self, rig: Rig, agent: AgentProcess | None = None,
                 aggregator: Aggregator | None = None) -> None:
        self.rig = rig
        self.agent = agent
        self.aggregator = aggregator
        self.mark: float = 0.0
        self.labels: dict[str, float] = {}

    async def run_steps(self, scenario: Scenario, result: RunResult) -> None:
        for step in scenario.steps:
            outcome = StepResult(step, self.rig.now(), self.rig.now())
            result.outcomes.append(outcome)
            try:
                await self.run_step(step, outcome)
            except Exception as exc:  # a broken step is reported, the run goes on
                outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.t_end = self.rig.now()

    async def run_step(self, step: ScenarioStep, outcome: StepResult) -> None:
        kind, args = step.kind, dict(step.args)
        if kind == "wait":
            await asyncio.sleep(args["seconds"])
        elif kind in ("inject", "clear"):
            self._set_mark(step, outcome, self.rig.inject(args["fault"], args["value"],
                                                          step.connector))
        elif kind == "agent":
            self._set_mark(step, outcome, self.rig.now())
            self.rig.timeline.add("agent", self.rig.clock(), **_jsonable(args))
            outcome.reply = await self.agent_request(args, step.connector)
            if not outcome.reply.get("ok", False) and args["cmd"] != "status":
                outcome.error = f"agent refused: {outcome.reply.get('error')}"
        elif kind == "aggregator":
            self._set_mark(step, outcome, self.rig.now())
            outcome.checks.append(await self.aggregator_command(args, step.connector))
        elif kind in ("expect", "wait_until"):
            check = await self.evaluate(args, step.connector)
            if kind == "expect" or not check.passed:
                outcome.checks.append(check)
        else:
            self._set_mark(step, outcome, self.rig.ev_action(kind, step.connector, **args))

    def _set_mark(self, step: ScenarioStep, outcome: StepResult, t: float) -> None:
        self.mark = outcome.mark = t
        if step.label:
            self.labels[step.label] = t

    # --- agent -----------------------------------------------------------------------------

    async def agent_request(self, args: dict[str, Any], connector: int | None) -> dict[str, Any]:
        payload = dict(args)
        if payload["cmd"] != "status":
            payload.setdefault("connector", connector or 1)
        path = self.rig.control_socket
        return await asyncio.to_thread(localapi.request, path, payload)

    async def aggregator_command(self, args: dict[str, Any], connector: int | None) -> Check:
        """Send a command as the aggregator; the check is its reply status."""
        type_, body = args["type"], dict(args["body"])
        name = f"aggregator {type_}"
        if self.aggregator is None:
            return Check(name, False, "no broker", "reply", "scenario needs mqtt and mosquitto")
        if type_ == "valley":  # a setProfile whose window starts now (compressed time)
            type_, body = "setProfile", valley_profile(datetime.now(UTC), **body)
        self.rig.timeline.add("aggregator", self.rig.clock(), command=type_)
        try:
            reply = await self.aggregator.send(type_, body, connector=connector,
                                               group=args.get("group"))
        except TimeoutError:
            return Check(name, False, "no reply within 5 s", args["expect_status"])
        want = args["expect_status"]
        got = f"{reply.get('status')}/{reply.get('reason')}"
        return Check(name, reply.get("status") == want, got, want,
                     str(reply.get("detail") or ""))

    async def connector_status(self, connector: int | None) -> dict[str, Any]:
        reply = await self.agent_request({"cmd": "status"}, None)
        conns = reply.get("connectors") or reply.get("status", {}).get("connectors") or []
        want = connector or 1
        for c in conns:
            if isinstance(c, dict) and c.get("connector") == want:
                return dict(c)
        return {}

def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(args, default=str))
    return plain


async def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    *,
    config_path: str | None = None,
    with_agent: bool = True,
    on_ready: Callable[[Rig], None] | None = None,
    on_agent_start: Callable[[int], None] | None = None,
    on_agent_ready: Callable[[int], None] | None = None,
) -> RunResult:
    """Rig + agent + steps; writes report.md, timeline.png and timeline.json into ``out_dir``.

    ``on_agent_start(pid)`` runs right after the agent process is spawned, before it is READY
    (the starved-CPU bench puts it into its cgroup there), ``on_agent_ready(pid)`` once it is
    READY, before the first step (the bench lowers its CPU quota there)."""
    out_dir = _prepare_dir(out_dir)
    result = RunResult(scenario, started_wall=datetime.now(UTC).isoformat(timespec="seconds"))
    t_start = time.monotonic()
    broker = _start_broker(scenario, out_dir, result) if with_agent else None
    config = scenario_config(scenario, config_path, broker)
    station = Station(config, out_dir, options=rig_options(scenario.rig), rig_dir="run",
                      agent_log="agent.log")
    rig = station.rig
    try:
        async with contextlib.AsyncExitStack() as stack:
            await station.open()
            if on_ready is not None:
                on_ready(rig)
            aggregator = None
            agent = None
            if with_agent:
                result.agent_log = station.log_path(1)
                agent = await station.start_agent(wait=False)
                if on_agent_start is not None and agent.pid is not None:
                    on_agent_start(agent.pid)
                await agent.wait_ready()
                rig.timeline.add("agent_ready", rig.clock(), pid=agent.pid)
                if on_agent_ready is not None and agent.pid is not None:
                    on_agent_ready(agent.pid)
                if broker is not None:
                    aggregator = await stack.enter_async_context(
                        Aggregator(broker.host, broker.port, config.device_id))
            await ScenarioRunner(rig, agent, aggregator).run_steps(scenario, result)
            if aggregator is not None:
                result.aggregator_events = list(aggregator.events)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if station.agent is not None:
            code = await _stop_agent(station.agent)
            rig.timeline.add("agent_stopped", rig.clock(), returncode=code)
        await station.close()
        if broker is not None:
            broker.stop()
    result.duration_s = time.monotonic() - t_start
    write_outputs(result, rig.timeline, out_dir)
    return result


async def _stop_agent(agent: AgentProcess) -> int | None:
    """Stop the agent while the rig keeps answering (it drives the safe state on SIGTERM)."""
    try:
        return await asyncio.to_thread(agent.stop)
    except asyncio.CancelledError:
        agent.stop()
        raise


def _prepare_dir(path: Path) -> Path:
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_outputs(result: RunResult, timeline: Timeline, out_dir: Path) -> None:
    (out_dir / "report.md").write_text(render_markdown(result, timeline))
    timeline.save(out_dir / "timeline.json")
    plot_timeline(timeline, out_dir / "timeline.png", title=result.scenario.title)
