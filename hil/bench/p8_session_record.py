"""P8: what one curtailment change costs the session record, at the 1st and the 10,000th change.

An aggregator that adjusts a limit every few seconds for a day adds thousands of curtailments to
one session. Each change is what ``OrderlyControl`` writes for it: the previous curtailment
ended and the new one started, two write-through ledger updates (WAL, ``synchronous=FULL``),
on the agent's own ``Ledger`` in a fresh state directory. Measured per change: wall time and
CPU time of the two updates, and the size of the ``sessionEnded`` record it would produce.
The contrast run keeps every entry (the record before the bound) for fewer changes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from agent import ledger_bound
from agent.ledger import Curtailment, Ledger
from hil.bench.common import Progress
from hil.bench.stats import BenchResult, Goal, summarize

T0 = 1_790_000_000.0
LAST = 2_000  # the long session's changes compared: the last ones of the run
YOUNG_EVERY = 10  # during those, a fresh session's 2nd change is measured every 10th change


def _change(led: Ledger, sid: str, i: int, prev: Curtailment | None) -> Curtailment:
    """End ``prev`` and start curtailment ``i``: what one limit change writes."""
    at = T0 + 5 * i
    new = Curtailment("commandId", f"c-{i}", at, {"value": 6 + i % 26, "unit": "A"})
    if prev is not None:
        led.update(sid, curtailment=Curtailment(prev.source, prev.source_id, prev.from_at,
                                                prev.limit, at))
    led.update(sid, curtailment=new)
    led.flush()  # the writes go to the store writer: count them committed, as before
    return new


def _timed(fn: Callable[[], Curtailment]) -> tuple[Curtailment, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000


@dataclass
class Samples:
    """Wall and CPU ms of the long session's last changes and of young sessions' 2nd ones."""

    long_wall: list[float] = field(default_factory=list)
    long_cpu: list[float] = field(default_factory=list)
    young_wall: list[float] = field(default_factory=list)
    young_cpu: list[float] = field(default_factory=list)
    bound_wall: list[float] = field(default_factory=list)  # a session just past the bound
    bound_cpu: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # record after its 2nd and its last change


def _changes(path: Path, changes: int, progress: Progress, label: str) -> Samples:
    shutil.rmtree(path.parent, ignore_errors=True)
    led = Ledger(path)
    out = Samples()
    last_n = min(LAST, changes // 2)
    try:
        sid = led.open_session(1, T0, 0, session_id="bench").session_id
        prev: Curtailment | None = None
        young = 0
        # a second session brought just past the bound: its changes are compared with the
        # long one's, interleaved (the 10,000th change against the ~40th-240th)
        bsid = led.open_session(3, T0, 0, session_id="bound").session_id
        bprev: Curtailment | None = None
        bn = ledger_bound.MAX_ENTRIES + 8
        for j in range(bn):
            bprev = _change(led, bsid, j, bprev)
        for i in range(changes):
            prev, wall, cpu = _timed(lambda i=i, prev=prev: _change(led, sid, i, prev))
            if i >= changes - last_n:
                out.long_wall.append(wall)
                out.long_cpu.append(cpu)
                if i % YOUNG_EVERY == 0:  # a fresh record's 2nd change, in the same period
                    young += 1
                    ysid = led.open_session(2, T0, 0, session_id=f"young-{young}").session_id
                    first = _change(led, ysid, 0, None)
                    _, ywall, ycpu = _timed(lambda y=ysid, f=first: _change(led, y, 1, f))
                    led.close(ysid, T0 + 10, 0, "EVDisconnected")
                    out.young_wall.append(ywall)
                    out.young_cpu.append(ycpu)
                    bprev, bwall, bcpu = _timed(
                        lambda b=bprev, j=bn: _change(led, bsid, j, b))
                    bn += 1
                    out.bound_wall.append(bwall)
                    out.bound_cpu.append(bcpu)
            if i in (1, changes - 1):
                out.sizes.append(len(json.dumps(led.get(sid).record())))
            if i % 500 == 0:
                progress.update("P8", f"{label}: change {i:,}/{changes:,}")
    finally:
        led.close_db()
    return out


async def run(out_dir: Path, progress: Progress, *, changes: int,
              contrast_changes: int) -> BenchResult:
    res = BenchResult("P8", "session record per curtailment change", (
        f"One open session on the agent's Ledger (fresh sessions.db, WAL, synchronous=FULL); "
        f"{changes:,} curtailment changes, each ending the previous curtailment and starting "
        f"a new one (two write-through updates, as OrderlyControl records a limit change). "
        f"Cost = wall (and CPU) time of a change. last = median of the last {LAST:,} changes; "
        f"first = median of the 2nd change of a fresh session (one entry ended, a second "
        f"started), measured every {YOUNG_EVERY}th change during those same last {LAST:,} "
        f"(interleaved, so both see the same disk and machine load), and likewise a change "
        f"of a second session just past the bound (its ~40th-240th); the goal is on last / "
        f"that (the cost must not grow with the number of changes). "
        f"Record size = the sessionEnded JSON it would produce. Contrast: the same with every "
        f"entry kept (no bound), {contrast_changes:,} changes."))
    got = await asyncio.to_thread(
        _changes, out_dir / "bounded" / "sessions.db", changes, progress, "bounded")
    first, last = summarize(got.young_wall), summarize(got.long_wall)
    cfirst, clast = summarize(got.young_cpu), summarize(got.long_cpu)
    at, cat = summarize(got.bound_wall), summarize(got.bound_cpu)
    bound = ledger_bound.MAX_ENTRIES
    res.add(f"changes {changes - last.n + 1:,}-{changes:,}: cost median", last.median, "ms",
            n=last.n, note=f"CPU {clast.median:.3g} ms")
    res.add(f"changes {bound + 9}-{bound + 8 + at.n} of a second session: cost median",
            at.median, "ms", n=at.n, note=f"CPU {cat.median:.3g} ms; interleaved")
    res.add("cost ratio 10,000th-era / 40th-era change (wall)", last.median / at.median, "x",
            Goal("<=", 1.2, "x"))
    res.add("cost ratio 10,000th-era / 40th-era change (CPU)", clast.median / cat.median, "x",
            Goal("<=", 1.2, "x"))
    res.add("2nd change of a fresh session: cost median", first.median, "ms", n=first.n,
            note=f"CPU {cfirst.median:.3g} ms; interleaved; a record at the bound "
            f"({bound} entries) costs {last.median / first.median:.3g} x this (wall), "
            f"{clast.median / cfirst.median:.3g} x (CPU), and no more however long the session")
    res.add("sessionEnded size after the last change", got.sizes[-1] / 1000, "kB",
            note=f"{got.sizes[0] / 1000:.2g} kB after the 2nd change; "
            f"{ledger_bound.MAX_ENTRIES} entries kept")
    with mock.patch("agent.ledger.bound_curtailments",
                    lambda e, m, keep=10**9: ledger_bound.bound_curtailments(e, m, keep)):
        ungot = await asyncio.to_thread(
            _changes, out_dir / "unbounded" / "sessions.db", contrast_changes, progress,
            "without the bound")
    u_first, u_last = summarize(ungot.young_wall), summarize(ungot.long_wall[-200:])
    res.add(f"without the bound: changes {contrast_changes - 199:,}-{contrast_changes:,} "
            "cost median", u_last.median, "ms", n=u_last.n,
            note=f"{u_last.median / u_first.median:.3g} x a fresh session's; record "
            f"{ungot.sizes[-1] / 1000:.3g} kB")
    res.raw = {"changes": changes, "first_ms": first.to_dict(), "last_ms": last.to_dict(),
               "bound_ms": at.to_dict(),
               "contrast_changes": contrast_changes, "sizes_b": got.sizes,
               "unbounded_first_ms": u_first.to_dict(), "unbounded_last_ms": u_last.to_dict()}
    return res
