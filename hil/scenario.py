"""Scenario files: timed steps against the rig and the agent, and the results of running them.

A scenario is YAML::

    name: open-s2
    title: GB/T 34657.1-2017 item 11, opening S2
    config: config/evse-agent.example.yaml     # optional; relative to the repository root
    config_overrides: {safety: {contactor_min_off_s: 0}}   # deep-merged into the agent config
    rig: {ev: {follow_delay_s: 1.0}, relay_close_delay_s: 0.03}   # RigOptions / EvParams
    steps:
      - plug_in: {cable_a: 32}                 # EV actions (see EV_ACTIONS)
      - close_s2: {}
      - expect: {contactor: closed, within_s: 3, measure: s2_close_to_close}
      - wait: 2.0
      - inject: {s2_open: true}                # fault injections (see FAULTS); false clears
      - expect: {contactor: open, within_ms: 100, measure: s2_open_to_open}
      - expect: {pwm: on}
      - agent: {limit: 10}                     # local control socket: limit/start/stop/reset
      - wait_until: {contactor: closed, within_s: 5}

Every step may carry ``label`` (a name for its time mark) and ``note`` (shown in the report).
Timed conditions are measured from the mark of the last action step (the rig's timestamp of
the change it made), or from ``from: <label>``. Condition keys: see ``CONDITIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EV_ACTIONS = frozenset({
    "plug_in", "unplug", "close_s2", "open_s2", "set_obc_max_a", "set_resistors",
    "battery_full", "press_latch",
})
FAULTS = frozenset({
    "diode_short", "cp_short", "cp_break", "pe_loss", "cc_open", "s2_open", "unplug_under_load",
    "overcurrent", "rcd_trip", "estop", "selftest_fail", "overtemp", "contactor_weld",
    "contactor_no_close", "meter_silence", "crc_errors", "slow_answers", "pilot_freeze",
    "unit_silent", "port_vanish",
    # a retrofitted wallbox (hil.simrig_wallbox)
    "wallbox_silent", "wallbox_slow", "wallbox_exception", "wallbox_reset", "wallbox_state",
    "bus_cut", "standby_sleep",
})
AGENT_COMMANDS = frozenset({"limit", "start", "stop", "reset", "status"})
CONDITIONS = frozenset({
    "contactor", "pwm", "offered_a", "current_a", "fault", "no_fault", "state", "lock",
    "cut_between_s", "energy_wh_min", "cp_v",
})
CONDITION_OPTIONS = frozenset({
    "within_ms", "within_s", "hold_s", "measure", "from", "tol_a", "connector",
})
STEP_META = frozenset({"label", "note", "connector"})
STEP_KINDS = EV_ACTIONS | {"inject", "clear", "agent", "aggregator", "wait", "wait_until",
                           "expect"}
AGGREGATOR_COMMANDS = frozenset({"setLimit", "setProfile", "clearProfile", "getComposite",
                                 "startSession", "stopSession", "setConfig", "resync",
                                 "valley"})


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the step and the fix."""


@dataclass(frozen=True, slots=True)
class ScenarioStep:
    index: int
    kind: str  # an EV action, "inject", "clear", "agent", "wait", "wait_until", "expect"
    args: dict[str, Any]
    label: str | None = None
    note: str | None = None
    connector: int | None = None

    def describe(self) -> str:
        if self.kind == "wait":
            return f"wait {self.args['seconds']} s"
        if not self.args:
            return self.kind
        inner = ", ".join(f"{k}: {v}" for k, v in self.args.items())
        return f"{self.kind} {{{inner}}}"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    steps: tuple[ScenarioStep, ...]
    config: str | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    rig: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    mqtt: dict[str, Any] | None = None  # run with a private broker and a scripted aggregator

    @property
    def is_timed(self) -> bool:
        return any(s.kind in ("expect", "wait_until") for s in self.steps)


# --- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Check:
    """One evaluated condition: what was measured against which limit."""

    name: str
    passed: bool
    measured: str
    limit: str
    detail: str = ""
    measured_s: float | None = None


@dataclass(slots=True)
class StepResult:
    step: ScenarioStep
    t_start: float
    t_end: float
    mark: float | None = None
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    reply: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    outcomes: list[StepResult] = field(default_factory=list)
    error: str | None = None
    agent_log: Path | None = None
    started_wall: str = ""
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    aggregator_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checks(self) -> list[Check]:
        return [c for o in self.outcomes for c in o.checks]

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outcomes)


# --- parsing ---------------------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {p}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from exc
    return parse_scenario(data, name=p.stem, path=p)


def parse_scenario(data: Any, *, name: str = "scenario", path: Path | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{name}: the top level must be a mapping with 'steps'")
    unknown = set(data) - {"name", "title", "config", "config_overrides", "rig", "steps", "mqtt"}
    if unknown:
        raise ScenarioError(f"{name}: unknown top-level keys {sorted(unknown)}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{name}: 'steps' must be a non-empty list")
    steps = tuple(_parse_step(i, raw) for i, raw in enumerate(raw_steps, start=1))
    return Scenario(
        name=str(data.get("name", name)),
        title=str(data.get("title", data.get("name", name))),
        steps=steps,
        config=data.get("config"),
        config_overrides=dict(data.get("config_overrides") or {}),
        rig=dict(data.get("rig") or {}),
        path=path,
        mqtt=None if data.get("mqtt") in (None, False) else dict(data.get("mqtt") or {}),
    )


def _parse_step(index: int, raw: Any) -> ScenarioStep:
    where = f"step {index}"
    if isinstance(raw, str):
        raw = {raw: {}}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a step is a mapping like {{wait: 1.0}}")
    kinds = [k for k in raw if k not in STEP_META]
    if len(kinds) != 1 or kinds[0] not in STEP_KINDS:
        raise ScenarioError(
            f"{where}: needs exactly one of {sorted(STEP_KINDS)}, got {sorted(kinds)}")
    kind = kinds[0]
    value = raw[kind]
    args = _step_args(where, kind, value)
    connector = raw.get("connector")
    return ScenarioStep(index, kind, args, label=raw.get("label"), note=raw.get("note"),
                connector=int(connector) if connector is not None else None)


def _step_args(where: str, kind: str, value: Any) -> dict[str, Any]:
    if kind == "wait":
        if not isinstance(value, int | float) or value < 0:
            raise ScenarioError(f"{where}: wait takes seconds, e.g. wait: 2.0")
        return {"seconds": float(value)}
    if kind in ("inject", "clear"):
        if isinstance(value, str):
            value = {value: kind == "inject"}
        if not isinstance(value, dict) or len(value) != 1:
            raise ScenarioError(f"{where}: {kind} takes one fault, e.g. {{cp_short: true}}")
        fault = next(iter(value))
        if fault not in FAULTS:
            raise ScenarioError(f"{where}: unknown fault {fault!r}; one of {sorted(FAULTS)}")
        return {"fault": fault, "value": value[fault] if kind == "inject" else False}
    if kind == "agent":
        return _agent_args(where, value)
    if kind == "aggregator":
        return _aggregator_args(where, value)
    if kind in ("expect", "wait_until"):
        if not isinstance(value, dict):
            raise ScenarioError(f"{where}: {kind} takes a mapping, e.g. {{contactor: open}}")
        conds = set(value) & CONDITIONS
        extra = set(value) - CONDITIONS - CONDITION_OPTIONS
        if len(conds) != 1 or extra:
            raise ScenarioError(
                f"{where}: {kind} needs one of {sorted(CONDITIONS)} and options from "
                f"{sorted(CONDITION_OPTIONS)}; got {sorted(value)}")
        return dict(value)
    if value is None:
        return {}
    if kind == "set_obc_max_a" and isinstance(value, int | float):
        return {"current_a": float(value)}
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: {kind} takes a mapping of arguments (or {{}})")
    return dict(value)


def _agent_args(where: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"cmd": value}
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: agent takes e.g. {{limit: 10}} or stop")
    if "cmd" not in value:
        cmds = [k for k in value if k in AGENT_COMMANDS]
        if len(cmds) != 1:
            raise ScenarioError(f"{where}: agent needs one of {sorted(AGENT_COMMANDS)}")
        cmd = cmds[0]
        args = {k: v for k, v in value.items() if k != cmd}
        if cmd == "limit":
            args["limit_a"] = value[cmd]
        elif cmd == "start" and isinstance(value[cmd], str):
            args["id_tag"] = value[cmd]
        value = {"cmd": cmd, **args}
    if value["cmd"] not in AGENT_COMMANDS:
        raise ScenarioError(f"{where}: unknown agent command {value['cmd']!r}")
    return dict(value)


def _aggregator_args(where: str, value: Any) -> dict[str, Any]:
    """``aggregator: {setLimit: {...body...}, expect_status: accepted}``."""
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: aggregator takes e.g. {{setLimit: {{...}}}}")
    cmds = [k for k in value if k in AGGREGATOR_COMMANDS]
    if len(cmds) != 1:
        raise ScenarioError(f"{where}: aggregator needs one of {sorted(AGGREGATOR_COMMANDS)}")
    extra = set(value) - {cmds[0], "expect_status", "group"}
    if extra:
        raise ScenarioError(f"{where}: aggregator: unknown keys {sorted(extra)}")
    body = value[cmds[0]] or {}
    if not isinstance(body, dict):
        raise ScenarioError(f"{where}: the {cmds[0]} body must be a mapping")
    return {"type": cmds[0], "body": dict(body),
            "expect_status": str(value.get("expect_status", "accepted")),
            "group": value.get("group")}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
