"""Issuer public keys for signed commands (JWS EdDSA / Ed25519), loaded from PEM files.

cryptography (~7 MB RSS) is imported only when keys are configured: without issuer keys the agent
never verifies a signature, so it never loads the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def load_issuer_keys(paths: Mapping[str, Path] | None) -> dict[str, Ed25519PublicKey] | None:
    """None: signatures not required. A mapping: every command must be signed by its issuer."""
    if paths is None:
        return None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    keys: dict[str, Ed25519PublicKey] = {}
    for issuer, path in paths.items():
        key_name = f"mqtt.issuer_keys.{issuer}"
        try:
            key = load_pem_public_key(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc}", key=key_name,
                              fix="point it at the issuer's Ed25519 public key (PEM)") from exc
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM public key", key=key_name,
                              fix="export it with: openssl pkey -pubout") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path} is not an Ed25519 key", key=key_name,
                              fix="issuers sign with EdDSA/Ed25519 (RFC 8037)")
        keys[issuer] = key
    return keys
