"""The one builder of command envelopes for tests, benchmarks, the fault matrix and the demo.

A fresh id, ``issuedAt`` now and a ``seq`` that increases across the process and starts above
any earlier run's (milliseconds since the epoch), so a restarted agent's replay guard accepts it.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ISSUER = "agg-1"
_seq = itertools.count(int(datetime.now(UTC).timestamp() * 1000))


def iso(dt: datetime) -> str:
    """The contract's timestamp form: UTC, milliseconds, ``Z``."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso(offset_s: float = 0.0) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=offset_s))


def next_seq() -> int:
    return next(_seq)


def envelope(type_: str, body: Mapping[str, Any], *, connector: int | None = None,
             issuer: str = ISSUER, key: Ed25519PrivateKey | None = None,
             expires_s: float | None = None, **fields: Any) -> dict[str, Any]:
    """A command envelope; ``fields`` override id/issuedAt/seq/expiresAt; ``key`` signs it."""
    env: dict[str, Any] = {"v": 1, "id": f"c-{uuid.uuid4().hex[:16]}", "type": type_,
                           "issuer": issuer, "issuedAt": now_iso(), "seq": next_seq(),
                           "body": dict(body)}
    if expires_s is not None:
        env["expiresAt"] = now_iso(expires_s)
    if connector is not None:
        env["connector"] = connector
    env.update(fields)
    if key is not None:
        from agent.api.jws import sign_envelope  # only signed envelopes need the JWS code

        env["sig"] = sign_envelope(env, key)
    return env


def encode(env: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes, as an aggregator publishes them."""
    return json.dumps(env, separators=(",", ":")).encode()
