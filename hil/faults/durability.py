"""Fault cases of the agent's own durability: disk full, a corrupt journal, SIGKILL at random
points of sessions, and a missing or invalid config file.

Data loss is judged from outside: the subscriber's deduplicated stream against the journal's
high-water mark (seq contiguous), and the session ledger against the ``sessionEnded`` records.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import yaml

from hil.faults.case_report import CaseReport
from hil.faults.devices import continue_charging, finish_data_check, start_charging
from hil.faults.link import end_session, sessions_check, wait_log
from hil.faults.testbed import Testbed
from hil.poll import poll_until
from hil.scenario_runner import REPO_ROOT

DISK_LIMIT_MB = 0.05


async def disk_full(b: Testbed, o: CaseReport) -> None:
    """The journal hits its hard limit while the link is down and events keep coming."""
    assert b.broker is not None
    if not await start_charging(b, o):
        return
    await wait_log(b, "mqtt_connected", 1, 10.0)
    b.broker.kill()
    await wait_log(b, "mqtt_disconnected", 1, 5.0)
    t_off = b.r.now()
    for i in range(200):  # local curtailments: each is a few journaled events
        await b.command("limit", limit_a=10 + (i % 2) * 6)
        if b.log_events("journal_append_failed"):
            break
        await asyncio.sleep(0.02)
    full = b.log_events("journal_append_failed")
    o.check(bool(full), f"the journal reached its {DISK_LIMIT_MB} MB hard limit")
    await b.command("limit", limit_a=None)
    await continue_charging(b, o, 1.0)
    opened = b.r.timeline.first("frame", t_off, what="contactor_open")
    o.check(opened is None, "charging went on while the journal filled (contactor opened at "
            f"t={opened.t if opened else 0:.2f} s)")
    await end_session(b)
    await b.restart_broker()
    back = await wait_log(b, "mqtt_connected", 2, 60.0)
    o.check(back, "reconnects and drains once the broker is back")
    await sessions_check(b, o, 15.0)
    sub = b.sub
    assert sub is not None
    mark = sub.max_seq()
    tel_again = await sub.wait_for(
        lambda: any(s > mark and body.get("connectors") is not None
                    for s, body in sub.by_seq().items()), 8.0)
    o.check(tel_again, "telemetry is journaled again once the backlog is sent")
    o.recovered = back and tel_again
    o.recovery = "by itself" if o.recovered else "link yes; journal stays full of sent events"
    refused = b.log_events("journal_append_failed")
    evt = sorted({str(e.get("event_type")) for e in refused if e.get("kind") == "evt"})
    n_tel = sum(1 for e in refused if e.get("kind") == "tel")
    o.say(f"kept charging; when full, refused {len(refused) - n_tel} new events ({', '.join(evt)})"
          f" and {n_tel} telemetry; committed rows kept and sent after reconnection; the "
          "refused sessionEnded re-journaled from the ledger")
    o.notes.append(f"disk full emulated with mqtt.journal_hard_limit_mb: {DISK_LIMIT_MB} "
                   "(SQLite max_page_count): SQLITE_FULL, exactly what a full disk returns")
    await finish_data_check(b, o, tolerated=b.journal_counter("tel_dropped_total"))


async def journal_corrupt(b: Testbed, o: CaseReport) -> None:
    """Garbage in journal.db at start-up: moved aside, fresh journal, seq above the old mark."""
    assert b.sub is not None
    if not await start_charging(b, o):
        return
    await end_session(b)
    await wait_log(b, "mqtt_connected", 1, 10.0)
    hw1 = b.journal_high_water()
    await b.sub.wait_for(lambda: b.sub is not None and not b.sub.gaps(hw1), 10.0)
    await b.stop_agent()
    hw1 = b.journal_high_water()
    db = b.state_dir / "journal.db"
    for extra in ("journal.db-wal", "journal.db-shm"):
        (b.state_dir / extra).unlink(missing_ok=True)
    db.write_bytes(b"this is not an SQLite database\x00" * 512)
    await b.start_agent()
    aside = [p.name for p in b.state_dir.iterdir()
             if p.name.startswith("journal.db") and p.name not in
             ("journal.db", "journal.db-wal", "journal.db-shm", "journal.db.seq")]
    o.check(bool(aside), "the corrupt file is moved aside")
    o.check(await b.charge(), "charging after the corrupt start")
    await end_session(b)
    await wait_log(b, "mqtt_connected", 2, 10.0)
    await sessions_check(b, o)
    boots: dict[object, int] = {}
    for seq, body in sorted(b.sub.by_seq().items()):
        boots.setdefault(body.get("bootId"), seq)
    first_new = max(boots.values()) if len(boots) > 1 else None
    o.check(first_new is not None and first_new > hw1,
            f"seq continues above the old mark {hw1} (new boot starts at {first_new})")
    await b.stop_agent()
    hw2 = b.journal_high_water()
    gaps = b.sub.gaps(hw1) + (b.sub.gaps(hw2, above=first_new - 1) if first_new else [0])
    o.data_lost = len(gaps)
    o.check(not gaps, f"no gap in either boot's stream ({gaps[:5]})")
    o.data_detail = (f"old seq 1..{hw1} all delivered before the damage; new boot "
                     f"{first_new}..{hw2}, {len(gaps)} missing; " + o.data_detail)
    o.say(f"moved {', '.join(aside)[:60]} aside, started a fresh journal above the reserved "
          f"ceiling (seq {first_new} > {hw1}); charging unaffected")
    o.recovered, o.recovery = bool(aside), "by itself at start-up"


async def run_then_kill(b: Testbed, rng: random.Random) -> None:
    """Start the agent, do one random thing a session does, and kill -9 it up to 1.5 s later:
    the step the SIGKILL and power-cut series repeat, each then checking what survived."""
    await b.start_agent()
    ev = b.r.ev
    step = rng.random()
    if not ev.plugged:
        b.r.ev_action("plug_in", cable_a=32, wants_charge=True)
    elif step < 0.4:
        b.r.ev_action("unplug")
    elif step < 0.6:
        b.r.ev_action("open_s2" if ev.s2_closed else "close_s2")
    else:
        await b.command("limit", limit_a=rng.choice([10, 16, None]))
    await asyncio.sleep(rng.uniform(0.0, 1.5))
    b.kill_agent()


async def sigkill(b: Testbed, o: CaseReport, iterations: int = 20, seed: int = 2026) -> None:
    """SIGKILL at random points of sessions, restart each time; nothing recorded may be lost."""
    assert b.sub is not None
    rng = random.Random(seed)
    worst: float = 0.0
    opened_by_restart = 0
    for _ in range(iterations):
        await run_then_kill(b, rng)
        t_kill = b.r.now()
        if b.r.contactor_closed():  # the restart must open it before anything else
            await b.start_agent(wait=False)
            safe = await b.wait_rig(lambda: not b.r.contactor_closed(), 10.0)
            o.check(safe, "contactor opened after the kill (board watchdog or restart)")
            worst = max(worst, b.r.now() - t_kill)
            opened_by_restart += 1
            await b.agent.wait_ready() if b.agent else None
            b.kill_agent()  # the next iteration starts it again
    await b.start_agent()
    if b.r.ev.plugged:
        b.r.ev_action("unplug")
    # The last boot has connected (waiting for iterations + 1 connects in all boots' logs ran
    # out its 5 s every time: a boot killed before it connected logs none).
    agent = b.agent
    assert agent is not None
    await poll_until(lambda: any(e.get("event") == "mqtt_connected"
                                 for e in agent.log_events()), 5.0, 0.05)
    await asyncio.sleep(1.0)
    await sessions_check(b, o, 15.0)
    ledger = b.ledger_sessions()
    o.check(all(s["stopReason"] for s in ledger), "no session left open in the ledger")
    o.t_safe_s = worst if opened_by_restart else None
    o.safe_detail = (f"worst kill -> contactor open {worst * 1000:.0f} ms "
                     f"({opened_by_restart} kills with the contactor closed)")
    o.say(f"{iterations} SIGKILLs (seed {seed}); each restart drove the safe state first, "
          f"resumed or closed (PowerLoss) the open session; {len(ledger)} sessions")
    o.recovered, o.recovery = True, "by itself (restart)"
    await finish_data_check(b, o)


# --- configuration ---------------------------------------------------------------------------

def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=60, stdin=subprocess.DEVNULL)


async def config_missing(b: Testbed, o: CaseReport) -> None:
    missing = b.out_dir / "missing.yaml"
    t0 = b.r.now()
    for args in (("run", "-c", str(missing)), ("check-config", str(missing))):
        res = await asyncio.to_thread(_agent, *args)
        o.check(res.returncode == 2, f"`{args[0]}` exits 2 (got {res.returncode})")
        o.check(str(missing) in res.stderr and "not found" in res.stderr,
                f"`{args[0]}` names the missing file: {res.stderr.strip()[:120]}")
    await _untouched(b, o, t0)
    o.say("exit 2, 'config file ... not found'; boards never touched")
    o.recovered, o.recovery = None, "n/a (the installer fixes the file; systemd restarts)"


async def config_invalid(b: Testbed, o: CaseReport) -> None:
    data = yaml.safe_load(b.r.patched_config_path.read_text())
    data["safety"]["pilot_lost_ms"] = 5  # below the allowed range
    data["safety"]["debounce_sampels"] = 2  # misspelt key
    bad = b.out_dir / "invalid.yaml"
    bad.write_text(yaml.safe_dump(data))
    garbled = b.out_dir / "garbled.yaml"
    garbled.write_text("device_id: [unclosed\n")
    t0 = b.r.now()
    for args in (("run", "-c", str(bad)), ("check-config", str(bad))):
        res = await asyncio.to_thread(_agent, *args)
        o.check(res.returncode == 2, f"`{args[0]}` exits 2 (got {res.returncode})")
        o.check("safety.pilot_lost_ms" in res.stderr and "safety.debounce_sampels" in
                res.stderr, f"`{args[0]}` names both bad keys: {res.stderr.strip()[:160]}")
    res = await asyncio.to_thread(_agent, "run", "-c", str(garbled))
    o.check(res.returncode == 2 and "not valid YAML" in res.stderr, "invalid YAML is named")
    await _untouched(b, o, t0)
    o.say("exit 2 naming safety.pilot_lost_ms and safety.debounce_sampels with the fix; "
          "boards never touched")
    o.recovered, o.recovery = None, "n/a (refuses to start)"


async def config_over_budget(b: Testbed, o: CaseReport) -> None:
    """The rig's own ports, but the meter moved onto a 9600-baud control bus: check-config
    refuses the schedule, so run must too, before a single frame reaches a board."""
    data = yaml.safe_load(b.r.patched_config_path.read_text())
    data["buses"]["control"]["baudrate"] = 9600
    data["connectors"][0]["meter"].update(bus="control", unit=3)
    bad = b.out_dir / "over-budget.yaml"
    bad.write_text(yaml.safe_dump(data))
    t0 = b.r.now()
    checked = await asyncio.to_thread(_agent, "check-config", str(bad))
    res = await asyncio.to_thread(_agent, "run", "-c", str(bad))
    o.check(checked.returncode == 3, f"`check-config` exits 3 (got {checked.returncode})")
    o.check(res.returncode == 3, f"`run` exits 3 (got {res.returncode})")
    reasons = [ln.strip() for ln in checked.stdout.splitlines()
               if ln.strip().startswith(("reason:", "to fix:"))]
    o.check(bool(reasons) and all(r in res.stderr for r in reasons),
            "`run` prints check-config's reasons and fixes")
    await _untouched(b, o, t0)
    o.say("exit 3 with check-config's reasons and fixes; boards never touched")
    o.recovered, o.recovery = None, "n/a (refuses to start)"


async def _untouched(b: Testbed, o: CaseReport, t0: float) -> None:
    await asyncio.sleep(0.2)
    frames = [e for e in b.r.timeline.events("frame", since=t0) if e.data.get("dir") == "a->b"]
    o.check(not frames, "no frame sent to any board")
    o.check(b.is_safe(), "hardware in the safe state (contactor open, no PWM)")
    o.t_safe_s = 0.0
    o.safe_detail = "never left it"



