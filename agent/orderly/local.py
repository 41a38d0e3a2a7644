"""Without an aggregator (``mqtt: null``): the installer's limits and the session record, locally.

A private charger whose owner has not joined an aggregator is still a whole charger: the
configured ``local_limit_a`` applies, ``evse-agent limit`` changes it and survives a restart, and
every session is recorded in the ledger (``evse-agent sessions`` lists them). There is no journal,
no link and no limits engine here: the ceiling is min(installer or configured limit, cable,
hardware), the same local terms the engine uses with an aggregator, and the pilot machine
applies the cable and hardware ratings itself.

Ledger writes run in a worker thread: a slow flash never delays the event loop that polls the
pilot. Sessions closed here are marked local: they are never sent to an aggregator configured
later (docs/sessions.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from agent.api.reasons import StopReason
from agent.config import AgentConfig, ConnectorConfig
from agent.orderly.installer import (
    InstallerLimits,
    LimitInForce,
    SinceTracker,
    local_ref,
    site_limit,
)
from agent.pilot import LimitChanged
from agent.shell.connector import ConnectorController

log = structlog.get_logger("agent.local")


def local_limit_in_force(
    site_a: float | None, site_source: str, cable_a: float | None, hardware_a: float
) -> tuple[float, str]:
    """The lowest local term; on a tie the site limit, then the cable (as the engine's order)."""
    best = (hardware_a, "hardware")
    for value, source in ((cable_a, "cable"), (site_a, site_source)):
        if value is not None and value <= best[0]:
            best = (value, source)
    return best


class LocalService:
    """Installer limits (and, with the ledger, sessions) when no aggregator is configured."""

    def __init__(self, config: AgentConfig, controllers: list[ConnectorController]) -> None:
        self.config = config
        self.controllers = {c.id: c for c in controllers}
        self.connectors: dict[int, ConnectorConfig] = {c.id: c for c in config.connectors}
        self.installer = InstallerLimits(config.state_dir)
        self._since = SinceTracker()
        now = time.monotonic()
        for cid, ctl in self.controllers.items():  # before the control tasks start
            ctl.machine.step(LimitChanged(self._site(cid)[0]), now)
        log.info("local_limits", limits={cid: self._site(cid)[0] for cid in self.controllers},
                 path=str(self.installer.path))

    def _site(self, cid: int) -> tuple[float | None, str]:
        inst = self.installer.get(cid)
        return site_limit(self.connectors[cid].local_limit_a, inst), (
            "installer" if inst is not None else "config")

    async def set_limit(self, cid: int, limit_a: float | None) -> None:
        """Store first (so a crash right after keeps what the installer was told), then feed."""
        await asyncio.to_thread(self.installer.set, cid, limit_a, time.time())
        site, source = self._site(cid)
        log.info("installer_limit_set", connector=cid, limit_a=limit_a, in_force=site,
                 source=source)
        await self.controllers[cid].feed(LimitChanged(site))

    def stop_origin(self, cid: int, origin: StopReason) -> None:
        """Who asked for a stop (the session record's stop reason); no-op without the ledger."""

    def limit(self, cid: int) -> LimitInForce:
        site, site_source = self._site(cid)
        ctl = self.controllers[cid]
        conn = self.connectors[cid]
        value, source = local_limit_in_force(site, site_source, ctl.machine.cable_rating_a,
                                             conn.rated_current_a)
        inst = self.installer.get(cid)
        since = self._since.since(cid, (source, value), time.time())
        if source == "installer" and inst is not None:
            since = inst.since
        return LimitInForce(value, source, "local", local_ref(source, cid, self.installer.path),
                            since)

    def status(self, cid: int) -> dict[str, Any]:
        return {"limit": self.limit(cid).status()}

    async def run(self) -> None:
        await asyncio.Event().wait()  # the sessions part joins here
