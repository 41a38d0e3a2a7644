"""What a driver puts on the wire, as data: every Modbus transaction it will run, declared.

Each driver declares its transactions for a configuration (``pilot_board_wire``,
``relay_board_wire``, ``MeterWire``, ``wallbox_wire``) and runs exactly those objects through
``BusScheduler.run``; ``evse-agent check-config`` times the same list into the reaction bound
and the shell takes its poll periods from it. So the promise and the traffic are one list: a
driver that starts sending something new declares it, and the bound covers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from drivers.linetime import frame_bytes

READ_FUNCTIONS = (1, 2, 3, 4)
WRITE_FUNCTIONS = (5, 6, 15, 16)
MAX_COUNT = {1: 2000, 2: 2000, 3: 125, 4: 125, 5: 1, 6: 1, 15: 1968, 16: 123}


class Priority(IntEnum):
    """Lower runs first; FIFO within one priority. Contactor open beats everything; meters wait."""

    SAFETY_WRITE = 0  # contactor open; a wallbox pause or current decrease
    PILOT_POLL = 1  # the safety poll: the pilot sample, a wallbox's state
    CONTROL = 2  # commands and their feedback: duty, heartbeat, lock, contactor close, read-backs
    METER_READ = 3


@dataclass(frozen=True, slots=True)
class Transaction:
    """One Modbus request a driver makes: which, how urgent, and how often.

    ``period_s`` is the period of a polled transaction; ``None`` means it runs on ``trigger``
    (a state change, start-up, a device reset ...). ``label`` names it in check-config."""

    label: str
    unit: int
    function: int
    address: int
    count: int
    priority: Priority
    period_s: float | None = None
    trigger: str = ""

    def __post_init__(self) -> None:
        limit = MAX_COUNT.get(self.function)
        if limit is None:
            raise ValueError(f"{self.label}: function {self.function} is not one the bus runs")
        if not 1 <= self.unit <= 247:
            raise ValueError(f"{self.label}: unit {self.unit} out of 1..247")
        if not 1 <= self.count <= limit or not 0 <= self.address <= 0x10000 - self.count:
            raise ValueError(f"{self.label}: {self.count} at {self.address} out of range for "
                             f"function {self.function}")
        if self.period_s is not None and self.period_s <= 0:
            raise ValueError(f"{self.label}: period {self.period_s} s must be positive")

    def period(self) -> float:
        """The period of a polled transaction (what a poll loop waits between runs)."""
        if self.period_s is None:
            raise ValueError(f"{self.label} is not polled: it runs on {self.trigger!r}")
        return self.period_s

    @property
    def is_read(self) -> bool:
        return self.function in READ_FUNCTIONS

    @property
    def key(self) -> tuple[int, int, int, int]:
        """What the wire shows of it: unit, function, address, count."""
        return (self.unit, self.function, self.address, self.count)

    @property
    def sizes(self) -> tuple[int, int]:
        """RTU (request, response) bytes."""
        return frame_bytes(self.function, self.count)

    @property
    def name(self) -> str:
        """The label with the function (and the count, but for single writes), as check-config
        lists it."""
        count = "" if self.function in (5, 6) else f"x{self.count}"
        return f"{self.label} FC{self.function:02d}{count}"
