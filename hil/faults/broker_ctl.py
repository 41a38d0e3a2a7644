"""A private mosquitto for the fault matrix, and the subscriber that checks for lost data.

Why here and not ``tests/broker.py``: hil code must not import tests. The broker listens on a free
loopback port (never 1883), keeps config and log in its own directory, and is stopped or killed
by its PID only. ``refuse_anonymous=True`` makes it refuse a client without credentials (the
"broker refuses the client" case); ``restart()`` reuses the same port.

``Subscriber`` records every ``evt``/``tel`` of the device and judges the stream the way an
aggregator must: dedupe by ``seq``, then the numbers must be contiguous, and ``sessionEnded``
records dedupe by ``sessionId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from hil.broker import HOST, _accepts, free_port, mosquitto_binary


def _passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd") or shutil.which(
        "mosquitto_passwd", path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise RuntimeError("mosquitto_passwd not found (Debian package mosquitto)")
    return found


class Mosquitto:
    """One mosquitto process started (and stopped, by PID) by this object."""

    def __init__(self, workdir: Path, *, refuse_anonymous: bool = False,
                 users: dict[str, str] | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto not found: run `make mosquitto`")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.refuse_anonymous = refuse_anonymous
        self.users = users or {}
        self.password_path = workdir / "passwords"
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'false' if self.refuse_anonymous else 'true'}",
            f"user {getpass.getuser()}",
            "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
            "max_queued_messages 100000", "persistence false",
            f"listener {self.port} {self.host}",
        ]
        if self.users:
            self.password_path.write_text("")
            for user, password in self.users.items():
                subprocess.run([_passwd_binary(), "-b", str(self.password_path), user, password],
                               check=True, capture_output=True)
            lines.append(f"password_file {self.password_path}")
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self._proc.returncode})")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not listen on {self.port}")
            time.sleep(0.02)

    def reconfigure(self, *, refuse_anonymous: bool) -> None:
        """New access rules, applied by a reload (SIGHUP): connected clients stay."""
        self.refuse_anonymous = refuse_anonymous
        self.write_config()
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL by PID (a crashed broker: no clean goodbye to the clients)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5.0)


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
        deadline = time.monotonic() + limit_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True
