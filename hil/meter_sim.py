"""Simulated energy meter: serves a ``MeterModel``'s register map from the device side.

The same map the driver reads (``drivers.meters.maps``) is encoded here with the same
``Register.encode``, so a map error shows up as a failing round trip, not as two bugs that
cancel. Raw values are what the real meter sends: DTSU666 values are secondary-side numbers
(divided by its CT/PT ratios and its scale), and both of its energy blocks carry the same
value; DDSU666 and DTSU666 answer FC 03 and FC 04 from the same memory.

Fault injection: ``set_silent`` (no answer), ``set_latency`` (slow answers), ``set_exception``
(every request answered with an exception code), ``freeze`` (values stop changing), and
``omit`` at construction (registers this firmware does not have: exception 02).

    sim = MeterSim(DTSU666, unit=1, ct_ratio=50)
    bus = SimulatedBus([sim.device], port=bridge.path_b, line=LineSettings(9600))
    sim.attach(bus); await bus.start()
    await sim.set_measurements(voltage_v=230.0, current_a=16.0, power_w=3680.0,
                               energy_import_wh=12_345.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from drivers.meters.maps import MeterModel
from drivers.registers import Function, Register
from hil.modbus_server import SimulatedBus


class MeterSim:
    """One simulated meter; hand ``device`` to a ``SimulatedBus``, then ``attach`` it."""

    def __init__(
        self,
        model: MeterModel,
        unit: int | None = None,
        *,
        ct_ratio: int = 1,
        pt_ratio: float = 1.0,
        omit: Iterable[str] = (),
    ) -> None:
        self.model = model
        self.unit = model.serial.unit if unit is None else unit
        self.ct_ratio = ct_ratio
        self.pt_ratio = pt_ratio
        omitted = set(omit)
        self.registers = tuple(r for r in model.register_map.registers if r.name not in omitted)
        self.shared = {3, 4} <= set(model.answers_functions)
        self.values: dict[str, float] = {r.name: 0.0 for r in self.registers}
        if model.ct_register and model.ct_register in self.values:
            self.values[model.ct_register] = float(ct_ratio)
        if model.pt_register and model.pt_register in self.values:
            self.values[model.pt_register] = float(pt_ratio)
        self.frozen = False
        self._bus: SimulatedBus | None = None
        self.device = self._build_device()

    # --- wiring ----------------------------------------------------------------------------

    def attach(self, bus: SimulatedBus) -> None:
        """The bus this meter's ``device`` is served on (for runtime updates and faults)."""
        self._bus = bus

    def _build_device(self) -> SimDevice:
        regs = sorted(self.registers, key=lambda r: (int(r.function), r.address))
        if self.shared:
            seen: dict[int, str] = {}
            for reg in regs:
                for a in range(reg.address, reg.end):
                    if a in seen:
                        raise ValueError(f"{reg.name} overlaps {seen[a]} in a shared table")
                    seen[a] = reg.name
            return SimDevice(id=self.unit, simdata=[self._simdata(r) for r in regs])
        holding = [self._simdata(r) for r in regs if r.function is Function.HOLDING]
        inputs = [self._simdata(r) for r in regs if r.function is Function.INPUT]
        no_bits = [SimData(0, values=False, datatype=SimType.BITS)]
        return SimDevice(
            id=self.unit,
            simdata=(
                list(no_bits),
                list(no_bits),
                holding or [SimData(0, datatype=SimType.INVALID)],
                inputs or [SimData(0, datatype=SimType.INVALID)],
            ),
        )

    def _simdata(self, reg: Register) -> SimData:
        return SimData(reg.address, values=self._raw(reg), datatype=SimType.REGISTERS)

    def _raw(self, reg: Register) -> list[int]:
        value = self.values[reg.name]
        ratio = self._ratio(reg.name)
        return reg.encode(value / ratio)

    def _ratio(self, name: str) -> float:
        kind = self.model.ratios.get(name)
        if kind == "ct":
            return float(self.ct_ratio)
        if kind == "pt":
            return self.pt_ratio
        if kind == "pt*ct":
            return self.pt_ratio * self.ct_ratio
        return 1.0

    # --- runtime ---------------------------------------------------------------------------

    async def set_measurements(
        self,
        voltage_v: float | Sequence[float],
        current_a: float | Sequence[float],
        power_w: float,
        energy_import_wh: float,
        *,
        frequency_hz: float = 50.0,
        pf: float = 1.0,
        energy_export_wh: float = 0.0,
    ) -> None:
        """New primary-side values (per phase sequences, or one value for every phase)."""
        phases = range(1, self.model.phases + 1)
        volts = _per_phase(voltage_v, self.model.phases)
        amps = _per_phase(current_a, self.model.phases)
        new = {f"voltage_l{i}": volts[i - 1] for i in phases}
        new.update({f"current_l{i}": amps[i - 1] for i in phases})
        energy_alt = {"energy_import_alt": energy_import_wh, "energy_export_alt": energy_export_wh}
        new.update(power=power_w, energy_import=energy_import_wh, energy_export=energy_export_wh,
                   frequency=frequency_hz, pf=pf, **energy_alt)
        await self.set_values({k: v for k, v in new.items() if k in self.values})

    async def set_values(self, values: dict[str, float]) -> None:
        """Set registers by name in engineering units (ignored while frozen)."""
        if self.frozen:
            return
        self.values.update(values)
        if self._bus is None:
            self.device = self._build_device()
            return
        by_name = {r.name: r for r in self.registers}
        for name in values:
            reg = by_name[name]
            await self._bus.set_values(self.unit, int(reg.function), reg.address, self._raw(reg))

    def freeze(self, frozen: bool = True) -> None:
        """Frozen: the meter keeps answering, with the values it had (a hung meter CPU)."""
        self.frozen = frozen

    def set_silent(self, silent: bool = True) -> None:
        self._require().set_silent(self.unit, silent)

    def set_latency(self, seconds: float) -> None:
        self._require().set_latency(self.unit, seconds)

    def set_exception(self, code: int | None) -> None:
        self._require().set_exception(self.unit, code)

    def _require(self) -> SimulatedBus:
        if self._bus is None:
            raise RuntimeError("MeterSim not attached to a SimulatedBus")
        return self._bus


def _per_phase(value: float | Sequence[float], phases: int) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)] * phases
    values = [float(v) for v in value]
    if len(values) != phases:
        raise ValueError(f"{len(values)} values for {phases} phases")
    return values
