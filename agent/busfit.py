"""check-config's advice when several connectors' boards overload one port (a twin charger).

Polling faster or debouncing less makes a shared port's overload worse. What does help is
either another port (a USB-RS485 adapter costs less than a missed 100 ms open) or a pilot poll
period the port can hold. Both are computed by re-running the schedule analysis on the
changed config, so the advice states the bound it would give, not a guess.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from agent.config import AgentConfig, ConnectorConfig, parse_config
from drivers.wire import Priority

if TYPE_CHECKING:
    from agent.busplan import BusPlanReport, TimedTransaction

POLL_MAX_MS = 100.0  # PilotBoardConfig.poll_ms's upper bound


def _analyse(data: dict[str, Any]) -> BusPlanReport:
    from agent.busplan import analyse  # the bus plan module calls us: import at use

    return analyse(parse_config(data), advise=False)


def _worst(report: BusPlanReport, ids: set[int]) -> tuple[float, bool]:
    rows = [c for c in report.connectors if c.connector in ids]
    return max(c.bound_ms for c in rows), all(c.ok for c in rows)


def _own_ports(cfg: AgentConfig, bus: str, sharing: list[ConnectorConfig]) -> str:
    """One control port per connector: its pilot board and relay board move there."""
    data = cfg.model_dump(mode="json")
    layout = []
    for i, conn in enumerate(sharing):
        name = bus if i == 0 else f"{bus}-c{conn.id}"
        if i:
            data["buses"][name] = dict(data["buses"][bus])
            if data["buses"][name].get("kind") == "serial":
                data["buses"][name]["port"] = f"<a second port for connector {conn.id}>"
        raw = next(c for c in data["connectors"] if c["id"] == conn.id)
        parts = ["pilot board"]
        raw["pilot_board"]["bus"] = name
        if conn.relay_board.bus == bus:
            raw["relay_board"]["bus"] = name
            parts.append("relay board")
        layout.append(f"connector {conn.id}: {' + '.join(parts)} on port '{name}'")
    bound, ok = _worst(_analyse(data), {c.id for c in sharing})
    verdict = "within" if ok else "still over"
    return (f"give each connector its own control port ({'; '.join(layout)}): each port then "
            f"holds its own {sharing[0].pilot_board.poll_ms:.0f} ms pilot poll; worst case "
            f"{bound:.1f} ms, {verdict} the {cfg.safety.reaction_budget_ms:.0f} ms budget")


def _slower_poll(cfg: AgentConfig, bus: str, sharing: list[ConnectorConfig],
                 txns: list[TimedTransaction], max_load: float) -> str:
    """The fastest pilot poll one port can hold for all the pilot boards it carries."""
    pilots = [t for t in txns if t.priority == Priority.PILOT_POLL.name]
    other = sum(t.nominal_s / t.period_s for t in txns
                if t.period_s and t.priority != Priority.PILOT_POLL.name)
    room = max_load - other
    n = len(pilots)
    if room <= 0:
        return f"port '{bus}' is full without its pilot polls: move boards to another port"
    need_ms = sum(t.nominal_s for t in pilots) / room * 1000
    poll_ms = max(math.ceil(need_ms + 0.5), max(c.pilot_board.poll_ms for c in sharing))
    if poll_ms > POLL_MAX_MS:
        return (f"one port cannot hold {n} pilot boards at any poll period up to "
                f"{POLL_MAX_MS:.0f} ms: use one control port per connector")
    data = cfg.model_dump(mode="json")
    for raw in data["connectors"]:
        if raw.get("pilot_board", {}).get("bus") == bus:
            raw["pilot_board"]["poll_ms"] = poll_ms
    bound, ok = _worst(_analyse(data), {c.id for c in sharing})
    verdict = "within" if ok else "over"
    return (f"or keep the {n} pilot boards on port '{bus}' with pilot_board.poll_ms: {poll_ms} "
            f"(the fastest poll that port can hold for {n} boards, {need_ms:.1f} ms at least): "
            f"worst case {bound:.1f} ms, {verdict} the {cfg.safety.reaction_budget_ms:.0f} ms "
            f"budget")


def shared_port_fixes(cfg: AgentConfig, conn: ConnectorConfig, txns: list[TimedTransaction],
                      max_load: float) -> list[str]:
    """Advice for a port that carries the pilot boards of several connectors ([] otherwise)."""
    bus = conn.pilot_board.bus
    sharing = [c for c in cfg.board_connectors() if c.pilot_board.bus == bus]
    if len(sharing) < 2:
        return []
    return [_own_ports(cfg, bus, sharing), _slower_poll(cfg, bus, sharing, txns, max_load)]
