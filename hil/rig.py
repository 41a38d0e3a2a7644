"""The HIL rig: every device an ``AgentConfig`` names, simulated on virtual serial ports.

``async with Rig(config, run_dir) as rig`` starts the simulation in a process of its own
(``hil.rigd``; our boards, meter and EV per ``hil.simrig_boards``, or a retrofitted wallbox per
``hil.simrig_wallbox``), so the driving process's garbage collector and CPU cannot stall it. The
rig process creates the pty links ``<run_dir>/tty-<bus>``; the agent (its own process) opens
them. The rig writes ``<run_dir>/agent.yaml``: the config with ports replaced by the links and
``state_dir`` moved into the run directory.

Calls are synchronous and answered before they return: after ``rig.ev_action("plug_in")`` the
boards already show the vehicle. ``rig.timeline`` is a copy of the rig's record that brings
itself up to date on every query. Times are rig seconds (``time.monotonic()``, one clock for
every process of the machine, minus the rig's start).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from agent.config import AgentConfig
from hil.report import Event, Timeline
from hil.simrig import RigOptions, patched_config

__all__ = ["Rig", "RigError", "RigOptions"]
START_TIMEOUT_S = 30.0


class RigError(RuntimeError):
    """The rig process failed or went away."""


class _ForkServer:
    """``python -m hil.rigd``: one per driving process, started on first use."""

    _instance: _ForkServer | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-m", "hil.rigd", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()

    @classmethod
    def get(cls) -> _ForkServer:
        with cls._guard:
            server = cls._instance
            if server is None or server.owner != os.getpid() or server.proc.poll() is not None:
                server = cls._instance = _ForkServer()
                atexit.register(server.close)
            return server

    def spawn(self) -> tuple[socket.socket, int]:
        ours, theirs = socket.socketpair()
        with self.lock:
            socket.send_fds(self.sock, [b"R"], [theirs.fileno()])
            theirs.close()
            data = b""
            while len(data) < 4:
                chunk = self.sock.recv(4 - len(data))
                if not chunk:
                    raise RigError("the rig fork server went away")
                data += chunk
        return ours, struct.unpack("!i", data)[0]

    def close(self) -> None:
        self.sock.close()  # the server sees EOF and exits
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class RigTimeline(Timeline):
    """The rig's timeline, copied incrementally from the rig process on every query."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(time.monotonic())
        self._rig = rig

    def sync(self) -> None:
        if not self._rig.running:
            return
        got = self._rig.call("events", len(self._events))
        with self._lock:
            self._events.extend(Event(t, kind, data) for t, kind, data in got["events"])
            self.frame_counts.clear()
            self.frame_counts.update(got["frame_counts"])

    def add(self, kind: str, t_abs: float, **data: Any) -> Event:
        """Recorded by the rig process, so the record keeps one order."""
        if not self._rig.running:
            return super().add(kind, t_abs, **data)
        t = self._rig.call("mark", kind, t_abs, **data)
        return Event(t, kind, data)

    def events(self, kind: str | None = None, since: float | None = None,
               **match: Any) -> list[Event]:
        self.sync()
        return super().events(kind, since, **match)

    def recent(self, kind: str, since: float, **match: Any) -> Event | None:
        """The first matching event at or after ``since``, scanning back from the newest
        (cheap when polled every few ms over a long run)."""
        self.sync()
        found = None
        with self._lock:
            for e in reversed(self._events):
                if e.t < since:
                    break
                if e.kind == kind and all(e.data.get(k) == v for k, v in match.items()):
                    found = e
        return found


class Rig:
    """The client of one rig process; see the module docstring."""

    def __init__(self, config: AgentConfig, run_dir: str | Path, *,
                 options: RigOptions | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir).resolve()
        self.options = options or RigOptions()
        self.kind = "wallbox" if config.wallbox_connectors() else "boards"
        self.clock = time.monotonic
        self.timeline = RigTimeline(self)
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._lock = threading.Lock()

    # --- paths -----------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    @property
    def patched_config_path(self) -> Path:
        return self.run_dir / "agent.yaml"

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "control.sock"

    def link(self, bus: str) -> Path:
        return self.run_dir / f"tty-{bus}"

    def patched_config(self) -> dict[str, Any]:
        return patched_config(self.config, self.run_dir)

    def write_patched_config(self) -> Path:
        path = self.patched_config_path
        path.write_text(yaml.safe_dump(self.patched_config(), sort_keys=False))
        return path

    # --- life cycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._sock is not None

    async def start(self) -> Rig:
        await asyncio.to_thread(self._start)
        return self

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.write_patched_config()
        self._sock, self.pid = _ForkServer.get().spawn()
        self._sock.settimeout(START_TIMEOUT_S)
        self._reader = self._sock.makefile("rb")
        try:
            got = self.call("start", config=self.config.model_dump(mode="json"),
                            run_dir=str(self.run_dir), options=dataclasses.asdict(self.options))
        except BaseException:
            self._drop(kill=True)
            raise
        self.timeline.t0 = got["t0"]

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        if self._sock is None:
            return
        try:
            self.timeline.sync()
            self.call("stop")
            self._drop(kill=False)
        except (OSError, RigError):
            self._drop(kill=True)

    def _drop(self, *, kill: bool) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None
        if kill and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def __aenter__(self) -> Rig:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def call(self, op: str, *args: Any, **kw: Any) -> Any:
        """One request to the rig process, answered before this returns."""
        with self._lock:
            if self._sock is None or self._reader is None:
                raise RigError(f"{op}: the rig is not running")
            try:
                self._sock.sendall(json.dumps({"op": op, "args": args, "kw": kw}).encode()
                                   + b"\n")
                line = self._reader.readline()
            except OSError as exc:
                raise RigError(f"{op}: the rig process failed ({exc})") from exc
        if not line:
            raise RigError(f"{op}: the rig process went away")
        reply = json.loads(line)
        if "err" in reply:
            kind = {"ValueError": ValueError, "KeyError": KeyError}.get(reply["err"], RigError)
            raise kind(f"{reply['msg']}" if kind is not RigError
                       else f"{reply['err']}: {reply['msg']}")
        return reply["ok"]

    # --- the hardware ----------------------------------------------------------------------

    def now(self) -> float:
        """Rig time: seconds since the rig started (the timeline's time base)."""
        return self.timeline.rel(self.clock())

    def ev_action(self, name: str, connector: int | None = None, **kw: Any) -> float:
        """Do something to the vehicle (plug_in, unplug, close_s2, open_s2, ...); the rig
        time at which the hardware changed."""
        t: float = self.call("ev_action", name, connector, **kw)
        return t

    def inject(self, name: str, value: Any = True, connector: int | None = None) -> float:
        """Inject (truthy ``value``) or clear (``False``/``None``) a fault (``hil.simrig``,
        ``hil.simrig_boards``, ``hil.simrig_wallbox``); the rig time it took effect."""
        t: float = self.call("inject", name, value, connector)
        return t

    def probe(self, connector: int | None = None) -> dict[str, Any]:
        """What the hardware shows now: duty, offered_a, pwm_on, cp_v, current_a, contactor,
        lock, plugged, s2_closed, energy_wh (a wallbox adds failsafe, memory, watchdog_s)."""
        got: dict[str, Any] = self.call("probe", connector)
        return got

    def offered_a(self, connector: int | None = None) -> float:
        """Current the pilot advertises now (0 without PWM)."""
        return float(self.probe(connector)["offered_a"])

    def contactor_closed(self, connector: int | None = None) -> bool:
        return bool(self.probe(connector)["contactor"])

    def connector(self, connector_id: int | None = None) -> ConnectorView:
        ids = sorted(c.id for c in self.config.connectors)
        cid = ids[0] if connector_id is None else connector_id
        config = next(c for c in self.config.connectors if c.id == cid)
        return ConnectorView(self, cid, config)

    @property
    def ev(self) -> EvView:
        return self.connector().ev


@dataclasses.dataclass(frozen=True)
class ConnectorView:
    """One connector's simulated hardware, read from the rig process on each access."""

    rig: Rig
    id: int
    config: Any

    def probe(self) -> dict[str, Any]:
        return self.rig.probe(self.id)

    @property
    def ev(self) -> EvView:
        return EvView(self.rig, self.id)

    @property
    def energy_wh(self) -> float:
        """What the rig integrated into the meter's import register."""
        return float(self.probe()["energy_wh"])

    @property
    def memory(self) -> dict[str, int]:
        """A wallbox's holding registers by name."""
        memory: dict[str, int] = self.probe()["memory"]
        return memory

    def failsafe_active(self) -> bool:
        return bool(self.probe()["failsafe"])

    def watchdog_s(self) -> float:
        return float(self.probe()["watchdog_s"])


@dataclasses.dataclass(frozen=True)
class EvView:
    rig: Rig
    connector: int

    def current_a(self) -> float:
        return float(self.rig.probe(self.connector)["current_a"])

    @property
    def plugged(self) -> bool:
        return bool(self.rig.probe(self.connector)["plugged"])

    @property
    def s2_closed(self) -> bool:
        return bool(self.rig.probe(self.connector)["s2_closed"])
