"""What the status page and the metrics endpoint need, in one reply of the control socket.

``{"cmd": "status", "panel": true}`` answers with this. The web process (``evse-agent web``)
asks for it every ``web.poll_ms`` while a browser watches, and on a metrics scrape; nothing is
computed unless it asks. The reply reads attributes the daemon holds anyway, except two SQLite
reads (the journal backlog and the last sessions) which are cached for ``SLOW_REFRESH_S``, so a
page open on commissioning day costs the safety loop next to nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from agent.config import ConnectorConfig
from agent.faults import FAULTS, FaultCode
from agent.pilot import PilotMachine
from agent.shell.handle import ConnectorHandle

if TYPE_CHECKING:
    from agent.orderly.service import OrderlyService
    from agent.shell.app import AgentApp

SLOW_REFRESH_S = 5.0
RECENT_SESSIONS = 5
AGGREGATOR_SOURCES = frozenset({"siteMax", "grid", "default", "session"})


class PanelCache:
    """The two SQLite-backed figures, refreshed at most every ``SLOW_REFRESH_S``."""

    def __init__(self) -> None:
        self.at = float("-inf")
        self.backlog: int | None = None
        self.sessions: dict[int, list[dict[str, Any]]] = {}

    def refresh(self, svc: OrderlyService | None, now: float) -> None:
        if now - self.at < SLOW_REFRESH_S or svc is None:
            return
        self.at = now
        self.backlog = svc.journal.stats().pending
        by_connector: dict[int, list[dict[str, Any]]] = {}
        for s in svc.ledger.recent(RECENT_SESSIONS * max(1, len(svc.controllers))):
            end = s.meter_stop_wh if s.meter_stop_wh is not None else s.last_meter_wh
            rows = by_connector.setdefault(s.connector, [])
            if len(rows) < RECENT_SESSIONS:
                rows.append({"sessionId": s.session_id, "plugInAt": s.plug_in_at,
                             "plugOutAt": s.plug_out_at, "energyWh": end - s.meter_start_wh,
                             "maxPowerW": s.max_power_w, "stopReason": s.stop_reason,
                             "idTag": s.id_tag})
        self.sessions = by_connector


def limit_setter(app: AgentApp, ctl: ConnectorHandle) -> dict[str, Any]:
    """The limit that sets the offer, as the installer thinks of it: installer (set on the
    page or the CLI, or ``local_limit_a``: ``detail`` says which), aggregator (with its profile
    layer and command), failsafe, cable or hardware."""
    service = app.orderly or app.local
    if service is not None:
        lim = service.limit(ctl.id)
        kind = ("aggregator" if lim.source in AGGREGATOR_SOURCES
                else "installer" if lim.source == "config" else lim.source)
        return {"a": lim.limit_a, "source": kind, "detail": lim.source, "layer": lim.layer,
                "ref": lim.ref, "since": lim.since}
    m = ctl.machine
    if isinstance(m, PilotMachine):
        s = m.settings
        terms = [(s.hardware_rating_a, "hardware"), (s.profile.max_current_a, "hardware"),
                 (m.cable_rating_a or 0.0, "cable")]
    else:  # a retrofitted wallbox: its range and the connector's rating
        terms = [(ctl.hardware.max_current_a or 0.0, "hardware")]
    conn = next(c for c in app.config.connectors if c.id == ctl.id)
    if conn.local_limit_a is not None:
        terms.append((conn.local_limit_a, "installer"))
    value, source = min(terms, key=lambda t: t[0])
    return {"a": value, "source": source}


def _fault(code: str) -> dict[str, Any]:
    try:
        info = FAULTS[FaultCode(code)]
    except ValueError:
        return {"code": code}
    return {"code": code, "safety": info.safety, "description": info.description,
            "clearing": info.clearing}


def connector_panel(app: AgentApp, ctl: ConnectorHandle, cache: PanelCache) -> dict[str, Any]:
    m = ctl.machine
    board = m if isinstance(m, PilotMachine) else None  # None: a retrofitted wallbox
    meter = ctl.stats.last_meter
    conn = next(c for c in app.config.connectors if c.id == ctl.id)
    return {
        "connector": ctl.id,
        "state": m.state.name,
        "evLevel": m.ev_level.name if m.ev_level is not None else None,
        "cpMv": ctl.stats.last_cp_mv,
        "offeredCurrentA": m.offered_current_a,
        "dutyPermille": board.duty_commanded if board else None,
        "pilot": ctl.hardware.pilot,
        "wallboxProfile": ctl.hardware.wallbox_profile,
        "limit": limit_setter(app, ctl),
        "ratedA": conn.rated_current_a,
        "cableA": m.cable_rating_a,
        "phases": conn.phases,
        "connection": conn.connection if isinstance(conn, ConnectorConfig) else "wallbox",
        "authorisation": conn.authorisation,
        "authorised": m.authorised,
        "contactor": {"commanded": m.contactor_commanded,
                      "feedback": ctl.stats.last_contactor_feedback,
                      "closes": ctl.stats.contactor_closes},
        "lock": {"commanded": board.lock_commanded, "feedback": board.lock.fb} if board
        else None,
        "temperatureC": m.temperature_c,
        "meter": None if meter is None else {
            "voltageV": list(meter.voltage_v), "currentA": list(meter.current_a),
            "powerW": meter.power_w, "energyImportWh": meter.energy_import_wh},
        "faults": [_fault(str(f)) for f in sorted(m.active_faults)],
        "errors": {"pilot": ctl.stats.pilot_errors, "relay": ctl.stats.relay_errors,
                   "meter": ctl.stats.meter_errors},
        "loopLagMs": round(1000 * ctl.stats.max_loop_lag_s, 2),
        "sessions": cache.sessions.get(ctl.id, []),
    }


def link_panel(svc: OrderlyService, cache: PanelCache) -> dict[str, Any]:
    link = svc.link
    return {
        "connected": link.connected,
        "since": link.last_connected_at if link.connected else link.disconnected_since,
        "connects": link.connect_count,
        "protocol": link.protocol,
        "lastError": None if link.last_error is None else str(link.last_error),
        "backlog": cache.backlog,
        "failsafe": svc.control.failsafe_since is not None,
        "lastCommand": svc.last_command,
    }


def panel_status(app: AgentApp, cache: PanelCache) -> dict[str, Any]:
    now = time.time()
    cache.refresh(app.orderly, time.monotonic())
    ctls = list(app.controllers.values())
    wiring = app.wiring
    return {
        "deviceId": app.config.device_id,
        "pid": os.getpid(),
        "ready": app.ready,
        "now": now,
        "uptimeS": round(now - app.started_at, 1),
        "maxLoopLagMs": round(1000 * max((c.stats.max_loop_lag_s for c in ctls), default=0.0),
                              2),
        "connectors": [connector_panel(app, c, cache) for c in ctls],
        "reactionBound": app.bus_plan.status(),
        "buses": {name: dataclasses.asdict(bus.stats) for name, bus in wiring.buses.items()}
        if wiring else {},
        "link": None if app.orderly is None else link_panel(app.orderly, cache),
    }
