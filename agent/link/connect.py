"""Building the aiomqtt client and explaining connect failures (the aiomqtt/paho boundary)."""

from __future__ import annotations

import socket
import ssl

from aiomqtt import Client, MqttError, ProtocolVersion, Will
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import ConfigError, LinkError
from agent.link.settings import LinkSettings, MqttVersion

# Small MQTT packets go out at once: with Nagle on, a reply written while the PUBACK before it is
# unacknowledged waited for the broker's delayed ACK (40 ms on Linux) -- measured by the bench.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
UNSUPPORTED_PROTOCOL = 0x84  # CONNACK "Unsupported Protocol Version" (paho maps v3 rc 1 here)


def properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def build_client(
    s: LinkSettings, protocol: MqttVersion, will: Will, tls: ssl.SSLContext | None
) -> Client:
    """A fresh client (must run inside the event loop): persistent session, our Will."""
    v5 = protocol == "5"
    connect_props: Properties | None = None
    if v5:
        connect_props = properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = s.session_expiry_s
    client = Client(
        s.host,
        s.port,
        identifier=s.effective_client_id,
        protocol=ProtocolVersion.V5 if v5 else ProtocolVersion.V311,
        will=will,
        clean_session=None if v5 else False,  # v3.1.1: persistent session
        clean_start=False if v5 else MQTT_CLEAN_START_FIRST_ONLY,  # v5: always resume
        properties=connect_props,
        keepalive=s.keepalive_s,
        timeout=s.connect_timeout_s,
        username=s.username,
        password=s.password,
        tls_context=tls,
        max_inflight_messages=s.drain_window + 8,
        socket_options=NO_DELAY,
    )
    client.pending_calls_threshold = s.drain_window + 32  # no warning per windowed publish
    return client


def tls_context(s: LinkSettings) -> ssl.SSLContext:
    """Server verification always (hostname checked); a client certificate when configured."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=s.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if s.cert_file:
            ctx.load_cert_chain(s.cert_file, s.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS files: {exc.strerror or exc}",
            key="mqtt.tls",
            fix="check mqtt.ca_file / cert_file / key_file exist, are readable and match",
        ) from exc
    return ctx


def connect_error(
    exc: MqttError, s: LinkSettings, protocol: MqttVersion, up: bool
) -> tuple[LinkError, bool]:
    """The LinkError to report, and whether the broker refused MQTT v5 (fall back to 3.1.1)."""
    reason = str(exc)
    hint = ""
    refused_v5 = False
    if isinstance(exc, MqttConnectError) and reason_code(exc.rc) in (UNSUPPORTED_PROTOCOL, 1):
        if protocol == "5":
            refused_v5 = True
            hint = "broker refused MQTT v5; falling back to 3.1.1"
    elif not up and "timed out" in reason and s.tls:
        # TLS 1.3: a broker requiring a client cert alerts only after the handshake; aiomqtt
        # then just waits for a CONNACK that never comes (research/stack.md §6).
        hint = ("no CONNACK on a TLS port: check the client certificate (signed by a CA the "
                "broker trusts, not expired)" if s.cert_file else
                "no CONNACK on a TLS port: the broker may require a client certificate "
                "(set mqtt.cert_file / mqtt.key_file)")
    err = LinkError("connection lost" if up else "connect failed", reason=reason,
                    host=s.host, port=s.port, **({"hint": hint} if hint else {}))
    return err, refused_v5


def reason_code(rc: object) -> int:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else -1
