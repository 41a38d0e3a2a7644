"""Fuzzing parse_command: any input gives a Command or a ProtocolError with a reason code.

``EVSE_FUZZ_EXAMPLES`` sets the number of examples per test (default 300; a dedicated run uses
10000). Inputs are arbitrary bytes, arbitrary JSON values, and valid commands with one field
replaced by an arbitrary JSON value (which reaches the validators far more often).
"""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.api.envelope import EnvelopeChecker, MemoryCommandStore, parse_command_with_source
from agent.api.reasons import Reason, ReplyStatus
from agent.api.schemas import command_examples
from agent.errors import ProtocolError

EXAMPLES = int(os.environ.get("EVSE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REASONS = {r.value for r in Reason}
NOW = datetime(2026, 11, 26, 8, 0, 30, tzinfo=UTC)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    | st.sampled_from(["A", "W", "kW", "2026-11-26T08:00:00Z", "setLimit", "grid", "relative"]),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=6),
    max_leaves=40,
)


def _outcome(raw: bytes) -> None:
    """The property: parse, and when it parses, the envelope checks run without raising."""
    try:
        command, source = parse_command_with_source(raw)
    except ProtocolError as exc:
        assert exc.reason in REASONS
        return
    checker = EnvelopeChecker(MemoryCommandStore(), max_skew_s=60, issuer_keys=None,
                              device_id="CN-BJ-0001")
    verdict = checker.check(command, source, NOW)
    assert verdict.reason in Reason and verdict.status in ReplyStatus


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(raw: bytes) -> None:
    _outcome(raw)


@FUZZ
@given(JSON_VALUES)
def test_arbitrary_json(value: Any) -> None:
    _outcome(_dumps(value))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, item in node.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            out += _paths(item, (*prefix, i))
    return out


@st.composite
def mutated_commands(draw: st.DrawFn) -> bytes:
    obj = copy.deepcopy(draw(st.sampled_from(command_examples())))
    path = draw(st.sampled_from(_paths(obj)))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=12))] = draw(JSON_VALUES)
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return _dumps(obj)


@FUZZ
@given(mutated_commands())
def test_mutated_valid_commands(raw: bytes) -> None:
    _outcome(raw)


def test_valid_examples_pass_the_property() -> None:
    for example in command_examples():
        command, _ = parse_command_with_source(_dumps(example))
        assert command.type == example["type"]
