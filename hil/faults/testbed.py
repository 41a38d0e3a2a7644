"""One fresh bench per fault case: the rig, the agent process and, for MQTT cases, a private
mosquitto (optionally behind the black-hole proxy) with the aggregator-side subscriber.

Everything is judged from outside the agent: the rig's timeline (frames on the virtual wire,
duty writes the pilot board accepted), the local control socket (faults, state) and what the
broker delivered. The agent is stopped or killed by its PID only.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent import localapi
from agent.config import parse_config
from agent.errors import AgentError
from hil.agent_process import AgentProcess
from hil.broker import Mosquitto
from hil.faults.proxy import BlackholeProxy
from hil.faults.subscriber import Subscriber
from hil.poll import poll_until
from hil.rig import Rig
from hil.scenario import deep_merge
from hil.scenario_runner import DEFAULT_CONFIG
from hil.station import Station, StationHarness

DEVICE_ID = "CN-FAULT-0001"
AGGREGATOR, AGGREGATOR_PASSWORD = "aggregator", "bench-only-password"
PWM_OFF = 1000  # duty_cmd for steady +12 V (no PWM)
BASE_OVERRIDES: dict[str, Any] = {
    "device_id": DEVICE_ID,
    # recovery is judged by charging again: no anti-flapping wait in a short bench run
    "safety": {"contactor_min_off_s": 0, "contactor_max_cycles_per_hour": 600,
               "meter_grace_s": 3},
    "connectors": [{"id": 1, "pilot_board": {"bus": "control", "unit": 1},
                    "relay_board": {"bus": "control", "unit": 2},
                    "meter": {"bus": "meter", "unit": 1, "poll_ms": 250}}],
}


REPO_ROOT = Path(__file__).resolve().parents[2]
RETROFIT_CONFIG = REPO_ROOT / "config" / "retrofit-heidelberg.example.yaml"
# a retrofitted Heidelberg with short timers (the behaviour is that of the example's 10 s)
RETROFIT_OVERRIDES: dict[str, Any] = {
    "device_id": DEVICE_ID,
    "connectors": [{"id": 1, "hardware": "wallbox", "rated_current_a": 16, "phases": 3,
                    "nominal_voltage_v": 230,
                    "wallbox": {"bus": "wallbox", "unit": 1, "profile": "heidelberg",
                                "poll_ms": 200, "verify_s": 1, "lost_ms": 1500,
                                "watchdog_s": 2, "failsafe_current_a": 8}}],
}


def mqtt_section(port: int, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "tls": False, "keepalive_s": 5,
            "telemetry_period_s": 1, "telemetry_idle_period_s": 2, "random_delay_max_s": 0,
            "random_seed": 7, **extra}


class Testbed(StationHarness):
    """``async with Testbed(out_dir, ...) as b``: rig started, broker (if any) up, agent not yet."""

    def __init__(self, out_dir: Path, *, overrides: dict[str, Any] | None = None,
                 mqtt: bool = False, refuse_anonymous: bool = False,
                 mqtt_extra: dict[str, Any] | None = None, retrofit: bool = False) -> None:
        self.out_dir = out_dir.resolve()
        self.retrofit = retrofit  # a wallbox (hardware: wallbox) instead of our boards
        self.overrides = overrides or {}
        self.use_mqtt = mqtt
        self.refuse_anonymous = refuse_anonymous
        self.mqtt_extra = mqtt_extra or {}
        self.broker: Mosquitto | None = None
        self.proxy: BlackholeProxy | None = None
        self.sub: Subscriber | None = None
        self.station: Station | None = None

    # --- life cycle ----------------------------------------------------------------------

    async def open(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.retrofit:
            data = deep_merge(yaml.safe_load(RETROFIT_CONFIG.read_text()), RETROFIT_OVERRIDES)
        else:
            data = deep_merge(yaml.safe_load(DEFAULT_CONFIG.read_text()), BASE_OVERRIDES)
        if self.use_mqtt:
            # the aggregator logs in; the agent connects anonymously (plain, loopback)
            self.broker = Mosquitto(self.out_dir / "mosquitto",
                                    refuse_anonymous=self.refuse_anonymous,
                                    users={AGGREGATOR: AGGREGATOR_PASSWORD})
            self.broker.start()
            # always through the proxy: it also gates reconnection after a broker restart
            self.proxy = await BlackholeProxy(self.broker.host, self.broker.port).start()
            data["mqtt"] = mqtt_section(self.proxy.port, **self.mqtt_extra)
            self.sub = await Subscriber(self.broker.host, self.broker.port, DEVICE_ID,
                                        username=AGGREGATOR,
                                        password=AGGREGATOR_PASSWORD).start()
        data = deep_merge(data, self.overrides)
        config = parse_config(data, source="fault bench")
        self.station = await Station(config, self.out_dir, rig_dir="run").open()

    async def close(self) -> None:
        if self.station is not None:
            await self.station.close()  # the agent first, then the rig
        if self.sub is not None:
            await self.sub.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.broker is not None:
            self.broker.kill()

    @property
    def s(self) -> Station:
        assert self.station is not None
        return self.station

    @property
    def r(self) -> Rig:
        return self.s.rig

    @property
    def agent(self) -> AgentProcess | None:
        return self.s.agent

    @property
    def state_dir(self) -> Path:
        return self.r.state_dir

    # --- the agent -----------------------------------------------------------------------

    async def start_agent(self, *, wait: bool = True) -> None:
        await self.s.start_agent(wait=wait)

    def kill_agent(self) -> None:
        """SIGKILL by PID: no safe-state drive, no goodbye (the board's watchdog must act)."""
        self.s.kill_agent()

    async def restart_broker(self) -> None:
        """Start the killed broker again; the agent may reach it only once we listen again."""
        assert self.broker is not None and self.proxy is not None and self.sub is not None
        self.proxy.reject(True)
        before = self.sub.generation
        self.broker.start()
        await self.sub.wait_subscribed(before, 10.0)
        self.proxy.reject(False)

    async def stop_agent(self) -> int | None:
        return await self.s.stop_agent()

    def log_events(self, name: str) -> list[dict[str, Any]]:
        return self.s.log_events(name)

    async def agent_status(self) -> dict[str, Any]:
        """The whole ``status`` reply ({} when the agent does not answer)."""
        try:
            return dict(await asyncio.to_thread(localapi.request, self.r.control_socket,
                                                {"cmd": "status"}))
        except AgentError:
            return {}

    async def status(self) -> dict[str, Any]:
        """The first connector's part of ``status``."""
        conns = (await self.agent_status()).get("connectors") or []
        return dict(conns[0]) if conns else {}

    async def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        """A local command; retried briefly (the socket opens just after ``agent_ready``)."""
        deadline = time.monotonic() + 3.0
        while True:
            try:
                return await asyncio.to_thread(localapi.request, self.r.control_socket,
                                               {"cmd": cmd, "connector": 1, **args})
            except AgentError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def wait_status(self, pred: Callable[[dict[str, Any]], bool],
                          limit_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + limit_s
        while True:
            st = await self.status()
            if st and pred(st):
                return st
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    # --- the rig -------------------------------------------------------------------------

    async def wait_rig(self, pred: Callable[[], bool], limit_s: float) -> bool:
        return await poll_until(pred, limit_s)

    async def charge(self, limit_s: float = 10.0) -> bool:
        """Plug in an EV that wants to charge; True once the contactor is closed."""
        self.r.ev_action("plug_in", cable_a=32, wants_charge=True)
        return await self.wait_rig(lambda: self.r.contactor_closed()
                                   and self.r.ev.current_a() > 0, limit_s)

    async def recharge(self, limit_s: float = 10.0) -> bool:
        """After a fault that opened the contactor: a fresh authorisation, then charging."""
        if self.r.contactor_closed():
            return True
        with contextlib.suppress(AgentError):
            await self.command("start")
        return await self.wait_rig(self.r.contactor_closed, limit_s)

    def safe_times(self, t0: float) -> tuple[float | None, float | None]:
        """Seconds from ``t0`` (rig time) to the contactor-open frame and to PWM off."""
        tl = self.r.timeline
        opened = tl.first("frame", t0, what="contactor_open")
        pwm = tl.first("board_write", t0, register="duty_cmd", value=PWM_OFF)
        return (None if opened is None else opened.t - t0, None if pwm is None else pwm.t - t0)

    async def wait_safe(self, t0: float, limit_s: float) -> tuple[float | None, float | None]:
        await self.wait_rig(lambda: None not in self.safe_times(t0)
                            and not self.r.contactor_closed(), limit_s)
        return self.safe_times(t0)

    def is_safe(self) -> bool:
        """Contactor open and no PWM on the line, as the hardware shows it."""
        hw = self.r.probe()
        return not hw["contactor"] and not 0 < hw["duty"] < PWM_OFF

    # --- the agent's durable state ---------------------------------------------------------

    def journal_high_water(self) -> int:
        return _query_int(self.state_dir / "journal.db",
                          "SELECT max((SELECT value FROM meta WHERE key='seq_hw'),"
                          " coalesce((SELECT max(seq) FROM entries), 0))")

    def journal_unsent(self) -> set[int]:
        """Seqs the journal still holds for sending (delivered at the agent's next start)."""
        path = self.state_dir / "journal.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return {int(r[0]) for r in conn.execute("SELECT seq FROM entries WHERE sent = 0")}

    def journal_counter(self, key: str) -> int:
        return _query_int(self.state_dir / "journal.db",
                          "SELECT value FROM meta WHERE key = ?", (key,))

    def ledger_sessions(self) -> list[dict[str, Any]]:
        path = self.state_dir / "sessions.db"
        if not path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT session_id, stop_reason, reported_seq FROM sessions"
                                ).fetchall()
        return [{"sessionId": r[0], "stopReason": r[1], "reportedSeq": r[2]} for r in rows]


def _query_int(path: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        row = conn.execute(sql, params).fetchone()
    return int(row[0] or 0) if row else 0
