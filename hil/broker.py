"""A private mosquitto for the bench: config in its own directory, a free loopback port, PID stop.

Why not ``tests/broker.py``: ``hil/`` must not import ``tests/``. This one is deliberately small:
plain MQTT on 127.0.0.1 (never 1883), no persistence, stopped and restarted on the same port
(``restart()`` is how the fleet bench takes the broker away).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"


def mosquitto_binary() -> str | None:
    """Debian installs mosquitto in /usr/sbin, often not on PATH."""
    return shutil.which("mosquitto") or shutil.which(
        "mosquitto", path="/usr/sbin:/usr/local/sbin:/sbin")


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return free_port(host) if port == 1883 else port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """One mosquitto process this object started; stopped by its PID only."""

    def __init__(self, workdir: Path, *, max_connections: int = -1) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto binary not found (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.config_path.write_text("\n".join([
            "per_listener_settings false",
            "allow_anonymous true",
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "persistence false",
            "max_queued_messages 200000",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            f"max_connections {max_connections}",
            f"listener {self.port} {self.host}",
        ]) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 10.0) -> Broker:
        if self._proc is not None and self._proc.poll() is None:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          cwd=self.workdir)
        deadline = time.monotonic() + timeout_s
        while not _accepts(self.host, self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self._proc.returncode}): "
                                   + self.log_path.read_text(errors="replace")[-2000:])
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on {self.port}")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
