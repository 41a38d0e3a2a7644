"""Local control API: one JSON object per line over a Unix socket in the state directory.

Used by ``evse-agent status|limit|start|stop|reset`` and by the HIL scenario runner. Requests::

    {"cmd": "status"}
    {"cmd": "status", "panel": true}                        # what agent.web shows (panel.py)
    {"cmd": "limit", "connector": 1, "limit_a": 16.0}      # local limit input; null clears it
    {"cmd": "start", "connector": 1, "id_tag": "card-42"}   # remote authorisation
    {"cmd": "stop", "connector": 1}
    {"cmd": "reset", "connector": 1}                        # explicit fault reset
    {"cmd": "sessions", "since": 1790000000.0, "connector": 1}  # recorded sessions (both optional)

Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The socket is created
with mode 0600 (owner only): it changes what the charger does.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.errors import AgentError

SOCKET_NAME = "control.sock"
MAX_LINE = 16 * 1024 * 1024  # a session listing can be long


SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux, with the NUL


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@contextlib.contextmanager
def bindable(path: Path) -> Iterator[str]:
    """A path for bind/connect even when ``path`` is longer than a Unix socket path may be:
    the directory is opened and reached through ``/proc/self/fd/N`` (deep state directories,
    e.g. a test's tmp dir)."""
    if len(str(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def request(path: Path, payload: dict[str, Any], *, timeout_s: float = 2.0) -> dict[str, Any]:
    """Send one request to a running agent and return its reply (blocking; for CLIs and tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            with bindable(path) as where:
                sock.connect(where)
            sock.sendall(json.dumps(payload).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n") and len(buf) < MAX_LINE:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise AgentError(f"agent not reachable at {path}: {exc}") from exc
    try:
        reply = json.loads(buf)
    except json.JSONDecodeError as exc:
        raise AgentError(f"garbled reply from agent at {path}") from exc
    if not isinstance(reply, dict):
        raise AgentError(f"garbled reply from agent at {path}")
    return reply
