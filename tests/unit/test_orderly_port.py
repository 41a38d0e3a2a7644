"""The orderly port: a command goes in, an ``Applied`` comes out, ``carry_out`` does the I/O.

Real parts: the limits engine, a journal on SQLite in tmp_path, and the real
ConnectorController on the in-memory boards of test_connector_controller. Checked: the port
itself touches neither the wire nor the journal; ``carry_out`` feeds first (the duty is written
before any event of the command is journaled, so before the reply), decreases before increases;
and agent/orderly has no import cycle, with commands never reaching into the engine.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from test_connector_controller import SETTINGS, TIMING, Boards

from agent.api.reasons import Reason, ReplyStatus
from agent.journal import Journal
from agent.orderly.control import ConnectorInputs, OrderlyControl
from agent.orderly.events import EventLog
from agent.pilot import LimitChanged, PilotMachine
from agent.pilot.delivery import Delivered, Input
from agent.shell.connector import ConnectorController

ROOT = Path(__file__).resolve().parents[2]


class Recorded(ConnectorController):
    """The real controller; each feed notes the journal's last seq at that moment."""

    def __init__(self, cid: int, boards: Boards, events: EventLog, log: list[object]) -> None:
        super().__init__(cid, PilotMachine(SETTINGS), boards, boards, boards, TIMING)
        self._events, self._log = events, log

    async def feed(self, event: Input) -> Delivered:
        self._log.append((self.id, event, self._events.last_seq))
        return await super().feed(event)


def port(tmp_path: Path, n: int = 1) -> tuple[OrderlyControl, EventLog, list[object],
                                            dict[int, Boards]]:
    events = EventLog(Journal(tmp_path / "journal.db", device_id="d1", budget_bytes=10**7))
    log: list[object] = []
    boards = {cid: Boards(cp="2") for cid in range(1, n + 1)}
    inputs = {cid: ConnectorInputs(Recorded(cid, b, events, log), None, 1, 32.0, None,
                                   session_start=time.time())  # plugged in: it gets a share
              for cid, b in boards.items()}
    engine = OrderlyControl.make_engine(
        tmp_path / "limits.json", seed=1, random_delay_max_s=0.0, failsafe=None,
        nominal_voltage_v=230.0, supply_phases=1)
    control = OrderlyControl(engine, inputs, events, tmp_path / "limits.json",
                             link_online=lambda: (True, 0.0), on_change=lambda: None)
    return control, events, log, boards


async def test_set_limit_returns_what_to_do_and_does_none_of_it(tmp_path: Path) -> None:
    control, events, log, _ = port(tmp_path)
    seq = events.last_seq
    applied = control.set_limit("c1", 10.0, "A", 600.0, time.time())
    assert (applied.status, applied.reason) == (ReplyStatus.ACCEPTED, Reason.OK)
    assert [e.type for e in applied.events] == ["commandStarted"]
    assert [(c.id, limit) for c, limit in applied.plan.feed.higher] == [(1, 10.0)]
    assert applied.plan.persist
    assert events.last_seq == seq and log == [] and not (tmp_path / "limits.json").exists()
    await control.carry_out(applied)
    assert log == [(1, LimitChanged(10.0), seq)]  # fed before the event was journaled
    assert events.last_seq == seq + 1
    assert (tmp_path / "limits.json").exists()


async def test_a_rejected_command_feeds_nothing(tmp_path: Path) -> None:
    control, _, log, _ = port(tmp_path)
    applied = control.set_limit("c1", -5.0, "A", 600.0, time.time())
    assert applied.status is not ReplyStatus.ACCEPTED
    await control.carry_out(applied)
    assert log == [] and not applied.plan.feed


async def test_decreases_reach_the_wire_before_increases(tmp_path: Path) -> None:
    control, _, log, _ = port(tmp_path, n=2)
    now = time.time()
    await control.carry_out(control.set_limit("a", 16.0, "A", 600.0, now, connector=1))
    await control.carry_out(control.set_limit("b", 6.0, "A", 600.0, now, connector=2))
    log.clear()
    both = control.set_limit("all", 10.0, "A", 600.0, now, priority=1)  # 1 down, 2 up
    assert [(c.id, a) for c, a in both.plan.feed.lower] == [(1, 10.0)]
    assert [(c.id, a) for c, a in both.plan.feed.higher] == [(2, 10.0)]
    await control.carry_out(both)
    assert [(cid, ev.limit_a) for cid, ev, _ in log] == [(1, 10.0), (2, 10.0)]  # type: ignore[misc]


async def test_clear_of_nothing_is_unknown(tmp_path: Path) -> None:
    control, _, _, _ = port(tmp_path)
    applied = control.clear("c9", time.time(), profile_id="nope")
    assert (applied.status, applied.detail) == (ReplyStatus.UNKNOWN, "nothing matched")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_orderly_has_no_import_cycle_and_commands_stay_out_of_the_engine() -> None:
    pkg = ROOT / "agent" / "orderly"
    graph = {f"agent.orderly.{p.stem}": {m for m in _imports(p) if m.startswith("agent.")}
             for p in pkg.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, set())] == []
    assert ".engine" not in (pkg / "commands.py").read_text()
    assert "agent.orderly" not in " ".join(_imports(ROOT / "agent" / "shell" / "connector.py"))


class Gated(Recorded):
    """Holds its first feed until released: the moment a session start's offer is on its way."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.fed: asyncio.Queue[Input] = asyncio.Queue()

    async def feed(self, event: Input) -> Delivered:
        if not self.release.is_set():
            self.entered.set()
            await self.release.wait()
        done = await super().feed(event)
        self.fed.put_nowait(event)
        return done


async def test_a_limit_set_while_the_control_task_feeds_is_applied_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retrofit HIL failure: the installer's 10 A arrived while the control task awaited
    the feed of the session start's 16 A; the wake-up was cleared after the feed, so the 10 A
    waited for the next periodic look (here: never) and 16 A stayed on the wire."""
    monkeypatch.setattr("agent.orderly.control.MAX_SLEEP_S", 3600.0)
    control, events, log, boards = port(tmp_path)
    gated = Gated(1, boards[1], events, log)
    control.connectors[1].controller = gated
    task = asyncio.create_task(control.run())
    try:
        await gated.entered.wait()  # the control task is feeding the unconstrained 32 A
        control.set_site_limit(1, 10.0)  # the installer's limit, meanwhile
        gated.release.set()
        async with asyncio.timeout(10):  # liveness only: without the fix, never
            fed = [await gated.fed.get(), await gated.fed.get()]
        assert fed == [LimitChanged(32.0), LimitChanged(10.0)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_older_plan_carried_out_late_does_not_undo_a_newer_one(tmp_path: Path) -> None:
    """The control task's plan (the session start: unconstrained) and a command's (10 A) may
    be carried out in either order; whichever goes last, the newest limit stays on the wire."""
    control, _, log, _ = port(tmp_path)
    older = control.evaluate(time.time())  # the control task, before its feed is awaited
    assert [limit for _, limit in older.feed.higher] == [32.0]
    await control.carry_out(control.set_limit("c1", 10.0, "A", 600.0, time.time()))
    await control.carry_out(older)  # the control task's feed goes out only now
    assert [ev for _, ev, _ in log][-1] == LimitChanged(10.0)  # type: ignore[misc]
