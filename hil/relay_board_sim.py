"""Simulated relay board: contactor coil + plug lock, with mirror contact and lock feedback.

Serves ``RELAY_BOARD_MAP`` (Waveshare-style, hardware.md). The main contacts, and so the mirror
contact, follow the coil after ``close_delay_s`` / ``open_delay_s`` (a real contactor needs
tens of ms) unless a fault is injected: ``welded`` keeps the contacts closed whatever the coil
does, ``no_close`` keeps them open. The lock feedback follows its coil after ``lock_delay_s``.
Pure model (time is an argument) plus the ``SimDevice`` glue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from drivers.board_maps import RELAY_BOARD_MAP

COIL_CONTACTOR = RELAY_BOARD_MAP["contactor"].address
COIL_LOCK = RELAY_BOARD_MAP["lock"].address
INPUT_CONTACTOR = RELAY_BOARD_MAP["contactor_feedback"].address
INPUT_LOCK = RELAY_BOARD_MAP["lock_feedback"].address
BITS = 16

CoilListener = Callable[[str, bool, float], None]


@dataclass(slots=True)
class _Follower:
    """A mechanical output that follows its command after a delay."""

    state: bool = False
    target: bool = False
    since: float = 0.0

    def command(self, now: float, on: bool) -> None:
        if on != self.target:
            self.target, self.since = on, now

    def value(self, now: float, on_delay: float, off_delay: float) -> bool:
        if self.state != self.target:
            delay = on_delay if self.target else off_delay
            if now - self.since >= delay:
                self.state = self.target
        return self.state


@dataclass(slots=True)
class RelayBoardSim:
    unit: int = 2
    close_delay_s: float = 0.030
    open_delay_s: float = 0.020
    lock_delay_s: float = 0.100
    welded: bool = False
    no_close: bool = False
    on_coil: CoilListener | None = None  # (coil name, on, now) after every coil write
    clock: Callable[[], float] | None = None
    _contactor: _Follower | None = None
    _lock: _Follower | None = None
    _stuck: bool = False

    def __post_init__(self) -> None:
        self._contactor = _Follower()
        self._lock = _Follower()

    # --- physics ---------------------------------------------------------------------------

    @property
    def contactor_coil(self) -> bool:
        assert self._contactor is not None
        return self._contactor.target

    @property
    def lock_coil(self) -> bool:
        assert self._lock is not None
        return self._lock.target

    def contacts_closed(self, now: float) -> bool:
        """Main contacts (and mirror contact) closed: the EV has mains."""
        assert self._contactor is not None
        moved = self._contactor.value(now, self.close_delay_s, self.open_delay_s)
        if self.no_close and not self._stuck:
            return False
        if self.welded and moved:
            self._stuck = True  # contacts weld the next time they are closed
        if not self.welded:
            self._stuck = False
        return moved or self._stuck

    def locked(self, now: float) -> bool:
        assert self._lock is not None
        return self._lock.value(now, self.lock_delay_s, self.lock_delay_s)

    def set_coil(self, now: float, coil: int, on: bool) -> None:
        assert self._contactor is not None and self._lock is not None
        if coil == COIL_CONTACTOR:
            self._contactor.command(now, on)
            name = "contactor"
        elif coil == COIL_LOCK:
            self._lock.command(now, on)
            name = "lock"
        else:
            return
        if self.on_coil is not None:
            self.on_coil(name, on, now)

    def inputs(self, now: float) -> list[bool]:
        bits = [False] * BITS
        bits[INPUT_CONTACTOR] = self.contacts_closed(now)
        bits[INPUT_LOCK] = self.locked(now)
        return bits

    # --- pymodbus glue ---------------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        """The relay board as a pymodbus device for ``hil.modbus_server.SimulatedBus``."""
        return SimDevice(id=self.unit, simdata=self.simdata(), action=self.action)

    def simdata(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        """(coils, discrete inputs, holding, input); 16 of each bit kind, no registers."""
        return (
            [SimData(0, count=BITS, values=False, datatype=DataType.BITS)],
            [SimData(0, count=BITS, values=False, datatype=DataType.BITS)],
            [SimData(0xFF00, values=[0], datatype=DataType.REGISTERS, readonly=True)],
            [SimData(0xFF00, values=[0], datatype=DataType.REGISTERS, readonly=True)],
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """``SimDevice.action``: feedback computed at the read, coil writes move the relays."""
        now = self._now()
        if function_code == 2:
            registers[0] = _bits_to_word(self.inputs(now))
        elif function_code in (5, 15) and set_values is not None:
            for offset, value in enumerate(set_values):
                self.set_coil(now, address + offset, bool(value))
        return None

    def _now(self) -> float:
        if self.clock is None:
            raise RuntimeError("RelayBoardSim.clock is not set")
        return self.clock()


def _bits_to_word(bits: list[bool]) -> int:
    return int(SimUtils.bitsToRegisters(bits[:BITS])[0])
