"""Storage fault cases: power cuts on a file system that forgets unsynced writes, and a disk whose
every fsync stalls.

What "acknowledged" means here is what the aggregator saw: a message on the broker (the agent
publishes a row only once it is committed, and the broker has PUBACKed it). After each cut the
agent restarts on what the backing directory kept, and every event the subscriber saw must still
be in the journal with the same payload, every session it saw in the ledger, the seq high-water
mark at or above the highest seq seen (a seq is never issued twice), and both databases must open
without being moved aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

from hil.faults.case_report import CaseReport
from hil.faults.devices import finish_data_check, start_charging
from hil.faults.durability import run_then_kill
from hil.faults.link import end_session, sessions_check, wait_log
from hil.faults.testbed import Testbed
from hil.lazymount import LazyMount

STALL_MS = 200


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


def acknowledged(b: Testbed) -> tuple[dict[int, dict[str, Any]], set[str]]:
    """Events and session ids the aggregator has seen so far."""
    assert b.sub is not None
    events = {s: body for s, body in b.sub.by_seq().items() if "type" in body}
    sessions = {str(e["body"]["sessionId"]) for e in events.values()
                if e["type"] in ("sessionStarted", "sessionEnded")}
    return events, sessions


def survived(b: Testbed, events: dict[int, dict[str, Any]], sessions: set[str]) -> list[str]:
    """What an acknowledged event or session lost at the cut (empty: nothing)."""
    state, lost = b.state_dir, []
    for name in ("journal.db", "sessions.db"):
        if _rows(state / name, "PRAGMA quick_check") != [("ok",)]:
            lost.append(f"{name} fails quick_check")
    aside = [p.name for p in state.iterdir() if ".corrupt-" in p.name]
    if aside:
        lost.append(f"moved aside at start-up: {aside}")
    kept = {int(s): json.loads(p) for s, p in _rows(
        state / "journal.db", "SELECT seq, payload FROM entries WHERE kind = 'evt'")}
    for seq, body in events.items():
        if kept.get(seq) != body:
            lost.append(f"evt seq {seq} ({body.get('type')}) "
                        f"{'missing' if seq not in kept else 'differs'}")
    hw = b.journal_high_water()
    if events and hw < max(events):
        lost.append(f"seq high-water {hw} below the acknowledged {max(events)}")
    ledger = {str(r[0]) for r in _rows(state / "sessions.db", "SELECT session_id FROM sessions")}
    lost += [f"session {sid[:8]} missing from the ledger" for sid in sessions - ledger]
    return lost


def reissued(b: Testbed) -> list[int]:
    """Seqs the aggregator saw with two different messages (a seq issued twice)."""
    assert b.sub is not None
    first: dict[int, dict[str, Any]] = {}
    out = []
    for kind, body in b.sub.messages:
        seq = body.get("seq")
        if kind in ("evt", "tel") and isinstance(seq, int) and first.setdefault(seq, body) != body:
            out.append(seq)
    return sorted(set(out))


async def power_cut(b: Testbed, o: CaseReport, cuts: int = 20, seed: int = 2026) -> None:
    """Power cut at random moments of charging sessions, the state directory on lazyfs."""
    rng = random.Random(seed)
    disk = LazyMount(b.out_dir / "disk", b.state_dir)
    disk.mount()
    losses: list[str] = []
    acked_total = 0
    try:
        for _ in range(cuts):
            await run_then_kill(b, rng)
            events, sessions = acknowledged(b)  # nothing more can arrive: the agent is dead
            acked_total = len(events)
            disk.cut()
            disk.mount()
            losses += survived(b, events, sessions)
        await b.start_agent()
        if b.r.ev.plugged:
            b.r.ev_action("unplug")
        await wait_log(b, "mqtt_connected", cuts + 1, 10.0)
        await asyncio.sleep(1.0)
        await sessions_check(b, o, 15.0)
        twice = reissued(b)
        o.check(not losses, f"every acknowledged event and session survived each cut "
                            f"({len(losses)} lost: {losses[:3]})")
        o.check(not twice, f"no seq issued twice ({twice[:5]})")
        await finish_data_check(b, o)
    finally:
        if b.agent is not None and b.agent.proc is not None and b.agent.proc.poll() is None:
            await b.stop_agent()
        disk.unmount()
    o.data_lost = (o.data_lost or 0) + len(losses) + len(reissued(b))
    o.data_detail = f"{disk.cuts} cuts, {len(losses)} acknowledged lost; " + o.data_detail
    o.say(f"{disk.cuts} power cuts (seed {seed}; unsynced writes dropped, agent SIGKILLed); "
          f"{acked_total} events acknowledged by the end, {len(losses)} lost")
    o.recovered, o.recovery = True, "by itself (restart on what was synced)"


async def storage_stall(b: Testbed, o: CaseReport, seconds: float = 10.0) -> None:
    """Every fsync of the state directory held STALL_MS while charging and commanded."""
    disk = LazyMount(b.out_dir / "disk", b.state_dir, fsync_delay_ms=STALL_MS)
    disk.mount()
    try:
        if not await start_charging(b, o):
            return
        await wait_log(b, "mqtt_connected", 1, 10.0)
        t0, changes = b.r.now(), int(seconds)
        for i in range(changes):  # installer limit, ledger curtailment, events: all on the disk
            await b.command("limit", limit_a=32 - (i % 2) * 2)  # 32 <-> 30: no overcurrent
            await asyncio.sleep(1.0)
        lost = [e for e in b.log_events("fault_raised") if "PILOT_BOARD_LOST" in str(e.get("code"))]
        opened = b.r.timeline.first("frame", t0, what="contactor_open")
        o.check(not lost, f"no PILOT_BOARD_LOST while fsyncs stall ({len(lost)})")
        o.check(opened is None, "charging went on through the stalls")
        lag = float((await b.agent_status())["maxLoopLagMs"])  # agent-wide, not per connector
        o.check(lag < STALL_MS, f"the poll loop never waited on an fsync (worst loop lag "
                                f"{lag:.1f} ms, one fsync {STALL_MS} ms)")
        o.safe_detail = f"worst poll-loop lag {lag:.1f} ms"
        await end_session(b)
        await sessions_check(b, o, 15.0)
        await _caught_up(b)  # a stalled disk commits late: every commit goes out, later
        o.say(f"every fsync held {STALL_MS} ms; {changes} limit changes while charging; the "
              f"pilot poll never waited on the disk (worst loop lag {lag:.1f} ms)")
        o.recovered, o.recovery = True, "n/a (never lost)"
        await finish_data_check(b, o)
    finally:
        if b.agent is not None and b.agent.proc is not None and b.agent.proc.poll() is None:
            await b.stop_agent()
        disk.unmount()


async def _caught_up(b: Testbed, limit_s: float = 20.0) -> None:
    """Until the journal's high-water mark has stood still for a second, all of it delivered."""
    assert b.sub is not None
    sub, last, still = b.sub, -1, 0
    for _ in range(int(limit_s / 0.25)):
        hw = b.journal_high_water()
        still = still + 1 if hw == last else 0
        last = hw
        if still >= 4 and not sub.gaps(hw):
            return
        await asyncio.sleep(0.25)
