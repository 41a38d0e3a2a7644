"""Fixes to pymodbus 3.16.1 that the simulated bus needs (../shared/research/stack.md section 3).

``ignore_missing_devices=True`` has no effect in 3.16.1: ``SimCore.__get_device`` raises
``KeyError`` instead of ``NoSuchIdException``, so a request to an absent unit id is answered
with exception 04 instead of silence. A real RS-485 line stays silent (an extra answer would
collide with the device that owns the id), so the rig patches it. Idempotent.
"""

from __future__ import annotations

from typing import Any

import pymodbus
from pymodbus.exceptions import NoSuchIdException
from pymodbus.simulator.simcore import SimCore

_PATCHED_ATTR = "_evse_hil_missing_devices_patch"


def patch_ignore_missing_devices() -> None:
    """Make a missing unit id raise ``NoSuchIdException`` (the server then stays silent)."""
    if pymodbus.__version__ != "3.16.1":
        raise RuntimeError(f"patch written for pymodbus 3.16.1, found {pymodbus.__version__}")
    if getattr(SimCore, _PATCHED_ATTR, False):
        return
    original = SimCore._SimCore__get_device  # type: ignore[attr-defined]

    def get_device(self: Any, dev_id: int) -> Any:
        if dev_id in self.devices or 0 in self.devices:
            return original(self, dev_id)
        raise NoSuchIdException(f"device_id {dev_id}")

    SimCore._SimCore__get_device = get_device  # type: ignore[attr-defined]
    setattr(SimCore, _PATCHED_ATTR, True)
