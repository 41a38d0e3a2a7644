"""The agent process: wiring only.

Order of start-up matters and is the contract with the installer:
1. open the buses; drive every connector to the safe state (contactor open, steady +12 V, lock
   released) before anything else, retrying until every board took it;
2. arm the pilot boards' watchdogs; 3. ``READY=1`` and ``agent_ready`` in the log;
4. run the control tasks, the systemd watchdog, the status file and the local control socket.
On SIGTERM/SIGINT the tasks are cancelled and the safe state is driven again before exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent import localapi
from agent.api.reasons import StopReason
from agent.busplan import BusPlanReport, analyse, refusals
from agent.config import AgentConfig
from agent.errors import AgentError, ConfigError, DriverError
from agent.orderly.installer import parse_limit
from agent.pilot import Authorize, LimitChanged, ResetRequested, StopRequested
from agent.secrets import check_private_key_permissions
from agent.shell.handle import ConnectorHandle
from agent.shell.notify import sd_notify, watchdog_interval_s
from agent.shell.panel import PanelCache, panel_status
from agent.shell.status import connector_status
from agent.shell.wiring import Wiring, build_wiring

if TYPE_CHECKING:
    from agent.orderly.local import LocalService
    from agent.orderly.service import OrderlyService

log = structlog.get_logger("agent.app")

SAFE_STATE_RETRY_S = 0.5
SAFE_STATE_EXIT_TIMEOUT_S = 2.0
STATUS_PERIOD_S = 1.0


class AgentApp:
    def __init__(self, config: AgentConfig, bus_plan: BusPlanReport | None = None) -> None:
        self.config = config
        self.bus_plan = bus_plan if bus_plan is not None else analyse(config)
        self.started_at = time.time()
        self.ready = False
        self._wiring: Wiring | None = None
        self._controllers: dict[int, ConnectorHandle] = {}
        self.orderly: OrderlyService | None = None
        self.local: LocalService | None = None  # mqtt: null: installer limits, sessions
        self._panel_cache = PanelCache()

    @property
    def controllers(self) -> dict[int, ConnectorHandle]:
        return self._controllers

    @property
    def wiring(self) -> Wiring | None:
        return self._wiring

    # --- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        if self.bus_plan.refused:  # agent.cli refuses first; this guards other callers
            raise ConfigError("the reaction bound exceeds safety.reaction_budget_ms "
                              "(evse-agent check-config shows why and what to change)")
        if self.bus_plan.over_budget_accepted:
            log.warning("reaction_bound_over_budget_accepted",
                        budget_ms=self.bus_plan.budget_ms, connectors=refusals(self.bus_plan),
                        setting="safety.accept_reaction_bound_over_budget")
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        if self.config.mqtt is not None:  # refuse to start with a secret readable by others
            if self.config.mqtt.key_file is not None:
                check_private_key_permissions(self.config.mqtt.key_file, key="mqtt.key_file")
            if self.config.mqtt.password_file is not None:
                check_private_key_permissions(self.config.mqtt.password_file,
                                              key="mqtt.password_file")
        async with build_wiring(self.config) as wiring:
            self._wiring = wiring
            self._controllers = {c.id: c for c in wiring.controllers}
            self.orderly = self.local = None
            if self.config.mqtt is not None:
                from agent.orderly.service import OrderlyService

                self.orderly = OrderlyService(self.config, wiring.controllers)
            else:
                from agent.orderly.local import LocalService

                self.local = LocalService(self.config, wiring.controllers)
            try:
                await self._start_safe()
                async with asyncio.TaskGroup() as tg:
                    for ctl in wiring.controllers:
                        tg.create_task(ctl.run(), name=f"connector-{ctl.id}")
                    tg.create_task(self._watchdog(), name="sd-watchdog")
                    # Reporting and local control must never take the safety loops down.
                    tg.create_task(_supervised("status", self._status_writer), name="status")
                    tg.create_task(_supervised("local_api", self._local_api), name="local-api")
                    if self.orderly is not None:
                        tg.create_task(_supervised("orderly", self.orderly.run), name="orderly")
                    if self.local is not None:
                        tg.create_task(_supervised("local", self.local.run), name="local")
            finally:
                await self._exit_safe()

    async def _start_safe(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                for ctl in self._controllers.values():
                    await ctl.drive_safe_state()
                    await ctl.configure_board()
                break
            except DriverError as exc:
                log.error("startup_safe_state_pending", attempt=attempt, error=str(exc))
                sd_notify(f"STATUS=waiting for boards: {exc}")
                await asyncio.sleep(SAFE_STATE_RETRY_S)
        self.ready = True
        # Everything built so far lives as long as the agent: keep it out of the collector so
        # a full collection never pauses the safety loop for long. No full collection first:
        # at this point one finds ~6 unreachable objects and costs 13-21 ms of start-up.
        gc.freeze()
        status = "charging control running"
        if self.bus_plan.over_budget_accepted:  # `systemctl status` shows it too
            status += "; WARNING reaction bound over budget (accept_reaction_bound_over_budget)"
        sd_notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")
        log.info("agent_ready", device_id=self.config.device_id,
                 connectors=sorted(self._controllers), startup_s=round(
                     time.time() - self.started_at, 3))

    async def _exit_safe(self) -> None:
        for ctl in self._controllers.values():
            try:
                async with asyncio.timeout(SAFE_STATE_EXIT_TIMEOUT_S):
                    await ctl.drive_safe_state()
                log.info("exit_safe_state", connector=ctl.id)
            except (DriverError, TimeoutError) as exc:
                log.error("exit_safe_state_failed", connector=ctl.id, error=str(exc))

    # --- systemd watchdog: only while the control loops make progress -----------------------

    async def _watchdog(self) -> None:
        interval = watchdog_interval_s()
        if interval is None:
            return
        seen = {c.id: c.stats.cycles for c in self._controllers.values()}
        while True:
            await asyncio.sleep(interval)
            progressing = all(c.stats.cycles != seen[c.id] for c in self._controllers.values())
            if progressing:
                sd_notify("WATCHDOG=1")
            else:
                log.error("control_loop_stalled", cycles={c.id: c.stats.cycles
                                                          for c in self._controllers.values()})
            seen = {c.id: c.stats.cycles for c in self._controllers.values()}

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        wiring = self._wiring
        return {
            "deviceId": self.config.device_id,
            "pid": os.getpid(),
            "ready": self.ready,
            "uptimeS": round(time.time() - self.started_at, 1),
            "maxLoopLagMs": round(1000 * max(
                (c.stats.max_loop_lag_s for c in self._controllers.values()), default=0.0), 1),
            "connectors": [self._connector_status(c) for c in self._controllers.values()],
            "reactionBound": self.bus_plan.status(),
            "buses": {name: dataclasses.asdict(bus.stats) for name, bus in wiring.buses.items()}
            if wiring
            else {},
        }

    def _connector_status(self, ctl: ConnectorHandle) -> dict[str, Any]:
        out = connector_status(ctl)
        service = self.orderly or self.local
        if service is not None:
            out.update(service.status(ctl.id))
        return out

    async def _status_writer(self) -> None:
        """``status.json`` every second: the snapshot is taken on the loop (it reads live
        state), the file written on a thread, so a slow disk (a rename waits for the file
        system's journal while another process fsyncs) never holds up the pilot poll. One write
        at a time: a disk slower than a second skips snapshots, never queues them."""
        path = self.config.status_path()
        while True:
            try:
                await asyncio.to_thread(write_status, path, json.dumps(self.status(), indent=1))
            except OSError as exc:
                log.warning("status_write_failed", path=str(path), error=str(exc))
            await asyncio.sleep(STATUS_PERIOD_S)

    # --- local control socket ----------------------------------------------------------------

    async def _local_api(self) -> None:
        path = localapi.socket_path(self.config.state_dir)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with localapi.bindable(path) as where:
            server = await asyncio.start_unix_server(self._serve_client, path=where)
        os.chmod(path, 0o600)
        async with server:
            await server.serve_forever()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            line = await reader.readline()
            try:
                reply = await self.handle_local(json.loads(line))
            except (ValueError, AgentError, DriverError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def _sessions(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        """Recorded sessions, local or reported (the ledger is the same file in both modes)."""
        since = req.get("since")
        connector = req.get("connector")
        if since is not None and not isinstance(since, int | float):
            raise ValueError("since must be epoch seconds")
        if connector is not None and int(connector) not in self._controllers:
            raise ValueError(f"no connector {connector}")
        service = self.orderly or self.local
        if service is None:
            return []
        return await service.sessions(None if since is None else float(since),
                                      None if connector is None else int(connector))

    async def handle_local(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict) or "cmd" not in req:
            raise ValueError("request must be a JSON object with 'cmd'")
        cmd = req["cmd"]
        if cmd == "status":
            if req.get("panel"):  # the status page and metrics (agent.web)
                return {"ok": True, **panel_status(self, self._panel_cache)}
            return {"ok": True, **self.status()}
        if cmd == "sessions":
            return {"ok": True, "sessions": await self._sessions(req)}
        ctl = self._controllers.get(int(req.get("connector", 1)))
        if ctl is None:
            raise ValueError(f"no connector {req.get('connector')}")
        service = self.orderly or self.local
        if cmd == "limit":
            limit = parse_limit(req.get("limit_a"))
            log.info("local_command", cmd=cmd, connector=ctl.id, request=req)
            if service is None:  # only an app built without run() (tests)
                await ctl.feed(LimitChanged(limit))
            else:  # stored, then it joins the composite as "installer"
                await service.set_limit(ctl.id, limit)
            return {"ok": True, "connector": self._connector_status(ctl)}
        event: Any
        if cmd == "start":
            event = Authorize(req.get("id_tag"))
        elif cmd == "stop":
            event = StopRequested(str(req.get("reason", "Local")))
            if service is not None:
                service.stop_origin(ctl.id, StopReason.LOCAL)
        elif cmd == "reset":
            event = ResetRequested()
        else:
            raise ValueError(f"unknown cmd {cmd!r} (status, limit, start, stop, reset)")
        log.info("local_command", cmd=cmd, connector=ctl.id, request=req)
        await ctl.feed(event)
        return {"ok": True, "connector": self._connector_status(ctl)}


def write_status(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a reader sees the old or the new file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run an auxiliary task; on a crash log it and restart it after a pause."""
    delay = 1.0
    while True:
        try:
            await run()
            return
        except (asyncio.CancelledError, ConfigError):
            raise
        except Exception as exc:
            log.exception("task_crashed", task=name, error=str(exc), restart_in_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 60.0)


def install_signal_handlers(task: asyncio.Task[Any]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)


async def run_agent(config: AgentConfig, bus_plan: BusPlanReport | None = None) -> None:
    app = AgentApp(config, bus_plan)
    task = asyncio.current_task()
    assert task is not None
    install_signal_handlers(task)
    with contextlib.suppress(asyncio.CancelledError):
        await app.run()
    log.info("agent_stopped")
