"""A twin charger without I/O: the example config, check-config's advice for a shared port,
one connector-id range, W <-> A per connector, siteMax shared by the engine, and the rule for a
group (all-connector) setLimit against a connector-specific one of the same priority."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agent.api import models
from agent.api.bounds import MAX_CONNECTORS
from agent.busplan import analyse
from agent.config import ConnectorConfig, parse_config
from agent.errors import ConfigError
from agent.limits import (
    ChargeContext,
    ChargingProfile,
    EngineConfig,
    Layer,
    LimitsEngine,
    LocalLimits,
    Period,
    ProfileKind,
    RateUnit,
    Schedule,
    StationInput,
    Status,
)

REPO = Path(__file__).resolve().parents[2]
TWIN = REPO / "config" / "twin.example.yaml"
T0 = 1_795_651_200.0


@pytest.fixture
def twin() -> dict[str, Any]:
    data = yaml.safe_load(TWIN.read_text())
    assert isinstance(data, dict)
    return data


# --- the shipped example -------------------------------------------------------------------

def test_check_config_accepts_the_twin_example() -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(TWIN)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "connector 1:" in proc.stdout and "connector 2:" in proc.stdout
    assert proc.stdout.count(": OK") == 2


def test_twin_example_documents_every_key(twin: dict[str, Any]) -> None:
    from tests.unit.test_config import _models

    text = TWIN.read_text()
    missing = [f"{m.__name__}.{name}" for m in _models() for name in m.model_fields
               if not re.search(rf"\b{name}\b\s*:", text)]
    assert not missing, missing
    cfg = parse_config(twin)
    assert [c.id for c in cfg.connectors] == [1, 2]
    for c in cfg.connectors:  # each its own pilot and relay board on its own port
        assert c.pilot_board.bus == c.relay_board.bus
    assert len({c.pilot_board.bus for c in cfg.connectors}) == 2


# --- check-config's advice for a shared port -----------------------------------------------

def one_control_port(twin: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(twin)
    d["buses"].pop("control-2")
    for i, c in enumerate(d["connectors"]):
        c["pilot_board"].update(bus="control-1", unit=1 + 2 * i)
        c["relay_board"].update(bus="control-1", unit=2 + 2 * i)
    return d


def test_an_overloaded_shared_port_gets_advice_that_fits(twin: dict[str, Any]) -> None:
    report = analyse(parse_config(one_control_port(twin)))
    assert not report.ok
    for c in report.connectors:
        assert any("periodic load" in r for r in c.reasons)
        fixes = " | ".join(c.fixes)
        # never "poll faster": that makes the overload worse
        assert "poll the pilot board faster" not in fixes
        own = next(f for f in c.fixes if f.startswith("give each connector its own control port"))
        assert "connector 1: pilot board + relay board on port 'control-1'" in own
        assert "connector 2: pilot board + relay board on port 'control-1-c2'" in own
        assert "within the 100 ms budget" in own
        slow = next(f for f in c.fixes if "pilot_board.poll_ms:" in f)
        poll = int(re.search(r"poll_ms: (\d+)", slow).group(1))  # type: ignore[union-attr]
        assert 14 < poll <= 100


def test_the_advised_poll_period_is_the_fastest_one_port_holds(twin: dict[str, Any]) -> None:
    d = one_control_port(twin)
    slow = next(f for f in analyse(parse_config(d)).connectors[0].fixes if "poll_ms:" in f)
    poll = int(re.search(r"poll_ms: (\d+)", slow).group(1))  # type: ignore[union-attr]
    for c in d["connectors"]:
        c["pilot_board"]["poll_ms"] = poll
    held = analyse(parse_config(d))
    assert not any("periodic load" in r for c in held.connectors for r in c.reasons)
    bound = max(c.bound_ms for c in held.connectors)
    assert f"worst case {bound:.1f} ms" in slow  # the advice states the bound it gives
    for c in d["connectors"]:
        c["pilot_board"]["poll_ms"] = poll - 1
    assert any("periodic load" in r for c in analyse(parse_config(d)).connectors
               for r in c.reasons)


def test_a_single_connector_config_gets_no_shared_port_advice(twin: dict[str, Any]) -> None:
    d = copy.deepcopy(twin)
    d["connectors"] = d["connectors"][:1]
    d["buses"]["control-1"]["baudrate"] = 9600
    report = analyse(parse_config(d))
    assert not report.ok
    assert not any("own control port" in f for f in report.connectors[0].fixes)


# --- one connector-id range --------------------------------------------------------------

def test_connector_ids_have_one_range_in_config_models_and_schemas(twin: dict[str, Any]) -> None:
    assert ConnectorConfig.model_fields["id"].metadata[1].le == MAX_CONNECTORS  # type: ignore
    schema = json.loads((REPO / "docs" / "schemas" / "state.json").read_text())
    text = json.dumps(schema)
    assert f'"maximum": {MAX_CONNECTORS}' in text and '"maximum": 16' not in text
    d = copy.deepcopy(twin)
    d["connectors"][1]["id"] = MAX_CONNECTORS
    parse_config(d)
    d["connectors"][1]["id"] = MAX_CONNECTORS + 1
    with pytest.raises(ConfigError, match=r"connectors\.1\.id"):
        parse_config(d)
    with pytest.raises(ValidationError):
        models.ConnectorSnapshot.model_validate({"connector": MAX_CONNECTORS + 1})
    many = copy.deepcopy(twin)
    many["connectors"] = [dict(copy.deepcopy(twin["connectors"][0]), id=i)
                          for i in range(1, MAX_CONNECTORS + 2)]
    with pytest.raises(ConfigError):
        parse_config(many)


# --- the engine on a station -----------------------------------------------------------------

def lease(pid: str, value: float, unit: RateUnit, layer: Layer = Layer.SITE_MAX,
          level: int = 0, connector: int | None = None) -> ChargingProfile:
    return ChargingProfile(pid, layer, level, ProfileKind.ABSOLUTE,
                           Schedule(unit, (Period(0.0, value),), T0 - 60), connector=connector)


def engine(*profiles: ChargingProfile) -> LimitsEngine:
    e = LimitsEngine(random.Random(1).uniform, EngineConfig(nominal_voltage_v=230.0),
                     random_delay_max_s=0)
    for p in profiles:
        assert e.apply_profile(p, T0 - 120).status is Status.ACCEPTED
    return e


def ctx(phases: int = 1, volts: float = 230.0, rated: float = 32.0) -> ChargeContext:
    return ChargeContext(phases_in_use=phases, nominal_voltage_v=volts,
                         local=LocalLimits(hardware_a=rated))


def test_w_limit_is_converted_with_each_connectors_own_phases_and_voltage() -> None:
    e = LimitsEngine(random.Random(1).uniform, EngineConfig(nominal_voltage_v=230.0),
                     random_delay_max_s=0)
    assert e.set_limit("kw", 11, "kW", 900, T0).status is Status.ACCEPTED
    three = e.composite(T0, 1, ctx(phases=3))
    one = e.composite(T0, 2, ctx(phases=1, volts=220.0))
    assert three.limit_a == pytest.approx(11000 / 690)  # 15.9 A per phase
    assert one.limit_a == pytest.approx(11000 / 220 if 11000 / 220 < 32 else 32.0)
    assert one.limit_a == 32.0 and one.source == "local:hardware"
    e.set_limit("kw", 4.4, "kW", 900, T0)  # replaces: same layer, level and target
    assert e.composite(T0, 2, ctx(phases=1, volts=220.0)).limit_a == pytest.approx(20.0)
    assert e.composite(T0, 1, ctx(phases=3)).limit_a == pytest.approx(4400 / 690)


def station(e: LimitsEngine, plugged: dict[int, bool], ctxs: dict[int, ChargeContext] | None = None,
            ) -> dict[int, float | None]:
    ctxs = ctxs or {1: ctx(), 2: ctx()}
    out = e.station(T0, {cid: StationInput(ctxs[cid], plugged[cid], plugged[cid])
                         for cid in ctxs})
    return {cid: c.limit_a for cid, c in out.items()}


def test_site_max_is_shared_and_reallocated() -> None:
    e = engine(lease("site", 20, RateUnit.A))
    assert station(e, {1: True, 2: False}) == {1: 20, 2: 0}
    assert station(e, {1: True, 2: True}) == {1: 10, 2: 10}
    assert station(e, {1: False, 2: True}) == {1: 0, 2: 20}


def test_site_max_below_two_minimums_pauses_the_later_arrival() -> None:
    e = engine(lease("site", 10, RateUnit.A))
    assert station(e, {1: False, 2: True}) == {1: 0, 2: 10}
    assert station(e, {1: True, 2: True}) == {1: 0, 2: 10}  # 1 came later: it waits
    assert station(e, {1: True, 2: False}) == {1: 10, 2: 0}


def test_site_max_in_w_counts_each_connector_at_its_own_volts() -> None:
    e = engine(lease("site", 13800, RateUnit.W))
    ctxs = {1: ctx(phases=3), 2: ctx(phases=1)}
    got = station(e, {1: True, 2: True}, ctxs)
    assert got[1] == pytest.approx(6900 / 690) and got[2] == pytest.approx(6900 / 230)
    assert got[1] * 690 + got[2] * 230 == pytest.approx(13800)  # type: ignore[operator]


def test_one_connector_station_is_the_plain_composite() -> None:
    e = engine(lease("site", 4, RateUnit.A))
    c = e.station(T0, {1: StationInput(ctx(), True, True)})[1]
    assert c == e.composite(T0, 1, ctx())
    assert c.limit_a == 0.0 and c.below_minimum


def test_a_site_max_profile_for_one_connector_is_refused() -> None:
    e = engine()
    r = e.apply_profile(lease("site", 20, RateUnit.A, connector=1), T0)
    assert r.status is Status.REJECTED


# --- group (all-connector) setLimit against a connector-specific one ---------------------------

def test_grid_same_priority_the_lower_of_group_and_connector_wins() -> None:
    e = engine()
    e.set_limit("group", 10, "A", 900, T0)  # a group command: no connector
    e.set_limit("mine", 16, "A", 900, T0, connector=1)
    c1, c2 = e.composite(T0, 1, ctx()), e.composite(T0, 2, ctx())
    assert (c1.limit_a, c1.command_id) == (10, "group")  # not lifted by the same priority
    assert (c2.limit_a, c2.command_id) == (10, "group")
    e.set_limit("tighter", 8, "A", 900, T0, connector=1)  # replaces "mine" (same target)
    c1 = e.composite(T0, 1, ctx())
    assert (c1.limit_a, c1.command_id) == (8, "tighter")
    assert e.composite(T0, 2, ctx()).limit_a == 10


def test_grid_a_higher_priority_connector_limit_lifts_the_group_one() -> None:
    e = engine()
    e.set_limit("group", 10, "A", 900, T0)
    e.set_limit("vip", 16, "A", 900, T0, priority=1, connector=1)
    assert e.composite(T0, 1, ctx()).limit_a == 16
    assert e.composite(T0, 2, ctx()).limit_a == 10


def test_default_layer_keeps_the_more_specific_profile() -> None:
    e = engine(lease("all", 10, RateUnit.A, Layer.DEFAULT),
               lease("one", 16, RateUnit.A, Layer.DEFAULT, connector=1))
    assert e.composite(T0, 1, ctx()).limit_a == 16
    assert e.composite(T0, 2, ctx()).limit_a == 10
