"""Canonical JSON and the command signature (JWS, RFC 7515, with EdDSA/Ed25519, RFC 8037).

Canonical JSON (``canonical_json``) follows RFC 8785 (JCS) for every value a command can hold:

* object members sorted by the UTF-16 code units of their names (RFC 8785 §3.2.3), no whitespace;
* strings as ``json.dumps(ensure_ascii=False)`` writes them, which is RFC 8785 §3.2.2.2 escaping:
  ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other controls as ``\\u00xx`` (lower-case
  hex), all else literal, encoded as UTF-8;
* numbers as ECMAScript ``Number.prototype.toString`` (RFC 8785 §3.2.2.3): ``1.0`` -> ``1``,
  ``1e-7`` -> ``1e-7``, ``1e21`` -> ``1e+21``; integers of magnitude below 10**21 as plain decimals.
  NaN and infinities are refused (``ValueError``). Integers beyond 2**53 are written exactly (JCS
  would round them through a double); the schema never admits such values, so no valid command
  differs.

The signature (the envelope's ``sig``) is a JWS in compact serialization
``BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)`` with the protected header
``{"alg":"EdDSA"}`` (other members allowed: ``kid``, ``typ``, ``cty``; ``crit`` and ``b64`` are
refused). The payload is the canonical JSON of the envelope without ``sig``. The payload part may be
empty (detached content, RFC 7515 Appendix F): the verifier then uses the canonical envelope itself,
which halves the message size. A non-empty payload must equal the canonical envelope byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from agent.errors import ProtocolError

if TYPE_CHECKING:  # cryptography costs ~7 MB RSS: imported only when a signature is checked
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_ALLOWED_HEADER = frozenset({"alg", "kid", "typ", "cty"})
SIGNATURE_FIELD = "sig"


def _number(value: float) -> str:
    """ECMAScript Number::toString of a finite double (shortest round-trip digits)."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinities have no JSON form")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits_tuple = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    exponent = digits_tuple.exponent
    assert isinstance(exponent, int)  # finite, checked above
    k = len(digits)
    n = exponent + k  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value) if abs(value) < 10**21 else _number(float(value)))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: str(k).encode("utf-16-be"))):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical form of a JSON value (as ``json.loads`` returns it), UTF-8 encoded."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def signing_payload(envelope: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the canonical envelope without ``sig``."""
    return canonical_json({k: v for k, v in envelope.items() if k != SIGNATURE_FIELD})


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_envelope(
    envelope: Mapping[str, Any], private_key: Ed25519PrivateKey, *, detached: bool = False
) -> str:
    """The ``sig`` value for ``envelope`` (any existing ``sig`` is ignored). For tests and tools."""
    header = _b64encode(b'{"alg":"EdDSA"}')
    payload = _b64encode(signing_payload(envelope))
    signature = private_key.sign(f"{header}.{payload}".encode("ascii"))
    return f"{header}.{'' if detached else payload}.{_b64encode(signature)}"


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(message, reason="SIGNATURE_INVALID")


def verify_envelope(envelope: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Check the envelope's ``sig``; raise ProtocolError(reason="SIGNATURE_INVALID") if it fails."""
    token = envelope.get(SIGNATURE_FIELD)
    if not isinstance(token, str):
        raise _invalid("the command is not signed")
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid("sig is not a compact JWS (three base64url parts)")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_b64decode(header_b64))
        payload = _b64decode(payload_b64)
        signature = _b64decode(signature_b64)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid("sig is not a compact JWS (bad base64url or header JSON)") from exc
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise _invalid('the JWS header must carry "alg":"EdDSA"')
    if not set(header) <= _ALLOWED_HEADER:
        raise _invalid("the JWS header has members we do not understand (crit, b64, ...)")
    expected = signing_payload(envelope)
    if payload_b64 and payload != expected:
        raise _invalid("the JWS payload differs from the canonical envelope")
    signing_input = f"{header_b64}.{payload_b64 or _b64encode(expected)}".encode("ascii")
    from cryptography.exceptions import InvalidSignature  # lazy: see the imports above

    try:
        public_key.verify(signature, signing_input)
    except InvalidSignature as exc:
        raise _invalid("the signature does not verify with the issuer's key") from exc
    except (ValueError, binascii.Error) as exc:  # wrong signature length
        raise _invalid("the signature is malformed") from exc
