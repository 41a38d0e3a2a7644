"""The orderly-charging service: wiring of link, journal, ledger, limits and commands.

Runs beside the connector control tasks when the config has an ``mqtt`` section. The control
tasks never wait on it: their notifications go into a queue (``note``) that the reporter task
turns into events, session records and state snapshots.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import structlog

from agent import __version__
from agent.api import models as m
from agent.api.envelope import EnvelopeChecker
from agent.api.reasons import StopReason
from agent.command_store import CommandStore
from agent.config import AgentConfig, MqttConfig
from agent.errors import ConfigError, JournalError
from agent.journal import Journal
from agent.ledger import Ledger
from agent.limits import FailsafeConfig, RateUnit
from agent.link import Link, LinkSettings, PendingReply, Reply
from agent.link.ports import CommandMessage
from agent.orderly.commands import CommandService, RuntimeHooks
from agent.orderly.control import ConnectorInputs, OrderlyControl
from agent.orderly.events import EventLog
from agent.orderly.installer import (
    InstallerLimits,
    LimitInForce,
    SinceTracker,
    local_ref,
    site_limit,
)
from agent.orderly.keys import load_issuer_keys
from agent.orderly.refs import api_source
from agent.orderly.reporter import Reporter
from agent.orderly.runtime import RuntimeSettings
from agent.orderly.security import SecurityLog
from agent.orderly.sessions import Reading, SessionTracker
from agent.pilot import Authorize, LimitChanged, StopRequested
from agent.shell.handle import ConnectorHandle

log = structlog.get_logger("agent.orderly")

DECOMMISSIONED_FLAG = "decommissioned"


def link_settings(cfg: MqttConfig, device_id: str) -> LinkSettings:
    password = None
    if cfg.password_file is not None:
        try:
            password = cfg.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read password_file: {exc}", key="mqtt.password_file",
                              fix="check the path and that the agent's user can read it") from exc
    return LinkSettings(
        host=cfg.host, port=cfg.port, device_id=device_id, root=cfg.root,
        groups=tuple(cfg.groups), protocol=cfg.protocol, client_id=cfg.client_id, tls=cfg.tls,
        ca_file=str(cfg.ca_file) if cfg.ca_file else None,
        cert_file=str(cfg.cert_file) if cfg.cert_file else None,
        key_file=str(cfg.key_file) if cfg.key_file else None,
        username=cfg.username, password=password, keepalive_s=cfg.keepalive_s,
        session_expiry_s=cfg.session_expiry_s,
    )


class OrderlyService:
    def __init__(self, config: AgentConfig, controllers: list[ConnectorHandle]) -> None:
        assert config.mqtt is not None
        self.config = config
        self.mqtt = config.mqtt
        self.boot_id = uuid.uuid4().hex
        state = config.state_dir
        self.controllers = {c.id: c for c in controllers}
        self.runtime = RuntimeSettings.load(state / "runtime.json", self.mqtt)
        self.journal = Journal(
            state / "journal.db", device_id=config.device_id, boot_id=self.boot_id,
            budget_bytes=int(self.mqtt.journal_budget_mb * 1e6),
            retention_s=self.mqtt.retention_days * 86400,
            hard_limit_bytes=None if self.mqtt.journal_hard_limit_mb is None
            else int(self.mqtt.journal_hard_limit_mb * 1e6))
        self.ledger = Ledger(state / "sessions.db")
        self.security = SecurityLog(state / "security.log")
        self.installer = InstallerLimits(state)
        self._since = SinceTracker()
        self.events = EventLog(self.journal)
        self.started_at = time.time()
        self.last_command: dict[str, Any] | None = None  # for the status page
        self.link = Link(
            link_settings(self.mqtt, config.device_id), outbox=self.journal,
            on_command=self._on_command, birth=self._birth, boot_id=self.boot_id,
            state=self._state, on_connected=self._on_connected,
            on_disconnected=self._on_disconnected)
        self.events.attach(self.link.notify)
        rt = self.runtime
        engine = OrderlyControl.make_engine(
            state / "limits.json", seed=self.mqtt.random_seed,
            random_delay_max_s=rt.random_delay_max_s,
            failsafe=FailsafeConfig(rt.failsafe_after_s, *_limit(rt.failsafe_value,
                                                                 rt.failsafe_unit)),
            # the fail-safe W check: it must let the connector with the most volts charge too
            nominal_voltage_v=max(c.nominal_voltage_v for c in config.connectors),
            supply_phases=max(c.phases for c in config.connectors))
        self.trackers = {c.id: SessionTracker(
            c.id, self.ledger, self.events, reading=self._reading(c),
            offline=lambda: not self.link.connected,
            idle_occupancy_s=lambda: float(self.runtime.idle_occupancy_s))
            for c in controllers}
        inputs = {conn.id: ConnectorInputs(
            self.controllers[conn.id], self.trackers[conn.id], conn.phases,
            conn.rated_current_a, site_limit(conn.local_limit_a, self.installer.get(conn.id)),
            conn.nominal_voltage_v)
            for conn in config.connectors}
        self.control = OrderlyControl(
            engine, inputs, self.events, state / "limits.json",
            link_online=self._link_state, on_change=self._state_changed)
        self.control.decommissioned = (state / DECOMMISSIONED_FLAG).exists()
        self.command_store = CommandStore(state / "commands.db", retention_s=7 * 86400)
        self.commands = CommandService(
            device_id=config.device_id,
            checker=EnvelopeChecker(
                self.command_store,
                max_skew_s=self.mqtt.max_clock_skew_s,
                issuer_keys=load_issuer_keys(self.mqtt.issuer_keys),
                device_id=config.device_id, discharge_supported=self.mqtt.discharge),
            control=self.control, events=self.events, security=self.security,
            hooks=RuntimeHooks(
                connectors=sorted(self.controllers), plugged=self._plugged, feed=self._feed,
                set_config=self._set_config, resync=self._resync,
                decommission=self._decommission, stop_origin=self._stop_origin))
        self.reporter = Reporter(self)
        for ctl in controllers:
            ctl.on_event = self.reporter.note
            ctl.feed_first(LimitChanged(0.0))  # nothing until the composite

    # --- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        await self.reporter.recover()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.control.run(), name="orderly-control")
            tg.create_task(self.reporter.run(), name="reporter")
            tg.create_task(self.reporter.telemetry_loop(), name="telemetry")
            if not self.control.decommissioned:
                tg.create_task(self.link.run(), name="mqtt-link")
            else:
                log.warning("decommissioned", flag=str(self.config.state_dir /
                                                       DECOMMISSIONED_FLAG))

    async def set_limit(self, cid: int, limit_a: float | None) -> None:
        """The installer's limit: stored (it survives a restart), then it joins the composite
        as ``installer``; None returns to the configured ``local_limit_a``."""
        await asyncio.to_thread(self.installer.set, cid, limit_a, time.time())
        conn = next(c for c in self.config.connectors if c.id == cid)
        site = site_limit(conn.local_limit_a, self.installer.get(cid))
        log.info("installer_limit_set", connector=cid, limit_a=limit_a, in_force=site,
                 source="installer" if limit_a is not None else "config")
        self.control.set_site_limit(cid, site)

    def limit(self, cid: int) -> LimitInForce:
        """The composite's binding term and where it came from (``evse-agent status``)."""
        c = self.control.connectors[cid]
        eff = c.effective
        if eff is None:  # before the first evaluation: nothing is offered yet
            return LimitInForce(0.0, "none", "local", None, None)
        t = eff.target
        source = api_source(t.source) if t.source != "none" else "hardware"
        inst = self.installer.get(cid)
        if source == "installer" and inst is None:
            source = "config"
        layer = t.layer.value if t.layer is not None else (
            "failsafe" if source == "failsafe" else "local")
        ref = (f"commandId={t.command_id}" if t.command_id else
               f"profileId={t.profile_id}" if t.profile_id else
               local_ref(source, cid, self.installer.path))
        value = eff.limit_a if eff.limit_a is not None else c.rated_a
        since = self._since.since(cid, (source, ref, value), time.time())
        if source == "installer" and inst is not None:
            since = inst.since  # when the installer set it (it survives restarts)
        return LimitInForce(value, source, layer, ref, since)

    def status(self, cid: int) -> dict[str, Any]:
        return {"limit": self.limit(cid).status()}

    async def sessions(self, since: float | None, connector: int | None) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(self.ledger.sessions, since=since, connector=connector)
        return [s.listing() for s in found]

    def stop_origin(self, cid: int, origin: StopReason) -> None:
        self._stop_origin(cid, origin)

    # --- link callbacks -----------------------------------------------------------------------

    async def _on_command(self, msg: CommandMessage) -> PendingReply:
        async def reply(reply: m.Reply) -> Reply:
            self.last_command = {"at": msg.received_at, "commandId": reply.command_id,
                                 "type": _command_type(msg.payload), "group": msg.group,
                                 "status": reply.status.value, "reason": reply.reason.value}
            if not self.control.decommissioned:  # its retained state is cleared meanwhile
                self._state_changed()
            encoded = Reply(m.encode(reply))  # serialised once, the bytes the link publishes
            # The reply goes out once its record, and every event and limits.json written
            # before it, are committed (the store writer runs in order); the loop goes on.
            await self.command_store.durable()
            return encoded

        # applied (the duty on the wire) when this returns; the reply follows in its own task,
        # in order, also when the link cannot send it any more (it is recorded all the same)
        done = await self.commands.handle(msg.payload, group=msg.group, then=reply)
        return PendingReply(lambda: asyncio.shield(done))

    def _on_connected(self, outage_s: float | None) -> None:
        if outage_s is not None:
            def restored() -> m.LinkRestoredBody:  # on the writer: the counts it keeps
                report = self.journal.take_link_report(time.time())
                return m.LinkRestoredBody(
                    outage_s=round(outage_s), messages_buffered=report.buffered,
                    telemetry_dropped=report.tel_dropped)
            self.events.event("linkRestored", restored)
        self._state_changed()
        self.control.wake()

    def _on_disconnected(self) -> None:
        self.control.wake()

    def _link_state(self) -> tuple[bool, float | None]:
        if self.link.connected:
            return True, self.link.last_connected_at
        return False, self.link.disconnected_since or self.started_at

    # --- hooks for commands ------------------------------------------------------------------

    def _plugged(self, cid: int) -> bool:
        return self.trackers[cid].session is not None

    async def _feed(self, cid: int, event: Any) -> object:
        if isinstance(event, Authorize):  # the record names who started it, charged or not
            self.trackers[cid].authorised(event.id_tag)
        return await self.controllers[cid].feed(event)

    def _stop_origin(self, cid: int, origin: StopReason) -> None:
        self.trackers[cid].stop_requested(origin)

    async def _set_config(self, cmd: m.SetConfigCommand) -> int:
        version = self.runtime.apply(cmd.body, self.control.engine)
        await self.journal.writer.run(self.runtime.save)
        self.events.event("configChanged", m.ConfigChangedBody(
            config_version=version, config=self.runtime.device_config(), command_id=cmd.id))
        self.security.record("configChanged", command_id=cmd.id, issuer=cmd.issuer,
                             config_version=version)
        self.reporter.reschedule_telemetry()
        self.control.wake()
        return version

    async def _resync(self, from_seq: int) -> int:
        await self.link.republish_status()
        self._state_changed()
        try:
            entries = self.journal.resync(from_seq)
        except JournalError as exc:
            log.error("resync_failed", error=str(exc))
            return 0
        return await self.link.resend(entries)

    async def _decommission(self) -> None:
        self.control.decommissioned = True
        flag = self.config.state_dir / DECOMMISSIONED_FLAG
        flag.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        for cid, ctl in self.controllers.items():
            self._stop_origin(cid, StopReason.REMOTE)
            await ctl.feed(StopRequested("Decommissioned"))
        self.control.wake()
        self.security.record("decommissioned", flag=str(flag))
        asyncio.get_running_loop().create_task(self.link.decommission())

    # --- payloads for the link ----------------------------------------------------------------

    def _birth(self) -> dict[str, Any]:
        return {
            "agentVersion": __version__,
            "atSeq": self.journal.last_seq,
            "connectors": [self._connector_info(c.id, c.phases, c.rated_current_a)
                           for c in self.config.connectors],
            "capabilities": {
                "maxPeriods": self.control.engine.config.max_periods,
                "maxStackLevel": 1000, "units": ["A", "W", "kW"],
                "discharge": self.mqtt.discharge,
                "signedCommands": self.mqtt.issuer_keys is not None,
                "groups": list(self.mqtt.groups), "maxPayloadBytes": 65536},
        }

    def _connector_info(self, cid: int, phases: int, rated_a: float) -> dict[str, Any]:
        """What ``status`` declares of a connector: for a retrofitted wallbox, that the pilot
        is the wallbox's own and which profile drives it."""
        hw = self.controllers[cid].hardware
        info: dict[str, Any] = {"connector": cid, "phases": phases,
                                "maxCurrentA": hw.max_current_a or rated_a, "pilot": hw.pilot}
        if hw.wallbox_profile is not None:
            info["wallboxProfile"] = hw.wallbox_profile
        return info

    def _state(self) -> dict[str, Any]:
        return self.reporter.state_payload()

    def _state_changed(self) -> None:
        self.link.publish_state(self._state())

    def _reading(self, ctl: ConnectorHandle) -> Any:
        def read() -> Reading:
            meter = ctl.stats.last_meter
            if meter is None:
                return Reading(None, None)
            return Reading(round(meter.energy_import_wh), meter.power_w,
                           max(meter.current_a, default=0.0))
        return read


def _command_type(payload: bytes) -> str | None:
    """The ``type`` of a command payload (already parsed and checked by CommandService)."""
    try:
        kind = json.loads(payload).get("type")
    except (ValueError, AttributeError):
        return None
    return kind[:32] if isinstance(kind, str) else None


def _limit(value: float, unit: str) -> tuple[float, RateUnit]:
    if unit == "kW":
        return value * 1000, RateUnit.W
    return value, RateUnit(unit)
