"""The generated documents: checked-in files up to date, AsyncAPI 3.0 structure, examples valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from agent.api import schemas
from agent.api.envelope import parse_command
from agent.api.models import MEASURANDS, Reply
from agent.api.reasons import OptOutReason, Reason, ReplyStatus, StopReason


def test_check_passes_on_the_checked_in_docs() -> None:
    result = subprocess.run([sys.executable, "-m", "agent.api.schemas", "--check"],
                            cwd=schemas.ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_names_a_stale_file() -> None:
    files = schemas.generated_files()
    target = schemas.DOCS / "reason-codes.md"
    files[target] = files[target] + "edited by hand\n"
    assert schemas.stale_files(files) == [target]
    lines: list[str] = []
    assert schemas.main(["--check"], out=lines.append) == 0
    assert lines == []


def _doc() -> dict[str, Any]:
    loaded = yaml.safe_load((schemas.DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_top_level_and_every_ref_resolves() -> None:
    doc = _doc()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"] == "1.0.0"
    assert {"servers", "channels", "operations", "components"} <= set(doc)
    refs = _refs(doc)
    assert len(refs) > 50
    for ref in refs:
        _resolve(doc, ref)  # raises KeyError when dangling


def test_asyncapi_topics_qos_retain_and_reply() -> None:
    doc = _doc()
    addresses = {name: ch["address"] for name, ch in doc["channels"].items()}
    assert addresses["cmd"] == "{root}/{deviceId}/cmd"
    assert addresses["groupCmd"] == "{root}/group/{groupId}/cmd"
    assert addresses["responseTopic"] is None
    for name, channel in doc["channels"].items():
        for param in channel.get("parameters", {}):
            assert "{" + param + "}" in channel["address"], name
    ops = doc["operations"]
    retained = {n for n, op in ops.items() if op["bindings"]["mqtt"]["retain"]}
    assert retained == {"sendStatus", "sendState"}
    assert all(op["bindings"]["mqtt"]["qos"] == 1 for op in ops.values())
    assert ops["receiveCommand"]["action"] == "receive"
    assert ops["receiveCommand"]["reply"]["address"]["location"].startswith("$message")
    assert ops["sendReply"]["channel"] == {"$ref": "#/channels/rsp"}
    assert doc["servers"]["mqtts"]["protocol"] == "secure-mqtt"
    tls = _resolve(doc, doc["servers"]["mqtts"]["security"][0]["$ref"])
    assert tls["type"] == "X509"
    assert "discriminator" not in json.dumps(doc["components"]["schemas"])


def test_asyncapi_examples_are_valid_messages() -> None:
    doc = _doc()
    examples = doc["components"]["messages"]["command"]["examples"]
    assert {e["payload"]["type"] for e in examples} == set(schemas.COMMAND_EXAMPLES)
    for example in examples:
        parse_command(json.dumps(example["payload"]).encode())
    for example in doc["components"]["messages"]["reply"]["examples"]:
        Reply.model_validate_json(json.dumps(example["payload"]))


def test_json_schemas_cover_the_models() -> None:
    command = json.loads((schemas.DOCS / "schemas" / "command.json").read_text())
    assert command["$schema"].endswith("2020-12/schema")
    mapping = command["discriminator"]["mapping"]
    assert set(mapping) == set(schemas.COMMAND_EXAMPLES)
    set_limit = command["$defs"]["SetLimitCommand"]
    assert set_limit["additionalProperties"] is False
    assert {"v", "id", "type", "issuer", "issuedAt", "seq", "body"} <= set(set_limit["required"])
    reply = json.loads((schemas.DOCS / "schemas" / "reply.json").read_text())
    assert set(reply["$defs"]["ReplyStatus"]["enum"]) == {s.value for s in ReplyStatus}
    assert set(reply["$defs"]["Reason"]["enum"]) == {r.value for r in Reason}
    event = json.loads((schemas.DOCS / "schemas" / "event.json").read_text())
    assert len(event["oneOf"]) == 19


def test_reason_codes_and_telemetry_docs() -> None:
    reasons_md = (schemas.DOCS / "reason-codes.md").read_text()
    for code in [*Reason, *ReplyStatus, *OptOutReason, *StopReason]:
        assert f"`{code.value}`" in reasons_md
    telemetry_md = (schemas.DOCS / "telemetry.md").read_text()
    for field, measurand, _unit, _note in MEASURANDS:
        assert f"| `{field}` | {measurand} |" in telemetry_md
    assert "Energy.Active.Import.Register" in telemetry_md


def test_docs_dir_is_where_the_repo_keeps_them() -> None:
    assert (schemas.ROOT / "pyproject.toml").is_file()
    assert Path(schemas.DOCS, "HOUSE_RULES.md").is_file()
