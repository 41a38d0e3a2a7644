"""A rig on the example config, with pymodbus clients playing the agent on its pty links."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient

from agent.config import load_config
from hil.rig import Rig, RigOptions

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "config" / "evse-agent.example.yaml"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config = load_config(EXAMPLE_CONFIG)
    async with Rig(config, tmp_path / "run", options=RigOptions()) as started:
        yield started


@pytest.fixture
async def control(rig: Rig) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(str(rig.link("control")), baudrate=115200, timeout=0.5,
                                     retries=0)
    assert await client.connect()
    yield client
    client.close()


@pytest.fixture
async def meter_client(rig: Rig) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(str(rig.link("meter")), baudrate=9600, timeout=0.5,
                                     retries=0)
    assert await client.connect()
    yield client
    client.close()
