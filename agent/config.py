"""Configuration: one pydantic model, loaded from YAML, with errors that name the key and the fix.

Every key is documented in ``config/evse-agent.example.yaml``. The models only validate; building
drivers, buses and the core's settings from them is the shell's job (``agent.shell.wiring``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.api.bounds import MAX_CONNECTORS
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.config_wallbox import WallboxConnectorConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class SerialBus(_Strict):
    """An RS-485 (or UART) port; one transaction at a time."""

    kind: Literal["serial"] = "serial"
    port: str
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_ms: Annotated[int, Field(ge=5, le=5000)] = 100
    device_latency_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    max_words_per_read: Annotated[int, Field(ge=2, le=125)] = 16


class TcpBus(_Strict):
    """A Modbus TCP endpoint (a gateway or a TCP meter)."""

    kind: Literal["tcp"] = "tcp"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    timeout_ms: Annotated[int, Field(ge=5, le=5000)] = 200
    device_latency_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0
    max_words_per_read: Annotated[int, Field(ge=2, le=125)] = 64


Bus = Annotated[SerialBus | TcpBus, Field(discriminator="kind")]


class PilotBoardConfig(_Strict):
    bus: str
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    poll_ms: Annotated[float, Field(ge=2, le=100)] = 10.0
    idle_poll_ms: Annotated[float, Field(ge=2, le=100)] = 40.0
    watchdog_ms: Annotated[int, Field(ge=0, le=60000)] = 3000
    heartbeat_ms: Annotated[int, Field(ge=50, le=30000)] = 1000


class RelayBoardConfig(_Strict):
    bus: str
    unit: Annotated[int, Field(ge=1, le=247)] = 2
    contactor_coil: Annotated[int, Field(ge=0)] = 0
    lock_coil: Annotated[int, Field(ge=0)] = 1
    contactor_feedback_input: Annotated[int, Field(ge=0)] = 0
    lock_feedback_input: Annotated[int, Field(ge=0)] = 1
    poll_ms: Annotated[float, Field(ge=10, le=2000)] = 100.0
    idle_poll_ms: Annotated[float, Field(ge=10, le=2000)] = 400.0


class MeterRegisterConfig(_Strict):
    """One register of a meter described entirely in config (model: custom)."""

    name: str
    address: Annotated[int, Field(ge=0, le=0xFFFF)]
    function: Literal[3, 4] = 4
    type: Literal["u16", "i16", "u32", "i32", "f32"] = "f32"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    unit: str = ""


class MeterConfig(_Strict):
    bus: str
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    model: str = "ddsu666"
    poll_ms: Annotated[float, Field(ge=100, le=60000)] = 1000.0
    registers: list[MeterRegisterConfig] | None = None

    @model_validator(mode="after")
    def _custom_needs_registers(self) -> MeterConfig:
        if self.model == "custom" and not self.registers:
            raise ValueError("model 'custom' needs a 'registers' list (name, address, type ...)")
        if self.model != "custom" and self.registers:
            raise ValueError("'registers' is only for model 'custom'; remove it or set model")
        return self


class _ConnectorBase(_Strict):
    """What every connector has, whatever drives it."""

    # one range everywhere: the API models and JSON schemas use the same bound
    id: Annotated[int, Field(ge=1, le=MAX_CONNECTORS)] = 1
    rated_current_a: Annotated[float, Field(ge=6, le=80)] = 32.0
    phases: Literal[1, 3] = 1
    nominal_voltage_v: Annotated[float, Field(ge=100, le=400)] = 220.0
    local_limit_a: Annotated[float, Field(ge=0, le=80)] | None = None
    authorisation: Literal["auto", "remote"] = "auto"


class ConnectorConfig(_ConnectorBase):
    """A connector driven by our pilot board, relay board and meter (``hardware: boards``)."""

    hardware: Literal["boards"] = "boards"
    connection: Literal["socket", "cable"] = "socket"
    cable_rating_a: Annotated[float, Field(ge=6, le=80)] | None = None
    pilot_board: PilotBoardConfig
    relay_board: RelayBoardConfig
    meter: MeterConfig

    @model_validator(mode="after")
    def _cable_rating(self) -> ConnectorConfig:
        if self.connection == "cable" and self.cable_rating_a is None:
            raise ValueError("connection 'cable' needs cable_rating_a (the fixed cable's rating)")
        return self


def _hardware(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("hardware", "boards"))
    return str(getattr(value, "hardware", "boards"))


def _wallbox_connector(value: Any) -> Any:
    """Validate a ``hardware: wallbox`` connector. Its models (and the wallbox profiles they
    check against) are imported here, by a config that has one: a boards-only agent does not
    carry them (~0.6 MB of the agent's RSS, BENCHMARKS.md P3)."""
    from agent.config_wallbox import WallboxConnectorConfig

    return WallboxConnectorConfig.model_validate(value)


if TYPE_CHECKING:
    AnyConnector: TypeAlias = ConnectorConfig | WallboxConnectorConfig
else:
    AnyConnector = Annotated[
        Annotated[ConnectorConfig, Tag("boards")]
        | Annotated[Any, PlainValidator(_wallbox_connector), Tag("wallbox")],
        Discriminator(_hardware, custom_error_type="hardware",
                      custom_error_message="hardware must be 'boards' or 'wallbox'"),
    ]


class SafetyConfig(_Strict):
    """Reaction parameters of the pilot state machine (defaults from gbt18487.md)."""

    debounce_samples: Annotated[int, Field(ge=1, le=5)] = 2
    reaction_budget_ms: Annotated[float, Field(gt=0, le=100)] = 100.0
    # Run a schedule check-config refuses (bound over the budget, or a pilot poll the bus
    # cannot keep) anyway: for a bench; the agent warns at every start and shows it in status.
    accept_reaction_bound_over_budget: bool = False
    contactor_feedback_timeout_ms: Annotated[float, Field(ge=20, le=5000)] = 500.0
    lock_timeout_ms: Annotated[float, Field(ge=50, le=5000)] = 1000.0
    lock_release_s: Annotated[float, Field(gt=0, le=5)] = 5.0
    overcurrent_abs_margin_a: Annotated[float, Field(ge=0, le=10)] = 2.0
    overcurrent_rel_margin: Annotated[float, Field(ge=0, le=0.5)] = 0.10
    overcurrent_persist_s: Annotated[float, Field(ge=1, le=5)] = 5.0
    meter_grace_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    pilot_lost_ms: Annotated[float, Field(ge=20, le=1000)] = 80.0
    pilot_frozen_ms: Annotated[float, Field(ge=20, le=2000)] = 100.0
    relay_lost_ms: Annotated[float, Field(ge=100, le=10000)] = 1000.0
    pause_open_timeout_s: Annotated[float, Field(ge=0.5, le=10)] = 3.0
    contactor_min_off_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    contactor_max_cycles_per_hour: Annotated[int, Field(ge=1, le=600)] = 20


class FailsafeConfig(_Strict):
    """Limit that joins the minimum after the aggregator has been unreachable ``after_s``."""

    after_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    value: Annotated[float, Field(gt=0)] = 10.0
    unit: Literal["A", "W", "kW"] = "A"


class MqttConfig(_Strict):
    """The aggregator link (mqtt-api.md). Production: mutual TLS (cert_file + key_file)."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    root: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+$")] = "evse/v1"
    groups: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = []
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, Field(ge=0, le=2**31 - 1)] = 86400
    telemetry_period_s: Annotated[int, Field(ge=1, le=3600)] = 10
    telemetry_idle_period_s: Annotated[int, Field(ge=1, le=86400)] = 60
    random_delay_max_s: Annotated[int, Field(ge=0, le=1800)] = 600
    random_seed: int | None = None
    failsafe: FailsafeConfig = FailsafeConfig()
    idle_occupancy_s: Annotated[int, Field(ge=0, le=86400)] = 1800
    max_clock_skew_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    issuer_keys: dict[str, Path] | None = None
    journal_budget_mb: Annotated[float, Field(gt=0, le=100000)] = 64.0
    # hard cap (SQLite max_page_count) below the disk: "disk full" at a known size, not at the
    # partition's end; null = only the disk limits the journal
    journal_hard_limit_mb: Annotated[float, Field(gt=0, le=100000)] | None = None
    retention_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    discharge: bool = False

    @model_validator(mode="after")
    def _secrets_need_tls(self) -> MqttConfig:
        if (self.username or self.password_file) and not self.tls:
            raise ValueError("username/password only over TLS: set tls: true (or use mutual TLS)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        return self


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class WebConfig(_Strict):
    """The status page and metrics (``evse-agent web``, a separate process and unit)."""

    listen: str = "127.0.0.1"  # another address only behind a TLS reverse proxy (README)
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    token_file: Path | None = None  # None: the page is read-only, every action refused
    public_origin: str | None = None  # e.g. https://charger-17.example.net behind a proxy
    poll_ms: Annotated[int, Field(ge=200, le=10000)] = 1000

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith(("http://", "https://"))
                                  or value.rstrip("/").count("/") != 2):
            raise ValueError("an origin is scheme://host[:port], no path")
        return value.rstrip("/") if value is not None else None


class AgentConfig(_Strict):
    device_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    profile: Literal["gbt18487-2015", "iec61851"] = "gbt18487-2015"
    state_dir: Path = Path("/var/lib/evse-agent")
    status_file: Path | None = None
    buses: dict[str, Bus]
    connectors: Annotated[list[AnyConnector], Field(max_length=MAX_CONNECTORS)]
    safety: SafetyConfig = SafetyConfig()
    logging: LoggingConfig = LoggingConfig()
    mqtt: MqttConfig | None = None
    web: WebConfig = WebConfig()

    @field_validator("connectors")
    @classmethod
    def _unique_connectors(cls, value: list[AnyConnector]) -> list[AnyConnector]:
        if not value:
            raise ValueError("at least one connector is needed")
        ids = [c.id for c in value]
        if len(set(ids)) != len(ids):
            raise ValueError(f"connector ids must be unique, got {ids}")
        return value

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        used: dict[tuple[str, int], str] = {}
        for conn in self.connectors:
            refs: list[tuple[str, str, int]] = []
            if isinstance(conn, ConnectorConfig):
                refs += [("pilot_board", conn.pilot_board.bus, conn.pilot_board.unit),
                         ("relay_board", conn.relay_board.bus, conn.relay_board.unit)]
            else:
                refs.append(("wallbox", conn.wallbox.bus, conn.wallbox.unit))
            if conn.meter is not None:
                refs.append(("meter", conn.meter.bus, conn.meter.unit))
            for what, bus, unit in refs:
                where = f"connectors[{conn.id}].{what}"
                if bus not in self.buses:
                    known = ", ".join(sorted(self.buses)) or "none"
                    raise ValueError(f"{where}.bus: unknown bus {bus!r} (defined: {known})")
                if (bus, unit) in used:
                    raise ValueError(
                        f"{where}.unit: unit {unit} on bus {bus!r} is already {used[(bus, unit)]}"
                    )
                used[(bus, unit)] = where
        return self

    @model_validator(mode="after")
    def _idle_polls(self) -> AgentConfig:
        """An idle poll keeps every liveness check: at least two answers within its window."""
        for conn in self.board_connectors():
            pb, rb = conn.pilot_board, conn.relay_board
            where = f"connectors[{conn.id}]"
            for what, cfg, lost, key in (
                    ("pilot_board", pb, self.safety.pilot_lost_ms, "pilot_lost_ms"),
                    ("relay_board", rb, self.safety.relay_lost_ms, "relay_lost_ms")):
                if cfg.idle_poll_ms < cfg.poll_ms:
                    raise ValueError(f"{where}.{what}.idle_poll_ms ({cfg.idle_poll_ms:g}) must "
                                     f"not be below poll_ms ({cfg.poll_ms:g})")
                if cfg.idle_poll_ms > lost / 2:
                    raise ValueError(f"{where}.{what}.idle_poll_ms ({cfg.idle_poll_ms:g}) must "
                                     f"be at most half of safety.{key} ({lost:g})")
        return self

    def board_connectors(self) -> list[ConnectorConfig]:
        """Connectors driven by our pilot and relay boards (``hardware: boards``)."""
        return [c for c in self.connectors if isinstance(c, ConnectorConfig)]

    def wallbox_connectors(self) -> list[WallboxConnectorConfig]:
        """Connectors that are a retrofitted wallbox (``hardware: wallbox``)."""
        return [c for c in self.connectors if not isinstance(c, ConnectorConfig)]

    def status_path(self) -> Path:
        return self.status_file or self.state_dir / "status.json"


_FIXES = {
    "missing": "add this key",
    "extra_forbidden": "remove this key (misspelt? see config/evse-agent.example.yaml)",
    "literal_error": "use one of the allowed values",
    "greater_than_equal": "raise the value",
    "less_than_equal": "lower the value",
    "greater_than": "raise the value",
    "less_than": "lower the value",
}


def _format_errors(exc: ValidationError) -> list[tuple[str, str, str]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not str(p).startswith("function-")]
        # the connector's hardware tag (boards/wallbox) sits right after its list index
        loc = [p for i, p in enumerate(loc) if not (
            i >= 2 and loc[i - 2] == "connectors" and isinstance(loc[i - 1], int)
            and p in ("boards", "wallbox"))]
        key = ".".join(str(p) for p in loc)
        out.append((key or "(top level)", err["msg"], _FIXES.get(err["type"], "")))
    return out


def parse_config(data: Any, *, source: str = "<config>") -> AgentConfig:
    """Validate a config mapping; every problem is listed with its key and a fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys", key="(top level)")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc)
        lines = [f"  {key}: {msg}" + (f" -> {fix}" if fix else "") for key, msg, fix in problems]
        error = ConfigError(f"{source}: {len(problems)} problem(s)\n" + "\n".join(lines))
        error.problems = problems
        raise error from exc


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} not found", key="(file)", fix="pass -c PATH") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}", key="(file)") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}", key="(file)") from exc
    return parse_config(data, source=str(p))
