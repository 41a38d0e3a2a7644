"""Shared fixtures: a private mosquitto per test (plain, or with a mutual-TLS listener).

    async def test_x(broker):             # broker.host, broker.port, broker.stop()/start()/kill()
    async def test_y(tls_broker):         # + tls_broker.tls_port, tls_broker.pki.{ca_cert, client}
    def test_z(mosquitto_factory):        # mosquitto_factory(persistence=True, extra_config=[...])
    async def test_l(broker, link_factory):  # h = await link_factory(broker.host, broker.port)

Skipped with a reason when the mosquitto binary is missing (``make test`` installs it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.link import CommandMessage, Link, LinkSettings, MemoryOutbox, Reply
from hil.broker import Mosquitto, mosquitto_binary
from hil.pki import make_pki
from hil.poll import wait_until

MOSQUITTO_MISSING = "mosquitto binary not found: run `make mosquitto` (apt-get install mosquitto)"


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start brokers with custom options; all are stopped (by PID) after the test."""
    if mosquitto_binary() is None:
        pytest.skip(MOSQUITTO_MISSING)
    started: list[Mosquitto] = []

    def make(*, tls: bool = False, **kwargs: Any) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(started)}"
        pki = make_pki(workdir / "pki") if tls else None
        broker = Mosquitto(workdir, pki=pki, **kwargs)
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.kill()


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A plain MQTT broker on a free loopback port, no persistence."""
    return mosquitto_factory()


@pytest.fixture
def tls_broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """Plain listener on ``port`` and a ``require_certificate`` TLS listener on ``tls_port``."""
    return mosquitto_factory(tls=True)


# --- the MQTT link under test ------------------------------------------------------------------


@dataclass
class LinkHarness:
    """A running ``Link`` with an in-memory outbox and a recording command handler."""

    link: Link
    outbox: MemoryOutbox
    commands: list[CommandMessage] = field(default_factory=list)
    outages: list[float | None] = field(default_factory=list)
    disconnects: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def connects(self) -> int:
        return len(self.outages)

    async def wait_connected(self, count: int = 1, limit_s: float = 15.0) -> None:
        await wait_until(lambda: self.connects >= count and self.link.connected, limit_s,
                         f"link connection #{count}")

    def append(self, n: int, kind: str = "evt") -> None:
        for _ in range(n):
            seq = self.outbox.last_seq + 1
            self.outbox.append(kind, json.dumps({"seq": seq, "kind": kind}).encode())
        self.link.notify()

    async def stop(self) -> None:
        self.link.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


LinkFactory = Callable[..., Awaitable[LinkHarness]]


@pytest.fixture
async def link_factory() -> AsyncIterator[LinkFactory]:
    """``await link_factory(host, port, **LinkSettings overrides)``: a started link."""
    harnesses: list[LinkHarness] = []

    async def make(host: str, port: int, *, outbox: Any = None,
                   start: bool = True, with_state: bool = True,
                   state: Callable[[], dict[str, Any]] | None = None,
                   **overrides: Any) -> LinkHarness:
        settings = LinkSettings(**{
            "host": host, "port": port, "device_id": "CN-TEST-0001", "groups": ("tx-7",),
            "backoff_base_s": 0.05, "backoff_max_s": 0.5, "connect_timeout_s": 5.0,
            **overrides,
        })
        box = outbox if outbox is not None else MemoryOutbox()
        holder: list[LinkHarness] = []

        async def handler(cmd: CommandMessage) -> Reply | None:
            holder[0].commands.append(cmd)
            body = json.loads(cmd.payload)
            if body.get("id") == "raise":
                raise RuntimeError("handler bug")
            return Reply({"v": 1, "commandId": body.get("id"), "status": "accepted",
                          "reason": "OK", "deviceId": settings.device_id})

        def connected(outage: float | None) -> None:
            holder[0].outages.append(outage)

        def disconnected() -> None:
            holder[0].disconnects += 1

        link = Link(
            settings, outbox=box, on_command=handler, boot_id=f"boot-{len(harnesses)}",
            birth=lambda: {"agentVersion": "0.1.0", "connectors": [1],
                           "capabilities": {"units": ["A", "W"]}},
            state=state if state is not None else
            (lambda: {"connectors": [{"connector": 1, "pilot": "A"}]}) if with_state else None,
            on_connected=connected, on_disconnected=disconnected,
        )
        harness = LinkHarness(link, box)
        holder.append(harness)
        harnesses.append(harness)
        if start:
            harness.task = asyncio.create_task(link.run(), name="link-under-test")
        return harness

    yield make
    for harness in harnesses:
        if harness.task is None or harness.task.done():
            continue
        harness.link.stop()
        try:
            await asyncio.wait_for(harness.task, 5)
        except (TimeoutError, Exception):
            harness.task.cancel()
