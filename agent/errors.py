"""One error tree for the whole agent.

Foreign exceptions (pymodbus, pyserial, aiomqtt, pydantic, sqlite3, OSError) are converted at the
boundary where they enter our code, with ``raise ... from exc``, so a caller only ever needs to
catch one of these, or the driver family (``drivers.errors``, re-exported here; drivers do not
import the agent, so ``DriverError`` is not an ``AgentError``)::

    AgentError                      base; never raised directly
    ├── ConfigError                 the configuration is wrong (names the key and the fix)
    ├── LinkError                   the MQTT link (broker unreachable, refused, TLS)
    ├── StoreError                  local durable state (disk full, corrupt file); one per store:
    │   ├── JournalError            the outbox journal (journal.db)
    │   ├── LedgerError             the session ledger (sessions.db)
    │   ├── CommandStoreError       command dedupe and issuer marks (commands.db)
    │   └── LimitsStoreError        the installer's limits (local-limits.json)
    └── ProtocolError               a peer sent something we refuse (bad command, bad frame)
    DriverError (drivers.errors)    a device on a bus did not do what was asked
    ├── DriverIOError               the port vanished, a frame was garbled, CRC error, wrong length
    ├── DriverTimeoutError          no answer within the timeout (also a builtin TimeoutError)
    └── ModbusExceptionError        the device answered with a Modbus exception response
    DriverConfigError               a driver's settings are wrong (``ConfigError.from_driver``)

Each error says whose fault it is (``remote``: the peer or the device; otherwise ours or the
installer's), as h11 does, so logs and replies can tell "your command was bad" from "we failed".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from drivers.errors import (
    DriverConfigError,
    DriverError,
    DriverIOError,
    DriverTimeoutError,
    ModbusExceptionError,
)


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

    @classmethod
    def from_driver(cls, exc: DriverConfigError) -> ConfigError:
        """The agent's form of a driver's settings error (same key, message and fix)."""
        return cls(exc.message, key=exc.key, fix=exc.fix)

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        hint = f" -> {self.fix}" if self.fix else ""
        return f"{where}{super().__str__()}{hint}"


@contextmanager
def driver_config_as_config_error() -> Iterator[None]:
    """Where the agent builds a driver from its config: a ``DriverConfigError`` becomes the
    ``ConfigError`` the CLI and check-config report (exit code 2, same key and fix)."""
    try:
        yield
    except DriverConfigError as exc:
        raise ConfigError.from_driver(exc) from exc


class LinkError(AgentError):
    """The MQTT link failed (unreachable, refused, TLS, timeout)."""

    remote = True


class StoreError(AgentError):
    """Local durable state failed (disk full, corrupt database, read-only state directory);
    ``context['cause']`` says which (``disk_full``, ``corrupt``, ``readonly``, ``io``, ...)."""


class JournalError(StoreError):
    """The outbox journal failed."""


class LedgerError(StoreError):
    """The session ledger failed."""


class CommandStoreError(StoreError):
    """The command store (dedupe, issuer high-water marks) failed."""


class LimitsStoreError(StoreError):
    """The installer's limits could not be stored."""


class ProtocolError(AgentError):
    """A peer sent something we refuse; ``reason`` is a stable reason code of the API."""

    remote = True

    def __init__(self, message: str, *, reason: str, **context: object) -> None:
        super().__init__(message, **context)
        self.reason = reason


__all__ = ["AgentError", "CommandStoreError", "ConfigError", "DriverConfigError", "DriverError",
           "DriverIOError", "DriverTimeoutError", "JournalError", "LedgerError", "LimitsStoreError",
           "LinkError", "ModbusExceptionError", "ProtocolError", "StoreError",
           "driver_config_as_config_error"]
