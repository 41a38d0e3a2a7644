"""status.json: written off the event loop (on a thread), still whole and current, real files."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import yaml

from agent.config import parse_config
from agent.shell.app import AgentApp, write_status

REPO = Path(__file__).resolve().parents[2]


def _app(tmp_path: Path) -> AgentApp:
    data = yaml.safe_load((REPO / "config" / "evse-agent.example.yaml").read_text())
    data["mqtt"] = None
    data["state_dir"] = str(tmp_path)
    return AgentApp(parse_config(data, source="test"))


async def _status(path: Path, want: Any) -> dict[str, Any]:
    """The file once it shows ``want(data)`` (a guard against hanging, not a timing test)."""
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(OSError, ValueError):  # not written yet
                data: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
                if want(data):
                    return data
            await asyncio.sleep(0.02)


async def test_the_status_file_is_written_from_a_thread_and_follows_the_agent(
        tmp_path: Path) -> None:
    app = _app(tmp_path)
    path = app.config.status_path()
    task = asyncio.get_running_loop().create_task(app._status_writer())
    try:
        first = await _status(path, lambda d: True)
        assert first["deviceId"] == app.config.device_id and first["ready"] is False
        app.ready = True  # the next write shows it: the file is current, not a start-up copy
        assert (await _status(path, lambda d: d["ready"]))["ready"] is True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not path.with_suffix(".tmp").exists()  # replaced atomically, nothing left behind


def test_write_status_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text('{"old": true, "padding": "' + "x" * 4096 + '"}')
    write_status(path, '{"new": true}')
    assert json.loads(path.read_text()) == {"new": True}
