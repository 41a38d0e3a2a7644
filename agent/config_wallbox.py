"""Config of a retrofitted wallbox (``hardware: wallbox``): the connector's ``wallbox`` section.

Built-in profiles are named; ``profile: custom`` describes a manufacturer's own wallbox under
``custom`` (state register and its value table, current register with scale and legal range,
disable path, watchdog and fail-safe registers if any, energy register if any, the minimum gap
between transactions). Every key is documented in ``config/retrofit-heidelberg.example.yaml``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.config import MeterConfig, _ConnectorBase
from agent.errors import driver_config_as_config_error
from drivers.wallbox import PROFILES, WallboxProfile, profile_from_config

Address = Annotated[int, Field(ge=0, le=0xFFFF)]
Word = Annotated[int, Field(ge=0, le=0xFFFF)]
Meaning = Literal["A", "B", "C", "D", "E", "F", "error"]
WATCHDOG_MAX_MS = 0xFFFF


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class WallboxStateConfig(_Strict):
    address: Address
    function: Literal[3, 4] = 4
    encoding: Literal["value", "ascii_high_byte"] = "value"
    values: dict[int, Meaning]

    @field_validator("values")
    @classmethod
    def _needs_a_and_c(cls, value: dict[int, Meaning]) -> dict[int, Meaning]:
        missing = [m for m in ("A", "B", "C") if m not in value.values()]
        if missing:
            raise ValueError(f"the state table needs a value for {', '.join(missing)} "
                             "(A no vehicle, B vehicle connected, C charging)")
        return value


class WallboxCurrentConfig(_Strict):
    address: Address
    write_function: Literal[6, 16] = 16
    scale_a: Annotated[float, Field(gt=0, le=10)] = 1.0
    min_a: Annotated[float, Field(ge=1, le=80)] = 6.0
    max_a: Annotated[float, Field(ge=1, le=80)] = 32.0

    @model_validator(mode="after")
    def _range(self) -> WallboxCurrentConfig:
        if self.min_a > self.max_a:
            raise ValueError(f"min_a {self.min_a} is above max_a {self.max_a}")
        if self.max_a / self.scale_a > 0xFFFF:
            raise ValueError(f"max_a {self.max_a} at scale_a {self.scale_a} does not fit a "
                             "16-bit register")
        return self


class WallboxDisableConfig(_Strict):
    kind: Literal["zero_current", "coil", "register"] = "zero_current"
    address: Address | None = None
    off_value: Word = 0
    on_value: Word = 1

    @model_validator(mode="after")
    def _address(self) -> WallboxDisableConfig:
        if self.kind != "zero_current" and self.address is None:
            raise ValueError(f"disable kind {self.kind!r} needs the address of its "
                             f"{'coil' if self.kind == 'coil' else 'register'}")
        if self.kind == "zero_current" and self.address is not None:
            raise ValueError("disable kind 'zero_current' writes the current register: "
                             "remove address")
        return self


class WallboxWatchdogConfig(_Strict):
    address: Address
    unit: Literal["ms", "s"] = "ms"


class WallboxRegisterConfig(_Strict):
    address: Address


class WallboxEnergyConfig(_Strict):
    address: Address
    function: Literal[3, 4] = 4
    type: Literal["u16", "u32"] = "u32"
    word_order: Literal["big", "little"] = "big"
    scale_wh: Annotated[float, Field(gt=0)] = 1.0


class WallboxSetupWriteConfig(_Strict):
    address: Address
    value: Word


class WallboxCustomConfig(_Strict):
    title: str = "wallbox described in the config"
    state: WallboxStateConfig
    current: WallboxCurrentConfig
    disable: WallboxDisableConfig = WallboxDisableConfig()
    watchdog: WallboxWatchdogConfig | None = None
    failsafe_current: WallboxRegisterConfig | None = None
    energy: WallboxEnergyConfig | None = None
    setup: list[WallboxSetupWriteConfig] = []
    min_gap_ms: Annotated[float, Field(ge=0, le=5000)] = 0.0

    @model_validator(mode="after")
    def _failsafe_needs_watchdog(self) -> WallboxCustomConfig:
        if self.failsafe_current is not None and self.watchdog is None:
            raise ValueError("failsafe_current is used when the watchdog expires: add watchdog")
        return self


class WallboxConfig(_Strict):
    bus: str
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    profile: Literal["heidelberg", "phoenix-ev-cc", "evse-wb-din", "custom"]
    custom: WallboxCustomConfig | None = None
    poll_ms: Annotated[float, Field(ge=50, le=10000)] = 500.0
    verify_s: Annotated[float, Field(ge=1, le=600)] = 5.0
    lost_ms: Annotated[float, Field(ge=200, le=60000)] = 3000.0
    watchdog_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    failsafe_current_a: Annotated[float, Field(ge=0, le=80)] | None = None

    @model_validator(mode="after")
    def _profile(self) -> WallboxConfig:
        if (self.profile == "custom") != (self.custom is not None):
            raise ValueError("'custom' describes the wallbox of profile 'custom' (and only it)")
        p = self.resolve()
        if p.watchdog is not None:
            limit_s = WATCHDOG_MAX_MS * p.watchdog.scale
            if self.watchdog_s > limit_s:
                raise ValueError(f"watchdog_s {self.watchdog_s} does not fit the wallbox's "
                                 f"watchdog register (at most {limit_s:g} s)")
            if self.poll_ms * 3 > self.watchdog_s * 1000:
                raise ValueError(f"poll_ms {self.poll_ms:g} feeds the watchdog too rarely: keep "
                                 f"it below a third of watchdog_s ({self.watchdog_s:g} s)")
        if self.failsafe_current_a is not None and p.failsafe_current is None:
            raise ValueError(f"profile {p.name!r} has no fail-safe current register: remove "
                             "failsafe_current_a (check-config says what the wallbox does "
                             "when the agent goes silent)")
        gap_ms = p.min_gap_s * 1000
        if self.poll_ms < 2 * gap_ms:
            raise ValueError(f"poll_ms {self.poll_ms:g} leaves no room between the profile's "
                             f"{gap_ms:g} ms gaps for a limit write: use at least {2 * gap_ms:g}")
        return self

    def resolve(self) -> WallboxProfile:
        """The profile data (built-in, or built from ``custom``)."""
        if self.custom is not None:
            with driver_config_as_config_error():
                return profile_from_config(self.custom.model_dump(), key="wallbox.custom")
        return PROFILES[self.profile]

    def has_energy_register(self) -> bool:
        return self.resolve().energy is not None


class WallboxConnectorConfig(_ConnectorBase):
    """An existing wallbox driven over RS-485 (``hardware: wallbox``, retrofit.md): it runs its
    own pilot and contactor; the agent sets its current and reads its state and energy."""

    hardware: Literal["wallbox"]
    wallbox: WallboxConfig
    # energy from a separate meter on the bus, for a profile without an energy register
    meter: MeterConfig | None = None

    @model_validator(mode="after")
    def _energy_source(self) -> WallboxConnectorConfig:
        if self.meter is None and not self.wallbox.has_energy_register():
            raise ValueError(f"wallbox profile {self.wallbox.profile!r} has no energy register: "
                             "add a meter (any meter model) on the bus for session energy")
        return self
