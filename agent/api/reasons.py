"""Stable codes of the aggregator API (reply statuses, reason codes, opt-out and stop reasons).

These strings are part of the external contract (``/work/shared/specs/mqtt-api.md``): add codes only
with an API version bump, never rename one. Each code carries a description; ``render_markdown``
turns them into ``docs/reason-codes.md`` (written and checked by ``python -m agent.api.schemas``).
Fault codes are not here: ``agent/faults.py`` is their one catalog (``docs/faults.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class ReplyStatus(StrEnum):
    """Outcome of a command, as the ``status`` of its reply."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NOT_SUPPORTED = "notSupported"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"

    @property
    def description(self) -> str:
        return _STATUS_TEXT[self]


class Reason(StrEnum):
    """Why a command got its status (``reason`` of the reply)."""

    OK = "OK"
    INVALID_SCHEMA = "INVALID_SCHEMA"
    INVALID_SCHEDULE = "INVALID_SCHEDULE"
    UNIT_UNSUPPORTED = "UNIT_UNSUPPORTED"
    TOO_MANY_PERIODS = "TOO_MANY_PERIODS"
    EXPIRED = "EXPIRED"
    REPLAY = "REPLAY"
    ID_CONFLICT = "ID_CONFLICT"
    CLOCK_SKEW = "CLOCK_SKEW"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    NO_ACTIVE_SESSION = "NO_ACTIVE_SESSION"
    LOCAL_CONSTRAINT = "LOCAL_CONSTRAINT"
    SAFETY = "SAFETY"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def description(self) -> str:
        return _REASON_TEXT[self][1]

    @property
    def statuses(self) -> tuple[ReplyStatus, ...]:
        """The reply statuses this reason appears with."""
        return _REASON_TEXT[self][0]


class OptOutReason(StrEnum):
    """Why the charger did not (or no longer) follow a command (``commandOptedOut``)."""

    SAFETY = "SAFETY"
    USER_OVERRIDE = "USER_OVERRIDE"

    @property
    def description(self) -> str:
        return _OPT_OUT_TEXT[self]


class StopReason(StrEnum):
    """Why a session ended; the subset of OCPP 2.0.1 ``ReasonEnumType`` an AC charger can see."""

    EV_DISCONNECTED = "EVDisconnected"
    STOPPED_BY_EV = "StoppedByEV"
    LOCAL = "Local"
    REMOTE = "Remote"
    DE_AUTHORIZED = "DeAuthorized"
    EMERGENCY_STOP = "EmergencyStop"
    GROUND_FAULT = "GroundFault"
    OVERCURRENT_FAULT = "OvercurrentFault"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    OTHER = "Other"

    @property
    def description(self) -> str:
        return _STOP_TEXT[self]


_A, _R, _N, _D, _U = (
    ReplyStatus.ACCEPTED,
    ReplyStatus.REJECTED,
    ReplyStatus.NOT_SUPPORTED,
    ReplyStatus.DUPLICATE,
    ReplyStatus.UNKNOWN,
)

_STATUS_TEXT: Mapping[ReplyStatus, str] = {
    _A: "The command passed every check and will be applied; its lifecycle follows as events.",
    _R: "The command was refused and has no effect; `reason` says why.",
    _N: "The command is valid but this charger cannot do it (e.g. discharge, V2G).",
    _D: "Same `id` and same content as an earlier command: not applied again; the earlier reply "
    "is repeated (its status in `originalStatus`).",
    _U: "`clearProfile` matched nothing.",
}

_REASON_TEXT: Mapping[Reason, tuple[tuple[ReplyStatus, ...], str]] = {
    Reason.OK: ((_A, _D, _U), "Nothing to report."),
    Reason.INVALID_SCHEMA: (
        (_R,),
        "The payload is not a valid command: not UTF-8 or JSON, too large or too deeply nested, "
        "unknown `type` or field, wrong type, number out of range. `detail` lists the JSON paths.",
    ),
    Reason.INVALID_SCHEDULE: (
        (_R,),
        "The schedule is inconsistent: periods not starting at 0 or not strictly increasing, "
        "`kind` and `startAt`/`recurrency` disagree, `validFrom` not before `validTo`.",
    ),
    Reason.UNIT_UNSUPPORTED: ((_R,), "The `unit` is not one this command accepts."),
    Reason.TOO_MANY_PERIODS: (
        (_R,),
        "More schedule periods than the charger accepts (`capabilities.maxPeriods`).",
    ),
    Reason.EXPIRED: ((_R,), "Received after its `expiresAt`; never applied."),
    Reason.REPLAY: (
        (_R,),
        "`seq` is not above the highest `seq` accepted from this issuer (persisted).",
    ),
    Reason.ID_CONFLICT: (
        (_R,),
        "An earlier command of this issuer had the same `id` but other content.",
    ),
    Reason.CLOCK_SKEW: (
        (_R,),
        "`issuedAt` lies further in the future than the charger's configured clock skew allows.",
    ),
    Reason.SIGNATURE_INVALID: (
        (_R,),
        "Issuer keys are configured and the command is unsigned, from an unknown issuer, or its "
        "JWS does not verify. Logged to the security log and published as `securityReject`.",
    ),
    Reason.NO_ACTIVE_SESSION: (
        (_R,),
        "The command needs a session (e.g. `stopSession`) and none is active.",
    ),
    Reason.LOCAL_CONSTRAINT: (
        (_R, _N),
        "A local setting or the hardware forbids it (installer limit, decommissioned, no discharge "
        "capability, `confirm` does not name this device).",
    ),
    Reason.SAFETY: ((_R,), "Refused because a fault or safety interlock is active."),
    Reason.RATE_LIMITED: (
        (_R,),
        "Too many commands in a short time; retry later with a new `id` and `seq`.",
    ),
    Reason.INTERNAL_ERROR: (
        (_R,),
        "The charger failed to process the command (journal, driver); retry.",
    ),
}

_OPT_OUT_TEXT: Mapping[OptOutReason, str] = {
    OptOutReason.SAFETY: "A fault or safety interlock overrides the command.",
    OptOutReason.USER_OVERRIDE: "The owner overrode the command locally (GB SCP regs, reg 10).",
}

_STOP_TEXT: Mapping[StopReason, str] = {
    StopReason.EV_DISCONNECTED: "The cable was unplugged.",
    StopReason.STOPPED_BY_EV: "The EV stopped charging (e.g. full) and the session ended.",
    StopReason.LOCAL: "Stopped at the charger (owner, app on the local network).",
    StopReason.REMOTE: "Stopped by a `stopSession` command.",
    StopReason.DE_AUTHORIZED: "The authorisation was withdrawn.",
    StopReason.EMERGENCY_STOP: "Emergency stop.",
    StopReason.GROUND_FAULT: "Residual current or PE fault.",
    StopReason.OVERCURRENT_FAULT: "Overcurrent fault.",
    StopReason.POWER_LOSS: "Mains power was lost.",
    StopReason.REBOOT: "The agent restarted.",
    StopReason.OTHER: "Any other reason (see the fault events around it).",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The reason-code reference for aggregator integrators (``docs/reason-codes.md``)."""
    out = [
        "# Reply statuses and reason codes (MQTT API v1)",
        "",
        "Generated from `agent/api/reasons.py` by `python -m agent.api.schemas --write`; "
        "do not edit by hand. These strings are stable: new codes come only with an API "
        "version bump.",
        "",
        "## Reply `status`",
        "",
        "| status | meaning |",
        "|---|---|",
    ]
    out += [f"| `{s.value}` | {_cell(s.description)} |" for s in ReplyStatus]
    out += ["", "## Reply `reason`", "", "| reason | with status | meaning |", "|---|---|---|"]
    for r in Reason:
        statuses = ", ".join(f"`{s.value}`" for s in r.statuses)
        out.append(f"| `{r.value}` | {statuses} | {_cell(r.description)} |")
    sections: list[tuple[str, str, list[tuple[str, str]]]] = [
        ("`commandOptedOut` reasons", "reason", [(o.value, o.description) for o in OptOutReason]),
        ("Session `stopReason` (OCPP 2.0.1 ReasonEnumType subset)", "stopReason",
         [(s.value, s.description) for s in StopReason]),
    ]
    for title, column, rows in sections:
        out += ["", f"## {title}", "", f"| {column} | meaning |", "|---|---|"]
        out += [f"| `{code}` | {_cell(text)} |" for code, text in rows]
    out += ["", "Fault codes (`fault`, `faultCleared` events): see `faults.md`."]
    return "\n".join(out) + "\n"
