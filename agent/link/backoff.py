"""Reconnect delays: exponential backoff with *full jitter*.

Why full jitter (sleep = uniform(0, min(cap, base * 2**n))): after a broker restart ten thousand
chargers must not come back in the same second; full jitter spreads them over the whole window
(AWS Architecture Blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

# 2**63 * any sane base is far above any cap; stops float overflow for huge attempt counts.
_MAX_EXPONENT = 63


class RandomSource(Protocol):
    """What the backoff needs from a random generator (``random.Random`` fits)."""

    def uniform(self, a: float, b: float, /) -> float: ...


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """Upper bound of the delay after ``attempt`` failures in a row (0-based)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    if base <= 0 or cap < base:
        raise ValueError(f"need 0 < base <= cap, got base={base}, cap={cap}")
    return min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))


def full_jitter(attempt: int, base: float, cap: float, rng: RandomSource) -> float:
    """One delay: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, backoff_ceiling(attempt, base, cap))


def backoff_delays(base: float, cap: float, rng: RandomSource) -> Iterator[float]:
    """Endless delays for attempts 0, 1, 2, ...; restart the iterator after a success."""
    backoff_ceiling(0, base, cap)  # validate now, not on the first next()

    def delays() -> Iterator[float]:
        attempt = 0
        while True:
            yield full_jitter(attempt, base, cap, rng)
            attempt += 1

    return delays()
