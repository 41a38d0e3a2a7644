"""Map-driven energy meter: one driver for every model, the model is data (``maps.py``).

``MapMeter`` reads only the registers a ``MeterReading`` needs, grouped into blocks of at most
``max_words_per_read`` words, each one ``METER_READ`` transaction, so a meter never holds a
shared bus for long (the pilot poll can slip in between blocks). Quirks are data too:
CT/PT ratios read once at start-up (DTSU666) and alternative registers tried when the device
answers exception 02 (DTSU666 energy at 0x101E, else 0x401E).

``MeterPlan`` (pure, no bus) declares every transaction the meter can run (``drivers.wire``):
the readings every ``poll_s``, the ratios at start-up and the alternative blocks after an
exception 02; ``MapMeter`` runs only those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from drivers.bus import BusScheduler
from drivers.errors import DriverIOError, ModbusExceptionError
from drivers.interfaces import MeterReading
from drivers.meters.maps import MeterModel
from drivers.registers import Block, Function, RegisterMap, decode_block
from drivers.wire import Priority, Transaction

ILLEGAL_ADDRESS = 2
DEFAULT_MAX_WORDS = 32
DEFAULT_POLL_S = 1.0
_OPTIONAL = ("frequency", "pf")


def _default_quantities(model: MeterModel) -> list[str]:
    names = model.register_map.by_name
    phases = range(1, model.phases + 1)
    wanted = [f"voltage_l{i}" for i in phases] + [f"current_l{i}" for i in phases]
    wanted += ["power", "energy_import"]
    wanted += [q for q in _OPTIONAL if q in names]
    return wanted


@dataclass(frozen=True)
class MeterPlan:
    """What one meter of ``model`` at ``unit`` reads, block by block: pure data, no bus."""

    model: MeterModel
    unit: int
    max_words_per_read: int = DEFAULT_MAX_WORDS
    poll_s: float = DEFAULT_POLL_S
    quantities: tuple[str, ...] | None = None
    function: Function | None = None
    max_gap: int = 0
    wanted: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not 2 <= self.max_words_per_read <= 125:
            raise ValueError(f"max_words_per_read {self.max_words_per_read} out of 2..125")
        names = self.model.register_map.by_name
        wanted = (list(self.quantities) if self.quantities is not None
                  else _default_quantities(self.model))
        unknown = [q for q in wanted if q not in names]
        if unknown:
            raise ValueError(f"meter {self.model.name}: no register for {', '.join(unknown)}")
        object.__setattr__(self, "wanted", tuple(wanted))

    def blocks(self, substitute: Mapping[str, str] | None = None) -> list[Block]:
        """The reads of one reading, with ``substitute`` (quantity -> register) in force."""
        regs = [(substitute or {}).get(q, q) for q in self.wanted]
        return self._blocks(regs, self.function)

    def ratio_blocks(self) -> list[Block]:
        names = [n for n in (self.model.ct_register, self.model.pt_register) if n]
        return self._blocks(names, None) if names else []

    def _blocks(self, names: list[str], function: Function | None) -> list[Block]:
        blocks = self.model.register_map.blocks(names, max_words=self.max_words_per_read,
                                                max_gap=self.max_gap)
        if function is None:
            return blocks
        return [Block(function, b.address, b.count, b.registers) for b in blocks]

    def transactions(self) -> tuple[Transaction, ...]:
        """Every read this meter can make: its reading every ``poll_s``, the transformer
        ratios once at start-up, and the blocks with the alternative registers it falls back
        to when the device refuses one (exception 02)."""
        def txn(label: str, b: Block, period_s: float | None, trigger: str = "") -> Transaction:
            return Transaction(label, self.unit, int(b.function), b.address, b.count,
                               Priority.METER_READ, period_s, trigger)

        out = [txn("meter", b, self.poll_s) for b in self.blocks()]
        out += [txn("meter ratios", b, None, "start-up") for b in self.ratio_blocks()]
        fallbacks = {q: self.model.fallbacks[q] for q in self.wanted
                     if q in self.model.fallbacks}
        if fallbacks:
            seen = {t.key for t in out}
            for b in self.blocks(fallbacks):
                t = txn("meter fallback", b, self.poll_s, "after exception 02")
                if t.key not in seen:
                    out.append(t)
        return tuple(out)


class MapMeter:
    """A ``drivers.interfaces.Meter`` for any ``MeterModel`` on a ``BusScheduler``."""

    def __init__(
        self,
        bus: BusScheduler,
        unit: int,
        model: MeterModel,
        *,
        max_words_per_read: int = DEFAULT_MAX_WORDS,
        quantities: Iterable[str] | None = None,
        function: Function | None = None,
        max_gap: int = 0,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self.bus = bus
        self.unit = unit
        self.model = model
        self.wire = MeterPlan(model, unit, max_words_per_read, poll_s,
                              None if quantities is None else tuple(quantities), function,
                              max_gap)
        self._declared = {t.key: t for t in self.wire.transactions()}
        self._substitute: dict[str, str] = {}  # quantity -> register actually read
        self._ratios: dict[str, float] | None = None if model.ct_register else {}

    @classmethod
    def from_plan(cls, bus: BusScheduler, plan: MeterPlan) -> MapMeter:
        """The meter that runs ``plan`` (the same object check-config times)."""
        return cls(bus, plan.unit, plan.model, max_words_per_read=plan.max_words_per_read,
                   quantities=plan.quantities, function=plan.function, max_gap=plan.max_gap,
                   poll_s=plan.poll_s)

    @property
    def max_words_per_read(self) -> int:
        return self.wire.max_words_per_read

    @property
    def register_map(self) -> RegisterMap:
        return self.model.register_map

    def plan(self) -> list[Block]:
        """The read transactions the next ``read()`` makes."""
        return self.wire.blocks(self._substitute)

    async def start(self) -> None:
        """Read the transformer ratios once (models that have them); idempotent."""
        if self._ratios is not None:
            return
        ct_name, pt_name = self.model.ct_register, self.model.pt_register
        values = await self._read_ratios()
        ct = values.get(ct_name, 1.0) if ct_name else 1.0
        pt = values.get(pt_name, 1.0) if pt_name else 1.0
        if not (ct > 0 and pt > 0):
            raise DriverIOError(f"implausible transformer ratios CT={ct} PT={pt}",
                                bus=self.bus.name, unit=self.unit)
        factor = {"ct": ct, "pt": pt, "pt*ct": pt * ct}
        self._ratios = {name: factor[kind] for name, kind in self.model.ratios.items()}

    @property
    def ratios(self) -> dict[str, float]:
        return dict(self._ratios or {})

    async def read(self) -> MeterReading:
        await self.start()
        values = await self._read_wanted()
        ratios = self._ratios or {}
        scaled = {q: values[r] * ratios.get(r, 1.0) for q, r in self._chosen().items()}
        phases = range(1, self.model.phases + 1)
        return MeterReading(
            voltage_v=tuple(scaled[f"voltage_l{i}"] for i in phases),
            current_a=tuple(scaled[f"current_l{i}"] for i in phases),
            power_w=scaled["power"],
            energy_import_wh=scaled["energy_import"],
            frequency_hz=scaled.get("frequency"),
            pf=scaled.get("pf"),
            energy_export_wh=scaled.get("energy_export"),
        )

    def _chosen(self) -> dict[str, str]:
        return {q: self._substitute.get(q, q) for q in self.wire.wanted}

    async def _read_wanted(self) -> dict[str, float]:
        while True:
            try:
                return await self._read_blocks(self.plan())
            except ModbusExceptionError as exc:
                if exc.exception_code != ILLEGAL_ADDRESS or not self._fall_back(exc):
                    raise

    def _fall_back(self, exc: ModbusExceptionError) -> bool:
        """Switch the registers of the refused block to their alternatives, once."""
        failed_at = exc.context.get("address")
        changed = False
        for block in self.plan():
            if block.address != failed_at:
                continue
            for reg in block.registers:
                quantity = next((q for q, r in self._chosen().items() if r == reg.name), None)
                alt = self.model.fallbacks.get(reg.name)
                if quantity is not None and alt is not None:
                    self._substitute[quantity] = alt
                    changed = True
        return changed

    async def _read_ratios(self) -> dict[str, float]:
        return await self._read_blocks(self.wire.ratio_blocks())

    async def _read_blocks(self, blocks: list[Block]) -> dict[str, float]:
        values: dict[str, float] = {}
        for block in blocks:
            raw = await self.bus.run(self._transaction(block))
            values.update(decode_block(block, raw))
        return values

    def _transaction(self, block: Block) -> Transaction:
        key = (self.unit, int(block.function), block.address, block.count)
        declared = self._declared.get(key)
        if declared is not None:
            return declared
        # Not in the plan (a fallback the plan did not foresee): the bus counts it undeclared.
        return Transaction("meter (undeclared)", self.unit, key[1], block.address, block.count,
                           Priority.METER_READ)
