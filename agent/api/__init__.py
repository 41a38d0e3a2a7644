"""The aggregator-facing API (MQTT API v1): models, envelope checks, signatures, generated docs.

Pure: nothing here does I/O except ``agent.api.schemas`` when run as a program.

The names below are loaded on first use (PEP 562): importing ``agent.api.reasons`` must not build
the pydantic models, and nothing here imports cryptography until a signature is checked or made.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.api.envelope import (
        CommandStore,
        EnvelopeChecker,
        MemoryCommandStore,
        Verdict,
        content_hash,
        decode_json,
        parse_command,
        parse_command_with_source,
    )
    from agent.api.jws import canonical_json, sign_envelope, verify_envelope
    from agent.api.models import API_VERSION, MAX_PAYLOAD_BYTES, Command, Event, Reply, encode
    from agent.api.reasons import OptOutReason, Reason, ReplyStatus, StopReason

_HOMES = {
    "agent.api.envelope": ("CommandStore", "EnvelopeChecker", "MemoryCommandStore", "Verdict",
                           "content_hash", "decode_json", "parse_command",
                           "parse_command_with_source"),
    "agent.api.jws": ("canonical_json", "sign_envelope", "verify_envelope"),
    "agent.api.models": ("API_VERSION", "MAX_PAYLOAD_BYTES", "Command", "Event", "Reply", "encode"),
    "agent.api.reasons": ("OptOutReason", "Reason", "ReplyStatus", "StopReason"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "API_VERSION",
    "MAX_PAYLOAD_BYTES",
    "Command",
    "CommandStore",
    "EnvelopeChecker",
    "Event",
    "MemoryCommandStore",
    "OptOutReason",
    "Reason",
    "Reply",
    "ReplyStatus",
    "StopReason",
    "Verdict",
    "canonical_json",
    "content_hash",
    "decode_json",
    "encode",
    "parse_command",
    "parse_command_with_source",
    "sign_envelope",
    "verify_envelope",
]


if not TYPE_CHECKING:  # mypy sees the imports above; at run time each name loads on first use

    def __getattr__(name: str) -> Any:
        module = _HOME_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
