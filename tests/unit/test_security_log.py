"""The security log: with the store writer, lines are appended on its thread, in order."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from agent.orderly.security import SecurityLog
from agent.writer import StoreWriter


def test_lines_go_through_the_writer_in_order_and_are_on_disk_once_flushed(
        tmp_path: Path) -> None:
    writer = StoreWriter("test-writer")
    try:
        path = tmp_path / "security.log"
        sec = SecurityLog(path, writer=writer)
        for i in range(20):
            sec.record("rejected", reason="BAD_SIGNATURE", command_id=f"c{i}", detail=None)
        writer.call(lambda: None)  # everything submitted before has run
        lines = [json.loads(x) for x in path.read_text().splitlines()]
    finally:
        writer.close()
    assert [x["command_id"] for x in lines] == [f"c{i}" for i in range(20)]
    assert all("detail" not in x for x in lines)  # None fields are left out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and sec.count == 20


def test_a_full_log_rotates_on_the_writer(tmp_path: Path) -> None:
    writer = StoreWriter("test-writer")
    try:
        path = tmp_path / "security.log"
        sec = SecurityLog(path, max_bytes=200, writer=writer)
        for i in range(10):
            sec.record("rejected", reason="STALE", command_id=f"c{i}")
        writer.call(lambda: None)
    finally:
        writer.close()
    rotated = path.with_name("security.log.1")
    kept = rotated.read_text().splitlines() + path.read_text().splitlines()
    assert [json.loads(x)["command_id"] for x in kept][-1] == "c9"
    assert path.stat().st_size <= 200 + 100  # one line past the bound at most
