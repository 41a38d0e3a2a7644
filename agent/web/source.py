"""The agent's panel status, fetched over the control socket and fanned out to the pages.

One poller per web process, running only while a page is open (server-sent events): every
``poll_ms`` it asks the agent ``{"cmd": "status", "panel": true}`` and pushes what changed to
each page as a JSON merge patch (RFC 7386). A metrics scrape fetches once if the last answer is
older than ``poll_ms``. With nobody watching, the agent is never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import structlog

from agent import localapi

log = structlog.get_logger("agent.web")

REQUEST_TIMEOUT_S = 2.0
QUEUE_DEPTH = 32  # a page this far behind gets a full snapshot instead of the patches
RESYNC: dict[str, Any] = {}  # in a page's queue: send the full snapshot (never a real patch)


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (``{}``: nothing changed).
    Lists are replaced whole; a removed key is ``null``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


async def ask_agent(socket: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """One request on the agent's control socket (the same protocol as ``evse-agent status``)."""
    async with asyncio.timeout(REQUEST_TIMEOUT_S):
        with localapi.bindable(socket) as where:
            reader, writer = await asyncio.open_unix_connection(where, limit=localapi.MAX_LINE * 16)
        try:
            writer.write(json.dumps(payload).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ValueError("garbled reply from the agent")
    return reply


class PanelSource:
    def __init__(self, socket: Path, poll_s: float) -> None:
        self.socket = socket
        self.poll_s = poll_s
        self.snapshot: dict[str, Any] = {"agent": {"reachable": False, "error": "not asked yet"}}
        self.fetched_at = float("-inf")
        self.polls = 0
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._fetching: asyncio.Lock = asyncio.Lock()

    # --- fetching --------------------------------------------------------------------------

    async def fetch(self, max_age_s: float | None = None) -> dict[str, Any]:
        """Ask the agent now (or reuse an answer younger than ``max_age_s``); the snapshot
        says whether it answered."""
        async with self._fetching:
            if max_age_s is not None and time.monotonic() - self.fetched_at < max_age_s:
                return self.snapshot  # a concurrent caller just asked: one request, not many
            try:
                reply = await ask_agent(self.socket, {"cmd": "status", "panel": True})
                if not reply.pop("ok", False):
                    raise ValueError(str(reply.get("error", "refused")))
                new: dict[str, Any] = {"agent": {"reachable": True, "error": None},
                                       "status": reply}
            except (OSError, ValueError, TimeoutError) as exc:
                new = {"agent": {"reachable": False,
                                 "error": f"{type(exc).__name__}: {exc}"[:200]}}
                if "status" in self.snapshot:  # keep the last known state, marked stale
                    new["status"] = self.snapshot["status"]
            self.polls += 1
            self.fetched_at = time.monotonic()
            old, self.snapshot = self.snapshot, new
            patch = merge_patch(old, new)
            if patch:
                self._publish(patch)
            return new

    async def fresh(self) -> dict[str, Any]:
        """The snapshot, fetched again if older than the poll period (metrics scrapes)."""
        return await self.fetch(max_age_s=self.poll_s)

    # --- pages ----------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_DEPTH)
        self._subscribers.add(queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="poll")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)
        if not self._subscribers and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    def _publish(self, patch: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(patch)
            except asyncio.QueueFull:  # a page fell behind: it gets a full snapshot next
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(RESYNC)

    async def _poll(self) -> None:
        while True:
            started = time.monotonic()
            await self.fetch()
            await asyncio.sleep(max(0.05, self.poll_s - (time.monotonic() - started)))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
