"""The local security log: rejected commands, security rejects, config changes, auth failures.

One JSON object per line in ``<state_dir>/security.log`` (0600), kept to a bounded size by
rotating to ``security.log.1``. Never holds payloads, signatures, keys or passwords: only what
was refused, who claimed to send it and why (UK smart charge point security schedule, "security
log"; ETSI EN 303 645 provision 5.7).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

from agent.writer import StoreWriter

log = structlog.get_logger("agent.security")

MAX_BYTES = 1_000_000


class SecurityLog:
    """Appends one line per event. With a ``writer`` (the agent daemon: the store writer), the
    append runs on that thread in order with the journal's commits, so a slow disk never holds
    up the event loop that runs the pilot poll; a command reply, which waits for the writer to
    flush, goes out after the line is on disk. Without one (the web process) it appends at once.
    """

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES,
                 writer: StoreWriter | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.writer = writer
        self.count = 0

    def record(self, what: str, **fields: Any) -> None:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what}
        entry.update({k: v for k, v in fields.items() if v is not None})
        self.count += 1
        log.warning("security_event", **entry)
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        if self.writer is None:
            self._append(line)
        else:
            self.writer.submit(lambda: self._append(line))

    def _append(self, line: str) -> None:
        try:
            if self.path.exists() and self.path.stat().st_size > self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            log.error("security_log_write_failed", path=str(self.path), error=str(exc))
