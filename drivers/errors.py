"""The drivers' own error tree: what a device on a bus, or a driver's settings, got wrong.

Drivers know nothing of the agent (nothing in ``drivers/`` imports ``agent``), so they raise
these; the agent catches them as they are (``agent.errors`` re-exports the driver family) and
maps ``DriverConfigError`` to its ``ConfigError`` at the few places it builds drivers::

    DriverError                     a device did not do what was asked (``bus``/``unit`` locate it)
    ├── DriverIOError               the port vanished, a frame was garbled, CRC error, wrong length
    ├── DriverTimeoutError          no answer within the timeout (also a builtin TimeoutError)
    └── ModbusExceptionError        the device answered with a Modbus exception response
    DriverConfigError               a driver's settings are wrong (a ValueError; ``key``, ``fix``)

``message`` and ``context`` (keyword details) are kept apart so logs can put them in fields.
"""

from __future__ import annotations


class DriverError(Exception):
    """A device did not do what was asked. ``bus`` and ``unit`` locate it; ``remote``: the
    device's fault, not ours (as h11 tells a peer's error from its own)."""

    remote: bool = True

    def __init__(self, message: str, *, bus: str = "", unit: int = 0, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, object] = dict(context)
        self.bus = bus
        self.unit = unit

    def __str__(self) -> str:
        where = f"[{self.bus}/{self.unit}] " if self.bus else ""
        extra = ", ".join(f"{k}={v!r}" for k, v in self.context.items())
        return f"{where}{self.message} ({extra})" if extra else f"{where}{self.message}"


class DriverIOError(DriverError):
    """The transport failed: port gone, garbled or short frame, CRC error, wrong count."""


class DriverTimeoutError(DriverError, TimeoutError):
    """No (valid) answer within the configured timeout."""


class ModbusExceptionError(DriverError):
    """The device answered with a Modbus exception response (e.g. 02 illegal address)."""

    def __init__(
        self, message: str, *, exception_code: int, bus: str = "", unit: int = 0, **context: object
    ) -> None:
        super().__init__(message, bus=bus, unit=unit, exception_code=exception_code, **context)
        self.exception_code = exception_code


class DriverConfigError(ValueError):
    """A driver's settings (a meter map, a wallbox profile) are wrong: ``key`` names the config
    key, ``fix`` what to change. A ValueError, so a pydantic validator reports it as such."""

    remote: bool = False

    def __init__(self, message: str, *, key: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.fix = fix

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        hint = f" -> {self.fix}" if self.fix else ""
        return f"{where}{self.message}{hint}"


__all__ = ["DriverConfigError", "DriverError", "DriverIOError", "DriverTimeoutError",
           "ModbusExceptionError"]
