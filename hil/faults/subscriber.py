"""The fault matrix's aggregator-side subscriber, which checks for lost data.

``Subscriber`` records every ``evt``/``tel`` of the device and judges the stream the way an
aggregator must: dedupe by ``seq``, then the numbers must be contiguous, and ``sessionEnded``
records dedupe by ``sessionId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from hil.poll import poll_until


@dataclass
class Subscriber:
    """The aggregator's view: every evt/tel/status of one device, with the checks on it."""

    host: str
    port: int
    device_id: str
    root: str = "evse/v1"
    username: str | None = None
    password: str | None = None
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    generation: int = 0  # successful subscriptions so far (one per broker connection)
    _task: asyncio.Task[None] | None = None
    _stop: bool = False

    async def start(self) -> Subscriber:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready), name="fault-subscriber")
        await asyncio.wait_for(ready.wait(), 10)
        return self

    async def _run(self, ready: asyncio.Event) -> None:
        base = f"{self.root}/{self.device_id}"
        while not self._stop:  # follow the broker through its restarts
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=f"faults-{id(self)}",
                                          username=self.username, password=self.password,
                                          timeout=5, clean_session=False) as client:
                    await client.subscribe([(f"{base}/evt", 1), (f"{base}/tel", 1),
                                            (f"{base}/status", 1)])
                    self.generation += 1
                    ready.set()
                    async for msg in client.messages:
                        with contextlib.suppress(ValueError):
                            kind = msg.topic.value.rsplit("/", 1)[-1]
                            self.messages.append((kind, json.loads(bytes(msg.payload or b"{}"))))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def wait_subscribed(self, after: int, limit_s: float) -> None:
        """Until a subscription newer than generation ``after`` is in place."""
        if not await self.wait_for(lambda: self.generation > after, limit_s):
            raise RuntimeError("subscriber did not reconnect to the broker")

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the aggregator's checks --------------------------------------------------------

    def by_seq(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for kind, body in self.messages:
            if kind in ("evt", "tel") and isinstance(body.get("seq"), int):
                out.setdefault(body["seq"], body)
        return out

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [b for s, b in sorted(self.by_seq().items()) if b.get("type") == type_]

    def sessions_ended(self) -> dict[str, dict[str, Any]]:
        """``sessionEnded`` bodies deduplicated by sessionId (last one wins)."""
        return {e["body"]["sessionId"]: e["body"] for e in self.events("sessionEnded")}

    def gaps(self, upto: int, above: int = 0) -> list[int]:
        """Seqs in (above, upto] that never arrived."""
        seen = self.by_seq()
        return [s for s in range(above + 1, upto + 1) if s not in seen]

    def max_seq(self) -> int:
        return max(self.by_seq(), default=0)

    async def wait_for(self, predicate: Any, limit_s: float) -> bool:
        return await poll_until(predicate, limit_s, 0.05)
