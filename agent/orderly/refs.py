"""How the wire names a limit's origin: ``limitSource`` names and command/profile references."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from agent.api.models import CommandRef, Limit
from agent.limits import ChargingProfile, EffectiveLimit, Installed, RateUnit
from agent.store import rfc3339

__all__ = ["SOURCE_NAMES", "api_source", "commanded_limit", "limit_snapshot", "profile_list",
           "ref_of"]

SOURCE_NAMES = {"local:site": "installer", "local:cable": "cable", "local:hardware": "hardware"}


def api_source(source: str) -> str:
    return SOURCE_NAMES.get(source, source)


def ref_of(p: ChargingProfile) -> CommandRef:
    if p.source_command_id:
        return CommandRef(command_id=p.source_command_id)
    return CommandRef(profile_id=p.profile_id)


def commanded_limit(p: ChargingProfile) -> Limit:
    """The limit of the first period in the unit the command used: a setLimit in kW is stored
    as W (``parse_limit``) and echoed in kW, so ``commandStarted`` repeats what was sent."""
    value = p.schedule.periods[0].limit
    if p.commanded_kw:
        return Limit(value=round(value / 1000, 9), unit="kW")
    unit: Literal["A", "W"] = "A" if p.schedule.unit is RateUnit.A else "W"
    return Limit(value=value, unit=unit)


def limit_snapshot(eff: EffectiveLimit | None, rated_a: float) -> dict[str, Any]:
    """The limit in force as the retained state shows it (limitA, limitSource, limitRef)."""
    if eff is None:
        return {"limitA": 0.0, "limitSource": "none"}
    t = eff.target
    out: dict[str, Any] = {
        "limitA": round(eff.limit_a, 2) if eff.limit_a is not None else rated_a,
        "limitSource": api_source(t.source) if t.source != "none" else "hardware",
    }
    if t.command_id or t.profile_id:
        out["limitRef"] = ({"commandId": t.command_id} if t.command_id
                           else {"profileId": t.profile_id})
    return out


def profile_list(installed: Iterable[Installed]) -> list[dict[str, Any]]:
    """The installed profiles as the retained state lists them."""
    out = []
    for inst in installed:
        p = inst.profile
        item: dict[str, Any] = ref_of(p).model_dump(by_alias=True, exclude_none=True)
        item.update({"layer": p.layer.value, "stackLevel": p.stack_level})
        if p.valid_from is not None:
            item["validFrom"] = rfc3339(p.valid_from)
        if p.valid_to is not None:
            item["validTo"] = rfc3339(p.valid_to)
        out.append(item)
    return out
