"""An MQTT client that records everything on its topics: the test's eyes on the broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hil.poll import wait_until


class Recorder:
    """An MQTT client that records everything on ``topics`` (the test's eyes on the broker).

    ``session=True`` keeps a persistent session (clean start off, 1 h expiry) under a fixed
    identifier, so messages published while it is away are queued for it by the broker.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Sequence[str],
        *,
        v5: bool = True,
        identifier: str | None = None,
        session: bool = False,
    ) -> None:
        self.host, self.port, self.topics = host, port, list(topics)
        self.v5 = v5
        self.identifier = identifier
        self.session = session
        self.messages: list[aiomqtt.Message] = []
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    def _make(self) -> aiomqtt.Client:
        kwargs: dict[str, object] = {}
        if self.session and self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            kwargs.update(clean_start=False, properties=props)
        elif self.session:
            kwargs.update(clean_session=False)
        return aiomqtt.Client(
            self.host, self.port, identifier=self.identifier, timeout=5,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            **kwargs,  # type: ignore[arg-type]
        )

    async def connect(self) -> Recorder:
        self.client = self._make()
        await self.client.__aenter__()
        if self.topics:
            await self.client.subscribe([(t, 1) for t in self.topics])
        self._task = asyncio.create_task(self._collect(self.client))
        return self

    async def _collect(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                self.messages.append(message)
        except aiomqtt.MqttError:
            pass  # the broker went away; reconnect() if the test wants more

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.__aexit__(None, None, None)
        self.client, self._task = None, None

    async def reconnect(self, limit_s: float = 10.0) -> None:
        await self.close()
        deadline = time.monotonic() + limit_s
        while True:
            try:
                await self.connect()
                return
            except aiomqtt.MqttError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def __aenter__(self) -> Recorder:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.value == topic]

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(topic) if m.payload]

    async def wait_for(
        self, predicate: Callable[[], bool], limit_s: float = 15.0, what: str = "condition"
    ) -> None:
        await wait_until(predicate, limit_s, f"{what}; recorded {len(self.messages)} messages")

    async def publish(self, topic: str, payload: bytes, **kwargs: object) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1, **kwargs)  # type: ignore[arg-type]
