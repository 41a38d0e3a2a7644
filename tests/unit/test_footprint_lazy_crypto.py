"""Memory footprint: cryptography (~7 MB RSS) is loaded only when issuer keys are configured,
and the command models are built when the first command arrives, not at import.

Each case runs in a fresh interpreter (this test process has imported cryptography already). The
child imports what ``evse-agent run`` imports, builds the envelope checker the way
``OrderlyService`` does and checks an unsigned command. An eager ``import cryptography`` anywhere
on that path makes the first case fail; the second case shows that the probe does see the library
when keys are configured and a signed command verifies.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.api.jws import sign_envelope

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from datetime import UTC, datetime

import agent.cli                              # evse-agent's entry point
from agent.logsetup import configure_logging  # agent.cli._run
from agent.shell.app import run_agent         # agent.cli._run
from agent.orderly.service import OrderlyService  # AgentApp.run when mqtt is configured
from agent.api.envelope import EnvelopeChecker, MemoryCommandStore, parse_command_with_source
from agent.orderly.keys import load_issuer_keys
from agent.api import models

# Built on first use (defer_build, cached adapters): nothing of the command side before a command.
built_at_import = [models.command_adapter.cache_info().currsize > 0,
                   models.SetLimitCommand.__pydantic_complete__]
keys_path, command = sys.argv[1], sys.argv[2]
keys = {"agg-1": keys_path} if keys_path else None
checker = EnvelopeChecker(MemoryCommandStore(), max_skew_s=60, device_id="CN-BJ-0001",
                          issuer_keys=load_issuer_keys(keys))
cmd, source = parse_command_with_source(command.encode())
verdict = checker.check(cmd, source, datetime.now(UTC))
print(json.dumps({"status": verdict.status.value, "built_at_import": built_at_import,
                  "crypto": sorted(m for m in sys.modules if m.split(".")[0] == "cryptography")}))
"""


def _command() -> dict[str, object]:
    now = "2026-11-26T08:00:00.000Z"
    return {"v": 1, "id": "c-1", "type": "setLimit", "issuer": "agg-1", "issuedAt": now,
            "seq": 1, "connector": 1, "body": {"limit": {"value": 8, "unit": "A"},
                                               "durationS": 60}}


def _run_child(keys_path: str, command: dict[str, object]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, keys_path, json.dumps(command)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_no_issuer_keys_no_cryptography() -> None:
    result = _run_child("", _command())
    assert result["status"] == "accepted"
    assert result["crypto"] == [], "something imports cryptography without issuer keys"
    assert result["built_at_import"] == [False, False], "command models built at import"


def test_issuer_keys_load_cryptography_and_verify(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "agg-1.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    command = _command()
    command["sig"] = sign_envelope(command, key)
    result = _run_child(str(pem), command)
    assert result["status"] == "accepted"
    assert "cryptography" in result["crypto"]
