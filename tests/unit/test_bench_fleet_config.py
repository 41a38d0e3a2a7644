"""P6's fleet config is one the agent accepts (a 100 ms pilot poll broke P6 once the idle poll
existed: its default 40 ms was below the fleet's poll)."""

from __future__ import annotations

import pytest

from agent.config import parse_config
from hil.bench.fleet_worker import fleet_config_data


@pytest.mark.parametrize("poll_ms", [40.0, 100.0])  # P6 runs at 100 ms
def test_the_fleet_config_parses(poll_ms: float) -> None:
    cfg = parse_config(fleet_config_data(poll_ms), source="test")
    board = cfg.connectors[0].pilot_board
    assert board.poll_ms == poll_ms and board.idle_poll_ms >= poll_ms
