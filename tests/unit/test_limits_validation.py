"""K01 validation reason codes, unit parsing and profile (de)serialisation."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from agent.limits import (
    ChargingProfile,
    Layer,
    Period,
    ProfileKind,
    RateUnit,
    Reason,
    Recurrency,
    Schedule,
    parse_limit,
    profile_from_dict,
    profile_to_dict,
    requires_discharge,
    validate_profile,
)

T0 = 1_795_651_200.0

GOOD = ChargingProfile(
    profile_id="p",
    layer=Layer.DEFAULT,
    stack_level=0,
    kind=ProfileKind.ABSOLUTE,
    schedule=Schedule(RateUnit.A, (Period(0, 16), Period(3600, 10, 3)), start_at=T0),
)
RECURRING = replace(GOOD, kind=ProfileKind.RECURRING, recurrency=Recurrency.DAILY)
RELATIVE = replace(GOOD, kind=ProfileKind.RELATIVE, schedule=replace(GOOD.schedule, start_at=None))


def _periods(*pairs: tuple[float, float]) -> ChargingProfile:
    return replace(GOOD, schedule=replace(GOOD.schedule, periods=tuple(Period(*p) for p in pairs)))


def _sched(p: ChargingProfile, **kw: object) -> ChargingProfile:
    return replace(p, schedule=replace(p.schedule, **kw))  # type: ignore[arg-type]


# fmt: off
CASES: list[tuple[str, ChargingProfile, Reason]] = [
    ("absolute ok", GOOD, Reason.OK),
    ("recurring ok", RECURRING, Reason.OK),
    ("relative ok", RELATIVE, Reason.OK),
    ("absolute with validFrom only", replace(_sched(GOOD, start_at=None), valid_from=T0),
     Reason.OK),
    ("first offset not 0", _periods((10, 16)), Reason.INVALID_SCHEDULE),
    ("no periods", _periods(), Reason.INVALID_SCHEDULE),
    ("offsets not increasing", _periods((0, 16), (60, 10), (60, 8)), Reason.INVALID_SCHEDULE),
    ("offsets decreasing", _periods((0, 16), (60, 10), (30, 8)), Reason.INVALID_SCHEDULE),
    ("too many periods", _periods(*[(i * 60, 16) for i in range(49)]),
     Reason.TOO_MANY_PERIODS),
    ("48 periods fit", _periods(*[(i * 60, 16) for i in range(48)]), Reason.OK),
    ("absolute without start", _sched(GOOD, start_at=None), Reason.INVALID_SCHEDULE),
    ("recurring without start", _sched(RECURRING, start_at=None), Reason.INVALID_SCHEDULE),
    ("recurring without recurrency", replace(RECURRING, recurrency=None),
     Reason.INVALID_SCHEDULE),
    ("absolute with recurrency", replace(GOOD, recurrency=Recurrency.WEEKLY),
     Reason.INVALID_SCHEDULE),
    ("recurring period past the day", replace(RECURRING, schedule=replace(
        RECURRING.schedule, periods=(Period(0, 1), Period(90_000, 2)))), Reason.INVALID_SCHEDULE),
    ("recurring duration past the day", _sched(RECURRING, duration_s=90_000),
     Reason.INVALID_SCHEDULE),
    ("relative with startAt", _sched(RELATIVE, start_at=T0), Reason.INVALID_SCHEDULE),
    ("siteMax relative", replace(RELATIVE, layer=Layer.SITE_MAX), Reason.INVALID_SCHEDULE),
    ("negative limit", _periods((0, -1)), Reason.INVALID_SCHEDULE),
    ("nan limit", _periods((0, float("nan"))), Reason.INVALID_SCHEDULE),
    ("phases 4", _sched(GOOD, periods=(Period(0, 16, 4),)), Reason.INVALID_SCHEDULE),
    ("negative stack level", replace(GOOD, stack_level=-1), Reason.INVALID_SCHEDULE),
    ("connector 0", replace(GOOD, connector=0), Reason.INVALID_SCHEDULE),
    ("zero duration", _sched(GOOD, duration_s=0), Reason.INVALID_SCHEDULE),
    ("validTo before validFrom", replace(GOOD, valid_from=T0, valid_to=T0),
     Reason.INVALID_SCHEDULE),
    ("negative maxOfflineS", replace(GOOD, max_offline_s=-1), Reason.INVALID_SCHEDULE),
    ("maxOfflineS 0 allowed", replace(GOOD, max_offline_s=0), Reason.OK),
    ("negative randomizeStartS", _sched(GOOD, randomize_start_s=-5), Reason.INVALID_SCHEDULE),
]
# fmt: on


@pytest.mark.parametrize(("profile", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reason_codes(profile: ChargingProfile, reason: Reason) -> None:
    assert validate_profile(profile) is reason


def test_reason_strings_are_the_contract() -> None:
    assert [r.value for r in Reason][:4] == [
        "OK",
        "INVALID_SCHEDULE",
        "UNIT_UNSUPPORTED",
        "TOO_MANY_PERIODS",
    ]


def test_unit_unsupported_and_max_periods_configurable() -> None:
    only_amps = frozenset({RateUnit.A})
    watts = _sched(GOOD, unit=RateUnit.W)
    assert validate_profile(watts, supported_units=only_amps) is Reason.UNIT_UNSUPPORTED
    assert validate_profile(GOOD, max_periods=1) is Reason.TOO_MANY_PERIODS


def test_discharge_check() -> None:
    assert requires_discharge(_periods((0, 16), (60, -3)))
    assert not requires_discharge(GOOD)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (16, "A", (16, RateUnit.A)),
        (2300, "W", (2300, RateUnit.W)),
        (3.5, "kW", (3500, RateUnit.W)),
        (5, RateUnit.W, (5, RateUnit.W)),
        (1, "kVA", None),
        (1, "a", None),
    ],
)
def test_parse_limit(
    value: float, unit: str | RateUnit, expected: tuple[float, RateUnit] | None
) -> None:
    assert parse_limit(value, unit) == expected


def test_profile_dict_round_trip() -> None:
    full = replace(
        RECURRING,
        valid_from=T0,
        valid_to=T0 + 86_400 * 30,
        max_offline_s=900,
        connector=2,
        source_command_id="cmd-1",
        dsr=True,
        schedule=replace(RECURRING.schedule, duration_s=7200, randomize_start_s=300),
    )
    text = json.dumps(profile_to_dict(full))
    assert profile_from_dict(json.loads(text)) == full
    assert json.loads(text)["layer"] == "default"
