"""check-config for a retrofitted wallbox: its transactions and its control path.

A wallbox runs its own pilot, so the agent states no GB/T 18487.1 reaction for it (it neither
sees nor measures one). What it states instead (retrofit.md):

- the control path: composite change -> the wallbox's current (or pause) write complete on the
  wire, worst case on that bus, with the wallbox's own minimum gap between transactions;
- the wallbox's own fallback when the agent goes silent: its watchdog and fail-safe current
  (programmed at start-up), or that it has none and keeps the last current it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.busplan import PROCESSING_ALLOWANCE_S, TimedTransaction, _row, _timing
from agent.config import AgentConfig
from agent.config_wallbox import WallboxConnectorConfig
from agent.driver_wires import wallbox_wires
from agent.wallbox.mapping import amps_from_watts, command_amps, command_for
from drivers.wallbox.profiles import WallboxProfile
from drivers.wire import Priority


@dataclass
class WallboxPlan:
    connector: int
    profile: str
    title: str
    bus: str
    unit: int
    control_path_ms: float
    terms_ms: dict[str, float]
    watchdog_s: float | None
    failsafe_a: float | None
    fallback: str
    notes: list[str] = field(default_factory=list)


def failsafe_a(cfg: AgentConfig, conn: WallboxConnectorConfig) -> float:
    """The current the wallbox falls back to: ``wallbox.failsafe_current_a``, else the
    aggregator fail-safe (``mqtt.failsafe``, W converted at the connector's phases), else 0."""
    if conn.wallbox.failsafe_current_a is not None:
        return conn.wallbox.failsafe_current_a
    if cfg.mqtt is None:
        return 0.0
    fs = cfg.mqtt.failsafe
    if fs.unit == "A":
        return fs.value
    watts = fs.value * (1000 if fs.unit == "kW" else 1)
    return amps_from_watts(watts, conn.phases, conn.nominal_voltage_v)


def plan(cfg: AgentConfig, conn: WallboxConnectorConfig,
         per_bus: dict[str, list[TimedTransaction]]) -> WallboxPlan:
    wb = conn.wallbox
    p = wb.resolve()
    txns = per_bus[wb.bus]
    pause = _row(txns, conn.id, wallbox_wires(cfg, conn).wallbox.pause)
    timing, _, _ = _timing(cfg, wb.bus)
    # A pause or a decrease jumps every queue; it waits for the transaction on the wire (the
    # longest any other can hold the bus if its device is silent) and the wallbox's own gap.
    blocking = max((t.failure_s for t in txns if t.priority != Priority.SAFETY_WRITE.name),
                   default=0.0)
    terms = {
        "processing": PROCESSING_ALLOWANCE_S,
        "blocking transaction": blocking,
        "wallbox gap": p.min_gap_s,
        "write frame": timing.gap() + timing.frame_time(pause.request_bytes),
    }
    fs = failsafe_a(cfg, conn)
    notes = [f"limits: composite rounded down to {p.current.scale:g} A steps in "
             f"{p.min_current_a:g}..{min(p.max_current_a, conn.rated_current_a):g} A; below "
             f"{p.min_current_a:g} A paused by {_disable_text(p)}",
             "GB/T 18487.1 reactions (S2 open, unplug, CP short, PE) are the wallbox's own: "
             "the agent neither sees nor claims them"]
    if p.watchdog is not None:
        amps = command_amps(p, command_for(p, fs, conn.rated_current_a))
        fallback = (f"the wallbox's watchdog ({wb.watchdog_s:g} s, programmed at start-up and "
                    f"after a reset) sets its fail-safe current {amps:g} A"
                    f"{' (paused: below its minimum)' if amps == 0 else ''} when the agent is "
                    "silent (killed, crashed, bus cut)")
        if p.failsafe_current is None:
            fallback = (f"the wallbox's watchdog ({wb.watchdog_s:g} s) falls back to the "
                        "wallbox's own default current: it has no fail-safe register")
        return WallboxPlan(conn.id, p.name, p.title, wb.bus, wb.unit,
                           round(sum(terms.values()) * 1000, 2),
                           {k: round(v * 1000, 2) for k, v in terms.items()}, wb.watchdog_s,
                           amps if p.failsafe_current is not None else None, fallback, notes)
    fallback = ("NO FALLBACK: the wallbox has no communication watchdog; if the agent goes "
                "silent (killed, crashed, bus cut) it keeps the last current it was given "
                f"(up to {min(p.max_current_a, conn.rated_current_a):g} A)")
    return WallboxPlan(conn.id, p.name, p.title, wb.bus, wb.unit,
                       round(sum(terms.values()) * 1000, 2),
                       {k: round(v * 1000, 2) for k, v in terms.items()}, None, None, fallback,
                       notes)


def _disable_text(p: WallboxProfile) -> str:
    dis = p.disable
    if dis.kind == "zero_current":
        return f"current register {p.current.address} = 0"
    assert dis.register is not None
    if dis.kind == "coil":
        return f"enable coil {dis.register.address} off"
    return f"register {dis.register.address} = {dis.off_value}"


def render_plans(plans: list[WallboxPlan]) -> list[str]:
    lines = []
    for w in plans:
        lines.append(f"connector {w.connector}: wallbox '{w.profile}' ({w.title}), unit {w.unit} "
                     f"on bus '{w.bus}'; its pilot and contactor are the wallbox's own")
        lines.append(f"  control path (composite change -> current/pause write complete on the "
                     f"wire): worst case {w.control_path_ms:.1f} ms")
        lines.append("  = " + " + ".join(f"{k} {v:.2f}" for k, v in w.terms_ms.items()))
        lines.append(f"  if the agent goes silent: {w.fallback}")
        lines.extend(f"  {n}" for n in w.notes)
    return lines
