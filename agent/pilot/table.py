"""The pilot state table: GB/T 18487.1-2015 Annex A transitions as data.

Rule 1 (after h11): every state change of ``PilotMachine`` is a row of ``TABLE``; the machine
only computes *which trigger* holds now and looks the row up. Every (state, CP-level trigger)
pair is either a row or listed in ``IGNORED`` with the reason (a unit test checks it).
``docs/pilot-state-machine.md`` is generated from this module by :func:`render_markdown`.

Outputs are a function of the state (``PilotMachine`` reconciles them after the rows ran):

| state      | contactor                        | pilot              | lock (socket)         |
|------------|----------------------------------|--------------------|-----------------------|
| IDLE       | open                             | steady +12 V       | released              |
| CONNECTED  | open                             | steady +12 V       | held if authorised    |
| OFFERING   | open                             | PWM (offer)        | held                  |
| CLOSING    | closes once every guard holds    | PWM (offer)        | held                  |
| CHARGING   | closed (confirmed)               | PWM (offer)        | held                  |
| PAUSING    | closed until the EV stops        | steady +12 V       | held                  |
| FAULT      | open                             | steady +12 V       | released once open*   |

(*) kept engaged while ``CONTACTOR_WELDED`` is active: the socket may be live.
Clause numbers marked (u) are unconfirmed in the research notes; the GB/T 34657.1 test items
are the checkable reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from agent.pilot.classifier import CpLevel

__all__ = [
    "DECISIONS",
    "IGNORED",
    "LEVEL_TRIGGERS",
    "TABLE",
    "TRANSITIONS",
    "PilotState",
    "Transition",
    "Trigger",
    "render_markdown",
]


class PilotState(Enum):
    """States of the supply-side session machine."""

    IDLE = "idle"  # state 1: nothing connected
    CONNECTED = "connected"  # 2 or 3 without PWM: waiting for auth / offer / anti-flap
    OFFERING = "offering"  # 2': PWM on, waiting for S2
    CLOSING = "closing"  # 3': lock / contactor feedback pending
    CHARGING = "charging"  # 3', contactor closed and confirmed
    PAUSING = "pausing"  # PWM stopped, waiting for the EV to stop drawing before the open
    FAULT = "fault"  # latched


class Trigger(Enum):
    """What may move the machine: a new stable CP level, or a condition that became true."""

    CP_1 = "CP state 1"
    CP_2 = "CP state 2"
    CP_3 = "CP state 3"
    CP_D = "CP state D"
    CP_SHORT = "CP short"
    CP_NEGATIVE = "CP -12 V"
    CP_INVALID = "CP invalid"
    FAULT_RAISED = "fault raised"
    FAULTS_CLEARED = "faults cleared"
    CONTACTOR_CONFIRMED = "contactor confirmed"
    OFFER_LOST = "offer lost"
    OFFER_READY = "offer ready"
    PAUSE_DONE = "pause done"


LEVEL_TRIGGERS = MappingProxyType(
    {
        CpLevel.STATE_1: Trigger.CP_1,
        CpLevel.STATE_2: Trigger.CP_2,
        CpLevel.STATE_3: Trigger.CP_3,
        CpLevel.STATE_D: Trigger.CP_D,
        CpLevel.SHORT: Trigger.CP_SHORT,
        CpLevel.NEGATIVE: Trigger.CP_NEGATIVE,
        CpLevel.INVALID: Trigger.CP_INVALID,
    }
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One row: in ``source``, ``trigger`` moves to ``target``; ``clause`` says why."""

    source: PilotState
    trigger: Trigger
    target: PilotState
    clause: str


S, T = PilotState, Trigger
GB = "GB/T 18487.1-2015 A"
IT = "GB/T 34657.1 item"

_UNPLUG = f"{GB}: unplug/CP loss -> S1 +12 V, K1/K2 open <= 100 ms (T19-T20); {IT} 5"
_S2_OPEN = f"{GB}: S2 open 3'->2' -> K1/K2 open <= 100 ms, PWM kept; {IT} 11"
_VENT = "IEC 61851-1 state D: ventilation not supported -> open, keep PWM, never close"
_SHORT = f"{GB}: CP to PE (state '0') -> open <= 100 ms, output <= 20 V; {IT} 8"
_CP_BAD = f"{GB}: CP outside every window -> open / do not close; {IT} 12"
_FAULT = "design: any fault latches, opens first, stops PWM"


def _faults(source: PilotState) -> tuple[Transition, ...]:
    return (
        Transition(source, T.CP_SHORT, S.FAULT, _SHORT),
        Transition(source, T.CP_NEGATIVE, S.FAULT, _CP_BAD),
        Transition(source, T.CP_INVALID, S.FAULT, _CP_BAD),
        Transition(source, T.FAULT_RAISED, S.FAULT, _FAULT),
    )


TABLE: tuple[Transition, ...] = (
    Transition(S.IDLE, T.CP_2, S.CONNECTED, f"{GB}.3 connection confirmed, 1->2 (u); {IT} 1"),
    Transition(S.IDLE, T.CP_3, S.CONNECTED, f"{GB}: vehicle without S2, 1->3 is legal; {IT} 2"),
    Transition(S.IDLE, T.CP_D, S.CONNECTED, "IEC 61851-1 A->D: connected (close refused)"),
    *_faults(S.IDLE),
    Transition(S.CONNECTED, T.CP_1, S.IDLE, f"{GB}: unplug before PWM; {IT} 5"),
    Transition(
        S.CONNECTED, T.OFFER_READY, S.OFFERING,
        f"{GB}.3.7.1 supply ready: S1 to PWM, I <= min(cable, supply) (2'); {IT} 2",
    ),
    *_faults(S.CONNECTED),
    Transition(S.OFFERING, T.CP_1, S.IDLE, f"{GB}: unplug in 2' -> S1 +12 V; {IT} 5"),
    Transition(S.OFFERING, T.CP_3, S.CLOSING, f"{GB}.3.7 3': close K1/K2 <= 3 s; {IT} 3, 5"),
    Transition(
        S.OFFERING, T.OFFER_LOST, S.CONNECTED,
        f"{GB}: offer < 6 A or authorisation ended -> S1 +12 V (no PWM < 6 A)",
    ),
    *_faults(S.OFFERING),
    Transition(S.CLOSING, T.CP_1, S.IDLE, _UNPLUG),
    Transition(S.CLOSING, T.CP_2, S.OFFERING, _S2_OPEN),
    Transition(S.CLOSING, T.CP_D, S.OFFERING, _VENT),
    Transition(
        S.CLOSING, T.CONTACTOR_CONFIRMED, S.CHARGING,
        f"{GB}.3.7 K1/K2 closed (mirror contact); {IT} 3",
    ),
    Transition(
        S.CLOSING, T.OFFER_LOST, S.PAUSING,
        f"{GB}: supply stops -> S1 +12 V, open after the EV stops",
    ),
    *_faults(S.CLOSING),
    Transition(S.CHARGING, T.CP_1, S.IDLE, _UNPLUG),
    Transition(S.CHARGING, T.CP_2, S.OFFERING, _S2_OPEN),
    Transition(S.CHARGING, T.CP_D, S.OFFERING, _VENT),
    Transition(
        S.CHARGING, T.OFFER_LOST, S.PAUSING,
        f"{GB}.3.10 supply-side stop: S1 +12 V, EV stops and opens S2 (u); {IT} 4",
    ),
    *_faults(S.CHARGING),
    Transition(S.PAUSING, T.CP_1, S.IDLE, _UNPLUG),
    Transition(
        S.PAUSING, T.CP_2, S.CONNECTED, f"{GB}: EV opened S2 after PWM stop -> open; {IT} 4"
    ),
    Transition(S.PAUSING, T.CP_D, S.CONNECTED, _VENT),
    Transition(
        S.PAUSING, T.PAUSE_DONE, S.CONNECTED,
        "design: EV below pause_open_current_a or pause_open_timeout_s -> open",
    ),
    Transition(
        S.PAUSING, T.OFFER_READY, S.CHARGING,
        f"{GB}.3.7.1: offer back >= 6 A while still closed -> PWM again (no re-close)",
    ),
    *_faults(S.PAUSING),
    Transition(
        S.FAULT, T.FAULTS_CLEARED, S.IDLE,
        "design: all faults met their clearing condition; the CP level is then re-applied "
        f"(2/3 -> CONNECTED: after a 'cause gone' fault the offer returns after min_off_s, "
        f"{GB}.3.7.1 supply ready again; IEC 61851-1 B1/C1 -> B2/C2)",
    ),
)

_NO_PWM = "no PWM yet: the vehicle's S2 does not matter until the supply is ready"
_LATCH = "faults latch: the level is only recorded (state 1 is the unplug clearing condition)"
_HERE = "already in this CP state"

IGNORED: MappingProxyType[tuple[PilotState, Trigger], str] = MappingProxyType(
    {
        (S.IDLE, T.CP_1): _HERE,
        (S.CONNECTED, T.CP_2): _NO_PWM,
        (S.CONNECTED, T.CP_3): _NO_PWM,
        (S.CONNECTED, T.CP_D): _NO_PWM,
        (S.OFFERING, T.CP_2): "2': waiting for S2",
        (S.OFFERING, T.CP_D): _VENT.replace("open, ", ""),
        (S.CLOSING, T.CP_3): _HERE,
        (S.CHARGING, T.CP_3): _HERE,
        (S.PAUSING, T.CP_3): "waiting for the EV to stop drawing",
        **{(S.FAULT, t): _LATCH for t in LEVEL_TRIGGERS.values()},
    }
)

TRANSITIONS: MappingProxyType[tuple[PilotState, Trigger], Transition] = MappingProxyType(
    {(row.source, row.trigger): row for row in TABLE}
)


DECISIONS: tuple[str, ...] = (
    "Every fault ends with steady +12 V (duty 1000), never -12 V: GB/T 34657.1 expects CP back "
    "at 11.2-12.8 V after CC break/unplug/overcurrent, and only +12 V lets the core see the "
    "unplug (state 1) that clears a safety fault. The core never emits duty 0.",
    "A close needs, at that moment: stable CP 3 and the newest sample also 3, the board echoing "
    "the commanded PWM duty (duty_actual), a legal duty equal to the duty of the requested "
    "current >= 6 A, a valid cable, an authorised session without a trip, the lock confirmed "
    "(socket), no fault and anti-flap satisfied.",
    "The plug is locked as soon as an authorised session exists (before PWM starts); it is "
    "released when the session ends, once the mirror contact reads open (or after the feedback "
    "timeout), which is well inside lock_release_s. CONTACTOR_WELDED keeps it locked.",
    "CC with S3 open (latch pressed, RC + R4, 2.8-4.5 kOhm in the GB profile) is not a fault: "
    "the offer is withdrawn (pause). CC open/short/out of range with a vehicle is CC_INVALID.",
    "A fault that clears by 'unplug or reset' remembers the unplug: once the CP has read "
    "state 1 after the fault, it clears as soon as the cause has gone too, whichever comes "
    "last, even if a vehicle is plugged in again meanwhile (a driver who unplugs and replugs "
    "within a second or a minute gets a normal session). A fault raised with nothing plugged "
    "in (e.g. e-stop) therefore clears once the cause has gone. The core asks the board for "
    "fault_reset at most every board_reset_interval_s while a latched bit shows, and at once "
    "on ResetRequested.",
    "Overcurrent is a present cause only while the contactor is commanded closed: a current "
    "the open contactor has cut is not (the last meter reading after the cut may still show "
    "it), and the overcurrent onset is forgotten at every open.",
    "A reset clears the faults whose cause is gone within reset_window_s of the request.",
    "After a safety fault (clear policy other than 'cause gone') that opened a closed "
    "contactor, or that shows while a fault's open is still in force (an RCD bit read once a "
    "silent pilot board answers again), charging needs a fresh start: a new plug-in or "
    "Authorize (any mode). ResetRequested clears faults only: a remote reset of a safety fault "
    "must not by itself re-energise a vehicle nobody has looked at. A safety fault raised "
    "while the contactor was open and no fault had opened it does not need a fresh start.",
    "A 'cause gone' fault (PILOT_BOARD_LOST, PILOT_BOARD_FROZEN, PILOT_BOARD_FAILSAFE, "
    "RELAY_BOARD_LOST, METER_LOST) does not end the session: it is a loss of sight of our own "
    "boards or meter (a stalled agent loop, a bus hiccup), not a hazard at the vehicle. It "
    "opens and stops the PWM like any fault; once it clears with the vehicle still plugged in "
    "(state 2 or 3) and authorised, the connector re-offers PWM min_off_s after the open (the "
    "hourly close cap applies, a limit below 6 A or a stop still holds it) and the contactor "
    "closes by the normal guards (GB/T 18487.1 A.3.7.1: supply ready -> PWM; an EV holding "
    "state 3 is asking to charge, IEC 61851-1 C1 -> C2). Before, such a fault needed a fresh "
    "start, and a 0.16 s stall of the agent left a driver's car plugged in without charge "
    "until it was unplugged. A board that keeps dropping out cycles the contactor no faster "
    "than min_off_s and max_cycles_per_hour.",
    "Anti-flap within a session: min_off_s is waived when the vehicle opened (S2 open, "
    "unplug, state D) from CLOSING/CHARGING; opens after our own pause or a fault count, so "
    "pause/resume by limits or a board that keeps dropping out cannot cycle the contactor "
    "faster than min_off_s.",
    "Session boundary: once the connector has been seen unplugged (CP state 1), min_off_s no "
    "longer applies: the next plug-in (the same car or another) gets its PWM offer in the "
    "normal time, never held back by the previous session's open. The hourly close cap "
    "always applies; when it blocks, the PWM stops (CONNECTED) rather than holding 3' "
    "unanswered. The randomised delay (agent.limits) applies to every session start.",
    "Pause: the contactor opens on a meter sample taken after the PWM stopped showing less "
    "than pause_open_current_a, on S2 open, or after pause_open_timeout_s.",
    "Overcurrent reference: after an offer cut the previous offer stays the reference for "
    "ev_follow_s (the EV may take up to 5 s to follow a duty change).",
    "METER_LOST is raised only while closed or when a session would start; idle it is silent.",
    "Authorize is ignored while no vehicle is connected (no pre-authorisation).",
    "Samples with an unchanged sample_seq refresh liveness but never count in the debounce.",
    "Debounce: two equal samples in both directions, also towards state 1 and 2 (the opens "
    "the vehicle asks for); only a CP short counts on one (nothing else reads 0 V). A 1-sample "
    "open would take one poll period off every S2 open and unplug (P2's floor at the 10 ms "
    "poll, median 19.3 -> 9.3 ms, p99 24.2 -> 14.2 ms), but one odd sample (a noise spike, a "
    "vehicle bouncing 3 -> 1) would open under load and, towards state 1, end the session and "
    "start another; the 100 ms budget holds without that period (README decisions).",
    "IEC state D (ventilation) is treated as connected-but-refused: open, keep PWM, no close.",
    "Non-finite current requests (NaN, inf) are treated as 'below 6 A' (pause).",
    "An exception inside step() latches INTERNAL_ERROR; the machine then returns no further "
    "actions and needs to be re-created (agent restart).",
)


def render_markdown() -> str:
    """The state-machine document (``docs/pilot-state-machine.md``), generated from the table."""
    lines = [
        "# Pilot state machine",
        "",
        "Generated by `agent.pilot.render_markdown()` from `agent/pilot/table.py`;",
        "do not edit by hand.",
        "",
        "```mermaid",
        "stateDiagram-v2",
    ]
    for row in TABLE:
        if row.target is S.FAULT and row.source is not S.IDLE:
            continue  # one fault arrow per state would drown the diagram; see the table
        lines.append(f"    {row.source.name} --> {row.target.name}: {row.trigger.value}")
    lines += [
        "    note right of FAULT: every state goes to FAULT on a fault or a bad CP level",
        "```",
        "",
        "## States",
        "",
        "| state | meaning |",
        "|---|---|",
    ]
    meaning = {
        S.IDLE: "CP state 1: nothing connected; contactor open, steady +12 V",
        S.CONNECTED: "CP 2/3 without PWM: waiting for authorisation, an offer >= 6 A, anti-flap",
        S.OFFERING: "2': PWM advertises the offer; waiting for the vehicle's S2 (3')",
        S.CLOSING: "3': contactor closes once every guard holds; feedback pending",
        S.CHARGING: "3': contactor closed and confirmed by its mirror contact",
        S.PAUSING: "PWM stopped; the contactor opens when the EV stops drawing or on timeout",
        S.FAULT: "latched fault: contactor open, steady +12 V, no PWM",
    }
    lines += [f"| `{s.name}` | {meaning[s]} |" for s in PilotState]
    lines += ["", "## Transitions", "", "| from | trigger | to | clause |", "|---|---|---|---|"]
    lines += [
        f"| `{r.source.name}` | {r.trigger.value} | `{r.target.name}` | {r.clause} |"
        for r in TABLE
    ]
    lines += ["", "## CP levels that change nothing", ""]
    lines += ["| state | trigger | why |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {t.value} | {why} |" for (s, t), why in IGNORED.items()]
    lines += ["", "## Decisions where the standard is silent", ""]
    lines += [f"- {d}" for d in DECISIONS]
    return "\n".join(lines) + "\n"
