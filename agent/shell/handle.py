"""The one interface above both kinds of connector hardware.

Orderly control, limits, sessions, the journal, telemetry, status and the CLI talk to a
``ConnectorHandle``; underneath is either our pilot and relay boards
(``agent.shell.connector.ConnectorController``) or a retrofitted wallbox
(``agent.shell.wallbox_connector.WallboxConnector``). They read its core through
``ConnectorCore``: the questions both ``PilotMachine`` and ``WallboxMachine`` answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.faults import FaultCode
from agent.pilot.classifier import CpLevel
from agent.pilot.table import PilotState
from agent.shell.cyclecpu import CycleCpu
from drivers.interfaces import MeterReading

EventSink = Callable[[int, Any, float], None]


@dataclass(frozen=True, slots=True)
class HardwareInfo:
    """What ``capabilities``/status declare about a connector's hardware."""

    hardware: Literal["boards", "wallbox"] = "boards"
    pilot: Literal["agent", "wallbox"] = "agent"
    wallbox_profile: str | None = None
    max_current_a: float | None = None  # below the rating when the wallbox can do less


@dataclass
class ConnectorStats:
    cycles: int = 0
    pilot_errors: int = 0  # a wallbox: its state reads
    relay_errors: int = 0
    meter_errors: int = 0
    last_cycle_at: float = 0.0
    last_meter: MeterReading | None = None
    last_cp_mv: int | None = None
    last_contactor_feedback: bool | None = None
    max_loop_lag_s: float = 0.0  # latest wake-up of the poll timer seen: what the loop suffers
    contactor_closes: int = 0  # close commands since start (wear; the status page and metrics)
    cycle_cpu: CycleCpu = field(default_factory=CycleCpu)  # CPU per poll cycle (the bench)
    inputs_after_poll: int = 0  # outside inputs that waited for an overdue pilot poll
    polls_after_stall: int = 0  # loop steps that read the pilot board first (a stall)


class ConnectorCore(Protocol):
    """The pure core of a connector, as the orderly layer reads it."""

    @property
    def state(self) -> PilotState: ...

    @property
    def ev_level(self) -> CpLevel | None: ...

    @property
    def offered_current_a(self) -> float | None: ...

    @property
    def contactor_commanded(self) -> bool: ...

    @property
    def cable_rating_a(self) -> float | None: ...

    @property
    def authorised(self) -> bool: ...

    @property
    def active_faults(self) -> frozenset[FaultCode]: ...

    @property
    def temperature_c(self) -> float | None: ...

    def step(self, event: Any, now: float) -> object: ...


class ConnectorHandle(Protocol):
    """One connector's control task, whatever drives it."""

    id: int
    on_event: EventSink | None
    stats: ConnectorStats
    hardware: HardwareInfo

    @property
    def machine(self) -> ConnectorCore: ...

    def feed_first(self, event: Any) -> None: ...

    async def feed(self, event: Any) -> object: ...

    async def run(self) -> None: ...

    async def drive_safe_state(self) -> None: ...

    async def configure_board(self) -> None: ...
