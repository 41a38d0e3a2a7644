"""P8's machinery on a small run: its figures exist and the bounded record does not grow."""

from __future__ import annotations

from pathlib import Path

from hil.bench import p8_session_record
from hil.bench.common import Progress


async def test_p8_reports_first_last_ratio_and_a_flat_record(tmp_path: Path) -> None:
    res = await p8_session_record.run(tmp_path, Progress(), changes=450, contrast_changes=240)
    names = [f.name for f in res.figures]
    assert "2nd change of a fresh session: cost median" in names
    assert "changes 226-450: cost median" in names
    assert "cost ratio 10,000th-era / 40th-era change (wall)" in names
    first, last = res.raw["sizes_b"]
    assert first < last <= 6_000  # 32 entries kept: a few kB, whatever the number of changes
    assert res.raw["unbounded_last_ms"]["n"] == 120  # half of the 240 contrast changes
    assert res.raw["first_ms"]["n"] == res.raw["bound_ms"]["n"] == 22  # every 10th of the last 225
