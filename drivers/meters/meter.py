"""Map-driven energy meter: one driver for every model, the model is data (``maps.py``).

``MapMeter`` reads only the registers a ``MeterReading`` needs, grouped into blocks of at most
``max_words_per_read`` words, each one ``METER_READ`` transaction, so a meter never holds a
shared bus for long (the pilot poll can slip in between blocks). Quirks are data too:
CT/PT ratios read once at start-up (DTSU666) and alternative registers tried when the device
answers exception 02 (DTSU666 energy at 0x101E, else 0x401E).
"""

from __future__ import annotations

from collections.abc import Iterable

from drivers.bus import BusScheduler, Priority
from drivers.errors import DriverIOError, ModbusExceptionError
from drivers.interfaces import MeterReading
from drivers.meters.maps import MeterModel
from drivers.registers import Block, Function, RegisterMap, decode_block

ILLEGAL_ADDRESS = 2
DEFAULT_MAX_WORDS = 32
_OPTIONAL = ("frequency", "pf")


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
    ) -> None:
        if not 2 <= max_words_per_read <= 125:
            raise ValueError(f"max_words_per_read {max_words_per_read} out of 2..125")
        self.bus = bus
        self.unit = unit
        self.model = model
        self.max_words_per_read = max_words_per_read
        self.max_gap = max_gap
        self._function = function
        names = self.model.register_map.by_name
        wanted = list(quantities) if quantities is not None else self._default_quantities()
        unknown = [q for q in wanted if q not in names]
        if unknown:
            raise ValueError(f"meter {model.name}: no register for {', '.join(unknown)}")
        self._wanted = wanted
        self._substitute: dict[str, str] = {}  # quantity -> register actually read
        self._ratios: dict[str, float] | None = None if model.ct_register else {}

    def _default_quantities(self) -> list[str]:
        names = self.model.register_map.by_name
        phases = range(1, self.model.phases + 1)
        wanted = [f"voltage_l{i}" for i in phases] + [f"current_l{i}" for i in phases]
        wanted += ["power", "energy_import"]
        wanted += [q for q in _OPTIONAL if q in names]
        return wanted

    @property
    def register_map(self) -> RegisterMap:
        return self.model.register_map

    def plan(self) -> list[Block]:
        """The read transactions one ``read()`` makes (the lead's bus budget uses this)."""
        regs = [self._substitute.get(q, q) for q in self._wanted]
        blocks = self.register_map.blocks(regs, max_words=self.max_words_per_read,
                                          max_gap=self.max_gap)
        if self._function is None:
            return blocks
        return [Block(self._function, b.address, b.count, b.registers) for b in blocks]

    async def start(self) -> None:
        """Read the transformer ratios once (models that have them); idempotent."""
        if self._ratios is not None:
            return
        ct_name, pt_name = self.model.ct_register, self.model.pt_register
        values = await self._read_names([n for n in (ct_name, pt_name) if n])
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
        return {q: self._substitute.get(q, q) for q in self._wanted}

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

    async def _read_names(self, names: list[str]) -> dict[str, float]:
        blocks = self.register_map.blocks(names, max_words=self.max_words_per_read,
                                          max_gap=self.max_gap)
        return await self._read_blocks(blocks)

    async def _read_blocks(self, blocks: list[Block]) -> dict[str, float]:
        values: dict[str, float] = {}
        for block in blocks:
            raw = await self.bus.read(self.unit, int(block.function), block.address,
                                      block.count, priority=Priority.METER_READ)
            values.update(decode_block(block, raw))
        return values
