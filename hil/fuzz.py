"""Malformed Modbus RTU answers on the virtual wire, and what the agent's bus makes of them.

The mutators (``hil.fuzz_frames``) turn a valid answer into bytes no receiver may accept.

``FuzzRig`` is one ``PtyBridge`` (no line timing), one ``SimulatedBus`` with a pilot board, a
relay board and an SDM120 meter (static values, so the truth is known), and one real
``BusScheduler`` with the real drivers on top. ``run_case`` replaces one device answer with a
mutated one, classifies what the driver did, checks the ``BusStats`` counters and then that
the next clean transaction succeeds. ``fuzz_run`` loops that; ``python -m hil.fuzz --modbus
--cases 10000 --seed 1`` prints the table and exits non-zero on any crash, wrongly accepted
answer, uncounted failure or bus that did not recover.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.bus import BusScheduler, BusStats
from drivers.errors import DriverError, DriverIOError, DriverTimeoutError, ModbusExceptionError
from drivers.interfaces import PilotBoardSample, RelayInputs
from drivers.meters import SDM120, MapMeter
from drivers.pilot_board import PilotBoardDriver
from drivers.relay_board import RelayBoardDriver
from hil.fuzz_frames import KINDS, benign, mutate
from hil.meter_sim import MeterSim
from hil.modbus_server import SimulatedBus
from hil.ptybridge import LineSettings, PtyBridge

# --- the wire slot: which answer to replace, read by the bridge thread -----------------------


@dataclass(slots=True)
class Shot:
    """What the bridge did with the armed slot: the answer it saw and what it sent instead."""

    fired: bool = False
    seen: bytes = b""


class WireSlot:
    """Thread-safe "current mutation": the test arms it, the bridge's ``hook`` fires it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = False
        self._skip = 0
        self._wire = b""
        self._shot = Shot()
        self.captured: list[bytes] | None = None

    def arm(self, wire: bytes, skip: int = 0) -> None:
        """Replace the device answer after the next ``skip`` ones with ``wire``."""
        with self._lock:
            self._armed, self._skip, self._wire, self._shot = True, skip, wire, Shot()

    def disarm(self) -> Shot:
        with self._lock:
            self._armed = False
            return self._shot

    def hook(self, direction: str, data: bytes) -> bytes | None:
        """``PtyBridge.mutate``: only device answers (``b->a``) are touched."""
        if direction != "b->a":
            return data
        with self._lock:
            if self.captured is not None:
                self.captured.append(data)
            if not self._armed:
                return data
            if self._skip:
                self._skip -= 1
                return data
            self._armed = False
            self._shot = Shot(True, data)
            return self._wire or None


# --- the rig ---------------------------------------------------------------------------------

PILOT, RELAY, METER = 1, 2, 3
PILOT_SAMPLE = [9000, (-12000) & 0xFFFF, 533, 680, 0b1001, 4242, 253, 0x0100]
DUTY = 533
RELAY_INPUTS = [False, True] + [False] * 6  # contactor open, lock engaged
OUTCOMES = ("delivered", "garbled", "timeout", "exception", "wrong", "crash", "uncounted",
            "not_survived", "loop_errors", "harness")
FAILURES = ("wrong", "crash", "uncounted", "not_survived", "harness")


def _pilot_device() -> SimDevice:
    bits = [SimData(0xFF00, count=16, values=False, datatype=DataType.BITS, readonly=True)]
    return SimDevice(id=PILOT, simdata=(
        list(bits), list(bits),
        [SimData(0x0100, values=[1000, 3000, 0, 0], datatype=DataType.REGISTERS)],
        [SimData(0, values=list(PILOT_SAMPLE), datatype=DataType.REGISTERS)],
    ))


def _relay_device() -> SimDevice:
    return SimDevice(id=RELAY, simdata=(
        [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
        [SimData(0, values=list(RELAY_INPUTS), datatype=DataType.BITS)],
        [SimData(0, datatype=DataType.INVALID)],
        [SimData(0, datatype=DataType.INVALID)],
    ))


@dataclass(slots=True)
class Op:
    """One driver call, its genuine device answers (captured clean) and its true result."""

    name: str
    call: Callable[[], Awaitable[object]]
    frames: list[bytes] = field(default_factory=list)
    truth: object = None


@dataclass(slots=True)
class FuzzResult:
    kind: str
    op: str
    wire: bytes
    outcome: str
    detail: str = ""
    problems: tuple[str, ...] = ()  # FAILURES (and loop_errors) besides the outcome


def _stats_delta(before: BusStats, after: BusStats) -> dict[str, int]:
    names = ("ok", "timeouts", "garbled", "exceptions", "io_errors")
    return {n: getattr(after, n) - getattr(before, n) for n in names}


_COUNTER_OF = {"garbled": "garbled", "timeout": "timeouts", "exception": "exceptions"}
_COUNTED = ("timeouts", "garbled", "exceptions", "io_errors")


class FuzzRig:
    """``async with FuzzRig() as rig: await rig.run_case("pilot_poll", "crc_flip", rng)``."""

    def __init__(self, *, baud: int = 921_600, timeout_s: float = 0.05) -> None:
        self.line = LineSettings(baud)
        self.timeout_s = timeout_s
        self.slot = WireSlot()
        self.loop_errors: list[str] = []
        self.ops: dict[str, Op] = {}
        self._bridge: PtyBridge | None = None
        self._sim: SimulatedBus | None = None
        self._bus: BusScheduler | None = None
        self._old_handler: Any = None

    @property
    def bus(self) -> BusScheduler:
        assert self._bus is not None
        return self._bus

    async def __aenter__(self) -> FuzzRig:
        loop = asyncio.get_running_loop()
        self._old_handler = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(
            f"{ctx.get('message')}: {ctx.get('exception')!r}"))
        self._bridge = PtyBridge(self.line, timing=False, mutate=self.slot.hook).start()
        meter = MeterSim(SDM120, unit=METER)
        await meter.set_measurements(voltage_v=229.5, current_a=15.75, power_w=3614.0,
                                     energy_import_wh=123_456.0, frequency_hz=49.98, pf=0.998)
        devices = [_pilot_device(), _relay_device(), meter.device]
        self._sim = await SimulatedBus(devices, self._bridge.path_b, self.line).start()
        self._bus = BusScheduler("fuzz", self._bridge.path_a, baud=self.line.baud,
                                 timeout_s=self.timeout_s, device_latency_s=0.005)
        await self._bus.start()
        pilot, relay = PilotBoardDriver(self._bus, PILOT), RelayBoardDriver(self._bus, RELAY)
        mapmeter = MapMeter(self._bus, METER, SDM120)
        for op in (Op("pilot_poll", pilot.read_sample),
                   Op("pilot_duty", lambda: pilot.set_duty(DUTY)),
                   Op("relay_inputs", relay.read_inputs),
                   Op("contactor_open", lambda: relay.set_contactor(False)),
                   Op("meter_read", mapmeter.read)):
            self.slot.captured = op.frames
            op.truth = await op.call()
            self.slot.captured = None
            self.ops[op.name] = op
        self._check_truths()
        return self

    def _check_truths(self) -> None:
        sample = self.ops["pilot_poll"].truth
        assert isinstance(sample, PilotBoardSample) and sample.sample_seq == PILOT_SAMPLE[5]
        assert self.ops["relay_inputs"].truth == RelayInputs(False, True)
        assert all(op.frames for op in self.ops.values()), "an op produced no answer"

    async def __aexit__(self, *exc: object) -> None:
        if self._bus is not None:
            await self._bus.stop()
        if self._sim is not None:
            await self._sim.stop()
        if self._bridge is not None:
            self._bridge.close()
        asyncio.get_running_loop().set_exception_handler(self._old_handler)

    def bus_alive(self) -> bool:
        task = self.bus._task
        return task is not None and not task.done()

    def prepare(self, op_name: str, kind: str, rng: random.Random) -> tuple[int, bytes]:
        """Pure draw (any thread): which answer of ``op_name`` to replace, and by what."""
        index = rng.randrange(len(self.ops[op_name].frames))
        return index, mutate(kind, self.ops[op_name].frames[index], rng)

    async def run_case(self, op_name: str, kind: str, rng: random.Random) -> FuzzResult:
        """One mutated answer to ``op_name``, then a clean repeat that must succeed."""
        index, wire = self.prepare(op_name, kind, rng)
        return await self.run_prepared(op_name, kind, index, wire)

    async def run_prepared(self, op_name: str, kind: str, index: int, wire: bytes) -> FuzzResult:
        """Answer ``index`` of ``op_name`` replaced by ``wire``; classify, check, recover."""
        op = self.ops[op_name]
        genuine = op.frames[index]
        before, loop_errors = replace(self.bus.stats), len(self.loop_errors)
        self.slot.arm(wire, skip=index)
        outcome, detail, result = await self._call(op)
        shot = self.slot.disarm()
        delta = _stats_delta(before, self.bus.stats)
        problems: list[str] = []
        if outcome == "delivered" and (result != op.truth or not benign(wire, genuine)):
            outcome, detail = "wrong", f"returned {result!r}"
        if not shot.fired or shot.seen != genuine:
            problems.append("harness")
            detail += f" bridge saw {shot.seen.hex() or 'nothing'}, expected {genuine.hex()}"
        counted = {c: 1 if c == _COUNTER_OF.get(outcome) else 0 for c in _COUNTED}
        if outcome in ("delivered", *_COUNTER_OF) and {c: delta[c] for c in _COUNTED} != counted:
            problems.append("uncounted")
            detail += f" stats delta {delta}"
        if not self.bus_alive():
            problems.append("crash")
            detail += " bus task died"
        again, why, value = await self._call(op)
        if again != "delivered" or value != op.truth:
            problems.append("not_survived")
            detail += f" next clean call: {again} {why}"
        if len(self.loop_errors) > loop_errors:
            problems.append("loop_errors")
            detail += " " + "; ".join(self.loop_errors[loop_errors:])
        return FuzzResult(kind, op_name, wire, outcome, detail.strip(), tuple(problems))

    async def _call(self, op: Op) -> tuple[str, str, object]:
        try:
            result = await op.call()
        except ModbusExceptionError as exc:
            return "exception", str(exc), None
        except DriverTimeoutError as exc:
            return "timeout", str(exc), None
        except (DriverIOError, DriverError) as exc:
            return "garbled", str(exc), None
        except Exception as exc:  # anything else escaping a driver is a crash
            return "crash", repr(exc), None
        return "delivered", "", result


# --- runs and reports ------------------------------------------------------------------------


@dataclass(slots=True)
class FuzzReport:
    """Counts per mutation kind; ``ok`` when nothing crashed, was wrongly accepted,
    went uncounted or left the bus unable to serve the next clean transaction."""

    cases: int
    seed: int
    wall_s: float = 0.0
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[FuzzResult] = field(default_factory=list)
    bus_stats: BusStats | None = None

    def add(self, case: FuzzResult) -> None:
        row = self.counts.setdefault(case.kind, Counter())
        row[case.outcome] += 1
        for problem in case.problems:
            row[problem] += 1
        if (case.outcome in FAILURES or set(case.problems) & set(FAILURES)) and len(
            self.failures
        ) < 20:
            self.failures.append(case)

    def total(self, outcome: str) -> int:
        return sum(row[outcome] for row in self.counts.values())

    @property
    def ok(self) -> bool:
        return not any(self.total(name) for name in FAILURES)

    def table(self) -> str:
        head = f"{'kind':<20}{'cases':>7}" + "".join(f"{o:>13}" for o in OUTCOMES)
        lines = [head, "-" * len(head)]
        for kind in [k for k in KINDS if k in self.counts]:
            row = self.counts[kind]
            n = sum(row[o] for o in OUTCOMES[:6])
            lines.append(f"{kind:<20}{n:>7}" + "".join(f"{row[o]:>13}" for o in OUTCOMES))
        lines.append("-" * len(head))
        lines.append(f"{'total':<20}{self.cases:>7}"
                     + "".join(f"{self.total(o):>13}" for o in OUTCOMES))
        lines.append(f"seed {self.seed}, {self.cases} cases in {self.wall_s:.1f} s; "
                     f"bus {self.bus_stats}")
        for case in self.failures:
            lines.append(f"FAIL {case.kind}/{case.op} {case.outcome} {case.problems} "
                         f"wire={case.wire.hex()} {case.detail}")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


async def fuzz_run(
    cases: int, seed: int, *, kinds: tuple[str, ...] = KINDS, timeout_s: float = 0.05
) -> FuzzReport:
    """``cases`` mutated answers, kinds in turn, operation and draws from ``seed``."""
    rng = random.Random(seed)
    report = FuzzReport(cases, seed)
    started = time.monotonic()
    async with FuzzRig(timeout_s=timeout_s) as rig:
        ops = sorted(rig.ops)
        for i in range(cases):
            report.add(await rig.run_case(rng.choice(ops), kinds[i % len(kinds)], rng))
        report.bus_stats = replace(rig.bus.stats)
    report.wall_s = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--modbus", action="store_true", required=True,
                        help="fuzz device answers on a Modbus RTU line")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--each", action="store_true", help="--cases per mutation kind")
    parser.add_argument("--kind", action="append", choices=KINDS, help="only these kinds")
    parser.add_argument("--timeout", type=float, default=0.05, help="bus timeout in seconds")
    args = parser.parse_args(argv)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # every bad frame logs an error
    kinds = tuple(args.kind or KINDS)
    cases = args.cases * len(kinds) if args.each else args.cases
    report = asyncio.run(fuzz_run(cases, args.seed, kinds=kinds, timeout_s=args.timeout))
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
