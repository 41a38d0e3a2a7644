"""Config validation: the example is valid; errors name the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_config, parse_config
from agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "evse-agent.example.yaml"


@pytest.fixture
def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def test_example_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.profile == "gbt18487-2015"
    assert set(cfg.buses) == {"control", "meter"}
    assert cfg.connectors[0].meter.model == "ddsu666"


def _problems(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_unknown_key_is_named_with_a_fix(example: dict[str, Any]) -> None:
    example["safety"]["debounce_sampels"] = 2
    (key, _msg, fix), = _problems(example)
    assert key == "safety.debounce_sampels"
    assert "remove" in fix


def test_out_of_range_value(example: dict[str, Any]) -> None:
    example["connectors"][0]["pilot_board"]["poll_ms"] = 500
    (key, _msg, fix), = _problems(example)
    assert key == "connectors.0.pilot_board.poll_ms"
    assert fix == "lower the value"


def test_unknown_bus_reference(example: dict[str, Any]) -> None:
    example["connectors"][0]["meter"]["bus"] = "rs485-2"
    (_key, msg, _fix), = _problems(example)
    assert "unknown bus 'rs485-2'" in msg and "control, meter" in msg


def test_unit_collision_on_a_bus(example: dict[str, Any]) -> None:
    example["connectors"][0]["relay_board"]["unit"] = 1
    (_key, msg, _fix), = _problems(example)
    assert "already" in msg


def test_custom_meter_needs_registers(example: dict[str, Any]) -> None:
    bad = copy.deepcopy(example)
    bad["connectors"][0]["meter"]["model"] = "custom"
    assert "registers" in _problems(bad)[0][1]


def test_cable_connection_needs_rating(example: dict[str, Any]) -> None:
    example["connectors"][0]["connection"] = "cable"
    assert "cable_rating_a" in _problems(example)[0][1]


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("buses: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _models() -> list[type[Any]]:
    from agent import config as c

    return [c.AgentConfig, c.SerialBus, c.TcpBus, c.ConnectorConfig, c.PilotBoardConfig,
            c.RelayBoardConfig, c.MeterConfig, c.MeterRegisterConfig, c.SafetyConfig,
            c.LoggingConfig, c.MqttConfig, c.FailsafeConfig, c.WebConfig]


def test_every_config_key_is_documented_in_the_example() -> None:
    import re

    text = EXAMPLE.read_text()
    missing = [f"{m.__name__}.{name}" for m in _models() for name in m.model_fields
               if not re.search(rf"\b{name}\b\s*:", text)]
    assert not missing, f"document these keys in {EXAMPLE.name}: {missing}"


def test_commented_mqtt_example_is_valid(example: dict[str, Any]) -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# mqtt:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    example["mqtt"] = yaml.safe_load("\n".join(block))["mqtt"]
    cfg = parse_config(example)
    assert cfg.mqtt is not None and cfg.mqtt.tls and cfg.mqtt.cert_file is not None


def test_a_boards_config_does_not_load_the_wallbox_code() -> None:
    """The retrofit's config models, profiles, machine and driver cost RSS (BENCHMARKS.md P3):
    an agent without a wallbox loads none of them; one with a wallbox still validates it."""
    import subprocess
    import sys

    retrofit = EXAMPLE.with_name("retrofit-heidelberg.example.yaml")
    code = (
        "import sys\n"
        "from agent.config import load_config\n"
        "import agent.shell.app, agent.shell.wiring, agent.busplan, agent.orderly.service\n"
        f"cfg = load_config({str(EXAMPLE)!r})\n"
        "agent.busplan.analyse(cfg)\n"
        "print(sorted(m for m in sys.modules if 'wallbox' in m))\n"
        f"cfg = load_config({str(retrofit)!r})\n"
        "print(type(cfg.connectors[0]).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split("\n")
    assert out[0] == "[]", out[0]
    assert out[1] == "agent.config_wallbox"


def test_the_daemon_imports_structlog_without_greenlet() -> None:
    """greenlet (a dev dependency through playwright) costs the daemon ~1.1 MB when structlog
    finds it; it stays importable for everyone else after the daemon's import."""
    import importlib.util
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from agent.cli import import_structlog_without_greenlet\n"
        "import_structlog_without_greenlet()\n"
        "import structlog, structlog.threadlocal, threading\n"
        "print('greenlet' in sys.modules, structlog.threadlocal.ThreadLocal is threading.local)\n"
        "import importlib.util\n"
        "print(importlib.util.find_spec('greenlet') is not None)\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    lines = out.stdout.split("\n")
    assert lines[0] == "False True", out
    assert lines[1] == str(importlib.util.find_spec("greenlet") is not None)


def _thread_arenas(call: bool) -> int:
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from agent.cli import one_malloc_arena\n"
        f"asked = one_malloc_arena() if {call} else False\n"
        "keep = []\n"
        "t = threading.Thread(target=lambda: keep.extend(bytearray(2000) for _ in range(2000)))\n"
        "t.start(); t.join()\n"
        "maps = open('/proc/self/maps').read().splitlines()\n"
        # a thread arena: a 64 MB-aligned anonymous mapping (its heap) followed by its reserve
        "n = sum(1 for m in maps if m.split()[0].split('-')[0].endswith('000000')\n"
        "        and len(m.split()) == 5 and m.split()[1] == 'rw-p')\n"
        "print(asked, n)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env, cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out[0] == str(call), out
    return int(out[1])


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_the_daemon_threads_share_one_malloc_arena() -> None:
    """The store writer's allocations go to the main arena, not a 64 MB arena of its own."""
    assert _thread_arenas(call=True) < _thread_arenas(call=False)
