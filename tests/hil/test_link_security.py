"""Mutual TLS, refusing passwords in clear text, and falling back to MQTT 3.1.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from agent.errors import ConfigError, LinkError
from agent.link import Link, LinkSettings, MemoryOutbox, Reply
from agent.link.ports import CommandMessage
from hil.broker import Mosquitto
from hil.pki import make_pki
from hil.poll import wait_until
from hil.recorder import Recorder
from tests.conftest import LinkFactory

pytestmark = pytest.mark.mqtt

DEV = "CN-TEST-0001"
STATUS, CMD, RSP = (f"evse/v1/{DEV}/{t}" for t in ("status", "cmd", "rsp"))


async def test_mutual_tls_connects_with_a_client_certificate(
    tls_broker: Mosquitto, link_factory: LinkFactory
) -> None:
    pki = tls_broker.pki
    assert pki is not None and tls_broker.tls_port is not None
    h = await link_factory(
        "127.0.0.1", tls_broker.tls_port, tls=True,  # by IP: needs the IP SAN
        ca_file=str(pki.ca_cert), cert_file=str(pki.client.cert), key_file=str(pki.client.key),
    )
    await h.wait_connected()
    async with Recorder(tls_broker.host, tls_broker.port, [STATUS, RSP]) as rec:
        await rec.wait_for(lambda: bool(rec.on(STATUS)), what="birth over TLS")
        await rec.publish(CMD, json.dumps({"id": "over-tls"}).encode())
        await rec.wait_for(lambda: bool(rec.on(RSP)), what="reply over TLS")
    assert rec.json_on(STATUS)[0]["online"] is True


async def test_mutual_tls_without_a_client_certificate_never_connects(
    tls_broker: Mosquitto, link_factory: LinkFactory
) -> None:
    pki = tls_broker.pki
    assert pki is not None and tls_broker.tls_port is not None
    h = await link_factory("localhost", tls_broker.tls_port, tls=True, ca_file=str(pki.ca_cert),
                           connect_timeout_s=1.0)
    await wait_until(lambda: h.link.last_error is not None, what="a failed connect")
    error = h.link.last_error
    assert isinstance(error, LinkError)
    assert "client certificate" in str(error.context.get("hint", ""))
    await wait_until(lambda: h.link.last_error is not error, what="a second failed attempt")
    assert not h.link.connected and h.connects == 0


async def test_server_certificate_from_another_ca_is_refused(
    tls_broker: Mosquitto, link_factory: LinkFactory, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other-ca")
    assert tls_broker.tls_port is not None
    h = await link_factory("127.0.0.1", tls_broker.tls_port, tls=True,
                           ca_file=str(other.ca_cert), cert_file=str(other.client.cert),
                           key_file=str(other.client.key), connect_timeout_s=1.0)
    await wait_until(lambda: h.link.last_error is not None, what="a failed connect")
    assert "certificate verify failed" in str(h.link.last_error)
    assert h.connects == 0


async def _no_reply(cmd: CommandMessage) -> Reply | None:
    return None


def test_password_without_tls_is_refused_at_startup() -> None:
    settings = LinkSettings(host="127.0.0.1", port=1, device_id=DEV, username="evse",
                            password="s3cret-pw")
    with pytest.raises(ConfigError) as caught:
        Link(settings, outbox=MemoryOutbox(), on_command=_no_reply, birth=dict, boot_id="b")
    assert caught.value.key == "mqtt.password"
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in repr(settings)


def test_password_with_tls_is_accepted() -> None:
    LinkSettings(host="broker.example", port=8883, device_id=DEV, tls=True, username="evse",
                 password="pw").validate()


async def test_missing_tls_files_stop_the_link_with_a_config_error(tmp_path: Path) -> None:
    settings = LinkSettings(host="127.0.0.1", port=8883, device_id=DEV, tls=True,
                            ca_file=f"{tmp_path}/missing-ca.crt")
    link = Link(settings, outbox=MemoryOutbox(), on_command=_no_reply, birth=dict, boot_id="b")
    with pytest.raises(ConfigError):
        await link.run()


async def _v3_only_proxy(upstream_port: int) -> tuple[asyncio.Server, int]:
    """A broker stand-in that refuses MQTT v5 like a 3.1.1-only broker and forwards the rest.

    It only looks at the protocol level byte of CONNECT; a v5 CONNECT gets the 3.1.1 CONNACK
    "unacceptable protocol version" (0x20 0x02 0x00 0x01), everything else goes to mosquitto.
    """

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(65536)
        length_bytes = 1
        while head[length_bytes] & 0x80:
            length_bytes += 1
        level = head[1 + length_bytes + 6]  # after the length-prefixed "MQTT"
        if level == 5:
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        up_writer.write(head)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_falls_back_to_311_when_the_broker_refuses_v5(
    broker: Mosquitto, link_factory: LinkFactory
) -> None:
    server, port = await _v3_only_proxy(broker.port)
    async with server:
        h = await link_factory("127.0.0.1", port, protocol="5")
        await h.wait_connected()
        assert h.link.protocol == "3.1.1"
        async with Recorder(broker.host, broker.port, [RSP]) as rec:
            await rec.publish(CMD, json.dumps({"id": "via-311"}).encode())
            await rec.wait_for(lambda: bool(rec.on(RSP)), what="reply on rsp after fallback")
        await h.stop()
