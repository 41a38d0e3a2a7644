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

from agent.busplan import PROCESSING_ALLOWANCE_S, Transaction, _timing, _txn, meter_blocks
from agent.config import AgentConfig, WallboxConnectorConfig
from agent.wallbox.mapping import amps_from_watts, command_amps, command_for
from drivers.linetime import (
    read_bytes,
    write_coils_bytes,
    write_registers_bytes,
    write_single_bytes,
)
from drivers.registers import Function
from drivers.wallbox.profiles import WallboxProfile

ENERGY_PERIOD_S = 1.0  # the wallbox's own energy/current registers, like a meter poll


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


def _write_sizes(profile: WallboxProfile, function: Function) -> tuple[int, int]:
    if function is Function.COIL:
        return write_single_bytes() if profile.write_function == 6 else write_coils_bytes(1)
    return write_single_bytes() if profile.write_function == 6 else write_registers_bytes(1)


def wallbox_transactions(cfg: AgentConfig, bus: str) -> list[Transaction]:
    out: list[Transaction] = []
    for c in cfg.wallbox_connectors():
        tag, wb = f"c{c.id}", c.wallbox
        p = wb.resolve()
        if wb.bus == bus:
            fc = int(p.state.function)
            out.append(_txn(cfg, bus, f"{tag} wallbox state FC{fc:02d}x1", "PILOT_POLL",
                            read_bytes(fc, 1), wb.poll_ms / 1000))
            pause = p.disable.register.function if p.disable.register else Function.HOLDING
            out.append(_txn(cfg, bus, f"{tag} wallbox pause/decrease", "SAFETY_WRITE",
                            _write_sizes(p, pause), None))
            out.append(_txn(cfg, bus, f"{tag} wallbox current write", "CONTROL_WRITE",
                            _write_sizes(p, Function.HOLDING), None))
            out.append(_txn(cfg, bus, f"{tag} wallbox read-back", "CONTROL_WRITE",
                            read_bytes(3, 6), wb.verify_s))
            for block in p.meter_blocks():
                fc = int(block.function)
                out.append(_txn(cfg, bus, f"{tag} wallbox energy FC{fc:02d}x{block.count}",
                                "METER_READ", read_bytes(fc, block.count), ENERGY_PERIOD_S))
        if c.meter is not None and c.meter.bus == bus:
            for fn, count in meter_blocks(cfg, c.meter):
                out.append(_txn(cfg, bus, f"{tag} meter FC{fn:02d}x{count}", "METER_READ",
                                read_bytes(fn, count), c.meter.poll_ms / 1000))
    return out


def plan(cfg: AgentConfig, conn: WallboxConnectorConfig,
         per_bus: dict[str, list[Transaction]]) -> WallboxPlan:
    wb = conn.wallbox
    p = wb.resolve()
    txns = per_bus[wb.bus]
    pause = next(t for t in txns if t.label.startswith(f"c{conn.id} wallbox pause"))
    timing, _, _ = _timing(cfg, wb.bus)
    # A pause or a decrease jumps every queue; it waits for the transaction on the wire (the
    # longest any other can hold the bus if its device is silent) and the wallbox's own gap.
    blocking = max((t.failure_s for t in txns if t.priority != "SAFETY_WRITE"), default=0.0)
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
