"""Delivery through the outbox: nothing queued during an outage is lost, live traffic overtakes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.link import MemoryOutbox
from hil.broker import Mosquitto
from hil.poll import wait_until
from hil.recorder import Recorder
from tests.conftest import LinkFactory, LinkHarness

pytestmark = pytest.mark.mqtt

DEV = "CN-TEST-0001"
EVT, TEL = f"evse/v1/{DEV}/evt", f"evse/v1/{DEV}/tel"
BACKLOG = 5000


def seqs(rec: Recorder) -> list[int]:
    """Seqs in arrival order (evt and tel together, like a consumer deduping on seq)."""
    return [int(json.loads(m.payload)["seq"]) for m in rec.messages
            if m.topic.value in (EVT, TEL)]


def first_seen(order: list[int]) -> list[int]:
    seen: set[int] = set()
    return [s for s in order if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]


async def outage_with_backlog(
    broker: Mosquitto, link_factory: LinkFactory, backlog: int
) -> tuple[LinkHarness, Recorder]:
    """Link up, broker down, ``backlog`` rows queued (evt/tel mixed), broker back up.

    The recorder has a persistent session on a broker with persistence, so whatever the link
    publishes before the recorder is back is queued for it: nothing depends on who is faster.
    """
    rec = await Recorder(broker.host, broker.port, [EVT, TEL], identifier="consumer",
                         session=True).connect()
    h = await link_factory(broker.host, broker.port)
    await h.wait_connected()
    broker.stop()
    await wait_until(lambda: not h.link.connected, what="link noticing the outage")
    for i in range(backlog):
        h.append(1, "tel" if i % 3 == 0 else "evt")
    assert h.outbox.unsent == backlog
    broker.start()
    return h, rec


async def test_backlog_from_an_outage_is_delivered_in_order_and_marked(
    mosquitto_factory: Callable[..., Mosquitto], link_factory: LinkFactory
) -> None:
    broker = mosquitto_factory(persistence=True)
    h, rec = await outage_with_backlog(broker, link_factory, BACKLOG)
    try:
        await rec.reconnect()
        await rec.wait_for(lambda: len(set(seqs(rec))) >= BACKLOG, limit_s=40,
                           what=f"{BACKLOG} messages")
        order = seqs(rec)
        assert first_seen(order) == list(range(1, BACKLOG + 1))  # all, oldest first
        await wait_until(lambda: h.outbox.unsent == 0, what="every row marked sent")
        assert sorted(h.outbox.marked) == list(range(1, BACKLOG + 1))
        kinds = {m.topic.value for m in rec.messages}
        assert kinds == {EVT, TEL}
    finally:
        await rec.close()


async def test_live_messages_overtake_the_backlog_while_it_drains(
    mosquitto_factory: Callable[..., Mosquitto], link_factory: LinkFactory
) -> None:
    broker = mosquitto_factory(persistence=True)
    h, rec = await outage_with_backlog(broker, link_factory, BACKLOG)
    try:
        await wait_until(lambda: len(h.outbox.marked) > 0, what="drain started")
        h.append(1, "evt")  # a live event while most of the backlog is still queued
        live = BACKLOG + 1
        await rec.reconnect()
        await rec.wait_for(lambda: len(set(seqs(rec))) >= live, limit_s=40,
                           what="backlog and the live event")
        order = first_seen(seqs(rec))
        assert sorted(order) == list(range(1, live + 1))
        assert order.index(live) < order.index(BACKLOG)  # it did not wait for the tail
        backlog_order = [s for s in order if s != live]
        assert backlog_order == list(range(1, BACKLOG + 1))
        await wait_until(lambda: h.outbox.unsent == 0, what="every row marked sent")
    finally:
        await rec.close()


async def test_new_rows_are_published_when_notified(broker: Mosquitto,
                                                   link_factory: LinkFactory) -> None:
    async with Recorder(broker.host, broker.port, [EVT, TEL]) as rec:
        h = await link_factory(broker.host, broker.port)
        await h.wait_connected()
        for n in range(1, 6):
            h.append(1, "evt")
            await rec.wait_for(lambda: len(seqs(rec)) >= h.outbox.last_seq, what=f"live row {n}")
        assert seqs(rec) == [1, 2, 3, 4, 5]
        await wait_until(lambda: h.outbox.unsent == 0, what="marked")


async def test_with_the_real_journal(broker: Mosquitto, link_factory: LinkFactory,
                                     tmp_path: Path) -> None:
    journal_mod = pytest.importorskip("agent.journal")
    journal = journal_mod.Journal(tmp_path / "journal.db", device_id=DEV,
                                  budget_bytes=64 * 1024 * 1024)
    try:
        for i in range(300):  # written while the link is not running: the backlog
            journal.append("evt" if i % 2 else "tel", {"type": "t", "n": i}, 1_700_000_000.0 + i)
        async with Recorder(broker.host, broker.port, [EVT, TEL]) as rec:
            h = await link_factory(broker.host, broker.port, outbox=journal)
            await h.wait_connected()
            await rec.wait_for(lambda: len(set(seqs(rec))) >= 300, what="journal backlog")
            journal.append("evt", {"type": "live"}, 1_700_001_000.0)
            h.link.notify()
            await rec.wait_for(lambda: 301 in seqs(rec), what="live journal row")
            assert first_seen(seqs(rec)) == list(range(1, 302))
            await wait_until(lambda: journal.stats().pending == 0, what="journal all sent")
            assert json.loads(rec.messages[-1].payload)["deviceId"] == DEV
    finally:
        journal.close()


def test_memory_outbox_never_returns_marked_rows() -> None:
    box = MemoryOutbox()
    for _ in range(5):
        box.append("evt", b"{}")
    box.mark_sent(2)
    assert [e.seq for e in box.pending(10)] == [1, 3, 4, 5]
    assert [e.seq for e in box.pending(2, after_seq=1)] == [3, 4]
