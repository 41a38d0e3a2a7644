"""What one safety poll cycle costs: the process's CPU time from one cycle start to the next.

The control loop calls ``mark()`` once per cycle; the difference of ``time.process_time()``
between two marks is everything this process ran in that poll period (the poll itself, and
whatever else the loop did meanwhile: telemetry, MQTT, the journal). Kept as a fixed histogram
of 10 us buckets, so recording allocates nothing; the bench (``evse-hil bench`` P3) takes two
snapshots through the local status request and reads the median and p99 of the window between
them. The cost of measuring is one ``clock_gettime`` per cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

BUCKET_US = 10
BUCKETS = 1000  # 0..10 ms in 10 us steps; the last bucket takes everything longer


class CycleCpu:
    """Histogram of CPU time per poll cycle (``process_time`` between consecutive marks)."""

    __slots__ = ("_clock", "_counts", "_last")

    def __init__(self, clock: Callable[[], float] = time.process_time) -> None:
        self._clock = clock
        self._counts = [0] * BUCKETS
        self._last: float | None = None

    def mark(self) -> None:
        now = self._clock()
        last, self._last = self._last, now
        if last is not None:
            i = int((now - last) * (1_000_000 // BUCKET_US))
            self._counts[i if i < BUCKETS else BUCKETS - 1] += 1

    def snapshot(self) -> dict[str, int]:
        """Non-empty buckets as {lower edge in us: count} (JSON keys are strings)."""
        return {str(i * BUCKET_US): n for i, n in enumerate(self._counts) if n}


def quantile_us(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of a {lower edge us: count} histogram, at the
    bucket's middle."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for edge in sorted(counts):
        seen += counts[edge]
        if seen >= rank:
            return edge + BUCKET_US / 2
    return max(counts) + BUCKET_US / 2


def window(before: Mapping[str, int], after: Mapping[str, int]) -> dict[int, int]:
    """The histogram of the cycles between two ``snapshot()`` results."""
    out = {int(k): n - before.get(k, 0) for k, n in after.items()}
    return {k: n for k, n in out.items() if n > 0}
