"""The web process (``evse-agent web``): token file, CSRF/Origin/Host checks, refusals and the
security log, server-sent events, and the metric names the README lists.

The web app runs for real (aiohttp on a loopback port, requests over HTTP). For the refusal
matrix and the event stream the agent's side of the control socket is a small Unix-socket server
speaking the same one-line JSON protocol and recording what it receives (so "nothing reached the
agent" can be checked); ``test_against_the_agents_own_socket`` uses AgentApp's own socket,
handler and panel status with a real pilot machine. The whole chain against the agent on the rig
is ``tests/hil/test_web_page.py`` (a real browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from agent import localapi
from agent.config import WebConfig, parse_config
from agent.errors import ConfigError
from agent.web.auth import Gate, WrongTokenThrottle, load_token, token_path
from agent.web.metrics import registry
from agent.web.server import build_app
from agent.web.source import merge_patch

REPO = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef0123456789abcdef"
PORT = 8080  # the Host/Origin the gate expects; TestServer listens elsewhere, so we set Host


def panel(state: str = "IDLE", offered: float | None = None) -> dict[str, Any]:
    """A panel-status reply with the shape agent.shell.panel produces."""
    return {
        "ok": True, "deviceId": "CN-BJ-0001", "pid": 1, "ready": True, "now": 1.8e9,
        "uptimeS": 10.0, "maxLoopLagMs": 3.0,
        "connectors": [{
            "connector": 1, "state": state, "evLevel": "STATE_1", "cpMv": 12000,
            "offeredCurrentA": offered, "dutyPermille": 1000,
            "limit": {"a": 32.0, "source": "hardware"}, "ratedA": 32.0, "cableA": None,
            "phases": 1, "connection": "socket", "authorisation": "auto", "authorised": False,
            "contactor": {"commanded": False, "feedback": False, "closes": 3},
            "lock": {"commanded": False, "feedback": False}, "temperatureC": 25.0,
            "meter": {"voltageV": [220.0], "currentA": [0.0], "powerW": 0.0,
                      "energyImportWh": 1500.0},
            "faults": [{"code": "METER_LOST", "safety": False, "description": "d",
                        "clearing": "c"}],
            "errors": {"pilot": 0, "relay": 0, "meter": 0}, "loopLagMs": 3.0, "sessions": []}],
        "reactionBound": {"budgetMs": 100.0, "boundMs": {"1": 83.9},
                          "overBudgetAccepted": False, "reasons": []},
        "buses": {"control": {"transactions": 10, "ok": 9, "timeouts": 1, "garbled": 0,
                              "io_errors": 0, "exceptions": 0, "retries": 0, "reconnects": 0,
                              "busy_s": 0.5, "queue_wait_max_s": {}}},
        "link": {"connected": True, "since": 1.8e9, "connects": 3, "protocol": "5",
                 "lastError": None, "backlog": 7, "failsafe": False, "lastCommand": None},
    }


class StandInAgent:
    """The agent's end of the control socket: answers status, records every other command."""

    def __init__(self, state_dir: Path) -> None:
        self.path = localapi.socket_path(state_dir)
        self.status = panel()
        self.received: list[dict[str, Any]] = []
        self.status_requests = 0
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = json.loads(await reader.readline())
        if req.get("cmd") == "status":
            self.status_requests += 1
            reply = self.status
        else:
            self.received.append(req)
            reply = {"ok": True, "connector": {"connector": req.get("connector")}}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> StandInAgent:
        with localapi.bindable(self.path) as where:
            self.server = await asyncio.start_unix_server(self._serve, path=where)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


def web_config(tmp_path: Path, **web: Any) -> Any:
    data = {"device_id": "CN-BJ-0001", "state_dir": str(tmp_path / "state"),
            "buses": {"control": {"kind": "serial", "port": "/dev/null", "baudrate": 115200}},
            "connectors": [{"pilot_board": {"bus": "control", "unit": 1},
                            "relay_board": {"bus": "control", "unit": 2},
                            "meter": {"bus": "control", "unit": 3, "model": "DDSU666"}}],
            "web": {"poll_ms": 200, **web}}
    return parse_config(data)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[StandInAgent]:
    (tmp_path / "state").mkdir()
    async with StandInAgent(tmp_path / "state") as a:
        yield a


@pytest.fixture
async def web(tmp_path: Path, agent: StandInAgent) -> AsyncIterator[tuple[str, ClientSession]]:
    server = TestServer(build_app(web_config(tmp_path), token=TOKEN))
    await server.start_server()
    async with ClientSession() as session:
        yield f"http://127.0.0.1:{server.port}", session
    await server.close()


def good_headers(**extra: str) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{PORT}", "Origin": f"http://127.0.0.1:{PORT}",
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **extra}


def security_log(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "security.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- the token file ----------------------------------------------------------------------------

def write_token(tmp_path: Path, mode: int, text: str = TOKEN) -> Path:
    path = tmp_path / "web.token"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_token_file_is_read(tmp_path: Path, mode: int) -> None:
    assert load_token(write_token(tmp_path, mode)) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o660, 0o666])
def test_token_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_token(tmp_path, mode)
    with pytest.raises(ConfigError, match="group or others") as caught:
        load_token(path)
    assert caught.value.key == "web.token_file" and TOKEN not in str(caught.value)


def test_short_or_missing_token_is_refused_and_none_means_read_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too short"):
        load_token(write_token(tmp_path, 0o600, "secret"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_token(tmp_path / "absent")
    assert load_token(None) is None
    assert WebConfig().token_file is None  # no default credential


def test_systemd_credential_wins_over_token_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "web-token").write_text(TOKEN)
    cfg = WebConfig(token_file=tmp_path / "other")
    assert token_path(cfg, {"CREDENTIALS_DIRECTORY": str(creds)}) == creds / "web-token"
    assert token_path(cfg, {}) == tmp_path / "other"


def test_the_web_command_refuses_a_readable_token_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    cfg = web_config(tmp_path).model_dump(mode="json")
    cfg["web"]["token_file"] = str(write_token(tmp_path, 0o644))
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "web", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "web.token_file" in proc.stderr or "token file" in proc.stderr


# --- the gate (CSRF, DNS rebinding, token) ------------------------------------------------------

def test_gate_reasons() -> None:
    gate = Gate.for_config(WebConfig(public_origin="https://charger.example.net"), TOKEN)
    ok = {"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080",
          "authorization": f"Bearer {TOKEN}"}
    assert gate.refusal(**ok) is None
    assert gate.refusal(**{**ok, "origin": None}) is None  # curl and scripts send no Origin
    assert gate.refusal(**{**ok, "host": "charger.example.net",
                           "origin": "https://charger.example.net"}) is None
    assert gate.refusal(**{**ok, "origin": "https://evil.example"}) == "origin_not_allowed"
    assert gate.refusal(**{**ok, "host": "evil.example:8080"}) == "host_not_allowed"
    assert gate.refusal(**{**ok, "authorization": None}) == "token_missing"
    assert gate.refusal(**{**ok, "authorization": "Bearer x" + TOKEN}) == "token_wrong"
    assert Gate.for_config(WebConfig(), None).refusal(**ok) == "no_token_configured"


def test_public_origin_must_be_an_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="public_origin"):
        web_config(tmp_path, public_origin="https://host/path")


# --- actions over HTTP --------------------------------------------------------------------------

async def test_an_accepted_action_reaches_the_agent_and_the_security_log(
        web: tuple[str, ClientSession], agent: StandInAgent, tmp_path: Path) -> None:
    base, http = web
    async with http.post(f"{base}/api/connectors/1/limit", json={"limitA": 10},
                         headers=good_headers()) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["ok"] is True
    assert agent.received == [{"cmd": "limit", "connector": 1, "limit_a": 10, "via": "web"}]
    entries = security_log(tmp_path)
    assert [e["what"] for e in entries] == ["webAction"]
    assert entries[0]["action"] == "limit" and entries[0]["request"] == {"limit_a": 10,
                                                                          "via": "web"}
    assert TOKEN not in (tmp_path / "state" / "security.log").read_text()


@pytest.mark.parametrize(("change", "status", "reason"), [
    ({"Authorization": None}, 401, "token_missing"),
    ({"Authorization": "Bearer wrong-token-wrong-token"}, 401, "token_wrong"),
    ({"Origin": "https://evil.example"}, 403, "origin_not_allowed"),
    ({"Host": "evil.example:8080"}, 403, "host_not_allowed"),
    ({"Content-Type": "text/plain"}, 415, "json_required"),  # a form post from another site
])
async def test_refused_actions_never_reach_the_agent_and_are_logged(
        web: tuple[str, ClientSession], agent: StandInAgent, tmp_path: Path,
        change: dict[str, str | None], status: int, reason: str) -> None:
    base, http = web
    headers = {k: v for k, v in {**good_headers(), **change}.items() if v is not None}
    async with http.post(f"{base}/api/connectors/1/reset", data=b"{}", headers=headers) as r:
        assert r.status == status
        assert (await r.json())["reason"] == reason
    assert agent.received == []
    entries = security_log(tmp_path)
    assert [(e["what"], e["reason"], e["action"]) for e in entries] == [
        ("webActionRefused", reason, "reset")]


async def test_start_stop_only_where_remote_authorisation_is_configured(
        web: tuple[str, ClientSession], agent: StandInAgent) -> None:
    base, http = web
    for action in ("start", "stop"):
        async with http.post(f"{base}/api/connectors/1/{action}", json={},
                             headers=good_headers()) as r:
            assert r.status == 409 and (await r.json())["reason"] == "not_configured"
    async with http.post(f"{base}/api/connectors/1/limit", json={"limitA": 500},
                         headers=good_headers()) as r:
        assert r.status == 400 and (await r.json())["reason"] == "bad_limit"
    async with http.post(f"{base}/api/connectors/9/reset", json={},
                         headers=good_headers()) as r:
        assert r.status == 404
    assert agent.received == []


async def test_without_a_token_file_every_action_is_refused(
        tmp_path: Path, agent: StandInAgent) -> None:
    server = TestServer(build_app(web_config(tmp_path), token=None))
    await server.start_server()
    try:
        async with ClientSession() as http, http.post(
                f"http://127.0.0.1:{server.port}/api/connectors/1/reset", json={},
                headers=good_headers()) as r:
            assert r.status == 403 and (await r.json())["reason"] == "no_token_configured"
    finally:
        await server.close()
    assert agent.received == []


async def test_page_is_served_with_a_strict_content_security_policy(
        web: tuple[str, ClientSession]) -> None:
    base, http = web
    async with http.get(f"{base}/") as r:
        assert r.status == 200 and "/static/app.js" in await r.text()
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    for name in ("app.js", "i18n.js", "style.css"):
        async with http.get(f"{base}/static/{name}") as r:
            assert r.status == 200


# --- live updates ---------------------------------------------------------------------------------

async def read_event(stream: Any) -> tuple[str, dict[str, Any]]:
    event, data = "", ""
    while True:
        line = (await stream.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event:
            return event, json.loads(data)


async def test_events_send_a_snapshot_then_what_changed(
        web: tuple[str, ClientSession], agent: StandInAgent) -> None:
    base, http = web
    async with http.get(f"{base}/api/events") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        kind, full = await read_event(r.content)
        assert kind == "full" and full["status"]["connectors"][0]["state"] == "IDLE"
        assert full["web"]["actionsEnabled"] is True
        agent.status = panel("CHARGING", 16.0)
        while True:
            kind, patch = await asyncio.wait_for(read_event(r.content), 10)
            assert kind == "patch"
            if "connectors" in patch.get("status", {}):
                break
        state = merge_apply(copy.deepcopy(full), patch)
        assert state["status"]["connectors"][0]["state"] == "CHARGING"
        assert state["status"]["connectors"][0]["offeredCurrentA"] == 16.0


async def test_events_say_when_the_agent_is_gone(
        web: tuple[str, ClientSession], agent: StandInAgent) -> None:
    base, http = web
    async with http.get(f"{base}/api/events") as r:
        _, full = await read_event(r.content)
        assert full["agent"]["reachable"] is True
        await agent.__aexit__()  # the agent stops
        os.unlink(agent.path)
        while True:
            _, patch = await asyncio.wait_for(read_event(r.content), 10)
            if "agent" in patch:
                break
        assert patch["agent"]["reachable"] is False
        assert "status" not in patch  # the last known state stays, marked stale by the page


def merge_apply(target: Any, patch: Any) -> Any:
    """RFC 7386 apply (what app.js does)."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_apply(target.get(key), value)
    return target


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=3), max_leaves=12)
json_objects = st.dictionaries(st.text(max_size=2), json_values, max_size=4)


def _without_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _without_nulls(x) for k, x in v.items() if x is not None}
    return v


@given(json_objects, json_objects)
def test_merge_patch_turns_old_into_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    # A null member means "removed" in a merge patch, so compare with nulls dropped (as the
    # page does: a missing field and a null field render the same).
    patched = merge_apply(copy.deepcopy(_without_nulls(old)), merge_patch(
        _without_nulls(old), _without_nulls(new)))
    assert patched == _without_nulls(new)


# --- metrics --------------------------------------------------------------------------------------

def readme_metrics() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(evse_[a-z_]+)`", section))


def exposed(snapshot: dict[str, Any]) -> set[str]:
    from prometheus_client import generate_latest

    text = generate_latest(registry(lambda: snapshot)).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metric_names_are_the_readme_list_and_conventional() -> None:
    reply = panel("CHARGING", 16.0)
    reply.pop("ok")
    names = exposed({"agent": {"reachable": True}, "status": reply})
    assert names == readme_metrics()
    for name in names:
        assert re.fullmatch(r"evse_[a-z]+(_[a-z0-9]+)*", name)
        assert not name.endswith("_total") or "_total" not in name[:-6]
    assert exposed({"agent": {"reachable": False}}) == {"evse_agent_up"}


async def test_metrics_endpoint_reads_the_agent(web: tuple[str, ClientSession]) -> None:
    base, http = web
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert 'evse_connector_fault_active{code="METER_LOST",connector="1"} 1.0' in text
    assert 'evse_connector_state{connector="1",state="IDLE"} 1.0' in text
    assert "evse_journal_backlog_messages 7.0" in text
    assert "evse_mqtt_reconnects_total 2.0" in text
    assert 'evse_bus_timeouts_total{bus="control"} 1.0' in text
    assert 'evse_connector_energy_imported_joules_total{connector="1"} 5.4e+06' in text


async def test_a_burst_of_scrapes_asks_the_agent_once_per_poll_period(
        tmp_path: Path, agent: StandInAgent) -> None:
    server = TestServer(build_app(web_config(tmp_path, poll_ms=10000), token=None))
    await server.start_server()
    try:
        async with ClientSession() as http:
            async def scrape(path: str) -> int:
                async with http.get(f"http://127.0.0.1:{server.port}{path}") as r:
                    await r.read()
                    return r.status

            statuses = await asyncio.gather(*(scrape(p) for p in ["/metrics", "/api/status"]
                                              * 10))
    finally:
        await server.close()
    assert statuses == [200] * 20
    assert agent.status_requests == 1  # the daemon is not the web's to load


# --- the agent's own control socket ------------------------------------------------------------

@pytest.fixture
async def real_agent(tmp_path: Path) -> AsyncIterator[Any]:
    """The agent's control socket served by AgentApp itself (its handle_local and panel status),
    with a real pilot machine and the installer-limit service; no buses (those are HIL's)."""
    import time

    import yaml

    from agent.orderly.local import LocalService
    from agent.pilot import PilotMachine
    from agent.shell.app import AgentApp
    from agent.shell.handle import ConnectorStats, HardwareInfo
    from agent.shell.wiring import pilot_settings

    class Controller:  # what the agent's socket and services use of a ConnectorController
        def __init__(self, machine: PilotMachine) -> None:
            self.id, self.machine, self.stats, self.on_event = 1, machine, ConnectorStats(), None
            self.hardware = HardwareInfo()

        def feed_first(self, event: Any) -> None:  # no run(): stepped at once
            self.machine.step(event, time.monotonic())

        async def feed(self, event: Any) -> Any:
            return self.machine.step(event, time.monotonic())

    data = yaml.safe_load((REPO / "config" / "evse-agent.example.yaml").read_text())
    data.update(mqtt=None, state_dir=str(tmp_path / "state"))
    data["connectors"][0].update(connection="cable", cable_rating_a=32.0, local_limit_a=12.0)
    cfg = parse_config(data)
    conn = cfg.connectors[0]
    ctl = Controller(PilotMachine(pilot_settings(cfg.profile, conn, cfg.safety)))
    app = AgentApp(cfg)
    app.local = LocalService(cfg, [ctl])  # type: ignore[list-item]
    app._controllers = {1: ctl}  # type: ignore[dict-item]
    server = asyncio.get_running_loop().create_task(app._local_api())
    for _ in range(100):
        if localapi.socket_path(cfg.state_dir).exists():
            break
        await asyncio.sleep(0.01)
    yield app
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server


async def test_against_the_agents_own_socket(real_agent: Any, tmp_path: Path) -> None:
    app = build_app(real_agent.config, token=TOKEN)
    server = TestServer(app)
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with ClientSession() as http:
            async with http.get(f"{base}/api/status") as r:
                snap = await r.json()
            c = snap["status"]["connectors"][0]
            assert snap["agent"]["reachable"] and snap["status"]["link"] is None
            assert c["limit"] == {**c["limit"], "a": 12.0, "source": "installer",
                                  "detail": "config"}
            async with http.post(f"{base}/api/connectors/1/limit", json={"limitA": 7.5},
                                 headers=good_headers()) as r:
                assert r.status == 200, await r.text()
            assert real_agent.controllers[1].machine.requested_current_a == 7.5
            async with http.post(f"{base}/api/connectors/1/limit", json={"limitA": 9},
                                 headers=good_headers(Origin="https://evil.example")) as r:
                assert r.status == 403
            assert real_agent.controllers[1].machine.requested_current_a == 7.5
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
        assert 'evse_connector_limit_amperes{connector="1",source="installer"} 7.5' in text
        assert 'evse_connector_state{connector="1",state="IDLE"} 1.0' in text
    finally:
        await server.close()
    whats = [e["what"] for e in security_log(tmp_path)]
    assert whats == ["webAction", "webActionRefused"]


@pytest.mark.parametrize("example", sorted((REPO / "config").glob("*.example.yaml")),
                         ids=lambda p: p.name)
def test_every_example_config_documents_the_web_section(example: Path) -> None:
    import yaml

    data = yaml.safe_load(example.read_text())
    assert set(data.get("web") or {}) == set(WebConfig.model_fields), example.name
    assert WebConfig.model_validate(data["web"]) == WebConfig()  # the documented defaults


def test_wrong_tokens_are_throttled() -> None:
    now = [0.0]
    throttle = WrongTokenThrottle(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(2):
        throttle.wrong()
    assert not throttle.blocked()
    throttle.wrong()
    assert throttle.blocked()
    now[0] = 59.9
    assert throttle.blocked()
    now[0] = 60.0
    assert not throttle.blocked()


async def test_after_ten_wrong_tokens_even_the_right_one_waits(
        web: tuple[str, ClientSession], agent: StandInAgent, tmp_path: Path) -> None:
    base, http = web
    wrong = good_headers(Authorization="Bearer " + "x" * 32)
    for _ in range(10):
        async with http.post(f"{base}/api/connectors/1/reset", json={}, headers=wrong) as r:
            assert r.status == 401
    async with http.post(f"{base}/api/connectors/1/reset", json={},
                         headers=good_headers()) as r:
        assert r.status == 429 and (await r.json())["reason"] == "too_many_wrong_tokens"
    assert agent.received == []
    assert security_log(tmp_path)[-1]["reason"] == "too_many_wrong_tokens"
