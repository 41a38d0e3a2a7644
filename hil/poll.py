"""Poll until a condition holds: the one wait of tests, benchmarks and the fault matrix.

The limit only bounds a failing wait; nothing is asserted about how long it took (timed
assertions belong in benchmarks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def poll_until(predicate: Callable[[], object], limit_s: float,
                     poll_s: float = 0.01) -> bool:
    """True as soon as ``predicate()`` is truthy, False once ``limit_s`` has passed."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


async def wait_until(predicate: Callable[[], object], limit_s: float = 15.0,
                     what: str = "condition", poll_s: float = 0.01) -> None:
    """``poll_until`` that raises ``AssertionError`` (a failed test) on timeout."""
    if not await poll_until(predicate, limit_s, poll_s):
        raise AssertionError(f"timed out waiting for {what}")
