"""The installer's local limit (``evse-agent limit``): validated, persisted, and explained.

Why persisted (``<state_dir>/local-limits.json``, written atomically): an installer who limits a
connector to protect a weak supply expects the limit to hold after a reboot or an agent update,
with or without an aggregator. ``limit none`` removes the installer's value, so the connector
returns to the configured ``local_limit_a`` (or to no site limit at all).

``LimitInForce`` is what ``evse-agent status`` shows per connector in both modes: the current
ceiling, which input sets it (``source``), its layer, a reference to where it was set, and since
when it has been the one in force.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.errors import AgentError, LimitsStoreError
from agent.store import atomic_write, rfc3339
from agent.writer import shared_writer

log = structlog.get_logger("agent.installer")

FILE_NAME = "local-limits.json"
MAX_LIMIT_A = 80.0  # the largest rated current a connector may have (config bound)


class LimitValueError(AgentError, ValueError):
    """A limit that is not a number of amperes in 0..80 (or 'none')."""


def parse_limit(value: object) -> float | None:
    """``none``/None clears; a number of amperes in 0..80 sets (below 6 A pauses charging)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, bool):
        raise LimitValueError(f"limit must be a number of amperes or 'none', got {value!r}")
    try:
        amps = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise LimitValueError(
            f"limit must be a number of amperes or 'none', got {value!r}") from exc
    if not math.isfinite(amps) or not 0.0 <= amps <= MAX_LIMIT_A:
        raise LimitValueError(f"limit must be between 0 and {MAX_LIMIT_A:g} A, got {value!r}")
    return amps


@dataclass(frozen=True, slots=True)
class InstallerLimit:
    limit_a: float
    since: float


class InstallerLimits:
    """Per-connector installer limits, one JSON file, replaced atomically at every change."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._limits: dict[int, InstallerLimit] = self._load()

    def _load(self) -> dict[int, InstallerLimit]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return {int(cid): InstallerLimit(parse_limit(v["limitA"]) or 0.0, float(v["since"]))
                    for cid, v in data["connectors"].items() if v.get("limitA") is not None}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            bad = self.path.with_suffix(f".corrupt-{int(time.time())}")
            try:
                self.path.replace(bad)
            except OSError:
                bad = self.path
            log.error("local_limits_unreadable", path=str(self.path), moved_to=str(bad),
                      error=str(exc))
            return {}

    def get(self, cid: int) -> InstallerLimit | None:
        return self._limits.get(cid)

    def set(self, cid: int, limit_a: float | None, now: float) -> None:
        """Record (or clear) and write through (on the store writer; call it off the loop);
        raises LimitsStoreError if it cannot be stored."""
        limits = dict(self._limits)
        if limit_a is None:
            limits.pop(cid, None)
        else:
            limits[cid] = InstallerLimit(limit_a, now)
        body = {"version": 1, "connectors": {
            str(c): {"limitA": v.limit_a, "since": v.since} for c, v in sorted(limits.items())}}
        try:
            data = json.dumps(body, indent=1).encode()
            shared_writer().call(lambda: atomic_write(self.path, data))
        except OSError as exc:
            raise LimitsStoreError(f"cannot store the installer limit: {exc}",
                               path=str(self.path)) from exc
        self._limits = limits


def site_limit(configured_a: float | None, installer: InstallerLimit | None) -> float | None:
    """The installer's value replaces the configured one while it is set."""
    return installer.limit_a if installer is not None else configured_a


@dataclass(frozen=True, slots=True)
class LimitInForce:
    """The ceiling in force on a connector and where it came from (``status``)."""

    limit_a: float | None
    source: str  # installer, config, cable, hardware, siteMax, grid, default, session, failsafe
    layer: str  # local, or the aggregator layer (siteMax, grid, default, session, failsafe)
    ref: str | None
    since: float | None

    def status(self) -> dict[str, Any]:
        return {"limitA": None if self.limit_a is None else round(self.limit_a, 2),
                "source": self.source, "layer": self.layer, "ref": self.ref,
                "since": None if self.since is None else rfc3339(self.since)}


def local_ref(source: str, cid: int, path: Path) -> str | None:
    """Where an installer-side limit is set, for the status reader."""
    return {"installer": f"evse-agent limit ({path})",
            "config": f"connectors[id={cid}].local_limit_a",
            "cable": "cable rating (CC)",
            "hardware": f"connectors[id={cid}].rated_current_a"}.get(source)


class SinceTracker:
    """When each connector's limit in force last changed (source, reference or value)."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[tuple[object, ...], float]] = {}

    def since(self, cid: int, key: tuple[object, ...], now: float) -> float:
        prev = self._seen.get(cid)
        if prev is not None and prev[0] == key:
            return prev[1]
        self._seen[cid] = (key, now)
        return now
