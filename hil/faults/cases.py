"""The fault matrix: one row per fault, what it needs, and what must hold afterwards.

``safe`` says whether the case must end in the safe state (contactor open, no PWM: charging
cannot go on safely), ``recovers`` whether the agent must get back to charging (or to its link)
by itself once the cause is gone, ``mqtt`` whether the case needs the broker (then data loss is
judged). The checks themselves live in the case functions (``devices``, ``link``,
``durability``, ``clock``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hil.faults import clock, devices, durability, link, power, wallbox
from hil.faults.case_report import CaseReport
from hil.faults.testbed import Testbed

CaseFn = Callable[[Testbed, CaseReport], Awaitable[None]]


@dataclass(frozen=True)
class FaultCase:
    name: str
    fault: str
    run: CaseFn
    safe: bool
    recovers: bool
    mqtt: bool = False
    bench: dict[str, Any] = field(default_factory=dict)


CASES: tuple[FaultCase, ...] = (
    FaultCase("meter_silent", "meter silent", devices.meter_silent, True, True),
    FaultCase("meter_crc", "meter CRC errors (burst)", devices.meter_crc_errors, False, True),
    FaultCase("meter_slow", "meter slow answers (3x timeout)", devices.meter_slow, False, True,
              bench=devices.METER_SLOW_BENCH),
    FaultCase("meter_frozen", "meter frozen values", devices.meter_frozen, False, True,
              mqtt=True),
    FaultCase("pilot_frozen", "pilot board frozen (sample_seq stops)", devices.pilot_frozen,
              True, True),
    FaultCase("pilot_garbage", "pilot board answers garbage (valid CRC)",
              devices.pilot_garbage, True, True),
    FaultCase("pilot_slow", "pilot board slow answers (10x timeout)", devices.control_slow,
              True, True, bench=devices.CONTROL_SLOW_BENCH),
    FaultCase("relay_gone", "relay board gone", devices.relay_gone, True, True),
    FaultCase("port_vanish", "serial port vanishes and returns (USB unplug)",
              devices.port_vanish, True, True),
    FaultCase("broker_killed", "broker killed", link.broker_killed, False, True, mqtt=True),
    FaultCase("broker_refuses", "broker refuses the client", link.broker_refuses, False, True,
              mqtt=True, bench={"refuse_anonymous": True}),
    FaultCase("partition", "network partition (no TCP reset)", link.partition, False, True,
              mqtt=True),
    FaultCase("disk_full", "disk full (journal)", durability.disk_full, False, True, mqtt=True,
              bench={"mqtt_extra": {"journal_hard_limit_mb": durability.DISK_LIMIT_MB}}),
    FaultCase("journal_corrupt", "SQLite journal corrupt at start-up",
              durability.journal_corrupt, False, True, mqtt=True),
    FaultCase("sigkill", "agent SIGKILLed at random points (x20)", durability.sigkill, True,
              True, mqtt=True),
    # safe state after a kill: the sigkill row (a real power cut de-energises the contactor)
    FaultCase("power_cut", "power cut at random moments (x20, lazyfs: unsynced writes lost)",
              power.power_cut, False, True, mqtt=True),
    FaultCase("storage_stall", f"storage stalls (every fsync held {power.STALL_MS} ms)",
              power.storage_stall, False, True, mqtt=True),
    FaultCase("clock_jump", "wall clock jumps back 1 h / forward 2 h", clock.clock_jump, False,
              True, mqtt=True),
    FaultCase("config_missing", "config file missing", durability.config_missing, True, False),
    FaultCase("config_invalid", "config file invalid", durability.config_invalid, True, False),
    FaultCase("config_over_budget", "config over the reaction budget",
              durability.config_over_budget, True, False),
    # a retrofitted wallbox (hardware: wallbox, Heidelberg): safe = its fail-safe or paused
    FaultCase("wallbox_silent", "wallbox silent", wallbox.wallbox_silent, True, True,
              bench=wallbox.RETROFIT),
    FaultCase("wallbox_slow", "wallbox slow answers (3x timeout)", wallbox.wallbox_slow, False,
              True, bench=wallbox.RETROFIT),
    FaultCase("wallbox_reset", "wallbox resets to its defaults", wallbox.wallbox_reset, False,
              True, bench=wallbox.RETROFIT),
    FaultCase("wallbox_state_invalid", "wallbox state outside its table",
              wallbox.wallbox_state_invalid, True, True, bench=wallbox.RETROFIT),
    FaultCase("wallbox_bus_cut", "wallbox RS-485 cable cut", wallbox.wallbox_bus_cut, True, True,
              bench=wallbox.RETROFIT),
    FaultCase("wallbox_agent_killed", "agent SIGKILLed (wallbox)", wallbox.wallbox_agent_killed,
              True, True, bench=wallbox.RETROFIT),
)


def case(name: str) -> FaultCase:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no fault case {name!r} (known: {', '.join(c.name for c in CASES)})")
