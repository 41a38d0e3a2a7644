"""Settings of the MQTT link (the lead maps the YAML ``mqtt`` section onto this)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from agent.errors import ConfigError

MqttVersion = Literal["5", "3.1.1"]
_WILDCARDS = frozenset("+#")


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where and how to connect. ``password`` never appears in ``repr`` (logs)."""

    host: str
    port: int
    device_id: str
    root: str = "evse/v1"
    groups: Sequence[str] = ()
    protocol: MqttVersion = "5"
    client_id: str | None = None  # None: the device id
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system trust store
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 30
    session_expiry_s: int = 86400
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    publish_timeout_s: float = 10.0
    drain_window: int = 64  # QoS 1 publishes awaiting PUBACK at once
    drain_batch: int = 256  # rows read from the outbox per query

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def effective_client_id(self) -> str:
        return self.client_id or self.device_id

    def validate(self) -> None:
        """Refuse settings that would connect insecurely or never work; names the key."""

        def bad(key: str, message: str, fix: str) -> ConfigError:
            return ConfigError(message, key=f"mqtt.{key}", fix=fix)

        if not self.host:
            raise bad("host", "broker host is empty", "set the broker's host name or IP")
        if not 0 < self.port < 65536:
            raise bad("port", f"port {self.port} is out of range", "use 1..65535 (8883 for TLS)")
        for key, value in (("device_id", self.device_id), ("root", self.root),
                           *((f"groups[{i}]", g) for i, g in enumerate(self.groups))):
            if not value or _WILDCARDS & set(value) or (key != "root" and "/" in value):
                raise bad(key, f"{value!r} is not usable in a topic",
                          "use a non-empty name without '+', '#' (and '/' except in root)")
        if self.protocol not in ("5", "3.1.1"):
            raise bad("protocol", f"unknown protocol {self.protocol!r}", "use '5' or '3.1.1'")
        if (self.username is not None or self.password is not None) and not self.tls:
            raise bad("password", "username/password are only allowed over TLS",
                      "enable mqtt.tls (server verification) or remove username/password")
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise bad("tls", "certificate files are set but TLS is off", "set mqtt.tls: true")
        if self.key_file and not self.cert_file:
            raise bad("cert_file", "a client key without a client certificate",
                      "set mqtt.cert_file next to mqtt.key_file")
        if self.keepalive_s < 5:
            raise bad("keepalive_s", "keepalive below 5 s", "use 5..1200 (default 30)")
        if self.session_expiry_s < 0:
            raise bad("session_expiry_s", "negative session expiry", "use seconds >= 0")
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise bad("backoff_base_s", "need 0 < backoff base <= backoff max",
                      "e.g. base 0.5 s, max 60 s")
        for key, seconds in (("connect_timeout_s", self.connect_timeout_s),
                             ("publish_timeout_s", self.publish_timeout_s)):
            if seconds <= 0:
                raise bad(key, f"{key} must be positive", "use seconds > 0")
        if self.drain_window < 1 or self.drain_batch < 1:
            raise bad("drain_window", "drain window and batch must be >= 1", "e.g. 64 and 256")


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of API v1 for one device (mqtt-api.md, "Topics")."""

    status: str
    state: str
    evt: str
    tel: str
    cmd: str
    rsp: str
    group_cmds: tuple[str, ...]

    @classmethod
    def for_settings(cls, s: LinkSettings) -> Topics:
        base = f"{s.root}/{s.device_id}"
        return cls(
            status=f"{base}/status", state=f"{base}/state", evt=f"{base}/evt",
            tel=f"{base}/tel", cmd=f"{base}/cmd", rsp=f"{base}/rsp",
            group_cmds=tuple(f"{s.root}/group/{g}/cmd" for g in s.groups),
        )

    def outbox(self, suffix: str) -> str:
        if suffix == "evt":
            return self.evt
        if suffix == "tel":
            return self.tel
        raise ValueError(f"outbox entries go to 'evt' or 'tel', not {suffix!r}")
