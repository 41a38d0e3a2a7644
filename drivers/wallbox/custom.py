"""``profile: custom``: a manufacturer's wallbox described in the config, as a ``WallboxProfile``.

The config model (``agent.config.WallboxCustomConfig``) validates every key with a clear message;
this module turns its plain-dict form into the same data the built-in profiles are, so the
driver and the simulator have no custom-profile code path.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

from drivers.errors import DriverConfigError
from drivers.registers import DataType, Function, Register
from drivers.wallbox.profiles import (
    DisablePath,
    LineDefaults,
    SetupWrite,
    StateEncoding,
    WallboxProfile,
)

_WATCHDOG_SCALE = {"ms": 0.001, "s": 1.0}


def profile_from_config(spec: Mapping[str, Any], *, key: str = "wallbox.custom") -> WallboxProfile:
    """A ``WallboxProfile`` from the config's ``wallbox.custom`` mapping (already validated)."""
    try:
        return _build(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise DriverConfigError(f"custom wallbox profile: {exc}", key=key,
                          fix="see config/retrofit-heidelberg.example.yaml") from exc


def _build(spec: Mapping[str, Any]) -> WallboxProfile:
    st, cur, dis = spec["state"], spec["current"], spec["disable"]
    state = Register("state", int(st["address"]), Function(int(st.get("function", 4))))
    current = Register("current", int(cur["address"]), Function.HOLDING,
                       scale=float(cur.get("scale_a", 1.0)), unit="A", writable=True)
    kind = str(dis.get("kind", "zero_current"))
    disable_reg = None
    if kind == "coil":
        disable_reg = Register("enable", int(dis["address"]), Function.COIL, DataType.BIT,
                               writable=True)
    elif kind == "register":
        disable_reg = Register("enable", int(dis["address"]), Function.HOLDING, writable=True)
    wd = spec.get("watchdog")
    watchdog = None if wd is None else Register(
        "watchdog", int(wd["address"]), Function.HOLDING,
        scale=_WATCHDOG_SCALE[str(wd.get("unit", "ms"))], unit="s", writable=True)
    fs = spec.get("failsafe_current")
    failsafe = None if fs is None else Register(
        "failsafe_current", int(fs["address"]), Function.HOLDING, scale=current.scale,
        unit="A", writable=True)
    en = spec.get("energy")
    energy = None if en is None else Register(
        "energy", int(en["address"]), Function(int(en.get("function", 4))),
        DataType(str(en.get("type", "u32"))), scale=float(en.get("scale_wh", 1.0)), unit="Wh",
        word_order=en.get("word_order", "big"))
    setup = tuple(
        SetupWrite(Register(f"setup_{w['address']}", int(w["address"]), Function.HOLDING,
                            writable=True), int(w["value"]), "from the config")
        for w in spec.get("setup", []) or [])
    return WallboxProfile(
        name="custom",
        title=str(spec.get("title", "wallbox described in the config")),
        line=LineDefaults(9600),
        state=state,
        state_encoding=cast(StateEncoding, str(st.get("encoding", "value"))),
        states=MappingProxyType({int(k): str(v) for k, v in st["values"].items()}),
        current=current,
        min_current_a=float(cur.get("min_a", 6.0)),
        max_current_a=float(cur.get("max_a", 32.0)),
        disable=DisablePath(kind, disable_reg, int(dis.get("off_value", 0)),  # type: ignore[arg-type]
                            int(dis.get("on_value", 1))),
        write_function=16 if int(cur.get("write_function", 16)) == 16 else 6,
        watchdog=watchdog,
        failsafe_current=failsafe,
        energy=energy,
        setup=setup,
        min_gap_s=float(spec.get("min_gap_ms", 0)) / 1000,
    )
