"""A small scripted aggregator for the bench and the demo: sends commands, waits for replies.

It speaks the API exactly as an integrator would (mqtt-api.md): a fresh ``id`` and an increasing
``seq`` per command, ``issuedAt`` now, ``expiresAt`` a minute later, QoS 1 to ``{root}/{id}/cmd``
(or a group's topic), and the reply read from ``{root}/{id}/rsp``. Events are collected so a
report can show what the charger said it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import datetime
from typing import Any

import aiomqtt

from hil.envelope import envelope, iso

ISSUER = "demo-aggregator"


class Aggregator:
    """Use as ``async with Aggregator(host, port, device_id) as agg: await agg.send(...)``."""

    def __init__(self, host: str, port: int, device_id: str, *, root: str = "evse/v1",
                 issuer: str = ISSUER) -> None:
        self.host, self.port, self.device_id, self.root = host, port, device_id, root
        self.issuer = issuer
        self._replies: dict[str, dict[str, Any]] = {}
        self._arrived = asyncio.Condition()
        self.events: list[dict[str, Any]] = []
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Aggregator:
        self._client = aiomqtt.Client(self.host, self.port,
                                      identifier=f"{self.issuer}-{uuid.uuid4().hex[:8]}",
                                      protocol=aiomqtt.ProtocolVersion.V5)
        await self._client.__aenter__()
        base = f"{self.root}/{self.device_id}"
        await self._client.subscribe(f"{base}/rsp", qos=1)
        await self._client.subscribe(f"{base}/evt", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self._client is not None
        async for msg in self._client.messages:
            try:
                data = json.loads(bytes(msg.payload))  # type: ignore[arg-type,unused-ignore]
            except (ValueError, TypeError):
                continue
            if str(msg.topic).endswith("/rsp") and isinstance(data, dict):
                async with self._arrived:
                    self._replies[str(data.get("commandId"))] = data
                    self._arrived.notify_all()
            elif isinstance(data, dict):
                self.events.append(data)

    def envelope(self, type_: str, body: dict[str, Any], *, connector: int | None = None,
                 expires_s: float = 60.0) -> dict[str, Any]:
        return envelope(type_, body, connector=connector, issuer=self.issuer,
                        expires_s=expires_s)

    async def send(self, type_: str, body: dict[str, Any], *, connector: int | None = None,
                   group: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
        """Publish one command and return its reply (raises TimeoutError without one)."""
        assert self._client is not None
        env = self.envelope(type_, body, connector=connector)
        topic = (f"{self.root}/group/{group}/cmd" if group
                 else f"{self.root}/{self.device_id}/cmd")
        await self._client.publish(topic, json.dumps(env).encode(), qos=1)
        return await self.reply(env["id"], timeout_s)

    async def reply(self, command_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: command_id in self._replies)
            return self._replies[command_id]


def valley_profile(now: datetime, *, peak_a: float, valley_a: float, peak_s: int,
                   valley_s: int, profile_id: str = "valley-window") -> dict[str, Any]:
    """A default-layer schedule: ``peak_a`` now, ``valley_a`` after ``peak_s`` (compressed time)."""
    return {
        "profileId": profile_id, "layer": "default", "stackLevel": 1, "kind": "absolute",
        "schedule": {"unit": "A", "startAt": iso(now), "durationS": peak_s + valley_s,
                     "periods": [{"offsetS": 0, "limit": peak_a},
                                 {"offsetS": peak_s, "limit": valley_a}]},
    }
