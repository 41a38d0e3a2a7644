"""EnvelopeChecker: the contract's order of checks and every reject path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.api import models as m
from agent.api.envelope import (
    CommandStore,
    EnvelopeChecker,
    MemoryCommandStore,
    Verdict,
    content_hash,
    parse_command_with_source,
)
from agent.api.jws import sign_envelope
from agent.api.reasons import Reason, ReplyStatus

DEVICE = "CN-BJ-0001"
ISSUED = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
NOW = ISSUED + timedelta(seconds=30)
AGG_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def envelope(seq: int = 10, cid: str = "c-1", issuer: str = "agg-1", **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "v": 1, "id": cid, "type": "setLimit", "issuer": issuer,
        "issuedAt": "2026-11-26T08:00:00.000Z", "expiresAt": "2026-11-26T08:05:00.000Z",
        "seq": seq, "connector": 1,
        "body": {"limit": {"value": 3.5, "unit": "kW"}, "durationS": 900},
    }
    obj.update(over)
    return obj


def signed(obj: dict[str, Any], key: Ed25519PrivateKey = AGG_KEY, **kw: Any) -> dict[str, Any]:
    return {**obj, "sig": sign_envelope(obj, key, **kw)}


def make_checker(store: CommandStore | None = None, *, keys: bool = False,
                 **kw: Any) -> EnvelopeChecker:
    issuer_keys = {"agg-1": AGG_KEY.public_key()} if keys else None
    return EnvelopeChecker(store or MemoryCommandStore(), max_skew_s=60, issuer_keys=issuer_keys,
                           device_id=DEVICE, **kw)


def check(checker: EnvelopeChecker, obj: dict[str, Any], now: datetime = NOW) -> Verdict:
    cmd, source = parse_command_with_source(json.dumps(obj).encode())
    return checker.check(cmd, source, now)


def accept(checker: EnvelopeChecker, obj: dict[str, Any], at_seq: int = 7) -> m.Reply:
    """Check, 'apply' and commit, as the agent's command handler does."""
    cmd, source = parse_command_with_source(json.dumps(obj).encode())
    verdict = checker.check(cmd, source, NOW)
    assert verdict.proceed, verdict
    reply = verdict.reply(at_seq=at_seq, applied_at=NOW)
    checker.commit(cmd, verdict, reply)
    return reply


def test_fresh_command_is_accepted_and_recorded() -> None:
    verdict = check(make_checker(), envelope())
    assert (verdict.status, verdict.reason, verdict.record) == (
        ReplyStatus.ACCEPTED, Reason.OK, True)
    reply = verdict.reply(at_seq=88121, applied_at=NOW)
    wire = json.loads(m.encode(reply))
    assert wire == {"v": 1, "commandId": "c-1", "deviceId": DEVICE, "status": "accepted",
                    "reason": "OK", "appliedAt": "2026-11-26T08:00:30.000Z", "atSeq": 88121}


def test_redelivery_gets_the_cached_reply_as_duplicate_before_replay_and_expiry() -> None:
    store = MemoryCommandStore()
    checker = make_checker(store)
    first = accept(checker, envelope())
    assert store.high_water("agg-1") == 10
    for now in (NOW, NOW + timedelta(hours=1)):  # past expiresAt and with seq <= high-water
        verdict = check(checker, envelope(), now)
        assert verdict.status is ReplyStatus.DUPLICATE and not verdict.record
        again = verdict.reply(at_seq=999)
        assert again.status is ReplyStatus.DUPLICATE
        assert again.original_status is ReplyStatus.ACCEPTED
        assert again.model_copy(update={"status": first.status, "original_status": None}) == first


def test_duplicate_ignores_key_order_and_whitespace() -> None:
    store = MemoryCommandStore()
    checker = make_checker(store)
    accept(checker, envelope())
    reordered = json.loads(json.dumps(envelope(), sort_keys=True))
    cmd, source = parse_command_with_source(json.dumps(reordered, indent=3).encode())
    assert checker.check(cmd, source, NOW).status is ReplyStatus.DUPLICATE


@pytest.mark.parametrize("change", [
    {"seq": 11},
    {"body": {"limit": {"value": 3.6, "unit": "kW"}, "durationS": 900}},
    {"connector": 2},
])
def test_same_id_other_content_is_id_conflict(change: dict[str, Any]) -> None:
    checker = make_checker()
    accept(checker, envelope())
    verdict = check(checker, envelope(**change))
    assert (verdict.status, verdict.reason) == (ReplyStatus.REJECTED, Reason.ID_CONFLICT)
    assert not verdict.record


def test_expired() -> None:
    checker = make_checker()
    expiry = datetime(2026, 11, 26, 8, 5, tzinfo=UTC)
    assert check(checker, envelope(), expiry).status is ReplyStatus.ACCEPTED  # not after
    verdict = check(checker, envelope(), expiry + timedelta(milliseconds=1))
    assert (verdict.status, verdict.reason, verdict.record) == (
        ReplyStatus.REJECTED, Reason.EXPIRED, False)


def test_clock_skew() -> None:
    checker = make_checker()
    assert check(checker, envelope(), ISSUED - timedelta(seconds=60)).proceed  # exactly the skew
    verdict = check(checker, envelope(), ISSUED - timedelta(seconds=61))
    assert (verdict.status, verdict.reason) == (ReplyStatus.REJECTED, Reason.CLOCK_SKEW)


@pytest.mark.parametrize("seq", [10, 9, 0])
def test_replay_when_seq_not_above_high_water(seq: int) -> None:
    checker = make_checker()
    accept(checker, envelope(seq=10))
    verdict = check(checker, envelope(seq=seq, cid="c-2"))
    assert (verdict.status, verdict.reason) == (ReplyStatus.REJECTED, Reason.REPLAY)
    assert verdict.security_reject and not verdict.record


def test_high_water_is_per_issuer_and_never_lowered() -> None:
    store = MemoryCommandStore()
    checker = make_checker(store)
    accept(checker, envelope(seq=10))
    assert check(checker, envelope(seq=1, issuer="agg-2")).proceed
    cmd, source = parse_command_with_source(json.dumps(envelope(seq=12, cid="c-2")).encode())
    verdict = checker.check(cmd, source, NOW)
    assert verdict.proceed
    store.set_high_water("agg-1", 20)  # another command was committed meanwhile
    checker.commit(cmd, verdict, verdict.reply(at_seq=1))
    assert store.high_water("agg-1") == 20
    assert store.get_reply("agg-1", "c-2") is not None


def test_commit_refuses_unrecorded_verdicts() -> None:
    checker = make_checker(keys=True)
    cmd, source = parse_command_with_source(json.dumps(envelope()).encode())
    verdict = checker.check(cmd, source, NOW)
    with pytest.raises(ValueError, match="not to be recorded"):
        checker.commit(cmd, verdict, verdict.reply(at_seq=1))


# ----------------------------------------------------------------------------------- signatures
def test_signed_command_is_accepted_with_keys() -> None:
    assert check(make_checker(keys=True), signed(envelope())).proceed
    assert check(make_checker(keys=True), signed(envelope(), detached=True)).proceed


def test_unsigned_accepted_when_no_keys_configured() -> None:
    assert check(make_checker(keys=False), envelope()).proceed


def _tampered() -> dict[str, Any]:
    obj = signed(envelope())
    obj["body"]["limit"]["value"] = 11
    return obj


def _detached_tampered() -> dict[str, Any]:
    obj = signed(envelope(), detached=True)
    obj["seq"] = 99
    return obj


def _payload_swapped() -> dict[str, Any]:
    """A valid JWS of another command pasted into this one."""
    return {**envelope(seq=12), "sig": sign_envelope(envelope(seq=13), AGG_KEY)}


def _header(header: bytes) -> dict[str, Any]:
    import base64

    obj = signed(envelope())
    h = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
    obj["sig"] = h + obj["sig"][obj["sig"].index("."):]
    return obj


SIGNATURE_CASES: dict[str, dict[str, Any]] = {
    "unsigned": envelope(),
    "tampered body": _tampered(),
    "tampered detached": _detached_tampered(),
    "payload of another command": _payload_swapped(),
    "wrong key": signed(envelope(), OTHER_KEY),
    "unknown issuer": signed(envelope(issuer="agg-9")),
    "not a JWS": {**envelope(), "sig": "abc"},
    "bad base64": {**envelope(), "sig": "a*b.c.d"},
    "alg none": _header(b'{"alg":"none"}'),
    "crit header": _header(b'{"alg":"EdDSA","crit":["exp"],"exp":1}'),
    "truncated signature": {**signed(envelope()), "sig": signed(envelope())["sig"][:-8]},
}


@pytest.mark.parametrize("case", list(SIGNATURE_CASES))
def test_signature_invalid(case: str) -> None:
    verdict = check(make_checker(keys=True), SIGNATURE_CASES[case])
    assert (verdict.status, verdict.reason) == (ReplyStatus.REJECTED, Reason.SIGNATURE_INVALID)
    assert verdict.security_reject and not verdict.record
    cmd, _ = parse_command_with_source(json.dumps(SIGNATURE_CASES[case]).encode())
    event = verdict.security_body(cmd)
    assert event.reason is Reason.SIGNATURE_INVALID and event.command_type == "setLimit"
    token = SIGNATURE_CASES[case].get("sig")
    if token and len(token) > 8:  # the event never carries the signature
        assert token not in m.encode(event).decode()


def test_empty_key_set_refuses_everything() -> None:
    checker = EnvelopeChecker(MemoryCommandStore(), max_skew_s=60, issuer_keys={},
                              device_id=DEVICE)
    assert check(checker, signed(envelope())).reason is Reason.SIGNATURE_INVALID


def test_signature_is_checked_before_expiry_and_replay() -> None:
    checker = make_checker(keys=True)
    verdict = check(checker, envelope(), NOW + timedelta(days=1))
    assert verdict.reason is Reason.SIGNATURE_INVALID


# ------------------------------------------------------------------------ capability checks
def _profile_with(limit: float) -> dict[str, Any]:
    return envelope(type="setProfile", body={
        "profileId": "p-1", "layer": "grid", "stackLevel": 0, "kind": "relative",
        "schedule": {"unit": "W", "periods": [{"offsetS": 0, "limit": 3000},
                                              {"offsetS": 600, "limit": limit}]}})


@pytest.mark.parametrize("obj", [
    envelope(body={"limit": {"value": -3.5, "unit": "kW"}, "durationS": 900}),
    _profile_with(-2000),
], ids=["setLimit", "setProfile"])
def test_discharge_is_not_supported_unless_declared(obj: dict[str, Any]) -> None:
    verdict = check(make_checker(), obj)
    assert (verdict.status, verdict.reason, verdict.record) == (
        ReplyStatus.NOT_SUPPORTED, Reason.LOCAL_CONSTRAINT, True)
    assert check(make_checker(discharge_supported=True), obj).proceed


def test_notsupported_is_recorded_so_redelivery_is_duplicate() -> None:
    checker = make_checker()
    obj = envelope(body={"limit": {"value": -1, "unit": "A"}, "durationS": 60})
    cmd, source = parse_command_with_source(json.dumps(obj).encode())
    verdict = checker.check(cmd, source, NOW)
    checker.commit(cmd, verdict, verdict.reply(at_seq=3))
    again = check(checker, obj).reply(at_seq=4)
    assert (again.status, again.original_status) == (ReplyStatus.DUPLICATE,
                                                     ReplyStatus.NOT_SUPPORTED)


def test_decommission_must_name_this_device() -> None:
    wrong = envelope(type="decommission", body={"confirm": "CN-BJ-0002"})
    verdict = check(make_checker(), wrong)
    assert (verdict.status, verdict.reason) == (ReplyStatus.REJECTED, Reason.LOCAL_CONSTRAINT)
    assert check(make_checker(), envelope(type="decommission", body={"confirm": DEVICE})).proceed


def test_content_hash_excludes_sig() -> None:
    assert content_hash(envelope()) == content_hash(signed(envelope()))
    assert content_hash(envelope()) != content_hash(envelope(seq=11))


def test_flow_against_the_sqlite_store(tmp_path: Path) -> None:
    """The same rules with the real store (agent/store.py), across a reopen (a reboot)."""
    from agent.command_store import CommandStore as SqliteCommandStore

    store = SqliteCommandStore(tmp_path / "commands.db")
    first = accept(make_checker(store), envelope(seq=10))
    store.close()
    store = SqliteCommandStore(tmp_path / "commands.db")
    checker = make_checker(store)
    again = check(checker, envelope(seq=10))
    assert again.status is ReplyStatus.DUPLICATE
    assert again.reply(at_seq=1).model_copy(
        update={"status": first.status, "original_status": None}) == first
    assert check(checker, envelope(seq=10, cid="c-2")).reason is Reason.REPLAY
    assert check(checker, envelope(seq=11)).reason is Reason.ID_CONFLICT
    store.close()


def test_an_admitted_command_counts_before_its_reply_is_recorded() -> None:
    """Commands are admitted one at a time but their replies are recorded later, in order: a
    reserved command's seq already raises the issuer's mark, and its id is in flight (a
    redelivery must wait for the record, then it is a duplicate) until released."""
    store = MemoryCommandStore()
    checker = make_checker(store)
    first, source = parse_command_with_source(json.dumps(envelope(seq=10)).encode())
    verdict = checker.check(first, source, NOW)
    checker.reserve(first, verdict)
    assert checker.in_flight(first)
    assert check(checker, envelope(seq=10, cid="c-2")).reason is Reason.REPLAY
    assert check(checker, envelope(seq=11, cid="c-2")).proceed
    checker.commit(first, verdict, verdict.reply(at_seq=7, applied_at=NOW))
    checker.release(first, verdict)
    assert not checker.in_flight(first)
    assert check(checker, envelope(seq=10)).status is ReplyStatus.DUPLICATE
    skewed, source = parse_command_with_source(json.dumps(
        envelope(seq=12, cid="c-3", issuedAt="2026-11-26T08:09:00.000Z",
                 expiresAt="2026-11-26T08:19:00.000Z")).encode())
    refused = checker.check(skewed, source, NOW)
    assert refused.reason is Reason.CLOCK_SKEW and not refused.record
    checker.reserve(skewed, refused)  # refused before it was authentic and fresh: no effect
    assert not checker.in_flight(skewed)
    assert check(checker, envelope(seq=11, cid="c-4")).proceed
