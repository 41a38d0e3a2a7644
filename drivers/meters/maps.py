"""Real meter maps as data (../shared/research/registers.md), plus maps built from config.

Register names are the ``MeterReading`` quantities: ``voltage_l1..l3``, ``current_l1..l3``,
``power``, ``energy_import``, ``energy_export``, ``frequency``, ``pf``. Each register's
``scale`` converts the raw value straight into the base unit of its quantity (V, A, W, Wh,
Hz, 1), so the driver needs no per-model code and the simulator encodes with the same map.

Default serial settings (registers.md; check the meter's own menu, firmware differs):

=============  ======  ======  ====  =========================================================
model          phases  line    unit  notes
=============  ======  ======  ====  =========================================================
ddsu666        1       9600    1     8N1 (Tasmota); FC 04, FC 03 answered too; f32 ABCD
dtsu666        3       9600    1     8N1 (CT manual) or 8N2 (quick manual); FC 03; raw scaled
sdm120         1       2400    1     8N1; FC 04 input registers; f32 ABCD engineering units
sdm630         3       9600    1     8N1 (Tasmota; vendor default unconfirmed); FC 04
=============  ======  ======  ====  =========================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from drivers.errors import DriverConfigError
from drivers.registers import DataType, Function, Register, RegisterMap

RatioKind = Literal["pt", "ct", "pt*ct"]

# quantity -> base unit; a config register may use a prefixed unit listed in UNIT_FACTORS
QUANTITY_UNITS: dict[str, str] = {
    **{f"voltage_l{i}": "V" for i in (1, 2, 3)},
    **{f"current_l{i}": "A" for i in (1, 2, 3)},
    "power": "W",
    "energy_import": "Wh",
    "energy_export": "Wh",
    "frequency": "Hz",
    "pf": "",
}
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "V": {"V": 1.0, "mV": 0.001, "kV": 1000.0},
    "A": {"A": 1.0, "mA": 0.001},
    "W": {"W": 1.0, "kW": 1000.0},
    "Wh": {"Wh": 1.0, "kWh": 1000.0, "MWh": 1e6},
    "Hz": {"Hz": 1.0},
    "": {"": 1.0, "%": 0.01},
}
# The quantities a MeterReading cannot do without.
REQUIRED_1P = ("voltage_l1", "current_l1", "power", "energy_import")


@dataclass(frozen=True, slots=True)
class SerialDefaults:
    baud: int
    parity: str = "N"
    stopbits: int = 1
    unit: int = 1


@dataclass(frozen=True, slots=True)
class MeterModel:
    """A meter model: its map, phases, defaults and quirks, all as data."""

    name: str
    register_map: RegisterMap
    phases: int
    serial: SerialDefaults
    # FCs the device answers for its measurement registers (the simulator serves these)
    answers_functions: frozenset[int] = frozenset({4})
    # quantity -> alternative register tried when the device answers exception 02
    fallbacks: Mapping[str, str] = field(default_factory=dict)
    # registers read once at start-up giving the CT ratio and the PT ratio, and which
    # ratio multiplies which quantity (DTSU666, registers.md section 2d)
    ct_register: str | None = None
    pt_register: str | None = None
    ratios: Mapping[str, RatioKind] = field(default_factory=dict)
    doc: str = ""


def _f32(name: str, address: int, function: Function, scale: float, unit: str) -> Register:
    return Register(name, address, function, DataType.F32, scale=scale, unit=unit)


_IR, _HR = Function.INPUT, Function.HOLDING

DDSU666 = MeterModel(
    "ddsu666",
    RegisterMap(
        "ddsu666",
        (
            _f32("voltage_l1", 0x2000, _IR, 1.0, "V"),
            _f32("current_l1", 0x2002, _IR, 1.0, "A"),
            _f32("power", 0x2004, _IR, 1000.0, "W"),  # register in kW
            _f32("pf", 0x200A, _IR, 1.0, ""),
            _f32("frequency", 0x200E, _IR, 1.0, "Hz"),
            _f32("energy_import", 0x4000, _IR, 1000.0, "Wh"),  # register in kWh
            _f32("energy_export", 0x400A, _IR, 1000.0, "Wh"),
        ),
    ),
    phases=1,
    serial=SerialDefaults(9600),
    answers_functions=frozenset({3, 4}),
    doc="CHINT DDSU666: engineering units; FC 04 (Tasmota) and FC 03 (SmartEVSE, OpenEMS).",
)

_DTSU_RATIOS: dict[str, RatioKind] = {
    **{f"voltage_l{i}": "pt" for i in (1, 2, 3)},
    **{f"current_l{i}": "ct" for i in (1, 2, 3)},
    "power": "pt*ct",
    "energy_import": "pt*ct",
    "energy_import_alt": "pt*ct",
    "energy_export": "pt*ct",
    "energy_export_alt": "pt*ct",
}

DTSU666 = MeterModel(
    "dtsu666",
    RegisterMap(
        "dtsu666",
        (
            Register("ct_ratio", 0x0006, _HR, DataType.I16, doc="IrAt, CT ratio 1..9999"),
            Register("pt_ratio", 0x0007, _HR, DataType.I16, scale=0.1, doc="UrAt x 0.1"),
            _f32("voltage_l1", 0x2006, _HR, 0.1, "V"),
            _f32("voltage_l2", 0x2008, _HR, 0.1, "V"),
            _f32("voltage_l3", 0x200A, _HR, 0.1, "V"),
            _f32("current_l1", 0x200C, _HR, 0.001, "A"),
            _f32("current_l2", 0x200E, _HR, 0.001, "A"),
            _f32("current_l3", 0x2010, _HR, 0.001, "A"),
            _f32("power", 0x2012, _HR, 0.1, "W"),
            _f32("pf", 0x202A, _HR, 0.001, ""),
            _f32("frequency", 0x2044, _HR, 0.01, "Hz"),
            _f32("energy_import", 0x101E, _HR, 1000.0, "Wh"),
            _f32("energy_export", 0x1028, _HR, 1000.0, "Wh"),
            _f32("energy_import_alt", 0x401E, _HR, 1000.0, "Wh"),
            _f32("energy_export_alt", 0x4028, _HR, 1000.0, "Wh"),
        ),
    ),
    phases=3,
    serial=SerialDefaults(9600),
    answers_functions=frozenset({3, 4}),
    fallbacks={"energy_import": "energy_import_alt", "energy_export": "energy_export_alt"},
    ct_register="ct_ratio",
    pt_register="pt_ratio",
    ratios=_DTSU_RATIOS,
    doc="CHINT DTSU666: secondary-side raw values; CT/PT ratios applied (registers.md 2d).",
)

SDM120 = MeterModel(
    "sdm120",
    RegisterMap(
        "sdm120",
        (
            _f32("voltage_l1", 0x0000, _IR, 1.0, "V"),
            _f32("current_l1", 0x0006, _IR, 1.0, "A"),
            _f32("power", 0x000C, _IR, 1.0, "W"),
            _f32("pf", 0x001E, _IR, 1.0, ""),
            _f32("frequency", 0x0046, _IR, 1.0, "Hz"),
            _f32("energy_import", 0x0048, _IR, 1000.0, "Wh"),
            _f32("energy_export", 0x004A, _IR, 1000.0, "Wh"),
        ),
    ),
    phases=1,
    serial=SerialDefaults(2400),
    doc="Eastron SDM120: input registers, engineering units.",
)

SDM630 = MeterModel(
    "sdm630",
    RegisterMap(
        "sdm630",
        (
            _f32("voltage_l1", 0x0000, _IR, 1.0, "V"),
            _f32("voltage_l2", 0x0002, _IR, 1.0, "V"),
            _f32("voltage_l3", 0x0004, _IR, 1.0, "V"),
            _f32("current_l1", 0x0006, _IR, 1.0, "A"),
            _f32("current_l2", 0x0008, _IR, 1.0, "A"),
            _f32("current_l3", 0x000A, _IR, 1.0, "A"),
            _f32("power", 0x0034, _IR, 1.0, "W"),
            _f32("pf", 0x003E, _IR, 1.0, ""),
            _f32("frequency", 0x0046, _IR, 1.0, "Hz"),
            _f32("energy_import", 0x0048, _IR, 1000.0, "Wh"),
            _f32("energy_export", 0x004A, _IR, 1000.0, "Wh"),
        ),
    ),
    phases=3,
    serial=SerialDefaults(9600),
    doc="Eastron SDM630: input registers, engineering units; keep reads <= 60 registers.",
)

MODELS: dict[str, MeterModel] = {m.name: m for m in (DDSU666, DTSU666, SDM120, SDM630)}

_DTYPES = {"u16": DataType.U16, "i16": DataType.I16, "u32": DataType.U32,
           "i32": DataType.I32, "f32": DataType.F32}


def model_from_config(
    name: str,
    registers: Sequence[Mapping[str, Any]],
    *,
    serial: SerialDefaults | None = None,
    key: str = "meter.registers",
) -> MeterModel:
    """A meter described entirely in config: a list of registers as plain dicts.

    Each dict: ``name`` (a quantity of ``QUANTITY_UNITS``), ``address``, ``function`` (3|4),
    ``type`` (u16|i16|u32|i32|f32), ``word_order`` (big|little, default big), ``scale``
    (default 1), ``unit`` (the unit after scaling, e.g. "kWh"; default the base unit).
    """
    regs: list[Register] = []
    for i, spec in enumerate(registers):
        where = f"{key}[{i}]"
        try:
            qname = str(spec["name"])
            address = int(spec["address"])
            function = int(spec.get("function", 3))
            dtype = _DTYPES[str(spec.get("type", "u16")).lower()]
            word_order = str(spec.get("word_order", "big"))
            scale = float(spec.get("scale", 1.0))
        except KeyError as exc:
            raise DriverConfigError(f"missing or unknown {exc}", key=where,
                              fix="give name, address, function, type") from exc
        except (TypeError, ValueError) as exc:
            raise DriverConfigError(f"bad value: {exc}", key=where) from exc
        if qname not in QUANTITY_UNITS:
            raise DriverConfigError(f"unknown quantity {qname!r}", key=f"{where}.name",
                              fix=f"one of {', '.join(QUANTITY_UNITS)}")
        if function not in (3, 4):
            raise DriverConfigError(f"function {function}", key=f"{where}.function", fix="3 or 4")
        if word_order not in ("big", "little"):
            raise DriverConfigError(f"word order {word_order!r}", key=f"{where}.word_order",
                              fix="big or little")
        base = QUANTITY_UNITS[qname]
        unit = str(spec.get("unit", base))
        factor = UNIT_FACTORS[base].get(unit)
        if factor is None:
            raise DriverConfigError(f"unit {unit!r} for {qname}", key=f"{where}.unit",
                              fix=f"one of {', '.join(repr(u) for u in UNIT_FACTORS[base])}")
        try:
            regs.append(Register(qname, address, Function(function), dtype,
                                 scale=scale * factor, unit=base,
                                 word_order="big" if word_order == "big" else "little"))
        except ValueError as exc:
            raise DriverConfigError(str(exc), key=where) from exc
    try:
        register_map = RegisterMap(name, tuple(regs))
    except ValueError as exc:
        raise DriverConfigError(str(exc), key=key) from exc
    missing = [q for q in REQUIRED_1P if q not in register_map.by_name]
    if missing:
        raise DriverConfigError(f"meter {name!r} lacks {', '.join(missing)}", key=key,
                          fix="describe at least voltage_l1, current_l1, power, energy_import")
    phases = 3 if "voltage_l3" in register_map.by_name else 1
    functions = frozenset(int(r.function) for r in regs)
    return MeterModel(name, register_map, phases, serial or SerialDefaults(9600),
                      answers_functions=functions, doc="described in config")
