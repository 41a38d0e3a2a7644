"""Generates the API documents from the models: JSON Schemas, AsyncAPI 3.0, reason codes, telemetry.

``python -m agent.api.schemas --write`` regenerates the checked-in files under ``docs/``;
``--check`` (what CI runs) exits 1 and names every file that differs from what the code generates.

The AsyncAPI document is self-contained: it inlines the same schemas under ``components.schemas``
(``docs/schemas/*.json`` are the standalone JSON Schema 2020-12 copies for non-AsyncAPI consumers).
The inlined copies drop pydantic's OpenAPI-style ``discriminator`` object, which the AsyncAPI Schema
Object defines differently (a string); the ``const`` of ``type`` already selects the branch.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode, JsonSchemaValue

from agent.api import models, reasons

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_MQTT_BINDING = "0.2.0"

# (file stem, components name, adapter) of every top-level payload.
PAYLOADS: tuple[tuple[str, str, TypeAdapter[Any]], ...] = (
    ("command", "Command", models.command_adapter()),
    ("reply", "Reply", TypeAdapter(models.Reply)),
    ("event", "Event", models.event_adapter()),
    ("telemetry", "Telemetry", TypeAdapter(models.Telemetry)),
    ("status", "Status", models.status_adapter()),
    ("state", "State", TypeAdapter(models.State)),
)

_TS = "2026-11-26T08:00:00.000Z"
_ENV = {"v": 1, "issuer": "agg-1", "issuedAt": _TS, "expiresAt": "2026-11-26T08:05:00.000Z"}
COMMAND_EXAMPLES: dict[str, dict[str, Any]] = {
    "setLimit": {"limit": {"value": 3.5, "unit": "kW"}, "durationS": 900, "dsr": True,
                 "reason": "feeder F12 evening peak"},
    "setProfile": {"profileId": "valley-2026-11", "layer": "default", "stackLevel": 1,
                   "kind": "recurring", "recurrency": "daily", "maxOfflineS": 86400,
                   "schedule": {"unit": "A", "startAt": "2026-11-26T00:00:00.000Z",
                                "durationS": 86400, "periods": [
                                    {"offsetS": 0, "limit": 32},
                                    {"offsetS": 28800, "limit": 10, "phases": 1},
                                    {"offsetS": 79200, "limit": 32}]}},
    "clearProfile": {"profileId": "valley-2026-11"},
    "getComposite": {"horizonS": 86400, "unit": "A"},
    "startSession": {"idTag": "04A2B3C4D5"},
    "stopSession": {},
    "setConfig": {"telemetryPeriodS": 10, "randomDelayMaxS": 600, "idleOccupancyS": 1800,
                  "failsafe": {"afterS": 900, "limit": {"value": 8, "unit": "A"}}},
    "resync": {"fromSeq": 88000},
    "decommission": {"confirm": "CN-BJ-0001"},
}


def command_examples() -> list[dict[str, Any]]:
    """One valid envelope per command type (documentation and test fixtures)."""
    return [
        {**_ENV, "id": f"cmd-{i:04d}", "type": kind, "seq": 1000 + i, "connector": 1, "body": body}
        for i, (kind, body) in enumerate(COMMAND_EXAMPLES.items(), start=1)
    ]


REPLY_EXAMPLE = {"v": 1, "commandId": "cmd-0001", "deviceId": "CN-BJ-0001", "status": "accepted",
                 "reason": "OK", "appliedAt": _TS, "atSeq": 88121}


def json_schemas() -> dict[str, JsonSchemaValue]:
    """Standalone JSON Schema (2020-12) per payload, keyed by file stem."""
    out: dict[str, JsonSchemaValue] = {}
    for stem, name, adapter in PAYLOADS:
        schema = adapter.json_schema(mode="validation")
        out[stem] = {"$schema": _SCHEMA_DIALECT, "title": name, **schema}
    return out


def _strip_discriminators(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_discriminators(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_strip_discriminators(v) for v in node]
    return node


def component_schemas() -> dict[str, JsonSchemaValue]:
    """Every payload and sub-model, with refs into ``#/components/schemas``."""
    inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (name, "validation", adapter) for _, name, adapter in PAYLOADS
    ]
    tops, defs = TypeAdapter.json_schemas(inputs, ref_template="#/components/schemas/{model}")
    schemas: dict[str, JsonSchemaValue] = dict(defs.get("$defs", {}))
    for (name, _mode), schema in tops.items():
        if schema != {"$ref": f"#/components/schemas/{name}"}:
            schemas[name] = schema
    return {k: _strip_discriminators(schemas[k]) for k in sorted(schemas)}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


# (channel, address, message, action, qos, retain, summary, operation)
TOPICS: tuple[tuple[str, str, str, str, int, bool, str, str], ...] = (
    ("status", "{root}/{deviceId}/status", "status", "send", 1, True,
     "Birth message; the Last Will (online false) and the final decommission status.",
     "sendStatus"),
    ("state", "{root}/{deviceId}/state", "state", "send", 1, True,
     "Snapshot on every change (not journaled; carries atSeq).", "sendState"),
    ("tel", "{root}/{deviceId}/tel", "telemetry", "send", 1, False,
     "Periodic telemetry, journaled, numbered by the device-wide seq.", "sendTelemetry"),
    ("evt", "{root}/{deviceId}/evt", "event", "send", 1, False,
     "Events, journaled, numbered by the device-wide seq (shared with tel).", "sendEvent"),
    ("rsp", "{root}/{deviceId}/rsp", "reply", "send", 1, False,
     "Replies to commands that carried no MQTT v5 Response Topic.", "sendReply"),
    ("cmd", "{root}/{deviceId}/cmd", "command", "receive", 1, False, "Commands to this charger.",
     "receiveCommand"),
    ("groupCmd", "{root}/group/{groupId}/cmd", "command", "receive", 1, False,
     "Commands to every charger configured into the group; replies are per device.",
     "receiveGroupCommand"),
)

_PARAMETERS = {
    "root": {"description": "Topic root, one or more levels.", "default": "evse/v1"},
    "deviceId": {"description": "The charger's device id (also its client certificate CN)."},
    "groupId": {"description": "A group the charger is configured into (transformer, feeder)."},
}


def _messages() -> dict[str, Any]:
    def message(name: str, title: str, summary: str, corr: str | None = None,
                examples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "name": name, "title": title, "summary": summary, "contentType": "application/json",
            "payload": _ref("schemas", title),
            "bindings": {"mqtt": {"payloadFormatIndicator": 1, "contentType": "application/json",
                                  "bindingVersion": _MQTT_BINDING}},
        }
        if corr:
            msg["correlationId"] = {"location": corr}
        if examples:
            msg["examples"] = [{"name": e.get("type", name), "payload": e} for e in examples]
        return msg

    return {
        "command": message("command", "Command", "A command envelope (see reason-codes.md).",
                           "$message.payload#/id", command_examples()),
        "reply": message("reply", "Reply", "The reply to one command.",
                         "$message.payload#/commandId", [REPLY_EXAMPLE]),
        "event": message("event", "Event", "One journaled event."),
        "telemetry": message("telemetry", "Telemetry", "Journaled telemetry (see telemetry.md)."),
        "status": message("status", "Status", "Retained liveness: birth, Last Will, decommission."),
        "state": message("state", "State", "Retained state snapshot."),
    }


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel, address, msg, action, qos, retain, summary, op_name in TOPICS:
        params = [p for p in _PARAMETERS if "{" + p + "}" in address]
        channels[channel] = {
            "address": address, "summary": summary,
            "messages": {msg: _ref("messages", msg)},
            "parameters": {p: _ref("parameters", p) for p in params},
        }
        op: dict[str, Any] = {
            "action": action, "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{msg}"}],
            "bindings": {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": _MQTT_BINDING}},
        }
        if action == "receive":
            op["reply"] = {
                "address": {"location": "$message.header#/responseTopic",
                            "description": "MQTT v5 Response Topic (Correlation Data echoed); "
                            "without one (MQTT 3.1.1) the reply goes to the rsp channel."},
                "channel": {"$ref": "#/channels/responseTopic"},
                "messages": [{"$ref": "#/channels/responseTopic/messages/reply"}],
            }
        operations[op_name] = op
    channels["responseTopic"] = {
        "address": None, "summary": "The command's MQTT v5 Response Topic (dynamic).",
        "messages": {"reply": _ref("messages", "reply")},
    }
    will = {"topic": "{root}/{deviceId}/status", "qos": 1, "retain": True,
            "message": '{"v":1,"deviceId":"...","bootId":"...","online":false}'}
    server_bindings = {"mqtt": {"cleanSession": False, "keepAlive": 60, "lastWill": will,
                                "sessionExpiryInterval": 604800, "bindingVersion": _MQTT_BINDING}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "evse-edge-agent aggregator API",
            "version": f"{models.API_VERSION}.0.0",
            "description": "MQTT API between grid aggregators and smart AC EV chargers. Generated "
            "by `python -m agent.api.schemas --write` from the agent's models; do not edit.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "mqtts": {"host": "{host}:8883", "protocol": "secure-mqtt", "protocolVersion": "5",
                      "description": "TLS with server verification; per-device client "
                      "certificates (recommended) or username/password over TLS. MQTT 3.1.1 also "
                      "works (replies then go to rsp).",
                      "variables": {"host": {"default": "broker.example.com"}},
                      "security": [_ref("securitySchemes", "mutualTLS"),
                                   _ref("securitySchemes", "userPassword")],
                      "bindings": server_bindings},
            "mqtt": {"host": "{host}:1883", "protocol": "mqtt", "protocolVersion": "5",
                     "description": "Plain MQTT, for a loopback test broker only.",
                     "variables": {"host": {"default": "127.0.0.1"}},
                     "bindings": server_bindings},
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": component_schemas(),
            "messages": _messages(),
            "parameters": copy.deepcopy(_PARAMETERS),
            "securitySchemes": {
                "mutualTLS": {"type": "X509", "description": "Per-device client certificate."},
                "userPassword": {"type": "userPassword", "description": "Only over TLS."},
            },
        },
    }


def telemetry_markdown() -> str:
    lines = [
        "# Telemetry fields and OCPP measurands (MQTT API v1)",
        "",
        "Generated from `agent/api/models/telemetry.py` (`MEASURANDS`) by "
        "`python -m agent.api.schemas --write`; do not edit by hand. Each `tel` message has one "
        "entry per connector.",
        "",
        "| field | OCPP measurand | unit | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{f}` | {m} | {u} | {n} |" for f, m, u, n in models.MEASURANDS]
    return "\n".join(lines) + "\n"


class _PlainDumper(yaml.SafeDumper):
    """No anchors/aliases: every part of the document reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def generated_files() -> dict[Path, str]:
    """Every generated file and its exact content."""
    files: dict[Path, str] = {
        DOCS / "schemas" / f"{stem}.json": json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        for stem, schema in json_schemas().items()
    }
    files[DOCS / "asyncapi.yaml"] = yaml.dump(
        asyncapi_document(), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100)
    files[DOCS / "reason-codes.md"] = reasons.render_markdown()
    files[DOCS / "telemetry.md"] = telemetry_markdown()
    return files


def stale_files(files: dict[Path, str] | None = None) -> list[Path]:
    """Generated files missing or differing on disk (plus stray files in docs/schemas)."""
    files = generated_files() if files is None else files
    stale = [p for p, text in files.items()
             if not p.is_file() or p.read_text(encoding="utf-8") != text]
    stray = sorted(set((DOCS / "schemas").glob("*.json")) - set(files))
    return stale + stray


def main(argv: list[str] | None = None, out: Callable[[str], object] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.api.schemas", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/ is out of date")
    mode.add_argument("--write", action="store_true", help="regenerate the files in docs/")
    args = parser.parse_args(argv)
    files = generated_files()
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for path in stale_files(files):  # stray schema files of removed payloads
            path.unlink()
        out(f"wrote {len(files)} files under {DOCS}")
        return 0
    stale = stale_files(files)
    for path in stale:
        out(f"out of date: {path.relative_to(ROOT)}")
    if stale:
        out("run: python -m agent.api.schemas --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
