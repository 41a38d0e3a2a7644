"""The one private mosquitto of tests, benchmarks, fault matrix and demo.

Why one: the house rules want real parts, and a broker that each harness starts its own way
drifts (ports, queue limits, how it is stopped). Each broker listens on free loopback ports
(never 1883), keeps config, log and persistence in its own directory, runs as the current user
(so it can read the key files and write persistence even as root), and is stopped or killed by
its PID only. ``restart()`` reuses the same ports, for outage tests.

    broker = Mosquitto(workdir, pki=make_pki(workdir / "pki")).start()  # + TLS on tls_port
    broker.stop(); broker.start(); broker.kill()

Options: ``persistence`` (sessions and queued QoS 1 survive stop/start), ``refuse_anonymous``
with ``users`` (a password file; ``reconfigure`` reloads with SIGHUP), ``throughput`` (deep
queues, no in-flight window, TCP_NODELAY: the benchmarks measure the agent, not the broker).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from hil.pki import Pki

HOST = "127.0.0.1"


class BrokerError(RuntimeError):
    """The broker binary is missing, exited, or did not listen."""


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    return _sbin("mosquitto")


def _sbin(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def free_port(host: str = HOST) -> int:
    """A port the kernel considers free right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return free_port(host) if port == 1883 else port


def accepts(host: str, port: int) -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """One private mosquitto process; ``port`` is plain MQTT, ``tls_port`` requires a client
    certificate (only with ``pki``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        pki: Pki | None = None,
        persistence: bool = False,
        refuse_anonymous: bool = False,
        users: dict[str, str] | None = None,
        throughput: bool = False,
        extra_config: Sequence[str] = (),
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerError("mosquitto binary not found: run `make mosquitto` "
                              "(apt-get install mosquitto)")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.persistence = persistence
        self.refuse_anonymous = refuse_anonymous
        self.users = dict(users or {})
        self.throughput = throughput
        self.host = HOST
        self.port = free_port()
        self.tls_port: int | None = free_port() if pki is not None else None
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.password_path = workdir / "passwords"
        self._extra = list(extra_config)
        self._proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'false' if self.refuse_anonymous else 'true'}",
            f"user {getpass.getuser()}",  # no privilege drop: can read our keys, write our dir
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if self.persistence:
            lines += ["max_queued_messages 0", f"persistence_location {self.workdir}/",
                      "autosave_interval 1"]
        elif self.throughput:
            lines += ["max_queued_messages 200000", "max_inflight_messages 0",
                      "set_tcp_nodelay true"]
        else:
            lines.append("max_queued_messages 100000")
        if self.users:
            self.password_path.write_text("")
            passwd = _sbin("mosquitto_passwd")
            if passwd is None:
                raise BrokerError("mosquitto_passwd not found (Debian package mosquitto)")
            for user, password in self.users.items():
                subprocess.run([passwd, "-b", str(self.password_path), user, password],
                               check=True, capture_output=True)
            lines.append(f"password_file {self.password_path}")
        lines.append(f"listener {self.port} {self.host}")
        if self.pki is not None and self.tls_port is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.pki.ca_cert}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        lines += self._extra
        self.config_path.write_text("\n".join(lines) + "\n")

    # --- life cycle ---

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start (or start again on the same ports) and wait until every listener accepts."""
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        for port in ports:
            while not accepts(self.host, port):
                if self._proc.poll() is not None:
                    raise BrokerError(f"mosquitto exited ({self._proc.returncode}):\n{self.log()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise BrokerError(f"mosquitto did not listen on {port}:\n{self.log()}")
                time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID (mosquitto saves persistence), SIGKILL if it does not exit."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL by PID: a crash, nothing saved, no goodbye to the clients."""
        self._signal(signal.SIGKILL, 5.0)

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def reconfigure(self, *, refuse_anonymous: bool) -> None:
        """New access rules, applied by a reload (SIGHUP): connected clients stay."""
        self.refuse_anonymous = refuse_anonymous
        self.write_config()
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGHUP)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5.0)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill() if et is not None else self.stop()
