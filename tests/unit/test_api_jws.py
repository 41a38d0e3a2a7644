"""Canonical JSON against the RFC 8785 vectors, and the JWS round trip."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.api.jws import canonical_json, sign_envelope, signing_payload, verify_envelope
from agent.errors import ProtocolError

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
NUMBER_VECTORS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), NUMBER_VECTORS)
def test_rfc8785_numbers(bits: str, text: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_json(value) == text.encode()


def test_rfc8785_main_example() -> None:
    source = (r'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
              r' "string": "\u20ac$\u000F\u000aA' "'" r'\u0042\u0022\u005c\\\"\/",'
              r' "literals": [null, true, false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
                r'1e-27],"string":"€$\u000f\nA' "'" r'B\"\\\\\"/"}')
    assert canonical_json(json.loads(source)) == expected.encode()


def test_rfc8785_sorts_keys_by_utf16_code_units() -> None:
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    out = canonical_json({k: i for i, k in enumerate(keys)}).decode()
    order = [json.loads("{" + part + "}") for part in out[1:-1].split(",")]
    assert [next(iter(o)) for o in order] == ["\r", "1", "\u0080", "\u00f6", "\u20ac",
                                               "\U0001f600", "\ufb33"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: 2}, {"a": {1, 2}}])
def test_canonical_json_refuses_non_json(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        canonical_json(value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _as_doubles(value: object) -> object:
    """JSON numbers are doubles (RFC 8785): 1.0 and 1 are the same number."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    assert isinstance(value, dict)
    return {k: _as_doubles(v) for k, v in value.items()}


@given(JSON)
def test_canonical_json_round_trips_and_is_a_fixed_point(value: object) -> None:
    text = canonical_json(value)
    again = json.loads(text)
    assert _as_doubles(again) == _as_doubles(value)
    assert canonical_json(again) == text


KEY = Ed25519PrivateKey.generate()
ENV = {"v": 1, "id": "c-1", "type": "resync", "issuer": "agg-1",
       "issuedAt": "2026-11-26T08:00:00Z", "seq": 3, "body": {"fromSeq": 0}}


def _parts(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")]


def test_compact_jws_layout() -> None:
    token = sign_envelope(ENV, KEY)
    header, payload, signature = _parts(token)
    assert json.loads(header) == {"alg": "EdDSA"}
    assert payload == signing_payload(ENV) == canonical_json(ENV)
    assert len(signature) == 64
    assert "=" not in token
    verify_envelope({**ENV, "sig": token}, KEY.public_key())


def test_detached_payload_verifies_and_is_shorter() -> None:
    attached, detached = sign_envelope(ENV, KEY), sign_envelope(ENV, KEY, detached=True)
    assert detached.split(".")[1] == "" and len(detached) < len(attached)
    verify_envelope({**ENV, "sig": detached}, KEY.public_key())


def test_existing_sig_is_not_signed_over() -> None:
    token = sign_envelope({**ENV, "sig": "old"}, KEY)
    verify_envelope({**ENV, "sig": token}, KEY.public_key())


def test_wrong_key_fails() -> None:
    token = sign_envelope(ENV, KEY)
    with pytest.raises(ProtocolError) as info:
        verify_envelope({**ENV, "sig": token}, Ed25519PrivateKey.generate().public_key())
    assert info.value.reason == "SIGNATURE_INVALID"
