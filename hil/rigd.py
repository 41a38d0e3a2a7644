"""The rig process: the simulated hardware, out of the way of whoever drives it.

Why a process of its own: a pytest run (or a bench) is a big Python heap; its garbage collector
and CPU stalled the simulated boards for 100+ ms in the middle of tests, the agent rightly
reported them lost, and HIL tests were rerun to hide it. Real hardware does not stall when the
test bench is busy, so the simulation does not share the test's interpreter.

``python -m hil.rigd FD`` is a small fork server: it imports the simulation once, then forks one
child per rig for each file descriptor it receives on FD (``SCM_RIGHTS``), and answers with the
child's PID. A child serves one rig on its descriptor: newline-delimited JSON requests
``{"op", "args", "kw"}``, answers ``{"ok": ...}`` or ``{"err": type, "msg": ...}``; it stops the
rig and exits on ``stop`` or when the other end goes away. ``hil.rig.Rig`` is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path
from typing import Any

from agent.config import parse_config
from hil.ev import EvParams
from hil.simrig import RigOptions, SimRig
from hil.simrig_boards import BoardRig
from hil.simrig_wallbox import WallboxRig

RT_PRIORITY = 10


def build(spec: dict[str, Any]) -> SimRig:
    config = parse_config(spec["config"], source="rig")
    opts = dict(spec["options"])
    options = RigOptions(ev=EvParams(**opts.pop("ev")), **opts)
    kind = WallboxRig if config.wallbox_connectors() else BoardRig
    if kind is WallboxRig and config.board_connectors():
        raise ValueError("a rig simulates either our boards or wallboxes, not both")
    return kind(config, Path(spec["run_dir"]), options)


class Session:
    """One rig behind one socket."""

    def __init__(self) -> None:
        self.rig: SimRig | None = None

    async def handle(self, op: str, args: list[Any], kw: dict[str, Any]) -> Any:
        if op == "start":
            self.rig = build(kw)
            await self.rig.start()
            return {"t0": self.rig.timeline.t0, "kind": self.rig.kind,
                    "connectors": self.rig.connector_ids()}
        rig = self.rig
        if rig is None:
            raise ValueError(f"{op}: the rig is not started")
        if op == "stop":
            await rig.stop()
            self.rig = None
            return None
        if op == "events":
            return events_since(rig, int(args[0]))
        if op == "mark":
            kind, t_abs = str(args[0]), float(args[1])
            return rig.timeline.add(kind, t_abs, **kw).t
        if op in ("ev_action", "inject", "probe"):
            return getattr(rig, op)(*args, **kw)
        raise ValueError(f"unknown rig request {op!r}")


def events_since(rig: SimRig, since: int) -> dict[str, Any]:
    timeline = rig.timeline
    with timeline._lock:
        new = timeline._events[since:]
        counts = dict(timeline.frame_counts)
    return {"events": [[e.t, e.kind, e.data] for e in new], "frame_counts": counts}


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
    session = Session()
    try:
        while line := await reader.readline():
            req = json.loads(line)
            try:
                reply: dict[str, Any] = {"ok": await session.handle(
                    req["op"], req.get("args", []), req.get("kw", {}))}
            except Exception as exc:  # the client raises it again
                reply = {"err": type(exc).__name__, "msg": str(exc)}
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
            if req["op"] == "stop":
                break
    finally:
        if session.rig is not None:
            await session.rig.stop()
        writer.close()


def like_hardware() -> str:
    """Hardware answers whatever else the machine does: the rig process takes a low real-time
    priority (its threads inherit it; it sleeps between frames and ticks, and the kernel's RT
    throttling bounds it anyway), or failing that a better nice value."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
        return f"SCHED_RR {RT_PRIORITY}"
    except (OSError, AttributeError):
        pass
    try:
        os.nice(-10)
        return "nice -10"
    except OSError:
        return "default priority"


def child(fd: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    like_hardware()
    gc.freeze()  # what the server imported is never collected: short collections
    asyncio.run(serve(socket.socket(fileno=fd)))


def fork_server(ctl: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the rigs
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the client, who stops us
    gc.collect()
    gc.freeze()
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(ctl, 16, 1)
        if not msg:
            return  # the client went away
        pid = os.fork()
        if pid == 0:
            ctl.close()
            code = 0
            try:
                child(fds[0])
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(fds[0])
        ctl.sendall(struct.pack("!i", pid))


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        fork_server(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
