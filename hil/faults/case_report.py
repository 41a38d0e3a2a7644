"""What one fault case found: the row of the matrix, and the checks behind its verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CaseReport:
    """Filled in by a case while it runs; ``passed`` is derived from the failed checks."""

    did: list[str] = field(default_factory=list)
    t_safe_s: float | None = None
    safe_detail: str = ""
    recovered: bool | None = None
    recovery: str = ""
    data_lost: int | None = None
    data_detail: str = ""
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0

    def check(self, ok: bool, what: str) -> bool:
        """Record a failed expectation (the message says what was expected)."""
        if not ok:
            self.failures.append(what)
        return ok

    def say(self, text: str) -> None:
        self.did.append(text)

    @property
    def passed(self) -> bool:
        return not self.failures and self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "did": self.did, "t_safe_s": self.t_safe_s, "safe_detail": self.safe_detail,
            "recovered": self.recovered, "recovery": self.recovery,
            "data_lost": self.data_lost, "data_detail": self.data_detail,
            "failures": self.failures, "notes": self.notes, "error": self.error,
            "duration_s": round(self.duration_s, 2), "passed": self.passed,
        }
