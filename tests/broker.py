"""A private mosquitto for tests, and a throwaway PKI for its TLS listener.

Why: the house rules want real parts in tests. Each broker listens on free loopback ports (never
1883), keeps its config, log and persistence in its own directory, runs as the current user (so
it can read the key files and write persistence even when the tests run as root), and is stopped
or killed by its PID only. ``restart()`` reuses the same ports, for outage tests.

    broker = MosquittoBroker(tmp_path, pki=make_test_pki(tmp_path / "pki"))
    broker.start(); ...; broker.stop(); broker.start(); ...; broker.kill()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or shutil.which(
        "mosquitto", path="/usr/sbin:/usr/local/sbin:/sbin"
    )


def free_port(host: str = HOST) -> int:
    """A port the kernel considers free right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    if port == 1883:  # pragma: no cover - the kernel never hands out privileged ports, but be sure
        return free_port(host)
    return port


# --- PKI ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPki:
    """A CA, a server cert (SAN DNS:localhost, IP:127.0.0.1) and a way to issue client certs."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client: ClientCert  # CN "evse-test"

    __test__ = False  # not a pytest test class

    def issue_client(self, common_name: str, *, days: int = 30) -> ClientCert:
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        return _issue(self.directory, common_name, ca_cert, ca_key, server=False, days=days)


def make_test_pki(directory: Path, *, days: int = 30) -> TestPki:
    """EC P-256 CA + server + one client certificate, written as PEM files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test EVSE CA")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_cert_path = _write(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    ca_key_path = _write_key(directory / "ca.key", ca_key)
    server = _issue(directory, "localhost", ca_cert, ca_key, server=True, days=days)
    client = _issue(directory, "evse-test", ca_cert, ca_key, server=False, days=days)
    return TestPki(directory, ca_cert_path, ca_key_path, server.cert, server.key, client)


def _issue(
    directory: Path,
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
    days: int,
) -> ClientCert:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:  # always SANs: Python checks IP addresses only against IP SANs
        builder = builder.add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    stem = "server" if server else f"client-{common_name}"
    return ClientCert(
        _write(directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
        _write_key(directory / f"{stem}.key", key),
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


# --- broker ------------------------------------------------------------------------------------


class BrokerError(RuntimeError):
    pass


class MosquittoBroker:
    """One private mosquitto process; ``port`` is plain MQTT, ``tls_port`` requires a client cert.

    ``persistence=True`` keeps sessions and queued QoS 1 messages across ``stop()``/``start()``
    (mosquitto saves its database on SIGTERM), with no limit on queued messages.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        pki: TestPki | None = None,
        persistence: bool = False,
        extra_config: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise BrokerError("mosquitto binary not found (apt-get install mosquitto)")
        self.binary = found
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.persistence = persistence
        self.host = HOST
        self.port = free_port()
        self.tls_port: int | None = free_port() if pki is not None else None
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._extra = list(extra_config)
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            f"user {getpass.getuser()}",  # no privilege drop: can read our keys, write our dir
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 0" if self.persistence else "max_queued_messages 10000",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.workdir}/")
            lines.append("autosave_interval 1")
        lines.append(f"listener {self.port} {self.host}")
        if self.pki is not None and self.tls_port is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.pki.ca_cert}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        lines += self._extra
        self.config_path.write_text("\n".join(lines) + "\n")

    # --- life cycle ---

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or start again on the same ports) and wait until every listener accepts."""
        if self.running:
            return
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        for port in ports:
            while not _accepts(self.host, port):
                if self._proc.poll() is not None:
                    raise BrokerError(f"mosquitto exited ({self._proc.returncode}):\n{self.log()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise BrokerError(f"mosquitto did not listen on {port}:\n{self.log()}")
                time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID (mosquitto saves persistence), SIGKILL if it does not exit."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL by PID: a crash, nothing saved."""
        self._signal(signal.SIGKILL, 5.0)

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5.0)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill() if et is not None else self.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# --- observing the broker from a test ----------------------------------------------------------


class Recorder:
    """An MQTT client that records everything on ``topics`` (the test's eyes on the broker).

    ``session=True`` keeps a persistent session (clean start off, 1 h expiry) under a fixed
    identifier, so messages published while it is away are queued for it by the broker.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Sequence[str],
        *,
        v5: bool = True,
        identifier: str | None = None,
        session: bool = False,
    ) -> None:
        self.host, self.port, self.topics = host, port, list(topics)
        self.v5 = v5
        self.identifier = identifier
        self.session = session
        self.messages: list[aiomqtt.Message] = []
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    def _make(self) -> aiomqtt.Client:
        kwargs: dict[str, object] = {}
        if self.session and self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            kwargs.update(clean_start=False, properties=props)
        elif self.session:
            kwargs.update(clean_session=False)
        return aiomqtt.Client(
            self.host, self.port, identifier=self.identifier, timeout=5,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            **kwargs,  # type: ignore[arg-type]
        )

    async def connect(self) -> Recorder:
        self.client = self._make()
        await self.client.__aenter__()
        if self.topics:
            await self.client.subscribe([(t, 1) for t in self.topics])
        self._task = asyncio.create_task(self._collect(self.client))
        return self

    async def _collect(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                self.messages.append(message)
        except aiomqtt.MqttError:
            pass  # the broker went away; reconnect() if the test wants more

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.__aexit__(None, None, None)
        self.client, self._task = None, None

    async def reconnect(self, limit_s: float = 10.0) -> None:
        await self.close()
        deadline = time.monotonic() + limit_s
        while True:
            try:
                await self.connect()
                return
            except aiomqtt.MqttError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def __aenter__(self) -> Recorder:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.value == topic]

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(topic) if m.payload]

    async def wait_for(
        self, predicate: Callable[[], bool], limit_s: float = 15.0, what: str = "condition"
    ) -> None:
        await wait_until(predicate, limit_s, f"{what}; recorded {len(self.messages)} messages")

    async def publish(self, topic: str, payload: bytes, **kwargs: object) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1, **kwargs)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], limit_s: float = 15.0,
                     what: str = "condition") -> None:
    """Poll until ``predicate()``; the timeout only bounds a failing test, it asserts nothing."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
