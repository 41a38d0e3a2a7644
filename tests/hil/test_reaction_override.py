"""A schedule check-config refuses runs only with ``safety.accept_reaction_bound_over_budget``:
the agent warns at every start and says so in ``status`` (text, --json) and status.json."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.busplan import analyse
from agent.config import parse_config
from hil.agent_process import AgentProcess
from hil.bench.common import single_bus_data
from hil.rig import Rig

pytestmark = pytest.mark.hil
WARNING = "reaction_bound_over_budget_accepted"


async def _cli(*args: str) -> tuple[int, str]:
    """The real CLI as a child process, awaited so the rig's loop keeps serving the boards."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", *args, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """NOTIFY_SOCKET for the agents this test starts: what `systemctl status` would show."""
    short = tempfile.mkdtemp(prefix="sdn", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(short, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    os.unlink(path)
    os.rmdir(short)


def _notified(sock: socket.socket) -> list[str]:
    lines: list[str] = []
    with contextlib.suppress(BlockingIOError):
        while True:
            lines.extend(sock.recv(4096).decode().splitlines())
    return lines


async def _status_file(path: Path) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            try:
                data: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
                if data.get("ready"):
                    return data
            except (OSError, ValueError):
                pass
            await asyncio.sleep(0.1)


async def test_override_runs_warns_at_every_start_and_shows_in_status(
        tmp_path: Path, notify_socket: socket.socket) -> None:
    data = single_bus_data(19200)  # boards and meter on one 19200-baud bus
    assert data["safety"]["accept_reaction_bound_over_budget"] is True
    refused = copy.deepcopy(data)
    refused["safety"]["accept_reaction_bound_over_budget"] = False
    assert analyse(parse_config(refused)).refused  # without the key run would exit 3
    config = parse_config(data)
    bound = analyse(config).connectors[0].bound_ms
    async with Rig(config, tmp_path / "run") as rig:
        cfg = str(rig.write_patched_config())
        for start in range(2):
            agent = AgentProcess(Path(cfg), tmp_path / f"agent-{start}.log")
            agent.start()
            try:
                await agent.wait_ready()
                warned = [e for e in agent.log_events() if e.get("event") == WARNING]
                assert len(warned) == 1 and warned[0]["level"] == "warning", start
                assert warned[0]["setting"] == "safety.accept_reaction_bound_over_budget"
                status = [x for x in _notified(notify_socket) if x.startswith("STATUS=")]
                assert any("WARNING reaction bound over budget" in x for x in status), status

                code, text = await _cli("status", "-c", cfg)
                assert code == 0, text
                assert "WARNING reaction bound" in text
                assert "safety.accept_reaction_bound_over_budget" in text
                code, raw = await _cli("status", "--json", "-c", cfg)
                assert code == 0, raw
                shown = json.loads(raw)["reactionBound"]
                assert shown["overBudgetAccepted"] is True
                assert shown["boundMs"] == {"1": bound} and bound > shown["budgetMs"]
                assert any("exceeds the 100 ms budget" in r for r in shown["reasons"])

                on_disk = await _status_file(rig.state_dir / "status.json")
                assert on_disk["reactionBound"]["overBudgetAccepted"] is True
            finally:
                assert agent.stop() is not None
            await asyncio.to_thread((rig.state_dir / "status.json").unlink, missing_ok=True)


async def test_a_schedule_within_budget_shows_no_override(rig: Rig, tmp_path: Path) -> None:
    agent = AgentProcess(rig.write_patched_config(), tmp_path / "agent.log")
    agent.start()
    try:
        await agent.wait_ready()
        assert not any(e.get("event") == WARNING for e in agent.log_events())
        code, raw = await _cli("status", "--json", "-c", str(rig.patched_config_path))
        assert code == 0, raw
        shown = json.loads(raw)["reactionBound"]
        assert shown["overBudgetAccepted"] is False and shown["reasons"] == []
        code, text = await _cli("status", "-c", str(rig.patched_config_path))
        assert code == 0 and "WARNING" not in text
    finally:
        agent.stop()
