"""``commandStarted.appliedLimit`` repeats the command's unit: a setLimit in kW is held as W by
the limits engine and reported in kW again, also after a restart (limits.json)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.api.models import CommandStartedBody
from agent.limits import LimitsEngine
from agent.orderly.refs import commanded_limit


def _started(engine: LimitsEngine, command_id: str) -> dict[str, object]:
    (inst,) = [i for i in engine.installed if i.profile.source_command_id == command_id]
    body = CommandStartedBody(command_id=command_id, applied_limit=commanded_limit(inst.profile),
                              random_delay_s=0)
    return body.model_dump(by_alias=True, exclude_none=True)["appliedLimit"]


def _engine() -> LimitsEngine:
    return LimitsEngine(random.Random(0).uniform)


@pytest.mark.parametrize(("value", "unit", "held_w"), [
    (3.5, "kW", 3500.0), (7400.0, "W", None), (10.0, "A", None), (0.0, "kW", 0.0)])
def test_applied_limit_is_reported_in_the_commands_unit(value: float, unit: str,
                                                        held_w: float | None) -> None:
    engine = _engine()
    assert engine.set_limit("c1", value, unit, 600, now=1000.0).status.value == "accepted"
    (inst,) = engine.installed
    if held_w is not None:  # the engine computes in W ...
        assert inst.profile.schedule.periods[0].limit == held_w
    assert _started(engine, "c1") == {"value": value, "unit": unit}  # ... the event says kW


def test_the_unit_survives_a_restart() -> None:
    engine = _engine()
    engine.set_limit("c1", 11, "kW", 600, now=1000.0)
    again = LimitsEngine.from_dict(json.loads(json.dumps(engine.to_dict())),
                                   random.Random(0).uniform)
    assert _started(again, "c1") == {"value": 11.0, "unit": "kW"}


def test_state_written_before_the_field_existed_reads_as_watts() -> None:
    engine = _engine()
    engine.set_limit("c1", 3.5, "kW", 600, now=1000.0)
    data = json.loads(json.dumps(engine.to_dict()))
    for entry in data["profiles"]:
        del entry["profile"]["commandedKw"]
    assert _started(LimitsEngine.from_dict(data, random.Random(0).uniform), "c1") == {
        "value": 3500.0, "unit": "W"}


@given(st.decimals(min_value=0, max_value=1000, places=3))
def test_kw_round_trips_exactly(kw: object) -> None:
    value = float(str(kw))
    engine = _engine()
    engine.set_limit("c1", value, "kW", 600, now=1000.0)
    assert _started(engine, "c1") == {"value": value, "unit": "kW"}
