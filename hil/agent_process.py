"""The agent under test as a child process: started, waited for, stopped by its PID only.

``[sys.executable, "-m", "agent.cli", "run", "-c", <config>]`` with its JSON log in a file;
``wait_ready`` polls the log for ``agent_ready``. Tests, benchmarks, the fault matrix and the
scenario runner all use this one. The process gets the ``Environment=`` settings of the shipped
systemd unit (``unit_environment``), so the bench measures the agent as it runs in the product
(e.g. ``MALLOC_ARENA_MAX=1``: the unit's one malloc arena is part of the P3 footprint).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
UNIT_PATH = REPO_ROOT / "systemd" / "evse-agent.service"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def unit_environment(unit: Path = UNIT_PATH) -> dict[str, str]:
    """The ``Environment=`` assignments of a systemd unit (quoted words as systemd splits them)."""
    env: dict[str, str] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "Environment":
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                env[name] = val
    return env


class AgentProcess:
    """The agent under test, a child process this object started and stops by PID."""

    def __init__(self, config_path: Path, log_path: Path, *, cwd: Path = REPO_ROOT) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "agent.cli", "run", "-c", str(self.config_path)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd,
                                         env={**os.environ, **unit_environment()})

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"agent exited (code {code}) before agent_ready:\n"
                                   + self.log_tail())
            if any(e.get("event") == "agent_ready" for e in self.log_events()):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no agent_ready within {timeout_s} s:\n" + self.log_tail())

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        out.append(obj)
        return out

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        return self.proc.returncode
