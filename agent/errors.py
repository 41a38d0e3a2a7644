"""One error tree for the whole agent.

Foreign exceptions (pymodbus, pyserial, aiomqtt, pydantic, sqlite3, OSError) are converted at the
boundary where they enter our code, with ``raise ... from exc``, so a caller only ever needs to
catch one of these::

    AgentError                      base; never raised directly
    ├── ConfigError                 the configuration is wrong (names the key and the fix)
    ├── DriverError                 a device on a bus did not do what was asked
    │   ├── DriverIOError           the port vanished, a frame was garbled, CRC error, wrong length
    │   ├── DriverTimeoutError      no answer within the timeout (also a builtin TimeoutError)
    │   └── ModbusExceptionError    the device answered with a Modbus exception response
    ├── LinkError                   the MQTT link (broker unreachable, refused, TLS)
    ├── JournalError                the local journal (disk full, corrupt database)
    └── ProtocolError               a peer sent something we refuse (bad command, bad frame)

Each error says whose fault it is (``remote``: the peer or the device; otherwise ours or the
installer's), as h11 does, so logs and replies can tell "your command was bad" from "we failed".
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""

    remote: bool = False

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, object] = dict(context)

    def __str__(self) -> str:
        if not self.context:
            return self.message
        extra = ", ".join(f"{k}={v!r}" for k, v in self.context.items())
        return f"{self.message} ({extra})"


class ConfigError(AgentError):
    """The configuration is invalid; the message names the key and what to change."""

    def __init__(self, message: str, *, key: str = "", fix: str = "", **context: object) -> None:
        super().__init__(message, **context)
        self.key = key
        self.fix = fix
        self.problems: list[tuple[str, str, str]] = [(key, message, fix)] if key else []

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        hint = f" -> {self.fix}" if self.fix else ""
        return f"{where}{super().__str__()}{hint}"


class DriverError(AgentError):
    """A device did not do what was asked. ``bus`` and ``unit`` locate it."""

    remote = True

    def __init__(self, message: str, *, bus: str = "", unit: int = 0, **context: object) -> None:
        super().__init__(message, **context)
        self.bus = bus
        self.unit = unit

    def __str__(self) -> str:
        where = f"[{self.bus}/{self.unit}] " if self.bus else ""
        return f"{where}{super().__str__()}"


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


class LinkError(AgentError):
    """The MQTT link failed (unreachable, refused, TLS, timeout)."""

    remote = True


class JournalError(AgentError):
    """The local journal failed (disk full, corrupt database, read-only state directory)."""


class ProtocolError(AgentError):
    """A peer sent something we refuse; ``reason`` is a stable reason code of the API."""

    remote = True

    def __init__(self, message: str, *, reason: str, **context: object) -> None:
        super().__init__(message, **context)
        self.reason = reason
