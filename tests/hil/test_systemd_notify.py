"""sd_notify: READY=1 only once the buses answer; WATCHDOG=1 only while the control loops run."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from agent.shell.app import AgentApp
from agent.shell.wiring import make_bus, make_controller
from hil.rig import Rig

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "evse-agent.example.yaml"
pytestmark = pytest.mark.hil


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    short = tempfile.mkdtemp(prefix="sdn", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(short, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(short)


async def _collect(sock: socket.socket, seconds: float) -> list[str]:
    got: list[str] = []
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        try:
            got.extend(sock.recv(4096).decode().splitlines())
        except BlockingIOError:
            await asyncio.sleep(0.02)
    return got


async def test_ready_only_after_the_boards_answer_then_watchdog(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    async with Rig(load_config(EXAMPLE), tmp_path / "run") as rig:
        rig.inject("port_vanish", "control")  # the control bus adapter is unplugged at boot
        env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
        log = (tmp_path / "agent.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli", "run", "-c", str(rig.write_patched_config()),
            stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            before = await _collect(sock, 3.0)
            assert "READY=1" not in before, before  # no READY while the boards are silent
            rig.inject("port_vanish", False)
            after = await _collect(sock, 4.0)
            assert "READY=1" in after, after
            ready_at = after.index("READY=1")
            assert after[ready_at + 1:].count("WATCHDOG=1") >= 5, after
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
            log.close()


async def test_no_watchdog_while_the_control_loops_stand_still(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    config = load_config(EXAMPLE)
    app = AgentApp(config)
    buses = {name: make_bus(name, cfg) for name, cfg in config.buses.items()}  # never started
    ctl = make_controller(config, config.connectors[0], buses)
    app._controllers = {ctl.id: ctl}
    task = asyncio.create_task(app._watchdog())
    try:
        stalled = await _collect(sock, 0.6)  # the loop makes no cycles
        assert "WATCHDOG=1" not in stalled
        for _ in range(8):  # now it does
            ctl.stats.cycles += 1
            await asyncio.sleep(0.06)
        progressing = await _collect(sock, 0.1)
        assert "WATCHDOG=1" in stalled + progressing
    finally:
        task.cancel()
