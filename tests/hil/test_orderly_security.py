"""Acceptance, point 3: QoS 1 redelivery applied once; stale, replayed or badly signed commands
refused; the whole agent over mutual TLS, and a client without a certificate refused."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hil.broker import Mosquitto
from hil.envelope import ISSUER, envelope, now_iso
from tests.hil.orderly_harness import AgentOnRig

pytestmark = [pytest.mark.mqtt, pytest.mark.hil]


async def test_a_redelivered_command_is_applied_once(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with AgentOnRig(tmp_path, broker) as a:
        await a.plug_and_charge()
        env = envelope("setLimit", {"limit": {"value": 12, "unit": "A"}, "durationS": 600})
        payload = json.dumps(env).encode()
        await a.publish(payload)
        await a.publish(payload)  # what a QoS 1 redelivery looks like to the agent
        first, second = await a.reply(env["id"]), await a.reply(env["id"], 2)
        assert first["status"] == "accepted"
        assert second["status"] == "duplicate" and second["originalStatus"] == "accepted"
        assert second["appliedAt"] == first["appliedAt"]
        await a.wait_offer(12)
        await a.wait_event("commandStarted", lambda e: e["body"].get("commandId") == env["id"])
        # a later command is applied, so the stream went on past the duplicate
        nxt = await a.send("setLimit", {"limit": {"value": 14, "unit": "A"}, "durationS": 600})
        assert nxt["status"] == "accepted"
        await a.wait_offer(14)
        starts = [e["body"]["commandId"] for e in a.events("commandStarted")]
        assert starts.count(env["id"]) == 1


def issuer_key(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "agg-1.pub.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pem


async def test_signed_commands_only_when_issuer_keys_are_configured(
    broker: Mosquitto, tmp_path: Path
) -> None:
    key, pem = issuer_key(tmp_path)
    impostor = Ed25519PrivateKey.generate()
    async with AgentOnRig(tmp_path, broker, mqtt={"issuer_keys": {ISSUER: str(pem)}}) as a:
        await a.plug_and_charge()
        status = a.recorder.json_on(f"{a.base}/status")[-1]
        assert status["capabilities"]["signedCommands"] is True

        good = envelope("setLimit", {"limit": {"value": 10, "unit": "A"}, "durationS": 600},
                        key=key)
        await a.publish(good)
        assert (await a.reply(good["id"]))["status"] == "accepted"
        await a.wait_offer(10)

        body = {"limit": {"value": 6, "unit": "A"}, "durationS": 600}
        cases = {
            "SIGNATURE_INVALID": [envelope("setLimit", body),  # unsigned
                                  envelope("setLimit", body, key=impostor),
                                  {**envelope("setLimit", body, key=key),
                                   "body": {**body, "durationS": 601}}],  # altered after signing
            "EXPIRED": [envelope("setLimit", body, issuedAt=now_iso(-120),
                                 expiresAt=now_iso(-60), key=key)],
            "REPLAY": [envelope("setLimit", body, seq=good["seq"], key=key)],
        }
        for reason, envs in cases.items():
            for env in envs:
                await a.publish(env)
                reply = await a.reply(env["id"])
                assert (reply["status"], reply["reason"]) == ("rejected", reason), reply
        refused = {env["id"] for env in cases["SIGNATURE_INVALID"] + cases["REPLAY"]}
        await a.wait(lambda: refused <= {e["body"].get("commandId")
                                         for e in a.events("securityReject")}, "securityRejects")
        rejects = {e["body"]["commandId"]: e["body"]["reason"] for e in a.events("securityReject")}
        assert sorted(rejects.values()) == ["REPLAY"] + ["SIGNATURE_INVALID"] * 3
        tokens = [e["sig"] for envs in cases.values() for e in envs if "sig" in e]
        assert not any(t in json.dumps(a.events("securityReject")) for t in tokens)
        assert a.rig.offered_a() == pytest.approx(10, abs=0.5)  # none of them applied
        log = (a.rig.state_dir / "security.log").read_text()
        assert log.count("SIGNATURE_INVALID") == 3 and good["sig"] not in log


async def test_the_agent_over_mutual_tls(tls_broker: Mosquitto, tmp_path: Path) -> None:
    pki = tls_broker.pki
    assert pki is not None and tls_broker.tls_port is not None
    device = pki.issue_client("CN-TEST-0001")
    tls = {"tls": True, "ca_file": str(pki.ca_cert), "cert_file": str(device.cert),
           "key_file": str(device.key)}
    async with AgentOnRig(tmp_path, tls_broker, port=tls_broker.tls_port, mqtt=tls) as a:
        await a.plug_and_charge()
        reply = await a.send("setLimit", {"limit": {"value": 9, "unit": "A"}, "durationS": 600})
        assert reply["status"] == "accepted"
        await a.wait_offer(9)
        assert a.agent is not None
        assert any(e.get("event") == "mqtt_connected" and e.get("tls") is True
                   for e in a.agent.log_events())

    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))  # server verified, no client cert
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", tls_broker.tls_port, tls_context=ctx,
                                  timeout=3) as client:
            await client.publish(f"evse/v1/{a.device_id}/cmd", b"{}", qos=1, timeout=3)
