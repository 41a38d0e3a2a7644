"""Without an aggregator: the installer's limit applies, persists, and status says where it is from.

The connector controller is a stand-in holding a real pilot machine (what the service feeds);
the service, its file and the machine's resulting ceiling are the real ones.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agent.config import AgentConfig, parse_config
from agent.orderly.installer import (
    FILE_NAME,
    InstallerLimits,
    LimitValueError,
    parse_limit,
)
from agent.orderly.local import LocalService, local_limit_in_force
from agent.pilot import PilotMachine
from agent.shell.app import AgentApp
from agent.shell.handle import ConnectorStats, HardwareInfo
from agent.shell.wiring import pilot_settings

REPO = Path(__file__).resolve().parents[2]


@dataclass
class StandInController:
    """What LocalService uses of a ConnectorController: id, machine, stats, feed, on_event."""

    id: int
    machine: PilotMachine
    stats: ConnectorStats = field(default_factory=ConnectorStats)
    on_event: Any = None
    hardware: HardwareInfo = field(default_factory=HardwareInfo)

    def feed_first(self, event: Any) -> None:  # no run(): stepped at once
        self.machine.step(event, time.monotonic())

    async def feed(self, event: Any) -> Any:
        return self.machine.step(event, time.monotonic())


def config(tmp_path: Path, **connector: Any) -> AgentConfig:
    data = yaml.safe_load((REPO / "config" / "evse-agent.example.yaml").read_text())
    data["mqtt"] = None
    data["state_dir"] = str(tmp_path)
    # a fixed cable of 32 A: the cable term is known without a CC reading
    data["connectors"][0].update({"connection": "cable", "cable_rating_a": 32.0,
                                  "rated_current_a": 32.0, **connector})
    return parse_config(data, source="test")


def service(cfg: AgentConfig) -> tuple[LocalService, StandInController]:
    conn = cfg.connectors[0]
    ctl = StandInController(conn.id, PilotMachine(pilot_settings(cfg.profile, conn, cfg.safety)))
    return LocalService(cfg, [ctl]), ctl  # type: ignore[list-item]


def test_configured_local_limit_applies_without_mqtt(tmp_path: Path) -> None:
    svc, ctl = service(config(tmp_path, local_limit_a=13.0))
    assert ctl.machine.requested_current_a == 13.0
    lim = svc.status(1)["limit"]
    assert (lim["limitA"], lim["source"], lim["layer"]) == (13.0, "config", "local")
    assert lim["ref"] == "connectors[id=1].local_limit_a"


async def test_installer_limit_survives_a_restart_and_none_restores_the_config(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, local_limit_a=20.0)
    svc, ctl = service(cfg)
    await svc.set_limit(1, 10.0)
    assert ctl.machine.requested_current_a == 10.0
    lim = svc.status(1)["limit"]
    assert (lim["limitA"], lim["source"]) == (10.0, "installer")
    assert lim["since"] is not None and FILE_NAME in lim["ref"]
    stored = json.loads((tmp_path / FILE_NAME).read_text())
    assert stored["connectors"]["1"]["limitA"] == 10.0

    svc2, ctl2 = service(cfg)  # a restart: a new service on the same state directory
    assert ctl2.machine.requested_current_a == 10.0
    assert svc2.status(1)["limit"]["source"] == "installer"
    assert svc2.status(1)["limit"]["since"] == lim["since"]

    await svc2.set_limit(1, None)
    assert ctl2.machine.requested_current_a == 20.0
    assert svc2.status(1)["limit"]["source"] == "config"
    _, ctl3 = service(cfg)
    assert ctl3.machine.requested_current_a == 20.0


async def test_without_any_site_limit_the_cable_or_hardware_is_in_force(tmp_path: Path) -> None:
    svc, ctl = service(config(tmp_path, cable_rating_a=16.0))
    lim = svc.status(1)["limit"]
    assert (lim["limitA"], lim["source"]) == (16.0, "cable")
    await svc.set_limit(1, 40.0)  # above the cable: the cable still binds
    assert svc.status(1)["limit"]["source"] == "cable"
    assert ctl.machine.requested_current_a == 16.0


def test_a_corrupt_limits_file_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{not json")
    limits = InstallerLimits(tmp_path)
    assert limits.get(1) is None
    assert list(tmp_path.glob(f"{Path(FILE_NAME).stem}.corrupt-*"))


async def test_local_api_refuses_a_bad_limit_and_keeps_the_old_one(tmp_path: Path) -> None:
    cfg = config(tmp_path, local_limit_a=12.0)
    app = AgentApp(cfg)
    svc, ctl = service(cfg)
    app.local = svc
    app._controllers = {1: ctl}  # type: ignore[dict-item]
    for bad in ("abc", -1, 81, "nan", True):
        with pytest.raises(LimitValueError):
            await app.handle_local({"cmd": "limit", "connector": 1, "limit_a": bad})
    assert ctl.machine.requested_current_a == 12.0
    reply = await app.handle_local({"cmd": "limit", "connector": 1, "limit_a": 7.5})
    assert reply["connector"]["limit"]["limitA"] == 7.5
    assert app.status()["connectors"][0]["limit"]["source"] == "installer"


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)))
def test_parse_limit_accepts_exactly_amperes_0_to_80_or_none(value: float | str) -> None:
    try:
        number = float(value)
    except ValueError:
        number = None
    expect_none = isinstance(value, str) and value.strip().lower() == "none"
    ok = number is not None and math.isfinite(number) and 0 <= number <= 80
    if expect_none:
        assert parse_limit(value) is None
    elif ok:
        assert parse_limit(value) == number
    else:
        with pytest.raises(LimitValueError):
            parse_limit(value)


@given(site=st.none() | st.floats(0, 80), cable=st.none() | st.floats(6, 80),
       hw=st.floats(6, 80))
def test_the_lowest_local_term_is_in_force(site: float | None, cable: float | None,
                                           hw: float) -> None:
    value, source = local_limit_in_force(site, "installer", cable, hw)
    terms = {"installer": site, "cable": cable, "hardware": hw}
    assert value == min(v for v in terms.values() if v is not None)
    assert terms[source] == value
