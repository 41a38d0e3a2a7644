"""check-config times the very transactions the shell hands to each bus, no copy in between.

The shell's wiring builds the drivers from ``agent.driver_wires`` and tells each bus what its
drivers declared; the bus plan times the same declarations. Both are built here from the example
configs (no I/O: the buses are never started) and must agree transaction for transaction.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.busplan import analyse
from agent.config import ConnectorConfig, parse_config
from agent.shell.wiring import make_bus, make_controller
from agent.shell.wiring_wallbox import make_wallbox
from drivers.bus import BusScheduler
from drivers.wire import Priority

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config").glob("*.example.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_bound_covers_exactly_what_the_buses_run(path: Path) -> None:
    cfg = parse_config(yaml.safe_load(path.read_text()))
    buses: dict[str, BusScheduler] = {n: make_bus(n, b) for n, b in cfg.buses.items()}
    for conn in cfg.connectors:
        if isinstance(conn, ConnectorConfig):
            make_controller(cfg, conn, buses)
        else:
            make_wallbox(cfg, conn, buses)
    report = analyse(cfg)
    for bus in report.buses:
        timed = {t.wire for t in bus.transactions}
        assert timed == buses[bus.name].declared, bus.name
        assert all(t.priority == t.wire.priority.name for t in bus.transactions if t.wire)
        assert all(t.period_s == t.wire.period_s for t in bus.transactions if t.wire)


def test_only_safety_writes_jump_the_queue_and_reads_are_not_called_writes() -> None:
    cfg = parse_config(yaml.safe_load((ROOT / "config/evse-agent.example.yaml").read_text()))
    rows = [t for b in analyse(cfg).buses for t in b.transactions]
    assert {t.priority for t in rows if t.wire and t.wire.is_read} <= {
        Priority.PILOT_POLL.name, Priority.CONTROL.name, Priority.METER_READ.name}
    assert {t.label for t in rows if t.priority == Priority.SAFETY_WRITE.name} == {
        "c1 contactor open FC05"}
