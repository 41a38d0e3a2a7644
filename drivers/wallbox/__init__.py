"""Retrofitted wallboxes: profiles as data, one driver for all of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.errors import DriverConfigError
from drivers.wallbox.custom import profile_from_config
from drivers.wallbox.profiles import (
    EVSE_WB_DIN,
    HEIDELBERG,
    PHOENIX_EV_CC,
    PROFILES,
    WallboxProfile,
)

__all__ = ["EVSE_WB_DIN", "HEIDELBERG", "PHOENIX_EV_CC", "PROFILES", "WallboxProfile",
           "profile_from_config", "resolve_profile"]


def resolve_profile(name: str, custom: Mapping[str, Any] | None = None) -> WallboxProfile:
    """The profile a connector's ``wallbox.profile`` names (``custom``: from ``wallbox.custom``)."""
    if name == "custom":
        if custom is None:
            raise DriverConfigError("profile 'custom' needs wallbox.custom", key="wallbox.custom")
        return profile_from_config(custom)
    try:
        return PROFILES[name]
    except KeyError:
        raise DriverConfigError(f"unknown wallbox profile {name!r}", key="wallbox.profile",
                          fix=f"one of {', '.join(sorted(PROFILES))}, or custom") from None
