"""Run a scenario: the rig in this process, the agent as a separate process, steps in order.

The agent is started as ``[sys.executable, "-m", "agent.cli", "run", "-c", <patched config>]``
with its JSON log in ``<out>/agent.log``; the runner waits for ``agent_ready``, executes the
steps, and always stops the agent by PID (SIGTERM, then SIGKILL) and the rig afterwards.
Expectations are judged from the rig's timeline (rig clock), never from the agent's own log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from agent import localapi
from agent.config import AgentConfig, parse_config
from hil.aggregator import Aggregator, valley_profile
from hil.broker import Broker, mosquitto_binary
from hil.ev import EvParams, current_from_duty
from hil.report import Timeline, plot_timeline, render_markdown
from hil.rig import Rig, RigOptions
from hil.scenario import (
    CONDITIONS as CONDITION_KEYS,
)
from hil.scenario import Check, RunResult, Scenario, Step, StepOutcome, deep_merge
from hil.wallbox_rig import make_rig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "evse-agent.example.yaml"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.005
DEFAULT_WITHIN_S = 1.0


class AgentProcess:
    """The agent under test, a child process this object started and stops by PID."""

    def __init__(self, config_path: Path, log_path: Path, *, cwd: Path = REPO_ROOT) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "agent.cli", "run", "-c", str(self.config_path)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"agent exited (code {code}) before agent_ready:\n"
                                   + self.log_tail())
            if any(e.get("event") == "agent_ready" for e in self.log_events()):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no agent_ready within {timeout_s} s:\n" + self.log_tail())

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        out.append(obj)
        return out

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        return self.proc.returncode


def rig_options(spec: dict[str, Any]) -> RigOptions:
    """``rig:`` section of a scenario -> RigOptions (``ev:`` -> EvParams)."""
    spec = dict(spec)
    ev = EvParams(**spec.pop("ev", {}))
    return RigOptions(ev=ev, **spec)


def scenario_config(scenario: Scenario, override_path: str | None = None,
                    broker: Broker | None = None) -> AgentConfig:
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


def _start_broker(scenario: Scenario, out_dir: Path, result: RunResult) -> Broker | None:
    """A private mosquitto when the scenario wants MQTT; without the binary, say so and run
    the local part of the scenario (aggregator steps then fail as 'no broker')."""
    if scenario.mqtt is None:
        return None
    if mosquitto_binary() is None:
        result.notes.append("mosquitto not installed (apt-get install mosquitto): the "
                            "aggregator part of this scenario cannot run")
        return None
    broker = Broker(out_dir / "broker")
    broker.start()
    result.notes.append(f"private mosquitto on {broker.host}:{broker.port} (pid {broker.pid})")
    return broker


class ScenarioRunner:
    """Executes steps against a started rig and (optionally) a running agent."""

    def __init__(self, rig: Rig, agent: AgentProcess | None = None,
                 aggregator: Aggregator | None = None) -> None:
        self.rig = rig
        self.agent = agent
        self.aggregator = aggregator
        self.mark: float = 0.0
        self.labels: dict[str, float] = {}

    @property
    def timeline(self) -> Timeline:
        return self.rig.timeline

    async def run_steps(self, scenario: Scenario, result: RunResult) -> None:
        for step in scenario.steps:
            outcome = StepOutcome(step, self.rig.now(), self.rig.now())
            result.outcomes.append(outcome)
            try:
                await self.run_step(step, outcome)
            except Exception as exc:  # a broken step is reported, the run goes on
                outcome.error = f"{type(exc).__name__}: {exc}"
            outcome.t_end = self.rig.now()

    async def run_step(self, step: Step, outcome: StepOutcome) -> None:
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

    def _set_mark(self, step: Step, outcome: StepOutcome, t: float) -> None:
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

    # --- conditions ------------------------------------------------------------------------

    async def evaluate(self, cond: dict[str, Any], connector: int | None) -> Check:
        cond = dict(cond)
        connector = cond.pop("connector", connector)
        start = self.labels[cond["from"]] if "from" in cond else self.mark
        within = _within(cond)
        name = str(cond.get("measure") or _describe(cond))
        if "contactor" in cond or "cut_between_s" in cond:
            return await self._contactor(name, cond, start, within, connector)
        if "pwm" in cond or "offered_a" in cond:
            return await self._duty(name, cond, start, within, connector)
        return await self._polled(name, cond, start, within, connector)

    async def _contactor(self, name: str, cond: dict[str, Any], start: float,
                         within: float | None, connector: int | None) -> Check:
        cid = self.rig.connector(connector).config.id
        window = cond.get("cut_between_s")
        target = "open" if window is not None else str(cond["contactor"])
        if target not in ("open", "closed"):
            raise ValueError(f"contactor: open|closed, not {target!r}")
        want_closed = target == "closed"
        if "hold_s" in cond:
            hold = float(cond["hold_s"])
            t0 = self.rig.now()
            await asyncio.sleep(hold)
            wrong = [e for e in self.timeline.events("signal", since=t0, name="contactor",
                                                     connector=cid)
                     if e.data["value"] != want_closed]
            wrong += [e for e in self.timeline.events("frame", since=t0)
                      if e.data.get("what") == ("contactor_open" if want_closed
                                                else "contactor_close")]
            ok = self.rig.contactor_closed(connector) == want_closed and not wrong
            text = "stayed " + target if ok else f"left {target} at t={wrong[0].t:.3f} s" \
                if wrong else f"not {target}"
            return Check(name, ok, text, f"{target} for {hold} s")
        if within is None and window is None:
            ok = self.rig.contactor_closed(connector) == want_closed
            state = "closed" if self.rig.contactor_closed(connector) else "open"
            return Check(name, ok, state, target, "mirror contact now")
        lo, hi = (float(window[0]), float(window[1])) if window is not None else (0.0, within)
        assert hi is not None
        what = "contactor_close" if want_closed else "contactor_open"
        was = self._signal_at("contactor", start, cid)
        deadline = start + hi + max(1.0, hi)
        while True:
            frame = self.timeline.first("frame", start, what=what)
            if frame is not None or self.rig.now() > deadline:
                break
            if was == want_closed and self.rig.now() > start + hi:
                break
            await asyncio.sleep(POLL_S)
        limit = f"{lo:g}-{hi:g} s" if window is not None else _fmt_limit(cond, hi)
        if frame is None:
            if was == want_closed:
                return Check(name, True, f"already {target} at the mark", limit,
                             "no switching needed", 0.0)
            return Check(name, False, f"no {what} frame", limit,
                         f"waited {deadline - start:.2f} s")
        measured = frame.t - start
        ok = lo <= measured <= hi
        return Check(name, ok, _fmt_s(measured, cond), limit,
                     f"{what} frame completed on {frame.data.get('bus')}", measured)

    async def _duty(self, name: str, cond: dict[str, Any], start: float, within: float | None,
                    connector: int | None) -> Check:
        c = self.rig.connector(connector)
        profile = self.rig.config.profile
        if "pwm" in cond:
            want_on = str(cond["pwm"]).lower() in ("on", "true", "1")

            def pred(duty: int) -> bool:
                return (0 < duty < 1000) == want_on
            limit_txt = "PWM " + ("on" if want_on else "off")
        else:
            target, tol = float(cond["offered_a"]), float(cond.get("tol_a", 0.5))

            def pred(duty: int) -> bool:
                return abs(current_from_duty(duty, profile) - target) <= tol
            limit_txt = f"{target:g} A ±{tol:g}"
        hold = cond.get("hold_s")
        deadline = start + (within or 0.0)
        while True:
            if pred(c.pilot.duty_actual(self.rig.clock())) or self.rig.now() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        duty = c.pilot.duty_actual(self.rig.clock())
        live = f"duty {duty / 10:g} % = {current_from_duty(duty, profile):g} A"
        if not pred(duty):
            return Check(name, False, live, _with_time(limit_txt, cond))
        if hold is not None:
            end = self.rig.now() + float(hold)
            while self.rig.now() < end:
                if not pred(c.pilot.duty_actual(self.rig.clock())):
                    return Check(name, False, "changed during hold", f"{limit_txt} for {hold} s")
                await asyncio.sleep(POLL_S)
            return Check(name, True, live, f"{limit_txt} for {hold} s")
        writes = [e for e in self.timeline.events("board_write", since=start,
                                                  register="duty_cmd", connector=c.config.id)
                  if pred(int(e.data["value"]))]
        if "offered_a" in cond:  # a retrofitted wallbox: its current register writes
            writes += [e for e in self.timeline.events("wallbox_write", since=start,
                                                       connector=c.config.id)
                       if abs(float(e.data["offered_a"]) - float(cond["offered_a"]))
                       <= float(cond.get("tol_a", 0.5))]
            writes.sort(key=lambda e: e.t)
        measured = writes[0].t - start if writes else 0.0
        if within is None:
            return Check(name, True, live, limit_txt)
        return Check(name, measured <= within, f"{live} after {_fmt_s(measured, cond)}",
                     _with_time(limit_txt, cond), "from the accepted duty write", measured)

    async def _polled(self, name: str, cond: dict[str, Any], start: float,
                      within: float | None, connector: int | None) -> Check:
        key = next(k for k in cond if k in CONDITION_KEYS)
        deadline = start + (within if within is not None else 0.0)
        uses_agent = key in ("fault", "no_fault", "state", "energy_wh_min")
        first = True
        while True:
            ok, measured = await self._probe(key, cond[key], cond, connector)
            if ok or self.rig.now() >= deadline:
                break
            first = False
            await asyncio.sleep(0.1 if uses_agent else POLL_S)
        t = self.rig.now() - start
        detail = ""
        if ok and within is not None:
            detail = "already true at this step" if first else f"after {t:.3f} s"
        return Check(name, ok, measured, _with_time(f"{key}: {cond[key]}", cond), detail,
                     t if ok else None)

    async def _probe(self, key: str, want: Any, cond: dict[str, Any],
                     connector: int | None) -> tuple[bool, str]:
        c = self.rig.connector(connector)
        now = self.rig.clock()
        if key == "current_a":
            got = c.ev.current_a()
            return abs(got - float(want)) <= float(cond.get("tol_a", 0.5)), f"{got:g} A"
        if key == "lock":
            locked = c.relay.locked(now)
            return locked == (str(want) == "locked"), "locked" if locked else "released"
        if key == "cp_v":
            volts = c.pilot.cp_mv(now)[0] / 1000.0
            return abs(volts - float(want)) <= 0.8, f"{volts:.2f} V"
        status = await self.connector_status(connector)
        faults = [str(f) for f in status.get("faults") or []]
        if key == "fault":
            hit = any(f == want or f.endswith("." + str(want)) or str(want) in f for f in faults)
            return hit, "faults: " + (", ".join(faults) or "none")
        if key == "no_fault":
            return not faults, "faults: " + (", ".join(faults) or "none")
        if key == "state":
            state = str(status.get("state"))
            return state.lower() == str(want).lower(), f"state {state}"
        if key == "energy_wh_min":
            meter = status.get("meter") or {}
            energy = float(meter.get("energyImportWh") or 0.0)
            return energy >= float(want), f"{energy:.2f} Wh (rig {c.energy_wh:.2f} Wh)"
        raise ValueError(f"unknown condition {key!r}")

    def _signal_at(self, name: str, t: float, connector: int) -> Any:
        value = None
        for e in self.timeline.events("signal", name=name, connector=connector):
            if e.t > t:
                break
            value = e.data["value"]
        return value


def _within(cond: dict[str, Any]) -> float | None:
    if "within_ms" in cond:
        return float(cond["within_ms"]) / 1000.0
    if "within_s" in cond:
        return float(cond["within_s"])
    return None


def _fmt_s(seconds: float, cond: dict[str, Any]) -> str:
    return f"{seconds * 1000:.1f} ms" if "within_ms" in cond else f"{seconds:.3f} s"


def _fmt_limit(cond: dict[str, Any], within: float) -> str:
    return f"<= {cond['within_ms']:g} ms" if "within_ms" in cond else f"<= {within:g} s"


def _with_time(text: str, cond: dict[str, Any]) -> str:
    within = _within(cond)
    return text if within is None else f"{text} {_fmt_limit(cond, within)}"


def _describe(cond: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in cond.items() if k != "measure")


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
) -> RunResult:
    """Rig + agent + steps; writes report.md, timeline.png and timeline.json into ``out_dir``.

    ``on_agent_start(pid)`` runs right after the agent process is spawned, before it is READY
    (the starved-CPU bench puts it into its CPU quota there)."""
    out_dir = _prepare_dir(out_dir)
    result = RunResult(scenario, started_wall=datetime.now(UTC).isoformat(timespec="seconds"))
    t_start = time.monotonic()
    broker = _start_broker(scenario, out_dir, result) if with_agent else None
    config = scenario_config(scenario, config_path, broker)
    rig = make_rig(config, out_dir / "run", options=rig_options(scenario.rig))
    agent: AgentProcess | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            await rig.start()
            if on_ready is not None:
                on_ready(rig)
            aggregator = None
            if with_agent:
                agent = AgentProcess(rig.patched_config_path, out_dir / "agent.log")
                result.agent_log = agent.log_path
                agent.start()
                if on_agent_start is not None and agent.pid is not None:
                    on_agent_start(agent.pid)
                await agent.wait_ready()
                rig.timeline.add("agent_ready", rig.clock(), pid=agent.pid)
                if broker is not None:
                    aggregator = await stack.enter_async_context(
                        Aggregator(broker.host, broker.port, config.device_id))
            await ScenarioRunner(rig, agent, aggregator).run_steps(scenario, result)
            if aggregator is not None:
                result.aggregator_events = list(aggregator.events)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if agent is not None:
            code = await _stop_agent(agent)
            rig.timeline.add("agent_stopped", rig.clock(), returncode=code)
        await rig.stop()
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
