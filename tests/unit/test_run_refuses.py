"""``evse-agent run`` refuses what ``check-config`` refuses, before it opens a port or writes state.

The real CLI runs as a child process; the serial port is a real pty whose other end would see
the safe-state frames the agent writes first thing after start-up.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "evse-agent.example.yaml"
CLI = [sys.executable, "-m", "agent.cli"]
TIMEOUT_S = 60


def _one_slow_bus(port: str, state_dir: Path) -> dict[str, Any]:
    """Boards and a three-phase meter on one 9600-baud bus: the bound is ~600 ms."""
    d = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    d["state_dir"] = str(state_dir)
    d["buses"] = {"rs485": {"kind": "serial", "port": port, "baudrate": 9600,
                            "timeout_ms": 200, "device_latency_ms": 10}}
    conn = d["connectors"][0]
    for part in ("pilot_board", "relay_board", "meter"):
        conn[part]["bus"] = "rs485"
    conn["meter"].update(unit=3, model="dtsu666")
    return d


@pytest.fixture
def pty_port() -> Iterator[tuple[int, str]]:
    """A real pty: (master fd, slave path). The agent would open the slave as its port."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)  # the master keeps the pair alive; the agent may open the slave by path
    os.set_blocking(master, False)
    try:
        yield master, path
    finally:
        os.close(master)


def _pending(master: int, wait_s: float) -> bytes:
    """Bytes written to the slave within ``wait_s`` (empty when nobody wrote)."""
    ready, _, _ = select.select([master], [], [], wait_s)
    if not ready:
        return b""
    with contextlib.suppress(BlockingIOError, OSError):  # EIO: no slave open any more
        return os.read(master, 4096)
    return b""


def _write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=False,
                          timeout=TIMEOUT_S)


def _lines(text: str, prefix: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(prefix)]


def test_run_refuses_over_budget_with_check_configs_reasons_and_never_touches_the_port(
        tmp_path: Path, pty_port: tuple[int, str]) -> None:
    master, port = pty_port
    state = tmp_path / "state"
    cfg = _write(tmp_path, "one-bus.yaml", _one_slow_bus(port, state))

    checked = _cli("check-config", str(cfg))
    run = _cli("run", "-c", str(cfg))

    assert checked.returncode == 3
    assert run.returncode == 3, run.stdout + run.stderr
    reasons, fixes = _lines(checked.stdout, "reason:"), _lines(checked.stdout, "to fix:")
    assert any("exceeds the 100 ms budget" in r for r in reasons)
    assert fixes
    for line in reasons + fixes:  # the same reasons and fixes, word for word
        assert line in run.stderr, f"{line!r} missing from run's output:\n{run.stderr}"
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    refused = [e for e in events if e.get("event") == "startup_refused"]
    assert refused and refused[0]["connectors"][0]["fixes"] == [f[len("to fix: "):]
                                                                for f in fixes]
    assert not any(e.get("event") == "agent_ready" for e in events)
    assert _pending(master, 0.2) == b"", "run wrote to the serial port of a refused config"
    assert not state.exists(), "run created its state directory for a refused config"


def test_the_pty_check_can_fail_an_accepted_config_writes_to_the_port(
        tmp_path: Path, pty_port: tuple[int, str]) -> None:
    """The same config with the override starts and drives the safe state on the port: what
    the refusal test asserts does not happen is observable."""
    master, port = pty_port
    data = _one_slow_bus(port, tmp_path / "state")
    data["safety"]["accept_reaction_bound_over_budget"] = True
    cfg = _write(tmp_path, "accepted.yaml", data)
    proc = subprocess.Popen([*CLI, "run", "-c", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            seen = _pending(master, 0.2)
        assert seen, "the accepted config never wrote to its port"
        assert (tmp_path / "state").is_dir()
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    warned = [e for e in events if e.get("event") == "reaction_bound_over_budget_accepted"]
    assert warned and warned[0]["level"] == "warning"


def test_run_refuses_over_budget_even_when_the_port_does_not_exist(tmp_path: Path) -> None:
    """The bound is the error, not the port: a missing port would otherwise have the agent
    wait for its boards forever (startup_safe_state_pending)."""
    missing = tmp_path / "no-such-adapter"
    cfg = _write(tmp_path, "one-bus.yaml", _one_slow_bus(str(missing), tmp_path / "state"))
    run = _cli("run", "-c", str(cfg))
    assert run.returncode == 3, run.stdout + run.stderr
    assert "exceeds the 100 ms budget" in run.stderr
    assert "startup_safe_state_pending" not in run.stdout
    assert not missing.exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize("breakage", ["unknown_key", "out_of_range", "unknown_bus", "missing"])
def test_run_refuses_an_invalid_config_exactly_as_check_config_does(tmp_path: Path,
                                                                    breakage: str) -> None:
    data = _one_slow_bus(str(tmp_path / "port"), tmp_path / "state")
    data["safety"]["accept_reaction_bound_over_budget"] = True  # only validation can refuse
    if breakage == "unknown_key":
        data["safety"]["reaction_budget"] = 90
    elif breakage == "out_of_range":
        data["safety"]["reaction_budget_ms"] = 250
    elif breakage == "unknown_bus":
        data["connectors"][0]["meter"]["bus"] = "meter"
    cfg = tmp_path / "broken.yaml"
    if breakage != "missing":
        _write(tmp_path, cfg.name, data)
    checked = _cli("check-config", str(cfg))
    run = _cli("run", "-c", str(cfg))
    assert checked.returncode == run.returncode == 2
    assert checked.stderr.startswith("configuration error:")
    assert run.stderr == checked.stderr
    assert not (tmp_path / "state").exists()


def test_check_config_with_the_override_passes_and_says_so(tmp_path: Path) -> None:
    data = _one_slow_bus("/dev/evse-control", tmp_path / "state")
    data["safety"]["accept_reaction_bound_over_budget"] = True
    cfg = _write(tmp_path, "accepted.yaml", data)
    text = _cli("check-config", str(cfg))
    as_json = _cli("check-config", "--json", str(cfg))
    assert text.returncode == as_json.returncode == 0
    assert "OVER BUDGET, accepted by safety.accept_reaction_bound_over_budget" in text.stdout
    assert "reason:" in text.stdout and "to fix:" in text.stdout
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["refused"] is False
    assert report["overBudgetAccepted"] is True
