"""The drivers' declared transactions for a config: one list for the shell and check-config.

``agent.shell.wiring`` builds every driver from these objects (and tells each bus what its
drivers declared); ``agent.busplan`` times the very same objects into the reaction bound. So
what check-config promises is computed from what the drivers will send, with no copy of a
function code, count or period in between (issue 10, "drivers own the wire").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config import AgentConfig, ConnectorConfig, MeterConfig
from agent.errors import driver_config_as_config_error
from drivers.meters import MeterPlan, meter_plan
from drivers.pilot_board import PilotBoardWire, pilot_board_wire
from drivers.relay_board import RelayBoardWire, relay_board_wire
from drivers.wire import Transaction

if TYPE_CHECKING:  # imported where a wallbox is wired: a boards-only agent does not carry it
    from agent.config_wallbox import WallboxConnectorConfig
    from drivers.wallbox.wire import WallboxWire

ENERGY_PERIOD_S = 1.0  # the wallbox's own energy/current registers, like a meter poll


@dataclass(frozen=True)
class BoardWires:
    """A connector with the agent's own boards: pilot board, relay board, meter."""

    connector: int
    pilot: PilotBoardWire
    relay: RelayBoardWire
    meter: MeterPlan

    def on(self, cfg: ConnectorConfig, bus: str) -> list[Transaction]:
        out: list[Transaction] = []
        if cfg.pilot_board.bus == bus:
            out += self.pilot.all()
        if cfg.relay_board.bus == bus:
            out += self.relay.all()
        if cfg.meter.bus == bus:
            out += self.meter.transactions()
        return out


@dataclass(frozen=True)
class WallboxWires:
    """A retrofitted wallbox, and the meter that gives its energy if it has one."""

    connector: int
    wallbox: WallboxWire
    meter: MeterPlan | None

    @property
    def energy_s(self) -> float:
        """How often the shell reads energy: the meter's poll, else the wallbox's own."""
        if self.meter is not None:
            return self.meter.poll_s
        return self.wallbox.energy[0][1].period() if self.wallbox.energy else ENERGY_PERIOD_S

    def on(self, cfg: WallboxConnectorConfig, bus: str) -> list[Transaction]:
        out: list[Transaction] = list(self.wallbox.all()) if cfg.wallbox.bus == bus else []
        if self.meter is not None and cfg.meter is not None and cfg.meter.bus == bus:
            out += self.meter.transactions()
        return out


def _meter(cfg: AgentConfig, m: MeterConfig) -> MeterPlan:
    with driver_config_as_config_error():
        return meter_plan(m.model, [r.model_dump() for r in m.registers] if m.registers else None,
                          unit=m.unit, max_words_per_read=cfg.buses[m.bus].max_words_per_read,
                          poll_s=m.poll_ms / 1000)


def board_wires(cfg: AgentConfig, conn: ConnectorConfig) -> BoardWires:
    pb, rb = conn.pilot_board, conn.relay_board
    return BoardWires(
        conn.id,
        pilot_board_wire(pb.unit, poll_s=pb.poll_ms / 1000, heartbeat_s=pb.heartbeat_ms / 1000),
        relay_board_wire(rb.unit, contactor_coil=rb.contactor_coil, lock_coil=rb.lock_coil,
                         contactor_feedback_input=rb.contactor_feedback_input,
                         lock_feedback_input=rb.lock_feedback_input, poll_s=rb.poll_ms / 1000),
        _meter(cfg, conn.meter),
    )


def wallbox_wires(cfg: AgentConfig, conn: WallboxConnectorConfig) -> WallboxWires:
    """The wallbox reads its own energy registers only when no meter is configured."""
    from drivers.wallbox.wire import wallbox_wire

    wb = conn.wallbox
    profile = wb.resolve()
    meter = None if conn.meter is None else _meter(cfg, conn.meter)
    return WallboxWires(
        conn.id,
        wallbox_wire(profile, wb.unit, watchdog=True, failsafe=True, poll_s=wb.poll_ms / 1000,
                     verify_s=wb.verify_s,
                     energy_s=ENERGY_PERIOD_S if meter is None else None),
        meter,
    )


def connector_wires(cfg: AgentConfig) -> list[BoardWires | WallboxWires]:
    """Every connector's declared transactions, in config order."""
    return [board_wires(cfg, c) if isinstance(c, ConnectorConfig) else wallbox_wires(cfg, c)
            for c in cfg.connectors]


def bus_wires(cfg: AgentConfig, bus: str) -> list[tuple[int, Transaction]]:
    """(connector, transaction) of everything the drivers on ``bus`` declared."""
    out: list[tuple[int, Transaction]] = []
    for conn in cfg.connectors:
        txns = (board_wires(cfg, conn).on(conn, bus) if isinstance(conn, ConnectorConfig)
                else wallbox_wires(cfg, conn).on(conn, bus))
        out += [(conn.id, t) for t in txns]
    return out
