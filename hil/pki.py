"""A throwaway PKI for the private broker's TLS listener and the agent's client certificate.

Why: mutual TLS is tested with real certificates, never a disabled check. EC P-256, a CA, a
server certificate with SANs DNS:localhost and IP:127.0.0.1 (Python checks IP addresses only
against IP SANs), and client certificates on demand; keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
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


def make_pki(directory: Path, *, days: int = 30) -> Pki:
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
    return Pki(directory, ca_cert_path, ca_key_path, server.cert, server.key, client)


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
