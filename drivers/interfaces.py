"""Small driver interfaces the agent's control task depends on, and the values they return.

The agent knows these Protocols, never a concrete driver or a simulator. Drivers know volts,
ohms, coils and registers, nothing of GB/T 18487.1: classification is the core's job.
Every method may raise the ``drivers.errors.DriverError`` family and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from drivers.wallbox.profiles import WallboxCommand, WallboxProfile


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One coherent reading of an energy meter, in SI units.

    Energy comes from the meter's cumulative import register (kWh x 1000), never from
    integrating power. ``voltage_v``/``current_a`` have one entry per phase (1 or 3).
    """

    voltage_v: tuple[float, ...]
    current_a: tuple[float, ...]
    power_w: float
    energy_import_wh: float
    frequency_hz: float | None = None
    pf: float | None = None
    energy_export_wh: float | None = None


@dataclass(frozen=True, slots=True)
class PilotBoardSample:
    """The pilot board's input block 0x0000-0x0007 (hardware.md), raw but typed."""

    cp_high_mv: int
    cp_low_mv: int
    duty_actual: int  # 0.1 %; 1000 steady +12 V, 0 steady -12 V
    cc_ohm: int  # 0xFFFF open, 0 short
    status: int  # board_maps.PilotStatus bits, latched
    sample_seq: int
    temperature_c: float
    fw_version: int


@dataclass(frozen=True, slots=True)
class RelayInputs:
    """Feedback contacts of the relay board."""

    contactor_closed: bool  # auxiliary (mirror) contact: main contacts closed
    lock_engaged: bool


@runtime_checkable
class Meter(Protocol):
    """An energy meter."""

    async def read(self) -> MeterReading: ...


@runtime_checkable
class Contactor(Protocol):
    """The relay board: main contactor, plug lock and their feedback contacts."""

    async def set_contactor(self, closed: bool) -> None: ...

    async def set_lock(self, locked: bool) -> None: ...

    async def read_inputs(self) -> RelayInputs: ...


@runtime_checkable
class PilotBoard(Protocol):
    """The control-pilot board: CP/CC measurement and the PWM duty it outputs."""

    async def read_sample(self) -> PilotBoardSample: ...

    async def set_duty(self, value: int) -> None: ...

    async def set_watchdog(self, ms: int) -> None: ...

    async def heartbeat(self) -> None: ...

    async def fault_reset(self) -> None: ...


@runtime_checkable
class Wallbox(Protocol):
    """A retrofitted wallbox that runs its own control pilot: the agent sets enable and current
    (``WallboxCommand``), reads its state register and, if it has one, its meter."""

    @property
    def profile(self) -> WallboxProfile: ...

    @property
    def watchdog_s(self) -> float | None: ...

    @property
    def failsafe_a(self) -> float | None: ...

    @property
    def programmed(self) -> Mapping[str, int]: ...

    @property
    def command(self) -> WallboxCommand | None: ...

    async def program(self) -> None: ...

    async def apply(self, command: WallboxCommand, *, force: bool = False) -> None: ...

    async def read_state(self) -> int: ...

    async def read_meter(self) -> MeterReading | None: ...

    async def verify(self) -> list[str]: ...
