"""The production broker example (deploy/mosquitto) on a real mosquitto: mTLS and per-device ACLs.

The broker runs the directives of ``evse.conf`` (listener and certificate paths replaced by the
test PKI's) with an ACL that ``make-acl.py`` generated from ``evse.acl`` and a small inventory.
mosquitto drops an unauthorised publish silently (and an unauthorised delivery too), so every
"nothing arrives" below is proven with a marker: a permitted message sent *after* the forbidden
ones on the same connection; once the marker is in, anything forbidden would have been too.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hil.broker import Mosquitto
from hil.pki import ClientCert, Pki, make_pki
from hil.recorder import Recorder
from tests.conftest import LinkFactory

pytestmark = pytest.mark.mqtt

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
EVSE_CONF = DEPLOY / "evse.conf"
BASE_ACL = DEPLOY / "evse.acl"
MAKE_ACL = DEPLOY / "make-acl.py"

A, B, AGG = "CN-TEST-A", "CN-TEST-B", "aggregator-test"
GROUP_A, GROUP_B = "tx-7", "tx-9"
INVENTORY = f"device_id,groups\n{A},{GROUP_A}\n{B},{GROUP_B};feeder-2\n"
# Fixture-owned: where it listens and which PKI it uses; everything else comes from evse.conf.
FIXTURE_OWNED = frozenset({"listener", "cafile", "certfile", "keyfile", "crlfile",
                           "per_listener_settings"})


def t(device: str, kind: str) -> str:
    return f"evse/v1/{device}/{kind}"


def group_cmd(gid: str) -> str:
    return f"evse/v1/group/{gid}/cmd"


def production_directives(acl_file: Path) -> list[str]:
    """evse.conf's directives minus the fixture-owned ones, with the ACL path replaced."""
    lines = []
    for raw in EVSE_CONF.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = line.split()[0]
        if key in FIXTURE_OWNED:
            continue
        lines.append(f"acl_file {acl_file}" if key == "acl_file" else line)
    return lines


def make_acl(tmp_path: Path, inventory: str, *args: str) -> subprocess.CompletedProcess[str]:
    devices = tmp_path / "fleet.csv"
    devices.write_text(inventory)
    return subprocess.run(
        [sys.executable, str(MAKE_ACL), "--devices", str(devices), *args],
        capture_output=True, text=True, check=False,
    )


@pytest.fixture
def acl_broker(mosquitto_factory: Callable[..., Mosquitto],
               tmp_path: Path) -> Mosquitto:
    acl = tmp_path / "evse.acl"
    done = make_acl(tmp_path, INVENTORY, "--aggregator", AGG, "--out", str(acl))
    assert done.returncode == 0, done.stderr
    return mosquitto_factory(tls=True, extra_config=production_directives(acl))


def pki_of(broker: Mosquitto) -> Pki:
    assert broker.pki is not None and broker.tls_port is not None
    return broker.pki


def tls_context(ca_file: Path, cert: ClientCert | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


class TlsRecorder(Recorder):
    """``Recorder`` over the mutual-TLS listener, as the certificate holder ``cn``."""

    def __init__(self, broker: Mosquitto, cn: str, topics: list[str]) -> None:
        assert broker.tls_port is not None
        super().__init__(broker.host, broker.tls_port, topics, identifier=f"rec-{cn}")
        pki = pki_of(broker)
        self.ctx = tls_context(pki.ca_cert, pki.issue_client(cn))
        self.granted: list[int] = []

    def _make(self) -> aiomqtt.Client:
        return aiomqtt.Client(self.host, self.port, identifier=self.identifier, timeout=5,
                              protocol=aiomqtt.ProtocolVersion.V5, tls_context=self.ctx)

    async def connect(self) -> TlsRecorder:
        topics, self.topics = self.topics, []
        await super().connect()
        self.topics = topics
        assert self.client is not None
        for topic in topics:  # one by one: record each SUBACK reason code
            code = (await self.client.subscribe(topic, qos=1))[0]
            self.granted.append(code if isinstance(code, int) else int(code.value))
        return self

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.on(topic) if isinstance(m.payload, bytes)]


@asynccontextmanager
async def session(broker: Mosquitto, cn: str,
                  topics: list[str] | None = None) -> AsyncIterator[TlsRecorder]:
    rec = TlsRecorder(broker, cn, topics or [])
    await rec.connect()
    try:
        yield rec
    finally:
        await rec.close()


# --- the production files themselves ----------------------------------------------------------


def test_production_config_is_mutual_tls_without_anonymous_access() -> None:
    directives = {line.split()[0]: line.split(maxsplit=1)[1]
                  for line in EVSE_CONF.read_text().splitlines()
                  if line.strip() and not line.startswith("#")}
    assert directives["listener"] == "8883"
    assert directives["per_listener_settings"] == "false"  # the fixture sets the same
    assert directives["require_certificate"] == "true"
    assert directives["use_identity_as_username"] == "true"
    assert directives["allow_anonymous"] == "false"
    assert directives["acl_file"] == "/etc/mosquitto/evse.acl"
    for key in ("cafile", "certfile", "keyfile"):
        assert directives[key].startswith("/etc/mosquitto/certs/")
    assert "password_file" not in directives  # no username/password fallback


def test_base_acl_grants_nothing_to_anonymous_and_no_wildcard_patterns() -> None:
    rules = [line.split() for line in BASE_ACL.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules and all(r[0] == "pattern" for r in rules)  # no `topic` line for anonymous
    assert all("%u" in r[2] and "+" not in r[2] for r in rules)
    assert {tuple(r[1:]) for r in rules if r[1] == "read"} == {("read", "evse/v1/%u/cmd")}


def test_generator_writes_one_block_per_device_and_aggregator(tmp_path: Path) -> None:
    done = make_acl(tmp_path, INVENTORY, "--aggregator", AGG)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(BASE_ACL.read_text().rstrip("\n"))
    generated = text.split("do not edit below")[1]
    assert f"user {A}\ntopic read {group_cmd(GROUP_A)}\n" in generated
    assert (f"user {B}\ntopic read {group_cmd('feeder-2')}\n"
            f"topic read {group_cmd(GROUP_B)}\n") in generated
    assert f"user {AGG}\ntopic write evse/v1/+/cmd\n" in generated


def test_generator_yaml_inventory_and_root(tmp_path: Path) -> None:
    devices = tmp_path / "fleet.yaml"
    devices.write_text(f"devices:\n  {A}: [{GROUP_A}]\n  {B}: []\n")
    done = subprocess.run([sys.executable, str(MAKE_ACL), "--devices", str(devices),
                           "--root", "city/evse"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "pattern write city/evse/%u/evt" in done.stdout
    assert f"topic read city/evse/group/{GROUP_A}/cmd" in done.stdout
    assert "evse/v1/" not in done.stdout.replace("city/evse/", "")


@pytest.mark.parametrize(("inventory", "args", "complaint"), [
    ("device_id,groups\nCN+1,tx-7\n", (), "not usable"),
    ("device_id,groups\nCN-1,tx/7\n", (), "not usable"),
    ("device_id,groups\nCN-1,#\n", (), "not usable"),
    ("device_id,groups\ngroup,tx-7\n", (), "reserved"),
    ("device_id,groups\naggregator-x,tx-7\n", (), "reserved"),
    ("device_id,groups\nCN-1,tx-7\nCN-1,tx-8\n", (), "twice"),
    ("id,groups\nCN-1,tx-7\n", (), "header"),
    ("device_id,groups\nCN-1,tx-7\n", ("--aggregator", "CN-2"), "aggregator-"),
    ("device_id,groups\nCN-1,tx-7\n", ("--root", "evse/#"), "wildcards"),
])
def test_generator_refuses_names_that_widen_a_grant(
    tmp_path: Path, inventory: str, args: tuple[str, ...], complaint: str
) -> None:
    out = tmp_path / "evse.acl"
    done = make_acl(tmp_path, inventory, *args, "--out", str(out))
    assert done.returncode == 2
    assert complaint in done.stderr
    assert not out.exists()


# --- mutual TLS -------------------------------------------------------------------------------


async def test_device_with_a_fleet_certificate_connects(acl_broker: Mosquitto) -> None:
    async with session(acl_broker, A, [t(A, "cmd")]) as dev:
        assert dev.granted == [1]


async def test_client_without_a_certificate_is_refused(acl_broker: Mosquitto) -> None:
    assert acl_broker.tls_port is not None
    ctx = tls_context(pki_of(acl_broker).ca_cert, None)
    client = aiomqtt.Client(acl_broker.host, acl_broker.tls_port, identifier="no-cert",
                            timeout=2, protocol=aiomqtt.ProtocolVersion.V5, tls_context=ctx)
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            pass


async def test_certificate_from_another_ca_is_refused(acl_broker: Mosquitto,
                                                      tmp_path: Path) -> None:
    assert acl_broker.tls_port is not None
    rogue = make_pki(tmp_path / "rogue-ca").issue_client(A)  # same CN, wrong issuer
    ctx = tls_context(pki_of(acl_broker).ca_cert, rogue)
    client = aiomqtt.Client(acl_broker.host, acl_broker.tls_port, identifier="rogue",
                            timeout=2, protocol=aiomqtt.ProtocolVersion.V5, tls_context=ctx)
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            pass


async def test_anonymous_client_is_refused_on_a_plain_listener(
    acl_broker: Mosquitto,
) -> None:
    client = aiomqtt.Client(acl_broker.host, acl_broker.port, identifier="anon", timeout=2,
                            protocol=aiomqtt.ProtocolVersion.V5)
    with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori[sz]ed"):
        async with client:
            pass


# --- per-device ACL ---------------------------------------------------------------------------


async def test_device_publishes_to_its_own_subtree(acl_broker: Mosquitto) -> None:
    own = [t(A, k) for k in ("status", "state", "tel", "evt", "rsp")] + [f"{t(A, 'rsp')}/agg-1"]
    async with session(acl_broker, AGG, ["evse/v1/#"]) as agg, session(acl_broker, A) as dev:
        for topic in own:
            await dev.publish(topic, topic.encode())
        await agg.wait_for(lambda: all(agg.on(topic) for topic in own), what="A's messages")
    assert {m.topic.value for m in agg.messages} == set(own)


async def test_device_cannot_write_outside_its_subtree(acl_broker: Mosquitto) -> None:
    forbidden = [t(B, k) for k in ("status", "state", "tel", "evt", "rsp")] + [
        t(A, "cmd"), t(B, "cmd"), group_cmd(GROUP_A), f"evse/v1/{A}", "evse/v1/x", "other/topic",
    ]
    retained = [t(B, "status"), t(B, "state")]
    marker = t(A, "evt")
    async with session(acl_broker, B) as b_dev:
        for topic in retained:
            await b_dev.publish(topic, b"genuine", retain=True)
    async with session(acl_broker, AGG, ["evse/v1/#", "other/#"]) as agg:
        await agg.wait_for(lambda: all(agg.on(topic) for topic in retained), what="B retained")
        async with session(acl_broker, A) as dev:
            for topic in forbidden:
                await dev.publish(topic, b"spoofed", retain=topic in retained)
            await dev.publish(marker, b"marker")
            await agg.wait_for(lambda: bool(agg.on(marker)), what="the marker")
    assert [m.topic.value for m in agg.messages if m.payload != b"genuine"] == [marker]
    # a spoofed retained "offline" would have outlived A's connection: B's own is still there
    async with session(acl_broker, AGG, retained) as late:
        await late.wait_for(lambda: all(late.on(topic) for topic in retained), what="retained")
    assert [m.payload for m in late.messages] == [b"genuine", b"genuine"]


async def test_device_reads_only_its_own_and_its_groups_commands(
    acl_broker: Mosquitto,
) -> None:
    readable = [t(A, "cmd"), group_cmd(GROUP_A)]
    unreadable = [t(B, "cmd"), group_cmd(GROUP_B), t(B, "evt"), t(B, "status")]
    async with session(acl_broker, A, readable + unreadable + ["evse/v1/+/cmd"]) as dev, \
            session(acl_broker, B, [t(B, "cmd"), group_cmd(GROUP_B)]) as b_dev, \
            session(acl_broker, AGG) as agg:
        assert dev.granted[:2] == [1, 1]
        await b_dev.publish(t(B, "evt"), b"b-event")
        await b_dev.publish(t(B, "status"), b"b-status")
        for topic in unreadable[:2]:
            await agg.publish(topic, b"for-b")
        await b_dev.wait_for(lambda: len(b_dev.messages) == 2, what="B gets its commands")
        for topic in readable:
            await agg.publish(topic, b"for-a")
        await dev.wait_for(lambda: all(dev.on(topic) for topic in readable), what="A's commands")
    assert {m.topic.value for m in dev.messages} == set(readable)
    assert all(m.payload == b"for-a" for m in dev.messages)


async def test_aggregator_commands_reach_the_device(acl_broker: Mosquitto) -> None:
    async with session(acl_broker, A, [t(A, "cmd"), group_cmd(GROUP_A)]) as dev, \
            session(acl_broker, AGG, ["evse/v1/#"]) as agg:
        await agg.publish(t(A, "cmd"), b'{"id":"direct"}')
        await agg.publish(group_cmd(GROUP_A), b'{"id":"group"}')
        await dev.wait_for(lambda: len(dev.messages) == 2, what="both commands")
    assert dev.payloads(t(A, "cmd")) == [b'{"id":"direct"}']
    assert dev.payloads(group_cmd(GROUP_A)) == [b'{"id":"group"}']


async def test_certificate_not_in_the_inventory_gets_only_its_own_subtree(
    acl_broker: Mosquitto,
) -> None:
    stranger = "CN-TEST-NEW"
    async with session(acl_broker, stranger, [t(stranger, "cmd"), group_cmd(GROUP_A)]) as dev, \
            session(acl_broker, AGG, ["evse/v1/#"]) as agg:
        await dev.publish(t(stranger, "status"), b"hello")
        await agg.wait_for(lambda: bool(agg.on(t(stranger, "status"))), what="its status")
        await agg.publish(group_cmd(GROUP_A), b"group")
        await agg.publish(t(stranger, "cmd"), b"direct")
        await dev.wait_for(lambda: bool(dev.on(t(stranger, "cmd"))), what="its command")
    assert dev.on(group_cmd(GROUP_A)) == []


async def test_the_agent_link_works_within_its_acl(
    acl_broker: Mosquitto, link_factory: LinkFactory
) -> None:
    """The real Link: birth and will, commands direct and by group, replies via rsp and v5."""
    pki = pki_of(acl_broker)
    assert acl_broker.tls_port is not None
    cert = pki.issue_client(A)
    async with session(acl_broker, AGG, ["evse/v1/#"]) as agg:
        h = await link_factory("127.0.0.1", acl_broker.tls_port, device_id=A, groups=(GROUP_A,),
                               tls=True, ca_file=str(pki.ca_cert), cert_file=str(cert.cert),
                               key_file=str(cert.key))
        await h.wait_connected()
        await agg.wait_for(lambda: bool(agg.on(t(A, "status"))), what="birth")
        await agg.publish(t(A, "cmd"), json.dumps({"id": "direct"}).encode())
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = f"{t(A, 'rsp')}/{AGG}"
        props.CorrelationData = b"corr-1"
        await agg.publish(group_cmd(GROUP_A), json.dumps({"id": "grouped"}).encode(),
                          properties=props)
        await agg.wait_for(lambda: bool(agg.on(t(A, "rsp")) and agg.on(f"{t(A, 'rsp')}/{AGG}")),
                           what="both replies")
        await h.stop()
    assert agg.json_on(t(A, "status"))[0]["online"] is True
    assert [r["commandId"] for r in agg.json_on(t(A, "rsp"))] == ["direct"]
    assert [r["commandId"] for r in agg.json_on(f"{t(A, 'rsp')}/{AGG}")] == ["grouped"]
    assert [c.topic for c in h.commands] == [t(A, "cmd"), group_cmd(GROUP_A)]
